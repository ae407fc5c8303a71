//! A recording proxy: clients connect to it, it forwards every frame to the upstream
//! relay and back, and writes what happened as a session file — so a real session can
//! become a regression case.
//!
//! Actors are named in the order their connections are accepted (A, B, C, …). Addresses
//! the relay assigns become placeholders named for the actor that received them (`$A`,
//! then `$A2` after a re-INIT, …); addresses clients use that the relay never assigned
//! become `$NEW1`, … .
//! ERR codes are recorded as requirements and ERR texts as recommendations (`should`),
//! since other relays may word errors differently; a DELIVER's msg bytes likewise.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use compendium_client::ClientBuilder;
use compendium_messages::Message;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

/// Metadata for the recorded session file.
#[derive(Debug, Clone)]
pub struct Labels {
    /// The case id to write (`RULE/N`).
    pub id: String,
    /// One line describing the session.
    pub description: String,
}

impl Default for Labels {
    fn default() -> Self {
        Self {
            id: "0.0/1".into(),
            description: "recorded session".into(),
        }
    }
}

/// A bound recording proxy.
pub struct Recorder {
    listener: TcpListener,
    upstream: String,
    client: ClientBuilder,
    log: Arc<Mutex<Log>>,
}

#[derive(Default)]
struct Log {
    actors: Vec<(String, String)>,
    steps: Vec<Value>,
    /// address → placeholder name
    names: HashMap<String, String>,
    /// actor → how many addresses it has been assigned
    inits: HashMap<String, usize>,
    fresh: usize,
}

fn lock(log: &Mutex<Log>) -> std::sync::MutexGuard<'_, Log> {
    log.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Recorder {
    /// Listen on `listen` (port 0 picks one), forwarding to `upstream`.
    ///
    /// # Errors
    /// If `listen` cannot be bound.
    pub async fn bind(
        listen: SocketAddr,
        upstream: &str,
        client: ClientBuilder,
    ) -> std::io::Result<Self> {
        Ok(Self {
            listener: TcpListener::bind(listen).await?,
            upstream: upstream.trim_end_matches('/').to_owned(),
            client,
            log: Arc::default(),
        })
    }

    /// The address clients should connect to.
    ///
    /// # Errors
    /// If the socket has no local address (not expected).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Proxy until `stop` completes, then return the session recorded so far.
    pub async fn run(self, stop: impl Future<Output = ()>, labels: Labels) -> Value {
        let Self {
            listener,
            upstream,
            client,
            log,
        } = self;
        let accept = async {
            // Actors are named in the order their connections are accepted, here, and not
            // when their proxies are ready: those race, and a client that connects after
            // another has finished connecting must get the later name.
            for index in 0.. {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let actor = actor_name(index);
                let (upstream, client, log) = (upstream.clone(), client.clone(), Arc::clone(&log));
                tokio::spawn(async move {
                    if let Err(err) = proxy(tcp, actor, &upstream, &client, &log).await {
                        eprintln!("recorder: {err}");
                    }
                });
            }
        };
        tokio::select! {
            () = stop => {}
            () = accept => {}
        }
        let log = lock(&log);
        let actors: serde_json::Map<String, Value> = log
            .actors
            .iter()
            .map(|(name, path)| {
                (
                    name.clone(),
                    if path == "/" {
                        json!({})
                    } else {
                        json!({ "path": path })
                    },
                )
            })
            .collect();
        let rule = labels.id.split('/').next().unwrap_or("0.0").to_owned();
        json!({
            "$schema": "../session.schema.json",
            "id": labels.id,
            "rule": rule,
            "level": "MUST",
            "description": labels.description,
            "requirement": format!("Recorded from {upstream}: the relay behaved like this; another relay must too."),
            "actors": actors,
            "steps": log.steps,
        })
    }
}

/// Actor names: A … Z, then A1 … Z1, and so on.
fn actor_name(index: usize) -> String {
    let letter = char::from(b'A' + u8::try_from(index % 26).unwrap_or(0));
    match index / 26 {
        0 => letter.to_string(),
        round => format!("{letter}{round}"),
    }
}

/// Proxy one connection as `actor`; it joins the session's actors once both sides are up.
async fn proxy(
    tcp: tokio::net::TcpStream,
    actor: String,
    upstream: &str,
    client: &ClientBuilder,
    log: &Mutex<Log>,
) -> Result<(), String> {
    let mut path = String::from("/");
    // The callback's signature is tungstenite's; the large error type is theirs.
    #[allow(clippy::result_large_err)]
    let capture_path = |request: &Request, response: Response| {
        path = request
            .uri()
            .path_and_query()
            .map_or("/".to_owned(), ToString::to_string);
        Ok(response)
    };
    let downstream = tokio_tungstenite::accept_hdr_async(tcp, capture_path)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let upstream_socket = client
        .connect_raw(&format!("{upstream}{path}"))
        .await
        .map_err(|e| format!("upstream: {e}"))?;
    lock(log).actors.push((actor.clone(), path));
    let (mut down_tx, mut down_rx) = downstream.split();
    let (mut up_tx, mut up_rx) = upstream_socket.split();
    loop {
        tokio::select! {
            frame = down_rx.next() => match frame {
                Some(Ok(frame)) => {
                    let is_close = matches!(frame, Frame::Close(_));
                    record_sent(log, &actor, &frame);
                    if up_tx.send(frame).await.is_err() || is_close {
                        break;
                    }
                }
                _ => {
                    lock(log).steps.push(json!({"action": "drop", "actor": actor}));
                    break;
                }
            },
            frame = up_rx.next() => match frame {
                Some(Ok(frame)) => {
                    let is_close = matches!(frame, Frame::Close(_));
                    record_received(log, &actor, &frame);
                    if down_tx.send(frame).await.is_err() || is_close {
                        break;
                    }
                }
                _ => break,
            },
        }
    }
    Ok(())
}

