//! The chaos run: replicas sharing one Redis, a vendor that delivers every
//! event several times and retries, a handler that fails, panics and is
//! sometimes slower than the lease, and a Redis crash in the middle.

#![allow(dead_code)]

use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use kwickphone_webhooks::dedupe::RedisStore;
use kwickphone_webhooks::{CallCompleted, Secret, Secrets, VerifyWebhookLayer, testing, verify};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, sleep_until};

use super::redis_server::RedisServer;

const NUMBER_ID: &str = "num_12";
const SECRET: &str = "whsec_chaos_8f3c2a9b7d1e4f60a5b3c7d9e1f2a4b6";
const ATTEMPTS: u32 = 5;
/// The message of the handler's deliberate panics, which the run keeps off
/// stderr.
pub(crate) const PANIC_MESSAGE: &str = "chaos: simulated handler panic";

/// Keeps the handler's deliberate panics off stderr; every other panic is
/// reported as usual.
pub(crate) fn quiet_simulated_panics() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info.payload().downcast_ref::<String>();
        if message.is_none_or(|m| m != PANIC_MESSAGE) {
            report(info);
        }
    }));
}

/// The shape of a run.
///
/// The timings respect the bound that `RedisStore` documents: no event runs
/// twice as long as neither a Redis outage nor a stall of the process lasts a
/// third of the lease. The outage here is a few hundred milliseconds; the
/// lease leaves two seconds for stalls, which a machine whose cores are
/// shared with several busy processes stays under. The report shows the
/// longest stall seen, so a run can be checked against that bound.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Distinct events the vendor sends.
    pub(crate) events: u32,
    /// Receiver replicas, each with its own layer and Redis client.
    pub(crate) replicas: usize,
    /// Seeds every random choice.
    pub(crate) seed: u64,
    /// The layer's lease; slow handler runs take one and a half of it.
    pub(crate) lease: Duration,
    /// The vendor's first retry delay, doubled on each further attempt. As
    /// the vendor's real schedule of hours does, the last gap (8 to 12 s)
    /// outlasts the lease, so that a claim left behind by a lost answer or
    /// a failed release lapses while the vendor still retries, and the whole
    /// schedule outlasts the outage and the slow handler runs.
    pub(crate) backoff: Duration,
    /// Time between the first deliveries of two consecutive events. At this
    /// pace the example, vendor included, needs about a fifth of a core in a
    /// debug build; a process given less falls behind, its Redis calls wait
    /// past their timeout behind the backlog, and it answers 503 until the
    /// vendor gives up: an overload, not the outage under test.
    pub(crate) spacing: Duration,
    /// How long after the start Redis is killed.
    pub(crate) crash_at: Duration,
    /// How long Redis stays down.
    pub(crate) down_for: Duration,
}

impl Settings {
    /// The full run: 1000 events sent over 20 s.
    pub(crate) fn full() -> Self {
        Self {
            events: 1000,
            replicas: 3,
            seed: 0x6b77_6963_6b70_686f,
            lease: Duration::from_secs(6),
            backoff: Duration::from_secs(1),
            spacing: Duration::from_millis(20),
            crash_at: Duration::from_secs(10),
            down_for: Duration::from_millis(300),
        }
    }

    /// A smaller run for the test suite: 100 events sent over 2 s.
    pub(crate) fn small() -> Self {
        Self {
            events: 100,
            crash_at: Duration::from_secs(1),
            ..Self::full()
        }
    }
}

