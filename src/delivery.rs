//! The verified delivery handed to the inner service.

use std::sync::Arc;

use bytes::Bytes;

use crate::dedupe::EventKey;
use crate::event::Event;
use crate::verify::Timestamp;

/// A delivery that passed every check, stored in the request's extensions
/// for the inner service.
///
/// Axum handlers take it, or the event alone, as an extractor; other tower
/// services read it with `request.extensions().get::<Delivery>()`. Cloning is
/// cheap.
///
/// # Example
///
/// ```
/// use http::Request;
/// use kwickphone_webhooks::Delivery;
///
/// fn call_sid<B>(request: &Request<B>) -> Option<&str> {
///     request.extensions().get::<Delivery>()?.event().call_sid()
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Delivery {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    event: Event,
    raw_body: Bytes,
    timestamp: Timestamp,
}

impl Delivery {
    pub(crate) fn new(event: Event, raw_body: Bytes, timestamp: Timestamp) -> Self {
        let inner = Inner {
            event,
            raw_body,
            timestamp,
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Returns the parsed event.
    pub fn event(&self) -> &Event {
        &self.inner.event
    }

    /// Returns the body exactly as received and verified.
    pub fn raw_body(&self) -> &Bytes {
        &self.inner.raw_body
    }

    /// Returns the signing time the vendor sent.
    pub fn timestamp(&self) -> Timestamp {
        self.inner.timestamp
    }

    /// Returns the number the event belongs to.
    pub fn number_id(&self) -> &str {
        self.inner.event.number_id()
    }

    /// Returns the dedupe identity of the event, for known event types.
    pub fn key(&self) -> Option<EventKey> {
        let event = self.event();
        let call_sid = event.call_sid()?;
        Some(EventKey::new(
            event.number_id(),
            event.event_type(),
            call_sid,
        ))
    }
}
