//! Cluster mode with every node a `compendium-server` process, for what only a process can
//! show: `kill -9` of a node, SIGTERM of one node, and startup errors (docs/cluster.md).

mod support;

use std::time::{Duration, Instant};

use compendium_harness::{Nats, PATIENCE, Relay};
use compendium_server::NOT_FOUND_TEXT;
use support::cluster::KEY;
use support::process::bin;
use support::{Client, deliver};

/// A node process joined through `nats`.
fn node(nats: &Nats, name: &str) -> Relay {
    node_with(nats, name, &[])
}

/// A node process joined through `nats`, with more `args`.
fn node_with(nats: &Nats, name: &str, args: &[&str]) -> Relay {
    let mut command = Relay::command(bin());
    command
        .args(["--cluster", &nats.url(), "--node-name", name])
        .args(args)
        .args(["--cluster-ping-interval", "0.5"])
        .env("COMPENDIUM_CLUSTER_KEY", KEY);
    Relay::start(command).expect("the node starts")
}

/// The relay binary with `args` and the test key; its exit status and stderr.
fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    let output = support::process::server()
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env("COMPENDIUM_CLUSTER_KEY", KEY)
        .output()
        .expect("run");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A node dies (`kill -9`): the other nodes answer ROUTEs to its addresses with 404 within
