//! A held claim: keeps its lease alive while the handler runs and always
//! ends in either a done-marker or a release.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::task::AbortHandle;
use tokio::time::{Instant, sleep, sleep_until, timeout_at};

use super::{ClaimToken, DedupeStore, EventKey, StoreError};
use crate::error::StoreErrorKind;

/// A claim held by one delivery.
///
/// Dropping it unsettled, because the handler panicked or the client went away
/// and the future was dropped, releases the claim in a background task.
#[derive(Debug)]
pub(crate) struct ClaimGuard {
    store: Arc<dyn DedupeStore>,
    key: EventKey,
    token: ClaimToken,
    lease: Duration,
    /// When the lease ends unless extended, as answered to the claim.
    expires: Instant,
    settled: bool,
}

impl ClaimGuard {
    /// Wraps a claim whose lease ends at `expires` at the latest.
    pub(crate) fn new(
        store: Arc<dyn DedupeStore>,
        key: EventKey,
        token: ClaimToken,
        lease: Duration,
        expires: Instant,
    ) -> Self {
        Self {
            store,
            key,
            token,
            lease,
            expires,
            settled: false,
        }
    }

    /// Runs `handler` to completion while extending the lease every third of
    /// it.
    ///
    /// The schedule follows the lease, not the handler: the first extension
    /// is due a third of the lease after the claim was asked for, so a claim
    /// that was answered late is extended at once. The handler is cut off,
    /// or never started, once less than a third of the lease is left without
    /// a successful extension. That third is the margin for what follows the
    /// handler (the done-marker or the release) and for a process that is
    /// slow to run its timers.
    ///
    /// The extensions run in a task of their own, started only if the handler
    /// does not finish on its first poll: a handler that blocks its thread
    /// (a synchronous write to a stalled pipe, say) then cannot stop them on
    /// a runtime with other worker threads, and its claim is not lost while
    /// it still runs.
    ///
    /// # Errors
    ///
    /// Returns a [`StoreError`], after dropping `handler`, when the claim was
    /// lost or could not be extended before the cut-off: running on would
    /// risk a second delivery running the same event.
    pub(crate) async fn hold<F: Future>(&mut self, handler: F) -> Result<F::Output, StoreError> {
        if Instant::now() >= self.cut_off() {
            return Err(StoreError::unavailable(
                "lease could not be extended in time",
            ));
        }
        tokio::pin!(handler);
        let first = std::future::poll_fn(|cx| Poll::Ready(handler.as_mut().poll(cx))).await;
        if let Poll::Ready(output) = first {
            return Ok(output);
        }

        let renewal = Renewal {
            store: Arc::clone(&self.store),
            key: self.key.clone(),
            token: self.token,
            lease: self.lease,
            expires: self.expires,
        };
        let mut renewing = tokio::spawn(renewal.run());
        let _stop = AbortOnDrop(renewing.abort_handle());
        tokio::select! {
            biased;
            output = &mut handler => Ok(output),
            lost = &mut renewing => {
                Err(lost.unwrap_or_else(|_| StoreError::unavailable("lease renewal stopped")))
            }
        }
    }

    /// Returns when less than a third of the current lease is left.
    fn cut_off(&self) -> Instant {
        cut_off(self.expires, self.lease)
    }

    /// Marks the event done for `retention`.
    ///
    /// The handler has run by now, so a store that cannot be reached is tried
    /// again in the background, every tenth of the lease (250 ms at most),
    /// until the marker is written, another delivery is found holding the
    /// event, or the retention has passed. Stores accept the marker as
    /// long as no other delivery claimed the event, even after the lease
    /// lapsed, so a marker written late after an outage still stops the
    /// retries that reach the store after it.
    ///
    /// # Errors
    ///
    /// Returns the store's error for the first attempt.
    pub(crate) async fn complete(mut self, retention: Duration) -> Result<(), StoreError> {
        self.settled = true;
        let result = self.store.complete(&self.key, self.token, retention).await;
        if let Err(err) = &result
            && err.kind() == StoreErrorKind::Unavailable
        {
            self.complete_later(retention);
        }
        result
    }

