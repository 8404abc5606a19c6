//! The service: every check of a delivery, in the order of the contract.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderName, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::Full;
use pin_project_lite::pin_project;
use tower::Service;

use crate::body::{self, ResponseBody};
use crate::clock;
use crate::dedupe::{BoxFuture, Claim, ClaimGuard, EventKey};
use crate::delivery::Delivery;
use crate::error::{ACK_DUPLICATE, ACK_UNHANDLED, Rejection, RejectionKind, json_response};
use crate::event;
use crate::layer::Config;
use crate::secrets::SecretList;
use crate::trace::{self, Fields};
use crate::verify::{self, SIGNATURE_HEADER, Signatures, TIMESTAMP_HEADER, Timestamp};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Verifies, deduplicates and parses KwickPhone deliveries before calling the
/// inner service. Built by [`VerifyWebhookLayer`](crate::VerifyWebhookLayer).
///
/// The inner service receives the request with the same body bytes and a
/// [`Delivery`] in its extensions; its request body type must be buildable
/// from [`Bytes`], as `axum::body::Body` and `http_body_util::Full` are.
#[derive(Clone)]
pub struct VerifyWebhook<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> VerifyWebhook<S> {
    pub(crate) fn new(inner: S, config: Arc<Config>) -> Self {
        Self { inner, config }
    }

    /// Returns a reference to the inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Returns a mutable reference to the inner service.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Returns the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug> fmt::Debug for VerifyWebhook<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyWebhook")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}

impl<S, B, ResBody> Service<Request<B>> for VerifyWebhook<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    B: Body + From<Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    B::Data: Send,
    ResBody: Body<Data = Bytes> + Send + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The clone is the one made ready by `poll_ready`; keep it for this call.
        let ready = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, ready);
        let config = Arc::clone(&self.config);
        ResponseFuture {
            inner: Box::pin(process(config, inner, request)),
        }
    }
}

pin_project! {
    /// The response future of [`VerifyWebhook`].
    pub struct ResponseFuture<B, E> {
        #[pin]
        inner: BoxFuture<'static, Result<Response<ResponseBody<B>>, E>>,
    }
}

impl<B, E> Future for ResponseFuture<B, E> {
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}

impl<B, E> fmt::Debug for ResponseFuture<B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

async fn process<S, B, ResBody>(
    config: Arc<Config>,
    inner: S,
    request: Request<B>,
) -> Result<Response<ResponseBody<ResBody>>, S::Error>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    B: Body + From<Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    ResBody: Send + 'static,
{
    let (parts, body) = request.into_parts();
    let (bytes, delivery) = match admit(&config, &parts, body).await {
        Ok(admitted) => admitted,
        Err(rejection) => return Ok(reject(&rejection)),
    };

    let Some(key) = delivery.key() else {
        return unknown_type(&config, inner, parts, bytes, delivery).await;
    };
    // The lease runs from when the claim was asked for, not from its answer.
    let asked = tokio::time::Instant::now();
    let token = match config.store.claim(&key, config.lease).await {
        Ok(Claim::First(token)) => token,
        Ok(claim) => return Ok(duplicate(&config, &key, claim)),
        Err(err) => {
            trace::store_failed(&key, "claim");
            let rejection = Rejection::new(RejectionKind::DedupeUnavailable).with_source(err);
            return Ok(reject(&rejection));
        }
    };

    let store = Arc::clone(&config.store);
    let expires = asked + config.lease;
    let guard = ClaimGuard::new(store, key.clone(), token, config.lease, expires);
    let request = rebuild(parts, bytes, delivery);
    Ok(run_detached(config, guard, key, inner, request).await)
}

/// Runs the handler and settles the claim, to the end even if the request's
/// future is dropped.
///
/// The vendor may give up waiting and close the connection, which drops this
/// request's future. A handler tied to that future would stop half-way and
/// its effects might be repeated by the retry; instead it is handed to a task
/// of its own and finishes, and the retry finds the event in flight (409) or
/// done (200). Most handlers finish while the connection waits, so the work
/// is polled in place and a task is spawned only for the rest of an
/// abandoned run: scheduling a task per delivery would cost more than the
/// verification.
async fn run_detached<S, B, ResBody>(
    config: Arc<Config>,
    mut guard: ClaimGuard,
    key: EventKey,
    inner: S,
    request: Request<B>,
) -> Response<ResponseBody<ResBody>>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    B: Send + 'static,
    ResBody: Send + 'static,
{
    let task = async move {
        let outcome = guard.hold(call_guarded(inner, request)).await;
        settle(&config, guard, &key, outcome).await
    };
    #[cfg(feature = "tracing")]
    let task = tracing::Instrument::in_current_span(task);

    match Detached::new(task).await {
        Ok(response) => response,
        // `settle` does not panic; answer as for a failed handler all the
        // same, so the claim's lease decides.
        Err(_) => own(Rejection::new(RejectionKind::HandlerFailed).to_response()),
    }
}