/// a second. NATS drops a dead connection's subscriptions as soon as it reads the EOF, so a
/// ROUTE to it is answered "no responders"; until the node's heartbeats have been missing
/// for the peer timeout (0.8 s) it might be failing over, so the sender gets 503 (never a
/// DELIVER, never a wrong 404 before then). A ROUTE that reached NATS in the instant before
/// it noticed the death goes to the dead connection and gets the timeout's 503 instead
/// (docs/cluster.md): so each probe has its own connection, as different clients would, and
/// one such ROUTE holds no other answer back.
#[test]
fn kill_9_of_a_node_makes_its_addresses_404_elsewhere_within_a_second() {
    let nats = Nats::start().expect("nats-server");
    let node1 = node(&nats, "node1");
    let mut node2 = node(&nats, "node2");
    let rt = runtime();
    let b_addr = rt.block_on(async {
        let mut a = Client::connect(node1.url()).await;
        let mut b = Client::connect(node2.url()).await;
        let b_addr = b.init().await;
        a.route(&b_addr, r#"{"before":"kill"}"#).await;
        assert_eq!(b.recv_text().await, deliver(r#"{"before":"kill"}"#));
        std::mem::forget(b); // its process is about to die under it
        b_addr
    });
    node2.process.kill().expect("kill -9");
    let killed = Instant::now();
    let probes = rt.block_on(probe_until_404(node1.url(), &b_addr, killed));
    let first_404 = probes
        .iter()
        .filter(|probe| probe.answer["errCode"] == 404)
        .map(|probe| probe.answered)
        .min()
        .expect("a 404");
    for probe in &probes {
        let text = probe.answer["errMsg"].as_str().unwrap_or_default();
        match probe.answer["errCode"].as_u64() {
            Some(404) => assert_eq!(text, NOT_FOUND_TEXT),
            // Sent before the first 404: NATS had not yet noticed the death, or the node
            // might still have been failing over.
            Some(503) if probe.sent < first_404 => assert!(
                text.contains("not answering right now")
                    || text.contains("did not answer within")
                    || text.contains("stopped answering"),
                "{probe:?}"
            ),
            _ => panic!("{probe:?}"),
        }
    }
    assert!(
        first_404 < Duration::from_secs(1),
        "404 after {first_404:?}: {probes:?}"
    );
}

/// A ROUTE sent after a kill: when, relative to the kill, and what came back.
#[derive(Debug)]
struct Probe {
    sent: Duration,
    answered: Duration,
    answer: serde_json::Value,
}

/// Every 50 ms, a new connection to `url` sends a ROUTE to `to`, until one is answered
/// 404; then the answers of all of them (some may wait for the cluster timeout).
async fn probe_until_404(url: &str, to: &str, killed: Instant) -> Vec<Probe> {
    let (answers_tx, mut answers) = tokio::sync::mpsc::unbounded_channel();
    let mut probes = Vec::new();
    let mut sent = 0;
    let mut every = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            _ = every.tick() => {
                assert!(killed.elapsed() < PATIENCE, "no 404 yet: {probes:?}");
                let (url, to, tx) = (url.to_owned(), to.to_owned(), answers_tx.clone());
                tokio::spawn(async move {
                    let mut client = Client::connect(&url).await;
                    let sent = killed.elapsed();
                    client.route(&to, "{}").await;
                    let answer = client.recv_json().await;
                    let _ = tx.send(Probe { sent, answered: killed.elapsed(), answer });
                });
                sent += 1;
            }
            Some(probe) = answers.recv() => {
                let found = probe.answer["errCode"] == 404;
                probes.push(probe);
                if found {
                    break;
                }
            }
        }
    }
    while probes.len() < sent {
        let probe = support::within("every probe's answer", answers.recv())
            .await
            .expect("an answer");
        probes.push(probe);
    }
    probes
}

/// A node freezes (SIGSTOP: a stuck process, a VM paused): NATS still holds its
/// subscriptions, so a ROUTE to its address reaches it and no verdict comes. Once its
/// heartbeats have been missing for the peer timeout (0.8 s) the sender gets 503 "stopped
/// answering", not after the cluster timeout (two minutes here, longer than this test
/// waits for any frame). What the node does once thawed is not asserted: it may deliver
/// what reached it (hence "may not have been delivered"), or find its NATS connection
/// stale (its pings went unanswered while frozen) and reconnect without it.
#[test]
fn a_frozen_node_owes_no_verdict_past_the_peer_timeout() {
    let nats = Nats::start().expect("nats-server");
    let mut node1 = node_with(&nats, "node1", &["--cluster-timeout", "120"]);
    let node2 = node(&nats, "node2");
    let rt = runtime();
    let (mut a, b_addr) = rt.block_on(async {
        let mut a = Client::connect(node1.url()).await;
        let mut b = Client::connect(node2.url()).await;
        let b_addr = b.init().await;
        a.route(&b_addr, r#"{"before":"freeze"}"#).await;
        assert_eq!(b.recv_text().await, deliver(r#"{"before":"freeze"}"#));
        std::mem::forget(b); // its node is about to freeze under it
        (a, b_addr)
    });
    node2.process.signal("STOP").expect("SIGSTOP");
    // Else a ROUTE can still be delivered by a thread that had yet to stop.
    wait_until_stopped(node2.process.pid());
    let err = rt.block_on(async {
        a.route(&b_addr, r#"{"while":"frozen"}"#).await;
        a.expect_err(503).await
    });
    node2.process.signal("CONT").expect("SIGCONT");
    assert!(err.contains("stopped answering"), "{err}");
    assert!(err.contains("may not have been delivered"), "{err}");
    node1
        .process
        .wait_for_line("cluster_peer_silent", PATIENCE)
        .expect("the silence is logged");
    // 1, or 2 if the node froze before its acknowledgement of the first ROUTE left it.
    let silent = node1
        .counter(r#"compendium_cluster_verdicts_total{verdict="silent"}"#)
        .expect("metrics");
    assert!(silent >= 1.0, "{silent} silent verdicts");
}

/// Rule 6.7: an END waits for the verdicts of its session's ROUTEs still on their way to
/// another node, and sends each refusal (naming its ROUTE, without `seq`: the stream is
/// over) before the close — here a ROUTE to a frozen node, refused once the node's
/// heartbeats have been missing for the peer timeout. Without it the client would be told
/// its close went well, its message lost unawares.
#[test]
fn an_end_sends_the_refusals_still_owed_before_the_close() {
    let nats = Nats::start().expect("nats-server");
    let node1 = node(&nats, "node1");
    let node2 = node(&nats, "node2");
    let rt = runtime();
    let (mut a, b_addr) = rt.block_on(async {
        let mut a = Client::connect_v2(node1.url()).await;
        let _ = a.init_v2().await;
        let mut b = Client::connect(node2.url()).await;
        let b_addr = b.init().await;
        a.send(&support::route_v2(&b_addr, 1, r#"{"before":"freeze"}"#))
            .await;
        assert_eq!(b.recv_text().await, deliver(r#"{"before":"freeze"}"#));
        std::mem::forget(b); // its node is about to freeze under it
        (a, b_addr)
    });
    node2.process.signal("STOP").expect("SIGSTOP");
    wait_until_stopped(node2.process.pid());
    rt.block_on(async {
        a.send(&support::route_v2(&b_addr, 2, r#"{"while":"frozen"}"#))
            .await;
        a.send(r#"{"type":"END"}"#).await;
        let err = loop {
            let frame = a.recv_json_skipping_acks().await;
            if frame["type"] == "ERR" {
                break frame;
            }
        };
        assert_eq!(err["errCode"], 503, "{err}");
        assert_eq!(err["route"], 2, "{err}");
        assert!(err.get("seq").is_none(), "the stream is over: {err}");
        assert_eq!(support::closed_with(&mut a).await, Some(1000));
    });
    node2.process.signal("CONT").expect("SIGCONT");
}

/// Wait until every thread of process `pid` is stopped (state `T` in `/proc`): `kill`
/// returns once the signal is sent, and a thread waiting for a CPU stops only when it is
/// next scheduled. Polled, as for any other process's state: there is no event to await.
fn wait_until_stopped(pid: u32) {
    let deadline = Instant::now() + PATIENCE;
    let stopped = || -> Option<bool> {
        let mut all = true;
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
            let stat = std::fs::read_to_string(task.ok()?.path().join("stat")).ok()?;
            // The state follows the command name, which is in parentheses.
            let state = stat.rsplit_once(") ")?.1.chars().next()?;
            all &= state == 'T' || state == 't';
        }
        Some(all)
    };
    while stopped() != Some(true) {
        assert!(Instant::now() < deadline, "process {pid} never stopped");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// SIGTERM of one node: its clients get 1001, the other nodes answer its addresses 404,
/// what it had accepted is delivered, and it exits 0.
#[test]
fn sigterm_of_one_node_closes_its_clients_1001_and_its_addresses_404_elsewhere() {
    let nats = Nats::start().expect("nats-server");
    let node1 = node(&nats, "node1");
    let mut node2 = node(&nats, "node2");
    let rt = runtime();
    let (mut a, mut b, a_addr, b_addr) = rt.block_on(async {
        let mut a = Client::connect(node1.url()).await;
        let mut b = Client::connect(node2.url()).await;
        let (a_addr, b_addr) = (a.init().await, b.init().await);
        (a, b, a_addr, b_addr)
    });
    rt.block_on(b.route(&a_addr, r#"{"from":"b"}"#));
    rt.block_on(async {
        assert_eq!(a.recv_text().await, deliver(r#"{"from":"b"}"#));
    });
    // SIGTERM in another thread, while b reads (and so answers) the close handshake.
    let terminating = std::thread::spawn(move || node2.process.terminate().expect("SIGTERM"));
    rt.block_on(async {
        let close = b.recv_close().await.expect("a close frame");
        assert_eq!(u16::from(close.code), 1001);
        // Reading on sends our answer to the close frame: the handshake completes.
        assert!(b.next_frame().await.is_none());
    });
    let status = terminating.join().expect("the SIGTERM thread");
    assert_eq!(status.code(), Some(0));
    rt.block_on(async {
        a.route(&b_addr, "{}").await;
        assert_eq!(a.expect_err(404).await, NOT_FOUND_TEXT);
    });
}

/// SIGTERM of a node whose NATS is gone: it still stops (its farewell cannot be flushed,
/// and it waits for NATS no longer than the cluster timeout), and while NATS was down it
/// said so once, not once per reconnect attempt.
#[test]
fn sigterm_while_nats_is_down_still_stops_and_the_outage_is_logged_once() {
    let mut nats = Nats::start().expect("nats-server");
    let mut command = Relay::command(bin());
    command
        .args(["--cluster", &nats.url(), "--node-name", "node1"])
        .env("COMPENDIUM_CLUSTER_KEY", KEY)
        // The default filter, plus our debug lines: the failed reconnect attempts are
        // logged there, so the test can wait for them.
        .env("RUST_LOG", "info,async_nats=warn,compendium_server=debug");
    let mut node1 = Relay::start(command).expect("the node starts");
    nats.kill().expect("kill nats-server");
    node1
        .process
        .wait_for_line("cluster_link_down", PATIENCE)
        .expect("the node notices");
    for attempt in 1..=2 {
        node1
            .process
            .wait_for_line("client error while down", PATIENCE)
            .unwrap_or_else(|e| panic!("failed reconnect attempt {attempt}: {e:#}"));
    }
    let status = node1
        .process
        .terminate_within(Duration::from_secs(20))
        .expect("stops after SIGTERM");
    assert_eq!(status.code(), Some(0));
    let lines = node1.process.lines();
    let warnings: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("\"WARN\"") || l.contains("\"ERROR\""))
        .collect();
    let downs = warnings
        .iter()
        .filter(|l| l.contains("cluster_link_down"))
        .count();
    assert_eq!(downs, 1, "{warnings:#?}");
    assert!(
        warnings.len() <= 2,
        "the outage is one warning (and perhaps the farewell's): {warnings:#?}"
    );
}

/// Startup with NATS unreachable: a clear error naming the URL, exit status 1.
#[test]
fn startup_without_nats_is_a_clear_error_naming_the_url() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("nats://{}", free.local_addr().expect("addr"));
    drop(free);
    let (code, stderr) = run_to_exit(&["--cluster", &url, "--cluster-connect-timeout", "2"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("compendium-server: cluster: NATS at {url}: ")),
        "{stderr}"
    );
}

/// A cluster setting without `--cluster` (here the key, from the environment): refused,
/// since the operator meant a cluster and a silent single relay would split it.
#[test]
fn a_cluster_setting_without_cluster_is_refused_naming_both() {
    let output = support::process::server()
        .args(["--listen", "127.0.0.1:0"])
        .env("COMPENDIUM_CLUSTER_KEY", KEY)
        .env_remove("COMPENDIUM_CLUSTER")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "--cluster-key (or COMPENDIUM_CLUSTER_KEY) is set, but --cluster (or \
             COMPENDIUM_CLUSTER, the NATS URLs) is not"
        ),
        "{stderr}"
    );
}

/// Cluster mode without the shared key, or with a key that is not one: a usage error
/// that says how to make one.
#[test]
fn startup_without_a_usable_key_says_how_to_make_one() {
    let output = support::process::server()
        .args([
            "--listen",
            "127.0.0.1:0",
            "--cluster",
            "nats://127.0.0.1:4222",
        ])
        .env_remove("COMPENDIUM_CLUSTER_KEY")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("openssl rand -hex 16"), "{stderr}");
    let output = support::process::server()
        .args([
            "--listen",
            "127.0.0.1:0",
            "--cluster",
            "nats://127.0.0.1:4222",
        ])
        .env("COMPENDIUM_CLUSTER_KEY", "not a key")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("COMPENDIUM_CLUSTER_KEY: a cluster key is 32 hexadecimal characters"),
        "{stderr}"
    );
}

/// Credentials the NATS server refuses: a clear error.
#[test]
fn startup_with_refused_credentials_is_a_clear_error() {
    let nats = Nats::start_with(&["--user", "relay", "--pass", "right"], 0).expect("nats-server");
    let url = nats.url().replace("nats://", "nats://relay:wrong@");
    let (code, stderr) = run_to_exit(&["--cluster", &url, "--cluster-connect-timeout", "3"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.to_lowercase().contains("authorization"), "{stderr}");
    assert!(
        stderr.contains("nats://relay:***@"),
        "names the URL: {stderr}"
    );
    assert!(
        !stderr.contains("wrong"),
        "never prints the password: {stderr}"
    );
}

/// A NATS server whose max_payload is below --max-message-bytes cannot carry the largest
/// ROUTE: refused at startup, saying which setting to change.
#[test]
fn startup_refuses_a_nats_that_cannot_carry_the_largest_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("nats.conf");
    std::fs::write(&config, "max_payload: 65536\n").expect("write");
    let nats = Nats::start_with(&["-c", &config.display().to_string()], 0).expect("nats-server");
    let (code, stderr) = run_to_exit(&["--cluster", &nats.url()]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("it carries at most 65536 bytes per message (its max_payload), less than this relay's --max-message-bytes 1048576"),
        "{stderr}"
    );
    // With a limit that fits, the same node starts.
    let mut command = Relay::command(bin());
    command
        .args(["--cluster", &nats.url(), "--max-message-bytes", "65536"])
        .env("COMPENDIUM_CLUSTER_KEY", KEY);
    let relay = Relay::start(command).expect("starts");
    assert!(relay.ready.node.is_some(), "{:?}", relay.ready);
}

/// The NATS permissions docs/security.md gives the relay's user — publish and subscribe on
/// `compendium.>` and nothing else — are all a cluster needs.
#[test]
fn nodes_need_no_subject_outside_their_prefix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("nats.conf");
    std::fs::write(
        &config,
        r#"authorization {
  users = [
    { user: relay, password: secret, permissions: {
        publish: { allow: ["compendium.>"] },
        subscribe: { allow: ["compendium.>"] } } }
  ]
}
"#,
    )
    .expect("write");
    let nats = Nats::start_with(&["-c", &config.display().to_string()], 0).expect("nats-server");
    let url = nats.url().replace("nats://", "nats://relay:secret@");
    let start = |name: &str| {
        let mut command = Relay::command(bin());
        command
            .args(["--cluster", &url, "--node-name", name])
            .env("COMPENDIUM_CLUSTER_KEY", KEY);
        Relay::start(command).expect("the node starts")
    };
    let (mut node1, mut node2) = (start("node1"), start("node2"));
    runtime().block_on(async {
        let mut a = Client::connect(node1.url()).await;
        let mut b = Client::connect(node2.url()).await;
        let b_addr = b.init().await;
        a.route(&b_addr, r#"{"within":"permissions"}"#).await;
        assert_eq!(b.recv_text().await, deliver(r#"{"within":"permissions"}"#));
        let (replies, _) = a.sync().await;
        assert!(replies.is_empty(), "{replies:?}");
        // A session moving between the nodes (claims, inboxes, its own subject).
        let mut phone = Client::connect_v2(node1.url()).await;
        let (address, secret) = phone.init_v2().await;
        let mut moved = Client::connect_v2(node2.url()).await;
        moved.send(&support::resume(&address, &secret, 0)).await;
        let reply = moved.recv_json_skipping_acks().await;
        assert_eq!(reply["type"], "RESUMED", "{reply}");
        b.route(&address, r#"{"to":"moved"}"#).await;
        let got = moved.recv_json_skipping_acks().await;
        assert_eq!(got["msg"]["to"], "moved", "{got}");
    });
    // No permission violation was reported to either node.
    for node in [&mut node1, &mut node2] {
        let violations: Vec<String> = node
            .process
            .lines()
            .iter()
            .filter(|l| l.to_lowercase().contains("permission"))
            .cloned()
            .collect();
        assert!(violations.is_empty(), "{violations:?}");
    }
}

/// The DELIVERs' `n`s a version 2 client receives, skipping ROUTEACKs.
async fn delivered(client: &mut Client, count: usize) -> Vec<u64> {
    let mut out = Vec::new();
    while out.len() < count {
        let frame = client.recv_json_skipping_acks().await;
        assert_eq!(frame["type"], "DELIVER", "{frame}");
        out.push(frame["msg"]["n"].as_u64().expect("n"));
    }
    out
}

/// Drain (docs/cluster.md): SIGTERM of a node closes its resumable clients with 1012 and
/// its version 1 clients with 1001; a resumable client resumes on another node with its
/// address and what it had not acknowledged, its peer's ROUTEs sent meanwhile included;
/// the node exits 0 as soon as its last session has moved — long before `--drain-timeout`
/// — and says so in its log.
#[test]
fn sigterm_drains_resumable_sessions_to_the_nodes_they_resume_on() {
    let nats = Nats::start().expect("nats-server");
    let mut node1 = node_with(&nats, "node1", &["--drain-timeout", "60"]);
    let node2 = node(&nats, "node2");
    let rt = runtime();
    let (mut phone, mut old, mut sender, address, secret) = rt.block_on(async {
        let mut phone = Client::connect_v2(node1.url()).await;
        let (address, secret) = phone.init_v2().await;
        let old = Client::connect(node1.url()).await;
        let mut sender = Client::connect(node2.url()).await;
        for n in 1..=5 {
            sender.route(&address, &format!(r#"{{"n":{n}}}"#)).await;
        }
        assert_eq!(delivered(&mut phone, 5).await, [1, 2, 3, 4, 5]);
        (phone, old, sender, address, secret)
    });
    node1.process.signal("TERM").expect("SIGTERM");
    rt.block_on(async {
        assert_eq!(
            support::closed_with(&mut phone).await,
            Some(1012),
            "resume elsewhere"
        );
        assert_eq!(
            support::closed_with(&mut old).await,
            Some(1001),
            "version 1: as before"
        );
        // Sent while the phone is between connections: held for it.
        for n in 6..=7 {
            sender.route(&address, &format!(r#"{{"n":{n}}}"#)).await;
        }
        let mut moved = Client::connect_v2(node2.url()).await;
        moved.send(&support::resume(&address, &secret, 2)).await;
        let reply = moved.recv_json_skipping_acks().await;
        assert_eq!(reply["type"], "RESUMED", "{reply}");
        assert_eq!(delivered(&mut moved, 5).await, [3, 4, 5, 6, 7]);
        sender.route(&address, r#"{"n":8}"#).await;
        assert_eq!(delivered(&mut moved, 1).await, [8]);
        let (errs, _) = sender.sync().await;
        assert!(errs.is_empty(), "{errs:?}");
    });
    let status = node1
        .process
        .exit_within(Duration::from_secs(20))
        .expect("exits once its session has moved");
    assert_eq!(status.code(), Some(0));
    let done = node1
        .process
        .lines()
        .iter()
        .find(|l| l.contains("drain_done"))
        .cloned()
        .unwrap_or_default();
    assert!(
        done.contains(r#""handed_over":1"#) && done.contains(r#""left":0"#),
        "{done}"
    );
}

/// A drain while a session's ROUTE still waits for a verdict (its target, on another
/// node, is detached: the ROUTE is held for it, rule 6.8): the session moves on, and the
/// refusal, settled on the drained node when the hold runs out, follows it to the node it
/// resumed on, in its stream. The drained node waits for it before it leaves; without
/// that its client was told the ROUTE was taken (ROUTEACK) and never heard of it again —
/// a message lost unawares (found by the chaos test).
#[test]
fn a_drained_session_still_gets_the_refusals_owed_to_it_where_it_resumed() {
    let nats = Nats::start().expect("nats-server");
    let hold = ["--resume-hold", "1"];
    let mut node1 = node_with(&nats, "node1", &["--drain-timeout", "60", hold[0], hold[1]]);
    let node2 = node_with(&nats, "node2", &hold);
    let node3 = node_with(&nats, "node3", &hold);
    let rt = runtime();
    let (mut phone, mut local, address, secret) = rt.block_on(async {
        let mut phone = Client::connect_v2(node1.url()).await;
        let (address, secret) = phone.init_v2().await;
        let mut away = Client::connect_v2(node2.url()).await;
        let (away_addr, _) = away.init_v2().await;
        phone
            .send(&support::route_v2(&away_addr, 1, r#"{"before":"away"}"#))
            .await;
        let got = away.recv_json_skipping_acks().await;
        assert_eq!(got["msg"]["before"], "away", "{got}");
        drop(away); // its link breaks: its session waits, detached, on node2
        phone
            .send(&support::route_v2(&away_addr, 2, r#"{"while":"away"}"#))
            .await;
        // Then one to a client of this node, which is acknowledged at once, and the one
        // before it with it: the client may forget both (rule 6.5); ROUTE 2's fate is
        // still to come.
        let mut local = Client::connect(node1.url()).await;
        let local_addr = local.init().await;
        phone
            .send(&support::route_v2(&local_addr, 3, r#"{"to":"local"}"#))
            .await;
        assert_eq!(local.recv_text().await, deliver(r#"{"to":"local"}"#));
        loop {
            let frame = phone.recv_json().await;
            if frame["type"] == "ROUTEACK" && frame["seq"].as_u64() >= Some(3) {
                break;
            }
            assert_ne!(frame["type"], "ERR", "{frame}");
        }
        (phone, local, address, secret)
    });
    node1.process.signal("TERM").expect("SIGTERM");
    rt.block_on(async {
        assert_eq!(support::closed_with(&mut phone).await, Some(1012));
        assert_eq!(support::closed_with(&mut local).await, Some(1001));
        // Gone at once: the node need not wait for their close handshakes.
        drop((phone, local));
        let mut moved = Client::connect_v2(node3.url()).await;
        moved.send(&support::resume(&address, &secret, 0)).await;
        let reply = moved.recv_json_skipping_acks().await;
        assert_eq!(reply["type"], "RESUMED", "{reply}");
        assert_eq!(reply["seq"], 3, "every ROUTE was taken: {reply}");
        let err = moved.recv_json_skipping_acks().await;
        assert_eq!(err["type"], "ERR", "{err}");
        assert_eq!(err["errCode"], 503, "{err}");
        assert_eq!(err["route"], 2, "{err}");
        assert!(err.get("seq").is_some(), "in the session's stream: {err}");
    });
    let status = node1
        .process
        .exit_within(Duration::from_secs(20))
        .expect("exits once its session has moved and its refusal has followed");
    assert_eq!(status.code(), Some(0));
}

/// A drain nobody resumes from: the node waits for its session, and a second SIGTERM ends
/// the wait at once, with a count of what could not be handed over.
#[test]
fn a_second_sigterm_ends_a_drain_and_says_what_was_left() {
    let nats = Nats::start().expect("nats-server");
    let mut node1 = node_with(&nats, "node1", &["--drain-timeout", "120"]);
    let rt = runtime();
    let mut phone = rt.block_on(async {
        let mut phone = Client::connect_v2(node1.url()).await;
        phone.init_v2().await;
        phone
    });
    node1.process.signal("TERM").expect("SIGTERM");
    rt.block_on(async {
        assert_eq!(support::closed_with(&mut phone).await, Some(1012));
    });
    node1
        .process
        .wait_for_line("drain_started", Duration::from_secs(10))
        .expect("the drain begins");
    let status = node1
        .process
        .terminate_within(Duration::from_secs(20))
        .expect("a second SIGTERM ends the drain");
    assert_eq!(status.code(), Some(0));
    let done = node1
        .process
        .lines()
        .iter()
        .find(|l| l.contains("drain_done"))
        .cloned()
        .unwrap_or_default();
    assert!(
        done.contains(r#""left":1"#) && done.contains("a second signal ended it"),
        "{done}"
    );
}
