//! Helpers for testing receivers: a clock you set by hand and signed
//! requests built the way the vendor builds them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::Request;

use crate::clock::Clock;
use crate::secrets::Secret;
use crate::verify::{self, SIGNATURE_HEADER, TIMESTAMP_HEADER};

/// A clock that stands still until moved; clones share the same time.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use kwickphone_webhooks::clock::Clock;
/// use kwickphone_webhooks::testing::FakeClock;
///
/// let clock = FakeClock::at_unix(1_781_942_245);
/// clock.advance(Duration::from_secs(5));
/// assert_eq!(clock.unix_secs(), 1_781_942_250);
/// ```
#[derive(Debug, Clone, Default)]
pub struct FakeClock {
    millis: Arc<AtomicU64>,
}

impl FakeClock {
    /// Creates a clock showing `secs` seconds after the Unix epoch.
    pub fn at_unix(secs: u64) -> Self {
        let clock = Self::default();
        clock.set_unix(secs);
        clock
    }

    /// Sets the time to `secs` seconds after the Unix epoch.
    pub fn set_unix(&self, secs: u64) {
        self.millis
            .store(secs.saturating_mul(1000), Ordering::SeqCst);
    }

    /// Moves the time forward.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.millis.fetch_add(by, Ordering::SeqCst);
    }

    /// Returns the time in whole seconds after the Unix epoch.
    pub fn unix_secs(&self) -> u64 {
        self.millis.load(Ordering::SeqCst) / 1000
    }
}

impl Clock for FakeClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.millis.load(Ordering::SeqCst))
    }
}

/// Builds a `POST` request to `uri` whose body is signed with `secret` at
/// `timestamp`, as the vendor sends it. An unparsable `uri` becomes `/`.
///
/// # Panics
///
/// Does not panic: the signing headers hold only digits, `v1=` and hex.
///
/// # Example
///
/// ```
/// use http_body_util::Full;
/// use bytes::Bytes;
/// use kwickphone_webhooks::{testing, Secret};
///
/// let secret = Secret::new("whsec_test")?;
/// let request: http::Request<Full<Bytes>> =
///     testing::signed_request("/hooks/kp", &secret, 1_781_942_245, b"{}");
/// assert!(request.headers().contains_key("x-kwickphone-signature"));
/// # Ok::<(), kwickphone_webhooks::ConfigError>(())
/// ```
pub fn signed_request<B: From<Bytes>>(
    uri: &str,
    secret: &Secret,
    timestamp: u64,
    body: &[u8],
) -> Request<B> {
    let signed = verify::sign(secret, timestamp, body);
    let mut request = Request::new(B::from(Bytes::copy_from_slice(body)));
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = uri.parse().unwrap_or_default();
    let headers = request.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    let values = [
        (TIMESTAMP_HEADER, signed.timestamp),
        (SIGNATURE_HEADER, signed.signature),
    ];
    for (name, value) in values {
        let value =
            http::HeaderValue::try_from(value).expect("digits and hex are valid header values");
        headers.insert(name, value);
    }
    request
}

/// Returns a `call.completed` body for `number_id` and `call_sid`, shaped like
/// the vendor's sample.
pub fn call_completed_body(number_id: &str, call_sid: &str) -> String {
    serde_json::json!({
        "type": "call.completed",
        "number_id": number_id,
        "occurred_at": "2026-06-20T07:57:25+00:00",
        "call": {
            "call_sid": call_sid,
            "caller": "+12145559876",
            "outcome": "order",
            "duration_sec": 132,
            "started_at": "2026-06-20T07:55:10Z",
            "has_recording": true,
            "has_transcript": true
        }
    })
    .to_string()
}
