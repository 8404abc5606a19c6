//! A dedupe store in Redis, shared by every replica of a receiver.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, RedisError, Script, ScriptInvocation};

use super::{BoxFuture, Claim, ClaimToken, DedupeStore, EventKey, StoreError};
use crate::error::ConfigError;

/// Sets the claim unless the key exists; otherwise tells a done-marker from a
/// claim held by someone else. Answers 1 (claimed), 2 (done), 3 (in flight).
const CLAIM: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    return 1
end
if redis.call('GET', KEYS[1]) == 'done' then
    return 2
end
return 3
";

/// Moves the expiry of a claim still held by the caller. Answers 1 or 0.
const EXTEND: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Turns the caller's claim into a done-marker, also when the claim expired
/// and no other delivery took the event since (the key is gone): the
/// handler ran either way. Answers 1 when the event is done, 0 when another
/// delivery holds it.
const COMPLETE: &str = r"
local held = redis.call('GET', KEYS[1])
if held == 'done' then
    return 1
end
if held == ARGV[1] or not held then
    redis.call('SET', KEYS[1], 'done', 'PX', ARGV[2])
    return 1
end
return 0
";

/// Deletes a claim still held by the caller. Answers 1 or 0.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
";

/// A dedupe store in Redis, so that replicas behind a load balancer share
/// their claims and done-markers.
///
/// Each event is one string key: the prefix, then the 32 hex digits of
/// [`EventKey::digest`]. Its value is `inflight:` and the claim's token while
/// a delivery holds the claim, with the lease as expiry, then `done` for the
/// retention period. The key holds no secret and no part of the body. Every
/// step is one small Lua script, so claiming and the owner checks of extend,
/// complete and release are atomic on the server.
///
/// # Long handlers and crashed replicas
///
/// The layer extends a held claim every third of its lease while the handler
/// runs, so a slow handler keeps its claim however long it takes. When no
/// extension has succeeded by the time less than a third of the lease is
/// left, the handler is cut off (or not started, for a claim answered that
/// late) and the delivery is answered 503. A replica that dies stops
/// extending: its claim expires after at most one lease and the vendor's
/// next retry is processed by another replica.
///
/// # What the guarantee depends on
///
/// No event's effect runs twice as long as neither a Redis outage nor a
/// stall of the receiving process (a starved CPU, a paused VM, a blocked
/// runtime) lasts a third of the lease. Past that, a claim can lapse while
/// its handler still runs or before its done-marker is written, and a retry
/// that reaches Redis in that gap runs the handler again. The layer narrows
/// the gap, since a handler that finished is marked done as soon as Redis
/// answers again if no other delivery claimed the event meanwhile, but it
/// cannot close it. So keep the lease at least three times the longest
/// outage or stall to be ridden out (the default 30 s covers a Redis restart
/// and a heavily loaded machine), and the store's timeout well under a
/// third of the lease, since a claim answered late uses up its lease.
///
/// # When Redis is unreachable
///
/// Every operation, connecting included, is bounded by the store's timeout
/// (1 s unless [set](RedisStoreBuilder::timeout)); past it the delivery is
/// answered 503 `dedupe_unavailable` and the handler does not run. The store
/// reconnects by itself on the next operation, so deliveries succeed again as
/// soon as Redis is back, without a restart of the application.
///
/// # What Redis must keep
///
/// - Across a Redis restart the guarantee holds only with persistence that
///   keeps every acknowledged write: an append-only file with
///   `appendfsync always`. Without persistence a restarted Redis forgets its
///   done-markers, and a late retry of a handled event runs the handler
///   again; with `appendfsync everysec` the same can happen to the events of
///   the last second. A failover to a replica that missed recent writes has
///   the same effect.
/// - Use `maxmemory-policy noeviction` (or a `volatile-*` policy sized so it
///   never triggers): a marker evicted for memory is a forgotten event, while
///   a refused write only yields a 503 that the vendor retries.
/// - Size: about 100 bytes per event kept for the retention period, so at 10
///   events per second and the default 24 h about 90 MB.
///
/// # Example
///
/// ```no_run
/// use kwickphone_webhooks::dedupe::RedisStore;
/// use kwickphone_webhooks::{Secrets, VerifyWebhookLayer};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let store = RedisStore::builder("redis://127.0.0.1:6379/")
///     .prefix("shop:kwickphone:")
///     .build()?;
/// store.ping().await?;
///
/// let secrets = Secrets::parse_list("num_12=whsec_8f3c2a9b7d1e4f60a5b3c7d9e1f2a4b6")?;
/// let layer = VerifyWebhookLayer::builder(secrets).store(store).build()?;
/// # let _ = layer;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    scripts: Arc<Scripts>,
    prefix: Arc<str>,
    timeout: Duration,
}

