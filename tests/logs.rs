//! The log events of every row of the status table: fixed messages, data in
//! fields, and never a secret, a signature or body content, in logs or in
//! responses.

mod common;

use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use common::{Action, CANARY, Chunked, NOW, SECRET_12, SECRET_13, Server, Unreachable};
use common::{body, signed, start_with};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Every line the crate logs, as JSON, in a buffer the test reads.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    fn take(&self) -> Vec<Value> {
        let bytes = std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner));
        let text = String::from_utf8(bytes).expect("logs are text");
        text.lines()
            .map(|l| serde_json::from_str(l).expect("each log line is JSON"))
            .collect()
    }
}

impl io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut sink = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        sink.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn install() -> Capture {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_env_filter(EnvFilter::new("kwickphone_webhooks=trace"))
        .with_writer(capture.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    capture
}

/// Things that must never be shown: secrets and this test's signatures.
const SECRETS: [&str; 3] = [SECRET_12, SECRET_13, "whsec_foreign_never_logged"];

struct Checker {
    capture: Capture,
    forbidden: Vec<String>,
}

impl Checker {
    /// Checks that one request logged exactly one event, `message` at `level`,
    /// whose fields include `want`; and that neither the logs nor `answer`
    /// show anything forbidden.
    fn expect(&mut self, name: &str, answer: &str, level: &str, message: &str, want: Value) {
        let events = self.capture.take();
        let all = format!("{answer}\n{events:?}");
        for secret in &self.forbidden {
            assert!(
                !all.contains(secret.as_str()),
                "{name}: leaked {secret}: {all}"
            );
        }
        assert!(!all.contains("whsec_"), "{name}: a secret prefix leaked");

        assert_eq!(events.len(), 1, "{name}: {events:#?}");
        let event = &events[0];
        assert_eq!(event["level"], level, "{name}");
        assert_eq!(event["fields"]["message"], message, "{name}");
        for (field, value) in want.as_object().expect("an object of fields") {
            assert_eq!(&event["fields"][field], value, "{name}: field {field}");
        }
    }

