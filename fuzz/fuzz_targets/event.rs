//! The event parser against a plain re-statement of the contract: the body is
//! UTF-8 JSON, an object; `type` and `number_id` appear once and are strings;
//! for `call.completed`, `call` appears once and is an object whose
//! `call_sid` appears once and is a string. Any other field, known or not,
//! may be absent, repeated, of the wrong shape or unreadable: it never
//! decides whether the event is accepted.
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

impl<'a> Pairs<'a> {
    /// Returns the one value of `name`: `None` when it is repeated,
    /// `Some(None)` when it is absent.
    fn once(&self, name: &str) -> Option<Option<&'a RawValue>> {
        let mut values = self.0.iter().filter(|(n, _)| n == name).map(|(_, v)| *v);
        let first = values.next();
        values.next().is_none().then_some(first)
    }
}

/// Returns the value as a string, if it is one and can be read.
fn string(raw: &RawValue) -> Option<String> {
    let value: Value = serde_json::from_str(raw.get()).ok()?;
    value.as_str().map(str::to_owned)
}

fn acceptable(body: &[u8]) -> Option<(String, String, Option<String>)> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let text = std::str::from_utf8(body).ok()?;
    let top: Pairs<'_> = serde_json::from_str(text).ok()?;
    let event_type = string(top.once("type")??)?;
    let number_id = string(top.once("number_id")??)?;
    let raw_call = top.once("call")?;
    if event_type != CALL_COMPLETED {
        return Some((event_type, number_id, None));
    }

    let call: Pairs<'_> = serde_json::from_str(raw_call?.get()).ok()?;
    let call_sid = string(call.once("call_sid")??)?;
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
