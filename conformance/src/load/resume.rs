//! Resume latency (protocol version 2): how long a client that lost its connection with a
//! full replay buffer waits, from opening its new connection to holding the last replayed
//! message. `compendium-conformance load --resume N` runs it; `cargo xtask bench` reports it.
//!
//! Each round: a version 2 client INITs; a version 1 sender routes `buffered` messages to
//! it; the client reads every one but acknowledges none (its ACKs lost with the link),
//! then its connection is reset (TCP RST). The clock starts before the new connection's
//! TCP connect and stops when the last of the `buffered` DELIVERs, replayed in order after
//! RESUMED, has arrived: connect, handshake, RESUME, replay — what a phone waits.

use std::time::{Duration, Instant};

use compendium_client::{ClientBuilder, RawSocket};
use compendium_messages::Message;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Message as Frame;

use super::{Latency, micros, payload};

/// How long any one frame may take before the round fails.
const PATIENCE: Duration = Duration::from_secs(10);

/// What `load --resume` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResumeReport {
    /// Messages in the replay buffer at each resume.
    pub buffered: usize,
    /// Size of each msg, in bytes.
    pub size: usize,
    /// Rounds measured.
    pub rounds: usize,
    /// From the new connection's start to the last replayed message, in µs.
    pub resume_us: Latency,
}

async fn next_text(socket: &mut RawSocket, what: &str) -> Result<String, String> {
    loop {
        match tokio::time::timeout(PATIENCE, socket.next()).await {
            Err(_) => return Err(format!("waiting for {what}: nothing within {PATIENCE:?}")),
            Ok(Some(Ok(Frame::Text(text)))) => {
                if text.as_str().starts_with(r#"{"type":"ROUTEACK""#) {
                    continue;
                }
                return Ok(text.as_str().to_owned());
            }
            Ok(Some(Ok(_))) => {}
            Ok(other) => {
                return Err(format!(
                    "waiting for {what}: the connection ended ({other:?})"
                ));
            }
        }
    }
}

async fn send(socket: &mut RawSocket, text: String) -> Result<(), String> {
    socket
        .send(Frame::text(text))
        .await
        .map_err(|e| format!("send: {e}"))
}

/// Read `count` DELIVERs; fails on anything else.
async fn delivers(socket: &mut RawSocket, count: usize) -> Result<(), String> {
    for i in 0..count {
        let text = next_text(socket, &format!("DELIVER {} of {count}", i + 1)).await?;
        if !matches!(
            Message::parse(&text),
            Ok(Message::Deliver { seq: Some(_), .. })
        ) {
            return Err(format!(
                "expected a numbered DELIVER, got {}",
                crate::peer::clip(&text)
            ));
        }
    }
    Ok(())
}

/// One round: the time from the new connection's start to the last replayed message.
async fn round(
    url: &str,
    client: &ClientBuilder,
    buffered: usize,
    size: usize,
) -> Result<Duration, String> {
    let mut phone = client
        .connect_raw_v2(url)
        .await
        .map_err(|e| e.to_string())?;
    send(&mut phone, Message::init().to_json()).await?;
    let text = next_text(&mut phone, "INITRESP").await?;
    let Ok(Message::Initresp {
        ephe_wss_addr,
        secret: Some(secret),
        ..
    }) = Message::parse(&text)
    else {
        return Err(format!(
            "expected a version 2 INITRESP, got {}",
            crate::peer::clip(&text)
        ));
    };
    let mut pc = client.connect_raw(url).await.map_err(|e| e.to_string())?;
    for seq in 0..buffered as u64 {
        let msg = payload(seq, 0, size);
        let route = format!(r#"{{"type":"ROUTE","EpheWssAddr":"{ephe_wss_addr}","msg":{msg}}}"#);
        pc.feed(Frame::text(route))
            .await
            .map_err(|e| format!("send: {e}"))?;
    }
    pc.flush().await.map_err(|e| format!("send: {e}"))?;
    if let Err(err) = delivers(&mut phone, buffered).await {
        // Most likely the relay refused part of the buffer: say so, with its words.
        return Err(
            match tokio::time::timeout(Duration::from_millis(200), next_text(&mut pc, "ERR")).await
            {
                Ok(Ok(refusal)) => format!(
                    "the relay refused part of the {buffered} messages (its answer to the \
                 sender: {}); its session buffer is smaller (compendium-server: \
                 --resume-buffer, --resume-buffer-bytes)",
                    crate::peer::clip(&refusal)
                ),
                _ => err,
            },
        );
    }
    phone.get_ref().reset_on_drop();
    drop(phone);

    let start = Instant::now();
    let mut phone = client
        .connect_raw_v2(url)
        .await
        .map_err(|e| e.to_string())?;
    let resume = format!(
        r#"{{"type":"RESUME","EpheWssAddr":"{ephe_wss_addr}","secret":"{}","seq":0}}"#,
        secret.expose_hex()
    );
    send(&mut phone, resume).await?;
    let text = next_text(&mut phone, "RESUMED").await?;
    if !matches!(Message::parse(&text), Ok(Message::Resumed { .. })) {
        return Err(format!(
            "expected RESUMED, got {}",
            crate::peer::clip(&text)
        ));
    }
    delivers(&mut phone, buffered).await?;
    let took = start.elapsed();
    send(&mut phone, r#"{"type":"END"}"#.to_owned()).await?;
    drop(pc);
    Ok(took)
}

/// Measure `rounds` resumes with `buffered` messages of `size` bytes waiting in each.
///
/// # Errors
/// The first round that went wrong, and how (the relay does not speak version 2, a
/// message missing, a refused RESUME).
pub async fn resume_latency(
    url: &str,
    client: &ClientBuilder,
    buffered: usize,
    size: usize,
    rounds: usize,
) -> Result<ResumeReport, String> {
    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    for i in 0..rounds {
        let took = round(url, client, buffered, size)
            .await
            .map_err(|e| format!("resume round {}: {e}", i + 1))?;
        let _ = histogram.record(micros(took).max(1));
    }
    Ok(ResumeReport {
        buffered,
        size,
        rounds,
        resume_us: Latency::of(&histogram),
    })
}
