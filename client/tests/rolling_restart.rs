//! A rolling restart loses nothing (docs/cluster.md, "Drain"): three relay nodes on a real
//! nats-server behind a round-robin TCP front; pairs of resumable clients exchange
//! numbered messages both ways while each node in turn is shut down — it drains: its
//! resumable clients are told to resume elsewhere, and their sessions move — and a new
//! node is started on its port. The oracle: no pairing lost its address (no session lost,
//! every client resumed with its address), no message lost, none repeated, order kept per
//! sender and target.
//!
//! `COMPENDIUM_RESTART_ROUNDS` (default 1: each node once) and `COMPENDIUM_RESTART_PAIRS`
//! (default 8) make it longer: `cargo xtask rolling-restart` runs it so.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use compendium_client::{Client, Event};
use compendium_harness::Nats;
use compendium_server::{ClusterConfig, ClusterKey, Config, Server};
use serde_json::{Value, json};
use support::PATIENCE;
use support::front::Front;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// Messages each client sends its peer.
const N: u64 = 400;
/// How far a sender may run ahead of what its peer has received (well within a session's
/// bound of 256 unacknowledged messages: a sender further ahead would get 503s, as it
/// should).
const WINDOW: u64 = 32;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One in-process node; `stop` begins its shutdown (the drain), `done` ends when it exited.
struct Node {
    stop: Option<oneshot::Sender<()>>,
    done: JoinHandle<()>,
}

async fn start_node(nats: &str, listen: SocketAddr, name: &str) -> (Node, SocketAddr) {
    let mut config = Config::ephemeral();
    config.listen = vec![listen];
    let key = ClusterKey::from_hex("00112233445566778899aabbccddeeff").expect("key");
    let mut cluster = ClusterConfig::new(vec![nats.to_owned()], key);
    cluster.node_name = name.to_owned();
    config.cluster = Some(cluster);
    let server = Server::bind(config).await.expect("the node starts");
    let addr = server.local_addrs()[0];
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    (
        Node {
            stop: Some(stop),
            done,
        },
        addr,
    )
}

/// What one client saw.
struct Seen {
    got: Vec<u64>,
    resumes: usize,
}

/// Send `N` numbered messages to `peer` (at most `WINDOW` ahead of what it has received,
/// as `peer_progress` says) while collecting the peer's; fails on any lost session or ERR.
async fn run_client(
    mut client: Client,
    (me, peer): (compendium_messages::Address, compendium_messages::Address),
    mut peer_progress: watch::Receiver<u64>,
    progress: watch::Sender<u64>,
    delivered: Arc<AtomicU64>,
) -> Seen {
    let mut seen = Seen {
        got: Vec::new(),
        resumes: 0,
    };
    let sender = client.sender();
    let mut sent = 0u64;
    while seen.got.len() < N as usize || sent < N {
        let can_send = sent < N && *peer_progress.borrow() + WINDOW > sent;
        let next = json!({ "n": sent + 1 });
        tokio::select! {
            result = sender.route(&peer, &next), if can_send => {
                result.expect("route");
                sent += 1;
            }
            _ = peer_progress.changed(), if sent < N && !can_send => {}
            event = tokio::time::timeout(PATIENCE, client.next_event()) => {
                match event.unwrap_or_else(|_| panic!(
                    "{me} stalled: sent {sent} to {peer}, got {} from it (last {:?})",
                    seen.got.len(),
                    seen.got.last()
                )) {
                    Some(Event::Deliver(msg)) => {
                        let value: Value = msg.decode().expect("JSON");
                        seen.got.push(value["n"].as_u64().expect("n"));
                        progress.send_replace(seen.got.len() as u64);
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(Event::Resumed { .. }) => seen.resumes += 1,
                    other => panic!("{me} after {} messages from {peer}: {other:?}", seen.got.len()),
                }
            }
        }
    }
    client.close().await.expect("close");
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fails about one run in five: a window of ROUTEs (up to WINDOW) between two sessions \
            that were both on the draining node is neither delivered nor refused; the open \
            work of #23 (see its note), run with --ignored"]
async fn a_rolling_restart_of_three_nodes_loses_no_message_and_no_pairing() {
    support::trace_if_asked();
    let rounds = env_or("COMPENDIUM_RESTART_ROUNDS", 1);
    let pairs = env_or("COMPENDIUM_RESTART_PAIRS", 8) as usize;
    let nats = Nats::start().expect("nats-server");
    let mut nodes = Vec::new();
    let mut addrs = Vec::new();
    for i in 0..3 {
        let (node, addr) = start_node(
            &nats.url(),
            "127.0.0.1:0".parse().expect("addr"),
            &format!("n{i}"),
        )
        .await;
        nodes.push(node);
        addrs.push(addr);
    }
    let front = Front::start(addrs.clone()).await;
    let delivered = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..pairs {
        let builder = Client::builder().resumable(true);
        let a = builder.connect(&front.url).await.expect("a");
        let b = builder.connect(&front.url).await.expect("b");
        let (a_addr, b_addr) = (a.init().await.expect("INIT"), b.init().await.expect("INIT"));
        let (a_progress, a_seen) = watch::channel(0u64);
        let (b_progress, b_seen) = watch::channel(0u64);
        tasks.push(tokio::spawn(run_client(
            a,
            (a_addr, b_addr),
            b_seen,
            a_progress,
            Arc::clone(&delivered),
        )));
        tasks.push(tokio::spawn(run_client(
            b,
            (b_addr, a_addr),
            a_seen,
            b_progress,
            Arc::clone(&delivered),
        )));
    }
    let total = 2 * pairs as u64 * N;
    let restarts = 3 * rounds;
    for r in 0..restarts {
        // Restart the next node once the traffic has moved on since the last restart.
        let due = total * (r + 1) / (restarts + 2);
        tokio::time::timeout(PATIENCE, async {
            while delivered.load(Ordering::Relaxed) < due {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("traffic flows between restarts");
        let i = (r % 3) as usize;
        let mut node = std::mem::replace(
            &mut nodes[i],
            Node {
                stop: None,
                done: tokio::spawn(async {}),
            },
        );
        if let Some(stop) = node.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(PATIENCE, node.done)
            .await
            .expect("the node drains and exits")
            .expect("the node's task");
        let (fresh, _) = start_node(&nats.url(), addrs[i], &format!("n{i}-{r}")).await;
        nodes[i] = fresh;
    }
    let mut resumes = 0;
    for task in tasks {
        let seen = task.await.expect("a client");
        assert_eq!(
            seen.got,
            (1..=N).collect::<Vec<_>>(),
            "every message once, in order"
        );
        resumes += seen.resumes;
    }
    // Each restart moved the sessions of the node it stopped: at least one per restart.
    assert!(
        resumes as u64 >= restarts,
        "{resumes} resumes over {restarts} restarts"
    );
    eprintln!(
        "rolling restart: {restarts} restarts, {pairs} pairs, {total} messages, {resumes} resumes, 0 lost, 0 repeated"
    );
}
