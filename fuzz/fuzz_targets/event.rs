//! The event parser against a plain re-statement of the contract: the body is
//! UTF-8 JSON, an object; `type` and `number_id` are strings; for
//! `call.completed`, `call` is an object whose `call_sid` is a string. Known
//! fields must hold valid JSON and appear once; a value of the wrong shape
//! reads as absent; unknown fields are skipped.
//!
//! Input: the raw body.

#![no_main]

use std::fmt;

use kwickphone_webhooks::Event;
use kwickphone_webhooks::event::CALL_COMPLETED;
use libfuzzer_sys::fuzz_target;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

/// Top-level fields read as values; `call` is kept raw until the type is
/// known, so only its uniqueness is checked there.
const EVENT_FIELDS: [&str; 3] = ["type", "number_id", "occurred_at"];
const CALL_FIELDS: [&str; 7] = [
    "call_sid",
    "caller",
    "outcome",
    "duration_sec",
    "started_at",
    "has_recording",
    "has_transcript",
];

/// A JSON object's entries in order, duplicates kept.
struct Pairs<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Pairs<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = Pairs<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut pairs = Vec::new();
                while let Some(entry) = map.next_entry::<String, &'de RawValue>()? {
                    pairs.push(entry);
                }
                Ok(Pairs(pairs))
            }
        }
        deserializer.deserialize_map(Entries)
    }
}

/// Returns the known fields, each once and holding valid JSON, or `None`.
fn known<'a>(pairs: &Pairs<'a>, fields: &[&str]) -> Option<Vec<(String, Value)>> {
    let mut found: Vec<(String, Value)> = Vec::new();
    for (name, raw) in pairs.0.iter().filter(|(n, _)| fields.contains(&n.as_str())) {
        if found.iter().any(|(n, _)| n == name) {
            return None;
        }
        found.push((name.clone(), serde_json::from_str(raw.get()).ok()?));
    }
    Some(found)
}

fn string(fields: &[(String, Value)], name: &str) -> Option<String> {
    let (_, value) = fields.iter().find(|(n, _)| n == name)?;
    value.as_str().map(str::to_owned)
}

fn acceptable(body: &[u8]) -> Option<(String, String, Option<String>)> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let text = std::str::from_utf8(body).ok()?;
    let top: Pairs<'_> = serde_json::from_str(text).ok()?;
    let fields = known(&top, &EVENT_FIELDS)?;
    if top.0.iter().filter(|(n, _)| n == "call").count() > 1 {
        return None;
    }
    let event_type = string(&fields, "type")?;
    let number_id = string(&fields, "number_id")?;
    if event_type != CALL_COMPLETED {
        return Some((event_type, number_id, None));
    }

    let (_, raw_call) = top.0.iter().find(|(n, _)| n == "call")?;
    let call: Pairs<'_> = serde_json::from_str(raw_call.get()).ok()?;
    let call_sid = string(&known(&call, &CALL_FIELDS)?, "call_sid")?;
    Some((event_type, number_id, Some(call_sid)))
}

fuzz_target!(|data: &[u8]| {
    let parsed = Event::from_slice(data);
    let want = acceptable(data);

    match (&parsed, &want) {
        (Ok(event), Some((event_type, number_id, call_sid))) => {
            assert_eq!(event.event_type(), event_type);
            assert_eq!(event.number_id(), number_id);
            assert_eq!(event.call_sid(), call_sid.as_deref());
        }
        (Err(_), None) => {}
        _ => panic!("parser and reference disagree: {parsed:?} vs {want:?}"),
    }
});
