//! A loopback load comparison: one server with a bare route and the verified
//! route, both driven with the same pre-signed deliveries.
//!
//! ```text
//! cargo run --release --example load -- [--secs 6] [--connections 8] [--requests 800000]
//! ```
//!
//! The bare route reads the body and answers 200. The verified route runs
//! the whole layer: size and encoding checks, headers, window, HMAC, parsing,
//! dedupe in a `MemoryStore` and the `CallCompleted` extractor. Every
//! delivery has its own `call_sid`, so each one is a first delivery; the
//! store is sized to remember all of them, and the run ends by saying how
//! many it holds and whether any was evicted early.
//!
//! The server runs on one thread and the client on another, so the server's
//! work per request decides the rate. Each route gets a one-second warm-up,
//! then `--secs` of measurement in three turns that alternate with the other
//! route's, so that a change in the machine's load falls on both; the
//! verified route stops early if the pre-signed requests run out. Only
//! 127.0.0.1 is used.

#![allow(clippy::print_stdout)]

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use http::{HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use kwickphone_webhooks::dedupe::MemoryStore;
use kwickphone_webhooks::{CallCompleted, Secret, Secrets, VerifyWebhookLayer, testing, verify};

const SECRET: &str = "whsec_8f3c2a9b7d1e4f60a5b3c7d9e1f2a4b6";
const WARM_UP: Duration = Duration::from_secs(1);
const BARE: &str = "/bare";
const VERIFIED: &str = "/hooks/kp";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Options {
    secs: u64,
    connections: usize,
    requests: usize,
}

impl Options {
    fn from_args() -> Result<Self, BoxError> {
        let mut options = Self {
            secs: 6,
            connections: 8,
            requests: 800_000,
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let value = args.next().ok_or("every flag takes a value")?;
            match flag.as_str() {
                "--secs" => options.secs = value.parse()?,
                "--connections" => options.connections = value.parse()?,
                "--requests" => options.requests = value.parse()?,
                other => return Err(format!("unknown flag {other}").into()),
            }
        }
        Ok(options)
    }
}

/// One pre-signed delivery.
struct Signed {
    body: Bytes,
    timestamp: HeaderValue,
    signature: HeaderValue,
}

fn presign(secret: &Secret, count: usize) -> Result<Vec<Signed>, BoxError> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    (0..count)
        .map(|i| {
            let body = testing::call_completed_body("num_12", &format!("CA{i:032x}"));
            let signed = verify::sign(secret, now, body.as_bytes());
            Ok(Signed {
                body: Bytes::from(body),
                timestamp: HeaderValue::try_from(signed.timestamp)?,
                signature: HeaderValue::try_from(signed.signature)?,
            })
        })
        .collect()
}

async fn on_call(event: CallCompleted) -> StatusCode {
    std::hint::black_box(&event.call.call_sid);
    StatusCode::OK
}

async fn bare(body: Bytes) -> StatusCode {
    std::hint::black_box(&body);
    StatusCode::OK
}

fn serve(secret: Secret, store: MemoryStore) -> Result<SocketAddr, BoxError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let layer = VerifyWebhookLayer::builder(Secrets::single(secret))
        .store(store)
        .build()?;
    let app = Router::new()
        .route(BARE, post(bare))
        .route(VERIFIED, post(on_call).route_layer(layer));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    std::thread::spawn(move || {
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            axum::serve(listener, app).await
        })
    });
    Ok(addr)
}

/// What one or more turns measured.
#[derive(Default)]
struct Report {
    requests: usize,
    failures: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Report {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        let last = self.latencies.len().saturating_sub(1);
        let index = ((last as f64) * p).round() as usize;
        self.latencies.get(index).copied().unwrap_or_default()
    }
}