/// A future polled in place that, when dropped before it completes, is
/// spawned on the current runtime to finish.
struct Detached<F: Future + Send + 'static>
where
    F::Output: Send,
{
    task: Option<Pin<Box<F>>>,
}

impl<F: Future + Send + 'static> Detached<F>
where
    F::Output: Send,
{
    fn new(task: F) -> Self {
        Self {
            task: Some(Box::pin(task)),
        }
    }
}

impl<F: Future + Send + 'static> Future for Detached<F>
where
    F::Output: Send,
{
    type Output = Result<F::Output, Panic>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(task) = self.task.as_mut() else {
            return Poll::Pending;
        };
        let polled = catch_unwind(AssertUnwindSafe(|| task.as_mut().poll(cx)));
        let output = match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(output)) => Ok(output),
            Err(panic) => Err(panic),
        };
        self.task = None;
        Poll::Ready(output)
    }
}

impl<F: Future + Send + 'static> Drop for Detached<F>
where
    F::Output: Send,
{
    fn drop(&mut self) {
        let Some(task) = self.task.take() else {
            return;
        };
        // Outside a runtime nothing can run it; the claim guard inside then
        // leaves the claim to lapse with its lease.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            drop(runtime.spawn(task));
        }
    }
}

/// Runs steps 1 to 6 of the contract: size and encoding, headers, window,
/// secret lookup, signature, payload. Reads the body once and parses it once.
/// A method other than `POST` is refused first: the vendor never sends one,
/// and no other method should get as far as claiming an event.
async fn admit<B>(config: &Config, parts: &Parts, body: B) -> Result<(Bytes, Delivery), Rejection>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let mut fields = Fields::default();
    let refuse = |kind: RejectionKind, fields: &Fields<'_>| {
        trace::rejected(kind, fields);
        Rejection::new(kind)
    };

    if parts.method != Method::POST {
        return Err(refuse(RejectionKind::MethodNotAllowed, &fields));
    }
    let headers = &parts.headers;
    body::check_declared_length(headers, config.body_limit).map_err(|k| refuse(k, &fields))?;
    body::check_encoding(headers).map_err(|k| refuse(k, &fields))?;
    let bytes = body::read(body, config.body_limit, config.body_timeout)
        .await
        .map_err(|k| refuse(k, &fields))?;
    fields.body_len = Some(bytes.len());

    let (timestamp, signatures) = signing_headers(headers).map_err(|k| refuse(k, &fields))?;
    let now = clock::since_epoch(config.clock.now()).as_secs();
    fields.skew_secs = Some(timestamp.skew_secs(now));
    timestamp
        .check_window(now, config.tolerance)
        .map_err(|e| refuse(e.into(), &fields))?;

    let (number_id, parsed) = event::parse(&bytes);
    fields.number_id = number_id.as_deref();
    let secrets = lookup(config, number_id.as_deref())
        .await
        .map_err(|k| refuse(k, &fields))?;
    verify::verify(&secrets, &timestamp, &signatures, &bytes)
        .map_err(|e| refuse(e.into(), &fields))?;

    let event = parsed.map_err(|_| refuse(RejectionKind::InvalidPayload, &fields))?;
    let delivery = Delivery::new(event, bytes.clone(), timestamp);
    Ok((bytes, delivery))
}

/// The signing headers' names, built once: a name given as text is parsed
/// and checked on every lookup.
static TIMESTAMP: HeaderName = HeaderName::from_static(TIMESTAMP_HEADER);
static SIGNATURE: HeaderName = HeaderName::from_static(SIGNATURE_HEADER);

fn signing_headers(headers: &HeaderMap) -> Result<(Timestamp, Signatures), RejectionKind> {
    let lines = |name| headers.get_all(name).into_iter().map(|v| v.as_bytes());
    let timestamp = Timestamp::parse_lines(lines(&TIMESTAMP))?;
    let signatures = Signatures::parse(lines(&SIGNATURE))?;
    Ok((timestamp, signatures))
}

