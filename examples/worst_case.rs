//! Measures the most work one forged request can cause the layer.
//!
//! Anyone can send a body at the size limit with a fresh timestamp and a
//! signature header holding the most `v1=` entries that are examined. The
//! layer then reads and parses the whole body and computes one HMAC over it
//! per secret of the claimed number; a body without a readable `number_id` is
//! checked against every secret, when the source offers at most
//! [`MAX_FALLBACK_SECRETS`] of them. Each HMAC is compared with every entry.
//!
//! ```text
//! cargo run --release --example worst_case
//! ```
//!
//! Prints the median wall time per request, on one thread, for each shape.

#![allow(clippy::print_stdout)]

use std::convert::Infallible;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use kwickphone_webhooks::clock::Clock;
use kwickphone_webhooks::secrets::MAX_FALLBACK_SECRETS;
use kwickphone_webhooks::verify::MAX_SIGNATURES;
use kwickphone_webhooks::{DEFAULT_BODY_LIMIT, Secret, Secrets, VerifyWebhookLayer};
use tower::{Layer, ServiceExt, service_fn};

const NOW: u64 = 1_781_942_245;
const ROUNDS: usize = 40;

#[derive(Debug, Clone, Copy)]
struct Fixed;

impl Clock for Fixed {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOW)
    }
}

/// A JSON body of exactly the size limit, with `number_id` if given.
fn body(number_id: Option<&str>) -> Vec<u8> {
    let head = match number_id {
        Some(id) => format!(r#"{{"type":"call.completed","number_id":"{id}","pad":""#),
        None => r#"{"type":"call.completed","pad":""#.to_owned(),
    };
    let tail = r#""}"#;
    let pad = DEFAULT_BODY_LIMIT - head.len() - tail.len();
    format!("{head}{}{tail}", "x".repeat(pad)).into_bytes()
}

fn forged_signature() -> String {
    let entry = format!("v1={}", "ab".repeat(32));
    vec![entry; MAX_SIGNATURES * 100].join(",")[..4096].to_owned()
}

/// Sends `body` ROUNDS times and returns the median time and the status.
async fn measure(layer: &VerifyWebhookLayer, body: &[u8]) -> (Duration, u16) {
    let inner = service_fn(|_: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
    });
    let service = layer.layer(inner);
    let body = Bytes::copy_from_slice(body);
    let signature = forged_signature();
    let mut times = Vec::with_capacity(ROUNDS);
    let mut status = 0;
    for _ in 0..ROUNDS {
        let request = Request::post("/hooks/kp")
            .header("x-kwickphone-timestamp", NOW.to_string())
            .header("x-kwickphone-signature", signature.as_str())
            .body(Full::new(body.clone()))
            .map_err(|e| e.to_string());
        let Ok(request) = request else { continue };
        let start = Instant::now();
        let response = service.clone().oneshot(request).await;
        times.push(start.elapsed());
        status = response.map_or(0, |r| r.status().as_u16());
    }
    times.sort();
    (times[times.len() / 2], status)
}

fn layer(secrets: Secrets) -> Result<VerifyWebhookLayer, kwickphone_webhooks::ConfigError> {
    VerifyWebhookLayer::builder(secrets).clock(Fixed).build()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secret = |i: usize| Secret::new(format!("whsec_worst_case_{i}"));
    let shapes: [(&str, usize, Option<&str>); 4] = [
        ("number with 1 secret", 1, Some("num_0")),
        ("number with 2 secrets (rotation)", 2, Some("num_0")),
        ("number with 4 secrets", 4, Some("num_0")),
        (
            "no number_id, fallback to every secret",
            MAX_FALLBACK_SECRETS,
            None,
        ),
    ];
    println!(
        "body {} bytes, {} signature entries examined, {} rounds each",
        DEFAULT_BODY_LIMIT, MAX_SIGNATURES, ROUNDS
    );
    for (name, count, number_id) in shapes {
        let secrets = Secrets::new();
        for i in 0..count {
            let number = if number_id.is_some() {
                "num_0".to_owned()
            } else {
                format!("num_{i}")
            };
            secrets.add(number, secret(i)?);
        }
        let (median, status) = measure(&layer(secrets)?, &body(number_id)).await;
        println!(
            "{name:<42} {count:>2} HMACs: median {median:>10.2?} per request (status {status})"
        );
    }
    Ok(())
}