struct Scripts {
    claim: Script,
    extend: Script,
    complete: Script,
    release: Script,
}

impl RedisStore {
    /// The key prefix unless [set](RedisStoreBuilder::prefix).
    pub const DEFAULT_PREFIX: &str = "kwickphone:dedupe:";

    /// The time an operation may take, connecting included, before it fails
    /// as unavailable, unless [set](RedisStoreBuilder::timeout): 1 s.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

    /// Creates a store for the Redis at `url` (such as
    /// `redis://127.0.0.1:6379/`) with the default prefix and timeout. It
    /// connects on first use, so it can be created while Redis is down.
    ///
    /// # Errors
    ///
    /// Returns [`ConfigError::InvalidStore`] when `url` cannot be parsed or
    /// no Tokio runtime is running.
    pub fn open(url: &str) -> Result<Self, ConfigError> {
        Self::builder(url).build()
    }

    /// Starts a configuration for the Redis at `url`.
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: url.into(),
            prefix: Self::DEFAULT_PREFIX.into(),
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }

    /// Returns the prefix of every key the store writes.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Returns the Redis key of `key`.
    pub fn redis_key(&self, key: &EventKey) -> String {
        format!("{}{}", self.prefix, hex::encode(key.digest()))
    }

    /// Checks that Redis answers, for start-up and health checks.
    ///
    /// # Errors
    ///
    /// Returns [`StoreErrorKind::Unavailable`](super::StoreErrorKind) when
    /// Redis does not answer within the timeout.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        let ping = async {
            let command = redis::cmd("PING");
            match command.query_async::<()>(&mut connection).await {
                Err(err) if err.is_connection_refusal() => {
                    command.query_async::<()>(&mut connection).await
                }
                other => other,
            }
        };
        self.bounded(ping).await
    }

    async fn bounded<T>(
        &self,
        operation: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, operation).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(StoreError::unavailable(err)),
            Err(_) => Err(StoreError::unavailable("redis did not answer in time")),
        }
    }

    /// Runs a script once, or twice when the first attempt found the
    /// connection refused: that attempt never reached Redis, and it is the
    /// one that makes the connection manager reconnect, so the second finds
    /// a Redis that came back.
    async fn run<T: FromRedisValue>(
        &self,
        invocation: ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let mut connection = self.connection.clone();
        let attempts = async {
            match invocation.invoke_async(&mut connection).await {
                Err(err) if err.is_connection_refusal() => {
                    invocation.invoke_async(&mut connection).await
                }
                other => other,
            }
        };
        self.bounded(attempts).await
    }

    async fn claim_now(&self, key: &EventKey, lease: Duration) -> Result<Claim, StoreError> {
        let token = ClaimToken::random();
        let mut invocation = self.scripts.claim.key(self.redis_key(key));
        invocation.arg(owner(token)).arg(millis(lease));
        match self.run::<u8>(invocation).await? {
            1 => Ok(Claim::First(token)),
            2 => Ok(Claim::Done),
            _ => Ok(Claim::InFlight),
        }
    }

    async fn owned(
        &self,
        script: &Script,
        key: &EventKey,
        token: ClaimToken,
        span: Option<Duration>,
    ) -> Result<bool, StoreError> {
        let mut invocation = script.key(self.redis_key(key));
        invocation.arg(owner(token));
        if let Some(span) = span {
            invocation.arg(millis(span));
        }
        Ok(self.run::<u8>(invocation).await? == 1)
    }
}

/// The value of a claim held by `token`.
fn owner(token: ClaimToken) -> String {
    format!("inflight:{}", token.to_hex())
}

