//! The verification core: header parsing, the timestamp window, the HMAC and
//! [`sign`].
//!
//! Everything here is pure: no IO, no async, no allocation on the verifying
//! path. The service calls these steps in order; tools and tests can call them
//! directly.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use kwickphone_webhooks::Secret;
//! use kwickphone_webhooks::verify::{self, Signatures, Timestamp};
//!
//! let secret = Secret::new("whsec_8f3c2a9b7d1e4f60a5b3c7d9e1f2a4b6")?;
//! let body = br#"{"type":"call.completed"}"#;
//! let signed = verify::sign(&secret, 1781942245, body);
//!
//! let timestamp = Timestamp::parse(signed.timestamp.as_bytes())?;
//! timestamp.check_window(1781942300, Duration::from_secs(300))?;
//! let signatures = Signatures::parse([signed.signature.as_bytes()])?;
//! verify::verify(&[secret], &timestamp, &signatures, body)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Constant time
//!
//! A comparison that stops at the first differing byte tells a forger, by how
//! long the rejection took, how many leading bytes of a guess were right; the
//! vendor's Node.js sample compares with `!==` and leaks exactly that. Here
//! each kept digest is compared with the expected HMAC by
//! [`subtle::ConstantTimeEq`], which looks at all 32 bytes whatever they hold,
//! and the verdicts of all entries are combined without branching, so the
//! time depends only on how many entries were kept, which the sender chose.
//! The loop over a number's secrets may stop at the first that matches: that
//! reveals which secret verified a genuine delivery, nothing about a forgery.
//! Parsing the headers (digits, hex) works on what the sender sent and needs
//! no care. The `timing` example measures the difference between forgeries
//! wrong in their first and in their last byte (Welch's t, dudect-style).
//!
//! # Cost
//!
//! At most [`MAX_SIGNATURES`] entries are examined, in a header of at most
//! [`MAX_SIGNATURE_HEADER_LEN`] bytes, so a header full of entries adds
//! nothing but a few 32-byte compares. The cost of a request is one HMAC over
//! the body for each secret of the number it names: about 0.7 ms per MiB per
//! secret on a CPU with SHA extensions. The `worst_case` example measures it.

use std::fmt;
use std::time::Duration;

use hmac::Mac;
use subtle::{Choice, ConstantTimeEq};

use crate::secrets::HmacSha256;

use crate::secrets::Secret;

/// The name of the header that carries the signing time.
pub const TIMESTAMP_HEADER: &str = "x-kwickphone-timestamp";

/// The name of the header that carries the signatures.
pub const SIGNATURE_HEADER: &str = "x-kwickphone-signature";

/// The most digits a timestamp may have.
pub const MAX_TIMESTAMP_DIGITS: usize = 12;

/// The most `v1=` entries examined; later ones are ignored, so a header full of
/// entries costs no more than this many 32-byte compares per secret.
pub const MAX_SIGNATURES: usize = 8;

/// The most bytes the signature header may hold over all its lines.
pub const MAX_SIGNATURE_HEADER_LEN: usize = 4096;

const SCHEME: &[u8] = b"v1=";
const DIGEST_LEN: usize = 32;

/// Why a delivery failed verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyError {
    /// The timestamp header is absent.
    MissingTimestamp,
    /// The timestamp is not 1 to 12 ASCII digits, or appears more than once.
    MalformedTimestamp,
    /// The signature header is absent.
    MissingSignature,
    /// The signature header holds no well-formed `v1=` entry, or is too long.
    MalformedSignature,
    /// The timestamp lies outside the tolerance window, by `skew_secs` in
    /// either direction.
    OutsideWindow {
        /// How far the timestamp is from now, in seconds.
        skew_secs: u64,
    },
    /// No `v1=` entry matches any of the number's secrets.
    Mismatch,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingTimestamp => f.write_str("timestamp header is missing"),
            Self::MalformedTimestamp => f.write_str("timestamp header is malformed"),
            Self::MissingSignature => f.write_str("signature header is missing"),
            Self::MalformedSignature => f.write_str("signature header is malformed"),
            Self::OutsideWindow { skew_secs } => {
                write!(f, "timestamp is {skew_secs} s away from now")
            }
            Self::Mismatch => f.write_str("no signature matches"),
        }
    }
}

