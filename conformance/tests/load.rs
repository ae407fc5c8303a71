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
        churn: 2,
        client: ClientBuilder::default(),
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
