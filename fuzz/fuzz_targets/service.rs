//! The whole service, driven through `tower::ServiceExt::oneshot` with
//! arbitrary deliveries: signed or not, with any extra header values, any
//! body, whole or in chunks, and a handler that succeeds or fails on demand.
//!
//! Checked for every delivery:
//! - no panic escapes, and the service never returns an error;
//! - the status is one of the contract's table;
//! - a 5xx only when the handler itself failed;
//! - the handler runs, and a 2xx comes back, only when the delivery was truly
//!   signed with a secret of the body's number, inside the window;
//! - a clean, truly signed, valid delivery is handled exactly as the dedupe
//!   protocol says (handled once, duplicates answered 200 without the
//!   handler, failures retried);
//! - no response carries a secret or the signature.

#![no_main]

use std::collections::{HashSet, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use arbitrary::Arbitrary;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use kwickphone_webhooks::dedupe::{Claim, ClaimToken, DedupeStore, EventKey, MemoryStore};
use kwickphone_webhooks::testing::FakeClock;
use kwickphone_webhooks::{
    BoxFuture, Event, Secret, Secrets, StoreError, VerifyWebhook, VerifyWebhookLayer, verify,
};
use libfuzzer_sys::fuzz_target;
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt, service_fn};

const NOW: u64 = 1_781_942_245;
const TOLERANCE: u64 = 300;
const BODY_LIMIT: usize = 2048;
const NUMBERS: [&str; 3] = ["num_12", "num_13", "num_99"];
/// num_12 has two secrets (a rotation), num_13 one, num_99 none; the last
/// secret belongs to no number.
const SECRETS: [(&str, Option<&str>); 4] = [
    ("whsec_fuzz_twelve_old", Some("num_12")),
    ("whsec_fuzz_twelve_new", Some("num_12")),
    ("whsec_fuzz_thirteen", Some("num_13")),
    ("whsec_fuzz_nobody", None),
];
const PANIC_MESSAGE: &str = "fuzz handler panics on purpose";

#[derive(Arbitrary, Debug)]
struct Input {
    deliveries: Vec<Delivery>,
}

#[derive(Arbitrary, Debug)]
struct Delivery {
    body: BodyInput,
    /// Which secret signs, if any.
    signer: Option<u8>,
    skew_secs: i32,
    leading_zeros: u8,
    headers: Vec<(HeaderChoice, Vec<u8>)>,
    chunk_sizes: Vec<u8>,
    declare_length: bool,
    /// Anything but `POST` when set.
    method: Option<u8>,
    handler: Handler,
}

#[derive(Arbitrary, Debug)]
enum BodyInput {
    Raw(Vec<u8>),
    Event {
        number: u8,
        known_type: bool,
        call_sid: String,
        caller: Option<String>,
        padding: u16,
    },
}

#[derive(Arbitrary, Debug)]
enum HeaderChoice {
    Timestamp,
    Signature,
    ContentEncoding,
    ContentLength,
    ContentType,
    Other(u8),
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq)]
enum Handler {
    Succeeds,
    Answers500,
    Errors,
    Panics,
}

impl Handler {
    fn fails(self) -> bool {
        self != Self::Succeeds
    }
}

/// A request body that arrives in the given pieces, like a chunked upload.
struct Chunked(VecDeque<Bytes>);

impl From<Bytes> for Chunked {
    fn from(bytes: Bytes) -> Self {
        Self(VecDeque::from([bytes]))
    }
}

impl Body for Chunked {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

fn chunks(body: &[u8], sizes: &[u8]) -> Chunked {
    let mut pieces = VecDeque::new();
    let mut rest = Bytes::copy_from_slice(body);
    for &size in sizes {
        let at = usize::from(size).min(rest.len());
        pieces.push_back(rest.split_to(at));
    }
    pieces.push_back(rest);
    Chunked(pieces)
}

fn secrets() -> &'static (Secrets, Vec<Secret>) {
    static SECRETS_ONCE: OnceLock<(Secrets, Vec<Secret>)> = OnceLock::new();
    SECRETS_ONCE.get_or_init(|| {
        let map = Secrets::new();
        let all: Vec<Secret> = SECRETS
            .iter()
            .map(|(text, _)| Secret::new(*text).expect("fuzz secrets are valid"))
            .collect();
        for (secret, (_, number)) in all.iter().zip(SECRETS) {
            if let Some(number) = number {
                map.add(number, secret.clone());
            }
        }
        (map, all)
    })
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime starts")
    })
}

/// libFuzzer aborts on any panic; let the handler's deliberate panic unwind
/// so that the layer can catch it, and keep aborting on every other.
fn allow_handler_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() != Some(&PANIC_MESSAGE) {
                previous(info);
            }
        }));
    });
}