impl std::error::Error for VerifyError {}

/// A validated timestamp header, keeping its literal bytes for the HMAC.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Timestamp {
    secs: u64,
    /// The digits followed by the `.` that separates them from the body in
    /// the signed message, so that the HMAC takes both in one update.
    text: [u8; MAX_TIMESTAMP_DIGITS + 1],
    len: u8,
}

impl Timestamp {
    /// Parses a timestamp header value: 1 to 12 ASCII digits, nothing else.
    ///
    /// # Errors
    ///
    /// Returns [`VerifyError::MalformedTimestamp`] for anything else, such as a
    /// sign, spaces, a fraction or 13 digits.
    pub fn parse(value: &[u8]) -> Result<Self, VerifyError> {
        if value.is_empty() || value.len() > MAX_TIMESTAMP_DIGITS {
            return Err(VerifyError::MalformedTimestamp);
        }

        let mut secs = 0u64;
        for &byte in value {
            let digit = byte.wrapping_sub(b'0');
            if digit > 9 {
                return Err(VerifyError::MalformedTimestamp);
            }
            secs = secs * 10 + u64::from(digit);
        }
        let mut text = [b'.'; MAX_TIMESTAMP_DIGITS + 1];
        text[..value.len()].copy_from_slice(value);
        // Checked above: at most 12 bytes, so the length fits a `u8`.
        let len = value.len() as u8;
        Ok(Self { secs, text, len })
    }

    /// Parses the one value among a header's lines.
    ///
    /// # Errors
    ///
    /// Returns [`VerifyError::MissingTimestamp`] when there is no line and
    /// [`VerifyError::MalformedTimestamp`] when there are several or the one
    /// line is malformed.
    pub fn parse_lines<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> Result<Self, VerifyError> {
        let mut lines = lines.into_iter();
        let first = lines.next().ok_or(VerifyError::MissingTimestamp)?;
        if lines.next().is_some() {
            return Err(VerifyError::MalformedTimestamp);
        }
        Self::parse(first)
    }

    /// Returns the timestamp in seconds since the Unix epoch.
    pub fn secs(&self) -> u64 {
        self.secs
    }

    /// Returns the header's bytes exactly as received.
    pub fn as_bytes(&self) -> &[u8] {
        &self.text[..usize::from(self.len)]
    }

    /// Returns the header's bytes and the `.` that follows them in the signed
    /// message.
    fn signed_prefix(&self) -> &[u8] {
        &self.text[..=usize::from(self.len)]
    }

    /// Returns how far the timestamp is from `now_secs`, in either direction.
    pub fn skew_secs(&self, now_secs: u64) -> u64 {
        self.secs.abs_diff(now_secs)
    }

    /// Checks that the timestamp lies within `tolerance` of `now_secs`, in the
    /// past or in the future.
    ///
    /// # Errors
    ///
    /// Returns [`VerifyError::OutsideWindow`] when it does not.
    pub fn check_window(&self, now_secs: u64, tolerance: Duration) -> Result<(), VerifyError> {
        let skew_secs = self.skew_secs(now_secs);
        if skew_secs > tolerance.as_secs() {
            return Err(VerifyError::OutsideWindow { skew_secs });
        }
        Ok(())
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Timestamp").field(&self.secs).finish()
    }
}

/// The `v1=` digests found in a signature header, at most [`MAX_SIGNATURES`].
///
/// Entries of other schemes and malformed entries are skipped; hex may be in
/// either case. `Debug` does not print the digests.
#[derive(Clone)]
pub struct Signatures {
    digests: [[u8; DIGEST_LEN]; MAX_SIGNATURES],
    len: usize,
}

