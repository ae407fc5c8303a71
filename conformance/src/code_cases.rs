//! Cases that cannot be data: sizes, fragmentation, bursts, many connections,
//! concurrency, optional features, and the relay's own timers. Each carries the same
//! metadata as a session file.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use compendium_messages::Message;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::case::{Body, Case, Ctx, Meta, Outcome};
use crate::jsoneq::{Exact, Sameness, sameness};
use crate::peer::{Peer, Received, clip};
use crate::report::Verdict;
use crate::runner::{PROBE, PROBE_SENT, is_probe_answer};
use crate::session::Level;

pub(crate) type Run = Pin<Box<dyn Future<Output = Outcome> + Send>>;

pub(crate) fn case(
    id: &str,
    level: Level,
    description: &str,
    requirement: &str,
    body: fn(Ctx) -> Run,
) -> Case {
    let rule = id.split('/').next().unwrap_or(id).to_owned();
    Case {
        meta: Meta {
            id: id.to_owned(),
            rule,
            level,
            description: description.to_owned(),
            requirement: requirement.to_owned(),
        },
        body: Body::Code(body),
    }
}

/// Every code case.
#[must_use]
pub fn all() -> Vec<Case> {
    use Level::{Must, Should};
    vec![
        case(
            "1.2/2",
            Must,
            "a fragmented text message counts as one message",
            "Each WebSocket text message (a text frame, or a fragmented text message once reassembled) carries exactly one protocol message",
            |ctx| Box::pin(fragmented(ctx)),
        ),
        case(
            "1.4/1",
            Must,
            "a 64 KiB message is delivered",
            "A server MAY limit the size of a message; the limit MUST be at least 64 KiB.",
            |ctx| Box::pin(sixty_four_kib(ctx)),
        ),
        case(
            "1.4/2",
            Must,
            "an oversized message closes that connection with 1009; others go on",
            "A server that receives a larger message MUST close that connection with close code 1009 (Message Too Big) and MUST go on serving every other connection.",
            |ctx| Box::pin(oversized(ctx)),
        ),
        case(
            "3.1/3",
            Must,
            "100 connections get 100 distinct, well-formed addresses",
            "a fresh address: unique among the addresses that are live at that moment, and indistinguishable from 128 random bits to anyone without the server's secrets, with at least 96 of its bits from a cryptographically secure random source",
            |ctx| Box::pin(many_addresses(ctx)),
        ),
        case(
            "3.3/5",
            Must,
            "20 pairs exchanging at once: every message to its own target only",
            "On ROUTE to a live address, the server MUST send DELIVER (rule 3.4) to the connection holding that address.",
            |ctx| Box::pin(concurrent_pairs(ctx)),
        ),
        case(
            "3.5/2",
            Must,
            "a burst of 1000 messages arrives once each, in order",
            "Each accepted ROUTE is delivered exactly once. Messages from one sender to one target are delivered in the order the sender sent them.",
            |ctx| Box::pin(burst(ctx)),
        ),
        case(
            "3.8/1",
            Must,
            "a target that never reads: ROUTEs refused with 503, none lost (optional feature)",
            "If it cannot accept a ROUTE for that reason it MUST answer the sender with ERR 503 and MUST NOT deliver that message later; it MUST NOT drop an accepted message silently.",
            |ctx| Box::pin(backpressure(ctx)),
        ),
        case(
            "3.9/1",
            Must,
            "messages over a rate limit get 429 (optional feature)",
            "A message over the limit MUST be answered with ERR 429 and not acted on.",
            |ctx| Box::pin(rate_limit(ctx)),
        ),
        case(
            "3.11/1",
            Must,
            "addresses do not outlive their connections (not observable over the wire)",
            "Addresses live only in the server's memory, only as long as their connection.",
            |_| {
                Box::pin(async {
                    Outcome::with(
                        Verdict::Skipped,
                        "a restart cannot be caused over the wire; rule 3.10's cases check release",
                    )
                })
            },
        ),
        case(
            "3.12/1",
            Must,
            "a client-to-server type the relay knows but does not implement gets 501 (not observable in version 1)",
            "A server that receives a client-to-server type that its schema defines but that it does not implement MUST answer it with ERR 501 to the sender",
            |_| {
                Box::pin(async {
                    Outcome::with(
                        Verdict::Skipped,
                        "version 1 defines no client-to-server type besides INIT and ROUTE, so there is none to send; compendium-server's tests check it with a grown schema (cargo xtask check-schema-growth)",
                    )
                })
            },
        ),
        case(
            "4.1/1",
            Should,
            "the relay pings an idle connection",
            "The server SHOULD ping each connection periodically",
            |ctx| Box::pin(server_pings(ctx)),
        ),
        case(
            "4.1/2",
            Must,
            "a connection that answers nothing is eventually closed (optional)",
            "and MAY close a connection that has sent nothing — no frame, no pong — for an idle timeout",
            |ctx| Box::pin(idle_close(ctx)),
        ),
        case(
            "4.2/1",
            Must,
            "a connection that never completes its handshake is dropped (optional)",
            "The server MAY close a TCP connection whose WebSocket opening handshake has not completed within a timeout",
            |ctx| Box::pin(handshake_timeout(ctx)),
        ),
        case(
            "4.3/1",
            Must,
            "beyond the stated connection limit, handshakes get HTTP 503",
            "Beyond the limit it refuses new opening handshakes with HTTP 503; existing connections are unaffected.",
            |ctx| Box::pin(connection_limit(ctx)),
        ),
        case(
            "4.4/1",
            Should,
            "shutdown flushes and closes with 1001 (not observable over the wire)",
            "A server that shuts down SHOULD stop accepting connections, deliver the DELIVERs it has already accepted, and close every connection with close code 1001",
            |_| {
                Box::pin(async {
                    Outcome::with(
                        Verdict::Skipped,
                        "a shutdown cannot be caused over the wire; compendium-server's own tests check it",
                    )
                })
            },
        ),
        case(
            "4.5/1",
            Must,
            "msg contents are never logged (not observable over the wire)",
            "A server MUST NOT log or otherwise record the contents of msg.",
            |_| {
                Box::pin(async {
                    Outcome::with(
                        Verdict::Skipped,
                        "logs cannot be seen over the wire; compendium-server's own tests check it",
                    )
                })
            },
        ),
    ]
    .into_iter()
    .chain(crate::v2_cases::all())
    .collect()
}

