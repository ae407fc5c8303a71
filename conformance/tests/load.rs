//! The load generator judges what it measures: a correct relay gives a VALID run, a relay
//! that changes messages an INVALID one — for the pairs and for the churn clients.

mod support;

use std::time::Duration;

use compendium_client::ClientBuilder;
use compendium_conformance::load::{self, LoadOptions, Mode};
use compendium_server::Config;
use support::toy_relay::{self, Fault};

fn options(url: String) -> LoadOptions {
    LoadOptions {
        urls: vec![url],
        pairs: 2,
        size: 256,
        duration: Duration::from_millis(300),
        mode: Mode::Pingpong,
        window: 1,
        rate: 0.0,
        churn: 2,
        client: ClientBuilder::default(),
        resumable: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairs_and_churn_against_our_relay_are_valid() {
    let url = support::our_relay(Config::ephemeral()).await;
    let report = load::run(&options(url)).await.expect("run");
    assert!(report.valid, "{:?}", report.problems);
    assert!(report.messages > 0);
    assert!(report.churn_cycles > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_adds_a_member_to_deliver_makes_the_run_invalid() {
    let url = toy_relay::start(Fault::ExtraDeliverMember).await;
    let pairs_only = LoadOptions {
        churn: 0,
        ..options(url.clone())
    };
    let report = load::run(&pairs_only).await.expect("run");
    assert!(!report.valid);
    assert!(
        report.problems[0].contains("arrived changed"),
        "{:?}",
        report.problems
    );

    let churn_only = LoadOptions {
        pairs: 0,
        ..options(url)
    };
    let report = load::run(&churn_only).await.expect("run");
    assert!(!report.valid);
    assert!(
        report.problems[0].starts_with("churn: unexpected"),
        "{:?}",
        report.problems
    );
}

/// Cluster mode: every pair's two ends on different nodes, flooding 64 messages in flight
/// per direction: each message arrives once, in order, unchanged, across the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_across_two_nodes_arrives_once_in_order_and_unchanged() {
    let (_nats, urls) = support::our_cluster(2, Config::ephemeral).await;
    let options = LoadOptions {
        urls,
        pairs: 4,
        mode: Mode::Flood,
        window: 64,
        duration: Duration::from_millis(500),
        ..options(String::new())
    };
    let report = load::run(&options).await.expect("run");
    assert!(report.valid, "{:?}", report.problems);
    assert!(report.messages > 1000, "{} messages", report.messages);
    assert!(report.churn_cycles > 0);
}

/// Open loop at a rate any relay manages: every scheduled message is sent (the 0.1 s of
/// grace covers a generator starved of CPU at the very end) and arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_loop_our_relay_keeps_up_with_is_valid() {
    let url = support::our_relay(Config::ephemeral()).await;
    let options = LoadOptions {
        mode: Mode::Open,
        rate: 1_000.0,
        duration: Duration::from_millis(500),
        churn: 0,
        ..options(url)
    };
    let report = load::run(&options).await.expect("run");
    assert!(report.valid, "{:?}", report.problems);
    let schedule = report.schedule.expect("an open loop reports its schedule");
    assert!(
        schedule.due > 0 && schedule.sent >= schedule.due,
        "{schedule:?}"
    );
    assert_eq!(report.messages, schedule.sent);
    assert_eq!(report.window, 0);
}

/// A generator that cannot keep its timetable (here: 10 million msgs/s into a relay that
/// pushes back instead of refusing) did not apply the load asked for: the run is INVALID
/// and says why first, although nothing was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_loop_that_falls_behind_its_schedule_is_invalid() {
    let url = toy_relay::start(Fault::BlocksTheSender).await;
    let options = LoadOptions {
        mode: Mode::Open,
        rate: 10_000_000.0,
        pairs: 1,
        duration: Duration::from_millis(300),
        churn: 0,
        ..options(url)
    };
    let report = load::run(&options).await.expect("run");
    assert!(!report.valid);
    assert!(
        report.problems[0].starts_with("the generator fell behind its schedule: it sent "),
        "{:?}",
        report.problems
    );
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    let schedule = report.schedule.expect("schedule");
    assert!(schedule.kept() < 0.99, "{schedule:?}");
    assert_eq!(report.messages, schedule.sent);
}

#[tokio::test]
async fn an_open_loop_without_a_rate_is_refused() {
    let options = LoadOptions {
        mode: Mode::Open,
        rate: 0.0,
        ..options("ws://127.0.0.1:9".into())
    };
    let err = load::run(&options).await.expect_err("no rate");
    assert_eq!(err, "an open loop needs a rate above 0 msgs/s, not 0");
}

/// Version 2 load: numbered ROUTEs, numbered DELIVERs acknowledged in batches — valid
/// against our relay, for pingpong and for a flood deeper than an ACK batch; a relay that
/// does not select `compendium.v2` is refused up front, not measured as version 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumable_load_is_valid_against_our_relay_and_refused_by_a_v1_relay() {
    let url = support::our_relay(Config::ephemeral()).await;
    for (mode, window) in [(Mode::Pingpong, 1), (Mode::Flood, 64)] {
        let options = LoadOptions {
            resumable: true,
            churn: 0,
            mode,
            window,
            ..options(url.clone())
        };
        let report = load::run(&options).await.expect("run");
        assert!(report.valid, "{mode:?}: {:?}", report.problems);
        assert!(report.messages > 64, "{mode:?}: {}", report.messages);
    }
    let mut v1_only = Config::ephemeral();
    v1_only.sessions.grace = Duration::ZERO;
    let url = support::our_relay(v1_only).await;
    let options = LoadOptions {
        resumable: true,
        ..options(url)
    };
    let Err(err) = load::run(&options).await else {
        panic!("a relay without version 2 was measured");
    };
    assert!(err.contains("compendium.v2"), "{err}");

    let url = support::our_relay(Config::ephemeral()).await;
    let report = load::resume_latency(&url, &ClientBuilder::default(), 256, 256, 2)
        .await
        .expect("resume rounds");
    assert_eq!((report.buffered, report.rounds), (256, 2));
    assert!(report.resume_us.p50 > 0);
}
