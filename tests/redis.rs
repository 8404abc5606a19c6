//! `RedisStore` against a real `redis-server` that each test starts on a free
//! loopback port, and receivers that share it over loopback sockets.

#![cfg(feature = "redis")]

#[path = "../examples/chaos/redis_server.rs"]
mod redis_server;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use kwickphone_webhooks::dedupe::{Claim, DedupeStore, EventKey, RedisStore};
use kwickphone_webhooks::{
    CallCompleted, Secret, Secrets, StoreErrorKind, VerifyWebhookLayer, verify,
};
use redis_server::RedisServer;
use tokio::sync::{Notify, Semaphore};
use tokio::time::sleep;

const SECRET: &str = "whsec_redis_test_8f3c2a9b7d1e4f60";
const RETENTION: Duration = Duration::from_secs(3600);
const PREFIX: &str = "test:dedupe:";

fn start_redis() -> RedisServer {
    RedisServer::start().unwrap_or_else(|err| panic!("cannot start redis-server: {err}"))
}

fn store(redis: &RedisServer) -> RedisStore {
    RedisStore::builder(redis.url())
        .prefix(PREFIX)
        .build()
        .expect("a valid address inside a runtime")
}

fn key(call_sid: &str) -> EventKey {
    EventKey::new("num_12", "call.completed", call_sid)
}

/// A raw connection, to look at what the store wrote.
async fn raw(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .expect("a valid address")
        .get_multiplexed_async_connection()
        .await
        .expect("redis answers")
}

/// The receiver's application: counts runs per call and can hold every run
/// until the test lets it go.
#[derive(Debug, Default)]
struct App {
    runs: Mutex<HashMap<String, u32>>,
    started: Notify,
    gate: Option<Semaphore>,
    pause: Duration,
}

impl App {
    fn runs(&self, call_sid: &str) -> u32 {
        let runs = self.runs.lock().expect("no panic while held");
        runs.get(call_sid).copied().unwrap_or(0)
    }
}

async fn handler(State(app): State<Arc<App>>, event: CallCompleted) -> StatusCode {
    *app.runs
        .lock()
        .expect("no panic while held")
        .entry(event.call.call_sid)
        .or_default() += 1;
    app.started.notify_one();
    if let Some(gate) = &app.gate {
        drop(gate.acquire().await.expect("the gate stays open"));
    }
    sleep(app.pause).await;
    StatusCode::OK
}

/// Serves a receiver with its own layer and its own Redis client.
async fn replica(redis: &RedisServer, lease: Duration, app: Arc<App>) -> SocketAddr {
    let secret = Secret::new(SECRET).expect("a valid secret");
    let layer = VerifyWebhookLayer::builder(Secrets::single(secret))
        .store(store(redis))
        .lease(lease)
        .retention(RETENTION)
        .build()
        .expect("a valid configuration");
    let router = Router::new()
        .route("/hooks/kp", post(handler))
        .route_layer(layer)
        .with_state(app);
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("a free loopback port");
    let address = listener.local_addr().expect("a bound listener");
    tokio::spawn(async move { axum::serve(listener, router).await });
    address
}

fn body(call_sid: &str) -> String {
    serde_json::json!({
        "type": "call.completed",
        "number_id": "num_12",
        "call": { "call_sid": call_sid, "caller": "+12145559876", "outcome": "order" }
    })
    .to_string()
}

/// Delivers `call_sid` as the vendor does; returns the status and the body.
async fn deliver(replica: SocketAddr, call_sid: &str) -> (u16, String) {
    let body = body(call_sid);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secret = Secret::new(SECRET).expect("a valid secret");
    let signed = verify::sign(&secret, now.as_secs(), body.as_bytes());
    let response = reqwest::Client::new()
        .post(format!("http://{replica}/hooks/kp"))
        .timeout(Duration::from_secs(20))
        .header(verify::TIMESTAMP_HEADER, signed.timestamp)
        .header(verify::SIGNATURE_HEADER, signed.signature)
        .body(body)
        .send()
        .await
        .expect("the replica answers");
    let status = response.status().as_u16();
    (status, response.text().await.expect("a readable body"))
}

fn is_duplicate(answer: &(u16, String)) -> bool {
    answer.0 == 200 && answer.1.contains("\"duplicate\":true")
}

