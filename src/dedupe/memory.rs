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
/// warning for each, with the running count and the capacity: a count that
/// grows means the store is too small. Size capacity to hold every event
/// received within the retention period: events per second times retention
/// seconds, with margin. At 10 events per second and the default 24 h that is
/// 864 000 markers, about 90 MB.
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
        // The handler ran: unless another delivery holds the event now, it
        // is done, even if this claim lapsed meanwhile.
        match state.in_flight.get(&digest) {
            Some(held) if held.token != token && held.until > now => {
                return Err(StoreError::claim_lost());
            }
            Some(_) => drop(state.in_flight.remove(&digest)),
            None => {}
        }

        let evicted = state.done.push(digest, deadline(now, retention));
        let capacity = state.done.cap().get();
        drop(state);
        if let Some((old, until)) = evicted
            && old != digest
            && until > now
        {
            let count = self.inner.evicted_early.fetch_add(1, Ordering::Relaxed) + 1;
            trace::evicted_early(count, capacity);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dedupe::StoreErrorKind;
    use crate::testing::FakeClock;

    const LEASE: Duration = Duration::from_secs(30);
    const RETENTION: Duration = Duration::from_secs(3600);

    fn store(capacity: usize) -> (MemoryStore, FakeClock) {
        let clock = FakeClock::at_unix(1_781_942_245);
        let capacity = NonZeroUsize::new(capacity).expect("tests use a positive capacity");
        let store = MemoryStore::with_clock(capacity, Arc::new(clock.clone()));
        (store, clock)
    }

    fn key(call_sid: &str) -> EventKey {
        EventKey::new("num_12", "call.completed", call_sid)
    }

    async fn first(store: &MemoryStore, key: &EventKey) -> ClaimToken {
        match store.claim(key, LEASE).await {
            Ok(Claim::First(token)) => token,
            other => panic!("expected a first claim of {key:?}, got {other:?}"),
        }
    }

    async fn claim(store: &MemoryStore, key: &EventKey) -> Claim {
        store
            .claim(key, LEASE)
            .await
            .expect("the memory store answers")
    }

    fn kind<T>(result: Result<T, StoreError>) -> Option<StoreErrorKind> {
        result.err().map(|e| e.kind())
    }

    #[tokio::test]
    async fn claim_protocol() {
        let (store, _) = store(10);
        let a = key("CA1");
        let token = first(&store, &a).await;
        assert_eq!(claim(&store, &a).await, Claim::InFlight);
        assert_eq!(store.in_flight(), 1);

        store
            .extend(&a, token, LEASE)
            .await
            .expect("holder extends");
        store
            .complete(&a, token, RETENTION)
            .await
            .expect("holder completes");
        assert_eq!(claim(&store, &a).await, Claim::Done);
        assert_eq!((store.in_flight(), store.len()), (0, 1));

        let b = key("CA2");
        let token = first(&store, &b).await;
        store.release(&b, token).await.expect("holder releases");
        assert_ne!(
            first(&store, &b).await,
            token,
            "a new claim gets a new token"
        );
    }

    #[tokio::test]
    async fn lapsed_lease_lets_a_new_claim_through() {
        let (store, clock) = store(10);
        let a = key("CA1");
        let old = first(&store, &a).await;

        clock.advance(LEASE - Duration::from_secs(1));
        assert_eq!(claim(&store, &a).await, Claim::InFlight, "lease still runs");
        clock.advance(Duration::from_secs(1));
        let new = first(&store, &a).await;
        assert_ne!(old, new);

        let cases = [
            ("extend", kind(store.extend(&a, old, LEASE).await)),
            ("complete", kind(store.complete(&a, old, RETENTION).await)),
        ];
        for (name, got) in cases {
            assert_eq!(
                got,
                Some(StoreErrorKind::ClaimLost),
                "{name} by the old holder"
            );
        }
        store.release(&a, old).await.expect("release never fails");
        assert_eq!(
            claim(&store, &a).await,
            Claim::InFlight,
            "the new claim stands"
        );
        store
            .complete(&a, new, RETENTION)
            .await
            .expect("new holder completes");
    }

    #[tokio::test]
    async fn extending_keeps_the_claim_past_its_first_lease() {
        let (store, clock) = store(10);
        let a = key("CA1");
        let token = first(&store, &a).await;
        for _ in 0..5 {
            clock.advance(LEASE / 2);
            store
                .extend(&a, token, LEASE)
                .await
                .expect("holder extends");
            assert_eq!(claim(&store, &a).await, Claim::InFlight);
        }
        clock.advance(LEASE);
        assert_eq!(
            kind(store.extend(&a, token, LEASE).await),
            Some(StoreErrorKind::ClaimLost),
            "a lapsed lease cannot be extended"
        );
    }

    #[tokio::test]
    async fn retention_lapse_lets_a_new_claim_through() {
        let (store, clock) = store(10);
        let a = key("CA1");
        let token = first(&store, &a).await;
        store
            .complete(&a, token, RETENTION)
            .await
            .expect("completes");

        clock.advance(RETENTION - Duration::from_secs(1));
        assert_eq!(claim(&store, &a).await, Claim::Done);
        clock.advance(Duration::from_secs(1));
        first(&store, &a).await;
        assert_eq!(store.len(), 0, "the expired marker is gone");
    }

    #[tokio::test]
    async fn a_lapsed_claim_is_marked_done_unless_another_holds_it() {
        let (store, clock) = store(10);
        let a = key("CA1");
        let b = key("CA2");
        let old_a = first(&store, &a).await;
        let old_b = first(&store, &b).await;
        clock.advance(LEASE);
        let new_b = first(&store, &b).await;

        let cases = [
            ("lapsed, free", store.complete(&a, old_a, RETENTION).await),
            ("done already", store.complete(&a, old_a, RETENTION).await),
            ("taken again", store.complete(&b, old_b, RETENTION).await),
        ];
        let kinds: Vec<_> = cases.into_iter().map(|(n, r)| (n, kind(r))).collect();

        assert_eq!(
            kinds,
            [
                ("lapsed, free", None),
                ("done already", None),
                ("taken again", Some(StoreErrorKind::ClaimLost)),
            ]
        );
        assert_eq!(claim(&store, &a).await, Claim::Done);
        assert_eq!(
            claim(&store, &b).await,
            Claim::InFlight,
            "the new claim stands"
        );
        store.release(&b, new_b).await.expect("release never fails");
    }

    #[tokio::test]
    async fn wrong_token_changes_nothing() {
        let (store, _) = store(10);
        let a = key("CA1");
        let token = first(&store, &a).await;
        let stranger = ClaimToken::random();

        let cases = [
            ("extend", kind(store.extend(&a, stranger, LEASE).await)),
            (
                "complete",
                kind(store.complete(&a, stranger, RETENTION).await),
            ),
        ];
        for (name, got) in cases {
            assert_eq!(got, Some(StoreErrorKind::ClaimLost), "{name}");
        }
        store
            .release(&a, stranger)
            .await
            .expect("release never fails");
        assert_eq!(claim(&store, &a).await, Claim::InFlight, "still held");
        assert_eq!(store.len(), 0);
        store
            .complete(&a, token, RETENTION)
            .await
            .expect("holder completes");
    }

    #[tokio::test]
    async fn keys_differ_by_number_type_and_call() {
        let (store, _) = store(10);
        let keys = [
            EventKey::new("num_12", "call.completed", "CA1"),
            EventKey::new("num_13", "call.completed", "CA1"),
            EventKey::new("num_12", "call.started", "CA1"),
            EventKey::new("num_12", "call.completed", "CA2"),
        ];
        for k in &keys {
            first(&store, k).await;
        }
        assert_eq!(store.in_flight(), keys.len());
    }

    #[tokio::test]
    async fn evicting_a_live_marker_is_counted() {
        let (store, _) = store(2);
        for call_sid in ["CA1", "CA2", "CA3"] {
            let k = key(call_sid);
            let token = first(&store, &k).await;
            store
                .complete(&k, token, RETENTION)
                .await
                .expect("completes");
        }
        assert_eq!(store.evicted_early(), 1);
        assert_eq!(store.len(), 2);
        first(&store, &key("CA1")).await;
        assert_eq!(claim(&store, &key("CA3")).await, Claim::Done);
    }

    #[tokio::test]
    async fn evicting_an_expired_marker_is_not_counted() {
        let (store, clock) = store(1);
        let a = key("CA1");
        let token = first(&store, &a).await;
        store
            .complete(&a, token, Duration::from_secs(10))
            .await
            .expect("completes");
        clock.advance(Duration::from_secs(11));

        let b = key("CA2");
        let token = first(&store, &b).await;
        store
            .complete(&b, token, RETENTION)
            .await
            .expect("completes");
        assert_eq!(store.evicted_early(), 0);
    }

    #[tokio::test]
    async fn capacity_pressure_never_drops_a_claim_in_flight() {
        let (store, _) = store(1);
        let held = key("CA-held");
        let token = first(&store, &held).await;
        for i in 0..5 {
            let k = key(&format!("CA{i}"));
            let t = first(&store, &k).await;
            store.complete(&k, t, RETENTION).await.expect("completes");
        }
        assert_eq!(store.evicted_early(), 4);
        assert_eq!(claim(&store, &held).await, Claim::InFlight);
        store
            .complete(&held, token, RETENTION)
            .await
            .expect("holder completes");
        assert_eq!(claim(&store, &held).await, Claim::Done);
    }
}
