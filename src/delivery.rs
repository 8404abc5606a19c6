//! The verified delivery handed to the inner service.

use std::fmt;
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
#[derive(Clone)]
pub struct Delivery {
    inner: Arc<Inner>,
}

struct Inner {
    event: Event,
    raw_body: Bytes,
    timestamp: Timestamp,
}

/// Shows the event and the body's length, never the raw body: it can be
/// large and carry fields the crate does not model, which a log of the
/// delivery should not spill.
impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("event", &self.inner.event)
            .field("body_len", &self.inner.raw_body.len())
            .field("timestamp", &self.inner.timestamp)
            .finish()
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::UnknownEvent;

    #[test]
    fn debug_leaves_the_raw_body_out() {
        let event = Event::Unknown(UnknownEvent {
            event_type: "call.started".into(),
            number_id: "num_12".into(),
        });
        let body = Bytes::from_static(br#"{"type":"call.started","private":"do-not-log"}"#);
        let timestamp = Timestamp::parse(b"1781942245").expect("digits parse");
        let shown = format!("{:?}", Delivery::new(event, body, timestamp));
        assert!(!shown.contains("do-not-log"), "{shown}");
        assert!(shown.contains("body_len"), "{shown}");
    }
}
