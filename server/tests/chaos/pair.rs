//! A pair of clients (both resumable, or both version 1) exchanging numbered messages
//! both ways through the front until told to stop; what each side sent, got and was told,
//! and the oracle that judges it.

use std::time::Duration;

use compendium_client::{Client, Error, Event};
use compendium_messages::Address;
use serde_json::{Value, json};
use tokio::sync::watch;

/// How far a sender may run ahead of what its peer has received or it was refused.
const WINDOW: u64 = 16;
/// The pause between two ROUTEs of a sender: load, not a flood (the faults are the point).
const PACE: Duration = Duration::from_millis(4);
/// How long the end of a run waits for what is still on its way.
const SETTLE: Duration = Duration::from_secs(20);
/// How long a side still listens once its pairing is over: ERRs for its ROUTEs that wait
/// on another node's verdict come within 1¼ cluster timeouts (2.5 s).
const LINGER: Duration = Duration::from_secs(3);

/// What one side of a pair did, as its peer and the oracle see it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Side {
    /// ROUTEs the client took (numbered 1..=sent).
    pub(crate) sent: u64,
    /// ERRs it got for its ROUTEs (each a ROUTE refused, or perhaps not delivered).
    pub(crate) refused: u64,
    /// The numbers it received from its peer, in arrival order.
    pub(crate) got: Vec<u64>,
    /// Resumes of its session.
    pub(crate) resumes: u64,
    /// It was told its pairing is over (session lost, connection closed, peer gone).
    pub(crate) told: Option<String>,
    /// Its own link is gone (connection closed, session lost): ERRs still owed to it
    /// have nowhere to go.
    pub(crate) link_lost: bool,
    /// It sends no more.
    pub(crate) done_sending: bool,
    /// Its address.
    pub(crate) address: String,
    /// What happened to it besides messages, for a report of a violation: resumes,
    /// refusals, the end.
    pub(crate) log: Vec<String>,
}

impl Side {
    fn tell(&mut self, why: String) {
        self.note(&why);
        // The first reason is the one that counts; the log has the rest.
        self.told.get_or_insert(why);
    }

    /// Its own link ended: told, and nothing more can come.
    fn lose(&mut self, why: String) {
        self.link_lost = true;
        self.tell(why);
    }

    fn note(&mut self, what: &str) {
        let line = format!("{what} (sent {}, got {})", self.sent, self.got.len());
        self.log.push(line);
    }
}

/// A pair's outcome.
#[derive(Debug)]
pub(crate) struct Report {
    pub(crate) resumable: bool,
    pub(crate) sides: [Side; 2],
}

impl Report {
    /// What the oracle finds wrong; empty if nothing.
    ///
    /// For each direction: what arrived is in order with none repeated and none unsent;
    /// unless either side was told the pairing is over, every message sent arrived or its
    /// sender got an ERR for it; and if one was, every message missing *below the last
    /// that arrived* got its sender an ERR — unless the sender's own link ended, taking
    /// the ERRs still owed to it along. (A 503 "may not have been delivered" is an ERR for
    /// a ROUTE that may still arrive: it accounts for one message at most.)
    pub(crate) fn violations(&self) -> Vec<String> {
        let kind = if self.resumable { "resumable" } else { "v1" };
        let told = self.sides.iter().find_map(|s| s.told.clone());
        let mut found = Vec::new();
        for (from, to) in [(0, 1), (1, 0)] {
            let (sender, got) = (&self.sides[from], &self.sides[to].got);
            if let Some(at) = got.windows(2).position(|w| w[0] >= w[1]) {
                let (before, after) = (got[at], got[at + 1]);
                let how = if got[..=at].contains(&after) {
                    "repeated"
                } else {
                    "late"
                };
                let around = &got[at.saturating_sub(3)..(at + 25).min(got.len())];
                found.push(format!(
                    "{kind} pair, side {to}: got {after} after {before} ({how}), arrivals from \
                     there: {around:?}; side {from} {}: {:?}; side {to} {}: {:?}",
                    sender.address, sender.log, self.sides[to].address, self.sides[to].log
                ));
            }
            let last = got.iter().copied().max().unwrap_or(0);
            if last > sender.sent {
                found.push(format!(
                    "{kind} pair, side {to}: got {last}, only {} sent",
                    sender.sent
                ));
            }
            // Once a pairing is over, what was on its way to the side that left is lost
            // without a word (a version 1 DELIVER into a closing socket): only the gaps
            // below the last arrival must be explained — and not even those if the
            // sender's own link ended, taking their ERRs along.
            let unexplained = match (&told, sender.link_lost) {
                (None, _) => sender.sent.saturating_sub(got.len() as u64),
                (Some(_), false) => last.saturating_sub(got.len() as u64),
                (Some(_), true) => 0,
            };
            if unexplained > sender.refused {
                let arrived: std::collections::BTreeSet<u64> = got.iter().copied().collect();
                let gaps: Vec<u64> = (1..=last)
                    .filter(|n| !arrived.contains(n))
                    .take(20)
                    .collect();
                found.push(format!(
                    "{kind} pair, side {from} -> {to}: {unexplained} messages missing, {} refused \
                     ({} sent, {} arrived, last {last}, gaps {gaps:?}; told: {told:?}); side \
                     {from} {}: {:?}; side {to} {}: {:?}",
                    sender.refused,
                    sender.sent,
                    got.len(),
                    sender.address,
                    sender.log,
                    self.sides[to].address,
                    self.sides[to].log
                ));
            }
        }
        found
    }
}

