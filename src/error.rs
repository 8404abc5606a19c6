//! Every public error type, and how a rejection becomes a response.
//!
//! A [`Rejection`] is what the layer answers instead of calling the handler.
//! Its [`RejectionKind`] decides the status and the error code of the
//! vendor's envelope, `{"error":{"code":"...","message":"..."}}`. Messages are
//! fixed per kind, so no secret, signature or body can reach a response.

use std::error::Error;
use std::fmt;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use crate::verify::VerifyError;

type BoxError = Box<dyn Error + Send + Sync>;

/// What went wrong with a delivery; decides the status and the error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectionKind {
    /// The request is not a `POST`, the only method the vendor uses (405).
    MethodNotAllowed,
    /// The body is larger than the limit (413).
    PayloadTooLarge,
    /// The body is compressed (415).
    UnsupportedEncoding,
    /// The body did not arrive within the body timeout (408).
    BodyTimeout,
    /// The body stream failed while being read (400).
    BodyUnreadable,
    /// A signing header is missing or malformed (401).
    MalformedHeaders,
    /// The timestamp lies outside the tolerance window (401).
    TimestampOutOfTolerance,
    /// No secret is known for the event's number (401).
    UnknownNumber,
    /// No signature matches (401).
    InvalidSignature,
    /// The secret lookup failed (503).
    SecretsUnavailable,
    /// The body is verified but cannot be decoded as an event (400).
    InvalidPayload,
    /// The same event is being handled right now (409, with `Retry-After`).
    DeliveryInProgress,
    /// The handler failed, returned an error or panicked (500).
    HandlerFailed,
    /// The dedupe store cannot be reached (503).
    DedupeUnavailable,
    /// An extractor ran on a route without the layer (500).
    LayerMissing,
}

impl RejectionKind {
    /// Returns the HTTP status of this kind.
    pub fn status(self) -> StatusCode {
        match self {
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedEncoding => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::BodyUnreadable | Self::InvalidPayload => StatusCode::BAD_REQUEST,
            Self::MalformedHeaders
            | Self::TimestampOutOfTolerance
            | Self::UnknownNumber
            | Self::InvalidSignature => StatusCode::UNAUTHORIZED,
            Self::DeliveryInProgress => StatusCode::CONFLICT,
            Self::HandlerFailed | Self::LayerMissing => StatusCode::INTERNAL_SERVER_ERROR,
            Self::SecretsUnavailable | Self::DedupeUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Returns the error code of the envelope.
    pub fn code(self) -> &'static str {
        match self {
            Self::MethodNotAllowed => "method_not_allowed",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedEncoding => "unsupported_encoding",
            Self::BodyTimeout => "request_timeout",
            Self::BodyUnreadable => "invalid_request",
            Self::MalformedHeaders | Self::InvalidSignature => "invalid_signature",
            Self::TimestampOutOfTolerance => "timestamp_out_of_tolerance",
            Self::UnknownNumber => "unknown_number",
            Self::SecretsUnavailable => "secrets_unavailable",
            Self::InvalidPayload => "invalid_payload",
            Self::DeliveryInProgress => "delivery_in_progress",
            Self::HandlerFailed => "handler_failed",
            Self::DedupeUnavailable => "dedupe_unavailable",
            Self::LayerMissing => "layer_missing",
        }
    }

    /// Returns the fixed message of the envelope.
    pub fn message(self) -> &'static str {
        match self {
            Self::MethodNotAllowed => "webhook deliveries must use POST",
            Self::PayloadTooLarge => "request body exceeds the size limit",
            Self::UnsupportedEncoding => "request body must not be compressed",
            Self::BodyTimeout => "request body did not arrive in time",
            Self::BodyUnreadable => "request body could not be read",
            Self::MalformedHeaders => "signature or timestamp header is missing or malformed",
            Self::TimestampOutOfTolerance => "timestamp is outside the tolerance window",
            Self::UnknownNumber => "no webhook secret is configured for this number",
            Self::InvalidSignature => "signature does not match",
            Self::SecretsUnavailable => "webhook secrets cannot be looked up right now",
            Self::InvalidPayload => "request body is not a valid event",
            Self::DeliveryInProgress => "this event is being handled by another delivery",
            Self::HandlerFailed => "the event handler failed",
            Self::DedupeUnavailable => "the dedupe store is unavailable",
            Self::LayerMissing => "the webhook layer is not installed on this route",
        }
    }
}

impl From<VerifyError> for RejectionKind {
    fn from(err: VerifyError) -> Self {
        match err {
            VerifyError::OutsideWindow { .. } => Self::TimestampOutOfTolerance,
            VerifyError::Mismatch => Self::InvalidSignature,
            _ => Self::MalformedHeaders,
        }
    }
}

