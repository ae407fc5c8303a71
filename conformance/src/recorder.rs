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
    /// Each actor's request path, and whether it speaks protocol version 2.
    actors: Vec<(String, String, bool)>,
    steps: Vec<Value>,
    /// address (or version 2 resume secret) → placeholder name
    names: HashMap<String, String>,
    /// Secrets each address has been given (version 2), to name the next one.
    secrets: HashMap<String, usize>,
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
            .map(|(name, path, v2)| {
                let mut actor = serde_json::Map::new();
                if path != "/" {
                    actor.insert("path".into(), json!(path));
                }
                if *v2 {
                    actor.insert("subprotocol".into(), json!(SUBPROTOCOL_V2));
                }
                (name.clone(), Value::Object(actor))
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

/// The subprotocol of protocol version 2 (docs/protocol.md rule 6.1).
const SUBPROTOCOL_V2: &str = compendium_messages::SUBPROTOCOL_V2;

/// Proxy one connection as `actor`; it joins the session's actors once both sides are up.
async fn proxy(
    tcp: tokio::net::TcpStream,
    actor: String,
    upstream: &str,
    client: &ClientBuilder,
    log: &Mutex<Log>,
) -> Result<(), String> {
    let mut path = String::from("/");
    let mut v2 = false;
    // The callback's signature is tungstenite's; the large error type is theirs.
    #[allow(clippy::result_large_err)]
    let capture_path = |request: &Request, mut response: Response| {
        path = request
            .uri()
            .path_and_query()
            .map_or("/".to_owned(), ToString::to_string);
        // A client offering version 2 gets it here, and the upstream is asked for it; if
        // the upstream does not speak it, the client's connection is closed (1011) and
        // nothing is recorded for it: the handshake is answered before the upstream is.
        v2 = request
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim() == SUBPROTOCOL_V2);
        if v2 {
            response.headers_mut().insert(
                "sec-websocket-protocol",
                tokio_tungstenite::tungstenite::http::HeaderValue::from_static(SUBPROTOCOL_V2),
            );
        }
        Ok(response)
    };
    let mut downstream = tokio_tungstenite::accept_hdr_async(tcp, capture_path)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let url = format!("{upstream}{path}");
    let connected = if v2 {
        client.connect_raw_v2(&url).await
    } else {
        client.connect_raw(&url).await
    };
    let upstream_socket = match connected {
        Ok(socket) => socket,
        Err(err) => {
            let reason = if v2 {
                "the recorder's upstream does not speak compendium.v2"
            } else {
                "the recorder could not reach its upstream"
            };
            let _ = downstream
                .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                    code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Error,
                    reason: reason.into(),
                }))
                .await;
            return Err(format!("upstream: {err}"));
        }
    };
    lock(log).actors.push((actor.clone(), path, v2));
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

/// Replace every address in a client's frame by its placeholder (unknown ones: $NEWn),
/// and every resume secret the relay gave (version 2) by its own; an unknown secret stays
/// as it is (replayed, it is as wrong as it was).
fn placeholders_for_sent(log: &mut Log, text: &str) -> String {
    let mut out = text.to_owned();
    for candidate in hex_runs(text, 64) {
        if let Some(name) = log.names.get(&candidate) {
            out = out.replace(&candidate, &format!("${name}"));
        }
    }
    for candidate in hex_runs(&out, 32) {
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

/// Lowercase-hex runs of exactly `len` characters: 32 is what addresses look like, 64
/// resume secrets.
fn hex_runs(text: &str, len: usize) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut start = None;
    for (i, b) in bytes.iter().chain(std::iter::once(&b' ')).enumerate() {
        let hex = b.is_ascii_digit() || (b'a'..=b'f').contains(b);
        match (hex, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                if i - s == len {
                    found.push(text[s..i].to_owned());
                }
                start = None;
            }
            _ => {}
        }
    }
    found
}

/// A placeholder name for the resume secret `secret` the relay gave `address`: `S` and
/// the address's name, then a number for each later one (`SA`, `SA_2`, …).
fn name_secret(log: &mut Log, address: &str, secret: &str) -> String {
    let base = log.names.get(address).cloned().unwrap_or_default();
    let count = log.secrets.entry(address.to_owned()).or_default();
    *count += 1;
    let name = if *count == 1 {
        format!("S{base}")
    } else {
        format!("S{base}_{count}")
    };
    log.names.insert(secret.to_owned(), name.clone());
    name
}

fn record_received(log: &Mutex<Log>, actor: &str, frame: &Frame) {
    let mut log = lock(log);
    let (matcher, should) = match frame {
        Frame::Text(text) => match Message::parse(text.as_str()) {
            Ok(Message::Initresp {
                ephe_wss_addr,
                secret,
                ..
            }) => {
                let count = log.inits.entry(actor.to_owned()).or_default();
                *count += 1;
                let name = if *count == 1 {
                    actor.to_owned()
                } else {
                    format!("{actor}{count}")
                };
                let address = ephe_wss_addr.to_string();
                log.names.insert(address.clone(), name.clone());
                match secret {
                    // Version 2: the secret becomes a placeholder too; the grace is the
                    // relay's setting, not recorded.
                    Some(secret) => {
                        let secret_name = name_secret(&mut log, &address, &secret.expose_hex());
                        (
                            json!({"type": "INITRESP", "fields": {
                                "EpheWssAddr": format!("${name}"),
                                "secret": format!("${secret_name}"),
                            }}),
                            None,
                        )
                    }
                    None => (
                        json!({"json": {"type": "INITRESP", "EpheWssAddr": format!("${name}")}}),
                        None,
                    ),
                }
            }
            Ok(Message::Resumed {
                ephe_wss_addr,
                secret,
                seq,
                ..
            }) => {
                let address = ephe_wss_addr.to_string();
                let name = log.names.get(&address).cloned().unwrap_or_default();
                let secret_name = name_secret(&mut log, &address, &secret.expose_hex());
                (
                    json!({"type": "RESUMED", "fields": {
                        "EpheWssAddr": format!("${name}"),
                        "secret": format!("${secret_name}"),
                        "seq": seq,
                    }}),
                    None,
                )
            }
            // When ROUTEACKs come is the relay's choice (rule 6.5); replay skips them.
            Ok(Message::Routeack { .. }) => return,
            Ok(Message::Err {
                err_code,
                err_msg,
                route,
                seq,
                ..
            }) => {
                let mut fields = json!({"errCode": err_code});
                if let (Some(route), Some(seq)) = (route, seq) {
                    fields["route"] = json!(route);
                    fields["seq"] = json!(seq);
                }
                (
                    json!({"type": "ERR", "fields": fields}),
                    Some(json!({"fields": {"errMsg": err_msg}})),
                )
            }
            Ok(Message::Deliver { msg, seq, .. }) => {
                let raw = placeholders_for_sent(&mut log, msg.as_str());
                let value: Value = serde_json::from_str(&raw).unwrap_or(Value::Null);
                let mut deliver = json!({"type": "DELIVER", "msg": value});
                if let Some(seq) = seq {
                    deliver["seq"] = json!(seq);
                }
                (
                    json!({"json": deliver}),
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
