//! No secret, signature or body ever leaves the layer: not in a log event at
//! any level, not in any response of the status table, not in the `Debug` of
//! any configuration type, not in an error message.

use std::convert::Infallible;
use std::io::Write;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use kwickphone_webhooks::clock::Clock;
use kwickphone_webhooks::dedupe::{Claim, ClaimToken, DedupeStore, EventKey, MemoryStore};
use kwickphone_webhooks::{
    BoxFuture, ConfigError, Secret, SecretList, SecretSource, SecretSourceError, Secrets,
    StoreError, VerifyWebhookLayer, verify,
};
use tokio::sync::Notify;
use tower::{Layer, ServiceExt, service_fn};

const NOW: u64 = 1_781_942_245;
const SECRET_OLD: &str = "whsec_LEAKCHECK_old_9a8b7c6d5e4f";
const SECRET_NEW: &str = "whsec_LEAKCHECK_new_1f2e3d4c5b6a";
const FORGER_SECRET: &str = "whsec_LEAKCHECK_forger_0f0f0f";
/// A value only the body holds, in a field the layer never logs.
const BODY_MARKER: &str = "+1555LEAKCHECKCALLER";
/// A value only the causes of store and secret-source failures hold.
const CAUSE_MARKER: &str = "redis://:LEAKCHECK-PASSWORD@10.0.0.1";

#[derive(Debug, Clone, Copy)]
struct FixedClock;

impl Clock for FixedClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOW)
    }
}

/// Everything written by the subscriber, at every level.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("not poisoned")).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("not poisoned").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A request body: whole, or one that never finishes arriving.
enum TestBody {
    Whole(Option<Bytes>),
    Stalled,
}

impl From<Bytes> for TestBody {
    fn from(bytes: Bytes) -> Self {
        Self::Whole(Some(bytes))
    }
}

impl Body for TestBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Self::Whole(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Self::Stalled => Poll::Pending,
        }
    }
}

/// A store or secret source that is down; its cause names a password.
#[derive(Debug)]
struct Down;

impl DedupeStore for Down {
    fn claim<'a>(
        &'a self,
        _: &'a EventKey,
        _: Duration,
    ) -> BoxFuture<'a, Result<Claim, StoreError>> {
        Box::pin(async { Err(StoreError::unavailable(CAUSE_MARKER)) })
    }

    fn extend<'a>(
        &'a self,
        _: &'a EventKey,
        _: ClaimToken,
        _: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Err(StoreError::unavailable(CAUSE_MARKER)) })
    }

    fn complete<'a>(
        &'a self,
        _: &'a EventKey,
        _: ClaimToken,
        _: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Err(StoreError::unavailable(CAUSE_MARKER)) })
    }

    fn release<'a>(
        &'a self,
        _: &'a EventKey,
        _: ClaimToken,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Err(StoreError::unavailable(CAUSE_MARKER)) })
    }
}

impl SecretSource for Down {
    fn secrets_for<'a>(
        &'a self,
        _: &'a str,
    ) -> BoxFuture<'a, Result<Option<SecretList>, SecretSourceError>> {
        Box::pin(async { Err(SecretSourceError::new(CAUSE_MARKER)) })
    }
}

fn secret(text: &str) -> Secret {
    Secret::new(text).expect("test secrets are valid")
}

fn secrets() -> Secrets {
    let secrets = Secrets::new();
    secrets.add("num_12", secret(SECRET_OLD));
    secrets.add("num_12", secret(SECRET_NEW));
    secrets
}

fn body(number_id: &str, event_type: &str, call_sid: &str) -> String {
    serde_json::json!({
        "type": event_type,
        "number_id": number_id,
        "call": { "call_sid": call_sid, "caller": BODY_MARKER },
    })
    .to_string()
}

/// How the handler behind the layer answers, picked by the request path.
async fn handler(
    gate: Arc<Notify>,
    request: Request<TestBody>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let ok = || Response::new(Full::new(Bytes::from_static(b"handled")));
    match request.uri().path() {
        "/fail-status" => Ok(Response::builder()
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .body(Full::new(Bytes::from_static(b"broken")))
            .expect("valid response")),
        "/fail-error" => Err(std::io::Error::other(CAUSE_MARKER)),
        "/fail-panic" => panic!("handler gives up"),
        "/slow" => {
            gate.notified().await;
            Ok(ok())
        }
        _ => Ok(ok()),
    }
}

/// One delivery of the table: how it is built and what it must get.
struct Case {
    name: &'static str,
    path: &'static str,
    body: String,
    signer: Option<&'static str>,
    timestamp: u64,
    extra: Vec<(&'static str, &'static str)>,
    stalled: bool,
    want: u16,
}

impl Case {
    fn new(name: &'static str, want: u16) -> Self {
        Self {
            name,
            path: "/ok",
            body: body("num_12", "call.completed", name),
            signer: Some(SECRET_NEW),
            timestamp: NOW,
            extra: Vec::new(),
            stalled: false,
            want,
        }
    }

