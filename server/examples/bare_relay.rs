//! BENCHMARK BASELINE — NOT A RELAY TO DEPLOY.
//!
//! The least a Compendium relay can be on this stack: plain tokio-tungstenite with its
//! default settings, a mutex-guarded map of address → unbounded channel, and no schema
//! validation, limits, backpressure, keepalive, metrics or graceful shutdown. It exists
//! so that `cargo xtask bench` can measure what the stack itself costs and report
//! compendium-server as a ratio of it.
//!
//!     cargo run --release -p compendium-server --example bare_relay -- 127.0.0.1:0
//!
//! Once bound, writes the readiness line that compendium-server's JSON log has (on stderr:
//! `{"fields":{"event":"ready","listen":"ws://ADDR"}}`), so the same harness starts both.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as Frame;

type Map = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<String>>>>;

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

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8001".into());
    let listener = TcpListener::bind(&listen).await?;
    eprintln!(
        r#"{{"fields":{{"event":"ready","listen":"ws://{}"}}}}"#,
        listener.local_addr()?
    );
    let map: Map = Arc::default();
    let counter = Arc::new(AtomicU64::new(1));
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        tokio::spawn(connection(tcp, Arc::clone(&map), Arc::clone(&counter)));
    }
}

async fn connection(tcp: tokio::net::TcpStream, map: Map, counter: Arc<AtomicU64>) {
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
                let address = format!("{:032x}", counter.fetch_add(1, Ordering::Relaxed));
                map.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(address.clone(), tx.clone());
                if let Some(old) = mine.replace(address.clone()) {
                    map.lock().unwrap_or_else(|p| p.into_inner()).remove(&old);
                }
                let _ = tx.send(format!(
                    r#"{{"type":"INITRESP","EpheWssAddr":"{address}"}}"#
                ));
            }
            ("ROUTE", Some(to), Some(msg)) => {
                let target = map
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(to)
                    .cloned();
                let delivered = target.is_some_and(|t| {
                    t.send(format!(r#"{{"type":"DELIVER","msg":{}}}"#, msg.get()))
                        .is_ok()
                });
                if !delivered {
                    let _ = tx.send(
                        r#"{"type":"ERR","errCode":404,"errMsg":"Socket address not found"}"#
                            .into(),
                    );
                }
            }
            _ => {}
        }
    }
    if let Some(address) = mine {
        map.lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&address);
    }
    writer.abort();
}
