//! Property test of version 2, resumable sessions (docs/protocol.md section 6): our relay
//! against a reference model, with an oracle for what section 6 promises.
//!
//! Three resumable clients (raw connections offering `compendium.v2`, each keeping the
//! stream numbers it has seen, as rule 6.4 asks of a client) take random steps: start a
//! session, ROUTE to a live, detached, half-open, ended or random address, ACK, lose the
//! connection (close handshake, TCP reset, or a half-open link whose socket stays open
//! unread), RESUME (plain, with a lagging `seq` that makes the relay replay what the client
//! has seen, or resending ROUTEs the relay has acted on), END, RESUME with a superseded
//! secret, and let the grace pass. After every step the oracle checks each attached
//! client's stream: every message the model owes it arrived exactly once (by stream
//! number), each sender's DELIVERs in the order sent, every refused ROUTE answered by an
//! ERR naming it, nothing else; a half-open link taken over is closed with 4001, a revoked
//! one with 4002, a refused RESUME is 410.
//!
//! The relay runs in-process with a grace (and hold) of 2 s, so that letting the grace
//! pass is a step that waits for events (held ROUTEs answered 404) instead of minutes; it
//! is our relay only, since that takes a relay whose timers the test sets. Case count:
//! `PROPTEST_CASES` (default 12 here: a grace step waits 2 s).

use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use compendium_client::ClientBuilder;
use compendium_conformance::peer::{Peer, Received};
use compendium_conformance::runner::PROBE;
use compendium_messages::Message;
use compendium_server::{Config, Handle, Server, SessionConfig};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest};

const SLOTS: usize = 3;
const WAIT: Duration = Duration::from_secs(5);
const GRACE: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------- the reference model

/// Where a slot's session stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// No session: the client must INIT.
    None,
    Attached,
    /// Its connection is gone and the relay knows it: ROUTEs to it are held.
    Detached,
    /// Its link is dead but the relay does not know: it writes the stream to a socket
    /// nobody reads.
    HalfOpen,
    /// The session ended while its client was away; the client does not know yet.
    Lost,
}

#[derive(Clone, Copy, Debug)]
enum Cut {
    Close,
    Reset,
    HalfOpen,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// The session of slot j (attached, detached or half-open).
    Client(usize),
    /// The t-th address ever assigned, whose session has ended.
    Retired(usize),
    /// An address no relay assigned.
    Random,
}

#[derive(Clone, Debug)]
enum Transition {
    Start(usize),
    Route {
        from: usize,
        to: Target,
    },
    Ack(usize),
    Cut(usize, Cut),
    Resume {
        slot: usize,
        lag: bool,
        resend: bool,
    },
    End(usize),
    StaleResume(usize),
    GraceElapses,
}

/// A stream message (rule 6.4): a DELIVER of sender `from`'s `n`-th message overall, or
/// an ERR answering this session's ROUTE numbered `route`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Item {
    Deliver { from: usize, n: u64 },
    Err { route: u64, code: u16 },
}

/// A ROUTE held for a detached session (rule 6.8): who sent it (slot and session), its
/// number, its message.
#[derive(Clone, Debug)]
struct Held {
    from: usize,
    from_token: usize,
    route: u64,
    n: u64,
}

#[derive(Clone, Debug)]
struct Slot {
    phase: Phase,
    /// The session's address (its index among all addresses assigned).
    token: Option<usize>,
    /// Every stream message the session owes its client, in the order the model made them.
    stream: Vec<Item>,
    held: Vec<Held>,
    /// ROUTE numbers the session has used.
    routes: u64,
    /// Times resumed (at most 2). After two the client holds a superseded secret: the
    /// one before the last is good until the last RESUMED is known to have arrived
    /// (rule 6.9), which the second RESUME shows.
    resumes: u8,
}

#[derive(Clone, Debug)]
struct Model {
    slots: Vec<Slot>,
    retired: Vec<usize>,
    assigned: usize,
    routed: u64,
}

