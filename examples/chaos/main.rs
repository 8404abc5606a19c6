//! Proves the exactly-once effect across replicas under failures.
//!
//! ```text
//! cargo run --example chaos --features redis [-- EVENTS]
//! ```
//!
//! Starts its own `redis-server` (from PATH) on a free loopback port, three
//! receiver replicas that share it, each with its own layer and Redis
//! client, and a simulated vendor. The vendor sends 1000 distinct events
//! (or EVENTS) over 20 s, each delivered 1 to 5 times, many at once to
//! different replicas, retrying every non-2xx answer with exponential
//! backoff (scaled down from hours to seconds) up to 5 attempts. The handler
//! fails about 10 % of the time, panics about 2 %, and 1 % of its runs
//! outlast the lease. Redis is killed once mid-run and started again on the
//! same port.
//!
//! Prints the counts and exits non-zero when an event's effect ran twice or
//! an event was lost. The guarantee holds while Redis outages and stalls of
//! the process stay under a third of the lease (see `RedisStore`); the
//! report shows the longest stall, so that a failure on a starved machine
//! can be told from a bug.

#![allow(clippy::print_stdout)]

mod redis_server;
mod sim;

use std::process::ExitCode;
use std::time::Instant;

use redis_server::RedisServer;

#[tokio::main]
async fn main() -> ExitCode {
    let mut settings = sim::Settings::full();
    if let Some(events) = std::env::args().nth(1) {
        let Ok(events) = events.parse() else {
            eprintln!("usage: chaos [EVENTS]");
            return ExitCode::FAILURE;
        };
        settings.events = events;
    }
    let redis = match RedisServer::start() {
        Ok(redis) => redis,
        Err(err) => {
            eprintln!("chaos: {err}");
            return ExitCode::FAILURE;
        }
    };
    sim::quiet_simulated_panics();

    let started = Instant::now();
    let (report, _redis) = sim::run(&settings, redis).await;

    println!("{report}");
    println!("took {:.1} s", started.elapsed().as_secs_f64());
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        eprintln!("chaos: an effect ran twice or an event was lost");
        ExitCode::FAILURE
    }
}
