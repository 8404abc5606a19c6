//! Reading fields leniently: a value of the wrong shape, or `null`, is read
//! as absent instead of failing the whole event.
//!
//! Each field asks for one JSON shape through [`Shape`]; [`Lenient`] takes
//! the value's text, reads it with `deserialize_any` and keeps it only when
//! the shape fits. Unlike an untagged enum, nothing is buffered or copied:
//! strings stay borrowed from the body and unwanted values are skipped.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// A field value that is `None` when absent, `null` or of another shape.
pub(super) struct Lenient<T>(pub(super) Option<T>);

impl<T> Default for Lenient<T> {
    fn default() -> Self {
        Self(None)
    }
}

/// The one JSON shape a field accepts; every other shape is read as absent.
pub(super) trait Shape<'de>: Sized {
    fn from_str(_: Cow<'de, str>) -> Option<Self> {
        None
    }

    fn from_u64(_: u64) -> Option<Self> {
        None
    }

    fn from_bool(_: bool) -> Option<Self> {
        None
    }

    /// Reads an object; the default skips it.
    fn from_map<A: MapAccess<'de>>(mut map: A) -> Result<Option<Self>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

impl<'de: 'a, 'a> Shape<'de> for Cow<'a, str> {
    fn from_str(value: Cow<'de, str>) -> Option<Self> {
        Some(value)
    }
}

impl Shape<'_> for u64 {
    fn from_u64(value: u64) -> Option<Self> {
        Some(value)
    }
}

impl Shape<'_> for bool {
    fn from_bool(value: bool) -> Option<Self> {
        Some(value)
    }
}

impl<'de, T: Shape<'de>> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Taking the value's text first cannot fail on what reading it might
        // refuse (a number out of range, a lone surrogate, nesting deeper than
        // serde_json allows), so such a value is absent rather than fatal.
        let raw = <&'de RawValue>::deserialize(deserializer)?;
        let text = raw.get();
        Ok(Lenient(plain(text).unwrap_or_else(|| decoded(text))))
    }
}

/// Reads the value's text as serde_json would, for any JSON value.
fn decoded<'de, T: Shape<'de>>(text: &'de str) -> Option<T> {
    let mut value = serde_json::Deserializer::from_str(text);
    value.deserialize_any(AnyShape(PhantomData)).ok().flatten()
}

/// Reads the values that most fields hold straight from their text: a
/// string without escapes, an unsigned integer of at most 19 digits (which
/// cannot overflow), `true`, `false` and `null`. The text is known to be one
/// valid JSON value, so these readings equal [`decoded`]'s; `None` leaves
/// any other value to it.
fn plain<'de, T: Shape<'de>>(text: &'de str) -> Option<Option<T>> {
    let bytes = text.as_bytes();
    match bytes {
        b"true" => Some(T::from_bool(true)),
        b"false" => Some(T::from_bool(false)),
        b"null" => Some(None),
        [b'"', inner @ .., b'"'] if !inner.contains(&b'\\') => {
            Some(T::from_str(Cow::Borrowed(&text[1..text.len() - 1])))
        }
        [b'0'..=b'9', ..] if bytes.len() <= 19 && bytes.iter().all(u8::is_ascii_digit) => {
            text.parse().ok().map(T::from_u64)
        }
        _ => None,
    }
}

struct AnyShape<T>(PhantomData<T>);

impl<'de, T: Shape<'de>> Visitor<'de> for AnyShape<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E: de::Error>(self, value: &'de str) -> Result<Self::Value, E> {
        Ok(T::from_str(Cow::Borrowed(value)))
    }

    // Strings with escapes cannot be borrowed from the body.
    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        Ok(T::from_str(Cow::Owned(value.to_owned())))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Self::Value, E> {
        Ok(T::from_str(Cow::Owned(value)))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
        Ok(T::from_u64(value))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Self::Value, E> {
        Ok(T::from_bool(value))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::from_map(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Returns whether `plain` read `text`, after checking that it read it
    /// as `decoded` does.
    fn agree<'de, T: Shape<'de> + PartialEq + fmt::Debug>(text: &'de str) -> bool {
        let Some(fast) = plain::<T>(text) else {
            return false;
        };
        assert_eq!(fast, decoded::<T>(text), "{text}");
        true
    }

    #[test]
    fn plain_values_read_as_serde_json_reads_them() {
        let cases = [
            ("string", r#""CA9f""#, true),
            ("empty string", r#""""#, true),
            ("non-ascii string", "\"caf\u{e9}\"", true),
            ("escaped quote", r#""a\"b""#, false),
            ("unicode escape", r#""\u00e9""#, false),
            ("integer", "132", true),
            ("zero", "0", true),
            ("19 digits", "9999999999999999999", true),
            ("20 digits", "18446744073709551615", false),
            ("negative", "-1", false),
            ("float", "1.5", false),
            ("exponent", "1e3", false),
            ("true", "true", true),
            ("false", "false", true),
            ("null", "null", true),
            ("object", r#"{"a":1}"#, false),
            ("array", "[1]", false),
        ];
        for (name, text, fast) in cases {
            let read = [
                agree::<Cow<'_, str>>(text),
                agree::<u64>(text),
                agree::<bool>(text),
            ];
            assert_eq!(read, [fast; 3], "{name}");
        }
    }
}
