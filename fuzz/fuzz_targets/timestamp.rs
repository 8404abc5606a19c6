//! The timestamp parser and the tolerance window, against the standard
//! library's integer parsing.
//!
//! Input: 16 bytes of "now" and tolerance, then the header value.

#![no_main]

use std::time::Duration;

use kwickphone_webhooks::verify::{MAX_TIMESTAMP_DIGITS, Timestamp, VerifyError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((numbers, value)) = data.split_first_chunk::<16>() else {
        return;
    };
    let now = u64::from_le_bytes(numbers[..8].try_into().expect("eight bytes"));
    let tolerance = u64::from_le_bytes(numbers[8..].try_into().expect("eight bytes"));

    let plain = !value.is_empty()
        && value.len() <= MAX_TIMESTAMP_DIGITS
        && value.iter().all(u8::is_ascii_digit);
    let parsed = Timestamp::parse(value);
    let Ok(timestamp) = parsed else {
        assert!(!plain, "refused a plain timestamp");
        assert_eq!(parsed, Err(VerifyError::MalformedTimestamp));
        return;
    };
    assert!(plain, "accepted a timestamp that is not 1 to 12 digits");

    let text = std::str::from_utf8(value).expect("digits are UTF-8");
    assert_eq!(Some(timestamp.secs()), text.parse::<u64>().ok());
    assert_eq!(timestamp.as_bytes(), value);

    let skew = timestamp.secs().abs_diff(now);
    let verdict = timestamp.check_window(now, Duration::from_secs(tolerance));
    if skew <= tolerance {
        assert_eq!(verdict, Ok(()));
    } else {
        assert_eq!(verdict, Err(VerifyError::OutsideWindow { skew_secs: skew }));
    }
});
