//! Resource attacks on the `compendium-server` binary, judged from outside as an operator
//! would: its resident memory and file descriptors (from /proc) and its /metrics.
//!
//! Each test is named for the attack it models and asserts that the server stays up, that
//! other clients are unaffected, and that memory, descriptors and the directory of addresses return to
//! where they were. Each fails against a server without the defence it checks (the
//! comment on each says how that was shown). Sizes are kept modest for CI; the soak
//! (`cargo xtask soak`) runs the same kinds of load for minutes.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use support::process::{self, Relay, rss_kib_of};
use support::{Client, PATIENCE, deliver, hostile};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as Frame;

const MIB: u64 = 1024;

fn addr(url: &str) -> &str {
    url.trim_start_matches("ws://")
}

/// Two clients that can reach each other; proves the relay still serves.
async fn working_pair(url: &str) -> (Client, Client, String) {
    let mut a = Client::connect(url).await;
    let mut b = Client::connect(url).await;
    let b_addr = b.init().await;
    a.route(&b_addr, r#"{"still":"served"}"#).await;
    assert_eq!(b.recv_text().await, deliver(r#"{"still":"served"}"#));
    (a, b, b_addr)
}

/// Read until the server ends the connection; returns what it sent first.
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let read = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .expect("the server ends the connection in time");
        match read {
            Ok(0) | Err(_) => return seen,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// Slowloris: 200 connections each send half an opening handshake and stall. The
/// handshake timeout (`--handshake-timeout`) closes every one; meanwhile and afterwards a
/// normal client connects and works. Without the timeout (`--handshake-timeout 3600`) the
/// stalled connections stay open and `until_closed` fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_200_half_handshakes_are_cut_off_while_others_are_served() {
    let relay = process::relay(&["--handshake-timeout", "2"]);
    let fds_before = relay.process.open_fds().expect("descriptors");
    let rss_before = relay.process.rss_kib().expect("RSS");

    let mut stalled = Vec::new();
    for _ in 0..200 {
        let mut stream = TcpStream::connect(addr(relay.url()))
            .await
            .expect("connect");
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\n")
            .await
            .expect("half a handshake");
        stalled.push(stream);
    }
    // While all 200 stall, a normal client is served.
    let (a, b, _) = working_pair(relay.url()).await;

    // The server closes each one (nothing else would: the test never does).
    for stream in &mut stalled {
        until_closed(stream).await;
    }
    drop(stalled);

    // After them, too; then everything is given back.
    let (c, d, _) = working_pair(relay.url()).await;
    for client in [a, b, c, d] {
        client.close().await;
    }
    assert_nothing_live(&relay);
    wait_for_fds(&relay, fds_before);
    let grown = relay
        .process
        .rss_kib()
        .expect("RSS")
        .saturating_sub(rss_before);
    eprintln!("slowloris: RSS +{grown} KiB, descriptors back to {fds_before}");
    assert!(grown < 16 * MIB, "RSS grew by {grown} KiB");
}

/// Flood: one client sends 16 KiB ROUTEs as fast as it can to a client that never reads.
/// The target's queue is bounded (`--max-queue`, `--max-queue-bytes`), so the sender gets
/// ERR 503 and the server's memory stays bounded. Without the bounds (`--max-queue
/// 1000000 --max-queue-bytes 100000000000`) the queue holds the whole flood: RSS grows by
/// more than 100 MiB and there are no 503s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_to_a_reader_that_never_reads_gets_503s_and_memory_stays_bounded() {
    let relay = process::relay(&["--max-queue", "256", "--max-queue-bytes", "4194304"]);
    let rss_before = relay.process.rss_kib().expect("RSS");
    // The target stays connected and is never read from again.
    let (_, _target, target_addr) = working_pair(relay.url()).await;

    let (ws, _) = tokio_tungstenite::connect_async(relay.url())
        .await
        .expect("connect");
    let (mut sink, mut stream) = ws.split();
    let replies = tokio::spawn(async move {
        let (mut unavailable, mut other) = (0u64, Vec::new());
        while let Some(Ok(frame)) = stream.next().await {
            let Frame::Text(text) = frame else { continue };
            let reply: Value = serde_json::from_str(text.as_str()).expect("JSON");
            match (reply["type"].as_str(), reply["errCode"].as_u64()) {
                (Some("ERR"), Some(503)) => unavailable += 1,
                (Some("INITRESP"), _) => break,
                _ => other.push(reply),
            }
        }
        (unavailable, other)
    });

    let flood = 8_000u64;
    let msg = format!(r#"{{"pad":"{}"}}"#, "x".repeat(16 * 1024));
    let route = support::route(&target_addr, &msg);
    // Sample the server's RSS while the flood runs: the peak is what must stay bounded.
    let flooding = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (flooding, pid) = (Arc::clone(&flooding), relay.process.pid());
        std::thread::spawn(move || {
            let mut peak = 0;
            while flooding.load(Ordering::Relaxed) {
                peak = peak.max(rss_kib_of(pid).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(25));
            }
            peak
        })
    };
    for _ in 0..flood {
        sink.feed(Frame::text(route.clone())).await.expect("send");
    }
    // A final INIT: its answer comes after the replies to every ROUTE (rule 3.5 order).
    sink.send(Frame::text(r#"{"type":"INIT"}"#))
        .await
        .expect("send");
    let (unavailable, other) = tokio::time::timeout(PATIENCE * 3, replies)
        .await
        .expect("the flood is handled in time")
        .expect("reader");
    flooding.store(false, Ordering::Relaxed);
    let peak_rss = sampler.join().expect("sampler");

    eprintln!(
        "flood: {unavailable} of {flood} got 503; peak RSS +{} KiB",
        peak_rss.saturating_sub(rss_before)
    );
    assert!(other.is_empty(), "unexpected replies: {other:?}");
    // All but what the queue and the socket buffers hold were refused.
    assert!(
        unavailable > flood / 2,
        "only {unavailable} of {flood} got 503"
    );
    let grown = peak_rss.saturating_sub(rss_before);
    assert!(grown < 64 * MIB, "RSS grew by {grown} KiB during the flood");
    // Others are unaffected.
    working_pair(relay.url()).await;
    assert!(
        relay
            .metric("compendium_queue_full_refusals_total")
            .expect("metric")
            >= unavailable as f64
    );
}

/// Connection flood: connections up to `--max-connections`, then 200 more attempts. Each
/// extra one gets HTTP 503 at the handshake; the connections already open keep working.
/// Without the limit (`--max-connections 100000`) the extra handshakes succeed (101) and
/// the test fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_flood_beyond_max_connections_gets_http_503_and_existing_clients_work() {
    let max = 100;
    let relay = process::relay(&["--max-connections", &max.to_string()]);
    let (mut a, mut b, b_addr) = working_pair(relay.url()).await;
    let mut held = Vec::new();
    for _ in 2..max {
        let mut client = Client::connect(relay.url()).await;
        client.init().await;
        held.push(client);
    }
    relay
        .wait_for_metric("compendium_connections_open", |n| n == f64::from(max))
        .expect("the metric settles");

    for _ in 0..200 {
        let mut stream = TcpStream::connect(addr(relay.url()))
            .await
            .expect("connect");
        let request = support::raw::handshake_request(addr(relay.url()));
        stream.write_all(request.as_bytes()).await.expect("write");
        let answer = until_closed(&mut stream).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    }
    assert_eq!(
        relay
            .metric("compendium_handshakes_refused_total")
            .expect("metric"),
        200.0
    );

    // The existing connections were not disturbed.
    a.route(&b_addr, r#"{"after":"flood"}"#).await;
    assert_eq!(b.recv_text().await, deliver(r#"{"after":"flood"}"#));
    for client in &mut held {
        client.sync().await;
    }
    assert_eq!(
        relay.metric("compendium_connections_open").expect("metric"),
        f64::from(max)
    );
    drop(held);
    drop((a, b));
    assert_nothing_live(&relay);
}

/// Message flood against the rate limit: 500 ROUTEs as fast as possible with
/// `--max-msgs-per-sec 50`. At most the bucket's worth are delivered and the rest get ERR
/// 429. Without the flag, every one is delivered and the test fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_flood_over_the_rate_limit_gets_429s() {
    let rate = 50u64;
    let relay = process::relay(&["--max-msgs-per-sec", &rate.to_string()]);
    let mut a = Client::connect(relay.url()).await;
    let mut b = Client::connect(relay.url()).await;
    let b_addr = b.init().await;
    let started = Instant::now();
    let flood = 500u64;
    for i in 0..flood {
        a.ws.feed(Frame::text(support::route(
            &b_addr,
            &format!(r#"{{"i":{i}}}"#),
        )))
        .await
        .expect("send");
    }
    a.ws.flush().await.expect("flush");
    // Every frame counted (500 from a, b's INIT): all have been acted on or refused.
    relay
        .wait_for_metric("compendium_messages_received_total", |n| {
            n >= (flood + 1) as f64
        })
        .expect("the metric settles");
    let elapsed = started.elapsed().as_secs_f64();
    let limited = relay
        .counter(r#"compendium_errors_sent_total{code="429"}"#)
        .expect("metrics") as u64;
    let routed = relay
        .metric("compendium_messages_routed_total")
        .expect("metric") as u64;
    eprintln!("rate: {routed} delivered, {limited} got 429 in {elapsed:.2} s");
    assert_eq!(limited + routed, flood);
    // A bucket of `rate` tokens refilled at `rate` per second.
    let allowed = rate + (rate as f64 * elapsed).ceil() as u64 + 1;
    assert!(
        routed <= allowed,
        "{routed} delivered, at most {allowed} allowed"
    );
    assert!(limited > 0, "no 429 among {flood} messages sent at once");
    for _ in 0..limited {
        a.expect_err(429).await;
    }
    for _ in 0..routed {
        assert!(b.recv_text().await.starts_with(r#"{"type":"DELIVER""#));
    }
}

/// Churn: 2,000 clients in waves of 200 connect, INIT, route to a partner, and vanish —
/// half with a WebSocket close, half with a TCP reset (as when killed). Afterwards there
/// are no live addresses or connections, descriptors are back where they were and RSS is
/// near where it was after the first wave. Without the release of a connection's address
/// when it ends (rule 3.10), `compendium_addresses_live` stays at 2,000 and the test fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_2000_clients_in_waves_half_reset_leaves_nothing_behind() {
    let relay = process::relay(&[]);
    let fds_before = relay.process.open_fds().expect("descriptors");
    let mut rss_after_first_wave = 0;
    for wave in 0..10 {
        let clients = futures_util::future::join_all((0..200).map(|_| async {
            let mut client = Client::connect(relay.url()).await;
            let address = client.init().await;
            (client, address)
        }))
        .await;
        let (mut clients, addresses): (Vec<_>, Vec<_>) = clients.into_iter().unzip();
        for (i, client) in clients.iter_mut().enumerate() {
            client
                .route(&addresses[i ^ 1], &format!(r#"{{"from":{i}}}"#))
                .await;
        }
        for (i, client) in clients.iter_mut().enumerate() {
            assert_eq!(
                client.recv_text().await,
                deliver(&format!(r#"{{"from":{}}}"#, i ^ 1))
            );
        }
        let closing = clients
            .into_iter()
            .enumerate()
            .map(|(i, client)| async move {
                if i % 2 == 0 {
                    client.vanish();
                } else {
                    client.close().await;
                }
            });
        futures_util::future::join_all(closing).await;
        assert_nothing_live(&relay);
        if wave == 0 {
            rss_after_first_wave = relay.process.rss_kib().expect("RSS");
        }
    }
    let closed = relay
        .metric(r#"compendium_connections_closed_total{reason="client_closed"}"#)
        .expect("metric");
    assert!(closed >= 1000.0, "{closed} closed politely");
    wait_for_fds(&relay, fds_before);
    assert_rss_near(&relay, rss_after_first_wave, "churn: the first of 10 waves");
    working_pair(relay.url()).await;
}

/// Garbage and hostile JSON, over and over: every input attack of `adversarial.rs`
/// (`support/hostile.rs`), 20 rounds against the binary — about 4.5 MiB of rejected input
/// a round — while a pair of clients stays connected. Afterwards RSS is near where it was
/// after the first round, descriptors are back, nothing is live, and the pair still
/// talks. A relay that kept anything of a rejected message (shown by leaking each one
/// that failed to parse) grows by tens of MiB and fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_hostile_json_over_and_over_leave_nothing_behind() {
    let relay = process::relay(&[]);
    let url = relay.url();
    let fds_before = relay.process.open_fds().expect("descriptors");
    let (mut a, mut b, b_addr) = working_pair(url).await;
    let mut rss_after_first_round = 0;
    for round in 0..20 {
        hostile::garbage_instead_of_a_handshake(url).await;
        assert_eq!(hostile::garbage_after_a_handshake(url).await, Some(1002));
        assert_eq!(hostile::invalid_utf8_in_a_text_frame(url).await, Some(1007));
        assert_eq!(hostile::a_reserved_opcode(url).await, Some(1002));
        assert_eq!(hostile::an_unmasked_client_frame(url).await, Some(1002));
        let code = hostile::a_frame_announcing_2_pow_63_bytes(url).await;
        assert!(matches!(code, Some(1009 | 1002)), "{code:?}");
        assert_eq!(hostile::a_message_over_the_limit(url).await, Some(1009));
        let mut client = Client::connect(url).await;
        hostile::send_hostile_json(&mut client).await;
        client.close().await;
        relay
            .wait_for_metric("compendium_connections_open", |n| n == 2.0)
            .expect("the metric settles");
        if round == 0 {
            rss_after_first_round = relay.process.rss_kib().expect("RSS");
        }
    }
    a.route(&b_addr, r#"{"after":"20 rounds"}"#).await;
    assert_eq!(b.recv_text().await, deliver(r#"{"after":"20 rounds"}"#));
    a.close().await;
    b.close().await;
    assert_nothing_live(&relay);
    wait_for_fds(&relay, fds_before);
    assert_rss_near(
        &relay,
        rss_after_first_round,
        "hostile input: the first of 20 rounds",
    );
}

/// RSS is within 8 MiB of `reference`, taken after the first `after` (by then the
/// allocator holds its working set, so later growth is what the load left behind).
/// Every connection has ended and no address is live: the relay holds nothing for anyone.
fn assert_nothing_live(relay: &Relay) {
    relay
        .wait_for_metric("compendium_connections_open", |n| n == 0.0)
        .expect("every connection ends");
    assert_eq!(
        relay.metric("compendium_addresses_live").expect("metric"),
        0.0,
        "no address outlives its connection"
    );
}

fn assert_rss_near(relay: &Relay, reference: u64, after: &str) {
    let rss = relay.process.rss_kib().expect("RSS");
    eprintln!("{after}: RSS {reference} KiB after it, {rss} KiB at the end");
    assert!(
        rss.saturating_sub(reference) < 8 * MIB,
        "{after}: RSS {reference} KiB after it, {rss} KiB at the end"
    );
}

/// Closed sockets leave the server's descriptor table shortly after the close is seen.
fn wait_for_fds(relay: &Relay, expected: usize) {
    let deadline = Instant::now() + PATIENCE;
    while relay.process.open_fds().expect("descriptors") > expected {
        assert!(
            Instant::now() < deadline,
            "{} descriptors open, {expected} before",
            relay.process.open_fds().expect("descriptors")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