#[tokio::test]
async fn claim_protocol_on_a_real_redis() {
    let redis = start_redis();
    let store = store(&redis);
    let lease = Duration::from_secs(30);

    let Claim::First(first) = store.claim(&key("CA1"), lease).await.expect("up") else {
        panic!("a new key is claimed");
    };
    let Claim::First(other) = store.claim(&key("CA2"), lease).await.expect("up") else {
        panic!("another key is claimed independently");
    };
    let steps: [(&str, Result<(), StoreErrorKind>, Claim); 6] = [
        (
            "a second claim while held",
            Ok(()),
            store.claim(&key("CA1"), lease).await.expect("up"),
        ),
        (
            "extend with the wrong token",
            store
                .extend(&key("CA1"), other, lease)
                .await
                .map_err(|e| e.kind()),
            store.claim(&key("CA1"), lease).await.expect("up"),
        ),
        (
            "complete with the wrong token",
            store
                .complete(&key("CA1"), other, RETENTION)
                .await
                .map_err(|e| e.kind()),
            store.claim(&key("CA1"), lease).await.expect("up"),
        ),
        (
            "release with the wrong token leaves the claim",
            store
                .release(&key("CA1"), other)
                .await
                .map_err(|e| e.kind()),
            store.claim(&key("CA1"), lease).await.expect("up"),
        ),
        (
            "extend with the right token",
            store
                .extend(&key("CA1"), first, lease)
                .await
                .map_err(|e| e.kind()),
            store.claim(&key("CA1"), lease).await.expect("up"),
        ),
        (
            "complete with the right token",
            store
                .complete(&key("CA1"), first, RETENTION)
                .await
                .map_err(|e| e.kind()),
            store.claim(&key("CA1"), lease).await.expect("up"),
        ),
    ];
    let expected = [
        (Ok(()), Claim::InFlight),
        (Err(StoreErrorKind::ClaimLost), Claim::InFlight),
        (Err(StoreErrorKind::ClaimLost), Claim::InFlight),
        (Ok(()), Claim::InFlight),
        (Ok(()), Claim::InFlight),
        (Ok(()), Claim::Done),
    ];
    for ((name, result, claim), (want_result, want_claim)) in steps.into_iter().zip(expected) {
        assert_eq!(result, want_result, "{name}");
        assert_eq!(claim, want_claim, "{name}");
    }

    let again = store.complete(&key("CA1"), first, RETENTION).await;
    assert_eq!(again.map_err(|e| e.kind()), Ok(()), "done is done");
    store.release(&key("CA2"), other).await.expect("up");
    let again = store.claim(&key("CA2"), lease).await.expect("up");
    assert!(matches!(again, Claim::First(_)), "{again:?}");
}

#[tokio::test]
async fn keys_hold_only_the_prefix_digest_and_state() {
    let redis = start_redis();
    let store = store(&redis);
    let mut raw = raw(&redis).await;
    let lease = Duration::from_secs(30);
    let event = key("CA_SECRET_SID");
    let name = format!("{PREFIX}{}", hex::encode(event.digest()));

    let Claim::First(token) = store.claim(&event, lease).await.expect("up") else {
        panic!("a new key is claimed");
    };
    let held: String = redis::cmd("GET")
        .arg(&name)
        .query_async(&mut raw)
        .await
        .expect("up");
    let held_ttl: i64 = redis::cmd("PTTL")
        .arg(&name)
        .query_async(&mut raw)
        .await
        .expect("up");
    store
        .complete(&event, token, RETENTION)
        .await
        .expect("held");
    let done: String = redis::cmd("GET")
        .arg(&name)
        .query_async(&mut raw)
        .await
        .expect("up");
    let done_ttl: i64 = redis::cmd("PTTL")
        .arg(&name)
        .query_async(&mut raw)
        .await
        .expect("up");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut raw)
        .await
        .expect("up");

    assert_eq!(held, format!("inflight:{}", token.to_hex()));
    assert!(0 < held_ttl && held_ttl <= 30_000, "{held_ttl}");
    assert_eq!(done, "done");
    assert!(30_000 < done_ttl && done_ttl <= 3_600_000, "{done_ttl}");
    assert_eq!(keys, [name]);
    assert!(!keys[0].contains("CA_SECRET_SID"));
}

