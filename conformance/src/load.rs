//! A load generator for any relay: pairs of clients route to each other; every delivery
//! is checked (exactly once, in order, unchanged) and its latency recorded.
//!
//! Each pair is two connections; each direction has a window: a sender keeps at most W
//! messages in flight (sent, not yet delivered). Pingpong is a window of 1. Every msg
//! carries its sequence number, its send time and padding to the requested size, so the
//! receiver can rebuild the exact DELIVER it must get: any loss, reordering, duplication
//! or change makes the run INVALID.
//!
//! Optionally, churn tasks run alongside the pairs (`churn`): each repeatedly connects,
//! INITs, sends one invalid message (which must get ERR 400), routes one message to its
//! own address (which must come back unchanged), and goes away — every other time with a
//! TCP reset instead of a closing handshake, as a killed client would. Each churn task
//! runs at most 10 cycles per second.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use compendium_client::{ClientBuilder, RawSocket};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message as Frame;

use crate::jsoneq::Exact;

/// How the pairs send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One message in flight per direction.
    Pingpong,
    /// `window` messages in flight per direction.
    Flood,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The relay: one URL, or one per node of a cluster. Each pair's two ends go to
    /// different nodes (pair i: nodes i and i+1), so every message crosses the cluster.
    pub urls: Vec<String>,
    /// Client pairs.
    pub pairs: usize,
    /// Size of each msg in bytes.
    pub size: usize,
    /// How long to send.
    pub duration: Duration,
    /// Pingpong or flood.
    pub mode: Mode,
    /// In-flight messages per direction in flood mode.
    pub window: usize,
    /// Churn tasks running alongside the pairs (0: none).
    pub churn: usize,
    /// TLS trust.
    pub client: ClientBuilder,
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Slowest.
    pub max: u64,
}

/// The result of a run: what `compendium-conformance load --json` prints (one object),
/// read back by `cargo xtask bench` and `soak` through this same type.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadReport {
    /// Pairs, size, mode, window as run.
    pub pairs: usize,
    /// msg size in bytes.
    pub size: usize,
    /// Mode.
    pub mode: Mode,
    /// Window per direction.
    pub window: usize,
    /// Seconds of sending.
    pub secs: f64,
    /// DELIVERs received and verified.
    pub messages: u64,
    /// `messages` per second of the run.
    pub msgs_per_sec: f64,
    /// Delivery latency.
    pub latency_us: Latency,
    /// Connect/INIT/invalid/route/leave cycles the churn tasks completed.
    pub churn_cycles: u64,
    /// False if anything was lost, reordered, duplicated or changed.
    pub valid: bool,
    /// What was wrong, if anything (first few problems).
    pub problems: Vec<String>,
}

impl LoadReport {
    /// Human-readable summary.
    #[must_use]
    pub fn text(&self) -> String {
        let l = &self.latency_us;
        let verdict = if self.valid {
            "VALID: every message arrived once, in order, unchanged".to_owned()
        } else {
            format!("INVALID: {}", self.problems.join("; "))
        };
        let churn = if self.churn_cycles > 0 {
            format!("{} churn cycles\n", self.churn_cycles)
        } else {
            String::new()
        };
        format!(
            "{} pairs, {} B, {:?} (window {}), {:.1} s\n{} messages, {:.0} msgs/s\nlatency µs: p50 {} p90 {} p99 {} p99.9 {} max {}\n{churn}{verdict}\n",
            self.pairs,
            self.size,
            self.mode,
            self.window,
            self.secs,
            self.messages,
            self.msgs_per_sec,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max
        )
    }
}

/// What `compendium-conformance load --idle N --json` prints once its connections are open
/// (one line, then it holds them).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdleReport {
    /// Connections asked for.
    pub idle: usize,
    /// Connections open and INITed.
    pub opened: usize,
    /// Connections that failed.
    pub failed: usize,
    /// The first few failures.
    pub errors: Vec<String>,
}

