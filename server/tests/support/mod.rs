//! Shared test support: a real server on 127.0.0.1:0 and a raw tokio-tungstenite client.
#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod cluster;
pub mod hostile;
pub mod process;
pub mod raw;

use std::time::Duration;

use compendium_server::{Config, Handle, Server};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Upper bound on any single wait, so a broken server fails a test instead of hanging it.
/// It is a guard, never the thing a test waits for.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// `event`, awaited for at most [`PATIENCE`]: a test that waits for something that never
/// happens fails, naming it, instead of hanging the suite.
pub async fn within<F: std::future::Future>(what: &str, event: F) -> F::Output {
    tokio::time::timeout(PATIENCE, event)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {PATIENCE:?}"))
}

pub struct TestServer {
    pub url: String,
    pub handle: Handle,
    /// The /healthz + /metrics address, when the config asked for one.
    pub metrics: Option<std::net::SocketAddr>,
    task: JoinHandle<()>,
}

impl TestServer {
    pub async fn start(config: Config) -> Self {
        let server = Server::bind(config).await.expect("bind");
        let url = format!("ws://{}", server.local_addrs()[0]);
        let handle = server.handle();
        let metrics = server.metrics_addr();
        let task = tokio::spawn(server.run(std::future::pending()));
        Self {
            url,
            handle,
            metrics,
            task,
        }
    }

    /// `GET /healthz`: the status code and body.
    pub async fn health(&self) -> (u16, String) {
        let addr = self.metrics.expect("started with metrics_listen");
        let mut stream = TcpStream::connect(addr).await.expect("connect /healthz");
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(b"GET /healthz HTTP/1.0\r\nHost: relay\r\n\r\n")
            .await
            .expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .expect("an HTTP status line");
        let body = response
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        (status, body)
    }