impl Model {
    fn live(&self, i: usize) -> bool {
        matches!(
            self.slots[i].phase,
            Phase::Attached | Phase::Detached | Phase::HalfOpen
        )
    }

    /// The session of slot `i` is over (END, expiry, revocation): its address is
    /// released, and what was held for it is answered 404 to senders that are still there.
    fn end_session(&mut self, i: usize) {
        let token = self.slots[i].token;
        self.retired.extend(token);
        for held in std::mem::take(&mut self.slots[i].held) {
            if self.live(held.from) && self.slots[held.from].token == Some(held.from_token) {
                self.slots[held.from].stream.push(Item::Err {
                    route: held.route,
                    code: 404,
                });
            }
        }
    }
}

struct SessionModel;

fn select<T: Clone + std::fmt::Debug + 'static>(items: Vec<T>) -> BoxedStrategy<T> {
    proptest::sample::select(items).boxed()
}

impl ReferenceStateMachine for SessionModel {
    type State = Model;
    type Transition = Transition;

    fn init_state() -> BoxedStrategy<Model> {
        let slot = Slot {
            phase: Phase::None,
            token: None,
            stream: Vec::new(),
            held: Vec::new(),
            routes: 0,
            resumes: 0,
        };
        Just(Model {
            slots: vec![slot; SLOTS],
            retired: Vec::new(),
            assigned: 0,
            routed: 0,
        })
        .boxed()
    }

    fn transitions(state: &Model) -> BoxedStrategy<Transition> {
        let with = |phases: &[Phase]| -> Vec<usize> {
            (0..SLOTS)
                .filter(|&i| phases.contains(&state.slots[i].phase))
                .collect()
        };
        let attached = with(&[Phase::Attached]);
        let away = with(&[Phase::Detached, Phase::HalfOpen, Phase::Lost]);
        let targets = with(&[Phase::Attached, Phase::Detached, Phase::HalfOpen]);
        let stale: Vec<usize> = targets
            .iter()
            .copied()
            .filter(|&i| state.slots[i].resumes >= 2)
            .collect();
        let none = with(&[Phase::None]);
        let mut options: Vec<(u32, BoxedStrategy<Transition>)> = Vec::new();
        if !none.is_empty() {
            options.push((2, select(none).prop_map(Transition::Start).boxed()));
        }
        if !attached.is_empty() {
            let mut to: Vec<BoxedStrategy<Target>> = vec![Just(Target::Random).boxed()];
            // Attached, detached and half-open sessions, the sender's own included, so
            // that a session's DELIVERs and ERRs interleave in its stream.
            to.push(select(targets).prop_map(Target::Client).boxed());
            if !state.retired.is_empty() {
                to.push(
                    select(state.retired.clone())
                        .prop_map(Target::Retired)
                        .boxed(),
                );
            }
            let to = proptest::strategy::Union::new(to);
            options.push((
                8,
                (select(attached.clone()), to)
                    .prop_map(|(from, to)| Transition::Route { from, to })
                    .boxed(),
            ));
            options.push((
                1,
                select(attached.clone()).prop_map(Transition::Ack).boxed(),
            ));
            options.push((
                3,
                (
                    select(attached.clone()),
                    select(vec![Cut::Close, Cut::Reset, Cut::HalfOpen]),
                )
                    .prop_map(|(i, cut)| Transition::Cut(i, cut))
                    .boxed(),
            ));
            options.push((1, select(attached).prop_map(Transition::End).boxed()));
        }
        if !away.is_empty() {
            options.push((
                4,
                (select(away), any::<bool>(), any::<bool>())
                    .prop_map(|(slot, lag, resend)| Transition::Resume { slot, lag, resend })
                    .boxed(),
            ));
        }
        if !stale.is_empty() {
            options.push((1, select(stale).prop_map(Transition::StaleResume).boxed()));
        }
        if state.slots.iter().any(|s| s.phase == Phase::Detached) {
            options.push((1, Just(Transition::GraceElapses).boxed()));
        }
        proptest::strategy::Union::new_weighted(options).boxed()
    }

