//! Rules of docs/protocol.md section 4: keepalive, handshake timeout, connection limit,
//! graceful shutdown. Real server on 127.0.0.1:0; short timeouts so the tests are quick.

mod support;

use std::time::Duration;

use compendium_server::Config;
use futures_util::StreamExt;
use support::{PATIENCE, TestServer, raw};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

fn quick_keepalive() -> Config {
    let mut config = Config::ephemeral();
    config.ping_interval = Duration::from_millis(40);
    config.idle_timeout = Duration::from_millis(200);
    config
}

#[tokio::test]
async fn rule_4_1_a_silent_connection_is_closed_and_its_address_released() {
    let server = TestServer::start(quick_keepalive()).await;
    let mut silent = raw::connect(&server.url).await;
    silent
        .write_all(&raw::frame(1, br#"{"type":"INIT"}"#))
        .await
        .expect("send INIT");
    // The raw peer answers no ping: the server must give up on it.
    let frames = raw::read_until_eof(&mut silent).await;
    assert_eq!(
        frames.first().map(|f| f.opcode),
        Some(1),
        "INITRESP first: {frames:?}"
    );
    assert!(
        frames.iter().any(|f| f.opcode == 9),
        "the server pinged: {frames:?}"
    );
    let close = frames.last().and_then(raw::ServerFrame::close);
    assert_eq!(close, Some((1001, "idle timeout".to_owned())));
    server.handle.wait_for_ended_connections(1).await;
    assert_eq!(server.handle.live_addresses(), 0);
    server.stop().await;
}

#[tokio::test]
async fn rule_4_1_a_client_that_answers_pings_stays_connected() {
    let server = TestServer::start(quick_keepalive()).await;
    let mut client = server.client().await;
    client.init().await;
    // Eight pings span 320 ms, well past the 200 ms idle timeout; answering them (which
    // tungstenite does while we read) keeps the connection alive.
    let mut pings = 0;
    while pings < 8 {
        match tokio::time::timeout(PATIENCE, client.ws.next())
            .await
            .expect("a frame")
        {
            Some(Ok(Frame::Ping(_))) => pings += 1,
            other => panic!("expected pings, got {other:?}"),
        }
    }
    client.init().await;
    assert_eq!(server.handle.ended_connections(), 0);
    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn rule_4_2_an_incomplete_handshake_is_dropped_after_the_timeout() {
    let mut config = Config::ephemeral();
    config.handshake_timeout = Duration::from_millis(200);
    let server = TestServer::start(config).await;
    let addr = server.url.trim_start_matches("ws://").to_owned();
    let mut silent = TcpStream::connect(&addr).await.expect("connect");
    let mut half = TcpStream::connect(&addr).await.expect("connect");
    half.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    // A normal client is served meanwhile.
    let mut normal = server.client().await;
    normal.init().await;
    for stalled in [&mut silent, &mut half] {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(PATIENCE, stalled.read_to_end(&mut buf))
            .await
            .expect("closed in time");
        assert!(read.is_ok(), "{read:?}");
        assert!(
            buf.is_empty(),
            "the server answered: {}",
            String::from_utf8_lossy(&buf)
        );
    }
    normal.init().await;
    drop(normal);
    server.stop().await;
}

#[tokio::test]
async fn rule_4_3_beyond_the_connection_limit_handshakes_get_http_503() {
    let mut config = Config::ephemeral();
    config.max_connections = 2;
    let server = TestServer::start(config).await;
    let mut first = server.client().await;
    let mut second = server.client().await;
    match tokio_tungstenite::connect_async(&server.url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
            let body = response.body().clone().unwrap_or_default();
            assert_eq!(
                String::from_utf8_lossy(&body),
                "the relay is at its connection limit; try again later\n"
            );
        }
        other => panic!("expected HTTP 503, got {other:?}"),
    }
    // Existing connections are unaffected, and a freed slot can be used again.
    first.init().await;
    second.init().await;
    drop(first);
    server.handle.wait_for_ended_connections(1).await;
    let mut third = server.client().await;
    third.init().await;
    drop((second, third));
    server.stop().await;
}

#[tokio::test]
async fn rule_4_4_shutdown_flushes_queued_delivers_then_closes_1001() {
    let server = TestServer::default().await;
    let (mut a, mut b) = (server.client().await, server.client().await);
    let b_addr = b.init().await;
    for seq in 0..200 {
        a.route(&b_addr, &format!(r#"{{"seq":{seq}}}"#)).await;
    }
    let (errors, _) = a.sync().await; // all 200 accepted by the relay
    assert!(errors.is_empty(), "{errors:?}");
    server.handle.shutdown();
    for seq in 0..200 {
        assert_eq!(b.recv_json().await["msg"]["seq"], seq);
    }
    let close = b.recv_close().await.expect("close frame");
    assert_eq!(close.code, CloseCode::Away);
    assert_eq!(close.reason.as_str(), "server shutting down");
    assert_eq!(a.recv_close().await.map(|c| c.code), Some(CloseCode::Away));
    drop((a, b));
    server.stop().await;
}

#[tokio::test]
async fn rule_4_4_after_shutdown_no_new_connection_is_accepted() {
    let server = TestServer::default().await;
    let url = server.url.clone();
    server.stop().await;
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Io(err)) => {
            assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
        }
        other => panic!("expected the connection to be refused, got {other:?}"),
    }
}
