//! Resumable sessions in cluster mode (docs/cluster.md, "Resume on any node"): a RESUME
//! that reaches any node resumes the session as it would on the node that holds it — same
//! address, replay, de-duplication, explicit refusal — and ROUTEs find the session where it
//! went, also after its home node is gone. Real nodes, a real nats-server, real WebSocket.

mod support;

use compendium_server::NOT_FOUND_TEXT;
use serde_json::Value;
use support::cluster::TestCluster;
use support::{Client, resume, route_v2};

/// The DELIVERs a version 2 client receives, as (seq, msg), skipping ROUTEACKs.
async fn delivers(client: &mut Client, n: usize) -> Vec<(u64, Value)> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let frame = client.recv_json_skipping_acks().await;
        assert_eq!(frame["type"], "DELIVER", "{frame}");
        out.push((frame["seq"].as_u64().expect("seq"), frame["msg"].clone()));
    }
    out
}

async fn resumed(client: &mut Client) -> (String, u64) {
    let reply = client.recv_json_skipping_acks().await;
    assert_eq!(reply["type"], "RESUMED", "{reply}");
    (
        reply["secret"].as_str().expect("secret").to_owned(),
        reply["seq"].as_u64().expect("seq"),
    )
}

/// Rules 6.3–6.5 across nodes: the session drawn on node 1 resumes on node 2 with its
/// address; what it had not acknowledged is replayed under the same numbers; ROUTEs it
/// had sent are acted on once; the connection left on node 1 is closed 4001; ROUTEs from
/// any node reach it on node 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_resumes_on_another_node_with_its_address_replay_and_numbers() {
    let cluster = TestCluster::start(3).await;
    let mut phone = Client::connect_v2(&cluster.nodes[0].url).await;
    let (address, secret) = phone.init_v2().await;
    let mut pc = Client::connect_v2(&cluster.nodes[2].url).await;
    let (pc_address, _) = pc.init_v2().await;
    for i in 1..=3 {
        pc.send(&route_v2(&address, i, &format!(r#"{{"n":{i}}}"#)))
            .await;
    }
    let first = delivers(&mut phone, 3).await;
    assert_eq!(first.iter().map(|d| d.0).collect::<Vec<_>>(), [1, 2, 3]);
    phone.send(r#"{"type":"ACK","seq":1}"#).await;
    // The phone's ROUTEs 1 and 2 reach the PC before its link "breaks".
    for i in 1..=2 {
        phone
            .send(&route_v2(&pc_address, i, &format!(r#"{{"p":{i}}}"#)))
            .await;
    }
    assert_eq!(delivers(&mut pc, 2).await.len(), 2);

    let mut moved = Client::connect_v2(&cluster.nodes[1].url).await;
    moved.send(&resume(&address, &secret, 1)).await;
    let (new_secret, routes_accepted) = resumed(&mut moved).await;
    assert_ne!(new_secret, secret, "the secret rotates");
    assert_eq!(routes_accepted, 2);
    let replay = delivers(&mut moved, 2).await;
    assert_eq!(replay, first[1..].to_vec(), "2 and 3 again, same numbers");
    assert_eq!(support::closed_with(&mut phone).await, Some(4001));

    // Resent ROUTE 2 is dropped; 3 is new.
    moved.send(&route_v2(&pc_address, 2, r#"{"p":2}"#)).await;
    moved.send(&route_v2(&pc_address, 3, r#"{"p":3}"#)).await;
    assert_eq!(delivers(&mut pc, 1).await[0].1, serde_json::json!({"p":3}));

    // From every node, including its home.
    for (i, node) in cluster.nodes.iter().enumerate() {
        let mut sender = node.client().await;
        sender.route(&address, &format!(r#"{{"from":{i}}}"#)).await;
        let got = delivers(&mut moved, 1).await;
        assert_eq!(got[0].1, serde_json::json!({"from": i}));
        let (extra, _) = sender.sync().await;
        assert!(extra.is_empty(), "the sender got {extra:?}");
    }
    pc.send(&route_v2(&address, 4, r#"{"n":4}"#)).await;
    assert_eq!(delivers(&mut moved, 1).await[0].0, 7);
}

/// A session moves twice — away from its home, then between two other nodes — and after
/// END its address is 404 on every node (rule 3.10 across nodes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_moves_twice_and_its_address_404s_everywhere_after_end() {
    let cluster = TestCluster::start(3).await;
    let mut first = Client::connect_v2(&cluster.nodes[0].url).await;
    let (address, secret) = first.init_v2().await;
    let mut sender = cluster.nodes[0].client().await;
    sender.route(&address, r#"{"n":1}"#).await;
    assert_eq!(delivers(&mut first, 1).await[0].0, 1);

    let mut second = Client::connect_v2(&cluster.nodes[1].url).await;
    second.send(&resume(&address, &secret, 0)).await;
    let (secret, _) = resumed(&mut second).await;
    assert_eq!(delivers(&mut second, 1).await[0].0, 1, "replayed");
    sender.route(&address, r#"{"n":2}"#).await;
    assert_eq!(delivers(&mut second, 1).await[0].0, 2);

    let mut third = Client::connect_v2(&cluster.nodes[2].url).await;
    third.send(&resume(&address, &secret, 2)).await;
    let (_, _) = resumed(&mut third).await;
    assert_eq!(support::closed_with(&mut second).await, Some(4001));
    sender.route(&address, r#"{"n":3}"#).await;
    assert_eq!(
        delivers(&mut third, 1).await,
        vec![(3, serde_json::json!({"n":3}))]
    );

    third.send(r#"{"type":"END"}"#).await;
    assert_eq!(support::closed_with(&mut third).await, Some(1000));
    for node in &cluster.nodes {
        let mut probe = node.client().await;
        support::within("404 for an ended session", async {
            loop {
                probe.route(&address, "{}").await;
                let reply = probe.recv_json().await;
                if reply["errCode"] == 404 {
                    assert_eq!(reply["errMsg"], NOT_FOUND_TEXT);
                    break;
                }
                // Not yet: a sender that reached the session before it ended.
                assert_eq!(reply["type"], "ERR", "{reply}");
            }
        })
        .await;
    }
}

/// Rule 6.3 and 6.9 on any node: a wrong secret gets the one 410, from a node that does
/// not hold the session as from one that does; the session is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_is_refused_on_any_node_and_changes_nothing() {
    let cluster = TestCluster::start(2).await;
    let mut phone = Client::connect_v2(&cluster.nodes[0].url).await;
    let (address, secret) = phone.init_v2().await;
    let wrong = "ab".repeat(32);
    for node in &cluster.nodes {
        let mut thief = Client::connect_v2(&node.url).await;
        thief.send(&resume(&address, &wrong, 0)).await;
        let reply = thief.recv_json().await;
        assert_eq!(reply["errCode"], 410, "{reply}");
    }
    let never = "0123456789abcdef0123456789abcdef";
    let mut stranger = Client::connect_v2(&cluster.nodes[1].url).await;
    stranger.send(&resume(never, &secret, 0)).await;
    assert_eq!(stranger.recv_json().await["errCode"], 410);
    // Still the phone's.
    let mut sender = cluster.nodes[1].client().await;
    sender.route(&address, r#"{"still":"here"}"#).await;
    assert_eq!(
        delivers(&mut phone, 1).await[0].1,
        serde_json::json!({"still":"here"})
    );
}

/// The session outlives its home: drawn on node 1, resumed on node 2, node 1 shut down;
/// ROUTEs to it still arrive (their senders find the session's subject when nobody answers
/// for node 1), and it resumes again on node 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_outlives_the_node_that_drew_its_address() {
    let mut cluster = TestCluster::start(3).await;
    let mut phone = Client::connect_v2(&cluster.nodes[0].url).await;
    let (address, secret) = phone.init_v2().await;
    let mut moved = Client::connect_v2(&cluster.nodes[1].url).await;
    moved.send(&resume(&address, &secret, 0)).await;
    let (secret, _) = resumed(&mut moved).await;
    cluster.nodes.remove(0).stop().await;
    // From a node that does not hold it: nobody answers for its home any more.
    let mut sender = cluster.nodes[1].client().await;
    for n in 1..=20 {
        sender.route(&address, &format!(r#"{{"n":{n}}}"#)).await;
    }
    let got = delivers(&mut moved, 20).await;
    assert_eq!(
        got.iter()
            .map(|d| d.1["n"].as_u64().unwrap_or(0))
            .collect::<Vec<_>>(),
        (1..=20).collect::<Vec<_>>(),
        "all, once, in order"
    );
    let (extra, _) = sender.sync().await;
    assert!(extra.is_empty(), "the sender got {extra:?}");
    moved.send(r#"{"type":"ACK","seq":20}"#).await;

    let mut again = Client::connect_v2(&cluster.nodes[1].url).await;
    again.send(&resume(&address, &secret, 20)).await;
    resumed(&mut again).await;
    sender.route(&address, r#"{"n":21}"#).await;
    assert_eq!(delivers(&mut again, 1).await[0].0, 21);
}

/// Exactly once, in order, while the session moves: two senders — one on the session's
/// home, one on another node — stream ROUTEs without pause while the receiver resumes,
/// again and again, on the next node: away from its home, between two other nodes (where
/// both subscribe to the session's subject for a moment), onto a sender's node, and back
/// home. Every message arrives once, in order per sender, and no sender gets an ERR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_routes_arrives_exactly_once_in_order_while_the_session_moves() {
    const N: u64 = 2000;
    let cluster = TestCluster::start(3).await;
    let urls = cluster.urls();
    let mut receiver = Client::connect_v2(&urls[0]).await;
    let (address, mut secret) = receiver.init_v2().await;
    // Each sender stays at most a window ahead of the receiver, well within the session's
    // bound (a sender further ahead would get 503s, as it should).
    let mut progress = Vec::new();
    let mut sending = Vec::new();
    for (s, url) in [&urls[0], &urls[2]].into_iter().enumerate() {
        let (tx, mut seen) = tokio::sync::watch::channel(0u64);
        progress.push(tx);
        let (url, target) = (url.clone(), address.clone());
        sending.push(tokio::spawn(async move {
            let mut sender = Client::connect(&url).await;
            for n in 1..=N {
                let _ = seen.wait_for(|got| got + 64 >= n).await;
                sender
                    .route(&target, &format!(r#"{{"s":{s},"n":{n}}}"#))
                    .await;
            }
            sender.sync().await.0
        }));
    }
    let mut next = [1u64, 1];
    let mut last_seq = 0u64;
    let mut moves = 0;
    let route = [1usize, 2, 0, 2, 1, 0];
    let mut violation = None;
    while next.iter().any(|n| *n <= N) {
        let quiet = std::time::Duration::from_secs(10);
        let Ok(frame) = tokio::time::timeout(quiet, receiver.recv_json_skipping_acks()).await
        else {
            violation.get_or_insert(format!("nothing more after {next:?}"));
            break;
        };
        assert_eq!(frame["type"], "DELIVER", "{frame}");
        let seq = frame["seq"].as_u64().expect("seq");
        if seq <= last_seq {
            continue; // replayed after a resume: already had it
        }
        assert_eq!(seq, last_seq + 1, "the stream has no gaps");
        last_seq = seq;
        let s = frame["msg"]["s"].as_u64().expect("s") as usize;
        let n = frame["msg"]["n"].as_u64().expect("n");
        if n != next[s] && violation.is_none() {
            violation = Some(format!(
                "sender {s}: got {n} where {} was due (seq {seq}, after {moves} moves)",
                next[s]
            ));
        }
        next[s] = next[s].max(n);
        progress[s].send_replace(next[s]);
        next[s] += 1;
        if seq % 16 == 0 {
            receiver
                .send(&format!(r#"{{"type":"ACK","seq":{last_seq}}}"#))
                .await;
        }
        if seq % 100 == 0 {
            // Resume on the next node without closing: a takeover from afar.
            let url = &urls[route[moves % route.len()]];
            moves += 1;
            let mut moved = Client::connect_v2(url).await;
            moved.send(&resume(&address, &secret, last_seq)).await;
            let (fresh, _) = resumed(&mut moved).await;
            secret = fresh;
            receiver = moved;
        }
    }
    let mut errs = Vec::new();
    for sender in sending {
        if let Ok(Ok(got)) = tokio::time::timeout(std::time::Duration::from_secs(5), sender).await {
            errs.extend(got);
        }
    }
    assert!(
        violation.is_none() && errs.is_empty(),
        "{violation:?}; the senders got {errs:?}"
    );
    assert!(moves >= 30, "{moves} moves");
}