    fn preconditions(state: &Model, transition: &Transition) -> bool {
        let phase = |i: usize| state.slots[i].phase;
        match *transition {
            Transition::Start(i) => phase(i) == Phase::None,
            Transition::Route { from, to } => {
                phase(from) == Phase::Attached
                    && match to {
                        Target::Client(j) => state.live(j),
                        Target::Retired(t) => state.retired.contains(&t),
                        Target::Random => true,
                    }
            }
            Transition::Ack(i) | Transition::Cut(i, _) | Transition::End(i) => {
                phase(i) == Phase::Attached
            }
            Transition::Resume { slot, .. } => {
                matches!(phase(slot), Phase::Detached | Phase::HalfOpen | Phase::Lost)
            }
            Transition::StaleResume(i) => state.live(i) && state.slots[i].resumes >= 2,
            Transition::GraceElapses => state.slots.iter().any(|s| s.phase == Phase::Detached),
        }
    }

    fn apply(mut state: Model, transition: &Transition) -> Model {
        match *transition {
            Transition::Start(i) => {
                let token = state.assigned;
                state.assigned += 1;
                state.slots[i] = Slot {
                    phase: Phase::Attached,
                    token: Some(token),
                    stream: Vec::new(),
                    held: Vec::new(),
                    routes: 0,
                    resumes: 0,
                };
            }
            Transition::Route { from, to } => {
                state.slots[from].routes += 1;
                let route = state.slots[from].routes;
                let n = state.routed;
                state.routed += 1;
                match to {
                    Target::Client(j) => match state.slots[j].phase {
                        Phase::Detached => {
                            let from_token = state.slots[from].token.unwrap_or_default();
                            state.slots[j].held.push(Held {
                                from,
                                from_token,
                                route,
                                n,
                            });
                        }
                        _ => state.slots[j].stream.push(Item::Deliver { from, n }),
                    },
                    Target::Retired(_) | Target::Random => {
                        state.slots[from]
                            .stream
                            .push(Item::Err { route, code: 404 });
                    }
                }
            }
            Transition::Ack(_) => {}
            Transition::Cut(i, cut) => {
                state.slots[i].phase = match cut {
                    Cut::Close | Cut::Reset => Phase::Detached,
                    Cut::HalfOpen => Phase::HalfOpen,
                };
            }
            Transition::Resume { slot, .. } => {
                let s = &mut state.slots[slot];
                if s.phase == Phase::Lost {
                    s.phase = Phase::None;
                    s.token = None;
                } else {
                    let held = std::mem::take(&mut s.held);
                    s.stream.extend(held.into_iter().map(|h| Item::Deliver {
                        from: h.from,
                        n: h.n,
                    }));
                    s.phase = Phase::Attached;
                    s.resumes = s.resumes.saturating_add(1).min(2);
                }
            }
            Transition::End(i) => {
                state.end_session(i);
                state.slots[i].phase = Phase::None;
                state.slots[i].token = None;
            }
            Transition::StaleResume(i) => {
                state.end_session(i);
                if state.slots[i].phase == Phase::Attached {
                    state.slots[i].phase = Phase::None;
                    state.slots[i].token = None;
                } else {
                    state.slots[i].phase = Phase::Lost;
                }
            }
            Transition::GraceElapses => {
                let expiring: Vec<usize> = (0..SLOTS)
                    .filter(|&i| state.slots[i].phase == Phase::Detached)
                    .collect();
                // All are over before any is settled: a ROUTE one of them held from
                // another that expires too is answered to nobody.
                for &i in &expiring {
                    state.slots[i].phase = Phase::Lost;
                }
                for i in expiring {
                    state.end_session(i);
                }
            }
        }
        state
    }
}

// ---------------------------------------------------------------- the real relay

