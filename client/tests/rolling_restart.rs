//! A rolling restart loses nothing (docs/cluster.md, "Drain"): three relay nodes on a real
//! nats-server behind a round-robin TCP front; pairs of resumable clients exchange
//! numbered messages both ways while each node in turn is shut down — it drains: its
//! resumable clients are told to resume elsewhere, and their sessions move — and a new
//! node is started on its port. The oracle: no pairing lost its address (no session lost,
//! every client resumed with its address), no message lost, none repeated, order kept per
//! sender and target.
//!
//! And the same with a node killed (`kill -9`: its runtime dropped with every task and
//! socket, no goodbye): the sessions it held are refused explicitly (their state died with
//! it), every other pairing is undisturbed, and nothing is repeated or reordered.
//!
//! Each node runs on a runtime of its own, so that killing it is dropping that runtime.
//! `COMPENDIUM_RESTART_ROUNDS` (default 1: each node once), `COMPENDIUM_RESTART_PAIRS`
//! (default 8) and `COMPENDIUM_RESTART_MESSAGES` (default 400 each way per pair) make it
//! longer: `cargo xtask rolling-restart` runs it so.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use compendium_client::{Client, Event};
use compendium_harness::Nats;
use compendium_server::{ClusterConfig, ClusterKey, Config, Handle, Server};
use serde_json::{Value, json};
use support::PATIENCE;
use support::front::Front;
use tokio::sync::{oneshot, watch};

/// Messages each client sends its peer (`COMPENDIUM_RESTART_MESSAGES`, default 400).
fn messages() -> u64 {
    env_or("COMPENDIUM_RESTART_MESSAGES", 400)
}
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

/// One node, on a runtime of its own.
struct Node {
    runtime: tokio::runtime::Runtime,
    stop: oneshot::Sender<()>,
    exited: oneshot::Receiver<()>,
    handle: Handle,
}

impl Node {
    /// Start node `name` on `listen`, joined through `nats`.
    async fn start(nats: &str, listen: SocketAddr, name: &str) -> (Self, SocketAddr) {
        let mut config = Config::ephemeral();
        config.listen = vec![listen];
        let key = ClusterKey::from_hex("00112233445566778899aabbccddeeff").expect("key");
        let mut cluster = ClusterConfig::new(vec![nats.to_owned()], key);
        cluster.node_name = name.to_owned();
        config.cluster = Some(cluster);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (stop, stopped) = oneshot::channel::<()>();
        let (bound, bound_rx) = oneshot::channel();
        let (exit, exited) = oneshot::channel();
        runtime.spawn(async move {
            let server = Server::bind(config).await.expect("the node starts");
            let _ = bound.send((server.local_addrs()[0], server.handle()));
            server
                .run(async move {
                    let _ = stopped.await;
                })
                .await;
            let _ = exit.send(());
        });
        let (addr, handle) = bound_rx.await.expect("the node binds");
        let node = Self {
            runtime,
            stop,
            exited,
            handle,
        };
        (node, addr)
    }

    /// Shut it down as SIGTERM does (the drain), and wait for it to exit.
    async fn drain(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(PATIENCE, self.exited)
            .await
            .expect("the node drains and exits")
            .expect("the node's task");
        Self::drop_runtime(self.runtime).await;
    }

    /// `kill -9`: every task and socket of the node dropped at once, no goodbye.
    async fn kill(self) {
        Self::drop_runtime(self.runtime).await;
    }

    /// Drop `runtime`'s tasks, and with them its sockets (its port is free again after).
    async fn drop_runtime(runtime: tokio::runtime::Runtime) {
        tokio::task::spawn_blocking(move || runtime.shutdown_timeout(PATIENCE))
            .await
            .expect("the runtime shuts down");
    }
}

/// Three nodes on `nats`, each on its own port; their addresses.
async fn three_nodes(nats: &Nats) -> (Vec<Option<Node>>, Vec<SocketAddr>) {
    let (mut nodes, mut addrs) = (Vec::new(), Vec::new());
    for i in 0..3 {
        let listen = "127.0.0.1:0".parse().expect("addr");
        let (node, addr) = Node::start(&nats.url(), listen, &format!("n{i}")).await;
        nodes.push(Some(node));
        addrs.push(addr);
    }
    (nodes, addrs)
}

/// What one client saw.
struct Seen {
    me: compendium_messages::Address,
    got: Vec<u64>,
    resumes: usize,
    /// How it ended early, if it did: its session lost, or an ERR for its ROUTEs (only
    /// when the test allows it).
    ended: Option<String>,
}

/// What a client's progress says once it has stopped early.
const GONE: u64 = u64::MAX;

/// Deliveries so far, all clients together; what the test waits on between faults.
type Progress = Arc<watch::Sender<u64>>;