impl Signatures {
    /// Parses every line of the signature header as one comma-separated list.
    ///
    /// # Errors
    ///
    /// Returns [`VerifyError::MissingSignature`] when there is no line, and
    /// [`VerifyError::MalformedSignature`] when the lines are longer than
    /// [`MAX_SIGNATURE_HEADER_LEN`] or hold no well-formed `v1=` entry.
    pub fn parse<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> Result<Self, VerifyError> {
        let mut found = Self {
            digests: [[0; DIGEST_LEN]; MAX_SIGNATURES],
            len: 0,
        };
        let mut seen_lines = false;
        let mut total = 0usize;
        for line in lines {
            seen_lines = true;
            total = total.saturating_add(line.len());
            if total > MAX_SIGNATURE_HEADER_LEN {
                return Err(VerifyError::MalformedSignature);
            }
            found.push_line(line);
        }

        match (seen_lines, found.len) {
            (false, _) => Err(VerifyError::MissingSignature),
            (true, 0) => Err(VerifyError::MalformedSignature),
            _ => Ok(found),
        }
    }

    /// Returns how many `v1=` digests were kept.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Returns `true` when no digest was kept.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn push_line(&mut self, mut line: &[u8]) {
        // `memchr` finds the separators many bytes at a time; a header usually
        // holds a single entry, and scanning it byte by byte cost as much as
        // decoding it.
        while let Some(comma) = memchr::memchr(b',', line) {
            self.push(&line[..comma]);
            line = &line[comma + 1..];
        }
        self.push(line);
    }

    fn push(&mut self, entry: &[u8]) {
        if self.len == MAX_SIGNATURES {
            return;
        }
        let Some(hex_digits) = trim_spaces(entry).strip_prefix(SCHEME) else {
            return;
        };
        if let Some(digest) = decode_hex(hex_digits) {
            self.digests[self.len] = digest;
            self.len += 1;
        }
    }

    /// Returns `true` when any kept digest equals `expected`, comparing every
    /// digest in constant time.
    fn contains(&self, expected: &[u8; DIGEST_LEN]) -> bool {
        let hit = self.digests[..self.len]
            .iter()
            .fold(Choice::from(0), |hit, d| hit | equal_digests(d, expected));
        hit.into()
    }
}

impl fmt::Debug for Signatures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signatures")
            .field("len", &self.len)
            .finish()
    }
}

/// Compares two digests in constant time, eight bytes at a time: one
/// `ct_eq` per digest instead of one per byte.
fn equal_digests(a: &[u8; DIGEST_LEN], b: &[u8; DIGEST_LEN]) -> Choice {
    let word = |bytes: &[u8]| u64::from_ne_bytes(bytes.try_into().expect("chunks of 8"));
    let diff = a
        .chunks_exact(8)
        .zip(b.chunks_exact(8))
        .fold(0u64, |diff, (x, y)| diff | (word(x) ^ word(y)));
    diff.ct_eq(&0)
}