#[tokio::test]
async fn an_expired_lease_is_not_extended_but_its_event_is_still_marked_done() {
    let redis = start_redis();
    let store = store(&redis);
    let lease = Duration::from_millis(100);
    let mut tokens = Vec::new();
    for call_sid in ["CA1", "CA2"] {
        let Claim::First(token) = store.claim(&key(call_sid), lease).await.expect("up") else {
            panic!("a new key is claimed");
        };
        tokens.push(token);
    }

    sleep(lease * 3).await;
    let taken = store.claim(&key("CA2"), Duration::from_secs(30)).await;

    let extended = store.extend(&key("CA1"), tokens[0], lease).await;
    assert_eq!(
        extended.map_err(|e| e.kind()),
        Err(StoreErrorKind::ClaimLost)
    );
    let cases = [
        ("lapsed, free", "CA1", tokens[0], Ok(())),
        ("done already", "CA1", tokens[0], Ok(())),
        (
            "taken again",
            "CA2",
            tokens[1],
            Err(StoreErrorKind::ClaimLost),
        ),
    ];
    for (name, call_sid, token, expected) in cases {
        let completed = store.complete(&key(call_sid), token, RETENTION).await;
        assert_eq!(completed.map_err(|e| e.kind()), expected, "{name}");
    }
    assert!(matches!(taken, Ok(Claim::First(_))), "{taken:?}");
    let next = store.claim(&key("CA1"), lease).await.expect("up");
    assert_eq!(next, Claim::Done);
    let still = store.claim(&key("CA2"), lease).await.expect("up");
    assert_eq!(still, Claim::InFlight, "the new claim stands");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_sharing_redis_run_each_event_once() {
    let redis = start_redis();
    let app = Arc::new(App {
        pause: Duration::from_millis(30),
        ..App::default()
    });
    let lease = Duration::from_secs(5);
    let a = replica(&redis, lease, Arc::clone(&app)).await;
    let b = replica(&redis, lease, Arc::clone(&app)).await;
    let calls: Vec<String> = (0..20).map(|i| format!("CA{i}")).collect();

    let mut tasks = tokio::task::JoinSet::new();
    for call in &calls {
        for target in [a, b, a, b] {
            let call = call.clone();
            tasks.spawn(async move { deliver(target, &call).await });
        }
    }
    let mut handled = 0;
    while let Some(answer) = tasks.join_next().await {
        let answer = answer.expect("no task panics");
        match answer.0 {
            200 if !is_duplicate(&answer) => handled += 1,
            200 | 409 => {}
            _ => panic!("unexpected answer {answer:?}"),
        }
    }

    assert_eq!(handled, calls.len());
    for call in &calls {
        assert_eq!(app.runs(call), 1, "{call}");
        assert!(is_duplicate(&deliver(b, call).await), "{call}");
    }
}

#[tokio::test]
async fn a_crashed_replica_blocks_its_event_for_one_lease_only() {
    let redis = start_redis();
    let app = Arc::new(App::default());
    let lease = Duration::from_secs(1);
    let receiver = replica(&redis, lease, Arc::clone(&app)).await;
    {
        // The crashed replica: it claimed the event, then died without
        // completing or releasing it.
        let crashed = store(&redis);
        let taken = crashed.claim(&key("CA1"), lease).await.expect("up");
        assert!(matches!(taken, Claim::First(_)), "{taken:?}");
    }

    let during = deliver(receiver, "CA1").await;
    sleep(lease * 2).await;
    let after = deliver(receiver, "CA1").await;

    assert_eq!(during.0, 409, "{during:?}");
    assert!(during.1.contains("delivery_in_progress"), "{during:?}");
    assert_eq!(after.0, 200, "{after:?}");
    assert!(!is_duplicate(&after), "{after:?}");
    assert_eq!(app.runs("CA1"), 1);
}

#[tokio::test]
async fn redis_down_answers_503_and_recovery_needs_no_restart() {
    let mut redis = start_redis();
    let app = Arc::new(App::default());
    let receiver = replica(&redis, Duration::from_secs(5), Arc::clone(&app)).await;
    let handled = deliver(receiver, "CA1").await;

    redis.stop();
    let down_new = deliver(receiver, "CA2").await;
    let down_done = deliver(receiver, "CA1").await;
    redis.start_again().expect("redis-server starts again");
    let back_new = deliver(receiver, "CA2").await;
    let back_done = deliver(receiver, "CA1").await;

    assert_eq!(handled.0, 200, "{handled:?}");
    for answer in [&down_new, &down_done] {
        assert_eq!(answer.0, 503, "{answer:?}");
        assert!(answer.1.contains("dedupe_unavailable"), "{answer:?}");
    }
    assert_eq!(back_new.0, 200, "{back_new:?}");
    assert!(!is_duplicate(&back_new), "{back_new:?}");
    assert!(
        is_duplicate(&back_done),
        "the done-marker outlives the restart"
    );
    assert_eq!(app.runs("CA1"), 1);
    assert_eq!(app.runs("CA2"), 1);
}

#[tokio::test]
async fn a_store_with_nothing_listening_fails_as_unavailable() {
    let mut redis = start_redis();
    let store = store(&redis);
    redis.stop();

    let claimed = store.claim(&key("CA1"), Duration::from_secs(5)).await;
    let pinged = store.ping().await;

    assert_eq!(
        claimed.map_err(|e| e.kind()),
        Err(StoreErrorKind::Unavailable)
    );
    assert_eq!(
        pinged.map_err(|e| e.kind()),
        Err(StoreErrorKind::Unavailable)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_handler_slower_than_the_lease_keeps_its_claim() {
    let redis = start_redis();
    let app = Arc::new(App {
        gate: Some(Semaphore::new(0)),
        ..App::default()
    });
    let lease = Duration::from_millis(300);
    let a = replica(&redis, lease, Arc::clone(&app)).await;
    let b = replica(&redis, lease, Arc::clone(&app)).await;

    let first = tokio::spawn(deliver(a, "CA1"));
    app.started.notified().await;
    let mut answers_meanwhile = Vec::new();
    for _ in 0..12 {
        answers_meanwhile.push(deliver(b, "CA1").await);
        sleep(lease / 3).await;
    }
    app.gate.as_ref().expect("gated").add_permits(1);
    let first = first.await.expect("no panic");
    let after = deliver(b, "CA1").await;

    for answer in &answers_meanwhile {
        assert_eq!(answer.0, 409, "{answer:?}");
    }
    assert_eq!(first.0, 200, "{first:?}");
    assert!(is_duplicate(&after), "{after:?}");
    assert_eq!(app.runs("CA1"), 1);
}
