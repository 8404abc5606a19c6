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
    settled: bool,
}

impl ClaimGuard {
    pub(crate) fn new(store: Arc<dyn DedupeStore>, key: EventKey, token: ClaimToken) -> Self {
        Self {
            store,
            key,
            token,
            settled: false,
        }
    }

    /// Runs `handler` to completion while extending the lease every third of
    /// `lease`.
    ///
    /// # Errors
    ///
    /// Returns a [`StoreError`], after dropping `handler`, when the claim was
    /// lost or could not be extended before less than a third of the lease
    /// was left: running on would risk a second delivery running the same
    /// event.
    pub(crate) async fn hold<F: Future>(
        &self,
        handler: F,
        lease: Duration,
    ) -> Result<F::Output, StoreError> {
        let period = lease / 3;
        let mut expires = Instant::now() + lease;
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
                    Ok(Ok(())) => expires = started + lease,
                    Ok(Err(err)) if err.kind() == StoreErrorKind::ClaimLost => return Err(err),
                    Ok(Err(err)) if expires - Instant::now() <= period => return Err(err),
                    Err(_) if expires - Instant::now() <= period => {
                        return Err(StoreError::unavailable("lease extension timed out"));
                    }
                    Ok(Err(_)) | Err(_) => {}
                },
            }
        }
    }

    /// Marks the event done for `retention`.
    ///
    /// # Errors
    ///
    /// Returns the store's error; the claim then lapses with its lease.
    pub(crate) async fn complete(mut self, retention: Duration) -> Result<(), StoreError> {
        self.settled = true;
        self.store.complete(&self.key, self.token, retention).await
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
