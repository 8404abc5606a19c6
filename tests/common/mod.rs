//! A real axum receiver on a loopback socket, a clock the tests move by hand
//! and a client that plays the vendor.
//!
//! The clock implements the public `Clock` trait here rather than using the
//! crate's `testing` feature, so that a plain `cargo test` runs every test.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use kwickphone_webhooks::clock::Clock;
use kwickphone_webhooks::dedupe::{Claim, ClaimToken, DedupeStore, EventKey};
use kwickphone_webhooks::{
    BoxFuture, Builder, Delivery, Secret, Secrets, StoreError, VerifyWebhookLayer, verify,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

/// The secret of `num_12`, from the vendor's vectors.
pub(crate) const SECRET_12: &str = "whsec_8f3c2a9b7d1e4f60a5b3c7d9e1f2a4b6";
/// The secret of `num_13`, from the vendor's vectors.
pub(crate) const SECRET_13: &str = "whsec_0d4e6a1c9b7f3e2d5a8c4b6e1f0a3d7c";
/// The time every server starts at: the first vector's timestamp.
pub(crate) const NOW: u64 = 1_781_942_245;
/// A marker put in bodies that must never be echoed in responses or logs.
pub(crate) const CANARY: &str = "+1555CANARY0042";

/// A wall clock that stands still until a test moves it.
#[derive(Debug, Clone)]
pub(crate) struct TestClock(Arc<AtomicU64>);

impl TestClock {
    pub(crate) fn at(secs: u64) -> Self {
        Self(Arc::new(AtomicU64::new(secs)))
    }

    pub(crate) fn secs(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    pub(crate) fn set(&self, secs: u64) {
        self.0.store(secs, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.secs())
    }
}

/// What the handler does on its next run for a call.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    /// Answers with this status.
    Status(u16),
    /// Panics.
    Panic,
    /// Signals `entered`, then waits for `release` before answering 200.
    Block {
        entered: Arc<Notify>,
        release: Arc<Notify>,
    },
}

/// The handler's shared state: how often it ran per call, and a script of
/// actions per call (200 when the script is empty).
#[derive(Debug, Clone, Default)]
pub(crate) struct App {
    runs: Arc<Mutex<HashMap<String, usize>>>,
    bodies: Arc<Mutex<HashMap<String, Bytes>>>,
    script: Arc<Mutex<HashMap<String, VecDeque<Action>>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl App {
    /// Returns how many times the handler ran for `call_sid`.
    pub(crate) fn runs(&self, call_sid: &str) -> usize {
        lock(&self.runs).get(call_sid).copied().unwrap_or(0)
    }

    /// Returns how many times the handler ran in all.
    pub(crate) fn total_runs(&self) -> usize {
        lock(&self.runs).values().sum()
    }

    /// Returns the raw body the handler last received for `call_sid`.
    pub(crate) fn raw_body(&self, call_sid: &str) -> Option<Bytes> {
        lock(&self.bodies).get(call_sid).cloned()
    }

    /// Queues what the handler does on its next runs for `call_sid`.
    pub(crate) fn script(&self, call_sid: &str, actions: Vec<Action>) {
        lock(&self.script).insert(call_sid.to_owned(), actions.into());
    }

    fn next_action(&self, call_sid: &str) -> Option<Action> {
        lock(&self.script).get_mut(call_sid)?.pop_front()
    }
}

async fn on_call(State(app): State<App>, delivery: Delivery) -> Response {
    let call_sid = delivery.event().call_sid().unwrap_or("-").to_owned();
    *lock(&app.runs).entry(call_sid.clone()).or_default() += 1;
    lock(&app.bodies).insert(call_sid.clone(), delivery.raw_body().clone());

    match app.next_action(&call_sid) {
        None => (StatusCode::OK, "handled").into_response(),
        Some(Action::Status(code)) => {
            let status = StatusCode::from_u16(code).expect("scripts use valid statuses");
            (status, "handler said no").into_response()
        }
        Some(Action::Panic) => panic!("scripted handler panic"),
        Some(Action::Block { entered, release }) => {
            entered.notify_one();
            release.notified().await;
            (StatusCode::OK, "handled late").into_response()
        }
    }
}

/// A running receiver and a client aimed at it.
#[derive(Debug)]
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    pub(crate) url: String,
    pub(crate) app: App,
    pub(crate) clock: TestClock,
    pub(crate) secrets: Secrets,
    pub(crate) client: reqwest::Client,
}

/// Starts a receiver for `num_12` and `num_13` with default settings.
pub(crate) async fn start() -> Server {
    start_with(|builder| builder).await
}

/// Starts a receiver whose layer `configure` adjusts.
pub(crate) async fn start_with(configure: impl FnOnce(Builder) -> Builder) -> Server {
    let secrets = Secrets::new();
    secrets.add("num_12", secret(SECRET_12));
    secrets.add("num_13", secret(SECRET_13));
    let clock = TestClock::at(NOW);
    let builder = VerifyWebhookLayer::builder(secrets.clone()).clock(clock.clone());
    let layer = configure(builder).build().expect("the test layer is valid");

    let app = App::default();
    let router = Router::new()
        .route("/hooks/kp", post(on_call))
        .route_layer(layer)
        .with_state(app.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("loopback has a free port");
    let addr = listener
        .local_addr()
        .expect("bound sockets have an address");
    tokio::spawn(async move { axum::serve(listener, router).await });

    Server {
        addr,
        url: format!("http://{addr}/hooks/kp"),
        app,
        clock,
        secrets,
        client: client(),
    }
}

/// Returns a client that never goes through a proxy and never waits forever.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("the client builds")
}

pub(crate) fn secret(value: &str) -> Secret {
    Secret::new(value).expect("test secrets are valid")
}

/// Returns a `call.completed` body whose caller is [`CANARY`].
pub(crate) fn body(number_id: &str, call_sid: &str) -> String {
    serde_json::json!({
        "type": "call.completed",
        "number_id": number_id,
        "occurred_at": "2026-06-20T07:57:25+00:00",
        "call": {
            "call_sid": call_sid,
            "caller": CANARY,
            "outcome": "order",
            "duration_sec": 132,
            "started_at": "2026-06-20T07:55:10Z",
            "has_recording": true,
            "has_transcript": true
        }
    })
    .to_string()
}

/// The signing headers of `body` at `timestamp`, as `(name, value)` lines.
pub(crate) fn signed(secret_value: &str, timestamp: u64, body: &[u8]) -> Vec<(String, String)> {
    let signed = verify::sign(&secret(secret_value), timestamp, body);
    vec![
        ("x-kwickphone-timestamp".into(), signed.timestamp),
        ("x-kwickphone-signature".into(), signed.signature),
    ]
}

/// What the receiver answered.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) code: Option<String>,
    pub(crate) retry_after: Option<String>,
    pub(crate) body: String,
}