/// The number a delivered message carries (0 if it has none: never sent by a pair).
fn number(msg: &compendium_messages::Payload) -> u64 {
    msg.decode::<Value>()
        .ok()
        .and_then(|v| v["n"].as_u64())
        .unwrap_or(0)
}

/// The client settings of the chaos: a dead link is noticed within 2 s.
fn builder(resumable: bool) -> compendium_client::ClientBuilder {
    Client::builder()
        .resumable(resumable)
        .ping_interval(Some(Duration::from_millis(500)))
        .idle_timeout(Some(Duration::from_secs(2)))
        .connect_timeout(Duration::from_secs(2))
        .handshake_timeout(Duration::from_secs(2))
        .request_timeout(Duration::from_secs(3))
}

/// A connected client with an address, retried while the cluster is in a fault (a node
/// down or frozen); `None` if that does not succeed within half a minute.
async fn connect(url: &str, resumable: bool) -> Option<(Client, Address)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        if let Ok(client) = builder(resumable).connect(url).await
            && let Ok(address) = client.init().await
        {
            return Some((client, address));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Run one pair through `url` until `stop` (or until its pairing is over); `None` if it
/// could not even be set up.
pub(crate) async fn run(
    url: String,
    resumable: bool,
    stop: watch::Receiver<bool>,
) -> Option<Report> {
    let (a, a_addr) = connect(&url, resumable).await?;
    let (b, b_addr) = connect(&url, resumable).await?;
    let side_of = |address: &Address| Side {
        address: address.to_string(),
        ..Side::default()
    };
    let (sides, _) = watch::channel([side_of(&a_addr), side_of(&b_addr)]);
    let sides = std::sync::Arc::new(sides);
    let tasks = [(a, b_addr, 0), (b, a_addr, 1)].map(|(client, peer, me)| {
        tokio::spawn(side(
            client,
            peer,
            me,
            std::sync::Arc::clone(&sides),
            stop.clone(),
        ))
    });
    for task in tasks {
        task.await.expect("a pair's side");
    }
    let sides = sides.borrow().clone();
    Some(Report { resumable, sides })
}

/// One side: send numbered messages to `peer`, take the peer's, until stopped or told
/// the pairing is over; then wait for what is still on its way (when stopped: until all
/// arrived; when told: [`LINGER`], for late ERRs) and close.
async fn side(
    mut client: Client,
    peer: Address,
    me: usize,
    sides: std::sync::Arc<watch::Sender<[Side; 2]>>,
    mut stop: watch::Receiver<bool>,
) {
    let sender = client.sender();
    let mut changes = sides.subscribe();
    let mut pace = tokio::time::interval(PACE);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let update = |f: &mut dyn FnMut(&mut Side)| sides.send_modify(|s| f(&mut s[me]));
    let mut settle_until = None;
    let mut linger_until = None;
    loop {
        let (mine, theirs) = {
            let s = changes.borrow_and_update();
            (s[me].clone(), s[1 - me].clone())
        };
        if mine.link_lost {
            break;
        }
        if (mine.told.is_some() || theirs.told.is_some()) && linger_until.is_none() {
            update(&mut |s| s.done_sending = true);
            linger_until = Some(tokio::time::Instant::now() + LINGER);
            continue;
        }
        let stopping = *stop.borrow();
        if stopping && !mine.done_sending {
            update(&mut |s| s.done_sending = true);
            settle_until = Some(tokio::time::Instant::now() + SETTLE);
            continue;
        }
        // Everything the peer sent that was not refused has arrived.
        let all_in = theirs.done_sending && mine.got.len() as u64 + theirs.refused >= theirs.sent;
        if mine.done_sending && all_in && linger_until.is_none() {
            break;
        }
        let can_send =
            !mine.done_sending && mine.sent < theirs.got.len() as u64 + mine.refused + WINDOW;
        let wait_until = match (linger_until, settle_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let settle = wait_until.unwrap_or_else(|| tokio::time::Instant::now() + SETTLE);
        tokio::select! {
            _ = pace.tick(), if can_send => {
                let n = mine.sent + 1;
                match sender.route(&peer, &json!({ "n": n })).await {
                    Ok(()) => update(&mut |s| s.sent = n),
                    Err(err) => update(&mut |s| s.lose(format!("route: {err}"))),
                }
            }
            _ = stop.changed(), if !stopping => {}
            _ = changes.changed() => {}
            () = tokio::time::sleep_until(settle), if wait_until.is_some() => break,
            event = client.next_event() => match event {
                Some(Event::Deliver(msg)) => {
                    let n = number(&msg);
                    update(&mut |s| s.got.push(n));
                }
                Some(Event::Resumed { resent, .. }) => update(&mut |s| {
                    s.resumes += 1;
                    s.note(&format!("resumed, {resent} resent"));
                }),
                // The peer's address is gone: nothing more can reach it.
                Some(Event::Error(Error::Server { code: 404, .. })) => {
                    update(&mut |s| { s.refused += 1; s.tell("404: peer gone".to_owned()); });
                }
                Some(Event::Error(err @ Error::Server { .. })) => update(&mut |s| {
                    s.refused += 1;
                    s.note(&err.to_string());
                }),
                Some(Event::Error(err)) => update(&mut |s| s.tell(format!("invalid: {err}"))),
                Some(Event::SessionLost { reason }) => {
                    update(&mut |s| s.lose(format!("session lost: {reason}")));
                }
                Some(Event::Closed { code, reason }) => {
                    update(&mut |s| s.lose(format!("closed {code:?}: {reason}")));
                }
                Some(_) => {}
                None => update(&mut |s| s.lose("events ended".to_owned())),
            },
        }
    }
    // Closing can still bring ERRs for ROUTEs refused after all.
    let (closer, mut events) = client.split();
    let closing = closer.close();
    tokio::pin!(closing);
    let mut closed = false;
    loop {
        tokio::select! {
            result = &mut closing, if !closed => {
                closed = true;
                let untold = sides.borrow().iter().all(|s| s.told.is_none());
                if let Err(err) = result
                    && untold
                {
                    update(&mut |s| s.tell(format!("close: {err}")));
                }
            }
            event = tokio::time::timeout(SETTLE, events.next_event()) => match event {
                Ok(Some(Event::Error(Error::Server { .. }))) => update(&mut |s| s.refused += 1),
                Ok(Some(Event::Deliver(msg))) => {
                    let n = number(&msg);
                    update(&mut |s| s.got.push(n));
                }
                Ok(Some(Event::Closed { .. }) | None) | Err(_) => break,
                Ok(Some(_)) => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(sent: u64, refused: u64, got: &[u64], told: bool) -> Side {
        Side {
            sent,
            refused,
            got: got.to_vec(),
            told: told.then(|| "session lost".to_owned()),
            ..Side::default()
        }
    }

    fn report(a: Side, b: Side) -> Vec<String> {
        Report {
            resumable: true,
            sides: [a, b],
        }
        .violations()
    }

    #[test]
    fn the_oracle_takes_what_was_sent_arrived_or_was_refused() {
        assert!(report(side(3, 0, &[1, 2], false), side(2, 0, &[1, 2, 3], false)).is_empty());
        // One refused (and not delivered), one refused but delivered after all (a 503).
        assert!(report(side(0, 0, &[1, 3], false), side(3, 1, &[], false)).is_empty());
        assert!(report(side(0, 0, &[1, 2, 3], false), side(3, 1, &[], false)).is_empty());
        // Told: what was on its way to the side that left may be lost without a word;
        // a gap needs an ERR, unless the sender's own link ended.
        assert!(report(side(0, 0, &[1, 2], true), side(9, 0, &[], false)).is_empty());
        assert!(report(side(0, 0, &[1, 3], true), side(5, 1, &[], false)).is_empty());
        let mut gone = side(5, 0, &[], true);
        gone.link_lost = true;
        assert!(report(side(0, 0, &[1, 3], false), gone).is_empty());
    }

    #[test]
    fn the_oracle_finds_a_loss_a_repeat_a_reordering_and_an_invention() {
        let lost = report(side(0, 0, &[1, 3], false), side(3, 0, &[], false));
        assert!(lost[0].contains("1 messages missing"), "{lost:?}");
        let tail = report(side(0, 0, &[1], false), side(3, 1, &[], false));
        assert!(
            tail[0].contains("2 messages missing, 1 refused"),
            "{tail:?}"
        );
        let repeat = report(side(0, 0, &[1, 2, 2], false), side(2, 0, &[], false));
        assert!(repeat[0].contains("got 2 after 2"), "{repeat:?}");
        let reordered = report(side(0, 0, &[2, 1], false), side(2, 0, &[], false));
        assert!(reordered[0].contains("got 1 after 2"), "{reordered:?}");
        let invented = report(side(0, 0, &[1, 2, 3], false), side(2, 0, &[], false));
        assert!(invented[0].contains("only 2 sent"), "{invented:?}");
        let gap = report(side(0, 0, &[1, 3], true), side(5, 0, &[], false));
        assert!(gap[0].contains("1 messages missing, 0 refused"), "{gap:?}");
    }
}