fn record_sent(log: &Mutex<Log>, actor: &str, frame: &Frame) {
    let mut log = lock(log);
    let step = match frame {
        Frame::Text(text) => {
            let text = placeholders_for_sent(&mut log, text.as_str());
            // Canonical JSON is recorded readably; anything else byte for byte.
            let parsed = serde_json::from_str::<Value>(&text).ok();
            let canonical = parsed.as_ref().map(Value::to_string);
            match parsed {
                Some(value) if canonical.as_deref() == Some(text.as_str()) => {
                    json!({"action": "send", "actor": actor, "json": value})
                }
                _ => json!({"action": "send_text", "actor": actor, "text": text}),
            }
        }
        Frame::Binary(bytes) => {
            json!({"action": "send_binary", "actor": actor, "text": String::from_utf8_lossy(bytes)})
        }
        Frame::Ping(bytes) => {
            json!({"action": "ping", "actor": actor, "text": String::from_utf8_lossy(bytes)})
        }
        Frame::Close(_) => json!({"action": "close", "actor": actor}),
        Frame::Pong(_) | Frame::Frame(_) => return,
    };
    log.steps.push(step);
}

/// Replace every address in a client's frame by its placeholder (unknown ones: $NEWn).
fn placeholders_for_sent(log: &mut Log, text: &str) -> String {
    let mut out = text.to_owned();
    for candidate in hex_runs(text) {
        let name = match log.names.get(&candidate) {
            Some(name) => name.clone(),
            None => {
                log.fresh += 1;
                let name = format!("NEW{}", log.fresh);
                log.names.insert(candidate.clone(), name.clone());
                name
            }
        };
        out = out.replace(&candidate, &format!("${name}"));
    }
    out
}

/// 32-character lowercase-hex runs: what addresses look like.
fn hex_runs(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut start = None;
    for (i, b) in bytes.iter().chain(std::iter::once(&b' ')).enumerate() {
        let hex = b.is_ascii_digit() || (b'a'..=b'f').contains(b);
        match (hex, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                if i - s == 32 {
                    found.push(text[s..i].to_owned());
                }
                start = None;
            }
            _ => {}
        }
    }
    found
}

fn record_received(log: &Mutex<Log>, actor: &str, frame: &Frame) {
    let mut log = lock(log);
    let (matcher, should) = match frame {
        Frame::Text(text) => match Message::parse(text.as_str()) {
            Ok(Message::Initresp { ephe_wss_addr, .. }) => {
                let count = log.inits.entry(actor.to_owned()).or_default();
                *count += 1;
                let name = if *count == 1 {
                    actor.to_owned()
                } else {
                    format!("{actor}{count}")
                };
                log.names.insert(ephe_wss_addr.to_string(), name.clone());
                (
                    json!({"json": {"type": "INITRESP", "EpheWssAddr": format!("${name}")}}),
                    None,
                )
            }
            Ok(Message::Err {
                err_code, err_msg, ..
            }) => (
                json!({"type": "ERR", "fields": {"errCode": err_code}}),
                Some(json!({"fields": {"errMsg": err_msg}})),
            ),
            Ok(Message::Deliver { msg, .. }) => {
                let raw = placeholders_for_sent(&mut log, msg.as_str());
                let value: Value = serde_json::from_str(&raw).unwrap_or(Value::Null);
                (
                    json!({"json": {"type": "DELIVER", "msg": value}}),
                    Some(json!({"raw_members": {"msg": raw}})),
                )
            }
            _ => (
                json!({"text": placeholders_for_sent(&mut log, text.as_str())}),
                None,
            ),
        },
        Frame::Binary(_) => (json!({"frame": "binary"}), None),
        Frame::Pong(bytes) => (
            json!({"frame": "pong", "text": String::from_utf8_lossy(bytes)}),
            None,
        ),
        Frame::Close(close) => match close {
            Some(close) => (
                json!({"frame": "close", "close_code": u16::from(close.code)}),
                None,
            ),
            None => (json!({"frame": "close"}), None),
        },
        Frame::Ping(_) | Frame::Frame(_) => return,
    };
    let mut step = json!({"action": "expect", "actor": actor, "match": matcher});
    if let Some(should) = should {
        step["should"] = should;
    }
    log.steps.push(step);
}
