//! Inputs shared by the benches: the vendor's sample event and bodies of
//! chosen sizes shaped like it.

#![allow(dead_code, unreachable_pub)]

use std::time::{SystemTime, UNIX_EPOCH};

/// The secret of the vendor's signing vector.
pub const SECRET: &str = "whsec_8f3c2a9b7d1e4f60a5b3c7d9e1f2a4b6";

/// The vendor's sample event, 285 bytes, as signed in the first vector.
pub const SAMPLE: &str = concat!(
    r#"{"type":"call.completed","number_id":"num_12","#,
    r#""occurred_at":"2026-06-20T07:57:25+00:00","call":{"#,
    r#""call_sid":"CA9f0c1d2e3f405162738495a6b7c8d9e0","caller":"+12145559876","#,
    r#""outcome":"order","duration_sec":132,"started_at":"2026-06-20T07:55:10Z","#,
    r#""has_recording":true,"has_transcript":true}}"#
);

/// The body sizes every verification bench runs at.
pub const SIZES: [(&str, usize); 4] = [
    ("285B", 285),
    ("4KiB", 4 * 1024),
    ("64KiB", 64 * 1024),
    ("1MiB", 1024 * 1024),
];

/// Returns a valid `call.completed` body of exactly `len` bytes: the sample,
/// padded with a `note` field inside `call` when `len` is larger.
pub fn body_of_len(len: usize) -> Vec<u8> {
    let sample = SAMPLE.as_bytes();
    if len <= sample.len() {
        assert_eq!(len, sample.len(), "bodies are at least the sample's size");
        return sample.to_vec();
    }
    let head = &sample[..sample.len() - 2];
    let field = br#","note":""#;
    let fill = len - sample.len() - field.len() - 1;
    let mut body = Vec::with_capacity(len);
    body.extend_from_slice(head);
    body.extend_from_slice(field);
    body.extend(std::iter::repeat_n(b'x', fill));
    body.extend_from_slice(br#""}}"#);
    assert_eq!(body.len(), len);
    body
}

/// Returns the sample with another `call_sid`, for deliveries that must be
/// distinct.
pub fn sample_with_call_sid(call_sid: &str) -> Vec<u8> {
    SAMPLE
        .replace("CA9f0c1d2e3f405162738495a6b7c8d9e0", call_sid)
        .into_bytes()
}

/// Returns the current Unix time in seconds.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
