//! BENCHMARK BASELINE — NOT A RELAY TO DEPLOY.
//!
//! The least a cluster of Compendium relays joined through NATS can be on this stack:
//! `bare_relay` (plain tokio-tungstenite, a mutex-guarded map of address → unbounded
//! channel) plus one NATS subject per node. An address is the node's id (8 hex digits)
//! followed by a counter, so any node reads the holder off the address; a ROUTE to another
//! node's address is published once to that node's subject and the holder writes the
//! DELIVER it carries to its connection. No verdicts, no acknowledgements, no order or
//! loss handling, no validation, no presence: what the design's cross-node path costs at
//! the very least, so that `cargo xtask bench --cluster` can report the cluster's
//! cross-node rate as a ratio of it.
//!
//!     cargo run --release -p compendium-server --example bare_nats_bridge -- 127.0.0.1:0 nats://127.0.0.1:4222
//!
//! Once bound (and connected to NATS), writes the readiness line that compendium-server's
//! JSON log has (on stderr: `{"fields":{"event":"ready","listen":"ws://ADDR"}}`), so the
//! same harness starts both.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as Frame;

type Map = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<String>>>>;

/// An address: the node id's 8 hex digits, then 24 of a counter.
const ADDRESS_LEN: usize = 32;
const NODE_LEN: usize = 8;

/// Just enough of a message to route it.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(rename = "EpheWssAddr")]
    address: Option<&'a str>,
    #[serde(borrow)]
    msg: Option<&'a RawValue>,
}

/// What every connection shares.
struct Node {
    id: String,
    map: Map,
    counter: AtomicU64,
    nats: async_nats::Client,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:8001".into());
    let nats_url = args
        .next()
        .unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    let mut seed = [0u8; 4];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
    let id = format!("{:08x}", u32::from_be_bytes(seed));
    // The same queue sizes as compendium-server's cluster link, so neither side is
    // measured against a smaller buffer.
    let nats = async_nats::ConnectOptions::new()
        .client_capacity(1 << 16)
        .subscription_capacity(1 << 16)
        .connect(nats_url)
        .await?;
    let mut inbound = nats.subscribe(format!("bare.{id}")).await?;
    nats.flush().await?;
    let listener = TcpListener::bind(&listen).await?;
    let node = Arc::new(Node {
        id,
        map: Arc::default(),
        counter: AtomicU64::new(1),
        nats,
    });
    let map = Arc::clone(&node.map);
    tokio::spawn(async move {
        while let Some(message) = inbound.next().await {
            // The target's address, then the DELIVER to write to it.
            let payload = message.payload;
            let (Some(address), Some(text)) = (
                payload
                    .get(..ADDRESS_LEN)
                    .and_then(|a| std::str::from_utf8(a).ok()),
                payload
                    .get(ADDRESS_LEN..)
                    .and_then(|t| std::str::from_utf8(t).ok()),
            ) else {
                continue;
            };
            let target = map
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(address)
                .cloned();
            if let Some(target) = target {
                let _ = target.send(text.to_owned());
            }
        }
    });
    eprintln!(
        r#"{{"fields":{{"event":"ready","listen":"ws://{}"}}}}"#,
        listener.local_addr()?
    );
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        tokio::spawn(connection(tcp, Arc::clone(&node)));
    }
}

async fn connection(tcp: tokio::net::TcpStream, node: Arc<Node>) {
    let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let writer = tokio::spawn(async move {
        while let Some(text) = rx.recv().await {
            if sink.send(Frame::text(text)).await.is_err() {
                break;
            }
        }
    });
    let mut mine: Option<String> = None;
    while let Some(Ok(frame)) = stream.next().await {
        let Frame::Text(text) = frame else { continue };
        let Ok(envelope) = serde_json::from_str::<Envelope<'_>>(text.as_str()) else {
            continue;
        };
        match (envelope.kind, envelope.address, envelope.msg) {
            ("INIT", _, _) => {
                let count = node.counter.fetch_add(1, Ordering::Relaxed);
                let address = format!("{}{count:024x}", node.id);
                let mut map = node.map.lock().unwrap_or_else(|p| p.into_inner());
                map.insert(address.clone(), tx.clone());
                if let Some(old) = mine.replace(address.clone()) {
                    map.remove(&old);
                }
                drop(map);
                let _ = tx.send(format!(
                    r#"{{"type":"INITRESP","EpheWssAddr":"{address}"}}"#
                ));
            }
            ("ROUTE", Some(to), Some(msg)) => {
                let deliver = format!(r#"{{"type":"DELIVER","msg":{}}}"#, msg.get());
                match to.get(..NODE_LEN) {
                    Some(holder) if to.len() == ADDRESS_LEN && holder != node.id => {
                        let payload = Bytes::from(format!("{to}{deliver}"));
                        if node
                            .nats
                            .publish(format!("bare.{holder}"), payload)
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                    _ => {
                        let target = node
                            .map
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get(to)
                            .cloned();
                        if target.is_none_or(|t| t.send(deliver).is_err()) {
                            let _ = tx.send(
                                r#"{"type":"ERR","errCode":404,"errMsg":"Socket address not found"}"#
                                    .into(),
                            );
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(address) = mine {
        node.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&address);
    }
    writer.abort();
}
