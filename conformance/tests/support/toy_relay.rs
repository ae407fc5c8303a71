//! A deliberately small relay for proving the suite can fail: correct enough to pass most
//! cases, with one injectable fault at a time. Each fault is a kind of relay the suite
//! meets in the wild: one that hangs up on bad input (Python's `websockets` closes with
//! 1011 when its handler raises), one that re-encodes JSON, one that never answers, one
//! that answers garbage, one that is slow, one that blocks the sender instead of refusing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use compendium_messages::{Address, Message};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// None: a plain relay.
    None,
    /// DELIVER carries an extra member (`"from"`).
    ExtraDeliverMember,
    /// Addresses are never released on disconnect or re-INIT.
    NeverRelease,
    /// `msg` is decoded and re-encoded (f64 numbers, sorted keys): JSON-equal only where
    /// numbers survive f64.
    Reencode,
    /// Every frame it sends is re-encoded as Python's `json.dumps` writes it: `", "` and
    /// `": "` separators, non-ASCII escaped, `\/` unescaped; numbers and member order as
    /// received. Always JSON-equal, never byte-identical.
    PythonStyle,
    /// Invalid input (not a valid client message, or a binary frame) closes the connection
    /// with 1011 instead of an ERR 400.
    HangUpOnInvalid,
    /// Accepts TCP connections and never reads or writes a byte: no handshake.
    NeverHandshake,
    /// Completes the handshake, then answers every frame with a text frame that is not JSON.
    Garbage,
    /// Completes the handshake, then closes at once with 1001.
    ClosesEveryConnection,
    /// Sends everything it sends this much later: replies, DELIVERs, close frames.
    Slow(Duration),
    /// Delivers by writing to the target's socket before reading the sender's next frame:
    /// a target that does not read stops the relay reading its sender. No 503.
    BlocksTheSender,
    /// As BlocksTheSender, but silently drops every 10th DELIVER.
    BlocksTheSenderAndLoses,
}

type Sink = futures_util::stream::SplitSink<
    tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    Frame,
>;

/// A connection's outbound side as the others see it.
#[derive(Clone)]
enum Outbox {
    /// A queue its own task writes out.
    Queue(mpsc::UnboundedSender<String>),
    /// Its socket, written by whoever delivers (and waited for while it is full).
    Direct(Arc<tokio::sync::Mutex<Sink>>),
}

impl Outbox {
    /// Deliver `frame`; `false` if the connection is gone.
    async fn push(&self, frame: String) -> bool {
        match self {
            Self::Queue(tx) => tx.send(frame).is_ok(),
            Self::Direct(sink) => sink.lock().await.send(Frame::text(frame)).await.is_ok(),
        }
    }
}

type Registry = Arc<Mutex<HashMap<Address, Outbox>>>;

/// Where NeverRelease leaks the queues of ended connections: kept open, they go on
/// accepting messages that nobody will ever read.
static GRAVEYARD: Mutex<Vec<mpsc::UnboundedReceiver<String>>> = Mutex::new(Vec::new());

/// The text Garbage sends for every frame.
pub const GARBAGE: &str = "\u{1}garbage{[ not json";

/// Start the toy relay; its URL.
pub async fn start(fault: Fault) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}", listener.local_addr().expect("addr"));
    let registry: Registry = Arc::default();
    tokio::spawn(async move {
        let mut next = 1u128;
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            if fault == Fault::NeverHandshake {
                // Hold the connection open, silent, until the test's runtime ends.
                tokio::spawn(async move {
                    let _held = tcp;
                    std::future::pending::<()>().await;
                });
                continue;
            }
            let registry = Arc::clone(&registry);
            let base = next << 64;
            next += 1;
            tokio::spawn(connection(tcp, registry, fault, base));
        }
    });
    url
}

async fn connection(tcp: tokio::net::TcpStream, registry: Registry, fault: Fault, base: u128) {
    let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
        return;
    };
    let (sink, mut stream) = ws.split();
    let sink = Arc::new(tokio::sync::Mutex::new(sink));
    if fault == Fault::ClosesEveryConnection {
        let _ = sink
            .lock()
            .await
            .send(close(CloseCode::Away, "going away"))
            .await;
        while let Some(Ok(_)) = stream.next().await {}
        return;
    }
    let delay = match fault {
        Fault::Slow(delay) => Some(delay),
        _ => None,
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let outbox = if matches!(
        fault,
        Fault::BlocksTheSender | Fault::BlocksTheSenderAndLoses
    ) {
        Outbox::Direct(Arc::clone(&sink))
    } else {
        Outbox::Queue(tx)
    };
    let mut conn = Conn {
        mine: None,
        assigned: 0,
        routed: 0,
        base,
    };
    loop {
        let send = tokio::select! {
            Some(text) = rx.recv() => Some(Frame::text(render(fault, &text))),
            frame = stream.next() => match frame {
                Some(Ok(Frame::Text(text))) => {
                    let reply = handle(text.as_str(), &registry, &outbox, &mut conn, fault).await;
                    reply.map(|reply| match reply {
                        Reply::Text(text) => Frame::text(render(fault, &text)),
                        Reply::HangUp => close(CloseCode::Error, "internal error"),
                    })
                }
                Some(Ok(Frame::Binary(_))) => Some(match fault {
                    Fault::Garbage => Frame::text(GARBAGE),
                    Fault::HangUpOnInvalid => close(CloseCode::Error, "internal error"),
                    _ => Frame::text(render(fault, &Message::err(400, "binary").to_json())),
                }),
                Some(Ok(_)) => None,
                _ => break,
            },
        };
        if let Some(frame) = send {
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            let closing = matches!(frame, Frame::Close(_));
            if sink.lock().await.send(frame).await.is_err() || closing {
                break;
            }
        }
    }
    // Let a closing handshake we began finish before the socket goes.
    while let Some(Ok(_)) = stream.next().await {}
    if fault == Fault::NeverRelease {
        GRAVEYARD.lock().expect("lock").push(rx);
    } else if let Some(addr) = conn.mine {
        registry.lock().expect("lock").remove(&addr);
    }
}

