//! Deliveries of one event that overlap: the handler runs once, a failed run
//! never blocks the vendor's retry, and an abandoned one still finishes.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Action, NOW, SECRET_12, Server, body, start, start_with};
use kwickphone_webhooks::dedupe::{Claim, ClaimToken, DedupeStore, EventKey, MemoryStore};
use kwickphone_webhooks::{BoxFuture, StoreError};
use tokio::sync::Notify;
use tokio::task::JoinSet;

/// Scripts a handler run for `call_sid` that waits to be released, and
/// returns `(entered, release)`.
fn blocking(server: &Server, call_sid: &str) -> (Arc<Notify>, Arc<Notify>) {
    let entered = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let action = Action::Block {
        entered: Arc::clone(&entered),
        release: Arc::clone(&release),
    };
    server.app.script(call_sid, vec![action]);
    (entered, release)
}

/// Delivers `payload`, signed with `num_12`'s secret, from a task of its own
/// and returns the status it gets.
fn spawn_delivery(server: &Arc<Server>, payload: &str) -> tokio::task::JoinHandle<u16> {
    let (server, payload) = (Arc::clone(server), payload.to_owned());
    tokio::spawn(async move { server.deliver(SECRET_12, &payload).await.status })
}

/// Retries like the vendor until the answer is not 409, a bounded number of
/// times, and returns the last status.
async fn deliver_until_settled(server: &Server, payload: &str) -> (u16, String) {
    for _ in 0..200 {
        let reply = server.deliver(SECRET_12, payload).await;
        if reply.status != 409 {
            return (reply.status, reply.body);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the claim was never released");
}

#[tokio::test]
async fn duplicate_in_flight_gets_409_with_retry_after() {
    let server = Arc::new(start_with(|b| b.retry_after(Duration::from_secs(7))).await);
    let payload = body("num_12", "CA-409");
    let (entered, release) = blocking(&server, "CA-409");

    let first = spawn_delivery(&server, &payload);
    entered.notified().await;

    // A retry, signed anew a little later, arrives while the first runs.
    server.clock.set(NOW + 30);
    let busy = server.deliver(SECRET_12, &payload).await;
    assert_eq!(busy.outcome(), (409, "delivery_in_progress"));
    assert_eq!(busy.retry_after.as_deref(), Some("7"));

    release.notify_one();
    assert_eq!(first.await.expect("the first delivery ends"), 200);
    let after = server.deliver(SECRET_12, &payload).await;
    assert_eq!(after.outcome(), (200, "-"));
    assert_eq!(server.app.runs("CA-409"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_deliveries_run_the_handler_once() {
    const N: usize = 20;
    let server = Arc::new(start().await);
    let payload = body("num_12", "CA-burst");
    let (entered, release) = blocking(&server, "CA-burst");

    let mut tasks = JoinSet::new();
    for _ in 0..N {
        let server = Arc::clone(&server);
        let payload = payload.clone();
        tasks.spawn(async move { server.deliver(SECRET_12, &payload).await.outcome_owned() });
    }

    // The claim holder waits in the handler, so every other delivery must be
    // answered while it is in flight.
    entered.notified().await;
    let mut statuses = Vec::new();
    while statuses.len() < N - 1 {
        let outcome = tasks
            .join_next()
            .await
            .expect("tasks remain")
            .expect("no panic");
        statuses.push(outcome);
    }
    let busy = (409, "delivery_in_progress".to_owned());
    assert!(statuses.iter().all(|s| *s == busy), "{statuses:?}");

    release.notify_one();
    let last = tasks
        .join_next()
        .await
        .expect("one task remains")
        .expect("no panic");
    assert_eq!(last, (200, "-".to_owned()));
    assert_eq!(server.app.runs("CA-burst"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deliveries_of_a_quick_handler_run_it_once() {
    const N: usize = 20;
    let server = Arc::new(start().await);
    let payload = body("num_12", "CA-quick");

    let mut tasks = JoinSet::new();
    for _ in 0..N {
        let server = Arc::clone(&server);
        let payload = payload.clone();
        tasks.spawn(async move { server.deliver(SECRET_12, &payload).await.status });
    }
    let statuses = tasks.join_all().await;
    assert!(
        statuses.iter().all(|s| [200, 409].contains(s)),
        "{statuses:?}"
    );
    assert_eq!(server.app.runs("CA-quick"), 1);
}

#[tokio::test]
async fn a_failed_run_is_retried_then_done() {
    let cases = [
        ("status", Action::Status(500), 500),
        ("panic", Action::Panic, 500),
    ];
    for (name, action, status) in cases {
        let server = start().await;
        let payload = body("num_12", "CA-retry");
        server.app.script("CA-retry", vec![action]);

        let failed = server.deliver(SECRET_12, &payload).await;
        assert_eq!(failed.status, status, "{name}");
        server.clock.set(NOW + 60);
        let retry = server.deliver(SECRET_12, &payload).await;
        assert_eq!(retry.outcome(), (200, "-"), "{name}");
        let later = server.deliver(SECRET_12, &payload).await;
        assert_eq!(later.outcome(), (200, "-"), "{name}");
        assert_eq!(server.app.runs("CA-retry"), 2, "{name}");
    }
}

#[tokio::test]
async fn client_going_away_mid_handler_lets_the_handler_finish() {
    let server = Arc::new(start().await);
    let payload = body("num_12", "CA-gone");
    let (entered, release) = blocking(&server, "CA-gone");

    let first = spawn_delivery(&server, &payload);
    entered.notified().await;
    first.abort();
    let _ = first.await;

    // The abandoned run goes on in its own task and still holds the claim.
    let retry = server.deliver(SECRET_12, &payload).await;
    assert_eq!(retry.outcome(), (409, "delivery_in_progress"));

    // Once it finishes, the event is done and the retry does not run it again.
    release.notify_one();
    let (status, answer) = deliver_until_settled(&server, &payload).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("duplicate"), "{answer}");
    assert_eq!(server.app.runs("CA-gone"), 1);
}

/// A memory store whose leases cannot be extended.
#[derive(Debug, Default)]
struct NoExtend(MemoryStore);

impl DedupeStore for NoExtend {
    fn claim<'a>(&'a self, key: &'a EventKey, lease: Duration) -> BoxFuture<'a, ClaimResult> {
        self.0.claim(key, lease)
    }

    fn extend<'a>(&'a self, _: &'a EventKey, _: ClaimToken, _: Duration) -> BoxFuture<'a, Done> {
        Box::pin(async { Err(StoreError::unavailable("connection reset")) })
    }

    fn complete<'a>(
        &'a self,
        key: &'a EventKey,
        token: ClaimToken,
        keep: Duration,
    ) -> BoxFuture<'a, Done> {
        self.0.complete(key, token, keep)
    }

    fn release<'a>(&'a self, key: &'a EventKey, token: ClaimToken) -> BoxFuture<'a, Done> {
        self.0.release(key, token)
    }
}

type ClaimResult = Result<Claim, StoreError>;
type Done = Result<(), StoreError>;

#[tokio::test]
async fn handler_is_cut_off_when_its_lease_cannot_be_kept() {
    let server = start_with(|b| {
        b.store(NoExtend::default())
            .lease(Duration::from_millis(300))
    })
    .await;
    let payload = body("num_12", "CA-lease");
    let (_entered, _release) = blocking(&server, "CA-lease");

    let cut = server.deliver(SECRET_12, &payload).await;
    assert_eq!(cut.outcome(), (503, "dedupe_unavailable"));
    let retry = server.deliver(SECRET_12, &payload).await;
    assert_eq!(retry.outcome(), (200, "-"));
    assert_eq!(server.app.runs("CA-lease"), 2);
}
