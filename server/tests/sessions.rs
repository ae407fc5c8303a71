//! Version 2 sessions (docs/protocol.md section 6) over real WebSockets: each test cuts
//! real connections (a close handshake, a TCP reset, a connection left open) and checks
//! what both sides see. Test names cite the rules.

mod support;

use std::time::Duration;

use compendium_server::Config;
use serde_json::Value;
use support::{Client, TestServer, resume, route_v2, within};

fn config(grace: u64, hold: Duration) -> Config {
    let mut config = Config::ephemeral();
    config.sessions.grace = Duration::from_secs(grace);
    config.sessions.hold = hold;
    config
}

fn delivered(frame: &Value) -> (u64, Value) {
    assert_eq!(frame["type"], "DELIVER", "{frame}");
    (frame["seq"].as_u64().expect("seq"), frame["msg"].clone())
}

#[tokio::test]
async fn rule_6_1_version_2_only_when_offered_and_enabled() {
    let server = TestServer::default().await;
    assert_eq!(selected_by(&server.url, "chat, other").await, None);
    // A version 1 client sees version 1, byte for byte.
    let mut v1 = server.client().await;
    v1.send(r#"{"type":"INIT"}"#).await;
    let text = v1.recv_text().await;
    let members = serde_json::from_str::<serde_json::Map<String, Value>>(&text).expect("object");
    assert_eq!(
        members.len(),
        2,
        "INITRESP has only type and EpheWssAddr: {text}"
    );
    v1.send(r#"{"type":"END"}"#).await;
    let err = v1.expect_err(400).await;
    assert!(err.contains("compendium.v2"), "{err}");

    let (mut v2, selected) = Client::connect_offering(&server.url, "chat, compendium.v2").await;
    assert_eq!(selected.as_deref(), Some("compendium.v2"));
    let (_, secret) = v2.init_v2().await;
    assert_eq!(secret.len(), 64);

    let off = TestServer::start(config(0, Duration::from_secs(1))).await;
    assert_eq!(
        selected_by(&off.url, "compendium.v2").await,
        None,
        "--resume-grace 0 turns version 2 off"
    );
}

/// The subprotocol a relay selects for an opening handshake offering `offered`, read off
/// the raw HTTP response (tungstenite's client refuses a response that selects none).
async fn selected_by(url: &str, offered: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = url.trim_start_matches("ws://");
    let mut tcp = tokio::net::TcpStream::connect(host).await.expect("connect");
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: {offered}\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    while !response.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        within("the handshake response", tcp.read_exact(&mut byte))
            .await
            .expect("read");
        response.push(byte[0]);
    }
    let response = String::from_utf8(response).expect("ASCII headers");
    assert!(response.starts_with("HTTP/1.1 101"), "{response}");
    response
        .lines()
        .find_map(|line| {
            line.strip_prefix("sec-websocket-protocol: ")
                .or_else(|| line.strip_prefix("Sec-WebSocket-Protocol: "))
        })
        .map(str::to_owned)
}

#[tokio::test]
async fn rule_6_3_resume_after_a_reset_replays_in_order_and_holds_routes_meanwhile() {
    let server = TestServer::default().await;
    let mut phone = Client::connect_v2(&server.url).await;
    let (address, secret) = phone.init_v2().await;
    let mut pc = server.client().await; // version 1
    for n in 1..=3 {
        pc.route(&address, &format!(r#"{{"n":{n}}}"#)).await;
    }
    for n in 1..=3 {
        let (seq, msg) = delivered(&phone.recv_json().await);
        assert_eq!((seq, msg["n"].as_u64()), (n, Some(n)));
    }
    // The phone acknowledges only the first, then its link dies with a reset.
    phone.send(r#"{"type":"ACK","seq":1}"#).await;
    phone.vanish();
    // Wait until the relay has seen the reset: the session detaches.
    within("the session detaches", server.handle.detached_sessions(1)).await;
    // Sent while the phone is away: held, not refused.
    for n in 4..=5 {
        pc.route(&address, &format!(r#"{{"n":{n}}}"#)).await;
    }
    let mut phone = Client::connect_v2(&server.url).await;
    phone.send(&resume(&address, &secret, 1)).await;
    let resumed = phone.recv_json().await;
    assert_eq!(resumed["type"], "RESUMED", "{resumed}");
    assert_eq!(resumed["EpheWssAddr"], address.as_str());
    assert_ne!(resumed["secret"], secret.as_str(), "the secret is rotated");
    assert_eq!(resumed["seq"], 0);
    let got: Vec<(u64, Option<u64>)> = {
        let mut got = Vec::new();
        for _ in 2..=5 {
            let (seq, msg) = delivered(&phone.recv_json().await);
            got.push((seq, msg["n"].as_u64()));
        }
        got
    };
    assert_eq!(
        got,
        [(2, Some(2)), (3, Some(3)), (4, Some(4)), (5, Some(5))]
    );
    // The PC saw nothing but success, in order.
    assert!(pc.sync().await.0.is_empty());
}

#[tokio::test]
async fn rule_6_3_every_refusal_is_the_same_and_failures_close_the_connection() {
    let server = TestServer::default().await;
    let mut owner = Client::connect_v2(&server.url).await;
    let (address, _secret) = owner.init_v2().await;
    let mut thief = Client::connect_v2(&server.url).await;
    let wrong = "ab".repeat(32);
    thief.send(&resume(&address, &wrong, 0)).await;
    let first = thief.expect_err(410).await;
    thief.send(&resume(&"0".repeat(32), &wrong, 0)).await;
    let second = thief.expect_err(410).await;
    assert_eq!(
        first, second,
        "no oracle: unknown and wrong-secret answers are equal"
    );
    thief.send(&resume(&address, &wrong, 0)).await;
    thief.expect_err(410).await;
    let close = thief.recv_close().await.expect("close frame");
    assert_eq!(u16::from(close.code), 1008);
    // The owner is undisturbed.
    let mut pc = server.client().await;
    pc.route(&address, "{}").await;
    assert_eq!(owner.recv_json().await["type"], "DELIVER");
}

#[tokio::test]
async fn rule_6_9_failed_resumes_are_limited_per_source_address() {
    let mut config = Config::ephemeral();
    config.sessions.failed_resumes_per_minute = 2;
    let server = TestServer::start(config).await;
    let wrong = "cd".repeat(32);
    for _ in 0..2 {
        let mut guesser = Client::connect_v2(&server.url).await;
        guesser.send(&resume(&"1".repeat(32), &wrong, 0)).await;
        guesser.expect_err(410).await;
    }
    let mut guesser = Client::connect_v2(&server.url).await;
    guesser.send(&resume(&"1".repeat(32), &wrong, 0)).await;
    guesser.expect_err(429).await;
}

#[tokio::test]
async fn rule_6_3_takeover_closes_the_half_open_connection_with_4001() {
    let server = TestServer::default().await;
    let mut old = Client::connect_v2(&server.url).await;
    let (address, secret) = old.init_v2().await;
    // The old connection stays open (to the relay it looks alive: half-open).
    let mut new = Client::connect_v2(&server.url).await;
    new.send(&resume(&address, &secret, 0)).await;
    assert_eq!(new.recv_json().await["type"], "RESUMED");
    let close = old.recv_close().await.expect("close frame");
    assert_eq!(u16::from(close.code), 4001);
    let mut pc = server.client().await;
    pc.route(&address, r#"{"after":"takeover"}"#).await;
    let (seq, msg) = delivered(&new.recv_json().await);
    assert_eq!((seq, msg["after"].as_str()), (1, Some("takeover")));
}

#[tokio::test]
async fn rule_6_9_a_superseded_secret_revokes_the_session() {
    let server = TestServer::default().await;
    let mut first = Client::connect_v2(&server.url).await;
    let (address, old_secret) = first.init_v2().await;
    first.vanish();
    let mut second = Client::connect_v2(&server.url).await;
    second.send(&resume(&address, &old_secret, 0)).await;
    let resumed = second.recv_json().await;
    assert_eq!(resumed["type"], "RESUMED");
    let next_secret = resumed["secret"].as_str().expect("secret").to_owned();
    // The secret of that RESUME is good until the client shows the RESUMED arrived (its
    // link may have died with it on the wire): resuming with the new one shows it.
    second.vanish();
    let mut second = Client::connect_v2(&server.url).await;
    second.send(&resume(&address, &next_secret, 0)).await;
    assert_eq!(second.recv_json().await["type"], "RESUMED");
    // Someone else still has the first secret: it must not work, and it ends the session.
    let mut thief = Client::connect_v2(&server.url).await;
    thief.send(&resume(&address, &old_secret, 0)).await;
    thief.expect_err(410).await;
    let close = second.recv_close().await.expect("close frame");
    assert_eq!(u16::from(close.code), 4002);
    let mut pc = server.client().await;
    pc.route(&address, "{}").await;
    pc.expect_err(404).await;
}

/// The link dies with the RESUMED on the wire: the client never saw the new secret, so it
/// resumes with the one it has; that must work (it is no thief), and the secret the lost
/// RESUMED carried is the stale one.
#[tokio::test]
async fn rule_6_9_a_lost_resumed_does_not_cost_the_session() {
    let server = TestServer::default().await;
    let mut first = Client::connect_v2(&server.url).await;
    let (address, secret) = first.init_v2().await;
    first.vanish();
    let mut unlucky = Client::connect_v2(&server.url).await;
    unlucky.send(&resume(&address, &secret, 0)).await;
    let lost = unlucky.recv_json().await;
    assert_eq!(lost["type"], "RESUMED");
    unlucky.vanish();
    let mut again = Client::connect_v2(&server.url).await;
    again.send(&resume(&address, &secret, 0)).await;
    assert_eq!(again.recv_json().await["type"], "RESUMED");
    let mut pc = server.client().await;
    pc.route(&address, r#"{"still":"paired"}"#).await;
    let (seq, msg) = delivered(&again.recv_json().await);
    assert_eq!((seq, msg["still"].as_str()), (1, Some("paired")));
    let mut thief = Client::connect_v2(&server.url).await;
    thief
        .send(&resume(
            &address,
            lost["secret"].as_str().expect("secret"),
            0,
        ))
        .await;
    thief.expect_err(410).await;
    let close = again.recv_close().await.expect("close frame");
    assert_eq!(u16::from(close.code), 4002);
}

#[tokio::test]
async fn rule_6_7_end_flushes_releases_at_once_and_closes_1000() {
    let server = TestServer::default().await;
    let mut phone = Client::connect_v2(&server.url).await;
    let (address, _) = phone.init_v2().await;
    let mut pc = server.client().await;
    pc.route(&address, r#"{"last":true}"#).await;
    assert!(pc.sync().await.0.is_empty());
    phone.send(r#"{"type":"END"}"#).await;
    assert_eq!(delivered(&phone.recv_json().await).1["last"], true);
    let close = phone.recv_close().await.expect("close frame");
    assert_eq!(u16::from(close.code), 1000);
    pc.route(&address, "{}").await;
    pc.expect_err(404).await;
}

#[tokio::test]
async fn rule_6_8_a_held_route_gets_503_when_the_hold_passes() {
    let server = TestServer::start(config(60, Duration::from_millis(200))).await;
    let mut phone = Client::connect_v2(&server.url).await;
    let (address, _) = phone.init_v2().await;
    phone.close().await; // a close without END detaches
    let mut pc = server.client().await;
    pc.route(&address, r#"{"held":1}"#).await;
    let err = pc.expect_err(503).await;
    assert!(err.contains("did not resume"), "{err}");
}

#[tokio::test]
async fn rule_6_5_routes_are_numbered_deduplicated_and_acknowledged() {
    let server = TestServer::default().await;
    let mut a = Client::connect_v2(&server.url).await;
    let (a_addr, _) = a.init_v2().await;
    let mut b = server.client().await;
    let b_addr = b.init().await;
    a.send(&route_v2(&b_addr, 1, r#"{"n":1}"#)).await;
    a.send(&route_v2(&b_addr, 1, r#"{"n":1}"#)).await; // a resend
    a.send(&route_v2(&b_addr, 2, r#"{"n":2}"#)).await;
    a.send(&route_v2(&b_addr, 4, r#"{"n":4}"#)).await; // skips 3
    assert_eq!(
        a.expect_err(400).await,
        "/seq: 4 skips numbers; the next ROUTE is number 3"
    );
    assert_eq!(b.recv_json().await["msg"]["n"], 1);
    assert_eq!(b.recv_json().await["msg"]["n"], 2);
    let ack = a.recv_json().await;
    assert_eq!(
        (ack["type"].as_str(), ack["seq"].as_u64()),
        (Some("ROUTEACK"), Some(2))
    );
    // An ERR for a numbered ROUTE is numbered in the stream and names its ROUTE.
    a.send(&route_v2(&"0".repeat(32), 3, "{}")).await;
    let err = a.recv_json_skipping_acks().await;
    assert_eq!(err["type"], "ERR");
    assert_eq!(
        (
            err["errCode"].as_u64(),
            err["route"].as_u64(),
            err["seq"].as_u64()
        ),
        (Some(404), Some(3), Some(1))
    );
    // And the v1 peer's route to the v2 session arrives numbered after it.
    b.route(&a_addr, r#"{"hi":1}"#).await;
    let (seq, _) = delivered(&a.recv_json_skipping_acks().await);
    assert_eq!(seq, 2);
}

#[tokio::test]
async fn rule_6_2_a_session_past_its_grace_is_gone() {
    let server = TestServer::start(config(1, Duration::from_millis(500))).await;
    let mut phone = Client::connect_v2(&server.url).await;
    let (address, secret) = phone.init_v2().await;
    phone.vanish();
    let mut pc = server.client().await;
    // Until the grace passes the address stays reserved (held ROUTEs are answered 503
    // after the hold); once it has passed, a ROUTE gets 404 and RESUME is refused.
    within("the grace passes", async {
        loop {
            pc.route(&address, "{}").await;
            let reply = pc.recv_json().await;
            if reply["errCode"] == 404 {
                break;
            }
            assert_eq!(reply["errCode"], 503, "{reply}");
        }
    })
    .await;
    let mut late = Client::connect_v2(&server.url).await;
    late.send(&resume(&address, &secret, 0)).await;
    late.expect_err(410).await;
}

#[tokio::test]
async fn rule_6_4_a_replay_beyond_the_buffer_is_never_silent() {
    let mut config = Config::ephemeral();
    config.sessions.buffer_messages = 3;
    let server = TestServer::start(config).await;
    let mut phone = Client::connect_v2(&server.url).await;
    let (address, _) = phone.init_v2().await;
    let mut pc = server.client().await;
    for n in 0..3 {
        pc.route(&address, &format!(r#"{{"n":{n}}}"#)).await;
    }
    // Three unacknowledged: the fourth is refused to its sender, not dropped.
    pc.route(&address, r#"{"n":3}"#).await;
    pc.expect_err(503).await;
    for _ in 0..3 {
        delivered(&phone.recv_json().await);
    }
    phone.send(r#"{"type":"ACK","seq":3}"#).await;
    phone.send(r#"{"type":"ACK","seq":9}"#).await;
    let err = phone.expect_err(400).await;
    assert!(err.contains("acknowledges more than was sent"), "{err}");
    pc.route(&address, r#"{"n":4}"#).await;
    assert_eq!(delivered(&phone.recv_json().await).0, 4);
}