/// What the vendor saw and what the handler did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Report {
    /// Events sent.
    pub(crate) events: u64,
    /// Milliseconds from killing Redis to its answering again.
    pub(crate) redis_down_ms: u64,
    /// The lease, in milliseconds.
    pub(crate) lease_ms: u64,
    /// The longest time the runtime took past a timer's deadline, in
    /// milliseconds: how long the process was starved of CPU at worst.
    pub(crate) stall_ms: u64,
    /// Copies of events sent, each retried up to five times.
    pub(crate) copies: u64,
    /// HTTP requests the vendor made.
    pub(crate) deliveries: u64,
    /// Times the handler was entered.
    pub(crate) handler_runs: u64,
    /// Handler runs that succeeded: the effect happened.
    pub(crate) effects: u64,
    /// Slow handler runs, longer than the lease.
    pub(crate) slow_runs: u64,
    /// 200 answers to a duplicate of a done event, without the handler.
    pub(crate) duplicates_200: u64,
    /// 409 answers: the event was being handled elsewhere.
    pub(crate) conflicts_409: u64,
    /// 503 answers: the dedupe store was unreachable.
    pub(crate) unavailable_503: u64,
    /// 500 answers: the handler failed, or panicked and the layer answered
    /// `handler_failed`.
    pub(crate) failed_500: u64,
    /// Connection errors and other answers.
    pub(crate) other: u64,
    /// Copies the vendor gave up on after five non-2xx answers.
    pub(crate) copies_given_up: u64,
    /// Events whose effect happened more than once.
    pub(crate) effects_twice: u64,
    /// Events never handled although not every attempt reached a failing
    /// handler: the receiver, not the application, lost them.
    pub(crate) lost: u64,
    /// Events never handled because the handler itself failed on every
    /// attempt the vendor made; the vendor gives up on those by design.
    pub(crate) failed_by_handler: u64,
}

impl Report {
    /// Returns `true` when no event ran twice and none was lost.
    pub(crate) fn passed(&self) -> bool {
        self.effects_twice == 0 && self.lost == 0
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows = [
            ("events", self.events),
            ("redis down (ms)", self.redis_down_ms),
            ("lease (ms)", self.lease_ms),
            ("longest stall of the process (ms)", self.stall_ms),
            ("copies sent", self.copies),
            ("deliveries", self.deliveries),
            ("handler runs", self.handler_runs),
            ("handler successes", self.effects),
            ("slow handler runs (> lease)", self.slow_runs),
            ("duplicates answered 200", self.duplicates_200),
            ("409 delivery_in_progress", self.conflicts_409),
            ("503 dedupe_unavailable", self.unavailable_503),
            ("500 handler_failed", self.failed_500),
            ("connection errors, other", self.other),
            ("copies given up by the vendor", self.copies_given_up),
            (
                "events failed by the handler every time",
                self.failed_by_handler,
            ),
            ("events whose effect ran twice", self.effects_twice),
            ("events lost", self.lost),
        ];
        for (name, value) in rows {
            writeln!(f, "{name:<42}{value:>8}")?;
        }
        Ok(())
    }
}

/// A seeded stream of numbers (splitmix64), shared by the handler runs.
#[derive(Debug)]
struct Draws {
    seed: u64,
    next: AtomicU64,
}

impl Draws {
    fn take(&self) -> u64 {
        mix(self.seed ^ self.next.fetch_add(1, Ordering::Relaxed))
    }
}

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The application's side: every run of the handler and its effects.
#[derive(Debug)]
struct World {
    draws: Draws,
    slow: Duration,
    runs: AtomicU64,
    slow_runs: AtomicU64,
    effects: Mutex<HashMap<String, u64>>,
}

async fn handler(State(world): State<Arc<World>>, event: CallCompleted) -> StatusCode {
    world.runs.fetch_add(1, Ordering::Relaxed);
    let draw = world.draws.take();
    let pause = if draw % 100 == 0 {
        world.slow_runs.fetch_add(1, Ordering::Relaxed);
        world.slow
    } else {
        Duration::from_millis(1 + (draw >> 8) % 20)
    };
    sleep(pause).await;

    match (draw >> 32) % 100 {
        0..2 => panic!("{PANIC_MESSAGE}"),
        2..12 => StatusCode::INTERNAL_SERVER_ERROR,
        _ => {
            let mut effects = world.effects.lock().expect("no panic while held");
            *effects.entry(event.call.call_sid).or_default() += 1;
            StatusCode::OK
        }
    }
}