/// How often the interesting things happened, over all cases: the test fails if the
/// strategy stopped producing them.
static DELIVERED: AtomicUsize = AtomicUsize::new(0);
static RESUMED: AtomicUsize = AtomicUsize::new(0);
static TAKEN_OVER: AtomicUsize = AtomicUsize::new(0);
static EXPIRED: AtomicUsize = AtomicUsize::new(0);
static REVOKED: AtomicUsize = AtomicUsize::new(0);
static DUPLICATES_DROPPED: AtomicUsize = AtomicUsize::new(0);

/// The relay under test: ours, in-process, with a 2 s grace and hold.
static RELAY: LazyLock<(String, Handle, tokio::runtime::Runtime)> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (url, handle) = runtime.block_on(async {
        let mut config = Config::ephemeral();
        let mut sessions = SessionConfig::default();
        sessions.grace = GRACE;
        sessions.hold = GRACE;
        // Revocation steps count as failed RESUMEs; the per-address limit is case 6.9/1's.
        sessions.failed_resumes_per_minute = 100_000;
        config.sessions = sessions;
        let server = Server::bind(config).await.expect("bind");
        let url = format!("ws://{}", server.local_addrs()[0]);
        let handle = server.handle();
        tokio::spawn(server.run(std::future::pending()));
        (url, handle)
    });
    (url, handle, runtime)
});

/// One resumable client, as rule 6.4 asks a client to be: it keeps the stream numbers it
/// has seen and drops a repeat.
#[derive(Default)]
struct Client {
    peer: Option<Peer>,
    /// The connection of a half-open link: open, unread, until a RESUME takes it over.
    zombie: Option<Peer>,
    /// The relay knows the connection is gone (closed or reset).
    detached: bool,
    address: String,
    secret: String,
    /// The secret of the last RESUME: still good until the relay knows the RESUMED
    /// arrived (rule 6.9).
    old_secret: Option<String>,
    /// The secret of the RESUME before: superseded.
    superseded: Option<String>,
    /// The stream as this client saw it, each number once.
    received: Vec<Item>,
    /// The highest stream number seen; the last ACK sent.
    highest: u64,
    acked: u64,
    /// The ROUTEs of this session, by number - 1; the highest ROUTEACK seen.
    sent: Vec<String>,
    route_acked: u64,
}

impl Client {
    /// Take in one frame from the relay.
    fn take(&mut self, frame: Received) -> Result<(), String> {
        let Received::Text(text) = &frame else {
            return Err(format!("expected a stream message, got {frame}"));
        };
        let (seq, item) = match Message::parse(text) {
            Ok(Message::Routeack { seq, .. }) => {
                self.route_acked = self.route_acked.max(seq);
                return Ok(());
            }
            Ok(Message::Deliver {
                seq: Some(seq),
                msg,
                ..
            }) => {
                let value: serde_json::Value =
                    serde_json::from_str(msg.as_str()).map_err(|e| e.to_string())?;
                let field = |name: &str| value[name].as_u64().ok_or(format!("msg {text}"));
                let from = usize::try_from(field("from")?).map_err(|e| e.to_string())?;
                (
                    seq,
                    Item::Deliver {
                        from,
                        n: field("n")?,
                    },
                )
            }
            Ok(Message::Err {
                err_code,
                route: Some(route),
                seq: Some(seq),
                ..
            }) => (
                seq,
                Item::Err {
                    route,
                    code: err_code,
                },
            ),
            _ => return Err(format!("expected a stream message, got {text}")),
        };
        if seq <= self.highest {
            DUPLICATES_DROPPED.fetch_add(1, Ordering::Relaxed);
        } else if seq == self.highest + 1 {
            self.highest = seq;
            self.received.push(item);
        } else {
            return Err(format!(
                "stream number {seq} after {}: a gap (rule 6.4)",
                self.highest
            ));
        }
        Ok(())
    }