/// Send [`messages`] numbered messages to `peer` (at most `WINDOW` ahead of what it has received,
/// as `peer_progress` says) while collecting the peer's. A lost session or an ERR fails
/// the test, unless `may_end`: then the client stops there and says why (and so does its
/// peer once it stops, its progress gone).
async fn run_client(
    mut client: Client,
    (me, peer): (compendium_messages::Address, compendium_messages::Address),
    mut peer_progress: watch::Receiver<u64>,
    progress: watch::Sender<u64>,
    delivered: Progress,
    may_end: bool,
) -> Seen {
    let mut seen = Seen {
        me,
        got: Vec::new(),
        resumes: 0,
        ended: None,
    };
    let sender = client.sender();
    let n = messages();
    let mut sent = 0u64;
    // The peer's task has ended (its progress is final).
    let mut peer_done = false;
    while seen.got.len() < n as usize || sent < n {
        let peer_got = *peer_progress.borrow();
        if peer_got == GONE {
            assert!(may_end, "{me}: its peer stopped");
            seen.ended = Some("its peer stopped".into());
            break;
        }
        let can_send = sent < n && peer_got + WINDOW > sent;
        let next = json!({ "n": sent + 1 });
        tokio::select! {
            result = sender.route(&peer, &next), if can_send => {
                if let Err(err) = result {
                    assert!(may_end, "{me}: route: {err}");
                    seen.ended = Some(format!("route: {err}"));
                    break;
                }
                sent += 1;
            }
            // (Once all is sent, only to hear that the peer stopped early.)
            changed = peer_progress.changed(), if !peer_done && !can_send && (sent < n || may_end) => {
                peer_done = changed.is_err();
            }
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
                        delivered.send_modify(|n| *n += 1);
                    }
                    Some(Event::Resumed { .. }) => seen.resumes += 1,
                    Some(ended @ (Event::SessionLost { .. } | Event::Error(_))) if may_end => {
                        seen.ended = Some(format!("{ended:?}"));
                        break;
                    }
                    other => panic!("{me} after {} messages from {peer}: {other:?}", seen.got.len()),
                }
            }
        }
    }
    if seen.ended.is_none() {
        tracing::debug!(%me, sent, got = seen.got.len(), "test client: closing");
        seen.ended = close(client, me, may_end).await;
    }
    tracing::debug!(%me, sent, got = seen.got.len(), ended = ?seen.ended, "test client: done");
    if seen.ended.is_some() {
        progress.send_replace(GONE);
    }
    seen
}

/// Close `client` (END); what went wrong, if anything: the session lost as it closed, or
/// an ERR for a ROUTE that could not be delivered after all (only when `may_end`).
async fn close(client: Client, me: compendium_messages::Address, may_end: bool) -> Option<String> {
    let (sender, mut events) = client.split();
    let mut ended = None;
    if let Err(err) = sender.close().await {
        // (Its session died with the node as it closed.)
        assert!(may_end, "{me}: close: {err}");
        ended = Some(format!("close: {err}"));
    }
    // What came before the close: an ERR here is a ROUTE refused after all.
    while let Ok(Some(event)) = tokio::time::timeout(PATIENCE, events.next_event()).await {
        match event {
            Event::Error(err) => {
                assert!(may_end, "{me}: {err} as it closed");
                ended = Some(format!("{err} as it closed"));
            }
            Event::Closed { .. } => break,
            _ => {}
        }
    }
    ended
}

/// `pairs` pairs of resumable clients through `front`, each client a task running
/// [`run_client`].
async fn start_pairs(
    front: &Front,
    pairs: usize,
    delivered: &Progress,
    may_end: bool,
) -> Vec<tokio::task::JoinHandle<Seen>> {
    let mut tasks = Vec::new();
    for _ in 0..pairs {
        let builder = Client::builder().resumable(true);
        let a = builder.connect(&front.url).await.expect("a");
        let b = builder.connect(&front.url).await.expect("b");
        let (a_addr, b_addr) = (a.init().await.expect("INIT"), b.init().await.expect("INIT"));
        let (a_progress, a_seen) = watch::channel(0u64);
        let (b_progress, b_seen) = watch::channel(0u64);
        for (client, addrs, peer_seen, progress) in [
            (a, (a_addr, b_addr), b_seen, a_progress),
            (b, (b_addr, a_addr), a_seen, b_progress),
        ] {
            tasks.push(tokio::spawn(run_client(
                client,
                addrs,
                peer_seen,
                progress,
                Arc::clone(delivered),
                may_end,
            )));
        }
    }
    tasks
}