impl Reply {
    /// Returns `(status, error code)`, with `-` for a success without one.
    pub(crate) fn outcome(&self) -> (u16, &str) {
        (self.status, self.code.as_deref().unwrap_or("-"))
    }

    /// Returns [`Reply::outcome`] with an owned code, to send across tasks.
    pub(crate) fn outcome_owned(&self) -> (u16, String) {
        let (status, code) = self.outcome();
        (status, code.to_owned())
    }

    async fn read(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().expect("retry-after is text").to_owned());
        let body = response.text().await.expect("the response body arrives");
        let code = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
        Self {
            status,
            code,
            retry_after,
            body,
        }
    }
}

impl Server {
    /// Posts `body` with exactly these header lines; names may repeat.
    pub(crate) async fn send(
        &self,
        headers: &[(String, String)],
        body: impl Into<reqwest::Body>,
    ) -> Reply {
        let mut request = self.client.post(&self.url);
        for (name, value) in headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let response = request.body(body).send().await.expect("the server answers");
        Reply::read(response).await
    }

    /// Delivers `body` signed with `secret_value` at the clock's time.
    pub(crate) async fn deliver(&self, secret_value: &str, body: &str) -> Reply {
        let headers = signed(secret_value, self.clock.secs(), body.as_bytes());
        self.send(&headers, body.to_owned()).await
    }

    /// Writes `head` (request line and headers, without the blank line) and
    /// `body` on a fresh connection and returns the status and body.
    pub(crate) async fn send_raw(&self, head: &str, body: &[u8]) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("the server accepts");
        let head = format!(
            "{head}\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.addr,
            body.len()
        );
        stream.write_all(head.as_bytes()).await.expect("write head");
        stream.write_all(body).await.expect("write body");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.expect("read answer");

        let answer = String::from_utf8(answer).expect("the answer is text");
        let status = answer[9..12].parse().expect("a status line");
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        (status, body.to_owned())
    }
}

/// A dedupe store that cannot be reached: every call fails.
#[derive(Debug)]
pub(crate) struct Unreachable;

fn refused<'a, T: Send + 'a>() -> BoxFuture<'a, Result<T, StoreError>> {
    Box::pin(async { Err(StoreError::unavailable("connection refused")) })
}

impl DedupeStore for Unreachable {
    fn claim<'a>(
        &'a self,
        _: &'a EventKey,
        _: Duration,
    ) -> BoxFuture<'a, Result<Claim, StoreError>> {
        refused()
    }

    fn extend<'a>(
        &'a self,
        _: &'a EventKey,
        _: ClaimToken,
        _: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        refused()
    }

    fn complete<'a>(
        &'a self,
        _: &'a EventKey,
        _: ClaimToken,
        _: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        refused()
    }

    fn release<'a>(
        &'a self,
        _: &'a EventKey,
        _: ClaimToken,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        refused()
    }
}

/// A body that arrives in chunks without a declared length; chunks are
/// sent from the last to the first.
pub(crate) struct Chunked(pub(crate) Vec<Bytes>);

impl Body for Chunked {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.pop().map(|chunk| Ok(Frame::data(chunk))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
