//! The main job, end to end: a receiver on a loopback port and a simulated
//! vendor that delivers real events, retries, concurrent duplicates,
//! forgeries, stale and oversized requests, then checks every answer.
//!
//! ```text
//! cargo run --example demo
//! ```
//!
//! Prints one row per delivery and exits non-zero if any outcome differs from
//! the expected one.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::HashSet;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use kwickphone_webhooks::{CallCompleted, Secret, Secrets, VerifyWebhookLayer, verify};

const NUM_12_SECRET: &str = "whsec_8f3c2a9b7d1e4f60a5b3c7d9e1f2a4b6";
const NUM_13_SECRET: &str = "whsec_0d4e6a1c9b7f3e2d5a8c4b6e1f0a3d7c";
const SLOW_HANDLER: Duration = Duration::from_millis(400);

/// The events the handler completed, as `number_id/call_sid`, shared with
/// the vendor for checking.
#[derive(Default)]
struct Handled {
    runs: Mutex<Vec<String>>,
    failed_once: Mutex<HashSet<String>>,
}

impl Handled {
    fn runs(&self) -> usize {
        self.runs.lock().map(|r| r.len()).unwrap_or(0)
    }
}

/// Handles a call: calls whose sid starts with `CAslow` take a while, and
/// those starting with `CAflaky` fail on their first run.
async fn on_call(State(handled): State<Arc<Handled>>, event: CallCompleted) -> StatusCode {
    let sid = event.call.call_sid;
    if sid.starts_with("CAslow") {
        tokio::time::sleep(SLOW_HANDLER).await;
    }
    if sid.starts_with("CAflaky")
        && handled
            .failed_once
            .lock()
            .is_ok_and(|mut f| f.insert(sid.clone()))
    {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    if let Ok(mut runs) = handled.runs.lock() {
        runs.push(format!("{}/{sid}", event.number_id));
    }
    StatusCode::OK
}

/// One request the vendor sends.
struct Delivery {
    body: Vec<u8>,
    timestamp: String,
    signature: String,
    gzip: bool,
}

impl Delivery {
    fn signed(secret: &Secret, at: u64, body: impl Into<Vec<u8>>) -> Self {
        let body = body.into();
        let signed = verify::sign(secret, at, &body);
        Self {
            body,
            timestamp: signed.timestamp,
            signature: signed.signature,
            gzip: false,
        }
    }

    fn forged(mut self) -> Self {
        let last = if self.signature.ends_with('0') {
            "1"
        } else {
            "0"
        };
        self.signature
            .replace_range(self.signature.len() - 1.., last);
        self
    }

    fn gzipped(mut self) -> Self {
        self.gzip = true;
        self
    }
}

/// What the receiver answered.
#[derive(Debug, Clone, PartialEq)]
struct Answer {
    status: u16,
    code: String,
}

struct Vendor {
    client: reqwest::Client,
    url: String,
}

impl Vendor {
    async fn deliver(&self, delivery: &Delivery) -> Answer {
        let mut request = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("x-kwickphone-timestamp", &delivery.timestamp)
            .header("x-kwickphone-signature", &delivery.signature)
            .body(delivery.body.clone());
        if delivery.gzip {
            request = request.header("content-encoding", "gzip");
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                let code = body["error"]["code"].as_str().unwrap_or("-").to_owned();
                Answer { status, code }
            }
            Err(_) => Answer {
                status: 0,
                code: "connection failed".into(),
            },
        }
    }
}

fn event_body(event_type: &str, number_id: &str, call_sid: &str) -> serde_json::Value {
    serde_json::json!({
        "type": event_type,
        "number_id": number_id,
        "occurred_at": "2026-06-20T07:57:25+00:00",
        "call": {
            "call_sid": call_sid, "caller": "+12145559876", "outcome": "order",
            "duration_sec": 132, "started_at": "2026-06-20T07:55:10Z",
            "has_recording": true, "has_transcript": true
        }
    })
}

