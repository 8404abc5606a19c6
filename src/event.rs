//! Typed events, parsed from the verified raw body.
//!
//! Real traffic is untidy: fields go missing or arrive as `null`, new fields
//! and new `outcome` values appear, and new event types are added. Only
//! `type`, `number_id` and, for `call.completed`, `call.call_sid` are
//! required; every other field is optional and a value of the wrong shape is
//! read as absent rather than making the event undeliverable.

use std::borrow::Cow;
use std::fmt;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use wire::{WireCall, WireEvent};

mod lenient;
mod wire;

/// The event type of [`CallCompleted`].
pub const CALL_COMPLETED: &str = "call.completed";

const BYTE_ORDER_MARK: &[u8] = b"\xEF\xBB\xBF";

/// A verified event of any type.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A call ended (`call.completed`).
    CallCompleted(CallCompleted),
    /// An event type this crate does not know yet.
    Unknown(UnknownEvent),
}

impl Event {
    /// Parses a raw body. A leading UTF-8 byte-order mark is skipped.
    ///
    /// # Errors
    ///
    /// Returns a [`PayloadError`] for an empty body, malformed JSON, invalid
    /// UTF-8, or a missing `type`, `number_id` or (for a known type)
    /// `call.call_sid`.
    ///
    /// # Example
    ///
    /// ```
    /// use kwickphone_webhooks::Event;
    ///
    /// let body = br#"{"type":"call.completed","number_id":"num_12","call":{"call_sid":"CA1"}}"#;
    /// let Event::CallCompleted(event) = Event::from_slice(body)? else { panic!("known type") };
    /// assert_eq!(event.call.call_sid, "CA1");
    /// assert_eq!(event.call.caller, None);
    /// # Ok::<(), kwickphone_webhooks::PayloadError>(())
    /// ```
    pub fn from_slice(body: &[u8]) -> Result<Self, PayloadError> {
        parse(body).1
    }

    /// Returns the event type, such as `call.completed`.
    pub fn event_type(&self) -> &str {
        match self {
            Self::CallCompleted(_) => CALL_COMPLETED,
            Self::Unknown(event) => &event.event_type,
        }
    }

    /// Returns the number the event belongs to.
    pub fn number_id(&self) -> &str {
        match self {
            Self::CallCompleted(event) => &event.number_id,
            Self::Unknown(event) => &event.number_id,
        }
    }

    /// Returns the call the event is about, for known types.
    pub fn call_sid(&self) -> Option<&str> {
        match self {
            Self::CallCompleted(event) => Some(&event.call.call_sid),
            Self::Unknown(_) => None,
        }
    }
}

/// A `call.completed` event: a call to one of the numbers ended.
#[derive(Debug, Clone, PartialEq)]
pub struct CallCompleted {
    /// The number that took the call, such as `num_12`.
    pub number_id: String,
    /// When the event happened.
    pub occurred_at: Option<OffsetDateTime>,
    /// The call.
    pub call: Call,
}

/// The call of a [`CallCompleted`] event.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The call's identifier, such as `CA9f0c...`.
    pub call_sid: String,
    /// Who called: usually E.164, but an opaque string such as `anonymous`
    /// when the caller withholds the number.
    pub caller: Option<String>,
    /// How the call ended.
    pub outcome: Option<Outcome>,
    /// How long the call lasted, in seconds.
    pub duration_sec: Option<u64>,
    /// When the call started.
    pub started_at: Option<OffsetDateTime>,
    /// Whether a recording can be fetched.
    pub has_recording: Option<bool>,
    /// Whether a transcript can be fetched.
    pub has_transcript: Option<bool>,
}

/// How a call ended; values this crate does not know are kept as they came.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// The caller placed an order: `"order"`.
    Order,
    /// The caller asked a question: `"question"`.
    Question,
    /// The caller left a voicemail: `"voicemail"`.
    Voicemail,
    /// Any other value, as sent.
    Other(String),
}

impl Outcome {
    /// Returns the value as the vendor spells it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Order => "order",
            Self::Question => "question",
            Self::Voicemail => "voicemail",
            Self::Other(other) => other,
        }
    }
}

