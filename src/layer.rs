//! The layer and its configuration.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower::Layer;

use crate::clock::{Clock, SystemClock};
use crate::dedupe::{DedupeStore, MemoryStore};
use crate::error::ConfigError;
use crate::secrets::SecretSource;
use crate::service::VerifyWebhook;

/// The default body limit: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;
/// The default tolerance window, each way: 300 s.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);
/// The default time allowed to receive the body: 10 s.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// The default retention of done-markers: 24 h, beyond the vendor's whole
/// retry schedule.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);
/// The default lease of a claim: 30 s, extended while the handler runs.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// The default `Retry-After` of a 409 answer: 5 s.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Applies [`VerifyWebhook`] to a service: verifies, deduplicates and parses
/// KwickPhone deliveries before the inner service sees them.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use kwickphone_webhooks::{Secret, Secrets, VerifyWebhookLayer};
///
/// let secrets = Secrets::single(Secret::new("whsec_8f3c2a9b7d1e4f60a5b3c7d9e1f2a4b6")?);
/// let layer = VerifyWebhookLayer::builder(secrets)
///     .tolerance(Duration::from_secs(120))
///     .body_limit(256 * 1024)
///     .build()?;
/// # Ok::<(), kwickphone_webhooks::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct VerifyWebhookLayer {
    config: Arc<Config>,
}

impl VerifyWebhookLayer {
    /// Creates a layer with every default: an in-memory dedupe store, the
    /// system clock and the limits of this module's constants.
    pub fn new(secrets: impl SecretSource) -> Self {
        let config = Builder::new(Arc::new(secrets)).config;
        Self {
            config: Arc::new(config),
        }
    }

    /// Starts a configuration.
    pub fn builder(secrets: impl SecretSource) -> Builder {
        Builder::new(Arc::new(secrets))
    }
}

impl<S> Layer<S> for VerifyWebhookLayer {
    type Service = VerifyWebhook<S>;

    fn layer(&self, inner: S) -> Self::Service {
        VerifyWebhook::new(inner, Arc::clone(&self.config))
    }
}

impl fmt::Debug for VerifyWebhookLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyWebhookLayer")
            .field("config", &self.config)
            .finish()
    }
}

/// The settings shared by every clone of the service.
#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) secrets: Arc<dyn SecretSource>,
    pub(crate) store: Arc<dyn DedupeStore>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) tolerance: Duration,
    pub(crate) body_limit: usize,
    pub(crate) body_timeout: Duration,
    pub(crate) lease: Duration,
    pub(crate) retention: Duration,
    pub(crate) retry_after: Duration,
    pub(crate) forward_unknown: bool,
}

/// Configures a [`VerifyWebhookLayer`].
#[derive(Debug)]
#[must_use]
pub struct Builder {
    config: Config,
}

impl Builder {
    fn new(secrets: Arc<dyn SecretSource>) -> Self {
        let config = Config {
            secrets,
            store: Arc::new(MemoryStore::default()),
            clock: Arc::new(SystemClock),
            tolerance: DEFAULT_TOLERANCE,
            body_limit: DEFAULT_BODY_LIMIT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            lease: DEFAULT_LEASE,
            retention: DEFAULT_RETENTION,
            retry_after: DEFAULT_RETRY_AFTER,
            forward_unknown: false,
        };
        Self { config }
    }

    /// Sets the dedupe store; the default is a [`MemoryStore`] of default
    /// capacity.
    pub fn store(mut self, store: impl DedupeStore) -> Self {
        self.config.store = Arc::new(store);
        self
    }

    /// Sets the clock, for tests.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.config.clock = Arc::new(clock);
        self
    }

    /// Sets how far a timestamp may be from now, in the past or the future.
    pub fn tolerance(mut self, tolerance: Duration) -> Self {
        self.config.tolerance = tolerance;
        self
    }

    /// Sets the largest body accepted, in bytes.
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.config.body_limit = bytes;
        self
    }

    /// Sets how long the body may take to arrive; a slower client gets 408.
    pub fn body_timeout(mut self, timeout: Duration) -> Self {
        self.config.body_timeout = timeout;
        self
    }

    /// Sets the lease of a claim. The layer extends it while the handler runs,
    /// so it bounds how long a crashed process blocks an event, not how long a
    /// handler may take. A third of it is the longest store outage or stall
    /// of the process that deduplication rides out without risking a second
    /// run of an event, so keep it well above those.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.config.lease = lease;
        self
    }

    /// Sets how long a handled event is remembered.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.config.retention = retention;
        self
    }

    /// Sets the `Retry-After` sent with a 409 answer.
    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.config.retry_after = retry_after;
        self
    }

    /// Hands events of unknown types to the inner service, without dedupe,
    /// instead of acknowledging them with 200.
    pub fn forward_unknown_events(mut self, forward: bool) -> Self {
        self.config.forward_unknown = forward;
        self
    }

    /// Finishes the configuration.
    ///
    /// # Errors
    ///
    /// Returns [`ConfigError::ZeroDuration`] when the lease, the retention or
    /// the body timeout is zero, and [`ConfigError::RetentionTooShort`] when
    /// the retention is not longer than twice the tolerance.
    pub fn build(self) -> Result<VerifyWebhookLayer, ConfigError> {
        let durations = [
            ("lease", self.config.lease),
            ("retention", self.config.retention),
            ("body timeout", self.config.body_timeout),
        ];
        if let Some((name, _)) = durations.iter().find(|(_, d)| d.is_zero()) {
            return Err(ConfigError::ZeroDuration(name));
        }
        // A request signed at t is accepted until t + tolerance, and may have
        // been handled as early as t - tolerance.
        if self.config.retention <= self.config.tolerance.saturating_mul(2) {
            return Err(ConfigError::RetentionTooShort);
        }
        Ok(VerifyWebhookLayer {
            config: Arc::new(self.config),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Secret, Secrets};

    fn secrets() -> Secrets {
        Secrets::single(Secret::new("whsec_layer_test").expect("valid"))
    }

    #[test]
    fn zero_durations_are_refused() {
        let cases = [
            (
                "lease",
                VerifyWebhookLayer::builder(secrets()).lease(Duration::ZERO),
            ),
            (
                "retention",
                VerifyWebhookLayer::builder(secrets()).retention(Duration::ZERO),
            ),
            (
                "body timeout",
                VerifyWebhookLayer::builder(secrets()).body_timeout(Duration::ZERO),
            ),
        ];
        for (name, builder) in cases {
            let err = builder.build().expect_err("zero is refused");
            assert_eq!(err, ConfigError::ZeroDuration(name));
        }
    }

    #[test]
    fn retention_must_outlast_the_replay_window() {
        let builder = || VerifyWebhookLayer::builder(secrets()).tolerance(Duration::from_secs(300));
        let short = builder().retention(Duration::from_secs(600)).build();
        assert_eq!(short.err(), Some(ConfigError::RetentionTooShort));
        assert!(
            builder()
                .retention(Duration::from_secs(601))
                .build()
                .is_ok()
        );
    }

    #[test]
    fn debug_never_shows_secrets() {
        let layer = VerifyWebhookLayer::new(secrets());
        let shown = format!("{layer:?}");
        assert!(!shown.contains("layer_test"), "{shown}");
        assert!(shown.contains("tolerance"), "{shown}");
    }
}