fn close(code: CloseCode, reason: &str) -> Frame {
    Frame::Close(Some(CloseFrame {
        code,
        reason: reason.to_owned().into(),
    }))
}

/// The frame as this relay writes it.
fn render(fault: Fault, text: &str) -> String {
    match fault {
        Fault::PythonStyle => python_dumps(text),
        _ => text.to_owned(),
    }
}

enum Reply {
    Text(String),
    HangUp,
}

/// One connection's state.
struct Conn {
    /// Its address, if it sent INIT.
    mine: Option<Address>,
    /// Addresses it was given: the next is `base + assigned + 1`.
    assigned: u128,
    /// ROUTEs it sent to a live address.
    routed: u64,
    /// Its addresses' high bits, unique per connection.
    base: u128,
}

async fn handle(
    text: &str,
    registry: &Registry,
    outbox: &Outbox,
    conn: &mut Conn,
    fault: Fault,
) -> Option<Reply> {
    if fault == Fault::Garbage {
        return Some(Reply::Text(GARBAGE.to_owned()));
    }
    let invalid = |message: String| {
        Some(if fault == Fault::HangUpOnInvalid {
            Reply::HangUp
        } else {
            Reply::Text(Message::err(400, message).to_json())
        })
    };
    match Message::parse(text) {
        Err(err) => invalid(err.to_string()),
        Ok(Message::Init { .. }) => {
            conn.assigned += 1;
            let addr = Address::from_bits(conn.base + conn.assigned);
            let mut registry = registry.lock().expect("lock");
            if let Some(old) = conn.mine.replace(addr)
                && fault != Fault::NeverRelease
            {
                registry.remove(&old);
            }
            registry.insert(addr, outbox.clone());
            Some(Reply::Text(Message::init_resp(addr).to_json()))
        }
        Ok(Message::Route {
            ephe_wss_addr, msg, ..
        }) => {
            let frame = match fault {
                Fault::ExtraDeliverMember => format!(
                    r#"{{"type":"DELIVER","msg":{},"from":"relay"}}"#,
                    msg.as_str()
                ),
                Fault::Reencode => {
                    let value: serde_json::Value = msg.decode().unwrap_or_default();
                    format!(r#"{{"type":"DELIVER","msg":{value}}}"#)
                }
                _ => Message::deliver(msg).to_json(),
            };
            let target = registry.lock().expect("lock").get(&ephe_wss_addr).cloned();
            if target.is_some() {
                conn.routed += 1;
                if fault == Fault::BlocksTheSenderAndLoses && conn.routed.is_multiple_of(10) {
                    return None;
                }
            }
            match target {
                // BlocksTheSender waits here, not reading its sender, while the target's
                // socket is full.
                Some(target) if target.push(frame).await => None,
                _ => Some(Reply::Text(
                    Message::err(404, "Socket address not found").to_json(),
                )),
            }
        }
        Ok(other) => invalid(format!("{} is for servers", other.type_name())),
    }
}

/// `text` (one JSON value) as Python's `json.dumps` writes it by default: `", "` and `": "`
/// between items, no other whitespace, strings with non-ASCII and control characters
/// escaped (`\u00e9`, `\n`) and `/` unescaped; numbers, member order and duplicates as
/// written. A string that cannot be decoded (a lone surrogate) is kept as written.
pub fn python_dumps(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        match c {
            '"' => {
                let end = string_end(rest);
                let token = &rest[..end];
                match serde_json::from_str::<String>(token) {
                    Ok(decoded) => escape_ascii(&decoded, &mut out),
                    Err(_) => out.push_str(token),
                }
                rest = &rest[end..];
                continue;
            }
            ',' => out.push_str(", "),
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// The length of the string token at the start of `text` (which starts with `"`).
fn string_end(text: &str) -> usize {
    let bytes = text.as_bytes();
    let mut i = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

fn escape_ascii(decoded: &str, out: &mut String) {
    out.push('"');
    for c in decoded.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if c.is_ascii() && !c.is_ascii_control() => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
}
