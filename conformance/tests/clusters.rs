//! The whole suite against clusters of our relay (docs/cluster.md): with each case's
//! connections spread over the nodes, every rule holds as if there were one relay.

mod support;

use compendium_server::Config;
use support::{our_cluster, suite, tight_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_suite_passes_on_two_nodes() {
    let (_nats, urls) = our_cluster(2, Config::ephemeral).await;
    let (_tight_nats, tight) = our_cluster(2, tight_config).await;
    suite::assert_passes_everything(&urls, &tight, suite::V2::Offered).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_suite_passes_on_three_nodes() {
    let (_nats, urls) = our_cluster(3, Config::ephemeral).await;
    let (_tight_nats, tight) = our_cluster(3, tight_config).await;
    suite::assert_passes_everything(&urls, &tight, suite::V2::Offered).await;
}
