//! Receive KwickPhone's signed call webhooks in axum or any tower stack.
//!
//! [`VerifyWebhookLayer`] sits in front of a handler and answers every
//! delivery that should not reach it. In order, it:
//!
//! 1. refuses a body over the limit (413), before buffering it all, and a
//!    compressed body (415);
//! 2. reads `X-KwickPhone-Timestamp` and `X-KwickPhone-Signature`; missing or
//!    malformed headers are 401;
//! 3. refuses a timestamp outside the tolerance window, past or future (401);
//! 4. finds the secrets of the event's `number_id` (401 for an unknown
//!    number);
//! 5. verifies HMAC-SHA256 over the raw bytes, in constant time (401);
//! 6. parses the same bytes into an [`Event`] (400 when undecodable); an
//!    unknown event type is acknowledged with 200;
//! 7. claims the event in a [`DedupeStore`](dedupe::DedupeStore): a retry of
//!    a handled event is answered 200 without running the handler, one that
//!    arrives while the first is still running gets 409 with `Retry-After`,
//!    and a handler failure releases the claim so that the retry runs.
//!
//! Errors use the vendor's envelope, `{"error":{"code":"...","message":"..."}}`.
//!
//! # Example
//!
//! ```
//! use axum::{Router, routing::post};
//! use kwickphone_webhooks::{CallCompleted, Secrets, VerifyWebhookLayer};
//!
//! async fn on_call(event: CallCompleted) -> &'static str {
//!     println!("{} called {}", event.call.caller.as_deref().unwrap_or("?"), event.number_id);
//!     "ok"
//! }
//!
//! let secrets = Secrets::parse_list("num_12=whsec_8f3c2a9b7d1e4f60a5b3c7d9e1f2a4b6")?;
//! let app: Router = Router::new()
//!     .route("/hooks/kp", post(on_call))
//!     .route_layer(VerifyWebhookLayer::new(secrets));
//! # Ok::<(), kwickphone_webhooks::ConfigError>(())
//! ```
//!
//! # Features
//!
//! | feature | default | what it adds |
//! | --- | --- | --- |
//! | `axum` | yes | extractors for [`CallCompleted`], [`Event`] and [`Delivery`]; `IntoResponse` for [`Rejection`] |
//! | `tracing` | yes | log events with `number_id`, `call_sid`, `reason` and `status` fields |
//! | `redis` | no | `RedisStore`, a dedupe store shared by several replicas |
//! | `testing` | no | a fake clock and signed request builders |
//!
//! # Security
//!
//! - The secret is the HMAC key exactly as given, `whsec_` prefix included.
//! - Signatures are compared in constant time; the keyed HMAC state is
//!   prepared once per secret.
//! - The timestamp window stops replays of captured requests outside it;
//!   deduplication stops replays inside it.
//! - Deduplication happens only after verification, so forged requests cannot
//!   fill or poison the store, and its key is the event's identity, so one
//!   number's events never block another's.
//! - Responses and logs never contain a secret, a signature or the body.
//! - A forged request costs at most one HMAC over the body per secret of the
//!   number it names, or of every number (at most
//!   [`MAX_FALLBACK_SECRETS`](secrets::MAX_FALLBACK_SECRETS)) when it names
//!   none: about 3 ms for a 1 MiB body in that worst case. `SECURITY.md` in
//!   the repository has the threat model and the measurements.

#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(rustdoc::broken_intra_doc_links)]

mod body;
pub mod clock;
pub mod dedupe;
mod delivery;
mod error;
pub mod event;
#[cfg(feature = "axum")]
pub mod extract;
mod layer;
pub mod secrets;
mod service;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod trace;
pub mod verify;

pub use body::ResponseBody;
pub use dedupe::BoxFuture;
pub use delivery::Delivery;
pub use error::{
    ConfigError, Rejection, RejectionKind, SecretSourceError, StoreError, StoreErrorKind,
};
pub use event::{Call, CallCompleted, Event, Outcome, PayloadError, UnknownEvent};
pub use layer::{
    Builder, DEFAULT_BODY_LIMIT, DEFAULT_BODY_TIMEOUT, DEFAULT_LEASE, DEFAULT_RETENTION,
    DEFAULT_RETRY_AFTER, DEFAULT_TOLERANCE, VerifyWebhookLayer,
};
pub use secrets::{Secret, SecretList, SecretSource, Secrets};
pub use service::{ResponseFuture, VerifyWebhook};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