/// The value of each hex digit, either case; 0xFF marks a byte that is not
/// one.
const HEX_VALUES: [u8; 256] = {
    let mut table = [0xFF; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        table[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// Decodes exactly 64 hex digits into a digest, looking every digit up
/// without branching on it.
fn decode_hex(digits: &[u8]) -> Option<[u8; DIGEST_LEN]> {
    if digits.len() != 2 * DIGEST_LEN {
        return None;
    }
    let mut digest = [0; DIGEST_LEN];
    let mut invalid = 0u8;
    for (out, pair) in digest.iter_mut().zip(digits.chunks_exact(2)) {
        let high = HEX_VALUES[usize::from(pair[0])];
        let low = HEX_VALUES[usize::from(pair[1])];
        invalid |= high | low;
        *out = (high << 4) | low;
    }
    // Valid values are below 16; any 0xFF leaves its high bits set.
    (invalid < 16).then_some(digest)
}

fn trim_spaces(bytes: &[u8]) -> &[u8] {
    let is_space = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes
        .iter()
        .position(|b| !is_space(b))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_space(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// Returns HMAC-SHA256 of `{timestamp}.{body}` keyed with `secret`, fed in
/// three parts rather than copied into one buffer.
pub fn digest(secret: &Secret, timestamp: &[u8], body: &[u8]) -> [u8; DIGEST_LEN] {
    let mut mac = secret.keyed().clone();
    mac.update(timestamp);
    mac.update(b".");
    finish(mac, body)
}

fn finish(mut mac: HmacSha256, body: &[u8]) -> [u8; DIGEST_LEN] {
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// Returns the same digest as [`digest`], feeding the timestamp and its `.`
/// in one update.
fn digest_of(secret: &Secret, timestamp: &Timestamp, body: &[u8]) -> [u8; DIGEST_LEN] {
    let mut mac = secret.keyed().clone();
    mac.update(timestamp.signed_prefix());
    finish(mac, body)
}

/// Verifies that some signature matches some secret over the raw `body`.
///
/// Every comparison runs in constant time. The timestamp window is checked
/// separately, by [`Timestamp::check_window`], and before this.
///
/// # Errors
///
/// Returns [`VerifyError::Mismatch`] when nothing matches.
pub fn verify(
    secrets: &[Secret],
    timestamp: &Timestamp,
    signatures: &Signatures,
    body: &[u8],
) -> Result<(), VerifyError> {
    let matched = secrets
        .iter()
        .any(|secret| signatures.contains(&digest_of(secret, timestamp, body)));
    if matched {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

/// The two header values that sign a delivery.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    /// The value of `X-KwickPhone-Timestamp`.
    pub timestamp: String,
    /// The value of `X-KwickPhone-Signature`: `v1=` and lower-case hex.
    pub signature: String,
}

impl fmt::Debug for SignedHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedHeaders")
            .field("timestamp", &self.timestamp)
            .finish_non_exhaustive()
    }
}

/// Signs `body` at `timestamp` the way the vendor does.
///
/// # Example
///
/// ```
/// use kwickphone_webhooks::{verify, Secret};
///
/// let secret = Secret::new("whsec_example")?;
/// let signed = verify::sign(&secret, 1781942245, b"{}");
/// assert_eq!(signed.timestamp, "1781942245");
/// assert!(signed.signature.starts_with("v1="));
/// # Ok::<(), kwickphone_webhooks::ConfigError>(())
/// ```
pub fn sign(secret: &Secret, timestamp: u64, body: &[u8]) -> SignedHeaders {
    let timestamp = timestamp.to_string();
    let digest = digest(secret, timestamp.as_bytes(), body);
    let signature = format!("v1={}", hex::encode(digest));
    SignedHeaders {
        timestamp,
        signature,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_8f3c2a9b7d1e4f60a5b3c7d9e1f2a4b6";
    const NOW: u64 = 1_781_942_245;
    const WINDOW: Duration = Duration::from_secs(300);

    fn secret() -> Secret {
        Secret::new(SECRET).expect("the test secret is valid")
    }

    fn signature_for(body: &[u8]) -> String {
        sign(&secret(), NOW, body).signature
    }

    #[test]
    fn timestamp_parsing() {
        let cases: &[(&str, &[u8], Result<u64, VerifyError>)] = &[
            ("plain", b"1781942245", Ok(1_781_942_245)),
            ("zero", b"0", Ok(0)),
            ("twelve digits", b"999999999999", Ok(999_999_999_999)),
            (
                "leading zeros kept",
                b"0001781942245"[..12].as_ref(),
                Ok(178_194_224),
            ),
            ("empty", b"", Err(VerifyError::MalformedTimestamp)),
            (
                "thirteen digits",
                b"1781942245000",
                Err(VerifyError::MalformedTimestamp),
            ),
            ("sign", b"+1781942245", Err(VerifyError::MalformedTimestamp)),
            ("negative", b"-1", Err(VerifyError::MalformedTimestamp)),
            (
                "space",
                b" 1781942245",
                Err(VerifyError::MalformedTimestamp),
            ),
            (
                "fraction",
                b"1781942245.5",
                Err(VerifyError::MalformedTimestamp),
            ),
            (
                "unicode digit",
                "١٢٣".as_bytes(),
                Err(VerifyError::MalformedTimestamp),
            ),
        ];
        for (name, input, want) in cases {
            let got = Timestamp::parse(input).map(|t| t.secs());
            assert_eq!(&got, want, "{name}");
        }
    }

    #[test]
    fn timestamp_keeps_literal_bytes() {
        let ts = Timestamp::parse(b"00042").expect("digits parse");
        assert_eq!(ts.as_bytes(), b"00042");
        assert_eq!(ts.secs(), 42);
    }

    #[test]
    fn timestamp_lines() {
        let one: [&[u8]; 1] = [b"12"];
        let two: [&[u8]; 2] = [b"12", b"12"];
        assert_eq!(Timestamp::parse_lines(one).map(|t| t.secs()), Ok(12));
        assert_eq!(
            Timestamp::parse_lines(two),
            Err(VerifyError::MalformedTimestamp)
        );
        assert_eq!(
            Timestamp::parse_lines([]),
            Err(VerifyError::MissingTimestamp)
        );
    }

    #[test]
    fn tolerance_window_both_ways() {
        let cases = [
            ("now", NOW, Ok(())),
            ("edge past", NOW - 300, Ok(())),
            ("edge future", NOW + 300, Ok(())),
            (
                "stale",
                NOW - 301,
                Err(VerifyError::OutsideWindow { skew_secs: 301 }),
            ),
            (
                "future",
                NOW + 301,
                Err(VerifyError::OutsideWindow { skew_secs: 301 }),
            ),
            (
                "epoch",
                0,
                Err(VerifyError::OutsideWindow { skew_secs: NOW }),
            ),
        ];
        for (name, secs, want) in cases {
            let ts = Timestamp::parse(secs.to_string().as_bytes()).expect("digits parse");
            assert_eq!(ts.check_window(NOW, WINDOW), want, "{name}");
        }
    }

    #[test]
    fn huge_values_do_not_overflow() {
        let ts = Timestamp::parse(b"999999999999").expect("digits parse");
        assert!(ts.check_window(u64::MAX, Duration::MAX).is_ok());
        assert!(ts.check_window(0, WINDOW).is_err());
        assert!(ts.check_window(u64::MAX, WINDOW).is_err());
    }

    #[test]
    fn signature_header_parsing() {
        let good = signature_for(b"{}");
        let upper = format!("v1={}", good[3..].to_uppercase());
        let cases: Vec<(&str, Vec<String>, Result<usize, VerifyError>)> = vec![
            ("one entry", vec![good.clone()], Ok(1)),
            ("upper-case hex", vec![upper], Ok(1)),
            ("spaces around", vec![format!("  {good} ,\t")], Ok(1)),
            (
                "other schemes skipped",
                vec![format!("v0=abc,{good},v2=ff")],
                Ok(1),
            ),
            (
                "several lines",
                vec!["v0=1".into(), good.clone(), good.clone()],
                Ok(2),
            ),
            (
                "only other schemes",
                vec!["v0=abcd".into()],
                Err(VerifyError::MalformedSignature),
            ),
            (
                "short hex",
                vec!["v1=abcd".into()],
                Err(VerifyError::MalformedSignature),
            ),
            (
                "bad hex",
                vec![format!("v1={}", "zz".repeat(32))],
                Err(VerifyError::MalformedSignature),
            ),
            (
                "space inside",
                vec![format!("v1= {}", &good[3..])],
                Err(VerifyError::MalformedSignature),
            ),
            (
                "empty",
                vec![String::new()],
                Err(VerifyError::MalformedSignature),
            ),
            (
                "too long",
                vec!["x".repeat(MAX_SIGNATURE_HEADER_LEN + 1)],
                Err(VerifyError::MalformedSignature),
            ),
            ("absent", vec![], Err(VerifyError::MissingSignature)),
        ];
        for (name, lines, want) in cases {
            let got = Signatures::parse(lines.iter().map(|l| l.as_bytes())).map(|s| s.len());
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn hex_decoding() {
        let good = signature_for(b"{}");
        let digits = &good.as_bytes()[3..];
        let expected: [u8; DIGEST_LEN] = hex::decode(digits)
            .expect("sign writes hex")
            .try_into()
            .expect("32 bytes");
        let with = |i: usize, byte: u8| {
            let mut copy = digits.to_vec();
            copy[i] = byte;
            copy
        };
        type Case = (&'static str, Vec<u8>, Option<[u8; DIGEST_LEN]>);
        let cases: Vec<Case> = vec![
            ("lower case", digits.to_vec(), Some(expected)),
            ("upper case", digits.to_ascii_uppercase(), Some(expected)),
            (
                "all digit values",
                b"0123456789abcdefABCDEF".repeat(3)[..64].to_vec(),
                {
                    hex::decode(&b"0123456789abcdefABCDEF".repeat(3)[..64])
                        .ok()
                        .and_then(|v| v.try_into().ok())
                },
            ),
            ("letter past f", with(0, b'g'), None),
            ("last digit bad", with(63, b'G'), None),
            ("colon", with(10, b':'), None),
            ("slash", with(11, b'/'), None),
            ("high byte", with(20, 0xFF), None),
            ("nul", with(21, 0), None),
            ("63 digits", digits[..63].to_vec(), None),
            ("65 digits", [digits, b"0"].concat(), None),
        ];
        for (name, input, want) in cases {
            assert_eq!(decode_hex(&input), want, "{name}");
        }
    }

    #[test]
    fn digests_differ_in_any_byte() {
        let a = [7u8; DIGEST_LEN];
        assert!(bool::from(equal_digests(&a, &a)));
        for i in 0..DIGEST_LEN {
            for bit in [0x01, 0x80] {
                let mut b = a;
                b[i] ^= bit;
                assert!(!bool::from(equal_digests(&a, &b)), "byte {i}, bit {bit}");
            }
        }
    }

    #[test]
    fn one_update_prefix_matches_the_public_digest() {
        for text in [&b"0"[..], b"1781942245", b"999999999999"] {
            let ts = Timestamp::parse(text).expect("digits parse");
            assert_eq!(ts.signed_prefix(), [text, b"."].concat());
            assert_eq!(
                digest_of(&secret(), &ts, b"{}"),
                digest(&secret(), text, b"{}")
            );
        }
    }

    #[test]
    fn entries_beyond_the_cap_are_ignored() {
        let good = signature_for(b"{}");
        let junk = format!("v1={}", "0".repeat(64));
        let mut line = vec![junk; 5000].join(",");
        line.push(',');
        line.push_str(&good);
        let parsed = Signatures::parse([line.as_bytes()]);
        assert_eq!(parsed.err(), Some(VerifyError::MalformedSignature));

        let line = vec![signature_for(b"other"); MAX_SIGNATURES + 3].join(",");
        let parsed = Signatures::parse([line.as_bytes()]).expect("entries are well formed");
        assert_eq!(parsed.len(), MAX_SIGNATURES);
    }

    #[test]
    fn verification_outcomes() {
        let body = br#"{"type":"call.completed"}"#;
        let other = Secret::new("whsec_other").expect("valid");
        let ts = Timestamp::parse(NOW.to_string().as_bytes()).expect("digits parse");
        let good = signature_for(body);
        type Case<'a> = (
            &'a str,
            Vec<Secret>,
            String,
            &'a [u8],
            Result<(), VerifyError>,
        );
        let cases: Vec<Case<'_>> = vec![
            ("match", vec![secret()], good.clone(), body, Ok(())),
            (
                "rotation, new first",
                vec![other.clone(), secret()],
                good.clone(),
                body,
                Ok(()),
            ),
            (
                "wrong secret",
                vec![other.clone()],
                good.clone(),
                body,
                Err(VerifyError::Mismatch),
            ),
            (
                "no secrets",
                vec![],
                good.clone(),
                body,
                Err(VerifyError::Mismatch),
            ),
            (
                "body changed",
                vec![secret()],
                good.clone(),
                b"{}",
                Err(VerifyError::Mismatch),
            ),
            (
                "second entry matches",
                vec![secret()],
                format!("v1={},{good}", "0".repeat(64)),
                body,
                Ok(()),
            ),
        ];
        for (name, secrets, header, body, want) in cases {
            let sigs = Signatures::parse([header.as_bytes()]).expect("well formed");
            assert_eq!(verify(&secrets, &ts, &sigs, body), want, "{name}");
        }
    }

    #[test]
    fn secret_is_used_as_given_not_decoded() {
        let stripped = Secret::new(&SECRET["whsec_".len()..]).expect("valid");
        assert_ne!(
            digest(&stripped, b"1", b"{}"),
            digest(&secret(), b"1", b"{}")
        );
    }

    #[test]
    fn debug_hides_digests() {
        let sigs = Signatures::parse([signature_for(b"{}").as_bytes()]).expect("well formed");
        let signed = sign(&secret(), NOW, b"{}");
        assert!(!format!("{sigs:?}{signed:?}").contains(&signed.signature[3..]));
    }
}
