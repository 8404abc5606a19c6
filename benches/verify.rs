//! Verification of one delivery, side by side with the physical floor and the
//! alternatives, at 285 B (the vendor's sample), 4 KiB, 64 KiB and 1 MiB.
//!
//! - `sha256`: SHA-256 of the body alone, the floor for large bodies;
//! - `hmac_keyed`: HMAC-SHA256 of the body with a keyed state prepared in
//!   advance, the floor for small ones;
//! - `ours`: this crate, from the two raw header values to a verdict:
//!   `Timestamp::parse`, `check_window`, `Signatures::parse`, `verify`;
//! - `by_hand`: the vendor's Node.js sample translated literally: format the
//!   message into a new string, key a new HMAC, hex-encode, compare strings;
//! - `svix`: the `svix` crate verifying an equivalent payload under its own
//!   scheme.

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{BenchmarkId, Criterion, Throughput};
use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, HeaderValue};
use kwickphone_webhooks::Secret;
use kwickphone_webhooks::verify::{self, Signatures, Timestamp};
use sha2::{Digest, Sha256};

#[path = "support/ratios.rs"]
mod ratios;
mod support;

const TOLERANCE: Duration = Duration::from_secs(300);

/// One body with everything each contender needs to verify it.
struct Case {
    body: Vec<u8>,
    timestamp: String,
    signature: String,
    now: u64,
    svix_headers: HeaderMap,
}

fn case(len: usize, secret: &Secret, svix: &svix::webhooks::Webhook) -> Case {
    let body = body_of_len(len);
    let now = support::now_secs();
    let signed = verify::sign(secret, now, &body);

    let svix_id = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W";
    let svix_ts = i64::try_from(now).expect("the Unix time fits in i64");
    let svix_sig = svix
        .sign(svix_id, svix_ts, &body)
        .expect("bodies are UTF-8");
    let mut svix_headers = HeaderMap::new();
    let header = |v: String| HeaderValue::try_from(v).expect("ASCII header value");
    svix_headers.insert("svix-id", header(svix_id.to_owned()));
    svix_headers.insert("svix-timestamp", header(svix_ts.to_string()));
    svix_headers.insert("svix-signature", header(svix_sig));

    Case {
        body,
        timestamp: signed.timestamp,
        signature: signed.signature,
        now,
        svix_headers,
    }
}

use support::body_of_len;

/// This crate's path from raw header values to a verdict.
fn ours(secrets: &[Secret], case: &Case) -> bool {
    let Ok(timestamp) = Timestamp::parse(case.timestamp.as_bytes()) else {
        return false;
    };
    if timestamp.check_window(case.now, TOLERANCE).is_err() {
        return false;
    }
    let Ok(signatures) = Signatures::parse([case.signature.as_bytes()]) else {
        return false;
    };
    verify::verify(secrets, &timestamp, &signatures, &case.body).is_ok()
}

/// The vendor's Node.js sample, translated word for word.
fn by_hand(secret: &str, timestamp: &str, signature: &str, raw_body: &[u8]) -> bool {
    let Ok(raw_body) = std::str::from_utf8(raw_body) else {
        return false;
    };
    let message = format!("{timestamp}.{raw_body}");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(message.as_bytes());
    let expected = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
    signature == expected
}

fn bench_verify(c: &mut Criterion) {
    let secret = Secret::new(support::SECRET).expect("the vector's secret is valid");
    let secrets = [secret.clone()];
    let keyed = Hmac::<Sha256>::new_from_slice(support::SECRET.as_bytes()).expect("any key");
    let svix = svix::webhooks::Webhook::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        .expect("a base64 svix secret");

    let mut group = c.benchmark_group("verify");
    for (label, len) in support::SIZES {
        let case = case(len, &secret, &svix);
        assert!(ours(&secrets, &case), "our verification accepts the case");
        assert!(by_hand(
            support::SECRET,
            &case.timestamp,
            &case.signature,
            &case.body
        ));
        assert!(svix.verify(&case.body, &case.svix_headers).is_ok());

        let large = len >= 1024 * 1024;
        group.sample_size(if large { 20 } else { 50 });
        group.measurement_time(Duration::from_secs(if large { 3 } else { 2 }));
        group.throughput(Throughput::Bytes(len as u64));

        group.bench_with_input(BenchmarkId::new("sha256", label), &case, |b, case| {
            b.iter(|| Sha256::digest(black_box(&case.body)))
        });
        group.bench_with_input(BenchmarkId::new("hmac_keyed", label), &case, |b, case| {
            b.iter(|| {
                let mut mac = keyed.clone();
                mac.update(black_box(&case.body));
                mac.finalize().into_bytes()
            })
        });
        group.bench_with_input(BenchmarkId::new("ours", label), &case, |b, case| {
            b.iter(|| ours(black_box(&secrets), black_box(case)))
        });
        group.bench_with_input(BenchmarkId::new("by_hand", label), &case, |b, case| {
            b.iter(|| {
                by_hand(
                    black_box(support::SECRET),
                    black_box(&case.timestamp),
                    black_box(&case.signature),
                    black_box(&case.body),
                )
            })
        });
        group.bench_with_input(BenchmarkId::new("svix", label), &case, |b, case| {
            b.iter(|| svix.verify(black_box(&case.body), black_box(&case.svix_headers)))
        });
    }
    group.finish();
}

fn print_ratios(since: SystemTime) {
    let mut pairs = Vec::new();
    for (label, _) in support::SIZES {
        let id = |f: &str| format!("verify/{f}/{label}");
        let pair = |name: &str, a: &str, b: &str| (format!("{label} {name}"), id(a), id(b));
        pairs.push(pair("ours / hmac_keyed (time)", "ours", "hmac_keyed"));
        pairs.push(pair("sha256 / ours (throughput)", "ours", "sha256"));
        pairs.push(pair("by_hand / ours (time)", "by_hand", "ours"));
        pairs.push(pair("svix / ours (time)", "svix", "ours"));
    }
    // The second ratio is throughput, ours over SHA-256: time of SHA-256 over
    // time of ours.
    let pairs: Vec<_> = pairs
        .into_iter()
        .map(|(name, a, b)| {
            if name.contains("(throughput)") {
                (name.replace("sha256 / ours", "ours / sha256"), b, a)
            } else {
                (name, a, b)
            }
        })
        .collect();
    ratios::print("ratios (medians of this run)", since, &pairs);
}

fn main() {
    let since = SystemTime::now();
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .configure_from_args();
    bench_verify(&mut criterion);
    criterion.final_summary();
    print_ratios(since);
}
