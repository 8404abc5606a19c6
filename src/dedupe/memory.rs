//! A bounded in-process dedupe store.

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use lru::LruCache;

use super::{BoxFuture, Claim, ClaimToken, DedupeStore, EventKey, StoreError};
use crate::clock::{self, Clock, SystemClock};
use crate::trace;

type Digest = [u8; 16];

/// A dedupe store in process memory, bounded by a number of done events.
///
/// Done-markers live in a least-recently-used map of fixed capacity, keyed by
/// the 16-byte [`EventKey::digest`]; one marker costs about 100 bytes (see
/// `BENCHMARKS.md`). Claims in flight are kept apart, so capacity pressure
/// never drops a claim whose handler still runs.
///
/// # Sizing
///
/// When the map is full, the oldest marker is dropped even if its retention
/// has not ended; a late retry of that event would run the handler again. The
/// store counts such drops ([`evicted_early`](Self::evicted_early)) and logs a
/// warning for each. Size capacity to hold every event received within the
/// retention period: events per second times retention seconds, with margin.
/// At 10 events per second and the default 24 h that is 864 000 markers, about
/// 90 MB.
///
/// The store lives in one process: replicas behind a load balancer each see
/// only their own deliveries, and a restart forgets everything. Use
/// [`RedisStore`](crate::dedupe::RedisStore) (feature `redis`) for those.
///
/// # Example
///
/// ```
/// use std::num::NonZeroUsize;
/// use std::time::Duration;
/// use kwickphone_webhooks::dedupe::{Claim, DedupeStore, EventKey, MemoryStore};
///
/// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
/// let store = MemoryStore::new(NonZeroUsize::new(10_000).expect("not zero"));
/// let key = EventKey::new("num_12", "call.completed", "CA1");
/// let lease = Duration::from_secs(30);
///
/// let Claim::First(token) = store.claim(&key, lease).await? else { unreachable!() };
/// assert_eq!(store.claim(&key, lease).await?, Claim::InFlight);
/// store.complete(&key, token, Duration::from_secs(86_400)).await?;
/// assert_eq!(store.claim(&key, lease).await?, Claim::Done);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    clock: Arc<dyn Clock>,
    evicted_early: AtomicU64,
}

struct State {
    in_flight: HashMap<Digest, Lease>,
    done: LruCache<Digest, Deadline>,
}

/// Milliseconds since the Unix epoch at which an entry stops counting.
type Deadline = u64;

struct Lease {
    token: ClaimToken,
    until: Deadline,
}

/// The capacity of [`MemoryStore::default`]: enough for about one event per
/// second over the default retention of 24 hours.
pub const DEFAULT_CAPACITY: NonZeroUsize = NonZeroUsize::new(100_000).expect("not zero");

impl MemoryStore {
    /// Creates a store that remembers at most `capacity` done events.
    pub fn new(capacity: NonZeroUsize) -> Self {
        Self::with_clock(capacity, Arc::new(SystemClock))
    }

    /// Creates a store that reads the time from `clock`, for tests.
    pub fn with_clock(capacity: NonZeroUsize, clock: Arc<dyn Clock>) -> Self {
        let state = State {
            in_flight: HashMap::new(),
            done: LruCache::new(capacity),
        };
        let inner = Inner {
            state: Mutex::new(state),
            clock,
            evicted_early: AtomicU64::new(0),
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Returns how many done-markers were dropped before their retention
    /// ended because the store was full.
    pub fn evicted_early(&self) -> u64 {
        self.inner.evicted_early.load(Ordering::Relaxed)
    }

    /// Returns how many done-markers the store holds, expired ones included.
    pub fn len(&self) -> usize {
        self.lock().done.len()
    }

    /// Returns `true` when the store holds no done-marker.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns how many claims are held right now.
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight.len()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn now_ms(&self) -> u64 {
        let since = clock::since_epoch(self.inner.clock.now());
        u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
    }

    fn claim_now(&self, key: &EventKey, lease: Duration) -> Claim {
        let digest = key.digest();
        let now = self.now_ms();
        let mut state = self.lock();

        match state.done.peek(&digest) {
            Some(&until) if until > now => return Claim::Done,
            Some(_) => drop(state.done.pop(&digest)),
            None => {}
        }
        if let Some(held) = state.in_flight.get(&digest)
            && held.until > now
        {
            return Claim::InFlight;
        }

        let token = ClaimToken::random();
        let until = deadline(now, lease);
        state.in_flight.insert(digest, Lease { token, until });
        Claim::First(token)
    }

    fn take_claim(
        &self,
        state: &mut State,
        digest: &Digest,
        token: ClaimToken,
    ) -> Result<(), StoreError> {
        match state.in_flight.get(digest) {
            Some(held) if held.token == token => {
                state.in_flight.remove(digest);
                Ok(())
            }
            _ => Err(StoreError::claim_lost()),
        }
    }

    fn complete_now(
        &self,
        key: &EventKey,
        token: ClaimToken,
        retention: Duration,
    ) -> Result<(), StoreError> {
        let digest = key.digest();
        let now = self.now_ms();
        let mut state = self.lock();
        self.take_claim(&mut state, &digest, token)?;

        let evicted = state.done.push(digest, deadline(now, retention));
        drop(state);
        if let Some((old, until)) = evicted
            && old != digest
            && until > now
        {
            let count = self.inner.evicted_early.fetch_add(1, Ordering::Relaxed) + 1;
            trace::evicted_early(key, count);
        }
        Ok(())
    }

    fn extend_now(
        &self,
        key: &EventKey,
        token: ClaimToken,
        lease: Duration,
    ) -> Result<(), StoreError> {
        let now = self.now_ms();
        let mut state = self.lock();
        match state.in_flight.get_mut(&key.digest()) {
            Some(held) if held.token == token && held.until > now => {
                held.until = deadline(now, lease);
                Ok(())
            }
            _ => Err(StoreError::claim_lost()),
        }
    }

    fn release_now(&self, key: &EventKey, token: ClaimToken) {
        let mut state = self.lock();
        // A token that no longer holds the claim has nothing to release.
        let _ = self.take_claim(&mut state, &key.digest(), token);
    }
}

fn deadline(now_ms: u64, span: Duration) -> Deadline {
    let span_ms = u64::try_from(span.as_millis()).unwrap_or(u64::MAX);
    now_ms.saturating_add(span_ms)
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl DedupeStore for MemoryStore {
    fn claim<'a>(
        &'a self,
        key: &'a EventKey,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Claim, StoreError>> {
        Box::pin(std::future::ready(Ok(self.claim_now(key, lease))))
    }

    fn extend<'a>(
        &'a self,
        key: &'a EventKey,
        token: ClaimToken,
        lease: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(std::future::ready(self.extend_now(key, token, lease)))
    }

    fn complete<'a>(
        &'a self,
        key: &'a EventKey,
        token: ClaimToken,
        retention: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(std::future::ready(self.complete_now(key, token, retention)))
    }

    fn release<'a>(
        &'a self,
        key: &'a EventKey,
        token: ClaimToken,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.release_now(key, token);
        Box::pin(std::future::ready(Ok(())))
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("MemoryStore")
            .field("capacity", &state.done.cap())
            .field("done", &state.done.len())
            .field("in_flight", &state.in_flight.len())
            .field("evicted_early", &self.evicted_early())
            .finish()
    }
}
