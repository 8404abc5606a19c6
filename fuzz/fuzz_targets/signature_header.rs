//! The signature header parser against a plain re-statement of its rules.
//!
//! Input: the header's lines, separated by `\n`.

#![no_main]

use kwickphone_webhooks::verify::{
    MAX_SIGNATURE_HEADER_LEN, MAX_SIGNATURES, Signatures, VerifyError,
};
use libfuzzer_sys::fuzz_target;

/// Counts the well-formed `v1=` entries, as the contract describes them.
fn well_formed_entries(lines: &[&[u8]]) -> usize {
    let is_space = |b: &u8| *b == b' ' || *b == b'\t';
    lines
        .iter()
        .flat_map(|line| line.split(|&b| b == b','))
        .filter(|entry| {
            let start = entry
                .iter()
                .position(|b| !is_space(b))
                .unwrap_or(entry.len());
            let end = entry
                .iter()
                .rposition(|b| !is_space(b))
                .map_or(start, |i| i + 1);
            let digits = entry[start..end].strip_prefix(b"v1=");
            digits.is_some_and(|d| d.len() == 64 && d.iter().all(u8::is_ascii_hexdigit))
        })
        .count()
}

fuzz_target!(|data: &[u8]| {
    let lines: Vec<&[u8]> = if data.is_empty() {
        Vec::new()
    } else {
        data.split(|&b| b == b'\n').collect()
    };
    let total: usize = lines.iter().map(|l| l.len()).sum();
    let parsed = Signatures::parse(lines.iter().copied());

    let want = match (lines.is_empty(), total > MAX_SIGNATURE_HEADER_LEN) {
        (true, _) => Err(VerifyError::MissingSignature),
        (false, true) => Err(VerifyError::MalformedSignature),
        (false, false) => match well_formed_entries(&lines) {
            0 => Err(VerifyError::MalformedSignature),
            n => Ok(n.min(MAX_SIGNATURES)),
        },
    };
    assert_eq!(parsed.map(|s| s.len()), want);
});