fn body_bytes(input: &BodyInput) -> Vec<u8> {
    match input {
        BodyInput::Raw(bytes) => bytes.clone(),
        BodyInput::Event {
            number,
            known_type,
            call_sid,
            caller,
            padding,
        } => {
            let event_type = if *known_type {
                "call.completed"
            } else {
                "call.transferred"
            };
            serde_json::json!({
                "type": event_type,
                "number_id": NUMBERS[usize::from(*number) % NUMBERS.len()],
                "call": { "call_sid": call_sid, "caller": caller },
                "padding": " ".repeat(usize::from(*padding) % (2 * BODY_LIMIT)),
            })
            .to_string()
            .into_bytes()
        }
    }
}

/// The timestamp header's text and whether it lies inside the window,
/// computed without the crate's parser.
fn timestamp_text(delivery: &Delivery) -> (String, bool) {
    let secs = NOW.saturating_add_signed(i64::from(delivery.skew_secs));
    let zeros = "0".repeat(usize::from(delivery.leading_zeros % 4));
    let text = format!("{zeros}{secs}");
    let inside = text.len() <= 12 && secs.abs_diff(NOW) <= TOLERANCE;
    (text, inside)
}

struct Expectation {
    truly_signed: bool,
    clean: bool,
    event: Option<Event>,
    body_len: usize,
}

fn header_name(choice: &HeaderChoice) -> HeaderName {
    let name = match choice {
        HeaderChoice::Timestamp => "X-KwickPhone-Timestamp".to_owned(),
        HeaderChoice::Signature => "x-kwickphone-SIGNATURE".to_owned(),
        HeaderChoice::ContentEncoding => "content-encoding".to_owned(),
        HeaderChoice::ContentLength => "content-length".to_owned(),
        HeaderChoice::ContentType => "content-type".to_owned(),
        HeaderChoice::Other(n) => format!("x-fuzz-{n}"),
    };
    HeaderName::try_from(name).expect("the names are valid")
}

fn build(delivery: &Delivery) -> (Request<Chunked>, Expectation, String) {
    let body = body_bytes(&delivery.body);
    let (timestamp, inside) = timestamp_text(delivery);
    let event = Event::from_slice(&body).ok();
    let (_, all) = secrets();

    let method = match delivery.method {
        None => http::Method::POST,
        Some(m) => [
            http::Method::GET,
            http::Method::PUT,
            http::Method::HEAD,
            http::Method::OPTIONS,
        ][usize::from(m) % 4]
            .clone(),
    };
    let mut request = Request::builder()
        .method(method)
        .uri("/hooks/kp")
        .body(chunks(&body, &delivery.chunk_sizes))
        .expect("valid request");
    let headers = request.headers_mut();
    headers.insert(
        "x-kwickphone-timestamp",
        HeaderValue::try_from(timestamp.as_str()).expect("digits"),
    );
    let mut signature = String::new();
    let mut truly_signed = false;
    if let Some(signer) = delivery.signer {
        let index = usize::from(signer) % SECRETS.len();
        let digest = verify::digest(&all[index], timestamp.as_bytes(), &body);
        signature = format!("v1={}", hex_lower(&digest));
        headers.insert(
            "x-kwickphone-signature",
            HeaderValue::try_from(signature.as_str()).expect("hex"),
        );
        let owner = SECRETS[index].1;
        truly_signed = inside && owner.is_some() && event.as_ref().map(Event::number_id) == owner;
    }
    if delivery.declare_length {
        headers.insert("content-length", HeaderValue::from(body.len()));
    }

    let mut clean = true;
    for (choice, value) in &delivery.headers {
        let Ok(value) = HeaderValue::from_bytes(value) else {
            continue;
        };
        clean &= matches!(choice, HeaderChoice::ContentType | HeaderChoice::Other(_));
        headers.append(header_name(choice), value);
    }
    let expectation = Expectation {
        truly_signed,
        clean,
        event,
        body_len: body.len(),
    };
    (request, expectation, signature)
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the handler saw: how many times it ran.
#[derive(Default)]
struct Calls {
    ran: AtomicUsize,
    handler: Mutex<Option<Handler>>,
}

async fn handle(
    calls: Arc<Calls>,
    _: Request<Chunked>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    calls.ran.fetch_add(1, Ordering::SeqCst);
    let handler = calls
        .handler
        .lock()
        .expect("not poisoned")
        .expect("set before each call");
    match handler {
        Handler::Succeeds => Ok(Response::new(Full::new(Bytes::from_static(b"handled")))),
        Handler::Answers500 => {
            let mut response = Response::new(Full::new(Bytes::from_static(b"broken")));
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            Ok(response)
        }
        Handler::Errors => Err(std::io::Error::other("handler error")),
        Handler::Panics => std::panic::panic_any(PANIC_MESSAGE),
    }
}

fn check(
    delivery: &Delivery,
    expect: &Expectation,
    status: StatusCode,
    ran: bool,
    done: &mut HashSet<String>,
) {
    let allowed = [200, 400, 401, 405, 409, 413, 415, 500];
    assert!(
        allowed.contains(&status.as_u16()),
        "status {status} is not in the table"
    );
    assert!(
        !ran || expect.truly_signed,
        "the handler ran for a delivery that was not truly signed"
    );
    assert!(
        !status.is_success() || expect.truly_signed,
        "{status} for a delivery that was not truly signed"
    );
    assert!(
        !status.is_server_error() || (ran && delivery.handler.fails()),
        "{status} without a failing handler"
    );

    if delivery.method.is_some() {
        assert_eq!((status.as_u16(), ran), (405, false), "only POST is taken");
        return;
    }
    if !(expect.truly_signed && expect.clean) {
        return;
    }
    if expect.body_len > BODY_LIMIT {
        assert_eq!(status, 413);
        return;
    }
    let event = expect
        .event
        .as_ref()
        .expect("a truly signed body is a valid event");
    let Some(call_sid) = event.call_sid() else {
        assert_eq!(
            (status.as_u16(), ran),
            (200, false),
            "unknown types are acknowledged"
        );
        return;
    };
    let key = format!("{}\u{0}{call_sid}", event.number_id());
    if done.contains(&key) {
        assert_eq!(
            (status.as_u16(), ran),
            (200, false),
            "a done event is not handled again"
        );
        return;
    }
    assert!(ran, "a first delivery runs the handler");
    let want = if delivery.handler.fails() { 500 } else { 200 };
    assert_eq!(status, want);
    if !delivery.handler.fails() {
        done.insert(key);
    }
}

fn assert_no_leak(response_body: &[u8], signature: &str) {
    let text = String::from_utf8_lossy(response_body);
    for (secret, _) in SECRETS {
        assert!(!text.contains(secret), "a response carries a secret");
    }
    if signature.len() > 3 {
        assert!(
            !text.contains(&signature[3..]),
            "a response carries the signature"
        );
    }
}

/// A store that starts empty for every input, so that a crash replays alone,
/// behind a layer built once (building one per input costs more than the
/// deliveries themselves).
#[derive(Debug, Default, Clone)]
struct FreshStore(Arc<Mutex<Option<MemoryStore>>>);

impl FreshStore {
    fn reset(&self, clock: &FakeClock) {
        let capacity = std::num::NonZeroUsize::new(64).expect("not zero");
        let store = MemoryStore::with_clock(capacity, Arc::new(clock.clone()));
        *self.0.lock().expect("not poisoned") = Some(store);
    }

    fn current(&self) -> MemoryStore {
        self.0
            .lock()
            .expect("not poisoned")
            .clone()
            .expect("reset before each input")
    }
}

impl DedupeStore for FreshStore {
    fn claim<'a>(
        &'a self,
        key: &'a EventKey,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Claim, StoreError>> {
        let store = self.current();
        Box::pin(async move { store.claim(key, lease).await })
    }

    fn extend<'a>(
        &'a self,
        key: &'a EventKey,
        token: ClaimToken,
        lease: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let store = self.current();
        Box::pin(async move { store.extend(key, token, lease).await })
    }

    fn complete<'a>(
        &'a self,
        key: &'a EventKey,
        token: ClaimToken,
        retention: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let store = self.current();
        Box::pin(async move { store.complete(key, token, retention).await })
    }

    fn release<'a>(
        &'a self,
        key: &'a EventKey,
        token: ClaimToken,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let store = self.current();
        Box::pin(async move { store.release(key, token).await })
    }
}

