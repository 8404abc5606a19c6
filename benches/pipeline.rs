//! The whole layer in process, the dedupe store and event parsing.
//!
//! - `layer`: a request through an axum router with the layer (`oneshot`),
//!   to the handler's answer, for a first delivery and for a duplicate of a
//!   handled one, against the same router whose handler reads the body
//!   without the layer;
//! - `dedupe`: the in-memory store's claim and complete, on one thread and
//!   from four tasks at once;
//! - `parse`: the vendor's sample into an [`Event`].

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::routing::post;
use criterion::{BatchSize, Criterion};
use http::{Request, StatusCode};
use kwickphone_webhooks::dedupe::{Claim, DedupeStore, EventKey, MemoryStore};
use kwickphone_webhooks::{CallCompleted, Event, Secret, Secrets, VerifyWebhookLayer, verify};
use tower::ServiceExt;

#[path = "support/ratios.rs"]
mod ratios;
mod support;

async fn handled(event: CallCompleted) -> StatusCode {
    black_box(&event.call.call_sid);
    StatusCode::OK
}

async fn bare(body: Bytes) -> StatusCode {
    black_box(&body);
    StatusCode::OK
}

fn signed(secret: &Secret, uri: &str, body: Vec<u8>) -> Request<Body> {
    let headers = verify::sign(secret, support::now_secs(), &body);
    Request::post(uri)
        .header("content-type", "application/json")
        .header(verify::TIMESTAMP_HEADER, headers.timestamp)
        .header(verify::SIGNATURE_HEADER, headers.signature)
        .body(Body::from(body))
        .expect("a valid request")
}

fn bench_layer(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime builds");
    let secret = Secret::new(support::SECRET).expect("valid");
    let layer = VerifyWebhookLayer::new(Secrets::single(secret.clone()));
    let app = Router::new()
        .route("/hooks/kp", post(handled).route_layer(layer))
        .route("/bare", post(bare));
    let counter = AtomicU64::new(0);
    let fresh = || {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let body = support::sample_with_call_sid(&format!("CA{n:032x}"));
        signed(&secret, "/hooks/kp", body)
    };
    let send = |request: Request<Body>| {
        let response = runtime
            .block_on(app.clone().oneshot(request))
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
    };

    let mut group = c.benchmark_group("layer");
    group.bench_function("bare", |b| {
        b.iter_batched(
            || signed(&secret, "/bare", support::SAMPLE.as_bytes().to_vec()),
            send,
            BatchSize::SmallInput,
        )
    });
    group.bench_function("first_delivery", |b| {
        b.iter_batched(fresh, send, BatchSize::SmallInput)
    });
    let body = support::SAMPLE.as_bytes().to_vec();
    send(signed(&secret, "/hooks/kp", body.clone()));
    group.bench_function("duplicate", |b| {
        b.iter_batched(
            || signed(&secret, "/hooks/kp", body.clone()),
            send,
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn keys(count: u64, offset: u64) -> Vec<EventKey> {
    (offset..offset + count)
        .map(|i| EventKey::new("num_12", "call.completed", &format!("CA{i:032x}")))
        .collect()
}

async fn claim_and_complete(store: &MemoryStore, keys: &[EventKey]) {
    let lease = Duration::from_secs(30);
    let retention = Duration::from_secs(86_400);
    for key in keys {
        let Ok(Claim::First(token)) = store.claim(key, lease).await else {
            panic!("every key is new");
        };
        let done = store.complete(key, token, retention).await;
        assert!(done.is_ok());
    }
}

fn bench_dedupe(c: &mut Criterion) {
    const TASKS: u64 = 4;
    let store = MemoryStore::default();
    let offset = AtomicU64::new(0);
    let next_keys = |count: u64| keys(count, offset.fetch_add(count, Ordering::Relaxed));

    let mut group = c.benchmark_group("dedupe");
    let single = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime builds");
    group.bench_function("claim_complete", |b| {
        b.iter_custom(|iters| {
            let keys = next_keys(iters);
            let started = Instant::now();
            single.block_on(claim_and_complete(&store, &keys));
            started.elapsed()
        })
    });

    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("a runtime builds");
    let shared = Arc::new(store.clone());
    group.bench_function("claim_complete_4_tasks", |b| {
        b.iter_custom(|iters| {
            let per_task = iters.div_ceil(TASKS);
            let batches: Vec<_> = (0..TASKS).map(|_| next_keys(per_task)).collect();
            let started = Instant::now();
            multi.block_on(async {
                let tasks: Vec<_> = batches
                    .into_iter()
                    .map(|keys| {
                        let store = Arc::clone(&shared);
                        tokio::spawn(async move { claim_and_complete(&store, &keys).await })
                    })
                    .collect();
                for task in tasks {
                    task.await.expect("no task panics");
                }
            });
            // Per operation: the tasks ran `per_task * TASKS` of them.
            started
                .elapsed()
                .mul_f64(iters as f64 / (per_task * TASKS) as f64)
        })
    });
    group.finish();
}

fn bench_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    group.bench_function("event_285B", |b| {
        b.iter(|| Event::from_slice(black_box(support::SAMPLE.as_bytes())))
    });
    group.finish();
}

fn main() {
    let since = SystemTime::now();
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
        .configure_from_args();
    bench_layer(&mut criterion);
    bench_dedupe(&mut criterion);
    bench_parse(&mut criterion);
    criterion.final_summary();

    let pair = |name: &str, a: &str, b: &str| (name.to_owned(), a.to_owned(), b.to_owned());
    let pairs = [
        pair(
            "first delivery / bare (time)",
            "layer/first_delivery",
            "layer/bare",
        ),
        pair("duplicate / bare (time)", "layer/duplicate", "layer/bare"),
    ];
    ratios::print("ratios (medians of this run)", since, &pairs);
}