    /// Returns the request and the signature value it carries.
    fn request(&self) -> (Request<TestBody>, Option<String>) {
        let body = if self.stalled {
            TestBody::Stalled
        } else {
            TestBody::from(Bytes::from(self.body.clone()))
        };
        let mut request = Request::post(self.path).body(body).expect("valid request");
        let headers = request.headers_mut();
        let signature = self.signer.map(|text| {
            let signed = verify::sign(&secret(text), self.timestamp, self.body.as_bytes());
            headers.insert("x-kwickphone-timestamp", value(&signed.timestamp));
            headers.insert("x-kwickphone-signature", value(&signed.signature));
            signed.signature
        });
        for (name, text) in &self.extra {
            headers.append(*name, HeaderValue::from_static(text));
        }
        (request, signature)
    }
}

fn value(text: &str) -> HeaderValue {
    HeaderValue::try_from(text).expect("valid header value")
}

fn table() -> Vec<Case> {
    let mut cases = vec![Case::new("handled", 200)];

    let mut duplicate = Case::new("handled", 200);
    duplicate.name = "duplicate of a done event";
    cases.push(duplicate);

    let mut unknown = Case::new("unknown type", 200);
    unknown.body = body("num_12", "call.transferred", "CA-unknown");
    cases.push(unknown);

    let mut too_large = Case::new("declared too large", 413);
    too_large.extra.push(("content-length", "2000000"));
    cases.push(too_large);

    let mut chunked = Case::new("chunked too large", 413);
    chunked.body = format!(
        "{{\"pad\":\"{}\",\"caller\":\"{BODY_MARKER}\"}}",
        "x".repeat(2 * 1024 * 1024)
    );
    cases.push(chunked);

    let mut compressed = Case::new("compressed", 415);
    compressed.extra.push(("content-encoding", "gzip"));
    cases.push(compressed);

    let mut unsigned = Case::new("missing headers", 401);
    unsigned.signer = None;
    cases.push(unsigned);

    let mut malformed = Case::new("malformed signature", 401);
    malformed.extra.push(("x-kwickphone-signature", "v1=zz"));
    malformed.signer = None;
    malformed
        .extra
        .push(("x-kwickphone-timestamp", "1781942245"));
    cases.push(malformed);

    let mut stale = Case::new("stale", 401);
    stale.timestamp = NOW - 3_600;
    cases.push(stale);

    let mut unknown_number = Case::new("unknown number", 401);
    unknown_number.body = body("num_77", "call.completed", "CA-77");
    cases.push(unknown_number);

    let mut forged = Case::new("forged", 401);
    forged.signer = Some(FORGER_SECRET);
    cases.push(forged);

    let mut undecodable = Case::new("undecodable", 400);
    undecodable.body = format!(
        "{{\"type\":\"call.completed\",\"number_id\":\"num_12\",\"caller\":\"{BODY_MARKER}\"}}"
    );
    cases.push(undecodable);

    let mut timeout = Case::new("body timeout", 408);
    timeout.stalled = true;
    cases.push(timeout);

    for (name, path) in [
        ("handler status", "/fail-status"),
        ("handler error", "/fail-error"),
        ("handler panic", "/fail-panic"),
    ] {
        let mut failed = Case::new(name, 500);
        failed.path = path;
        cases.push(failed);
    }
    cases
}

/// Everything a delivery produced that a client or an operator could see.
async fn exchange<S>(service: S, request: Request<TestBody>) -> (u16, String)
where
    S: tower::Service<
            Request<TestBody>,
            Response = Response<kwickphone_webhooks::ResponseBody<Full<Bytes>>>,
        >,
    S::Error: std::fmt::Debug,
{
    let response = tokio::time::timeout(Duration::from_secs(60), service.oneshot(request))
        .await
        .expect("the layer answers")
        .expect("the layer answers every delivery itself");
    let status = response.status().as_u16();
    let headers = format!("{:?}", response.headers());
    let body = response
        .into_body()
        .collect()
        .await
        .expect("in memory")
        .to_bytes();
    (
        status,
        format!("{headers}\n{}", String::from_utf8_lossy(&body)),
    )
}

/// Fails when `seen` holds any secret, any signature or any body.
fn assert_clean(place: &str, seen: &str, signatures: &[String], bodies: &[String]) {
    for secret in [
        SECRET_OLD,
        SECRET_NEW,
        FORGER_SECRET,
        CAUSE_MARKER,
        BODY_MARKER,
    ] {
        assert!(!seen.contains(secret), "{place} shows {secret:?}:\n{seen}");
    }
    for signature in signatures {
        let digest = &signature["v1=".len()..];
        for form in [
            digest.to_owned(),
            digest.to_uppercase(),
            digest[..16].to_owned(),
        ] {
            assert!(!seen.contains(&form), "{place} shows a signature:\n{seen}");
        }
    }
    for body in bodies {
        assert!(
            !seen.contains(body.as_str()),
            "{place} shows a body:\n{seen}"
        );
    }
}

fn capture() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