/// Wait until `due` messages have been delivered in all.
async fn until_delivered(delivered: &Progress, due: u64) {
    let mut progress = delivered.subscribe();
    tokio::time::timeout(PATIENCE, progress.wait_for(|n| *n >= due))
        .await
        .expect("traffic flows between faults")
        .expect("the counter lives");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_three_nodes_loses_no_message_and_no_pairing() {
    support::trace_if_asked();
    let rounds = env_or("COMPENDIUM_RESTART_ROUNDS", 1);
    let pairs = env_or("COMPENDIUM_RESTART_PAIRS", 8) as usize;
    let nats = Nats::start().expect("nats-server");
    let (mut nodes, addrs) = three_nodes(&nats).await;
    let front = Front::start(addrs.clone()).await;
    let delivered: Progress = Arc::new(watch::channel(0).0);
    let tasks = start_pairs(&front, pairs, &delivered, false).await;
    let total = 2 * pairs as u64 * messages();
    let restarts = 3 * rounds;
    let began = std::time::Instant::now();
    // Sessions on the nodes as they were stopped: each had to move.
    let mut held = 0;
    for r in 0..restarts {
        // Restart the next node once the traffic has moved on since the last restart.
        until_delivered(&delivered, total * (r + 1) / (restarts + 2)).await;
        let i = (r % 3) as usize;
        if let Some(node) = nodes[i].take() {
            held += node.handle.live_addresses();
            node.drain().await;
        }
        let (fresh, _) = Node::start(&nats.url(), addrs[i], &format!("n{i}-{r}")).await;
        nodes[i] = Some(fresh);
    }
    let mut resumes = 0;
    for task in tasks {
        let seen = task.await.expect("a client");
        assert_eq!(
            seen.got,
            (1..=messages()).collect::<Vec<_>>(),
            "{}: every message once, in order",
            seen.me
        );
        resumes += seen.resumes;
    }
    // (A node started during the run holds only the sessions that moved to it since, so
    // a restart can find none; and a session can end between the count and the stop.)
    assert!(held > 0, "the restarts stopped nodes with sessions");
    assert!(resumes > 0, "{held} sessions held, none resumed");
    eprintln!(
        "rolling restart: {restarts} restarts, {pairs} pairs, {total} messages in {:.1} s, \
         {held} sessions on the stopped nodes, {resumes} resumes, 0 lost, 0 repeated, \
         0 out of order",
        began.elapsed().as_secs_f64()
    );
    for node in nodes.into_iter().flatten() {
        node.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_takes_only_its_own_sessions_and_says_so() {
    support::trace_if_asked();
    let pairs = 8;
    let nats = Nats::start().expect("nats-server");
    let (mut nodes, addrs) = three_nodes(&nats).await;
    let front = Front::start(addrs.clone()).await;
    let delivered: Progress = Arc::new(watch::channel(0).0);
    let tasks = start_pairs(&front, pairs, &delivered, true).await;
    until_delivered(&delivered, 2 * pairs as u64 * messages() / 3).await;
    let victim = nodes[1].take().expect("node 1");
    // Its sessions (every address on it is a session here) die with it.
    let held = victim.handle.live_addresses();
    victim.kill().await;
    let (fresh, _) = Node::start(&nats.url(), addrs[1], "n1-new").await;
    nodes[1] = Some(fresh);
    let (mut whole, mut ended) = (0, Vec::new());
    // Pairs with a client that ended early, and clients whose session was refused as they
    // closed (an END the node took, whose confirmation died with it, cannot be told from
    // a session lost; that session was gone before it was counted).
    let (mut disturbed, mut lost_closing) = (0, 0);
    for (i, task) in tasks.into_iter().enumerate() {
        let seen = task.await.expect("a client");
        // (Its pair's other client is the one just before or after it.)
        let pair_ended = ended.last().is_some_and(|(pair, _)| *pair == i / 2);
        if seen.ended.is_some() && !pair_ended {
            disturbed += 1;
        }
        assert!(
            seen.got.windows(2).all(|w| w[0] + 1 == w[1])
                && seen.got.first().is_none_or(|n| *n == 1),
            "{}: what arrived is in order, none repeated, none skipped: {:?}",
            seen.me,
            seen.got
        );
        match seen.ended {
            None => {
                assert_eq!(seen.got.len() as u64, messages(), "{}", seen.me);
                whole += 1;
            }
            Some(why) => {
                if why.starts_with("close:") {
                    assert_eq!(seen.got.len() as u64, messages(), "{}: {why}", seen.me);
                    lost_closing += 1;
                }
                ended.push((i / 2, format!("{}: {why}", seen.me)));
            }
        }
    }
    // A client ends early only when told (run_client fails on anything else), and only
    // because its session or its peer's died with the node: each pair disturbed had a
    // session there.
    assert!(
        disturbed <= held + lost_closing,
        "{held} sessions held, {disturbed} pairs disturbed: {ended:#?}"
    );
    assert!(
        held == 0 || !ended.is_empty(),
        "{held} sessions were held there"
    );
    assert!(whole + ended.len() == 2 * pairs);
    eprintln!(
        "kill -9: {held} sessions held by the killed node, {} clients told, {whole} undisturbed",
        ended.len()
    );
    for node in nodes.into_iter().flatten() {
        node.kill().await;
    }
}