/// Sends requests from `pool`, starting at `cursor`, over `connections`
/// keep-alive connections until `span` has passed or the pool runs out.
async fn drive(
    addr: SocketAddr,
    path: &'static str,
    pool: Arc<Vec<Signed>>,
    cursor: Arc<AtomicUsize>,
    connections: usize,
    span: Duration,
) -> Result<Report, BoxError> {
    let started = Instant::now();
    let deadline = started + span;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let (pool, cursor) = (Arc::clone(&pool), Arc::clone(&cursor));
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = 0;
            while Instant::now() < deadline {
                let next = cursor.fetch_add(1, Ordering::Relaxed);
                // The bare route may see a delivery twice; the verified one
                // must not, or it would answer duplicates.
                let index = if path == BARE {
                    next % pool.len()
                } else {
                    next
                };
                let Some(signed) = pool.get(index) else {
                    break;
                };
                let request = Request::post(path)
                    .header("host", "127.0.0.1")
                    .header("content-type", "application/json")
                    .header(verify::TIMESTAMP_HEADER, signed.timestamp.clone())
                    .header(verify::SIGNATURE_HEADER, signed.signature.clone())
                    .body(Full::new(signed.body.clone()))?;
                let sent = Instant::now();
                let response = sender.send_request(request).await?;
                let status = response.status();
                response.into_body().collect().await?;
                latencies.push(sent.elapsed());
                failures += usize::from(status != StatusCode::OK);
            }
            Ok::<_, BoxError>((latencies, failures))
        }));
    }

    let mut report = Report {
        requests: 0,
        failures: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    for task in tasks {
        let (latencies, failures) = task.await??;
        report.latencies.extend(latencies);
        report.failures += failures;
    }
    report.elapsed = started.elapsed();
    report.requests = report.latencies.len();
    Ok(report)
}

const TURNS: u32 = 3;

impl Report {
    fn merge(&mut self, other: Report) {
        self.requests += other.requests;
        self.failures += other.failures;
        self.elapsed += other.elapsed;
        self.latencies.extend(other.latencies);
    }
}

/// Drives both routes in alternating turns, after a warm-up of each.
async fn compare(
    addr: SocketAddr,
    pool: &Arc<Vec<Signed>>,
    options: &Options,
) -> Result<(Report, Report), BoxError> {
    let cursors = [Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0))];
    let run = |path, cursor: &Arc<AtomicUsize>, span| {
        let (pool, cursor) = (Arc::clone(pool), Arc::clone(cursor));
        drive(addr, path, pool, cursor, options.connections, span)
    };
    run(BARE, &cursors[0], WARM_UP).await?;
    run(VERIFIED, &cursors[1], WARM_UP).await?;

    let turn = Duration::from_secs(options.secs) / TURNS;
    let (mut bare, mut verified) = (Report::default(), Report::default());
    for _ in 0..TURNS {
        bare.merge(run(BARE, &cursors[0], turn).await?);
        verified.merge(run(VERIFIED, &cursors[1], turn).await?);
    }
    if cursors[1].load(Ordering::Relaxed) >= pool.len() {
        println!("note: the verified route used every pre-signed request; raise --requests");
    }
    bare.latencies.sort_unstable();
    verified.latencies.sort_unstable();
    Ok((bare, verified))
}

fn print(name: &str, report: &Report) {
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{name:<9} {:>9.0} req/s  p50 {:>7.1} us  p90 {:>7.1} us  p99 {:>7.1} us  ({} requests, {} not 200)",
        report.rate(),
        us(report.percentile(0.50)),
        us(report.percentile(0.90)),
        us(report.percentile(0.99)),
        report.requests,
        report.failures,
    );
}

fn main() -> Result<(), BoxError> {
    let options = Options::from_args()?;
    let secret = Secret::new(SECRET)?;
    let pool = Arc::new(presign(&secret, options.requests)?);
    // Sized, as the store's docs ask, to remember every delivery of the run:
    // the default capacity would be full after a few seconds and evict a
    // marker on every further delivery, which a sized deployment never does.
    let capacity = NonZeroUsize::new(options.requests).ok_or("--requests must not be 0")?;
    let store = MemoryStore::new(capacity);
    let addr = serve(secret, store.clone())?;

    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let (bare, verified) = client.block_on(compare(addr, &pool, &options))?;

    println!(
        "{} connections, {} s per route in {TURNS} turns, server on one thread",
        options.connections, options.secs
    );
    print("bare", &bare);
    print("verified", &verified);
    println!(
        "verified / bare: {:.1} % of the requests per second, p50 latency x{:.2}",
        100.0 * verified.rate() / bare.rate(),
        verified.percentile(0.5).as_secs_f64() / bare.percentile(0.5).as_secs_f64(),
    );
    println!(
        "dedupe store: {} events remembered, {} evicted early",
        store.len(),
        store.evicted_early()
    );
    if bare.failures + verified.failures > 0 {
        return Err("some requests were not answered 200".into());
    }
    Ok(())
}