    fn complete_later(&self, retention: Duration) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = Arc::clone(&self.store);
        let key = self.key.clone();
        let token = self.token;
        let pause = (self.lease / 10).clamp(Duration::from_millis(10), Duration::from_millis(250));
        let until = Instant::now() + retention;
        runtime.spawn(async move {
            while Instant::now() + pause < until {
                sleep(pause).await;
                let result = store.complete(&key, token, retention).await;
                match result {
                    Err(err) if err.kind() == StoreErrorKind::Unavailable => {}
                    Ok(()) | Err(_) => return,
                }
            }
        });
    }

    /// Releases the claim so that the next delivery runs the handler.
    ///
    /// # Errors
    ///
    /// Returns the store's error; the claim then lapses with its lease.
    pub(crate) async fn release(mut self) -> Result<(), StoreError> {
        self.settled = true;
        self.store.release(&self.key, self.token).await
    }
}

/// Returns when less than a third of the lease ending at `expires` is left.
fn cut_off(expires: Instant, lease: Duration) -> Instant {
    let started = expires.checked_sub(lease).unwrap_or_else(Instant::now);
    started + (lease - lease / 3)
}

/// The extensions of one claim's lease, run beside its handler.
struct Renewal {
    store: Arc<dyn DedupeStore>,
    key: EventKey,
    token: ClaimToken,
    lease: Duration,
    /// When the lease ends unless extended.
    expires: Instant,
}

impl Renewal {
    /// Extends the lease every third of it, until the claim is lost or an
    /// extension cannot be had before the cut-off; returns why it stopped.
    async fn run(mut self) -> StoreError {
        let third = self.lease / 3;
        // A failed extension is tried again a few times before the cut-off.
        let pause = (third / 4).max(Duration::from_millis(1));
        let mut due = self
            .expires
            .checked_sub(self.lease)
            .unwrap_or_else(Instant::now)
            + third;
        loop {
            let cut_off = cut_off(self.expires, self.lease);
            if Instant::now() >= cut_off {
                return StoreError::unavailable("lease could not be extended in time");
            }
            // A retry due after the cut-off must not let the handler run past it.
            sleep_until(due.min(cut_off)).await;
            let started = Instant::now();
            let extend = self.store.extend(&self.key, self.token, self.lease);
            match timeout_at(cut_off, extend).await {
                Ok(Ok(())) => {
                    self.expires = started + self.lease;
                    due = started + third;
                }
                Ok(Err(err)) if err.kind() == StoreErrorKind::ClaimLost => return err,
                Ok(Err(_)) => due = Instant::now() + pause,
                Err(_) => return StoreError::unavailable("lease extension timed out"),
            }
        }
    }
}

