//! A driver for profilers: sends pre-built requests through the layered
//! router in process (`oneshot`), so that a profile holds the layer's work
//! and little else.
//!
//! ```text
//! cargo run --release --example profile -- [bare|first|duplicate] [count] [current|multi]
//! valgrind --tool=callgrind target/release/examples/profile first 20000
//! ```
//!
//! Every request is built and signed before the loop starts; the loop only
//! sends them. `first` gives each request its own `call_sid`, `duplicate`
//! sends one handled event again and again, `bare` goes to a route without
//! the layer whose handler reads the body. `multi` runs the requests on a
//! multi-threaded runtime of one worker, as the load example's server does;
//! `current` (the default) on a current-thread runtime. The driver prints
//! the heap allocations per request it counted during the loop.

#![allow(clippy::print_stdout)]

use std::alloc::System;
use std::hint::black_box;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::routing::post;
use http::{Request, StatusCode};
use kwickphone_webhooks::{CallCompleted, Secret, Secrets, VerifyWebhookLayer, testing, verify};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::ServiceExt;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const SECRET: &str = "whsec_8f3c2a9b7d1e4f60a5b3c7d9e1f2a4b6";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn handled(event: CallCompleted) -> StatusCode {
    black_box(&event.call.call_sid);
    StatusCode::OK
}

async fn bare(body: Bytes) -> StatusCode {
    black_box(&body);
    StatusCode::OK
}

fn signed(secret: &Secret, now: u64, uri: &str, body: String) -> Result<Request<Body>, BoxError> {
    let headers = verify::sign(secret, now, body.as_bytes());
    let request = Request::post(uri)
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .header(verify::TIMESTAMP_HEADER, headers.timestamp)
        .header(verify::SIGNATURE_HEADER, headers.signature)
        .body(Body::from(body))?;
    Ok(request)
}

fn requests(mode: &str, count: usize, secret: &Secret) -> Result<Vec<Request<Body>>, BoxError> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let (uri, distinct) = match mode {
        "bare" => ("/bare", false),
        "first" => ("/hooks/kp", true),
        "duplicate" => ("/hooks/kp", false),
        other => return Err(format!("unknown mode {other}").into()),
    };
    (0..=count)
        .map(|i| {
            let sid = if distinct { i } else { 0 };
            signed(
                secret,
                now,
                uri,
                testing::call_completed_body("num_12", &format!("CA{sid:032x}")),
            )
        })
        .collect()
}

fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "first".to_owned());
    let count: usize = args.next().map_or(Ok(20_000), |c| c.parse())?;
    let flavor = args.next().unwrap_or_else(|| "current".to_owned());

    let secret = Secret::new(SECRET)?;
    let layer = VerifyWebhookLayer::new(Secrets::single(secret.clone()));
    let app = Router::new()
        .route("/hooks/kp", post(handled).route_layer(layer))
        .route("/bare", post(bare));
    let mut pending = requests(&mode, count, &secret)?.into_iter();
    let runtime = match flavor.as_str() {
        "multi" => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?,
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
    };

    runtime.block_on(async {
        // The first request handles the event that `duplicate` repeats, and
        // warms up the router.
        let warm = pending.next().ok_or("no request")?;
        app.clone().oneshot(warm).await?;

        let region = Region::new(GLOBAL);
        let started = Instant::now();
        for request in pending {
            let response = app.clone().oneshot(request).await?;
            if response.status() != StatusCode::OK {
                return Err(format!("answered {}", response.status()).into());
            }
            drop(black_box(response));
        }
        let elapsed = started.elapsed();
        let allocations = region.change().allocations;
        println!(
            "{mode}: {count} requests, {:.2} us each, {:.1} allocations each",
            elapsed.as_secs_f64() * 1e6 / count as f64,
            allocations as f64 / count as f64,
        );
        Ok::<_, BoxError>(())
    })
}