pub(crate) async fn connect(ctx: &Ctx) -> Result<Peer, String> {
    let url = ctx.next_url();
    Peer::connect(url, &ctx.client)
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))
}

pub(crate) async fn init(peer: &mut Peer, ctx: &Ctx) -> Result<String, String> {
    peer.send_text(Message::init().to_json()).await?;
    let frame = peer
        .next(ctx.timeout)
        .await
        .map_err(|e| format!("INIT: expected INITRESP: {e}"))?;
    match &frame {
        Received::Text(text) => match Message::parse(text) {
            Ok(Message::Initresp { ephe_wss_addr, .. }) => Ok(ephe_wss_addr.to_string()),
            _ => Err(format!("INIT: expected INITRESP, got {}", clip(text))),
        },
        Received::Close(_) | Received::Ended(_) => Err(format!(
            "INIT: expected INITRESP, but {}",
            peer.ended().unwrap_or("the connection ended")
        )),
        other => Err(format!("INIT: expected INITRESP, got {other}")),
    }
}

pub(crate) fn route(to: &str, msg: &str) -> String {
    format!(r#"{{"type":"ROUTE","EpheWssAddr":"{to}","msg":{msg}}}"#)
}

/// The next DELIVER's msg text, or what came instead.
pub(crate) async fn delivered_text(peer: &mut Peer, within: Duration) -> Result<String, String> {
    delivered(peer, within).await
}

/// The next DELIVER's msg text, or what came instead.
async fn delivered(peer: &mut Peer, within: Duration) -> Result<String, String> {
    let frame = peer
        .next(within)
        .await
        .map_err(|e| format!("expected DELIVER: {e}"))?;
    if matches!(frame, Received::Close(_) | Received::Ended(_)) {
        return Err(format!(
            "expected DELIVER, but {}",
            peer.ended().unwrap_or("the connection ended")
        ));
    }
    match frame {
        Received::Text(text) => match Message::parse(&text) {
            Ok(Message::Deliver { msg, .. }) => Ok(msg.as_str().to_owned()),
            Ok(other) => Err(format!(
                "expected DELIVER, got {}: {}",
                other.type_name(),
                clip(&text)
            )),
            Err(err) => Err(format!(
                "expected a valid DELIVER, got an invalid message ({err}): {}",
                clip(&text)
            )),
        },
        other => Err(format!("expected DELIVER, got {other}")),
    }
}

/// Delivered `msg`s judged against the routed ones (rule 3.4): a different value is a
/// failure; the same value in other bytes only breaks the SHOULD, so the case ends
/// NON-STRICT, naming how many and one example.
#[derive(Debug, Default)]
struct Exactness {
    checked: usize,
    only_json_equal: usize,
    example: Option<(String, String)>,
}

impl Exactness {
    /// `what` names the message in a failure ("message 7", "pair 3, seq 2").
    fn check(&mut self, what: &str, routed: &str, delivered: &str) -> Result<(), String> {
        self.checked += 1;
        match sameness(routed, delivered) {
            Sameness::Identical => Ok(()),
            Sameness::JsonEqual => {
                self.only_json_equal += 1;
                self.example
                    .get_or_insert_with(|| (routed.to_owned(), delivered.to_owned()));
                Ok(())
            }
            Sameness::Different => Err(format!(
                "{what}: expected a msg JSON-equal to {}, got {}",
                clip(routed),
                clip(delivered)
            )),
        }
    }

    fn merge(&mut self, other: Self) {
        self.checked += other.checked;
        self.only_json_equal += other.only_json_equal;
        if self.example.is_none() {
            self.example = other.example;
        }
    }

    /// PASS (with `detail`, if any) when every msg was byte-identical, else NON-STRICT.
    fn outcome(self, detail: Option<String>) -> Outcome {
        match self.example {
            None => match detail {
                Some(detail) => Outcome::with(Verdict::Pass, detail),
                None => Outcome::pass(),
            },
            Some((routed, delivered)) => Outcome::with(
                Verdict::NonStrict,
                format!(
                    "{} of {} delivered msgs were JSON-equal to what was routed but not \
                     byte-identical (rule 3.4: SHOULD), e.g. routed {}, delivered {}",
                    self.only_json_equal,
                    self.checked,
                    clip(&routed),
                    clip(&delivered)
                ),
            ),
        }
    }
}

/// Send the probe and collect every text frame before its answer.
async fn sync(peer: &mut Peer, within: Duration) -> Result<Vec<String>, String> {
    peer.send_text(PROBE.to_owned()).await?;
    let mut before = Vec::new();
    loop {
        let frame = peer
            .next(within)
            .await
            .map_err(|e| format!("{PROBE_SENT}: {e}"))?;
        if is_probe_answer(&frame) {
            return Ok(before);
        }
        match frame {
            Received::Text(text) => before.push(text),
            Received::Close(_) | Received::Ended(_) => {
                return Err(format!(
                    "{PROBE_SENT}, but {}",
                    peer.ended().unwrap_or("the connection ended")
                ));
            }
            other => return Err(format!("{PROBE_SENT}, got {other}")),
        }
    }
}

async fn fragmented(ctx: Ctx) -> Outcome {
    async {
        let mut a = connect(&ctx).await?;
        let first = tokio_tungstenite::tungstenite::protocol::frame::Frame::message(
            &b"{\"type\":"[..],
            OpCode::Data(Data::Text),
            false,
        );
        let last = tokio_tungstenite::tungstenite::protocol::frame::Frame::message(
            &b"\"INIT\"}"[..],
            OpCode::Data(Data::Continue),
            true,
        );
        a.send_frame(Frame::Frame(first)).await?;
        a.send_frame(Frame::Frame(last)).await?;
        match a.next(ctx.timeout).await? {
            Received::Text(text)
                if matches!(Message::parse(&text), Ok(Message::Initresp { .. })) =>
            {
                Ok(())
            }
            other => Err(format!(
                "expected INITRESP for INIT sent in two fragments, got {other}"
            )),
        }
    }
    .await
    .into()
}

async fn sixty_four_kib(ctx: Ctx) -> Outcome {
    async {
        let (mut a, mut b) = (connect(&ctx).await?, connect(&ctx).await?);
        let b_addr = init(&mut b, &ctx).await?;
        let overhead = route(&b_addr, r#"{"pad":""}"#).len();
        let msg = format!(r#"{{"pad":"{}"}}"#, "x".repeat((64 << 10) - overhead));
        a.send_text(route(&b_addr, &msg)).await?;
        let got = delivered(&mut b, ctx.timeout).await?;
        let mut exactness = Exactness::default();
        exactness.check("the 64 KiB msg", &msg, &got)?;
        Ok::<_, String>(exactness.outcome(None))
    }
    .await
    .unwrap_or_else(Outcome::fail)
}

async fn oversized(ctx: Ctx) -> Outcome {
    const SIZE: usize = 8 << 20;
    let run = async {
        let (mut b, mut c) = (connect(&ctx).await?, connect(&ctx).await?);
        let b_addr = init(&mut b, &ctx).await?;
        // Write and read at once: a relay that stops reading mid-message would otherwise
        // leave the write blocked forever.
        let socket = ctx
            .client
            .connect_raw(ctx.next_url())
            .await
            .map_err(|e| e.to_string())?;
        let (mut sink, mut stream) = socket.split();
        let text = route(&b_addr, &format!(r#"{{"pad":"{}"}}"#, "x".repeat(SIZE)));
        let writer = tokio::spawn(async move {
            use futures_util::SinkExt;
            let _ = sink.send(Frame::text(text)).await;
            sink
        });
        let wait = ctx.timeout.max(Duration::from_secs(10));
        let mut closed_with = None;
        loop {
            match tokio::time::timeout(wait, stream.next()).await {
                Err(_) => break,
                Ok(Some(Ok(Frame::Close(frame)))) => {
                    closed_with = Some(frame.map(|f| u16::from(f.code)))
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_)) | None) => break,
            }
        }
        writer.abort();
        // Either way, the other connections must still work.
        c.send_text(route(&b_addr, r#"{"after":"oversize"}"#))
            .await?;
        let mut delivered_big = false;
        loop {
            let msg = delivered(&mut b, wait).await?;
            if msg.contains("\"after\"") {
                break;
            }
            delivered_big = true;
        }
        Ok::<_, String>(match (closed_with, delivered_big) {
            (Some(Some(1009)), false) => Outcome::pass(),
            (_, true) => Outcome::with(
                Verdict::Unsupported,
                format!(
                    "no size limit up to {} MiB: the message was delivered",
                    SIZE >> 20
                ),
            ),
            (Some(code), false) => {
                Outcome::fail(format!("expected close 1009, got close {code:?}"))
            }
            (None, false) => Outcome::fail(
                "expected close 1009; the connection ended (or stalled) without a close frame and nothing was delivered",
            ),
        })
    };
    run.await.unwrap_or_else(Outcome::fail)
}

async fn many_addresses(ctx: Ctx) -> Outcome {
    async {
        let mut peers = Vec::new();
        let mut seen = HashSet::new();
        for _ in 0..100 {
            let mut peer = connect(&ctx).await?;
            let addr = init(&mut peer, &ctx).await?;
            if !seen.insert(addr.clone()) {
                return Err(format!("address {addr} was handed out twice"));
            }
            peers.push(peer);
        }
        Ok(())
    }
    .await
    .into()
}

async fn concurrent_pairs(ctx: Ctx) -> Outcome {
    const PAIRS: usize = 20;
    const MESSAGES: usize = 50;
    let mut tasks = Vec::new();
    for pair in 0..PAIRS {
        let ctx = ctx.clone();
        tasks.push(tokio::spawn(async move {
            let (mut a, mut b) = (connect(&ctx).await?, connect(&ctx).await?);
            let b_addr = init(&mut b, &ctx).await?;
            for seq in 0..MESSAGES {
                a.send_text(route(&b_addr, &format!(r#"{{"pair":{pair},"seq":{seq}}}"#)))
                    .await?;
            }
            let mut exactness = Exactness::default();
            for seq in 0..MESSAGES {
                let want = format!(r#"{{"pair":{pair},"seq":{seq}}}"#);
                let got = delivered(&mut b, ctx.timeout).await?;
                exactness.check(&format!("pair {pair}, message {seq}"), &want, &got)?;
            }
            Ok::<Exactness, String>(exactness)
        }));
    }
    let mut exactness = Exactness::default();
    for task in tasks {
        match task.await {
            Ok(Ok(pair)) => exactness.merge(pair),
            Ok(Err(e)) => return Outcome::fail(e),
            Err(e) => return Outcome::fail(format!("a pair's task failed: {e}")),
        }
    }
    exactness.outcome(None)
}

async fn burst(ctx: Ctx) -> Outcome {
    async {
        let (mut a, mut b) = (connect(&ctx).await?, connect(&ctx).await?);
        let b_addr = init(&mut b, &ctx).await?;
        for seq in 0..1000 {
            a.send_text(route(&b_addr, &format!(r#"{{"seq":{seq}}}"#)))
                .await?;
        }
        let mut exactness = Exactness::default();
        for seq in 0..1000 {
            let got = delivered(&mut b, ctx.timeout).await?;
            exactness.check(
                &format!("message {seq}"),
                &format!(r#"{{"seq":{seq}}}"#),
                &got,
            )?;
        }
        let extra = sync(&mut b, ctx.timeout).await?;
        if extra.is_empty() {
            Ok::<_, String>(exactness.outcome(None))
        } else {
            Err(format!(
                "after 1000 messages, more arrived: {}",
                clip(&extra.join(" "))
            ))
        }
    }
    .await
    .unwrap_or_else(Outcome::fail)
}

/// Rule 3.8 against a target that never reads. Three kinds of relay are told apart:
/// one that refuses with 503 (PASS if nothing refused is delivered and nothing accepted is
/// lost), one that buffers everything (UNSUPPORTED: no 503 after 64 MiB), and one that
/// stops reading from the sender until the target reads (UNSUPPORTED if, once the target
/// reads, every message arrives once and in order, and the sender is answered again; FAIL
/// if anything was lost, duplicated, reordered or never answered).
async fn backpressure(ctx: Ctx) -> Outcome {
    const LIMIT_BYTES: usize = 64 << 20;
    let run = async {
        let (mut a, mut b) = (connect(&ctx).await?, connect(&ctx).await?);
        let b_addr = init(&mut b, &ctx).await?;
        let pad = "x".repeat(32 << 10);
        // A relay answers a probe at once unless it has stopped reading from the sender.
        let wait = ctx.timeout * 5;
        let (mut sent, mut refused) = (0usize, 0usize);
        let mut blocked = false;
        'sending: while refused == 0 && sent * pad.len() < LIMIT_BYTES {
            for _ in 0..32 {
                let text = route(&b_addr, &format!(r#"{{"seq":{sent},"pad":"{pad}"}}"#));
                // A send that times out may or may not have left its frame in our buffer
                // (to be written when the relay reads again): `sent` counts only sends
                // that completed, and the one after them may arrive too.
                match tokio::time::timeout(wait, a.send_text(text)).await {
                    Ok(result) => result?,
                    Err(_) => {
                        blocked = true;
                        break 'sending;
                    }
                }
                sent += 1;
            }
            match sync(&mut a, wait).await {
                Ok(replies) => {
                    for reply in replies {
                        match Message::parse(&reply) {
                            Ok(Message::Err { err_code: 503, .. }) => refused += 1,
                            _ => {
                                return Err(format!(
                                    "expected nothing or ERR 503, got {}",
                                    clip(&reply)
                                ));
                            }
                        }
                    }
                }
                Err(_) if a.ended().is_none() => {
                    blocked = true;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        if blocked {
            return blocked_sender(a, b, sent, wait).await;
        }
        if refused == 0 {
            return Ok(Outcome::with(
                Verdict::Unsupported,
                format!(
                    "no 503 after {} MiB to a reader that never reads: the relay buffers \
                     without bound",
                    LIMIT_BYTES >> 20
                ),
            ));
        }
        // Every accepted message arrives, in order; no refused one does.
        let mut last = None;
        for _ in 0..sent - refused {
            let msg = delivered(&mut b, wait).await?;
            let seq = seq_of(&msg)?;
            if last.is_some_and(|l| seq <= l) {
                return Err(format!("delivered out of order: {seq} after {last:?}"));
            }
            last = Some(seq);
        }
        let end = r#"{"end":true}"#;
        a.send_text(route(&b_addr, end)).await?;
        let got = delivered(&mut b, ctx.timeout).await?;
        if sameness(end, &got) == Sameness::Different {
            return Err(format!(
                "{refused} refused with 503, but more than the {} accepted were delivered: {}",
                sent - refused,
                clip(&got)
            ));
        }
        Ok(Outcome::with(
            Verdict::Pass,
            format!(
                "{sent} sent, {refused} refused with 503, {} delivered",
                sent - refused
            ),
        ))
    };
    run.await.unwrap_or_else(Outcome::fail)
}

/// The relay stopped reading from the sender `a` while the target `b` did not read. Now
/// `b` reads: each of the `sent` messages (and perhaps the one whose send was cut short)
/// must arrive once, in order, and `a` must be answered again.
async fn blocked_sender(
    mut a: Peer,
    mut b: Peer,
    sent: usize,
    wait: Duration,
) -> Result<Outcome, String> {
    let what_happened = "the relay stopped reading from the sender while the target did not \
                         read (no 503)";
    // Write out what is still buffered on our side while `b` reads, in another task: the
    // relay reads it only once `b` has drained enough.
    let flushing = tokio::spawn(async move {
        let flushed = tokio::time::timeout(wait * 2, a.flush()).await;
        (a, flushed)
    });
    let mut arrived = 0;
    loop {
        let msg = match delivered(&mut b, wait).await {
            Ok(msg) => msg,
            Err(_) if arrived >= sent => break,
            Err(e) => {
                return Err(format!(
                    "{what_happened}; once the target read, {arrived} of the {sent} messages \
                     sent arrived, then: {e}"
                ));
            }
        };
        let seq = seq_of(&msg)?;
        if seq != arrived || arrived > sent {
            return Err(format!(
                "{what_happened}; once the target read, message {seq} arrived where \
                 {arrived} was due (lost, duplicated or reordered)"
            ));
        }
        arrived += 1;
    }
    let (mut a, flushed) = flushing
        .await
        .map_err(|e| format!("the sender's task failed: {e}"))?;
    match flushed {
        Ok(result) => result?,
        Err(_) => {
            return Err(format!(
                "{what_happened}; once the target had read everything, the relay still did \
                 not read the sender's last message"
            ));
        }
    }
    // Nothing more for the target; and the sender's probes are answered again.
    let extra = sync(&mut b, wait).await?;
    if !extra.is_empty() {
        return Err(format!(
            "after the {arrived} messages, more arrived: {}",
            clip(&extra.join(" "))
        ));
    }
    let replies = sync(&mut a, wait).await.map_err(|e| {
        format!(
            "{what_happened}; once the target had read everything, the sender was still not \
             answered: {e}"
        )
    })?;
    if let Some(other) = replies
        .iter()
        .find(|r| !is_probe_answer(&Received::Text((*r).clone())))
    {
        return Err(format!(
            "the sender got {} (expected only the ERR 400s to its probes)",
            clip(other)
        ));
    }
    Ok(Outcome::with(
        Verdict::Unsupported,
        format!(
            "no 503: the relay stopped reading from the sender once the target stopped \
             reading (after {arrived} messages of 32 KiB), so meanwhile the sender could \
             send nothing to anyone; once the target read, all {arrived} arrived once, in \
             order, and the sender was answered again. Rule 3.8 is optional and nothing \
             was lost"
        ),
    ))
}

/// The `seq` member of a delivered msg (however the relay spelled the object).
fn seq_of(msg: &str) -> Result<usize, String> {
    Exact::parse(msg)
        .ok()
        .and_then(|tree| tree.member("seq").and_then(Exact::as_u64))
        .and_then(|seq| usize::try_from(seq).ok())
        .ok_or_else(|| format!("a delivered message lost its seq: {}", clip(msg)))
}

async fn rate_limit(ctx: Ctx) -> Outcome {
    let run = async {
        let mut a = connect(&ctx).await?;
        for _ in 0..500 {
            a.send_text(PROBE.to_owned()).await?;
        }
        let (mut limited, mut answered) = (0, 0);
        while answered < 500 {
            match a.next(ctx.timeout).await? {
                Received::Text(text) => match Message::parse(&text) {
                    Ok(Message::Err { err_code: 429, .. }) => limited += 1,
                    Ok(Message::Err { err_code: 400, .. }) => {}
                    _ => return Err(format!("expected ERR 400 or 429, got {}", clip(&text))),
                },
                other => return Err(format!("expected ERR 400 or 429, got {other}")),
            }
            answered += 1;
        }
        Ok(if limited > 0 {
            Outcome::with(
                Verdict::Pass,
                format!("{limited} of 500 messages in a burst got 429"),
            )
        } else {
            Outcome::with(Verdict::Unsupported, "no 429 in a burst of 500 messages")
        })
    };
    run.await.unwrap_or_else(Outcome::fail)
}

async fn server_pings(ctx: Ctx) -> Outcome {
    let Some(slow) = ctx.slow else {
        return Outcome::with(
            Verdict::Skipped,
            "needs --slow-ms at least the relay's ping interval",
        );
    };
    let run = async {
        let socket = ctx
            .client
            .connect_raw(ctx.next_url())
            .await
            .map_err(|e| e.to_string())?;
        let (_sink, mut stream) = socket.split();
        loop {
            match tokio::time::timeout(slow, stream.next()).await {
                Err(_) => {
                    return Ok(Outcome::fail(format!(
                        "no ping within {} ms",
                        slow.as_millis()
                    )));
                }
                Ok(Some(Ok(Frame::Ping(_)))) => return Ok(Outcome::pass()),
                Ok(Some(Ok(_))) => {}
                Ok(_) => return Err("the connection ended before any ping".to_owned()),
            }
        }
    };
    run.await.unwrap_or_else(Outcome::fail)
}

/// A plain TCP connection to the relay's host (raw-TCP cases need a `ws://` URL).
async fn raw_tcp(ctx: &Ctx) -> Result<(tokio::net::TcpStream, String), Outcome> {
    let Some(host) = ctx
        .first_url()
        .strip_prefix("ws://")
        .map(|rest| rest.split('/').next().unwrap_or(rest).to_owned())
    else {
        return Err(Outcome::with(
            Verdict::Skipped,
            "raw-TCP cases need a ws:// URL",
        ));
    };
    let tcp = tokio::net::TcpStream::connect(&host)
        .await
        .map_err(|e| Outcome::fail(format!("connect: {e}")))?;
    Ok((tcp, host))
}

/// A plain-TCP WebSocket handshake by hand; reading raw bytes afterwards answers no ping.
async fn raw_handshake(ctx: &Ctx) -> Result<tokio::net::TcpStream, Outcome> {
    let (mut tcp, host) = raw_tcp(ctx).await?;
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes())
        .await
        .map_err(|e| Outcome::fail(format!("write: {e}")))?;
    Ok(tcp)
}

/// Read raw bytes until the relay closes the TCP connection, at most `within`.
async fn await_eof(tcp: &mut tokio::net::TcpStream, within: Duration) -> bool {
    let mut sink = Vec::new();
    matches!(
        tokio::time::timeout(within, tcp.read_to_end(&mut sink)).await,
        Ok(Ok(_)) | Ok(Err(_))
    )
}

async fn idle_close(ctx: Ctx) -> Outcome {
    let Some(slow) = ctx.slow else {
        return Outcome::with(
            Verdict::Skipped,
            "needs --slow-ms above the relay's idle timeout",
        );
    };
    match raw_handshake(&ctx).await {
        Ok(tcp) => hung_up_within(tcp, slow, "a connection answering nothing").await,
        Err(outcome) => outcome,
    }
}

async fn handshake_timeout(ctx: Ctx) -> Outcome {
    let Some(slow) = ctx.slow else {
        return Outcome::with(
            Verdict::Skipped,
            "needs --slow-ms above the relay's handshake timeout",
        );
    };
    match raw_tcp(&ctx).await {
        Ok((tcp, _)) => hung_up_within(tcp, slow, "a silent TCP connection").await,
        Err(outcome) => outcome,
    }
}

/// PASS if the relay closes `tcp` within `slow`; UNSUPPORTED if not (these rules are MAYs).
async fn hung_up_within(mut tcp: tokio::net::TcpStream, slow: Duration, what: &str) -> Outcome {
    if await_eof(&mut tcp, slow).await {
        Outcome::pass()
    } else {
        Outcome::with(
            Verdict::Unsupported,
            format!("{what} was still open after {} ms", slow.as_millis()),
        )
    }
}

async fn connection_limit(ctx: Ctx) -> Outcome {
    let Some(limit) = ctx.max_connections else {
        return Outcome::with(
            Verdict::Skipped,
            "needs --max-connections (the relay's stated limit)",
        );
    };
    let run =
        async {
            let mut open = Vec::with_capacity(limit);
            // The limit is one node's: every connection goes to the first.
            let url = ctx.first_url();
            for i in 0..limit {
                open.push(Peer::connect(url, &ctx.client).await.map_err(|e| {
                    format!("connection {} of {limit} to {url} failed: {e}", i + 1)
                })?);
            }
            match ctx.client.connect_raw(ctx.first_url()).await {
                Ok(_) => {
                    return Err(format!(
                        "connection {} (beyond the limit of {limit}) was accepted",
                        limit + 1
                    ));
                }
                Err(compendium_client::Error::Connect(e)) if e.http_status() == Some(503) => {}
                Err(e) => return Err(format!("expected HTTP 503 beyond the limit, got: {e}")),
            }
            let mut first = open.swap_remove(0);
            init(&mut first, &ctx)
                .await
                .map(|_| ())
                .map_err(|e| format!("an existing connection broke: {e}"))
        };
    run.await.into()
}
