//! A load generator for any relay: pairs of clients route to each other; every delivery
//! is checked (exactly once, in order, unchanged) and its latency recorded.
//!
//! Each pair is two connections, and each connection sends to the other. In closed loop a
//! sender keeps at most W messages in flight (sent, not yet delivered): pingpong is a window
//! of 1, flood a window of W. In open loop ([`Mode::Open`]) each sender follows a timetable
//! instead ([`Schedule`]): the rate asked for, spread evenly over all senders, whether or not
//! earlier messages came back, with latency counted from when each message was due
//! (see the `schedule` module on coordinated omission). Every msg carries its sequence
//! number, its stamp and padding to the requested size, so the receiver can rebuild the
//! exact DELIVER it must get: any loss, reordering, duplication or change makes the run
//! INVALID, and so does an open-loop generator that fell behind its timetable.
//!
//! Optionally, churn tasks run alongside the pairs (`churn`): each repeatedly connects,
//! INITs, sends one invalid message (which must get ERR 400), routes one message to its
//! own address (which must come back unchanged), and goes away — every other time with a
//! TCP reset instead of a closing handshake, as a killed client would. Each churn task
//! runs at most 10 cycles per second.
//!
//! With `resumable`, every connection negotiates protocol version 2 (`compendium.v2`,
//! docs/protocol.md section 6) as a resumable client would: ROUTEs are numbered, DELIVERs
//! carry their stream number and are acknowledged with one ACK per 32, ROUTEACKs are
//! read and skipped. It measures what version 2 costs a relay on the same workload.

mod churn;
mod pacer;
mod report;
mod resume;
mod schedule;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use compendium_client::{ClientBuilder, RawSocket};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message as Frame;

use crate::jsoneq::Exact;
pub use report::{IdleReport, Latency, LoadReport, ScheduleKept};
pub use resume::{ResumeReport, resume_latency};
pub use schedule::{Schedule, latency_us, micros};

/// How the pairs send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Closed loop, one message in flight per direction.
    Pingpong,
    /// Closed loop, `window` messages in flight per direction.
    Flood,
    /// Open loop: `rate` messages per second over all pairs, on a fixed timetable.
    Open,
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
    /// Pingpong, flood or open loop.
    pub mode: Mode,
    /// In-flight messages per direction in flood mode.
    pub window: usize,
    /// Messages per second over all pairs in open loop (ignored otherwise).
    pub rate: f64,
    /// Churn tasks running alongside the pairs (0: none).
    pub churn: usize,
    /// TLS trust.
    pub client: ClientBuilder,
    /// Protocol version 2 (resumable sessions) on every pair connection.
    pub resumable: bool,
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

/// Acknowledge (version 2) after this many stream messages, as the client library does.
const ACK_EVERY: u64 = 32;