async fn spawn_replica(url: &str, settings: &Settings, world: Arc<World>) -> SocketAddr {
    let store = RedisStore::builder(url)
        .prefix("chaos:")
        .build()
        .expect("a valid address inside a runtime");
    let secret = Secret::new(SECRET).expect("a valid secret");
    let layer = VerifyWebhookLayer::builder(Secrets::single(secret))
        .store(store)
        .lease(settings.lease)
        .build()
        .expect("a valid configuration");
    let app = Router::new()
        .route("/hooks/kp", post(handler))
        .route_layer(layer)
        .with_state(world);
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("a free loopback port");
    let address = listener.local_addr().expect("a bound listener");
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

/// How one delivery attempt was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Handled,
    Duplicate,
    InProgress,
    Unavailable,
    HandlerFailed,
    Other,
}

impl Answer {
    fn is_success(self) -> bool {
        matches!(self, Self::Handled | Self::Duplicate)
    }
}

#[derive(Debug, Clone)]
struct Vendor {
    client: reqwest::Client,
    replicas: Arc<[SocketAddr]>,
    secret: Arc<Secret>,
    seed: u64,
    backoff: Duration,
}

impl Vendor {
    async fn attempt(&self, replica: SocketAddr, body: &str) -> Answer {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let signed = verify::sign(&self.secret, now.as_secs(), body.as_bytes());
        let sent = self
            .client
            .post(format!("http://{replica}/hooks/kp"))
            .header("content-type", "application/json")
            .header(verify::TIMESTAMP_HEADER, signed.timestamp)
            .header(verify::SIGNATURE_HEADER, signed.signature)
            .body(body.to_owned())
            .send()
            .await;
        let Ok(response) = sent else {
            return Answer::Other;
        };
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        match status {
            200 if text.contains("\"duplicate\":true") => Answer::Duplicate,
            200..=299 => Answer::Handled,
            409 => Answer::InProgress,
            503 => Answer::Unavailable,
            500 => Answer::HandlerFailed,
            _ => Answer::Other,
        }
    }

    /// Delivers one copy of an event, retrying every non-2xx answer with
    /// exponential backoff, up to five attempts in all.
    async fn deliver(self, event: u32, copy: u64, body: Arc<str>) -> Vec<Answer> {
        let mut answers = Vec::new();
        for attempt in 0..ATTEMPTS {
            let draw = mix(self.seed ^ (u64::from(event) << 20) ^ (copy << 8) ^ u64::from(attempt));
            if attempt > 0 {
                let base = self.backoff * 2u32.pow(attempt - 1);
                let jitter = base.mul_f64((draw % 1000) as f64 / 2000.0);
                sleep(base + jitter).await;
            }
            let replica = self.replicas[(draw >> 16) as usize % self.replicas.len()];
            let answer = self.attempt(replica, &body).await;
            answers.push(answer);
            if answer.is_success() {
                break;
            }
        }
        answers
    }
}

fn event_body(event: u32) -> Arc<str> {
    testing::call_completed_body(NUMBER_ID, &format!("CA{event:06}")).into()
}

/// Sends every event, 1 to 5 copies each, a few milliseconds apart, and
/// returns the answers of each copy by event.
async fn send_all(vendor: Vendor, settings: &Settings) -> HashMap<u32, Vec<Vec<Answer>>> {
    let start = Instant::now();
    let mut copies = JoinSet::new();
    for event in 0..settings.events {
        let draw = mix(settings.seed ^ u64::from(event));
        let body = event_body(event);
        for copy in 0..=(draw % 5) {
            let offset = Duration::from_millis((draw >> (8 + copy * 8)) % 80);
            let at = start + settings.spacing * event + offset;
            let vendor = vendor.clone();
            let body = Arc::clone(&body);
            copies.spawn(async move {
                sleep_until(at).await;
                (event, vendor.deliver(event, copy, body).await)
            });
        }
    }
    let mut by_event: HashMap<u32, Vec<Vec<Answer>>> = HashMap::new();
    while let Some(joined) = copies.join_next().await {
        let (event, answers) = joined.expect("a delivery task never panics");
        by_event.entry(event).or_default().push(answers);
    }
    by_event
}

