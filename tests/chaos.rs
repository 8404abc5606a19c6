//! A smaller chaos run than `cargo run --example chaos --features redis`:
//! 100 events, three replicas, one Redis crash.

#![cfg(feature = "redis")]

#[path = "../examples/chaos/redis_server.rs"]
mod redis_server;
#[path = "../examples/chaos/sim.rs"]
mod sim;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_takes_effect_once_across_replicas_and_a_redis_crash() {
    let redis = redis_server::RedisServer::start()
        .unwrap_or_else(|err| panic!("cannot start redis-server: {err}"));
    sim::quiet_simulated_panics();
    let settings = sim::Settings::small();

    let (report, _redis) = sim::run(&settings, redis).await;
    eprintln!("{report}");

    assert_eq!(report.effects_twice, 0, "{report}");
    assert_eq!(report.lost, 0, "{report}");
    assert_eq!(report.events, 100, "{report}");
    assert!(report.copies >= report.events, "{report}");
    assert!(report.handler_runs >= report.effects, "{report}");
    assert!(report.unavailable_503 > 0, "the crash was seen: {report}");
}