/// The msg for `seq`, sent at `t` µs after the run's start, padded to `size` bytes.
fn payload(seq: u64, t: u64, size: usize) -> String {
    let head = format!(r#"{{"seq":{seq},"t":{t},"pad":""#);
    let pad = size.saturating_sub(head.len() + 2);
    format!("{head}{}\"}}", "x".repeat(pad))
}

fn number_after(text: &str, key: &str) -> Option<u64> {
    let start = text.find(key)? + key.len();
    let digits: String = text[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// After sending stops, how long deliveries still in flight may take.
const DRAIN: Duration = Duration::from_secs(5);

async fn open(url: &str, client: &ClientBuilder) -> Result<(RawSocket, String), String> {
    let mut socket = client.connect_raw(url).await.map_err(|e| e.to_string())?;
    socket
        .send(Frame::text(r#"{"type":"INIT"}"#))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        match socket.next().await {
            Some(Ok(Frame::Text(text))) => {
                return match compendium_messages::Message::parse(text.as_str()) {
                    Ok(compendium_messages::Message::Initresp { ephe_wss_addr, .. }) => {
                        Ok((socket, ephe_wss_addr.to_string()))
                    }
                    _ => Err(format!(
                        "expected INITRESP, got {}",
                        crate::peer::clip(text.as_str())
                    )),
                };
            }
            Some(Ok(_)) => {}
            _ => return Err("connection ended before INITRESP".into()),
        }
    }
}

struct Shared {
    epoch: Instant,
    stop: AtomicBool,
    problems: std::sync::Mutex<Vec<String>>,
}

impl Shared {
    fn problem(&self, what: String) {
        let mut problems = self
            .problems
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if problems.len() < 10 {
            problems.push(what);
        }
    }
}

/// Run the load.
///
/// # Errors
/// If the pairs cannot be set up (connect or INIT failing).
pub async fn run(options: &LoadOptions) -> Result<LoadReport, String> {
    let window = match options.mode {
        Mode::Pingpong => 1,
        Mode::Flood => options.window.max(1),
    };
    if options.urls.is_empty() {
        return Err("no relay URL".into());
    }
    let node = |i: usize| options.urls[i % options.urls.len()].as_str();
    let mut ends = Vec::with_capacity(options.pairs * 2);
    for pair in 0..options.pairs {
        ends.push(open(node(pair), &options.client).await?);
        ends.push(open(node(pair + 1), &options.client).await?);
    }
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        stop: AtomicBool::new(false),
        problems: std::sync::Mutex::default(),
    });
    let mut sinks = Vec::new();
    let mut streams = Vec::new();
    let mut addresses = Vec::new();
    for (socket, address) in ends {
        let (sink, stream) = socket.split();
        sinks.push(sink);
        streams.push(stream);
        addresses.push(address);
    }
    let template =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    // Set once every sender has stopped: from then on the sent counts are final.
    let (senders_done, done_watch) = tokio::sync::watch::channel(false);
    let mut windows = Vec::new();
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    let mut streams: Vec<Option<_>> = streams.into_iter().map(Some).collect();
    for (index, mut sink) in sinks.into_iter().enumerate() {
        // Connection 2k sends to 2k+1 and back.
        let peer = index ^ 1;
        let to = addresses[peer].clone();
        let permits = Arc::new(Semaphore::new(window));
        windows.push(Arc::clone(&permits));
        let sent = Arc::new(AtomicU64::new(0));
        let (shared_s, permits_s, sent_s, size) = (
            Arc::clone(&shared),
            Arc::clone(&permits),
            Arc::clone(&sent),
            options.size,
        );
        senders.push(tokio::spawn(async move {
            let mut seq = 0u64;
            while !shared_s.stop.load(Ordering::Relaxed) {
                let Ok(permit) = permits_s.acquire().await else {
                    break;
                };
                permit.forget();
                if shared_s.stop.load(Ordering::Relaxed) {
                    break;
                }
                let t = u64::try_from(shared_s.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
                let frame = format!(
                    r#"{{"type":"ROUTE","EpheWssAddr":"{to}","msg":{}}}"#,
                    payload(seq, t, size)
                );
                if sink.send(Frame::text(frame)).await.is_err() {
                    shared_s.problem("a sender's connection failed".into());
                    break;
                }
                seq += 1;
                sent_s.store(seq, Ordering::Relaxed);
            }
            sink
        }));
        let Some(mut stream) = streams[peer].take() else {
            continue;
        };
        let (shared_r, size, mut histogram, mut done) = (
            Arc::clone(&shared),
            options.size,
            template.clone(),
            done_watch.clone(),
        );
        receivers.push(tokio::spawn(async move {
            let mut expected = 0u64;
            loop {
                let finished = *done.borrow();
                if finished && expected >= sent.load(Ordering::Relaxed) {
                    break;
                }
                let next = if finished {
                    // Everything sent should arrive promptly now; what does not is lost.
                    match tokio::time::timeout(DRAIN, stream.next()).await {
                        Ok(next) => next,
                        Err(_) => {
                            let lost = sent.load(Ordering::Relaxed).saturating_sub(expected);
                            shared_r.problem(format!("{lost} messages never arrived"));
                            break;
                        }
                    }
                } else {
                    tokio::select! {
                        next = stream.next() => next,
                        _ = done.changed() => continue,
                    }
                };
                let frame = match next {
                    Some(Ok(frame)) => frame,
                    _ => {
                        shared_r.problem("a receiver's connection ended".into());
                        break;
                    }
                };
                let Frame::Text(text) = frame else { continue };
                let text = text.as_str();
                let (Some(seq), Some(t)) =
                    (number_after(text, "\"seq\":"), number_after(text, "\"t\":"))
                else {
                    shared_r.problem(format!("not a load message: {}", crate::peer::clip(text)));
                    continue;
                };
                if seq != expected {
                    shared_r.problem(format!("expected message {expected}, got {seq}"));
                }
                expected = seq + 1;
                let want = format!(r#"{{"type":"DELIVER","msg":{}}}"#, payload(seq, t, size));
                if text != want && Exact::parse(text).ok() != Exact::parse(&want).ok() {
                    shared_r.problem(format!("message {seq} arrived changed"));
                }
                let now = u64::try_from(shared_r.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
                let _ = histogram.record(now.saturating_sub(t).max(1));
                permits.add_permits(1);
            }
            histogram
        }));
    }
    let churners: Vec<_> = (0..options.churn)
        .map(|i| {
            let (shared, url, client) = (
                Arc::clone(&shared),
                node(i).to_owned(),
                options.client.clone(),
            );
            tokio::spawn(async move { churn(&shared, &url, &client).await })
        })
        .collect();
    tokio::time::sleep(options.duration).await;
    shared.stop.store(true, Ordering::Relaxed);
    let mut churn_cycles = 0;
    for churner in churners {
        churn_cycles += churner.await.map_err(|e| e.to_string())?;
    }
    let sending = shared.epoch.elapsed();
    // Wake senders waiting for window space, let them finish their last send.
    for window in &windows {
        window.close();
    }
    for sender in senders {
        let _ = sender.await;
    }
    let _ = senders_done.send(true);
    let mut total = template;
    for receiver in receivers {
        let histogram = receiver.await.map_err(|e| e.to_string())?;
        let _ = total.add(histogram);
    }
    let problems = shared
        .problems
        .lock()
        .map(|p| p.clone())
        .unwrap_or_default();
    let messages = total.len();
    let secs = sending.as_secs_f64();
    Ok(LoadReport {
        pairs: options.pairs,
        size: options.size,
        mode: options.mode,
        window,
        secs,
        messages,
        msgs_per_sec: messages as f64 / secs,
        latency_us: Latency {
            p50: total.value_at_quantile(0.5),
            p90: total.value_at_quantile(0.9),
            p99: total.value_at_quantile(0.99),
            p999: total.value_at_quantile(0.999),
            max: total.max(),
        },
        churn_cycles,
        valid: problems.is_empty() && messages > 0,
        problems,
    })
}

/// At most one churn cycle per client per this period (10 per second).
const CHURN_PERIOD: Duration = Duration::from_millis(100);

/// How long a churn client waits for each reply before calling it lost.
const REPLY_PATIENCE: Duration = Duration::from_secs(10);

/// Churn until told to stop; returns the cycles completed. Anything unexpected is a
/// problem that makes the run INVALID.
async fn churn(shared: &Shared, url: &str, client: &ClientBuilder) -> u64 {
    let mut cycles = 0u64;
    // Paced, so a long run churns steadily instead of exhausting ephemeral ports.
    let mut pace = tokio::time::interval(CHURN_PERIOD);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !shared.stop.load(Ordering::Relaxed) {
        pace.tick().await;
        let (mut socket, address) = match open(url, client).await {
            Ok(opened) => opened,
            Err(err) => {
                shared.problem(format!("churn: {err}"));
                return cycles;
            }
        };
        let invalid = r#"{"type":"ROUTE","EpheWssAddr":"not-an-address","msg":{}}"#;
        let msg = format!(r#"{{"churn":{cycles}}}"#);
        let route = format!(r#"{{"type":"ROUTE","EpheWssAddr":"{address}","msg":{msg}}}"#);
        let deliver = format!(r#"{{"type":"DELIVER","msg":{msg}}}"#);
        if socket.send(Frame::text(invalid)).await.is_err()
            || socket.send(Frame::text(route)).await.is_err()
        {
            shared.problem("churn: a connection failed while sending".into());
            return cycles;
        }
        let (mut rejected, mut delivered) = (false, false);
        while !(rejected && delivered) {
            let text = match tokio::time::timeout(REPLY_PATIENCE, socket.next()).await {
                Ok(Some(Ok(Frame::Text(text)))) => text,
                Ok(Some(Ok(_))) => continue,
                Ok(_) => {
                    shared.problem("churn: the connection ended before its replies".into());
                    return cycles;
                }
                Err(_) => {
                    shared.problem("churn: a reply never arrived".into());
                    return cycles;
                }
            };
            let text = text.as_str();
            if text == deliver {
                delivered = true;
            } else if text.contains(r#""errCode":400"#) {
                rejected = true;
            } else {
                shared.problem(format!("churn: unexpected {}", crate::peer::clip(text)));
                return cycles;
            }
        }
        if cycles.is_multiple_of(2) {
            socket.get_ref().reset_on_drop();
            drop(socket);
        } else {
            let _ = socket.close(None).await;
            while let Ok(Some(Ok(_))) = tokio::time::timeout(REPLY_PATIENCE, socket.next()).await {}
        }
        cycles += 1;
    }
    cycles
}

/// Open `count` connections that have each done INIT (256 handshakes at a time), spread over
/// `urls` in turn: the sockets that opened, and why the others did not.
pub async fn open_idle(
    urls: &[String],
    client: &ClientBuilder,
    count: usize,
) -> (Vec<RawSocket>, Vec<String>) {
    let limit = Arc::new(Semaphore::new(256));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let url = urls.get(i % urls.len().max(1)).cloned().unwrap_or_default();
        let (limit, client) = (Arc::clone(&limit), client.clone());
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            open(&url, &client).await.map(|(socket, _)| socket)
        });
    }
    let mut sockets = Vec::with_capacity(count);
    let mut errors = Vec::new();
    while let Some(result) = tasks.join_next().await {
        match result {
            Ok(Ok(socket)) => sockets.push(socket),
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(e.to_string()),
        }
    }
    (sockets, errors)
}