    pub async fn default() -> Self {
        Self::start(Config::ephemeral()).await
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.url).await
    }

    /// Graceful shutdown; returns when `run` has returned.
    pub async fn stop(self) {
        self.handle.shutdown();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("run returns")
            .expect("no panic");
    }
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    pub async fn connect(url: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        // As real clients do (ours does): without it, a second small frame written before
        // the first is acknowledged waits for a delayed ACK, 40 ms on Linux.
        if let MaybeTlsStream::Plain(tcp) = ws.get_ref() {
            tcp.set_nodelay(true).expect("nodelay");
        }
        Self { ws }
    }

    pub async fn send(&mut self, text: &str) {
        self.ws
            .send(Frame::text(text.to_owned()))
            .await
            .expect("send");
    }

    pub async fn send_binary(&mut self, bytes: &[u8]) {
        self.ws
            .send(Frame::binary(bytes.to_vec()))
            .await
            .expect("send");
    }

    /// The next frame other than ping/pong.
    pub async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            let next = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("a frame in time");
            match next {
                Some(Ok(Frame::Ping(_) | Frame::Pong(_))) => continue,
                Some(Ok(frame)) => return Some(frame),
                Some(Err(_)) | None => return None,
            }
        }
    }

    pub async fn recv_text(&mut self) -> String {
        match self.next_frame().await {
            Some(Frame::Text(text)) => text.as_str().to_owned(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    pub async fn recv_json(&mut self) -> Value {
        serde_json::from_str(&self.recv_text().await).expect("JSON")
    }

    /// The close frame the server sends, if any, before the stream ends.
    pub async fn recv_close(&mut self) -> Option<CloseFrame> {
        match self.next_frame().await {
            Some(Frame::Close(frame)) => frame,
            Some(other) => panic!("expected a close frame, got {other:?}"),
            None => None,
        }
    }

    pub async fn init(&mut self) -> String {
        self.send(r#"{"type":"INIT"}"#).await;
        let reply = self.recv_json().await;
        assert_eq!(reply["type"], "INITRESP", "{reply}");
        reply["EpheWssAddr"].as_str().expect("address").to_owned()
    }

    pub async fn route(&mut self, to: &str, msg: &str) {
        self.send(&route(to, msg)).await;
    }

    /// Wait until the server has handled everything sent so far: frames from one
    /// connection are handled in order, so once a fresh INIT is answered, every earlier
    /// frame has been, and any ERR it caused has arrived first. Returns those replies.
    /// (Leaves the connection with a new address.)
    pub async fn sync(&mut self) -> (Vec<Value>, String) {
        self.send(r#"{"type":"INIT"}"#).await;
        let mut before = Vec::new();
        loop {
            let reply = self.recv_json().await;
            if reply["type"] == "INITRESP" {
                return (
                    before,
                    reply["EpheWssAddr"].as_str().expect("address").to_owned(),
                );
            }
            before.push(reply);
        }
    }

    /// End like a killed process: no close frame, and SO_LINGER 0 so the kernel sends a
    /// TCP reset instead of a FIN.
    pub fn vanish(self) {
        if let MaybeTlsStream::Plain(tcp) = self.ws.get_ref() {
            socket2::SockRef::from(tcp)
                .set_linger(Some(Duration::ZERO))
                .expect("linger");
        }
        drop(self);
    }

    /// The WebSocket closing handshake, then the end of the stream.
    pub async fn close(mut self) {
        self.ws.close(None).await.expect("close");
        while self.next_frame().await.is_some() {}
    }

    pub async fn expect_err(&mut self, code: u16) -> String {
        let reply = self.recv_json().await;
        assert_eq!(reply["type"], "ERR", "{reply}");
        assert_eq!(reply["errCode"], code, "{reply}");
        reply["errMsg"].as_str().expect("errMsg").to_owned()
    }
}

pub fn route(to: &str, msg: &str) -> String {
    format!(r#"{{"type":"ROUTE","EpheWssAddr":"{to}","msg":{msg}}}"#)
}

/// The exact DELIVER frame a relay must send for `msg` (rule 3.4).
pub fn deliver(msg: &str) -> String {
    format!(r#"{{"type":"DELIVER","msg":{msg}}}"#)
}

impl Client {
    /// Connect offering protocol version 2; panics unless the relay selects it.
    pub async fn connect_v2(url: &str) -> Self {
        let client = Self::connect_offering(url, compendium_messages::SUBPROTOCOL_V2).await;
        assert_eq!(
            client.1.as_deref(),
            Some(compendium_messages::SUBPROTOCOL_V2),
            "the relay did not select version 2"
        );
        client.0
    }

    /// Connect offering `subprotocols` (comma-separated); also returns the one selected.
    pub async fn connect_offering(url: &str, subprotocols: &str) -> (Self, Option<String>) {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = url.into_client_request().expect("request");
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            subprotocols.parse().expect("header value"),
        );
        let (ws, response) = tokio_tungstenite::connect_async(request)
            .await
            .expect("connect");
        if let MaybeTlsStream::Plain(tcp) = ws.get_ref() {
            tcp.set_nodelay(true).expect("nodelay");
        }
        let selected = response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (Self { ws }, selected)
    }

    /// Version 2 INIT: the address and the secret.
    pub async fn init_v2(&mut self) -> (String, String) {
        self.send(r#"{"type":"INIT"}"#).await;
        let reply = self.recv_json().await;
        assert_eq!(reply["type"], "INITRESP", "{reply}");
        (
            reply["EpheWssAddr"].as_str().expect("address").to_owned(),
            reply["secret"].as_str().expect("secret").to_owned(),
        )
    }

    /// The next frame that is not a ROUTEACK.
    pub async fn recv_json_skipping_acks(&mut self) -> Value {
        loop {
            let frame = self.recv_json().await;
            if frame["type"] != "ROUTEACK" {
                return frame;
            }
        }
    }
}

pub fn resume(address: &str, secret: &str, seq: u64) -> String {
    format!(r#"{{"type":"RESUME","EpheWssAddr":"{address}","secret":"{secret}","seq":{seq}}}"#)
}

pub fn route_v2(to: &str, seq: u64, msg: &str) -> String {
    format!(r#"{{"type":"ROUTE","EpheWssAddr":"{to}","seq":{seq},"msg":{msg}}}"#)
}

/// The close code the server sends on `client`, skipping the text frames before it.
pub async fn closed_with(client: &mut Client) -> Option<u16> {
    loop {
        match client.next_frame().await {
            Some(Frame::Close(frame)) => return frame.map(|f| u16::from(f.code)),
            Some(_) => {}
            None => return None,
        }
    }
}
