//! The wire shape of an event, read in one pass over the verified body.
//!
//! A field that appears twice is ambiguous. For `type`, `number_id`, `call`
//! and `call.call_sid`, which decide whose event this is and how it is
//! deduplicated, that makes the event undecodable; any other field is then
//! read as absent.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::lenient::{Lenient, Shape};

#[derive(Default)]
pub(super) struct WireEvent<'a> {
    pub(super) event_type: Option<Cow<'a, str>>,
    pub(super) number_id: Option<Cow<'a, str>>,
    pub(super) occurred_at: Option<Cow<'a, str>>,
    pub(super) call: Option<WireCall<'a>>,
}

#[derive(Default)]
pub(super) struct WireCall<'a> {
    pub(super) call_sid: Option<Cow<'a, str>>,
    pub(super) caller: Option<Cow<'a, str>>,
    pub(super) outcome: Option<Cow<'a, str>>,
    pub(super) duration_sec: Option<u64>,
    pub(super) started_at: Option<Cow<'a, str>>,
    pub(super) has_recording: Option<bool>,
    pub(super) has_transcript: Option<bool>,
}

/// One field's value and how often it appeared.
struct Slot<T> {
    value: Option<T>,
    seen: u32,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Self {
            value: None,
            seen: 0,
        }
    }
}

impl<'de, T: Shape<'de>> Slot<T> {
    fn read<A: MapAccess<'de>>(&mut self, map: &mut A) -> Result<(), A::Error> {
        self.value = map.next_value::<Lenient<T>>()?.0;
        self.seen = self.seen.saturating_add(1);
        Ok(())
    }

    /// Returns the value of a field whose repetition is harmless to ignore.
    fn optional(self) -> Option<T> {
        if self.seen > 1 { None } else { self.value }
    }

    /// Returns the value of a field that must not be ambiguous.
    fn required<E: de::Error>(self, name: &'static str) -> Result<Option<T>, E> {
        if self.seen > 1 {
            return Err(E::duplicate_field(name));
        }
        Ok(self.value)
    }
}

#[derive(serde::Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum EventField {
    #[serde(rename = "type")]
    Type,
    NumberId,
    OccurredAt,
    Call,
    #[serde(other)]
    Other,
}

#[derive(serde::Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum CallField {
    CallSid,
    Caller,
    Outcome,
    DurationSec,
    StartedAt,
    HasRecording,
    HasTranscript,
    #[serde(other)]
    Other,
}

impl<'de: 'a, 'a> Deserialize<'de> for WireEvent<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(EventVisitor(PhantomData))
    }
}

struct EventVisitor<'a>(PhantomData<WireEvent<'a>>);

impl<'de: 'a, 'a> Visitor<'de> for EventVisitor<'a> {
    type Value = WireEvent<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut event_type, mut number_id) = (Slot::default(), Slot::default());
        let (mut occurred_at, mut call) = (Slot::default(), Slot::default());
        while let Some(field) = map.next_key::<EventField>()? {
            match field {
                EventField::Type => event_type.read(&mut map)?,
                EventField::NumberId => number_id.read(&mut map)?,
                EventField::OccurredAt => occurred_at.read(&mut map)?,
                EventField::Call => call.read(&mut map)?,
                EventField::Other => drop(map.next_value::<IgnoredAny>()?),
            }
        }
        Ok(WireEvent {
            event_type: event_type.required("type")?,
            number_id: number_id.required("number_id")?,
            occurred_at: occurred_at.optional(),
            call: call.required("call")?,
        })
    }
}

/// Reads the `call` object; anything but an object is read as absent.
impl<'de: 'a, 'a> Shape<'de> for WireCall<'a> {
    fn from_map<A: MapAccess<'de>>(mut map: A) -> Result<Option<Self>, A::Error> {
        let (mut call_sid, mut caller, mut outcome) = Default::default();
        let (mut duration_sec, mut started_at) = Default::default();
        let (mut has_recording, mut has_transcript) = Default::default();
        while let Some(field) = map.next_key::<CallField>()? {
            match field {
                CallField::CallSid => Slot::read(&mut call_sid, &mut map)?,
                CallField::Caller => Slot::read(&mut caller, &mut map)?,
                CallField::Outcome => Slot::read(&mut outcome, &mut map)?,
                CallField::DurationSec => Slot::read(&mut duration_sec, &mut map)?,
                CallField::StartedAt => Slot::read(&mut started_at, &mut map)?,
                CallField::HasRecording => Slot::read(&mut has_recording, &mut map)?,
                CallField::HasTranscript => Slot::read(&mut has_transcript, &mut map)?,
                CallField::Other => drop(map.next_value::<IgnoredAny>()?),
            }
        }
        Ok(Some(Self {
            call_sid: Slot::required(call_sid, "call_sid")?,
            caller: Slot::optional(caller),
            outcome: Slot::optional(outcome),
            duration_sec: Slot::optional(duration_sec),
            started_at: Slot::optional(started_at),
            has_recording: Slot::optional(has_recording),
            has_transcript: Slot::optional(has_transcript),
        }))
    }
}