/// Returns whole milliseconds, at least one: Redis refuses an expiry of zero.
fn millis(span: Duration) -> u64 {
    u64::try_from(span.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn held(owned: bool) -> Result<(), StoreError> {
    if owned {
        Ok(())
    } else {
        Err(StoreError::claim_lost())
    }
}

impl DedupeStore for RedisStore {
    fn claim<'a>(
        &'a self,
        key: &'a EventKey,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Claim, StoreError>> {
        Box::pin(self.claim_now(key, lease))
    }

    fn extend<'a>(
        &'a self,
        key: &'a EventKey,
        token: ClaimToken,
        lease: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let script = &self.scripts.extend;
        Box::pin(async move { held(self.owned(script, key, token, Some(lease)).await?) })
    }

    fn complete<'a>(
        &'a self,
        key: &'a EventKey,
        token: ClaimToken,
        retention: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let script = &self.scripts.complete;
        Box::pin(async move { held(self.owned(script, key, token, Some(retention)).await?) })
    }

    fn release<'a>(
        &'a self,
        key: &'a EventKey,
        token: ClaimToken,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let script = &self.scripts.release;
        Box::pin(async move {
            // A claim that is no longer ours has nothing left to release.
            self.owned(script, key, token, None).await.map(drop)
        })
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The connection is left out: its address may hold a password.
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Configures a [`RedisStore`].
#[derive(Clone)]
#[must_use]
pub struct RedisStoreBuilder {
    url: String,
    prefix: String,
    timeout: Duration,
}

impl RedisStoreBuilder {
    /// Sets the prefix of every key, [`RedisStore::DEFAULT_PREFIX`] unless set. Give each
    /// receiver sharing one Redis its own.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets how long an operation may take, connecting included, before the
    /// delivery is answered 503; [`RedisStore::DEFAULT_TIMEOUT`] unless set.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Creates the store. It connects on first use.
    ///
    /// # Errors
    ///
    /// Returns [`ConfigError::InvalidStore`] when the address cannot be
    /// parsed or no Tokio runtime is running, and
    /// [`ConfigError::ZeroDuration`] for a zero timeout.
    pub fn build(self) -> Result<RedisStore, ConfigError> {
        if self.timeout.is_zero() {
            return Err(ConfigError::ZeroDuration("redis timeout"));
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ConfigError::InvalidStore("no tokio runtime is running"));
        }
        let client = redis::Client::open(self.url.as_str())
            .map_err(|_| ConfigError::InvalidStore("redis address cannot be parsed"))?;
        // One connection attempt per operation: retries with backoff inside
        // the manager would hold every delivery for seconds while Redis is
        // down, and the vendor retries anyway.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|_| ConfigError::InvalidStore("redis connection cannot be set up"))?;
        Ok(RedisStore {
            connection,
            scripts: Arc::new(Scripts {
                claim: Script::new(CLAIM),
                extend: Script::new(EXTEND),
                complete: Script::new(COMPLETE),
                release: Script::new(RELEASE),
            }),
            prefix: self.prefix.into(),
            timeout: self.timeout,
        })
    }
}

impl fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_the_prefix_and_the_digest() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let _entered = runtime.enter();
        let store = RedisStore::builder("redis://127.0.0.1:1/")
            .prefix("p:")
            .build()
            .expect("valid");
        let key = EventKey::new("num_12", "call.completed", "CA1");

        let redis_key = store.redis_key(&key);

        assert_eq!(redis_key, format!("p:{}", hex::encode(key.digest())));
        assert!(!redis_key.contains("CA1"), "{redis_key}");
    }

    #[test]
    fn building_is_refused_without_a_runtime_or_with_a_bad_address() {
        let err = RedisStore::open("redis://127.0.0.1:1/").expect_err("no runtime");
        assert_eq!(
            err,
            ConfigError::InvalidStore("no tokio runtime is running")
        );

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let _entered = runtime.enter();
        let cases = [
            ("not a url", "redis address cannot be parsed"),
            (
                "http://user:pw@127.0.0.1/",
                "redis address cannot be parsed",
            ),
        ];
        for (url, reason) in cases {
            let err = RedisStore::open(url).expect_err(url);
            assert_eq!(err, ConfigError::InvalidStore(reason), "{url}");
            assert!(!err.to_string().contains("pw"), "{err}");
        }
        let err = RedisStore::builder("redis://127.0.0.1:1/")
            .timeout(Duration::ZERO)
            .build()
            .expect_err("zero timeout");
        assert_eq!(err, ConfigError::ZeroDuration("redis timeout"));
    }

    #[test]
    fn expiries_are_whole_positive_milliseconds() {
        let cases = [
            (Duration::ZERO, 1),
            (Duration::from_micros(1500), 1),
            (Duration::from_millis(300), 300),
            (Duration::from_secs(86_400), 86_400_000),
            (Duration::MAX, u64::MAX),
        ];
        for (span, expected) in cases {
            assert_eq!(millis(span), expected, "{span:?}");
        }
    }
}