impl From<&str> for Outcome {
    fn from(value: &str) -> Self {
        match value {
            "order" => Self::Order,
            "question" => Self::Question,
            "voicemail" => Self::Voicemail,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event whose type this crate does not know.
#[derive(Debug, Clone, PartialEq)]
pub struct UnknownEvent {
    /// The event type as sent.
    pub event_type: String,
    /// The number the event belongs to.
    pub number_id: String,
}

/// Why a verified body is not a valid event. Never holds body content.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PayloadError {
    /// The body is empty.
    Empty,
    /// The body is not well-formed JSON or not UTF-8, at this line and column.
    Syntax {
        /// The line of the first error.
        line: usize,
        /// The column of the first error.
        column: usize,
    },
    /// A required field is missing or not a string: `type`, `number_id` or
    /// `call.call_sid`.
    MissingField(&'static str),
}

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("body is empty"),
            Self::Syntax { line, column } => {
                write!(f, "body is not valid JSON (line {line}, column {column})")
            }
            Self::MissingField(field) => write!(f, "required field `{field}` is missing"),
        }
    }
}

impl std::error::Error for PayloadError {}

/// Parses a body once, returning the `number_id` whenever it can be read,
/// even when the event as a whole is invalid, so that the secret lookup and
/// the verdict on the payload come from one parse.
pub(crate) fn parse(body: &[u8]) -> (Option<Cow<'_, str>>, Result<Event, PayloadError>) {
    let body = body.strip_prefix(BYTE_ORDER_MARK).unwrap_or(body);
    let Some(start) = body.iter().position(|b| !b.is_ascii_whitespace()) else {
        return (None, Err(PayloadError::Empty));
    };
    // serde reads a JSON array into a struct field by field; an event is an
    // object and nothing else.
    if body[start] != b'{' {
        return (None, Err(syntax_at(body, start)));
    }
    // One check of the whole body is cheaper than serde_json's check of each
    // string, and also refuses invalid UTF-8 in fields that are skipped.
    let text = match std::str::from_utf8(body) {
        Ok(text) => text,
        Err(err) => return (None, Err(syntax_at(body, err.valid_up_to()))),
    };
    let wire: WireEvent<'_> = match serde_json::from_str(text) {
        Ok(wire) => wire,
        Err(err) => return (None, Err(syntax(&err))),
    };
    // Borrowed from the body unless it holds escapes: no copy for the lookup.
    let number_id = wire.number_id.clone();
    (number_id, from_wire(wire))
}

/// Returns the syntax error at byte `offset`, such as the first byte that is
/// not UTF-8, counting lines and columns from 1 as serde_json does.
fn syntax_at(body: &[u8], offset: usize) -> PayloadError {
    let before = &body[..offset];
    let line_start = memchr::memrchr(b'\n', before).map_or(0, |i| i + 1);
    PayloadError::Syntax {
        line: 1 + memchr::memchr_iter(b'\n', before).count(),
        column: offset - line_start + 1,
    }
}

fn syntax(err: &serde_json::Error) -> PayloadError {
    PayloadError::Syntax {
        line: err.line(),
        column: err.column(),
    }
}

fn from_wire(wire: WireEvent<'_>) -> Result<Event, PayloadError> {
    let event_type = wire.event_type.ok_or(PayloadError::MissingField("type"))?;
    let number_id = wire
        .number_id
        .ok_or(PayloadError::MissingField("number_id"))?;
    if event_type != CALL_COMPLETED {
        return Ok(Event::Unknown(UnknownEvent {
            event_type: event_type.into_owned(),
            number_id: number_id.into_owned(),
        }));
    }

    let call = wire
        .call
        .ok_or(PayloadError::MissingField("call.call_sid"))?;
    Ok(Event::CallCompleted(CallCompleted {
        number_id: number_id.into_owned(),
        occurred_at: wire.occurred_at.as_deref().and_then(rfc3339),
        call: Call::from_wire(call)?,
    }))
}

