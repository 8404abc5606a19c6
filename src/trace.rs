//! The crate's log events, with fixed messages and data in fields.
//!
//! Rejections are `debug` (anyone can send them), handled events `info`,
//! degraded operation `warn`. Nothing here ever receives a secret, a signature,
//! a header value or the body. Without the `tracing` feature every function
//! compiles to nothing.

use crate::dedupe::EventKey;
use crate::error::RejectionKind;

/// What is known about a delivery when it is logged.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Fields<'a> {
    pub(crate) number_id: Option<&'a str>,
    pub(crate) body_len: Option<usize>,
    pub(crate) skew_secs: Option<u64>,
}

#[cfg(feature = "tracing")]
mod enabled {
    use super::{EventKey, Fields, RejectionKind};

    /// Every event is logged under the crate's name, whatever module sent it.
    const TARGET: &str = "kwickphone_webhooks";

    pub(crate) fn rejected(kind: RejectionKind, f: &Fields<'_>) {
        tracing::debug!(
            target: TARGET,
            number_id = f.number_id.map(unverified),
            body_len = f.body_len,
            skew_secs = f.skew_secs,
            reason = kind.code(),
            status = kind.status().as_u16(),
            "webhook rejected"
        );
    }

    /// Cuts a value read from an unverified body to a length worth logging:
    /// anyone can send a rejected request, and its bytes should not reach
    /// the log one for one.
    pub(super) fn unverified(value: &str) -> &str {
        const MAX: usize = 64;
        if value.len() <= MAX {
            return value;
        }
        let end = (0..=MAX)
            .rev()
            .find(|&i| value.is_char_boundary(i))
            .unwrap_or(0);
        &value[..end]
    }

    pub(crate) fn accepted(key: &EventKey, status: u16) {
        tracing::info!(
            target: TARGET,
            number_id = key.number_id(),
            call_sid = key.call_sid(),
            event_type = key.event_type(),
            status,
            "webhook accepted"
        );
    }

    pub(crate) fn duplicate(key: &EventKey, status: u16) {
        tracing::debug!(
            target: TARGET,
            number_id = key.number_id(),
            call_sid = key.call_sid(),
            event_type = key.event_type(),
            status,
            "duplicate delivery"
        );
    }

    pub(crate) fn unknown_type(number_id: &str, event_type: &str, status: u16) {
        tracing::info!(
            target: TARGET,
            number_id,
            event_type,
            status,
            "unknown event type acknowledged"
        );
    }

    pub(crate) fn handler_failed(key: &EventKey, reason: &'static str, status: u16) {
        tracing::warn!(
            target: TARGET,
            number_id = key.number_id(),
            call_sid = key.call_sid(),
            event_type = key.event_type(),
            reason,
            status,
            "handler failed"
        );
    }

    pub(crate) fn store_failed(key: &EventKey, reason: &'static str) {
        tracing::warn!(
            target: TARGET,
            number_id = key.number_id(),
            call_sid = key.call_sid(),
            event_type = key.event_type(),
            reason,
            "dedupe store failed"
        );
    }

    /// The evicted entry is known only by its digest, so the fields say how
    /// often it happened and how full the store is, not which event it was.
    pub(crate) fn evicted_early(evicted_early: u64, capacity: usize) {
        tracing::warn!(
            target: TARGET,
            evicted_early,
            capacity,
            "dedupe entry evicted before its retention ended"
        );
    }
}

#[cfg(not(feature = "tracing"))]
mod enabled {
    use super::{EventKey, Fields, RejectionKind};

    pub(crate) fn rejected(_: RejectionKind, _: &Fields<'_>) {}
    pub(crate) fn accepted(_: &EventKey, _: u16) {}
    pub(crate) fn duplicate(_: &EventKey, _: u16) {}
    pub(crate) fn unknown_type(_: &str, _: &str, _: u16) {}
    pub(crate) fn handler_failed(_: &EventKey, _: &'static str, _: u16) {}
    pub(crate) fn store_failed(_: &EventKey, _: &'static str) {}
    pub(crate) fn evicted_early(_: u64, _: usize) {}
}

pub(crate) use enabled::*;

#[cfg(all(test, feature = "tracing"))]
mod tests {
    use super::enabled::unverified;

    #[test]
    fn unverified_values_are_cut_on_a_char_boundary() {
        let long = "n".repeat(900);
        let wide = format!("{}é{}", "n".repeat(63), "n".repeat(10));
        let cases = [
            ("short", "num_12", "num_12"),
            ("long", long.as_str(), &long[..64]),
            ("boundary", wide.as_str(), &wide[..63]),
        ];
        for (name, value, want) in cases {
            assert_eq!(unverified(value), want, "{name}");
        }
    }
}