async fn open(
    url: &str,
    client: &ClientBuilder,
    resumable: bool,
) -> Result<(RawSocket, String), String> {
    let mut socket = if resumable {
        client.connect_raw_v2(url).await
    } else {
        client.connect_raw(url).await
    }
    .map_err(|e| e.to_string())?;
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
    /// When the run started: stamps and due times count from here.
    epoch: Instant,
    /// Set when sending stops.
    stop: AtomicBool,
    /// When sending stopped, from `epoch` (set just before `stop`).
    stopped_at: std::sync::OnceLock<Duration>,
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

/// An open-loop run is INVALID if its senders had sent less than this share of the
/// messages due: the relay then did not get the load asked for.
const MIN_KEPT: f64 = 0.99;

/// After the stop, how long an open-loop sender may still catch up with the messages that
/// were due before it (a generator briefly starved of CPU at the very end is not behind).
const GRACE: Duration = Duration::from_millis(100);

/// At most this many overdue messages per write, so a sender far behind its timetable
/// still yields to the other tasks.
const CATCH_UP: u64 = 64;

/// A connection's sending half, shared by its sender and (version 2, for ACKs) by the
/// receiver of what comes in on it.
type Sink = Arc<tokio::sync::Mutex<SplitSink<RawSocket, Frame>>>;

/// What a sender hands back when it stops.
struct Sent {
    /// Kept so its connection stays open until every receiver is done.
    _sink: Sink,
    /// Open loop: how late each message left, in µs.
    lag: Option<Histogram<u64>>,
    /// Messages sent.
    count: u64,
}

/// The ROUTE of message `seq`; version 2 numbers it `seq + 1` (rule 6.5).
fn route(to: &str, seq: u64, stamp_us: u64, size: usize, resumable: bool) -> String {
    let msg = payload(seq, stamp_us, size);
    if resumable {
        let number = seq + 1;
        format!(r#"{{"type":"ROUTE","EpheWssAddr":"{to}","seq":{number},"msg":{msg}}}"#)
    } else {
        format!(r#"{{"type":"ROUTE","EpheWssAddr":"{to}","msg":{msg}}}"#)
    }
}

/// What a receiver makes of a text frame: a load message (its stream number in version
/// 2, its `seq` and stamp, and the exact DELIVER it must be), nothing (a ROUTEACK), or a
/// problem.
enum Incoming {
    Message {
        stream: Option<u64>,
        seq: u64,
        t: u64,
        want: String,
    },
    Skip,
    Foreign,
}

fn incoming(text: &str, size: usize, resumable: bool) -> Incoming {
    let (stream, body) = if resumable {
        if text.starts_with(r#"{"type":"ROUTEACK""#) {
            return Incoming::Skip;
        }
        // {"type":"DELIVER","seq":S,"msg":…}: the head's number, then the msg.
        match (number_after(text, "\"seq\":"), text.find(",\"msg\":")) {
            (Some(stream), Some(at)) => (Some(stream), &text[at..]),
            _ => return Incoming::Foreign,
        }
    } else {
        (None, text)
    };
    let (Some(seq), Some(t)) = (number_after(body, "\"seq\":"), number_after(body, "\"t\":"))
    else {
        return Incoming::Foreign;
    };
    let msg = payload(seq, t, size);
    let want = match stream {
        Some(n) => format!(r#"{{"type":"DELIVER","seq":{n},"msg":{msg}}}"#),
        None => format!(r#"{{"type":"DELIVER","msg":{msg}}}"#),
    };
    Incoming::Message {
        stream,
        seq,
        t,
        want,
    }
}

/// Closed loop: send whenever the window has room, stamped with the send time.
async fn send_windowed(
    sink: Sink,
    to: String,
    size: usize,
    resumable: bool,
    permits: Arc<Semaphore>,
    shared: Arc<Shared>,
    sent: Arc<AtomicU64>,
) -> Sent {
    let mut seq = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        let Ok(permit) = permits.acquire().await else {
            break;
        };
        permit.forget();
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let t = micros(shared.epoch.elapsed());
        if sink
            .lock()
            .await
            .send(Frame::text(route(&to, seq, t, size, resumable)))
            .await
            .is_err()
        {
            shared.problem("a sender's connection failed".into());
            break;
        }
        seq += 1;
        sent.store(seq, Ordering::Relaxed);
    }
    Sent {
        _sink: sink,
        lag: None,
        count: seq,
    }
}

/// Open loop: send each message when it is due (everything overdue at once), stamped with
/// the time it was due; `bell` rings when the next one is (see `pacer`).
#[allow(clippy::too_many_arguments)]
async fn send_on_schedule(
    sink: Sink,
    to: String,
    size: usize,
    resumable: bool,
    schedule: Schedule,
    bell: Arc<tokio::sync::Notify>,
    shared: Arc<Shared>,
    sent: Arc<AtomicU64>,
    mut lag: Histogram<u64>,
) -> Sent {
    let mut next = 0u64;
    'run: loop {
        let now = shared.epoch.elapsed();
        // Once stopped, only what was due before the stop, and only for a while.
        let (until, stopping) = match shared.stopped_at.get() {
            Some(&stop) if now > stop + GRACE => break,
            Some(&stop) => (now.min(stop), true),
            None => (now, false),
        };
        let batch = schedule.catch_up(next, until, CATCH_UP);
        if batch.is_empty() {
            if stopping {
                break;
            }
            // The pacer rings every bell once more when it ends, so this cannot hang.
            bell.notified().await;
            continue;
        }
        let mut sink = sink.lock().await;
        for k in batch.clone() {
            let stamp = schedule.due(k);
            let _ = lag.record(latency_us(micros(stamp), micros(now)));
            if sink
                .feed(Frame::text(route(&to, k, micros(stamp), size, resumable)))
                .await
                .is_err()
            {
                shared.problem("a sender's connection failed".into());
                break 'run;
            }
        }
        if sink.flush().await.is_err() {
            shared.problem("a sender's connection failed".into());
            break;
        }
        next = batch.end;
        sent.store(next, Ordering::Relaxed);
    }
    Sent {
        _sink: sink,
        lag: Some(lag),
        count: next,
    }
}

/// Run the load.
///
/// # Errors
/// If the options make no run (no URL, an open loop without a positive rate) or the pairs
/// cannot be set up (connect or INIT failing).
#[allow(clippy::too_many_lines)]
pub async fn run(options: &LoadOptions) -> Result<LoadReport, String> {
    let window = match options.mode {
        Mode::Pingpong => 1,
        Mode::Flood => options.window.max(1),
        Mode::Open => 0,
    };
    let senders_count = options.pairs * 2;
    // Each sender's share of the rate, its phase spreading the senders over one interval.
    let timetable = |index: usize| {
        Schedule::new(
            options.rate / senders_count as f64,
            index as f64 / senders_count as f64,
        )
    };
    if options.mode == Mode::Open && timetable(0).is_none() {
        return Err(format!(
            "an open loop needs a rate above 0 msgs/s, not {}",
            options.rate
        ));
    }
    if options.urls.is_empty() {
        return Err("no relay URL".into());
    }
    let node = |i: usize| options.urls[i % options.urls.len()].as_str();
    let mut ends = Vec::with_capacity(senders_count);
    for pair in 0..options.pairs {
        ends.push(open(node(pair), &options.client, options.resumable).await?);
        ends.push(open(node(pair + 1), &options.client, options.resumable).await?);
    }
    let template =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    // One histogram per task (no sharing while measuring), made before the clock starts:
    // at 256 pairs they are ~140 MB to zero, which would otherwise delay the first sends.
    let mut histograms: Vec<_> = (0..senders_count * 2).map(|_| template.clone()).collect();
    let mut histogram = move || histograms.pop().unwrap_or_else(|| template.clone());
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        stop: AtomicBool::new(false),
        stopped_at: std::sync::OnceLock::new(),
        problems: std::sync::Mutex::default(),
    });
    let mut sinks = Vec::new();
    let mut streams = Vec::new();
    let mut addresses = Vec::new();
    for (socket, address) in ends {
        let (sink, stream) = socket.split();
        sinks.push(Arc::new(tokio::sync::Mutex::new(sink)));
        streams.push(stream);
        addresses.push(address);
    }
    let schedules: Vec<Schedule> = match options.mode {
        Mode::Open => (0..senders_count).filter_map(timetable).collect(),
        _ => Vec::new(),
    };
    let pacer = pacer::Pacer::start(&shared, schedules.clone())
        .map_err(|e| format!("cannot start the pacer thread: {e}"))?;
    // Set once every sender has stopped: from then on the sent counts are final.
    let (senders_done, done_watch) = watch::channel(false);
    let mut windows = Vec::new();
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    let mut streams: Vec<Option<_>> = streams.into_iter().map(Some).collect();
    let ack_sinks: Vec<Sink> = sinks.iter().map(Arc::clone).collect();
    let resumable = options.resumable;
    for (index, sink) in sinks.into_iter().enumerate() {
        // Connection 2k sends to 2k+1 and back.
        let peer = index ^ 1;
        let to = addresses[peer].clone();
        let sent = Arc::new(AtomicU64::new(0));
        let (shared_s, sent_s, size) = (Arc::clone(&shared), Arc::clone(&sent), options.size);
        // Open loop: a timetable and the pacer's bell; closed loop: a window of permits,
        // which the receiver hands back.
        let returns = match (schedules.get(index), pacer.bells.get(index)) {
            (Some(schedule), Some(bell)) => {
                senders.push(tokio::spawn(send_on_schedule(
                    sink,
                    to,
                    size,
                    resumable,
                    *schedule,
                    Arc::clone(bell),
                    shared_s,
                    sent_s,
                    histogram(),
                )));
                None
            }
            _ => {
                let permits = Arc::new(Semaphore::new(window));
                windows.push(Arc::clone(&permits));
                senders.push(tokio::spawn(send_windowed(
                    sink,
                    to,
                    size,
                    resumable,
                    Arc::clone(&permits),
                    shared_s,
                    sent_s,
                )));
                Some(permits)
            }
        };
        let Some(mut stream) = streams[peer].take() else {
            continue;
        };
        let (shared_r, size, mut histogram, mut done) = (
            Arc::clone(&shared),
            options.size,
            histogram(),
            done_watch.clone(),
        );
        // What arrives on `peer`'s connection is acknowledged on it (version 2).
        let ack_sink = Arc::clone(&ack_sinks[peer]);
        receivers.push(tokio::spawn(async move {
            let mut expected = 0u64;
            let mut unacked = 0u64;
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
                let (stream_seq, seq, t, want) = match incoming(text, size, resumable) {
                    Incoming::Message {
                        stream,
                        seq,
                        t,
                        want,
                    } => (stream, seq, t, want),
                    Incoming::Skip => continue,
                    Incoming::Foreign => {
                        shared_r
                            .problem(format!("not a load message: {}", crate::peer::clip(text)));
                        continue;
                    }
                };
                if seq != expected {
                    shared_r.problem(format!("expected message {expected}, got {seq}"));
                }
                expected = seq + 1;
                if text != want && Exact::parse(text).ok() != Exact::parse(&want).ok() {
                    shared_r.problem(format!("message {seq} arrived changed"));
                }
                if let Some(stream_seq) = stream_seq {
                    unacked += 1;
                    if unacked >= ACK_EVERY {
                        unacked = 0;
                        let ack = format!(r#"{{"type":"ACK","seq":{stream_seq}}}"#);
                        if ack_sink.lock().await.send(Frame::text(ack)).await.is_err() {
                            shared_r.problem("a receiver could not acknowledge".into());
                        }
                    }
                }
                let _ = histogram.record(latency_us(t, micros(shared_r.epoch.elapsed())));
                if let Some(permits) = &returns {
                    permits.add_permits(1);
                }
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
            tokio::spawn(async move { churn::churn(&shared, &url, &client).await })
        })
        .collect();
    tokio::time::sleep(options.duration).await;
    let stopped = shared.epoch.elapsed();
    let _ = shared.stopped_at.set(stopped);
    shared.stop.store(true, Ordering::Relaxed);
    drop(pacer);
    let mut churn_cycles = 0;
    for churner in churners {
        churn_cycles += churner.await.map_err(|e| e.to_string())?;
    }
    // Wake senders waiting for window space, let them finish their last send.
    for window in &windows {
        window.close();
    }
    let mut kept = Vec::new();
    let mut lag = histogram();
    let mut sent_total = 0;
    for sender in senders {
        let sent = sender.await.map_err(|e| e.to_string())?;
        sent_total += sent.count;
        if let Some(h) = &sent.lag {
            let _ = lag.add(h);
        }
        kept.push(sent);
    }
    let _ = senders_done.send(true);
    let mut total = histogram();
    for receiver in receivers {
        let histogram = receiver.await.map_err(|e| e.to_string())?;
        let _ = total.add(histogram);
    }
    drop(kept);
    let mut problems = shared
        .problems
        .lock()
        .map(|p| p.clone())
        .unwrap_or_default();
    let schedule = (options.mode == Mode::Open).then(|| ScheduleKept {
        rate: options.rate,
        due: schedules.iter().map(|s| s.due_by(stopped)).sum(),
        sent: sent_total,
        send_lag_us: Latency::of(&lag),
    });
    if let Some(s) = &schedule
        && s.kept() < MIN_KEPT
    {
        problems.insert(
            0,
            format!(
                "the generator fell behind its schedule: it sent {} of the {} messages due \
                 ({:.1} %, send lag p99 {} µs), so the relay did not get {:.0} msgs/s; \
                 lower --rate, or give the generator a core of its own",
                s.sent,
                s.due,
                s.kept() * 100.0,
                s.send_lag_us.p99,
                s.rate
            ),
        );
    }
    let messages = total.len();
    let secs = stopped.as_secs_f64();
    Ok(LoadReport {
        pairs: options.pairs,
        size: options.size,
        mode: options.mode,
        window,
        secs,
        messages,
        msgs_per_sec: messages as f64 / secs,
        latency_us: Latency::of(&total),
        schedule,
        churn_cycles,
        valid: problems.is_empty() && messages > 0,
        problems,
    })
}

/// Open `count` connections that have each done INIT (256 handshakes at a time), spread over
/// `urls` in turn: the sockets that opened, and why the others did not.
pub async fn open_idle(
    urls: &[String],
    client: &ClientBuilder,
    count: usize,
    resumable: bool,
) -> (Vec<RawSocket>, Vec<String>) {
    let limit = Arc::new(Semaphore::new(256));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let url = urls.get(i % urls.len().max(1)).cloned().unwrap_or_default();
        let (limit, client) = (Arc::clone(&limit), client.clone());
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            open(&url, &client, resumable)
                .await
                .map(|(socket, _)| socket)
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
