//! A deliberately small relay for proving the suite can fail: correct enough to pass most
//! cases, with one injectable fault at a time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use compendium_messages::{Address, Message};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as Frame;

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
}

type Registry = Arc<Mutex<HashMap<Address, mpsc::UnboundedSender<String>>>>;

/// Where NeverRelease leaks the queues of ended connections: kept open, they go on
/// accepting messages that nobody will ever read.
static GRAVEYARD: Mutex<Vec<mpsc::UnboundedReceiver<String>>> = Mutex::new(Vec::new());

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
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let mut mine: Option<Address> = None;
    let mut counter = 0u128;
    loop {
        tokio::select! {
            Some(text) = rx.recv() => {
                if sink.send(Frame::text(text)).await.is_err() { break; }
            }
            frame = stream.next() => {
                let reply = match frame {
                    Some(Ok(Frame::Text(text))) => handle(text.as_str(), &registry, &tx, &mut mine, &mut counter, base, fault),
                    Some(Ok(Frame::Binary(_))) => Some(Message::err(400, "binary").to_json()),
                    Some(Ok(_)) => None,
                    _ => break,
                };
                if let Some(reply) = reply
                    && sink.send(Frame::text(reply)).await.is_err()
                {
                    break;
                }
            }
        }
    }
    if fault == Fault::NeverRelease {
        GRAVEYARD.lock().expect("lock").push(rx);
    } else if let Some(addr) = mine {
        registry.lock().expect("lock").remove(&addr);
    }
}

fn handle(
    text: &str,
    registry: &Registry,
    tx: &mpsc::UnboundedSender<String>,
    mine: &mut Option<Address>,
    counter: &mut u128,
    base: u128,
    fault: Fault,
) -> Option<String> {
    match Message::parse(text) {
        Err(err) => Some(Message::err(400, err.to_string()).to_json()),
        Ok(Message::Init) => {
            *counter += 1;
            let addr = Address::from_bits(base + *counter);
            let mut registry = registry.lock().expect("lock");
            if let Some(old) = mine.replace(addr)
                && fault != Fault::NeverRelease
            {
                registry.remove(&old);
            }
            registry.insert(addr, tx.clone());
            Some(Message::init_resp(addr).to_json())
        }
        Ok(Message::Route { ephe_wss_addr, msg }) => {
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
            match target {
                Some(target) if target.send(frame).is_ok() => None,
                _ => Some(Message::err(404, "Socket address not found").to_json()),
            }
        }
        Ok(other) => {
            Some(Message::err(400, format!("{} is for servers", other.type_name())).to_json())
        }
    }
}