struct Harness {
    clock: FakeClock,
    store: FreshStore,
    calls: Arc<Calls>,
    service:
        VerifyWebhook<BoxCloneSyncService<Request<Chunked>, Response<Full<Bytes>>, std::io::Error>>,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let clock = FakeClock::at_unix(NOW);
        let store = FreshStore::default();
        let layer = VerifyWebhookLayer::builder(secrets().0.clone())
            .clock(clock.clone())
            .store(store.clone())
            .body_limit(BODY_LIMIT)
            .build()
            .expect("the configuration is valid");
        let calls = Arc::new(Calls::default());
        let inner = {
            let calls = Arc::clone(&calls);
            BoxCloneSyncService::new(service_fn(move |request| {
                handle(Arc::clone(&calls), request)
            }))
        };
        Harness {
            clock,
            store,
            calls,
            service: layer.layer(inner),
        }
    })
}

fuzz_target!(|input: Input| {
    allow_handler_panics();
    let harness = harness();
    harness.clock.set_unix(NOW);
    harness.store.reset(&harness.clock);
    let mut done = HashSet::new();

    for delivery in input.deliveries.iter().take(6) {
        let (request, expectation, signature) = build(delivery);
        *harness.calls.handler.lock().expect("not poisoned") = Some(delivery.handler);
        let before = harness.calls.ran.load(Ordering::SeqCst);

        let service = harness.service.clone();
        let response = runtime()
            .block_on(service.oneshot(request))
            .expect("the layer answers every delivery itself");
        let ran = harness.calls.ran.load(Ordering::SeqCst) > before;
        let status = response.status();
        let body = runtime()
            .block_on(response.into_body().collect())
            .expect("bodies are in memory")
            .to_bytes();

        check(delivery, &expectation, status, ran, &mut done);
        if !ran {
            assert_no_leak(&body, &signature);
        }
    }
});