    /// Read until `items` stream messages and ROUTEACK `routes` have arrived.
    async fn pump(&mut self, items: usize, routes: u64, within: Duration) -> Result<(), String> {
        while self.received.len() < items || self.route_acked < routes {
            let peer = self.peer.as_mut().ok_or("not connected")?;
            let frame = peer.next(within).await.map_err(|e| {
                format!(
                    "waiting for stream message {} of {items} (ROUTEACK {} of {routes}): {e}",
                    self.received.len() + 1,
                    self.route_acked
                )
            })?;
            self.take(frame)?;
        }
        Ok(())
    }

    /// Read until the relay ends the connection; its close code.
    async fn until_closed(&mut self) -> Result<Option<u16>, String> {
        let mut peer = self.peer.take().ok_or("not connected")?;
        loop {
            match peer.next(WAIT).await? {
                Received::Close(frame) => {
                    let _ = peer.wait_for_end(WAIT).await;
                    return Ok(frame.map(|(code, _)| code));
                }
                Received::Ended(how) => return Err(format!("no close frame: {how}")),
                frame => self.take(frame)?,
            }
        }
    }
}

/// The oracle: `real` holds exactly the stream messages of `owed`, each sender's DELIVERs
/// in the order sent, every ERR answering the ROUTE the model says.
fn same_stream(owed: &[Item], real: &[Item]) -> Result<(), String> {
    let delivers_from = |items: &[Item], sender: usize| -> Vec<u64> {
        items
            .iter()
            .filter_map(|item| match *item {
                Item::Deliver { from, n } if from == sender => Some(n),
                _ => None,
            })
            .collect()
    };
    let errs = |items: &[Item]| -> Vec<Item> {
        let mut errs: Vec<Item> = items
            .iter()
            .filter(|item| matches!(item, Item::Err { .. }))
            .cloned()
            .collect();
        errs.sort();
        errs
    };
    let same = real.len() == owed.len()
        && (0..SLOTS).all(|s| delivers_from(owed, s) == delivers_from(real, s))
        && errs(owed) == errs(real);
    if same {
        Ok(())
    } else {
        Err(format!(
            "the stream owed was {owed:?}, the stream received {real:?}"
        ))
    }
}

struct RealRelay {
    runtime: std::sync::Arc<tokio::runtime::Runtime>,
    url: String,
    clients: Vec<Client>,
    /// A version 1 connection that waits for detached sessions to expire.
    observer: Peer,
    addresses: Vec<String>,
}

fn text(frame: &Received) -> Option<Message> {
    match frame {
        Received::Text(text) => Message::parse(text).ok(),
        _ => None,
    }
}

fn is_err(frame: &Received, code: u16) -> bool {
    matches!(text(frame), Some(Message::Err { err_code, seq: None, .. }) if err_code == code)
}

