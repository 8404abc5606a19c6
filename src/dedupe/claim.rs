//! A held claim: keeps its lease alive while the handler runs and always
//! ends in either a done-marker or a release.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, sleep, timeout};

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
    /// When the lease ends unless extended; kept by [`hold`](Self::hold).
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
    /// # Errors
    ///
    /// Returns a [`StoreError`], after dropping `handler`, when the claim was
    /// lost or could not be extended before less than a third of the lease
    /// was left: running on would risk a second delivery running the same
    /// event.
    pub(crate) async fn hold<F: Future>(&mut self, handler: F) -> Result<F::Output, StoreError> {
        let lease = self.lease;
        let period = lease / 3;
        tokio::pin!(handler);

        loop {
            let renewal = async {
                sleep(period).await;
                let started = Instant::now();
                let extended =
                    timeout(period / 2, self.store.extend(&self.key, self.token, lease)).await;
                (started, extended)
            };
            tokio::select! {
                // The handler first: most finish on their first poll, and then
                // the renewal's timer is never registered.
                biased;
                output = &mut handler => return Ok(output),
                (started, extended) = renewal => match extended {
                    Ok(Ok(())) => self.expires = started + lease,
                    Ok(Err(err)) if err.kind() == StoreErrorKind::ClaimLost => return Err(err),
                    Ok(Err(err)) if self.expires - Instant::now() <= period => return Err(err),
                    Err(_) if self.expires - Instant::now() <= period => {
                        return Err(StoreError::unavailable("lease extension timed out"));
                    }
                    Ok(Err(_)) | Err(_) => {}
                },
            }
        }
    }

    /// Marks the event done for `retention`.
    ///
    /// The handler has run by now, so a store that cannot be reached is tried
    /// again in the background until the lease ends: a done-marker written
    /// late still stops the next retry, while a lapsed claim lets it run the
    /// handler a second time.
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
        let expires = self.expires;
        let pause = (self.lease / 10).max(Duration::from_millis(10));
        runtime.spawn(async move {
            while Instant::now() + pause < expires {
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
    use std::sync::atomic::{AtomicU32, Ordering};

    use tokio::sync::Notify;

    use super::*;
    use crate::dedupe::{BoxFuture, Claim, MemoryStore};

    /// A memory store whose first `failures` completions find it unreachable.
    #[derive(Debug)]
    struct Flaky {
        inner: MemoryStore,
        failures: AtomicU32,
        completed: Notify,
    }

    impl DedupeStore for Flaky {
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
            self.inner.extend(key, token, lease)
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

    #[tokio::test]
    async fn a_done_marker_missed_while_the_store_is_down_is_written_later() {
        let memory = MemoryStore::default();
        let flaky = Arc::new(Flaky {
            inner: memory.clone(),
            failures: AtomicU32::new(2),
            completed: Notify::new(),
        });
        let key = EventKey::new("num_12", "call.completed", "CA1");
        let lease = Duration::from_secs(5);
        let Ok(Claim::First(token)) = memory.claim(&key, lease).await else {
            panic!("a fresh key is claimed");
        };
        let store: Arc<dyn DedupeStore> = flaky.clone();
        let guard = ClaimGuard::new(store, key.clone(), token, lease, Instant::now() + lease);

        let err = guard
            .complete(Duration::from_secs(60))
            .await
            .expect_err("the first attempt finds the store down");

        assert_eq!(err.kind(), StoreErrorKind::Unavailable);
        timeout(Duration::from_secs(30), flaky.completed.notified())
            .await
            .expect("completion is retried in the background");
        let again = memory.claim(&key, lease).await.expect("memory answers");
        assert_eq!(again, Claim::Done);
    }

    #[tokio::test]
    async fn a_slow_handler_keeps_its_claim() {
        let memory = MemoryStore::default();
        let key = EventKey::new("num_12", "call.completed", "CA2");
        let lease = Duration::from_millis(600);
        let Ok(Claim::First(token)) = memory.claim(&key, lease).await else {
            panic!("a fresh key is claimed");
        };
        let store: Arc<dyn DedupeStore> = Arc::new(memory.clone());
        let mut guard = ClaimGuard::new(store, key.clone(), token, lease, Instant::now() + lease);
        let probe = async {
            sleep(lease * 3).await;
            memory.claim(&key, lease).await.expect("memory answers")
        };

        let seen = guard.hold(probe).await.expect("the lease is extended");

        assert_eq!(seen, Claim::InFlight);
        guard.release().await.expect("released");
    }
}