    /// Signs `payload`, remembers the signature as forbidden and returns the
    /// header lines.
    fn sign(&mut self, secret: &str, ts: u64, payload: &str) -> Vec<(String, String)> {
        let headers = signed(secret, ts, payload.as_bytes());
        self.forbidden.push(headers[1].1[3..].to_owned());
        headers
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_outcome_logs_fixed_messages_and_nothing_secret() {
    let capture = install();
    let server = start_with(|b| b.body_limit(4096)).await;
    let mut check = Checker {
        capture,
        forbidden: SECRETS
            .iter()
            .map(|s| s.to_string())
            .chain([CANARY.into()])
            .collect(),
    };
    let payload = body("num_12", "CA-log");
    let ok = json!({"number_id": "num_12", "call_sid": "CA-log"});

    let headers = check.sign(SECRET_12, NOW, &payload);
    let reply = server.send(&headers, payload.clone()).await;
    assert_eq!(reply.outcome(), (200, "-"));
    let want = json!({"number_id": "num_12", "call_sid": "CA-log", "status": 200});
    check.expect("handled", &reply.body, "INFO", "webhook accepted", want);

    let reply = server.send(&headers, payload.clone()).await;
    let want = json!({"number_id": "num_12", "call_sid": "CA-log", "status": 200});
    check.expect("done", &reply.body, "DEBUG", "duplicate delivery", want);

    let unknown = r#"{"type":"call.started","number_id":"num_12","note":"+1555CANARY0042"}"#;
    let reply = server
        .send(&check.sign(SECRET_12, NOW, unknown), unknown)
        .await;
    assert_eq!(reply.outcome(), (200, "-"));
    let want = json!({"number_id": "num_12", "event_type": "call.started", "status": 200});
    check.expect(
        "unknown",
        &reply.body,
        "INFO",
        "unknown event type acknowledged",
        want,
    );

    rejections(&server, &mut check).await;
    handler_outcomes(&server, &mut check, &ok).await;

    let broken = start_with(|b| b.store(Unreachable)).await;
    let reply = broken.send(&headers, payload.clone()).await;
    assert_eq!(reply.outcome(), (503, "dedupe_unavailable"));
    let want = json!({"number_id": "num_12", "call_sid": "CA-log", "reason": "claim"});
    check.expect(
        "store down",
        &reply.body,
        "WARN",
        "dedupe store failed",
        want,
    );
}

/// A name, header lines, a body, the expected outcome and logged fields.
type Case<'a> = (&'a str, Headers, reqwest::Body, (u16, &'a str), Value);
type Headers = Vec<(String, String)>;

/// Every rejection before the handler: one debug event with its reason.
async fn rejections(server: &Server, check: &mut Checker) {
    let payload = body("num_12", "CA-rej");
    let mut big = payload.clone();
    big.insert_str(big.len() - 1, &format!(",\"pad\":\"{}\"", "y".repeat(5000)));
    let no_sid =
        r#"{"type":"call.completed","number_id":"num_12","call":{"caller":"+1555CANARY0042"}}"#;
    let not_json = "+1555CANARY0042 is not json";

    let sign = |check: &mut Checker, secret: &str, ts: u64, p: &str| check.sign(secret, ts, p);
    let cases: Vec<Case<'_>> = vec![
        (
            "413 declared",
            sign(check, SECRET_12, NOW, &big),
            big.clone().into(),
            (413, "payload_too_large"),
            json!({}),
        ),
        (
            "413 chunked",
            sign(check, SECRET_12, NOW, &big),
            reqwest::Body::wrap(Chunked(vec![Bytes::from(big.clone())])),
            (413, "payload_too_large"),
            json!({}),
        ),
        (
            "415",
            gzip(sign(check, SECRET_12, NOW, &payload)),
            payload.clone().into(),
            (415, "unsupported_encoding"),
            json!({}),
        ),
        (
            "no headers",
            vec![],
            payload.clone().into(),
            (401, "invalid_signature"),
            json!({}),
        ),
        (
            "stale",
            sign(check, SECRET_12, NOW - 301, &payload),
            payload.clone().into(),
            (401, "timestamp_out_of_tolerance"),
            json!({"skew_secs": 301}),
        ),
        (
            "unknown number",
            sign(check, SECRET_12, NOW, &body("num_99", "CA-rej")),
            body("num_99", "CA-rej").into(),
            (401, "unknown_number"),
            json!({"number_id": "num_99"}),
        ),
        (
            "wrong secret",
            sign(check, SECRET_13, NOW, &payload),
            payload.clone().into(),
            (401, "invalid_signature"),
            json!({"number_id": "num_12"}),
        ),
        (
            "foreign secret, not json",
            sign(check, "whsec_foreign_never_logged", NOW, not_json),
            not_json.into(),
            (401, "invalid_signature"),
            json!({}),
        ),
        (
            "no call_sid",
            sign(check, SECRET_12, NOW, no_sid),
            no_sid.into(),
            (400, "invalid_payload"),
            json!({"number_id": "num_12"}),
        ),
        (
            "not json",
            sign(check, SECRET_12, NOW, not_json),
            not_json.into(),
            (400, "invalid_payload"),
            json!({}),
        ),
    ];
    for (name, headers, request_body, (status, code), mut want) in cases {
        let reply = server.send(&headers, request_body).await;
        assert_eq!(reply.outcome(), (status, code), "{name}");
        want["reason"] = json!(code);
        want["status"] = json!(status);
        check.expect(name, &reply.body, "DEBUG", "webhook rejected", want);
    }
}

fn gzip(mut headers: Vec<(String, String)>) -> Vec<(String, String)> {
    headers.push(("content-encoding".into(), "gzip".into()));
    headers
}

/// A duplicate in flight, and handlers that fail.
async fn handler_outcomes(server: &Server, check: &mut Checker, ok: &Value) {
    let payload = body("num_12", "CA-busy");
    let headers = check.sign(SECRET_12, NOW, &payload);
    let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let block = Action::Block {
        entered: Arc::clone(&entered),
        release: Arc::clone(&release),
    };
    server.app.script("CA-busy", vec![block]);
    let first = {
        let (client, url) = (server.client.clone(), server.url.clone());
        let (headers, payload) = (headers.clone(), payload.clone());
        tokio::spawn(async move {
            let mut request = client.post(url).body(payload);
            for (name, value) in headers {
                request = request.header(name, value);
            }
            request.send().await.expect("the server answers").status()
        })
    };
    entered.notified().await;
    let reply = server.send(&headers, payload.clone()).await;
    assert_eq!(reply.outcome(), (409, "delivery_in_progress"));
    let want = json!({"number_id": "num_12", "call_sid": "CA-busy", "status": 409});
    check.expect("409", &reply.body, "DEBUG", "duplicate delivery", want);
    release.notify_one();
    assert_eq!(first.await.expect("the first delivery ends"), 200);
    check.capture.take();

    let cases = [
        ("CA-panic", Action::Panic, (500, "handler_failed"), "panic"),
        ("CA-fails", Action::Status(500), (500, "-"), "status"),
    ];
    for (call_sid, action, outcome, reason) in cases {
        server.app.script(call_sid, vec![action]);
        let payload = body("num_12", call_sid);
        let reply = server
            .send(&check.sign(SECRET_12, NOW, &payload), payload)
            .await;
        assert_eq!(reply.outcome(), outcome, "{call_sid}");
        let mut want = ok.clone();
        want["call_sid"] = json!(call_sid);
        want["reason"] = json!(reason);
        want["status"] = json!(500);
        check.expect(call_sid, &reply.body, "WARN", "handler failed", want);
    }
}