/// Runs the chaos: starts the replicas on `redis`, sends every event, kills
/// Redis and starts it again on the way, and counts.
pub(crate) async fn run(settings: &Settings, redis: RedisServer) -> (Report, RedisServer) {
    let world = Arc::new(World {
        draws: Draws {
            seed: settings.seed,
            next: AtomicU64::new(0),
        },
        slow: settings.lease.mul_f64(1.5),
        runs: AtomicU64::new(0),
        slow_runs: AtomicU64::new(0),
        effects: Mutex::new(HashMap::new()),
    });
    let mut replicas = Vec::new();
    for _ in 0..settings.replicas {
        replicas.push(spawn_replica(&redis.url(), settings, Arc::clone(&world)).await);
    }
    let vendor = Vendor {
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("a client"),
        replicas: replicas.into(),
        secret: Arc::new(Secret::new(SECRET).expect("a valid secret")),
        seed: settings.seed,
        backoff: settings.backoff,
    };

    let stall = Arc::new(AtomicU64::new(0));
    let stalls = tokio::spawn(watch_stalls(Arc::clone(&stall)));
    let crash = crash_and_restart(redis, settings.crash_at, settings.down_for);
    let (answers, (redis, down)) = tokio::join!(send_all(vendor, settings), crash);
    stalls.abort();
    let mut report = tally(settings, &world, &answers);
    report.redis_down_ms = millis(down);
    report.lease_ms = millis(settings.lease);
    report.stall_ms = stall.load(Ordering::Relaxed);
    (report, redis)
}

/// Sleeps a few milliseconds at a time and keeps the longest delay past the
/// deadline.
async fn watch_stalls(longest: Arc<AtomicU64>) {
    let tick = Duration::from_millis(10);
    loop {
        let asked = Instant::now();
        sleep(tick).await;
        let late = millis(asked.elapsed().saturating_sub(tick));
        longest.fetch_max(late, Ordering::Relaxed);
    }
}

fn millis(span: Duration) -> u64 {
    u64::try_from(span.as_millis()).unwrap_or(u64::MAX)
}

async fn crash_and_restart(
    mut redis: RedisServer,
    at: Duration,
    down: Duration,
) -> (RedisServer, Duration) {
    sleep(at).await;
    let killed = Instant::now();
    redis.stop();
    sleep(down).await;
    let redis = tokio::task::spawn_blocking(move || {
        redis.start_again().expect("redis-server starts again");
        redis
    })
    .await
    .expect("the restart does not panic");
    (redis, killed.elapsed())
}

fn tally(settings: &Settings, world: &World, answers: &HashMap<u32, Vec<Vec<Answer>>>) -> Report {
    let effects = world.effects.lock().expect("no panic while held").clone();
    let mut report = Report {
        events: u64::from(settings.events),
        handler_runs: world.runs.load(Ordering::Relaxed),
        slow_runs: world.slow_runs.load(Ordering::Relaxed),
        effects: effects.values().sum(),
        ..Report::default()
    };
    for (event, copies) in answers {
        for answer in copies.iter().flatten() {
            report.deliveries += 1;
            *match answer {
                Answer::Handled => continue,
                Answer::Duplicate => &mut report.duplicates_200,
                Answer::InProgress => &mut report.conflicts_409,
                Answer::Unavailable => &mut report.unavailable_503,
                Answer::HandlerFailed => &mut report.failed_500,
                Answer::Other => &mut report.other,
            } += 1;
        }
        report.copies += copies.len() as u64;
        report.copies_given_up += copies
            .iter()
            .filter(|c| !c.last().is_some_and(|a| a.is_success()))
            .count() as u64;

        match effects.get(&format!("CA{event:06}")).copied().unwrap_or(0) {
            0 if all_failed_in_handler(copies) => report.failed_by_handler += 1,
            0 => report.lost += 1,
            1 => {}
            _ => report.effects_twice += 1,
        }
    }
    report
}

fn all_failed_in_handler(copies: &[Vec<Answer>]) -> bool {
    copies
        .iter()
        .flatten()
        .all(|answer| *answer == Answer::HandlerFailed)
}
