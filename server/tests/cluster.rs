//! Cluster mode (docs/cluster.md): relay nodes joined through a real nats-server behave as
//! one relay. Each test names the rule or failure it checks.

mod support;

use compendium_server::NOT_FOUND_TEXT;
use support::cluster::TestCluster;
use support::{Client, TestServer, deliver};

/// Rules 3.3–3.5 across nodes: a ROUTE to an address on another node is delivered once,
/// byte for byte, in order; the sender hears nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_to_another_node_is_delivered_once_in_order_and_unchanged() {
    let cluster = TestCluster::start(2).await;
    let mut a = cluster.nodes[0].client().await;
    let mut b = cluster.nodes[1].client().await;
    let b_addr = b.init().await;
    let msgs: Vec<String> = (0..200)
        .map(|i| format!(r#"{{ "seq" : {i}, "pad":"{}" }}"#, "é".repeat(i % 7)))
        .collect();
    for msg in &msgs {
        a.route(&b_addr, msg).await;
    }
    for msg in &msgs {
        assert_eq!(b.recv_text().await, deliver(msg));
    }
    let (extra, _) = a.sync().await;
    assert!(extra.is_empty(), "the sender got {extra:?}");
    let (extra, _) = b.sync().await;
    assert!(extra.is_empty(), "more was delivered: {extra:?}");
}

/// Rules 3.2 and 3.6: a re-INIT on one node retires the old address for every node, with
/// the classic 404 text; an address no node holds gets the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reinit_retires_the_old_address_cluster_wide() {
    let cluster = TestCluster::start(2).await;
    let mut a = cluster.nodes[0].client().await;
    let mut b = cluster.nodes[1].client().await;
    let old = b.init().await;
    let new = b.init().await;
    assert_ne!(old, new);
    a.route(&old, "{}").await;
    assert_eq!(a.expect_err(404).await, NOT_FOUND_TEXT);
    a.route("0123456789abcdef0123456789abcdef", "{}").await;
    assert_eq!(a.expect_err(404).await, NOT_FOUND_TEXT);
    a.route(&new, r#"{"to":"new"}"#).await;
    assert_eq!(b.recv_text().await, deliver(r#"{"to":"new"}"#));
}

/// Rule 3.10 across nodes: when a connection ends, its address is released for every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_is_released_cluster_wide_when_its_connection_ends() {
    let cluster = TestCluster::start(2).await;
    let mut a = cluster.nodes[0].client().await;
    let mut b = cluster.nodes[1].client().await;
    let b_addr = b.init().await;
    b.close().await;
    support::within(
        "ended connections",
        cluster.nodes[1].handle.wait_for_ended_connections(1),
    )
    .await;
    a.route(&b_addr, "{}").await;
    assert_eq!(a.expect_err(404).await, NOT_FOUND_TEXT);
}

/// Rule 3.8 across nodes, and request order: a target on another node that does not read
/// gets its queue full; its senders get 503, and a later INIT's answer comes after every
/// earlier ROUTE's ERR, although those ERRs came back from the other node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_remote_queue_gives_503_and_replies_keep_request_order() {
    let cluster = TestCluster::start_with(2, |config| {
        config.max_queue = 4;
        config.max_queue_bytes = 64 << 10;
    })
    .await;
    let mut a = cluster.nodes[0].client().await;
    let b = Client::connect(&cluster.nodes[1].url).await;
    let mut b = b;
    let b_addr = b.init().await;
    // b reads nothing from here on.
    let pad = "x".repeat(16 << 10);
    for seq in 0..40 {
        a.route(&b_addr, &format!(r#"{{"seq":{seq},"pad":"{pad}"}}"#))
            .await;
    }
    let (replies, _) = a.sync().await;
    assert!(!replies.is_empty(), "some ROUTEs must be refused");
    for reply in &replies {
        assert_eq!(reply["type"], "ERR", "{reply}");
        assert_eq!(reply["errCode"], 503, "{reply}");
    }
    let refused = replies.len();
    // Every accepted one arrives, in order; no refused one does.
    let mut last = None;
    for _ in 0..40 - refused {
        let delivered = b.recv_json().await;
        let seq = delivered["msg"]["seq"].as_u64().expect("seq");
        assert!(last.is_none_or(|l| seq > l), "{seq} after {last:?}");
        last = Some(seq);
    }
    let (more, _) = b.sync().await;
    assert!(more.is_empty(), "{} refused, yet more arrived", refused);
}

/// Invalid input is answered by the node that received it, whatever the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_input_is_answered_locally() {
    let cluster = TestCluster::start(2).await;
    let mut a = cluster.nodes[0].client().await;
    a.send(r#"{"type":"ROUTE","EpheWssAddr":"nope","msg":{}}"#)
        .await;
    let err = a.expect_err(400).await;
    assert!(err.starts_with("/EpheWssAddr"), "{err}");
}

/// A single relay needs nothing else: the default config has no cluster.
#[tokio::test]
async fn the_default_relay_needs_no_cluster() {
    let server = TestServer::default().await;
    let mut a = server.client().await;
    let addr = a.init().await;
    a.route(&addr, "{}").await;
    assert_eq!(a.recv_text().await, deliver("{}"));
}

/// NATS goes away (docs/cluster.md, failure table): routes between connections of one node
/// go on; a ROUTE to another node gets 503 saying the cluster is unreachable (never a hang,
/// never a wrong 404); /healthz answers 503; after the grace period every client is closed
/// with 1001 and new handshakes get HTTP 503. When NATS returns, routing recovers with no
/// restart, and nothing refused during the outage is delivered late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_nats_goes_away_a_node_serves_locally_answers_503_and_recovers() {
    let mut cluster = TestCluster::start_with(2, |config| {
        config.metrics_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        if let Some(cluster) = &mut config.cluster {
            cluster.grace = std::time::Duration::from_millis(1500);
        }
    })
    .await;
    let (node1, node2) = (&cluster.nodes[0], &cluster.nodes[1]);
    assert_eq!(node1.health().await, (200, "ok\n".to_owned()));
    let mut a = node1.client().await;
    let mut local = node1.client().await;
    let mut b = node2.client().await;
    let local_addr = local.init().await;
    let b_addr = b.init().await;

    cluster.nats.kill().expect("kill nats-server");
    support::within(
        "node1's link down",
        node1.handle.wait_for_cluster_link(false),
    )
    .await;
    support::within(
        "node2's link down",
        node2.handle.wait_for_cluster_link(false),
    )
    .await;

    a.route(&local_addr, r#"{"local":true}"#).await;
    assert_eq!(local.recv_text().await, deliver(r#"{"local":true}"#));
    a.route(&b_addr, r#"{"during":"outage"}"#).await;
    let err = a.expect_err(503).await;
    assert!(err.starts_with("the relay cluster is unreachable"), "{err}");
    let (status, body) = node1.health().await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("cut off from the cluster"), "{body}");

    // After the grace period: closed with 1001, and no new clients until NATS is back.
    let close = a.recv_close().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1001);
    assert_eq!(
        close.reason.as_str(),
        "this relay node lost its cluster; reconnect"
    );
    let refused = tokio_tungstenite::connect_async(&node1.url).await;
    assert!(
        matches!(&refused, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 503),
        "{refused:?}"
    );

    cluster.nats.restart(0).expect("nats-server restarts");
    let (node1, node2) = (&cluster.nodes[0], &cluster.nodes[1]);
    support::within("node1's link up", node1.handle.wait_for_cluster_link(true)).await;
    support::within("node2's link up", node2.handle.wait_for_cluster_link(true)).await;
    assert_eq!(node1.health().await.0, 200);
    // node2 was cut off too, so b was closed; both sides start again, and route.
    let mut a = node1.client().await;
    let mut b = node2.client().await;
    let b_addr = b.init().await;
    a.route(&b_addr, r#"{"after":"outage"}"#).await;
    assert_eq!(b.recv_text().await, deliver(r#"{"after":"outage"}"#));
    let (late, _) = b.sync().await;
    assert!(late.is_empty(), "delivered late: {late:?}");
}

/// NATS is itself clustered (three servers joined by routes, each relay node given all
/// three URLs): killing the server a relay node is connected to makes it fail over to
/// another, and cross-node routing recovers with nothing duplicated. During the window a
/// ROUTE gets 503 (or is delivered once), never a wrong 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_fails_over_when_its_nats_server_dies_and_nothing_is_lost_or_duplicated() {
    let mut nats = compendium_harness::NatsCluster::start(3).expect("a NATS cluster");
    let urls = nats.urls();
    let mut nodes = Vec::new();
    for name in ["node1", "node2"] {
        nodes.push(TestServer::start(support::cluster::node_config(&urls, name)).await);
    }
    let mut a = nodes[0].client().await;
    let mut b = nodes[1].client().await;
    let b_addr = b.init().await;
    // node2's interest may not have reached node1's NATS server yet (a 503 meanwhile is
    // right): send until one ROUTE gets through, and its verdict is home before the kill
    // (a verdict lost with the NATS server would make it a 503 "may not have been
    // delivered", docs/cluster.md).
    support::within("a first ROUTE across the NATS cluster", async {
        loop {
            a.route(&b_addr, r#"{"seq":0}"#).await;
            let (replies, _) = a.sync().await;
            match replies.as_slice() {
                [] => break,
                [err] if err["errCode"] == 503 => {}
                other => panic!("the first ROUTE: expected nothing or 503, got {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(b.recv_text().await, deliver(r#"{"seq":0}"#));

    // Kill the NATS server node1 is connected to.
    let server = nodes[0].handle.cluster_nats_server().expect("cluster mode");
    let victim = nats
        .members
        .iter()
        .position(|m| {
            m.url().ends_with(&format!(
                ":{}",
                server.rsplit(':').next().unwrap_or_default()
            ))
        })
        .expect("node1's NATS server is one of the three");
    nats.members[victim].kill().expect("kill -9 a NATS server");
    let killed = std::time::Instant::now();
    // Lost, and perhaps already back: the failover can be that quick.
    support::within(
        "nodes[0] losing its link",
        nodes[0].handle.wait_for_cluster_link_losses(1),
    )
    .await;

    // Route through the failover: every ROUTE is delivered once or refused with 503.
    let mut delivered_expected = Vec::new();
    let mut up_from = 0;
    for seq in 1..=200u32 {
        let msg = format!(r#"{{"seq":{seq}}}"#);
        a.route(&b_addr, &msg).await;
        let (replies, _) = a.sync().await;
        match replies.as_slice() {
            [] => delivered_expected.push(msg),
            [err] if err["errCode"] == 503 => {}
            other => panic!("ROUTE {seq}: expected nothing or 503, got {other:?}"),
        }
        if seq == 100 {
            support::within(
                "nodes[0]'s link up",
                nodes[0].handle.wait_for_cluster_link(true),
            )
            .await;
            // The link is up, but the interest node1 subscribes again can take a moment
            // to spread across the three NATS servers (a 503 meanwhile is right): probe
            // until one ROUTE gets through, then every later one must.
            let probe = support::within("a ROUTE through the new link", async {
                for n in 0u32.. {
                    let probe = format!(r#"{{"probe":{n}}}"#);
                    a.route(&b_addr, &probe).await;
                    let (replies, _) = a.sync().await;
                    match replies.as_slice() {
                        [] => return probe,
                        [err] if err["errCode"] == 503 => {}
                        other => panic!("probe {n}: expected nothing or 503, got {other:?}"),
                    }
                }
                unreachable!("u32 probes")
            })
            .await;
            delivered_expected.push(probe);
            up_from = delivered_expected.len();
        }
    }
    eprintln!(
        "failover: {} of 200 ROUTEs delivered, the rest refused with 503, in {:?}",
        delivered_expected.len(),
        killed.elapsed()
    );
    assert!(
        nodes[0].handle.cluster_link_up() == Some(true),
        "node1 failed over"
    );
    let metrics = nodes[0].handle.metrics_text();
    assert!(
        metrics.contains("compendium_cluster_link_losses_total 1"),
        "one failover, one loss:\n{metrics}"
    );
    for msg in &delivered_expected {
        assert_eq!(b.recv_text().await, deliver(msg));
    }
    let (extra, _) = b.sync().await;
    assert!(extra.is_empty(), "duplicated or late: {extra:?}");
    assert_eq!(
        delivered_expected.len() - up_from,
        100,
        "once a ROUTE got through the new link, all of the last 100 were delivered"
    );
}

/// 2,000 clients in waves connect to the nodes in turn, INIT, send one message to a client
/// on another node and leave (half with a close handshake, half with a TCP reset): once
/// they are gone, no node holds any address or connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_cycles_across_three_nodes_leave_nothing_live_anywhere() {
    let cluster = TestCluster::start(3).await;
    let mut ended = 0u64;
    for wave in 0..10 {
        let mut clients = Vec::with_capacity(200);
        let mut addresses = Vec::with_capacity(200);
        for i in 0..200 {
            let mut client = cluster.nodes[i % 3].client().await;
            addresses.push(client.init().await);
            clients.push(client);
        }
        // Client i sends to client i+1, which is on the next node.
        for i in 0..200 {
            let to = addresses[(i + 1) % 200].clone();
            clients[i]
                .route(&to, &format!(r#"{{"wave":{wave},"from":{i}}}"#))
                .await;
        }
        for (i, client) in clients.iter_mut().enumerate() {
            let from = (i + 199) % 200;
            assert_eq!(
                client.recv_text().await,
                deliver(&format!(r#"{{"wave":{wave},"from":{from}}}"#))
            );
        }
        for (i, client) in clients.into_iter().enumerate() {
            if i % 2 == 0 {
                client.close().await;
            } else {
                client.vanish();
            }
        }
        ended += 200;
        for (n, node) in cluster.nodes.iter().enumerate() {
            // Each node had a third of every wave (200 = 67 + 67 + 66).
            let per_node = [67, 67, 66][n] * (wave + 1);
            support::within(
                "ended connections",
                node.handle.wait_for_ended_connections(per_node),
            )
            .await;
        }
    }
    assert_eq!(ended, 2000);
    for node in &cluster.nodes {
        assert_eq!(node.handle.live_addresses(), 0);
        assert_eq!(node.handle.open_connections(), 0);
    }
}

/// The cluster's metrics: the link, routes sent and received, verdicts by kind, their
/// latency, and this node's name and id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_metrics_count_the_link_routes_and_verdicts() {
    let cluster = TestCluster::start(2).await;
    let mut a = cluster.nodes[0].client().await;
    let mut b = cluster.nodes[1].client().await;
    let retired = b.init().await;
    let live = b.init().await; // retires the first: a ROUTE to it is a remote 404
    for _ in 0..3 {
        a.route(&retired, "{}").await;
    }
    a.route(&live, "{}").await;
    let _ = a.sync().await;
    let sent = cluster.nodes[0].handle.metrics_text();
    let received = cluster.nodes[1].handle.metrics_text();
    for expected in [
        "compendium_cluster_link_up 1",
        "compendium_cluster_link_losses_total 0",
        "compendium_cluster_routes_sent_total 4",
        r#"compendium_cluster_verdicts_total{verdict="delivered"} 1"#,
        r#"compendium_cluster_verdicts_total{verdict="not_found"} 3"#,
        r#"compendium_cluster_node{node_name="node1","#,
        "compendium_cluster_verdict_seconds_count 4",
    ] {
        assert!(sent.contains(expected), "no {expected:?} in:\n{sent}");
    }
    assert!(
        received.contains("compendium_cluster_routes_received_total 4"),
        "{received}"
    );
}

/// A forwarded ROUTE whose verdict never comes — the holder's node is stuck, or NATS
/// dropped the request or the answer for a slow consumer — is never lost silently: its
/// sender gets 503 after the cluster timeout, and the verdict is counted as timed out.
/// The stuck node here is a plain NATS subscriber that swallows what it gets, at an
/// address sealed by this test for it (the address format of docs/cluster.md, computed
/// independently of the relay's code).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verdict_that_never_comes_is_a_503_after_the_cluster_timeout() {
    use aes::cipher::{BlockEncrypt, KeyInit};
    use futures_util::StreamExt;

    let cluster = TestCluster::start_with(1, |config| {
        if let Some(cluster) = &mut config.cluster {
            cluster.timeout = std::time::Duration::from_millis(300);
        }
    })
    .await;
    let stuck_node: u32 = 0xfeed_face;
    let nats = async_nats::connect(cluster.nats.url())
        .await
        .expect("connect");
    let mut swallowed = nats
        .subscribe(format!("compendium.node.{stuck_node:08x}"))
        .await
        .expect("subscribe");
    nats.flush().await.expect("flush");
    // AES-128 of (node id ‖ 96 bits) under the cluster key.
    let key = u128::from_str_radix(support::cluster::KEY, 16).expect("hex");
    let cipher = aes::Aes128::new(&key.to_be_bytes().into());
    let mut block = [7u8; 16];
    block[..4].copy_from_slice(&stuck_node.to_be_bytes());
    let mut block = block.into();
    cipher.encrypt_block(&mut block);
    let address = format!("{:032x}", u128::from_be_bytes(block.into()));

    let mut a = cluster.nodes[0].client().await;
    a.route(&address, r#"{"to":"a stuck node"}"#).await;
    let got = swallowed
        .next()
        .await
        .expect("the request reached the stuck node");
    assert!(got.payload.ends_with(br#"{"to":"a stuck node"}"#));
    let err = a.expect_err(503).await;
    assert!(err.contains("did not answer within 300 ms"), "{err}");
    let metrics = cluster.nodes[0].handle.metrics_text();
    assert!(
        metrics.contains(r#"compendium_cluster_verdicts_total{verdict="timed_out"} 1"#),
        "{metrics}"
    );
}
