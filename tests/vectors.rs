//! Known-answer tests: the vendor's signing vectors, checked through the
//! crate's public API.

use std::time::Duration;

use kwickphone_webhooks::Secret;
use kwickphone_webhooks::verify::{self, Signatures, Timestamp, VerifyError};
use serde::Deserialize;

const VECTORS: &str = include_str!("data/signatures.json");

#[derive(Deserialize)]
struct File {
    vectors: Vec<Vector>,
}

#[derive(Deserialize)]
struct Vector {
    name: String,
    secret: String,
    timestamp: String,
    body: String,
    signature: String,
}

fn vectors() -> Vec<Vector> {
    let file: File = serde_json::from_str(VECTORS).expect("the vector file is valid JSON");
    assert!(file.vectors.len() >= 3, "the vector file lost entries");
    file.vectors
}

fn secret(vector: &Vector) -> Secret {
    Secret::new(vector.secret.as_str()).expect("vector secrets are valid")
}

fn timestamp(vector: &Vector) -> Timestamp {
    Timestamp::parse(vector.timestamp.as_bytes()).expect("vector timestamps are digits")
}

/// Verifies `body` against the vector's secret, timestamp and the given
/// signature header value.
fn check(vector: &Vector, secret: &Secret, header: &str, body: &[u8]) -> Result<(), VerifyError> {
    let signatures = Signatures::parse([header.as_bytes()])?;
    verify::verify(
        std::slice::from_ref(secret),
        &timestamp(vector),
        &signatures,
        body,
    )
}

#[test]
fn sign_reproduces_every_vector() {
    for v in vectors() {
        let secs: u64 = v.timestamp.parse().expect("vector timestamps are numbers");
        let signed = verify::sign(&secret(&v), secs, v.body.as_bytes());
        assert_eq!(signed.timestamp, v.timestamp, "{}", v.name);
        assert_eq!(signed.signature, v.signature, "{}", v.name);
    }
}

#[test]
fn digest_is_the_hex_of_every_vector() {
    for v in vectors() {
        let digest = verify::digest(&secret(&v), v.timestamp.as_bytes(), v.body.as_bytes());
        let want = v.signature.strip_prefix("v1=").expect("vectors use v1");
        assert_eq!(hex::encode(digest), want, "{}", v.name);
    }
}

#[test]
fn every_vector_verifies_within_the_window() {
    for v in vectors() {
        let ts = timestamp(&v);
        assert_eq!(ts.as_bytes(), v.timestamp.as_bytes(), "{}", v.name);
        let window = Duration::from_secs(300);
        assert_eq!(
            ts.check_window(ts.secs() + 300, window),
            Ok(()),
            "{}",
            v.name
        );
        assert_eq!(
            check(&v, &secret(&v), &v.signature, v.body.as_bytes()),
            Ok(()),
            "{}",
            v.name
        );
    }
}

#[test]
fn upper_case_hex_verifies() {
    for v in vectors() {
        let upper = format!("v1={}", v.signature[3..].to_uppercase());
        assert_ne!(upper, v.signature);
        assert_eq!(
            check(&v, &secret(&v), &upper, v.body.as_bytes()),
            Ok(()),
            "{}",
            v.name
        );
    }
}

#[test]
fn mixed_header_with_the_vector_among_other_entries_verifies() {
    for v in vectors() {
        let header = format!("v0=deadbeef, v1={} , {}", "ab".repeat(32), v.signature);
        assert_eq!(
            check(&v, &secret(&v), &header, v.body.as_bytes()),
            Ok(()),
            "{}",
            v.name
        );
    }
}

#[test]
fn reserialized_body_fails_verification() {
    // Frameworks that parse JSON and serialize it again hash other bytes:
    // this is why the layer keeps the raw body.
    for v in vectors() {
        let value: serde_json::Value = serde_json::from_str(&v.body).expect("vector bodies parse");
        let again = value.to_string();
        assert_ne!(again, v.body, "{}: re-serializing changed nothing", v.name);
        let got = check(&v, &secret(&v), &v.signature, again.as_bytes());
        assert_eq!(got, Err(VerifyError::Mismatch), "{}", v.name);
    }
}

#[test]
fn secret_without_its_prefix_fails_verification() {
    for v in vectors() {
        let bare = v
            .secret
            .strip_prefix("whsec_")
            .expect("vector secrets carry the prefix");
        let bare = Secret::new(bare).expect("the bare secret is valid");
        let got = check(&v, &bare, &v.signature, v.body.as_bytes());
        assert_eq!(got, Err(VerifyError::Mismatch), "{}", v.name);
    }
}

#[test]
fn another_timestamp_fails_verification() {
    for v in vectors() {
        let secs: u64 = v.timestamp.parse().expect("vector timestamps are numbers");
        let later = Timestamp::parse((secs + 1).to_string().as_bytes()).expect("digits");
        let signatures = Signatures::parse([v.signature.as_bytes()]).expect("well formed");
        let got = verify::verify(&[secret(&v)], &later, &signatures, v.body.as_bytes());
        assert_eq!(got, Err(VerifyError::Mismatch), "{}", v.name);
    }
}

#[test]
fn one_flipped_body_byte_fails_verification() {
    for v in vectors() {
        let mut body = v.body.clone().into_bytes();
        let last = body.len() - 2;
        body[last] ^= 0x01;
        let got = check(&v, &secret(&v), &v.signature, &body);
        assert_eq!(got, Err(VerifyError::Mismatch), "{}", v.name);
    }
}

#[test]
fn the_copy_matches_the_expected_first_signature() {
    // Guards the copied file itself: the first vector's signature is the one
    // quoted in the contract.
    let first = &vectors()[0];
    assert!(first.signature.starts_with("v1=1989f3e60076548e"));
    assert!(first.signature.ends_with("3839"));
}
