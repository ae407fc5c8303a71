//! Test support: our relay in-process on 127.0.0.1:0, and a scripted fake relay.
#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod front;
pub mod link;

use std::time::Duration;

use compendium_server::{Config, Handle, Server};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message as Frame;

/// Guard on waits so a bug fails a test instead of hanging it; never what a test waits for.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Print the relay's and client's logs when `RUST_LOG` is set (a failing test's story).
pub fn trace_if_asked() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// Start a relay on the current runtime; returns its URL and handle.
pub async fn relay(config: Config) -> (String, Handle) {
    trace_if_asked();
    let server = Server::bind(config).await.expect("bind");
    let url = format!("ws://{}", server.local_addrs()[0]);
    let handle = server.handle();
    tokio::spawn(server.run(std::future::pending()));
    (url, handle)
}

/// A relay on its own runtime, for tests that have none (the blocking API).
pub fn relay_in_background() -> (tokio::runtime::Runtime, String) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (url, _) = runtime.block_on(relay(Config::ephemeral()));
    (runtime, url)
}

/// A fake relay that accepts one connection, waits for one text frame, then answers
/// with `script` verbatim (text frames; a `None` entry sends a binary frame), then keeps
/// reading until the client goes away.
pub async fn fake_relay(script: Vec<Option<&'static str>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut ws = tokio_tungstenite::accept_async(tcp)
            .await
            .expect("handshake");
        let _ = ws.next().await;
        for frame in script {
            let frame = match frame {
                Some(text) => Frame::text(text),
                None => Frame::binary(vec![1, 2, 3]),
            };
            ws.send(frame).await.expect("send");
        }
        while let Some(Ok(_)) = ws.next().await {}
    });
    url
}

/// A fake relay that completes the handshake and then never reads or writes again.
pub async fn mute_relay() -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let ws = tokio_tungstenite::accept_async(tcp)
            .await
            .expect("handshake");
        std::future::pending::<()>().await;
        drop(ws);
    });
    (url, task)
}