impl Call {
    fn from_wire(call: WireCall<'_>) -> Result<Self, PayloadError> {
        let call_sid = call
            .call_sid
            .ok_or(PayloadError::MissingField("call.call_sid"))?;
        Ok(Self {
            call_sid: call_sid.into_owned(),
            caller: call.caller.map(Cow::into_owned),
            outcome: call.outcome.as_deref().map(Outcome::from),
            duration_sec: call.duration_sec,
            started_at: call.started_at.as_deref().and_then(rfc3339),
            has_recording: call.has_recording,
            has_transcript: call.has_transcript,
        })
    }
}

fn rfc3339(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const SAMPLE: &str = r#"{"type":"call.completed","number_id":"num_12","occurred_at":"2026-06-20T07:57:25+00:00","call":{"call_sid":"CA9f","caller":"+12145559876","outcome":"order","duration_sec":132,"started_at":"2026-06-20T07:55:10Z","has_recording":true,"has_transcript":true}}"#;

    fn call_completed(body: &str) -> CallCompleted {
        match Event::from_slice(body.as_bytes()) {
            Ok(Event::CallCompleted(event)) => event,
            other => panic!("expected call.completed, got {other:?}"),
        }
    }

    #[test]
    fn parses_the_vendor_sample() {
        let event = call_completed(SAMPLE);
        assert_eq!(event.number_id, "num_12");
        assert_eq!(event.occurred_at, Some(datetime!(2026-06-20 07:57:25 UTC)));
        assert_eq!(event.call.call_sid, "CA9f");
        assert_eq!(event.call.caller.as_deref(), Some("+12145559876"));
        assert_eq!(event.call.outcome, Some(Outcome::Order));
        assert_eq!(event.call.duration_sec, Some(132));
        assert_eq!(
            event.call.started_at,
            Some(datetime!(2026-06-20 07:55:10 UTC))
        );
        assert_eq!(event.call.has_recording, Some(true));
        assert_eq!(event.call.has_transcript, Some(true));
    }

    #[test]
    fn tolerates_untidy_traffic() {
        let cases = [
            (
                "nulls",
                r#"{"type":"call.completed","number_id":"n","occurred_at":null,"call":{"call_sid":"CA1","caller":null,"outcome":null,"duration_sec":null}}"#,
            ),
            (
                "missing",
                r#"{"type":"call.completed","number_id":"n","call":{"call_sid":"CA1"}}"#,
            ),
            (
                "wrong shapes",
                r#"{"type":"call.completed","number_id":"n","occurred_at":"yesterday","call":{"call_sid":"CA1","caller":12,"duration_sec":"132","has_recording":"yes"}}"#,
            ),
            (
                "nested and numeric shapes",
                r#"{"type":"call.completed","number_id":"n","occurred_at":[1,{"a":null}],"call":{"call_sid":"CA1","caller":{"x":[true]},"duration_sec":-5,"has_recording":1,"has_transcript":1.5}}"#,
            ),
            (
                "fractional duration",
                r#"{"type":"call.completed","number_id":"n","call":{"call_sid":"CA1","caller":[],"duration_sec":132.0}}"#,
            ),
            (
                "unknown fields",
                r#"{"type":"call.completed","number_id":"n","extra":{"a":[1]},"call":{"call_sid":"CA1","note":"x"}}"#,
            ),
        ];
        for (name, body) in cases {
            let event = call_completed(body);
            assert_eq!(event.call.call_sid, "CA1", "{name}");
            assert_eq!(event.call.caller, None, "{name}");
            assert_eq!(event.call.duration_sec, None, "{name}");
            assert_eq!(event.occurred_at, None, "{name}");
        }
    }

    #[test]
    fn escaped_strings_are_read() {
        let body = r#"{"type":"call.completed","number_id":"num_\u0031\u0032","call":{"call_sid":"CA\"1","caller":"+1\/2"}}"#;
        let event = call_completed(body);
        assert_eq!(event.number_id, "num_12");
        assert_eq!(event.call.call_sid, "CA\"1");
        assert_eq!(event.call.caller.as_deref(), Some("+1/2"));
    }

    #[test]
    fn values_that_cannot_be_read_are_absent() {
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let cases = [
            ("lone surrogate", r#""caller":"\ud83d""#.to_owned()),
            ("number out of range", r#""duration_sec":1e400"#.to_owned()),
            (
                "negative out of range",
                r#""duration_sec":-1e400"#.to_owned(),
            ),
            (
                "nested too deep",
                format!(r#""caller":{deep},"outcome":{deep}"#),
            ),
            (
                "repeated",
                r#""caller":"+1","caller":"+2","duration_sec":1,"duration_sec":2"#.to_owned(),
            ),
        ];
        for (name, fields) in cases {
            let body = format!(
                r#"{{"type":"call.completed","number_id":"n","occurred_at":1e400,"call":{{"call_sid":"CA1",{fields}}}}}"#
            );
            let event = call_completed(&body);
            assert_eq!(event.call.call_sid, "CA1", "{name}");
            assert_eq!(event.call.caller, None, "{name}");
            assert_eq!(event.call.duration_sec, None, "{name}");
            assert_eq!(event.occurred_at, None, "{name}");
        }
    }

    #[test]
    fn repeated_identity_fields_are_refused() {
        let cases: &[(&str, &str)] = &[
            (
                "type",
                r#"{"type":"call.completed","type":"call.completed","number_id":"n","call":{"call_sid":"CA1"}}"#,
            ),
            (
                "number_id",
                r#"{"type":"call.completed","number_id":"a","number_id":"b","call":{"call_sid":"CA1"}}"#,
            ),
            (
                "call",
                r#"{"type":"call.completed","number_id":"n","call":{"call_sid":"CA1"},"call":{"call_sid":"CA2"}}"#,
            ),
            (
                "call_sid",
                r#"{"type":"call.completed","number_id":"n","call":{"call_sid":"CA1","call_sid":"CA2"}}"#,
            ),
        ];
        for (name, body) in cases {
            let (number_id, result) = parse(body.as_bytes());
            assert!(result.is_err(), "{name}");
            if *name == "number_id" {
                assert_eq!(
                    number_id, None,
                    "an ambiguous number must not pick a secret"
                );
            }
        }
        let (_, call_sid) = parse(cases[3].1.as_bytes());
        assert_eq!(call_sid, Err(PayloadError::MissingField("call.call_sid")));
    }

    #[test]
    fn wrong_shaped_booleans_and_numbers_are_absent() {
        let body = r#"{"type":"call.completed","number_id":"n","call":{"call_sid":"CA1","duration_sec":true,"has_recording":"true","has_transcript":false}}"#;
        let event = call_completed(body);
        assert_eq!(event.call.duration_sec, None);
        assert_eq!(event.call.has_recording, None);
        assert_eq!(event.call.has_transcript, Some(false));
    }

    #[test]
    fn keeps_unknown_outcomes_and_opaque_callers() {
        let body = r#"{"type":"call.completed","number_id":"n","call":{"call_sid":"CA1","caller":"anonymous","outcome":"transfer"}}"#;
        let event = call_completed(body);
        assert_eq!(event.call.caller.as_deref(), Some("anonymous"));
        assert_eq!(event.call.outcome, Some(Outcome::Other("transfer".into())));
    }

    #[test]
    fn unknown_types_are_kept() {
        let body = br#"{"type":"call.started","number_id":"num_12","call":"not an object"}"#;
        let event = Event::from_slice(body).expect("unknown types parse");
        assert_eq!(event.event_type(), "call.started");
        assert_eq!(event.number_id(), "num_12");
        assert_eq!(event.call_sid(), None);
    }

    #[test]
    fn rejects_undecodable_bodies() {
        let cases: &[(&str, &[u8], PayloadError)] = &[
            ("empty", b"", PayloadError::Empty),
            ("blank", b" \n", PayloadError::Empty),
            (
                "not json",
                b"hello",
                PayloadError::Syntax { line: 1, column: 1 },
            ),
            (
                "truncated",
                br#"{"type":"#,
                PayloadError::Syntax { line: 1, column: 8 },
            ),
            ("array", b"[]", PayloadError::Syntax { line: 1, column: 1 }),
            (
                "array on line 2",
                b"\n  []",
                PayloadError::Syntax { line: 2, column: 3 },
            ),
            (
                "positional array",
                br#"["call.completed","n",null,{"call_sid":"CA1"}]"#,
                PayloadError::Syntax { line: 1, column: 1 },
            ),
            (
                "no type",
                br#"{"number_id":"n","call":{"call_sid":"CA1"}}"#,
                PayloadError::MissingField("type"),
            ),
            (
                "null type",
                br#"{"type":null,"number_id":"n"}"#,
                PayloadError::MissingField("type"),
            ),
            (
                "no number",
                br#"{"type":"call.completed","call":{"call_sid":"CA1"}}"#,
                PayloadError::MissingField("number_id"),
            ),
            (
                "no call",
                br#"{"type":"call.completed","number_id":"n"}"#,
                PayloadError::MissingField("call.call_sid"),
            ),
            (
                "no call_sid",
                br#"{"type":"call.completed","number_id":"n","call":{}}"#,
                PayloadError::MissingField("call.call_sid"),
            ),
            (
                "call not object",
                br#"{"type":"call.completed","number_id":"n","call":7}"#,
                PayloadError::MissingField("call.call_sid"),
            ),
        ];
        for (name, body, want) in cases {
            assert_eq!(Event::from_slice(body).as_ref().err(), Some(want), "{name}");
        }
    }

    #[test]
    fn invalid_utf8_is_a_syntax_error() {
        let cases: &[(&str, &[u8], PayloadError)] = &[
            (
                "in a field read",
                b"{\"type\":\"call.completed\",\"number_id\":\"\xff\"}",
                PayloadError::Syntax {
                    line: 1,
                    column: 39,
                },
            ),
            (
                "in a field skipped",
                b"{\"type\":\"x\",\"number_id\":\"n\",\n \"extra\":\"\xc3\"}",
                PayloadError::Syntax {
                    line: 2,
                    column: 11,
                },
            ),
        ];
        for (name, body, want) in cases {
            assert_eq!(Event::from_slice(body).as_ref().err(), Some(want), "{name}");
        }
    }

    #[test]
    fn invalid_utf8_in_a_skipped_field_is_refused() {
        let body = b"{\"note\":\"\xff\",\"type\":\"call.started\",\n\"x\":\"\xc3\"}";
        assert_eq!(
            Event::from_slice(&body[..]),
            Err(PayloadError::Syntax {
                line: 1,
                column: 10
            })
        );
        let later = b"{\"type\":\"call.started\",\n\"x\":\"\xc3\"}";
        assert_eq!(
            Event::from_slice(&later[..]),
            Err(PayloadError::Syntax { line: 2, column: 6 })
        );
    }

    #[test]
    fn positional_call_array_is_refused() {
        let body = br#"{"type":"call.completed","number_id":"n","call":["CA1"]}"#;
        assert_eq!(
            Event::from_slice(body),
            Err(PayloadError::MissingField("call.call_sid"))
        );
    }

    #[test]
    fn byte_order_mark_is_skipped() {
        let body = format!("\u{feff}{SAMPLE}");
        assert_eq!(call_completed(&body).call.call_sid, "CA9f");
    }

    #[test]
    fn number_id_is_read_even_when_the_event_is_invalid() {
        let (number_id, result) = parse(br#"{"type":"call.completed","number_id":"num_12"}"#);
        assert_eq!(number_id.as_deref(), Some("num_12"));
        assert!(result.is_err());
    }

    #[test]
    fn errors_never_quote_the_body() {
        let body = br#"{"type":"call.completed","number_id":"secret-ish","call":{"call_sid":5}}"#;
        let err = Event::from_slice(body).expect_err("call_sid is not a string");
        assert!(!err.to_string().contains("secret-ish"));
    }
}