/// A delivery the layer answered itself instead of calling the handler.
///
/// # Example
///
/// ```
/// use kwickphone_webhooks::{Rejection, RejectionKind};
///
/// let rejection = Rejection::new(RejectionKind::InvalidSignature);
/// let response = rejection.to_response();
/// assert_eq!(response.status(), 401);
/// ```
#[derive(Debug)]
pub struct Rejection {
    kind: RejectionKind,
    retry_after_secs: Option<u64>,
    source: Option<BoxError>,
}

impl Rejection {
    /// Creates a rejection of the given kind.
    pub fn new(kind: RejectionKind) -> Self {
        Self {
            kind,
            retry_after_secs: None,
            source: None,
        }
    }

    /// Attaches the underlying cause, kept for [`Error::source`] and never
    /// shown in the response.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Sets the `Retry-After` header, in seconds.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// Returns what went wrong.
    pub fn kind(&self) -> RejectionKind {
        self.kind
    }

    /// Returns the status of the response.
    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }

    /// Builds the response: the status, the JSON envelope and, for a delivery
    /// in progress, `Retry-After`.
    pub fn to_response(&self) -> Response<Full<Bytes>> {
        let mut response = json_response(self.status(), self.kind.envelope());
        if self.kind == RejectionKind::MethodNotAllowed {
            let allow = HeaderValue::from_static("POST");
            response.headers_mut().insert(header::ALLOW, allow);
        }
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.message())
    }
}

impl Error for Rejection {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}

#[cfg(feature = "axum")]
impl axum::response::IntoResponse for Rejection {
    fn into_response(self) -> axum::response::Response {
        self.to_response().map(axum::body::Body::new)
    }
}

impl RejectionKind {
    /// Returns the JSON envelope of this kind. Codes and messages are fixed
    /// ASCII without quotes or backslashes, so they are written as they are,
    /// without the map and the escaping pass of a serializer.
    fn envelope(self) -> Bytes {
        let parts = [
            r#"{"error":{"code":""#,
            self.code(),
            r#"","message":""#,
            self.message(),
            r#""}}"#,
        ];
        Bytes::from(parts.concat())
    }
}

/// The answer to a verified event of a type the handler does not take.
pub(crate) const ACK_UNHANDLED: &[u8] = br#"{"acknowledged":true,"handled":false}"#;

/// The answer to a duplicate of an event that was handled already.
pub(crate) const ACK_DUPLICATE: &[u8] = br#"{"acknowledged":true,"duplicate":true}"#;

pub(crate) fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A mistake in the layer's configuration, found when it is built.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A webhook secret is empty.
    EmptySecret,
    /// A webhook secret starts or ends with white space.
    SecretWhitespace,
    /// A `number_id=secret` list has an entry without `=` or without a number.
    MalformedSecretList,
    /// A duration that must be positive is zero.
    ZeroDuration(&'static str),
    /// The retention is not longer than twice the tolerance: a replay still
    /// inside the timestamp window could outlive the event's done-marker and
    /// run the handler again.
    RetentionTooShort,
    /// A dedupe store cannot be set up as configured; the text says why and
    /// never repeats the address, which may hold a password.
    InvalidStore(&'static str),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EmptySecret => f.write_str("webhook secret is empty"),
            Self::SecretWhitespace => f.write_str("webhook secret starts or ends with white space"),
            Self::MalformedSecretList => {
                f.write_str("secret list entries must look like number_id=secret")
            }
            Self::ZeroDuration(name) => write!(f, "{name} must be longer than zero"),
            Self::RetentionTooShort => {
                f.write_str("retention must be longer than twice the tolerance")
            }
            Self::InvalidStore(reason) => write!(f, "invalid dedupe store: {reason}"),
        }
    }
}

impl Error for ConfigError {}

/// A failure of a [`SecretSource`](crate::SecretSource) lookup.
#[derive(Debug)]
pub struct SecretSourceError {
    source: BoxError,
}

impl SecretSourceError {
    /// Wraps the cause of a failed lookup.
    pub fn new(source: impl Into<BoxError>) -> Self {
        Self {
            source: source.into(),
        }
    }
}

impl fmt::Display for SecretSourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("secret lookup failed")
    }
}

impl Error for SecretSourceError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.source)
    }
}

/// What kind of failure a dedupe store reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The store cannot be reached or failed to answer.
    Unavailable,
    /// The claim is no longer held by this delivery: its lease lapsed and
    /// another delivery may have taken it.
    ClaimLost,
}