fn call(number_id: &str, call_sid: &str) -> Vec<u8> {
    event_body("call.completed", number_id, call_sid)
        .to_string()
        .into_bytes()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Tallies rows and prints them as they come.
#[derive(Default)]
struct Report {
    rows: usize,
    mismatches: usize,
}

impl Report {
    fn header(&self) {
        println!(
            "{:>2}  {:<52} {:>6}  {:<27} {:<8} result",
            "#", "delivery", "status", "code", "handled"
        );
    }

    fn row(&mut self, what: &str, got: &Answer, ran: usize, want: (u16, &str, usize)) {
        self.rows += 1;
        let ok = (got.status, got.code.as_str(), ran) == want;
        self.mismatches += usize::from(!ok);
        let verdict = if ok {
            "as expected".to_owned()
        } else {
            format!(
                "MISMATCH: expected {} {} handler {}",
                want.0,
                want.1,
                ran_text(want.2)
            )
        };
        println!(
            "{:>2}  {:<52} {:>6}  {:<27} {:<8} {verdict}",
            self.rows,
            what,
            got.status,
            got.code,
            ran_text(ran)
        );
    }
}

fn ran_text(runs: usize) -> &'static str {
    if runs > 0 { "yes" } else { "-" }
}

async fn start_receiver(handled: Arc<Handled>) -> std::io::Result<String> {
    let secrets = Secrets::new();
    secrets.add("num_12", secret(NUM_12_SECRET));
    secrets.add("num_13", secret(NUM_13_SECRET));
    let app = Router::new()
        .route("/hooks/kp", post(on_call))
        .route_layer(VerifyWebhookLayer::new(secrets))
        .with_state(handled);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hooks/kp", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

fn secret(value: &str) -> Secret {
    Secret::new(value).expect("the demo's secrets are valid")
}

#[tokio::main]
async fn main() -> ExitCode {
    let handled = Arc::new(Handled::default());
    let url = match start_receiver(Arc::clone(&handled)).await {
        Ok(url) => url,
        Err(err) => {
            eprintln!("demo: cannot start the receiver: {err}");
            return ExitCode::FAILURE;
        }
    };
    println!("receiver listening at {url}; the vendor delivers:\n");
    let vendor = Vendor {
        client: reqwest::Client::new(),
        url,
    };
    let mut report = Report::default();
    report.header();
    play(&vendor, &handled, &mut report).await;

    let distinct: HashSet<String> = handled
        .runs
        .lock()
        .map(|r| r.iter().cloned().collect())
        .unwrap_or_default();
    println!(
        "\n{} deliveries; the handler completed {} times for {} distinct events; {} mismatches",
        report.rows,
        handled.runs(),
        distinct.len(),
        report.mismatches
    );
    if report.mismatches == 0 && distinct.len() == handled.runs() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn play(vendor: &Vendor, handled: &Handled, report: &mut Report) {
    let num_12 = secret(NUM_12_SECRET);
    let num_13 = secret(NUM_13_SECRET);
    let t = now();

    let mut send = async |what: &str, delivery: Delivery, want: (u16, &str, usize)| {
        let before = handled.runs();
        let got = vendor.deliver(&delivery).await;
        report.row(what, &got, handled.runs() - before, want);
        got
    };

    let first = call("num_12", "CA0001");
    send(
        "num_12 call CA0001, first delivery",
        Delivery::signed(&num_12, t, first.clone()),
        (200, "-", 1),
    )
    .await;
    let pretty = serde_json::to_vec_pretty(&event_body("call.completed", "num_12", "CA0001"))
        .unwrap_or_default();
    send(
        "same call retried: re-signed, re-serialized",
        Delivery::signed(&num_12, t + 2, pretty),
        (200, "-", 0),
    )
    .await;
    send(
        "num_13 call CA0002 (anonymous caller)",
        Delivery::signed(&num_13, t, call("num_13", "CA0002")),
        (200, "-", 1),
    )
    .await;
    send(
        "same call_sid CA0002 on another number",
        Delivery::signed(&num_12, t, call("num_12", "CA0002")),
        (200, "-", 1),
    )
    .await;

    concurrent_duplicates(vendor, handled, report, &num_12, t).await;

    let mut send = async |what: &str, delivery: Delivery, want: (u16, &str, usize)| {
        let before = handled.runs();
        let got = vendor.deliver(&delivery).await;
        report.row(what, &got, handled.runs() - before, want);
    };
    let flaky = call("num_12", "CAflaky4");
    send(
        "handler fails on CAflaky4 (503 from the handler)",
        Delivery::signed(&num_12, t, flaky.clone()),
        (503, "-", 0),
    )
    .await;
    send(
        "vendor retries CAflaky4: the claim was released",
        Delivery::signed(&num_12, t + 4, flaky),
        (200, "-", 1),
    )
    .await;
    send(
        "forged signature",
        Delivery::signed(&num_12, t, call("num_12", "CA0005")).forged(),
        (401, "invalid_signature", 0),
    )
    .await;
    send(
        "stale timestamp, 10 minutes old",
        Delivery::signed(&num_12, t - 600, call("num_12", "CA0006")),
        (401, "timestamp_out_of_tolerance", 0),
    )
    .await;
    send(
        "timestamp 10 minutes in the future",
        Delivery::signed(&num_12, t + 600, call("num_12", "CA0006")),
        (401, "timestamp_out_of_tolerance", 0),
    )
    .await;
    send(
        "num_12 body signed with num_13's secret",
        Delivery::signed(&num_13, t, call("num_12", "CA0007")),
        (401, "invalid_signature", 0),
    )
    .await;
    send(
        "unknown number num_99",
        Delivery::signed(&num_12, t, call("num_99", "CA0008")),
        (401, "unknown_number", 0),
    )
    .await;
    let unknown = event_body("call.transferred", "num_12", "CA0009").to_string();
    send(
        "unknown event type call.transferred",
        Delivery::signed(&num_12, t, unknown),
        (200, "-", 0),
    )
    .await;
    send(
        "signed body that is not JSON",
        Delivery::signed(&num_12, t, "{\"type\":"),
        (400, "invalid_payload", 0),
    )
    .await;
    let huge = vec![b' '; 2 * 1024 * 1024];
    send(
        "oversized body, 2 MiB",
        Delivery::signed(&num_12, t, huge),
        (413, "payload_too_large", 0),
    )
    .await;
    send(
        "gzip-encoded body",
        Delivery::signed(&num_12, t, call("num_12", "CA0010")).gzipped(),
        (415, "unsupported_encoding", 0),
    )
    .await;
}

/// Two identical deliveries at once: one runs the handler, the other is told
/// to come back later, and its retry finds the event done.
async fn concurrent_duplicates(
    vendor: &Vendor,
    handled: &Handled,
    report: &mut Report,
    secret: &Secret,
    t: u64,
) {
    let delivery = Delivery::signed(secret, t, call("num_12", "CAslow3"));
    let before = handled.runs();
    let (a, b) = tokio::join!(vendor.deliver(&delivery), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        vendor.deliver(&delivery).await
    });
    let ran = handled.runs() - before;
    report.row("CAslow3, slow handler: delivery A", &a, ran, (200, "-", 1));
    report.row(
        "CAslow3, same moment: duplicate B",
        &b,
        0,
        (409, "delivery_in_progress", 0),
    );

    let retry = Delivery::signed(secret, t + 3, call("num_12", "CAslow3"));
    let before = handled.runs();
    let got = vendor.deliver(&retry).await;
    report.row(
        "vendor retries B after Retry-After",
        &got,
        handled.runs() - before,
        (200, "-", 0),
    );
}