/// Finds the secrets of the body's number. A body whose number cannot be
/// read is checked against every secret, when the source can list them.
async fn lookup(config: &Config, number_id: Option<&str>) -> Result<SecretList, RejectionKind> {
    let Some(number_id) = number_id else {
        return config
            .secrets
            .all_secrets()
            .ok_or(RejectionKind::InvalidSignature);
    };
    match config.secrets.secrets_for(number_id).await {
        Ok(Some(secrets)) if !secrets.is_empty() => Ok(secrets),
        Ok(_) => Err(RejectionKind::UnknownNumber),
        Err(_) => Err(RejectionKind::SecretsUnavailable),
    }
}

/// Acknowledges an event of an unknown type, or forwards it without dedupe
/// when so configured.
async fn unknown_type<S, B, ResBody>(
    config: &Config,
    inner: S,
    parts: Parts,
    bytes: Bytes,
    delivery: Delivery,
) -> Result<Response<ResponseBody<ResBody>>, S::Error>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    B: From<Bytes>,
{
    let event = delivery.event();
    trace::unknown_type(event.number_id(), event.event_type(), 200);
    if !config.forward_unknown {
        return Ok(own(json_response(StatusCode::OK, ACK_UNHANDLED)));
    }
    let mut inner = inner;
    let response = inner.call(rebuild(parts, bytes, delivery)).await?;
    Ok(response.map(ResponseBody::inner))
}

fn duplicate<B>(config: &Config, key: &EventKey, claim: Claim) -> Response<ResponseBody<B>> {
    if claim == Claim::Done {
        trace::duplicate(key, 200);
        return own(json_response(StatusCode::OK, ACK_DUPLICATE));
    }
    trace::duplicate(key, 409);
    let retry_after = config.retry_after.as_secs().max(1);
    own(Rejection::new(RejectionKind::DeliveryInProgress)
        .with_retry_after(retry_after)
        .to_response())
}

fn rebuild<B: From<Bytes>>(parts: Parts, bytes: Bytes, delivery: Delivery) -> Request<B> {
    let mut request = Request::from_parts(parts, B::from(bytes));
    request.extensions_mut().insert(delivery);
    request
}

type Panic = Box<dyn Any + Send>;

/// Calls the inner service, turning a panic in `call` or in its future into
/// an error value.
async fn call_guarded<S, Req>(
    mut inner: S,
    request: Req,
) -> Result<Result<S::Response, S::Error>, Panic>
where
    S: Service<Req>,
{
    let future = catch_unwind(AssertUnwindSafe(|| inner.call(request)))?;
    CatchPanic { future }.await
}

pin_project! {
    struct CatchPanic<F> {
        #[pin]
        future: F,
    }
}

impl<F: Future> Future for CatchPanic<F> {
    type Output = Result<F::Output, Panic>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let future = self.project().future;
        match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

type HandlerOutcome<R, E> = Result<Result<Result<R, E>, Panic>, crate::StoreError>;

/// Ends the claim by the handler's outcome: done on 2xx, released otherwise.
async fn settle<ResBody, E>(
    config: &Config,
    guard: ClaimGuard,
    key: &EventKey,
    outcome: HandlerOutcome<Response<ResBody>, E>,
) -> Response<ResponseBody<ResBody>> {
    let failure = match outcome {
        Ok(Ok(Ok(response))) if response.status().is_success() => {
            if guard.complete(config.retention).await.is_err() {
                trace::store_failed(key, "complete");
            }
            trace::accepted(key, response.status().as_u16());
            return response.map(ResponseBody::inner);
        }
        Ok(Ok(Ok(response))) => {
            trace::handler_failed(key, "status", response.status().as_u16());
            release(guard, key).await;
            return response.map(ResponseBody::inner);
        }
        Ok(Ok(Err(_))) => ("error", RejectionKind::HandlerFailed),
        Ok(Err(_)) => ("panic", RejectionKind::HandlerFailed),
        Err(_) => ("lease lost", RejectionKind::DedupeUnavailable),
    };
    let (reason, kind) = failure;
    trace::handler_failed(key, reason, kind.status().as_u16());
    release(guard, key).await;
    own(Rejection::new(kind).to_response())
}

async fn release(guard: ClaimGuard, key: &EventKey) {
    if guard.release().await.is_err() {
        trace::store_failed(key, "release");
    }
}

fn reject<B>(rejection: &Rejection) -> Response<ResponseBody<B>> {
    own(rejection.to_response())
}

fn own<B>(response: Response<Full<Bytes>>) -> Response<ResponseBody<B>> {
    response.map(ResponseBody::own)
}