fn layer(store: impl DedupeStore, source: impl SecretSource) -> VerifyWebhookLayer {
    VerifyWebhookLayer::builder(source)
        .clock(FixedClock)
        .store(store)
        .body_timeout(Duration::from_millis(200))
        .build()
        .expect("the configuration is valid")
}

#[tokio::test]
async fn no_log_or_response_of_the_status_table_shows_a_secret_signature_or_body() {
    let (captured, _guard) = capture();
    let gate = Arc::new(Notify::new());
    let inner = {
        let gate = Arc::clone(&gate);
        service_fn(move |request| handler(Arc::clone(&gate), request))
    };
    let store = MemoryStore::with_clock(
        std::num::NonZeroUsize::new(64).expect("not zero"),
        Arc::new(FixedClock),
    );
    let service = layer(store, secrets()).layer(inner.clone());

    let mut signatures = Vec::new();
    let mut bodies = Vec::new();
    let mut responses = String::new();
    for case in table() {
        let (request, signature) = case.request();
        signatures.extend(signature);
        bodies.push(case.body.clone());
        let (status, seen) = exchange(service.clone(), request).await;
        assert_eq!(status, case.want, "{}", case.name);
        responses.push_str(&seen);
    }

    // Same event twice at once: the second is answered 409 while the first waits.
    let mut slow = Case::new("in progress", 200);
    slow.path = "/slow";
    let (first, signature) = slow.request();
    let (second, _) = slow.request();
    signatures.extend(signature);
    let running = tokio::spawn(exchange(service.clone(), first));
    tokio::task::yield_now().await;
    let (status, seen) = exchange(service.clone(), second).await;
    assert_eq!(status, 409, "in progress");
    responses.push_str(&seen);
    gate.notify_one();
    let (status, seen) = running.await.expect("the first delivery ends");
    assert_eq!(status, 200, "the first delivery");
    responses.push_str(&seen);

    // The dependencies fail: a store and a secret source that are down.
    for (name, service) in [
        ("store down", layer(Down, secrets()).layer(inner.clone())),
        (
            "secrets down",
            layer(MemoryStore::default(), Down).layer(inner.clone()),
        ),
    ] {
        let (request, signature) = Case::new(name, 503).request();
        signatures.extend(signature);
        let (status, seen) = exchange(service, request).await;
        assert_eq!(status, 503, "{name}");
        responses.push_str(&seen);
    }

    let logs = captured.text();
    assert!(
        logs.contains("webhook rejected") && logs.contains("webhook accepted"),
        "{logs}"
    );
    assert_clean("a response", &responses, &signatures, &bodies);
    assert_clean("the logs", &logs, &signatures, &bodies);
}

#[test]
fn debug_of_every_configuration_type_hides_secrets() {
    let source = secrets();
    let builder = VerifyWebhookLayer::builder(secrets()).clock(FixedClock);
    let layer = VerifyWebhookLayer::new(secrets());
    let service = layer.layer(service_fn(|_: Request<TestBody>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
    }));
    let signed = verify::sign(&secret(SECRET_NEW), NOW, b"{}");
    let signatures = verify::Signatures::parse([signed.signature.as_bytes()]).expect("well formed");
    let list: SecretList = source.lookup("num_12").expect("two secrets");

    let shown = [
        format!("{:?}", secret(SECRET_NEW)),
        format!("{:#?}", secret(SECRET_NEW)),
        format!("{}", secret(SECRET_NEW)),
        format!("{source:?}"),
        format!("{list:?}"),
        format!("{builder:?}"),
        format!("{layer:#?}"),
        format!("{service:?}"),
        format!("{signed:?}"),
        format!("{signatures:?}"),
    ];
    for text in shown {
        assert_clean(
            "a Debug output",
            &text,
            std::slice::from_ref(&signed.signature),
            &[],
        );
    }
}

#[test]
fn refused_secrets_say_why_without_echoing_the_value() {
    let cases = [
        ("", ConfigError::EmptySecret, "empty"),
        (
            " whsec_LEAKCHECK_padded",
            ConfigError::SecretWhitespace,
            "white space",
        ),
        (
            "whsec_LEAKCHECK_padded\n",
            ConfigError::SecretWhitespace,
            "white space",
        ),
        (
            "\twhsec_LEAKCHECK_padded",
            ConfigError::SecretWhitespace,
            "white space",
        ),
    ];
    for (value, want, reason) in cases {
        let err = Secret::new(value).expect_err("the secret is refused");
        assert_eq!(err, want, "{value:?}");
        let message = format!("{err} {err:?}");
        assert!(message.contains(reason), "{message}");
        assert!(!message.contains("LEAKCHECK"), "{message}");
    }

    let err = Secrets::parse_list("num_12=whsec_LEAKCHECK_a, num_13= ").expect_err("empty secret");
    assert_eq!(err, ConfigError::EmptySecret);
    let err = Secrets::parse_list("whsec_LEAKCHECK_no_number").expect_err("no number");
    assert!(!format!("{err} {err:?}").contains("LEAKCHECK"));
}