/// Stops the renewal task once the handler is done or dropped.
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = Arc::clone(&self.store);
        let key = self.key.clone();
        let token = self.token;
        runtime.spawn(async move {
            // Nothing else can be done on failure: the lease will lapse.
            let _ = store.release(&key, token).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    use tokio::sync::Notify;
    use tokio::time::timeout;

    use super::*;
    use crate::dedupe::{BoxFuture, Claim, MemoryStore};

    /// How a [`Faulty`] store answers extensions.
    #[derive(Debug, Clone, Copy)]
    enum Extend {
        /// As the memory store does, after a pause.
        After(Duration),
        /// Never: the request hangs, as towards a stalled Redis.
        Never,
    }

    /// A memory store whose first `failures` completions find it
    /// unreachable, and whose extensions answer as `extend` says.
    #[derive(Debug)]
    struct Faulty {
        inner: MemoryStore,
        failures: AtomicU32,
        completed: Notify,
        extend: Extend,
    }

    impl Faulty {
        fn new(inner: &MemoryStore, failures: u32, extend: Extend) -> Arc<Self> {
            Arc::new(Self {
                inner: inner.clone(),
                failures: AtomicU32::new(failures),
                completed: Notify::new(),
                extend,
            })
        }
    }

    impl DedupeStore for Faulty {
        fn claim<'a>(
            &'a self,
            key: &'a EventKey,
            lease: Duration,
        ) -> BoxFuture<'a, Result<Claim, StoreError>> {
            self.inner.claim(key, lease)
        }

        fn extend<'a>(
            &'a self,
            key: &'a EventKey,
            token: ClaimToken,
            lease: Duration,
        ) -> BoxFuture<'a, Result<(), StoreError>> {
            Box::pin(async move {
                match self.extend {
                    Extend::After(pause) => sleep(pause).await,
                    Extend::Never => std::future::pending().await,
                }
                self.inner.extend(key, token, lease).await
            })
        }

        fn complete<'a>(
            &'a self,
            key: &'a EventKey,
            token: ClaimToken,
            retention: Duration,
        ) -> BoxFuture<'a, Result<(), StoreError>> {
            Box::pin(async move {
                let left = self.failures.load(Ordering::SeqCst);
                if left > 0 {
                    self.failures.store(left - 1, Ordering::SeqCst);
                    return Err(StoreError::unavailable("store is down"));
                }
                let result = self.inner.complete(key, token, retention).await;
                self.completed.notify_one();
                result
            })
        }

        fn release<'a>(
            &'a self,
            key: &'a EventKey,
            token: ClaimToken,
        ) -> BoxFuture<'a, Result<(), StoreError>> {
            self.inner.release(key, token)
        }
    }

    /// Claims `call_sid` in `memory` and returns its token and when the
    /// claim was asked for.
    async fn claimed(
        memory: &MemoryStore,
        call_sid: &str,
        lease: Duration,
    ) -> (ClaimToken, Instant) {
        let asked = Instant::now();
        let key = EventKey::new("num_12", "call.completed", call_sid);
        let Ok(Claim::First(token)) = memory.claim(&key, lease).await else {
            panic!("a fresh key is claimed");
        };
        (token, asked)
    }

    fn guard(
        store: Arc<Faulty>,
        call_sid: &str,
        token: ClaimToken,
        lease: Duration,
        asked: Instant,
    ) -> ClaimGuard {
        let key = EventKey::new("num_12", "call.completed", call_sid);
        ClaimGuard::new(store, key, token, lease, asked + lease)
    }

    #[tokio::test]
    async fn a_done_marker_missed_while_the_store_is_down_is_written_later() {
        let memory = MemoryStore::default();
        let lease = Duration::from_secs(5);
        let (token, asked) = claimed(&memory, "CA1", lease).await;
        let faulty = Faulty::new(&memory, 2, Extend::After(Duration::ZERO));
        let guard = guard(faulty.clone(), "CA1", token, lease, asked);

        let err = guard
            .complete(Duration::from_secs(60))
            .await
            .expect_err("the first attempt finds the store down");

        assert_eq!(err.kind(), StoreErrorKind::Unavailable);
        timeout(Duration::from_secs(30), faulty.completed.notified())
            .await
            .expect("completion is retried in the background");
        let key = EventKey::new("num_12", "call.completed", "CA1");
        let again = memory.claim(&key, lease).await.expect("memory answers");
        assert_eq!(again, Claim::Done);
    }

    #[tokio::test]
    async fn a_done_marker_is_written_after_an_outage_longer_than_the_lease() {
        let memory = MemoryStore::default();
        let lease = Duration::from_millis(200);
        let (token, asked) = claimed(&memory, "CA6", lease).await;
        // At one try every 20 ms, the store stays down for about 4 leases.
        let faulty = Faulty::new(&memory, 40, Extend::After(Duration::ZERO));
        let guard = guard(faulty.clone(), "CA6", token, lease, asked);

        guard
            .complete(Duration::from_secs(60))
            .await
            .expect_err("the first attempt finds the store down");

        timeout(Duration::from_secs(30), faulty.completed.notified())
            .await
            .expect("completion is retried past the lease");
        let key = EventKey::new("num_12", "call.completed", "CA6");
        let again = memory.claim(&key, lease).await.expect("memory answers");
        assert_eq!(again, Claim::Done);
    }

    #[tokio::test]
    async fn a_slow_handler_keeps_its_claim() {
        let memory = MemoryStore::default();
        let lease = Duration::from_millis(600);
        let (token, asked) = claimed(&memory, "CA2", lease).await;
        let faulty = Faulty::new(&memory, 0, Extend::After(Duration::ZERO));
        let mut guard = guard(faulty, "CA2", token, lease, asked);
        let key = EventKey::new("num_12", "call.completed", "CA2");
        let probe = async {
            sleep(lease * 3).await;
            memory.claim(&key, lease).await.expect("memory answers")
        };

        let seen = guard.hold(probe).await.expect("the lease is extended");

        assert_eq!(seen, Claim::InFlight);
        guard.release().await.expect("released");
    }

    #[tokio::test]
    async fn a_claim_answered_late_is_extended_before_it_lapses() {
        let memory = MemoryStore::default();
        let lease = Duration::from_secs(3);
        let (token, asked) = claimed(&memory, "CA3", lease).await;
        // The answer took more than a third of the lease, and an extension
        // takes more than a sixth of it.
        sleep(lease * 2 / 5).await;
        let faulty = Faulty::new(&memory, 0, Extend::After(lease * 9 / 50));
        let mut guard = guard(faulty, "CA3", token, lease, asked);
        let key = EventKey::new("num_12", "call.completed", "CA3");
        let probe = async {
            sleep_until(asked + lease * 11 / 10).await;
            memory.claim(&key, lease).await.expect("memory answers")
        };

        let seen = guard.hold(probe).await.expect("the lease is extended");

        assert_eq!(seen, Claim::InFlight, "the first lease did not lapse");
        guard.release().await.expect("released");
    }

    #[tokio::test]
    async fn a_hanging_extension_cuts_the_handler_off_while_the_claim_holds() {
        let memory = MemoryStore::default();
        let lease = Duration::from_millis(1500);
        let (token, asked) = claimed(&memory, "CA4", lease).await;
        let faulty = Faulty::new(&memory, 0, Extend::Never);
        let mut guard = guard(faulty, "CA4", token, lease, asked);
        let finished = AtomicBool::new(false);
        let handler = async {
            sleep(lease * 2).await;
            finished.store(true, Ordering::SeqCst);
        };

        let err = guard
            .hold(handler)
            .await
            .expect_err("the handler is cut off");

        let key = EventKey::new("num_12", "call.completed", "CA4");
        let seen = memory.claim(&key, lease).await.expect("memory answers");
        assert_eq!(err.kind(), StoreErrorKind::Unavailable);
        assert_eq!(seen, Claim::InFlight, "cut off before the lease lapsed");
        assert!(!finished.load(Ordering::SeqCst));
        guard.release().await.expect("released");
    }

    #[tokio::test]
    async fn a_handler_is_not_started_past_the_cut_off() {
        let memory = MemoryStore::default();
        let lease = Duration::from_millis(900);
        let (token, asked) = claimed(&memory, "CA5", lease).await;
        sleep(lease * 3 / 4).await;
        let faulty = Faulty::new(&memory, 0, Extend::After(Duration::ZERO));
        let mut guard = guard(faulty, "CA5", token, lease, asked);
        let started = AtomicBool::new(false);

        let outcome = guard
            .hold(async { started.store(true, Ordering::SeqCst) })
            .await;

        assert!(outcome.is_err(), "the claim came too late to run on");
        assert!(!started.load(Ordering::SeqCst));
        guard.release().await.expect("released");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_handler_blocking_its_thread_keeps_its_claim() {
        let memory = MemoryStore::default();
        let lease = Duration::from_millis(900);
        let (token, asked) = claimed(&memory, "CA6", lease).await;
        let faulty = Faulty::new(&memory, 0, Extend::After(Duration::ZERO));
        let mut guard = guard(faulty, "CA6", token, lease, asked);
        let blocking = async {
            tokio::task::yield_now().await;
            // Holds this worker thread well past the lease, as a synchronous
            // write to a stalled pipe would.
            std::thread::sleep(lease * 2);
        };

        guard
            .hold(blocking)
            .await
            .expect("the handler ran to the end");

        let key = EventKey::new("num_12", "call.completed", "CA6");
        let seen = memory.claim(&key, lease).await.expect("memory answers");
        assert_eq!(seen, Claim::InFlight, "the lease was extended meanwhile");
        guard.release().await.expect("released");
    }
}
