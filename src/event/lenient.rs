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
        let mut value = serde_json::Deserializer::from_str(raw.get());
        let shaped = value.deserialize_any(AnyShape(PhantomData));
        Ok(Lenient(shaped.ok().flatten()))
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