fn resume_frame(address: &str, secret: &str, seq: u64) -> String {
    format!(r#"{{"type":"RESUME","EpheWssAddr":"{address}","secret":"{secret}","seq":{seq}}}"#)
}

impl RealRelay {
    async fn connect(&self) -> Result<Peer, String> {
        Peer::connect_v2(&self.url, &ClientBuilder::default())
            .await?
            .ok_or_else(|| "our relay did not select compendium.v2".to_owned())
    }

    async fn step(&mut self, model: &Model, transition: &Transition) -> Result<(), String> {
        match *transition {
            Transition::Start(i) => {
                let mut peer = self.connect().await?;
                peer.send_text(Message::init().to_json()).await?;
                let frame = peer.next(WAIT).await?;
                let Some(Message::Initresp {
                    ephe_wss_addr,
                    secret: Some(secret),
                    grace: Some(_),
                    ..
                }) = text(&frame)
                else {
                    return Err(format!("INIT: expected a version 2 INITRESP, got {frame}"));
                };
                if self.addresses.len() != model.slots[i].token.unwrap_or_default() {
                    return Err("model and relay disagree on the number of addresses".into());
                }
                self.addresses.push(ephe_wss_addr.to_string());
                self.clients[i] = Client {
                    peer: Some(peer),
                    address: ephe_wss_addr.to_string(),
                    secret: secret.expose_hex(),
                    ..Client::default()
                };
            }
            Transition::Route { from, to } => {
                let address = match to {
                    Target::Client(j) => self.clients[j].address.clone(),
                    Target::Retired(t) => self.addresses[t].clone(),
                    Target::Random => {
                        let mut bytes = [0u8; 16];
                        getrandom::fill(&mut bytes).map_err(|e| e.to_string())?;
                        format!("{:032x}", u128::from_le_bytes(bytes))
                    }
                };
                let n = model.routed - 1;
                let client = &mut self.clients[from];
                let seq = client.sent.len() as u64 + 1;
                if seq != model.slots[from].routes {
                    return Err("model and client disagree on the ROUTE number".into());
                }
                let frame = format!(
                    r#"{{"type":"ROUTE","EpheWssAddr":"{address}","seq":{seq},"msg":{{"from":{from},"n":{n}}}}}"#
                );
                client.sent.push(frame.clone());
                client
                    .peer
                    .as_mut()
                    .ok_or("not connected")?
                    .send_text(frame)
                    .await?;
                // Acted on (rule 6.5) before the next step, so that what the model owes
                // does not depend on whether the ROUTE outran a later cut.
                client.pump(0, seq, WAIT).await?;
                if matches!(to, Target::Client(_)) {
                    DELIVERED.fetch_add(1, Ordering::Relaxed);
                }
            }
            Transition::Ack(i) => {
                let client = &mut self.clients[i];
                client.acked = client.highest;
                let ack = format!(r#"{{"type":"ACK","seq":{}}}"#, client.highest);
                client
                    .peer
                    .as_mut()
                    .ok_or("not connected")?
                    .send_text(ack)
                    .await?;
            }
            Transition::Cut(i, cut) => {
                let client = &mut self.clients[i];
                let peer = client.peer.take().ok_or("not connected")?;
                match cut {
                    Cut::Close => peer.close(WAIT).await?,
                    Cut::Reset => peer.drop_abruptly(),
                    Cut::HalfOpen => client.zombie = Some(peer),
                }
                if !matches!(cut, Cut::HalfOpen) {
                    client.detached = true;
                    let detached = model
                        .slots
                        .iter()
                        .filter(|s| s.phase == Phase::Detached)
                        .count();
                    let handle = &RELAY.1;
                    tokio::time::timeout(WAIT, handle.detached_sessions(detached))
                        .await
                        .map_err(|_| format!("the relay did not detach the session of slot {i}"))?;
                }
            }
            Transition::Resume { slot, lag, resend } => {
                let mut peer = self.connect().await?;
                let client = &mut self.clients[slot];
                let seq = if lag { client.acked } else { client.highest };
                peer.send_text(resume_frame(&client.address, &client.secret, seq))
                    .await?;
                let frame = peer.next(WAIT).await?;
                if model.slots[slot].phase == Phase::None {
                    // The session ended while the client was away.
                    if !is_err(&frame, 410) {
                        return Err(format!(
                            "RESUME of an ended session: expected ERR 410, got {frame}"
                        ));
                    }
                    self.clients[slot] = Client::default();
                    return Ok(());
                }
                let Some(Message::Resumed {
                    ephe_wss_addr,
                    secret,
                    seq: routes,
                    ..
                }) = text(&frame)
                else {
                    return Err(format!("RESUME: expected RESUMED, got {frame}"));
                };
                if ephe_wss_addr.to_string() != client.address {
                    return Err(format!("RESUMED another address: {ephe_wss_addr}"));
                }
                if routes != client.sent.len() as u64 {
                    return Err(format!(
                        "RESUMED says {routes} ROUTEs acted on; every one of the {} sent was",
                        client.sent.len()
                    ));
                }
                RESUMED.fetch_add(1, Ordering::Relaxed);
                client.route_acked = routes;
                let used = std::mem::replace(&mut client.secret, secret.expose_hex());
                client.superseded = client.old_secret.replace(used);
                client.detached = false;
                client.peer = Some(peer);
                if let Some(mut zombie) = client.zombie.take() {
                    let close = zombie.wait_for_end(WAIT).await?;
                    if close.as_ref().map(|c| c.0) != Some(4001) {
                        return Err(format!(
                            "the taken-over connection ended with {close:?}, not 4001"
                        ));
                    }
                    TAKEN_OVER.fetch_add(1, Ordering::Relaxed);
                }
                if resend {
                    // ROUTEs the relay has acted on, resent: each must be dropped (rule 6.5).
                    let again: Vec<String> = client.sent.iter().rev().take(3).cloned().collect();
                    let peer = client.peer.as_mut().ok_or("not connected")?;
                    for frame in again.into_iter().rev() {
                        peer.send_text(frame).await?;
                    }
                }
            }
            Transition::End(i) => {
                let client = &mut self.clients[i];
                let peer = client.peer.as_mut().ok_or("not connected")?;
                peer.send_text(r#"{"type":"END"}"#.to_owned()).await?;
                let close = client.until_closed().await?;
                if close != Some(1000) {
                    return Err(format!("END: the relay closed with {close:?}, not 1000"));
                }
                same_stream(&model.slots[i].stream, &client.received)
                    .map_err(|e| format!("END flushes the stream: {e}"))?;
                self.clients[i] = Client::default();
            }
            Transition::StaleResume(i) => {
                let mut peer = self.connect().await?;
                let client = &mut self.clients[i];
                let stale = client.superseded.clone().ok_or("no superseded secret")?;
                peer.send_text(resume_frame(&client.address, &stale, client.highest))
                    .await?;
                let frame = peer.next(WAIT).await?;
                if !is_err(&frame, 410) {
                    return Err(format!(
                        "RESUME with a superseded secret: expected ERR 410, got {frame}"
                    ));
                }
                REVOKED.fetch_add(1, Ordering::Relaxed);
                client.detached = false;
                let close = if client.peer.is_some() {
                    Some(client.until_closed().await?)
                } else if let Some(mut zombie) = client.zombie.take() {
                    Some(zombie.wait_for_end(WAIT).await?.map(|c| c.0))
                } else {
                    None
                };
                if let Some(close) = close
                    && close != Some(4002)
                {
                    return Err(format!(
                        "the revoked session's connection ended with {close:?}, not 4002"
                    ));
                }
                if model.slots[i].phase == Phase::None {
                    self.clients[i] = Client::default();
                }
            }
            Transition::GraceElapses => {
                // A version 1 ROUTE to a detached session is held until the session ends
                // (the hold is the grace here), then answered 404: the expiry, awaited.
                let away: Vec<String> = self
                    .clients
                    .iter()
                    .filter(|c| c.detached)
                    .map(|c| c.address.clone())
                    .collect();
                for address in &away {
                    self.observer
                        .send_text(format!(
                            r#"{{"type":"ROUTE","EpheWssAddr":"{address}","msg":{{}}}}"#
                        ))
                        .await?;
                }
                for address in &away {
                    let frame = self.observer.next(GRACE + WAIT).await?;
                    if !is_err(&frame, 404) {
                        return Err(format!(
                            "after the grace, a ROUTE to {address}: expected ERR 404, got {frame}"
                        ));
                    }
                    EXPIRED.fetch_add(1, Ordering::Relaxed);
                }
                for client in &mut self.clients {
                    client.detached = false;
                }
            }
        }
        self.check(model).await
    }

    /// Every attached client has exactly what the model owes it.
    async fn check(&mut self, model: &Model) -> Result<(), String> {
        for (i, client) in self.clients.iter_mut().enumerate() {
            let slot = &model.slots[i];
            if slot.phase != Phase::Attached {
                continue;
            }
            client
                .pump(slot.stream.len(), slot.routes, WAIT)
                .await
                .map_err(|e| format!("slot {i}: {e}"))?;
            same_stream(&slot.stream, &client.received).map_err(|e| format!("slot {i}: {e}"))?;
        }
        Ok(())
    }

    /// Nothing stray waits anywhere: a probe's answer comes before any further message.
    async fn settle(&mut self, model: &Model) -> Result<(), String> {
        for (i, client) in self.clients.iter_mut().enumerate() {
            let Some(peer) = client.peer.as_mut() else {
                continue;
            };
            peer.send_text(PROBE.to_owned()).await?;
            loop {
                let peer = client.peer.as_mut().ok_or("not connected")?;
                let frame = peer.next(WAIT).await?;
                if is_err(&frame, 400) {
                    break;
                }
                client.take(frame).map_err(|e| format!("slot {i}: {e}"))?;
            }
            same_stream(&model.slots[i].stream, &client.received)
                .map_err(|e| format!("slot {i} at the end: {e}"))?;
        }
        Ok(())
    }
}

impl RealRelay {
    async fn end_all(&mut self, model: &Model) -> Result<(), String> {
        for i in 0..SLOTS {
            let phase = model.slots[i].phase;
            if matches!(phase, Phase::Detached | Phase::HalfOpen) {
                let resume = Transition::Resume {
                    slot: i,
                    lag: false,
                    resend: false,
                };
                let resumed = SessionModel::apply(model.clone(), &resume);
                self.step(&resumed, &resume).await?;
            }
            let client = &mut self.clients[i];
            if let Some(peer) = client.peer.as_mut() {
                peer.send_text(r#"{"type":"END"}"#.to_owned()).await?;
                client.until_closed().await?;
            }
        }
        Ok(())
    }
}

struct SessionTest;

impl StateMachineTest for SessionTest {
    type SystemUnderTest = RealRelay;
    type Reference = SessionModel;

    fn init_test(_: &Model) -> RealRelay {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let url = RELAY.0.clone();
        let observer = runtime
            .block_on(Peer::connect(&url, &ClientBuilder::default()))
            .expect("observer connects");
        RealRelay {
            runtime: std::sync::Arc::new(runtime),
            url,
            clients: (0..SLOTS).map(|_| Client::default()).collect(),
            observer,
            addresses: Vec::new(),
        }
    }

    fn apply(mut sut: RealRelay, model: &Model, transition: Transition) -> RealRelay {
        let runtime = sut.runtime.clone();
        if let Err(e) = runtime.block_on(sut.step(model, &transition)) {
            panic!("after {transition:?}: {e}");
        }
        sut
    }

    fn teardown(mut sut: RealRelay, model: Model) {
        let runtime = sut.runtime.clone();
        if let Err(e) = runtime.block_on(sut.settle(&model)) {
            panic!("at the end: {e}");
        }
        // End every session left, so that the next case starts on a relay with no detached
        // session (a cut awaits the relay's count of them).
        if let Err(e) = runtime.block_on(sut.end_all(&model)) {
            panic!("ending the sessions left: {e}");
        }
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12)
}

#[test]
fn resumable_sessions_behave_like_the_model() {
    let config = ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config.clone());
    let result = runner.run(
        &SessionModel::sequential_strategy(1..32),
        |(initial, transitions, seen)| {
            SessionTest::test_sequential(config.clone(), initial, transitions, seen);
            Ok(())
        },
    );
    if let Err(err) = result {
        panic!("{err}");
    }
    let count = |c: &AtomicUsize| c.load(Ordering::Relaxed);
    eprintln!(
        "version 2 model: {} ROUTEs to sessions, {} resumes ({} takeovers), {} expiries, \
         {} revocations, {} repeated stream messages dropped by number",
        count(&DELIVERED),
        count(&RESUMED),
        count(&TAKEN_OVER),
        count(&EXPIRED),
        count(&REVOKED),
        count(&DUPLICATES_DROPPED)
    );
    assert!(
        count(&DELIVERED) > 0,
        "the model routed nothing to a session"
    );
    assert!(count(&RESUMED) > 0, "the model resumed nothing");
}