/// A failure of a [`DedupeStore`](crate::dedupe::DedupeStore).
#[derive(Debug)]
pub struct StoreError {
    kind: StoreErrorKind,
    source: Option<BoxError>,
}

impl StoreError {
    /// Creates an error for a store that cannot be reached, keeping the cause.
    pub fn unavailable(source: impl Into<BoxError>) -> Self {
        Self {
            kind: StoreErrorKind::Unavailable,
            source: Some(source.into()),
        }
    }

    /// Creates an error for a claim this delivery no longer holds.
    pub fn claim_lost() -> Self {
        Self {
            kind: StoreErrorKind::ClaimLost,
            source: None,
        }
    }

    /// Returns the kind of failure.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            StoreErrorKind::Unavailable => f.write_str("dedupe store is unavailable"),
            StoreErrorKind::ClaimLost => f.write_str("claim is no longer held"),
        }
    }
}

impl Error for StoreError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    const ALL: [RejectionKind; 15] = [
        RejectionKind::MethodNotAllowed,
        RejectionKind::PayloadTooLarge,
        RejectionKind::UnsupportedEncoding,
        RejectionKind::BodyTimeout,
        RejectionKind::BodyUnreadable,
        RejectionKind::MalformedHeaders,
        RejectionKind::TimestampOutOfTolerance,
        RejectionKind::UnknownNumber,
        RejectionKind::InvalidSignature,
        RejectionKind::SecretsUnavailable,
        RejectionKind::InvalidPayload,
        RejectionKind::DeliveryInProgress,
        RejectionKind::HandlerFailed,
        RejectionKind::DedupeUnavailable,
        RejectionKind::LayerMissing,
    ];

    #[test]
    fn status_table_of_the_spec() {
        let table = [
            (RejectionKind::PayloadTooLarge, 413, "payload_too_large"),
            (
                RejectionKind::UnsupportedEncoding,
                415,
                "unsupported_encoding",
            ),
            (RejectionKind::MalformedHeaders, 401, "invalid_signature"),
            (
                RejectionKind::TimestampOutOfTolerance,
                401,
                "timestamp_out_of_tolerance",
            ),
            (RejectionKind::UnknownNumber, 401, "unknown_number"),
            (RejectionKind::InvalidSignature, 401, "invalid_signature"),
            (RejectionKind::InvalidPayload, 400, "invalid_payload"),
            (
                RejectionKind::DeliveryInProgress,
                409,
                "delivery_in_progress",
            ),
            (RejectionKind::HandlerFailed, 500, "handler_failed"),
            (RejectionKind::DedupeUnavailable, 503, "dedupe_unavailable"),
        ];
        for (kind, status, code) in table {
            assert_eq!(kind.status().as_u16(), status, "{kind:?}");
            assert_eq!(kind.code(), code, "{kind:?}");
        }
    }

    #[tokio::test]
    async fn every_kind_answers_with_the_envelope() {
        for kind in ALL {
            let response = Rejection::new(kind).to_response();
            assert_eq!(response.status(), kind.status());
            let body = response
                .into_body()
                .collect()
                .await
                .expect("full body")
                .to_bytes();
            let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
            assert_eq!(json["error"]["code"], kind.code(), "{kind:?}");
            assert_eq!(json["error"]["message"], kind.message(), "{kind:?}");
        }
    }

    #[test]
    fn fixed_bodies_match_what_a_serializer_writes() {
        for kind in ALL {
            let envelope = serde_json::json!({
                "error": { "code": kind.code(), "message": kind.message() }
            });
            assert_eq!(kind.envelope(), envelope.to_string(), "{kind:?}");
        }
        let unhandled = serde_json::json!({ "acknowledged": true, "handled": false });
        assert_eq!(ACK_UNHANDLED, unhandled.to_string().as_bytes());
        let duplicate = serde_json::json!({ "acknowledged": true, "duplicate": true });
        assert_eq!(ACK_DUPLICATE, duplicate.to_string().as_bytes());
    }

    #[test]
    fn retry_after_is_sent_when_set() {
        let response = Rejection::new(RejectionKind::DeliveryInProgress)
            .with_retry_after(7)
            .to_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
        let plain = Rejection::new(RejectionKind::InvalidPayload).to_response();
        assert!(plain.headers().get(header::RETRY_AFTER).is_none());
    }

    #[test]
    fn store_errors_keep_their_cause() {
        let cause = std::io::Error::other("connection refused");
        let rejection = Rejection::new(RejectionKind::DedupeUnavailable)
            .with_source(StoreError::unavailable(cause));
        let store = rejection.source().expect("store error is kept");
        assert!(store.source().is_some());
    }
}
