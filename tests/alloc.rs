//! Heap use, counted by a wrapping global allocator: the verification core
//! allocates nothing, and a remembered event costs a bounded, small number of
//! bytes in the in-memory dedupe store.
//!
//! The allocator counts every thread, so this file has no test harness (whose
//! threads and output capture allocate too): `main` runs each check in turn
//! on the only thread.

use std::alloc::System;
use std::num::NonZeroUsize;
use std::time::Duration;

use kwickphone_webhooks::dedupe::{Claim, DedupeStore, EventKey, MemoryStore};
use kwickphone_webhooks::verify::{self, Signatures, Timestamp};
use kwickphone_webhooks::{Secret, SecretList};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const SECRET: &str = "whsec_8f3c2a9b7d1e4f60a5b3c7d9e1f2a4b6";
const TIMESTAMP: &str = "1781942245";
const SIGNATURE: &str = "v1=1989f3e60076548e384671adc9f6818a1dd3cc282fb77e04d0dc7e238d6d3839";
const BODY: &str = concat!(
    r#"{"type":"call.completed","number_id":"num_12","#,
    r#""occurred_at":"2026-06-20T07:57:25+00:00","call":{"#,
    r#""call_sid":"CA9f0c1d2e3f405162738495a6b7c8d9e0","caller":"+12145559876","#,
    r#""outcome":"order","duration_sec":132,"started_at":"2026-06-20T07:55:10Z","#,
    r#""has_recording":true,"has_transcript":true}}"#
);

/// Runs every step from the raw header values to a verdict, as the layer does.
fn verify_vendor_sample(secrets: &[Secret]) -> bool {
    let Ok(timestamp) = Timestamp::parse(TIMESTAMP.as_bytes()) else {
        return false;
    };
    let window = timestamp.check_window(1_781_942_300, Duration::from_secs(300));
    let Ok(signatures) = Signatures::parse([SIGNATURE.as_bytes()]) else {
        return false;
    };
    window.is_ok() && verify::verify(secrets, &timestamp, &signatures, BODY.as_bytes()).is_ok()
}

/// Claims and completes the events numbered `range`, one after the other.
fn remember(store: &MemoryStore, range: std::ops::Range<usize>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime builds");
    let lease = Duration::from_secs(30);
    let retention = Duration::from_secs(86_400);
    runtime.block_on(async {
        for i in range {
            let key = EventKey::new("num_12", "call.completed", &format!("CA{i:032x}"));
            let Ok(Claim::First(token)) = store.claim(&key, lease).await else {
                panic!("a new event is claimed first");
            };
            store
                .complete(&key, token, retention)
                .await
                .expect("the claim is held");
        }
    });
}

/// Returns the bytes allocated and not freed since `region` began.
fn live_bytes(region: &Region<'_, System>) -> isize {
    let change = region.change();
    // Reallocations are already counted in the other two.
    change.bytes_allocated as isize - change.bytes_deallocated as isize
}

fn check_verification_allocates_nothing() {
    let secrets: SecretList = vec![Secret::new(SECRET).expect("valid")].into();
    // The vector checks out, so the loop below measures the passing path.
    assert!(verify_vendor_sample(&secrets));

    let region = Region::new(GLOBAL);
    for _ in 0..100 {
        assert!(verify_vendor_sample(&secrets));
    }
    let change = region.change();
    assert_eq!(change.allocations, 0, "{change:?}");
    assert_eq!(change.reallocations, 0, "{change:?}");
}

/// Measures what a full store holds per remembered event once it evicts
/// old markers for new ones, and checks that it then stops growing.
fn check_memory_per_event() {
    const CAPACITY: usize = 50_000;

    let region = Region::new(GLOBAL);
    let store = MemoryStore::new(NonZeroUsize::new(CAPACITY).expect("not zero"));
    // Filling, then evicting for twice the capacity, brings the map's table to
    // the size it keeps.
    remember(&store, 0..3 * CAPACITY);
    let steady = live_bytes(&region);
    assert_eq!(store.len(), CAPACITY);
    assert_eq!(store.in_flight(), 0);

    let per_event = steady as f64 / CAPACITY as f64;
    assert!(
        per_event > 24.0,
        "a marker holds at least its digest and deadline"
    );
    assert!(per_event < 200.0, "a marker costs {per_event:.1} bytes");

    remember(&store, 3 * CAPACITY..5 * CAPACITY);
    let growth = live_bytes(&region) - steady;
    assert_eq!(store.len(), CAPACITY);
    assert_eq!(growth, 0, "memory grew past capacity");
    drop(store);
    eprintln!("memory per remembered event at capacity: {per_event:.1} bytes");
}

fn main() {
    check_verification_allocates_nothing();
    eprintln!("verification allocates nothing: ok");
    check_memory_per_event();
    eprintln!("memory per remembered event bounded: ok");
}
