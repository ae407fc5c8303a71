//! Sessions that move between nodes (docs/cluster.md, "Resume on any node").
//!
//! Behind a load balancer a client that reconnects lands on any node. A RESUME for a
//! session another node holds is a *claim*, in two steps:
//!
//! 1. **Check.** The claimer asks the node that drew the address (its home, sealed in the
//!    address), on `<prefix>.claim.<home>`; a session that moved on from its home is asked
//!    on its own subject, `<prefix>.session.<address>`, to which only a node holding a
//!    session that moved there subscribes. The holder checks the secret as a local RESUME
//!    would (a superseded one revokes the session) and answers "accepted"; nothing moves
//!    yet, but from now on it notes the requests it delivers from the session's subject.
//! 2. **Fetch.** The claimer subscribes to the session's subject — from then on every
//!    ROUTE sent there reaches it too — and asks for the session. The holder resumes it
//!    as a local RESUME would (secrets rotated, its connection taken over, held DELIVERs
//!    into the stream), and sends it: secrets, numbers, the unacknowledged stream, and
//!    where each sender's numbered stream of ROUTEs to the session stands (`inbound.rs`).
//!    The claimer installs it, answers RESUMED, and serves the session's subject.
//!
//! ROUTEs sent to a session's subject are numbered per sending node. While both nodes
//! subscribe, one can reach both (the new holder drops what the old one delivered); NATS
//! orders the messages of one publisher, not of several, so one can also reach the old
//! holder after the fetch and not the new one: the old holder passes on what reaches it
//! for a cluster timeout after it let the session go, and the new holder puts every ROUTE
//! in its place by its number. Nothing lost, nothing twice, each sender's ROUTEs in order.
//!
//! Afterwards the home answers ROUTEs for the address "moved", and their senders send them
//! on to the session's subject; when the home is gone ("no responders"), senders go there
//! directly. So a session that never moves costs NATS nothing, and one that moved costs
//! one subscription, at its holder, for as long as it lives there.

use std::sync::Arc;
use std::time::Instant;

use async_nats::{RequestErrorKind, StatusCode, Subject, Subscriber};
use bytes::Bytes;
use compendium_messages::{Address, codes};
use futures_util::StreamExt;

use super::handover_wire::{self as hw, Answer, Control, Step};
use super::inbound::{Inbound, Stream};
use super::{Cluster, next_until_departed, serving, wire};
use crate::addressing::NodeId;
use crate::directory::Directory;
use crate::outbox::Outbox;
use crate::relay::NOT_FOUND_TEXT;
use crate::remote::{Claim, Claimed, Verdict};
use crate::session::{self, Resume, SessionCell};

/// The largest state a claimer takes in: far more than any session's bounds allow.
const MAX_STATE_BYTES: usize = 1 << 28;

/// What a claimer keeps of a claim that succeeded, to serve the session's subject once the
/// session is installed.
pub(crate) struct Adoption {
    subscriber: Subscriber,
    /// Where each sender's numbered stream to the session stands.
    inbound: Vec<(Stream, u64)>,
    /// This claim's fetch went to the session's subject too, from this inbox: not a claim
    /// to answer.
    own_inbox: String,
    /// Where the session was drawn, to be told when it ends; `None`: here.
    home: Option<NodeId>,
}

/// What came back from one question to another node.
enum Asked {
    Answer(Answer),
    NoResponders,
    Failed,
}

impl Cluster {
    /// The subject of a session that moved away from its home.
    pub(crate) fn session_subject(&self, address: Address) -> String {
        format!("{}.session.{address}", self.prefix)
    }

    fn claim_subject(&self, node: NodeId) -> String {
        format!("{}.claim.{node}", self.prefix)
    }

    /// Ask the node holding the session that `claim`'s RESUME names to hand it over
    /// (within three cluster timeouts at most).
    pub(crate) async fn claim(&self, claim: &Claim) -> (Claimed, Option<Adoption>) {
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(3 * self.timeout, self.try_claim(claim))
            .await
            .unwrap_or((Claimed::Unavailable, None));
        if let Claimed::Moved(exported) = &result.0 {
            tracing::info!(
                address = %claim.address,
                replayed = exported.stream.len(),
                millis = started.elapsed().as_secs_f64() * 1e3,
                "session moved here from another node"
            );
        }
        result
    }

    async fn try_claim(&self, claim: &Claim) -> (Claimed, Option<Adoption>) {
        let unavailable = (Claimed::Unavailable, None);
        if !self.link.is_up() {
            return unavailable;
        }
        let step = |step| {
            hw::encode_claim(&hw::Claim {
                step,
                address: claim.address,
                secret: claim.secret.clone(),
                seq: claim.seq,
            })
        };
        let check = step(Step::Check);
        let session_subject = self.session_subject(claim.address);
        let mut fetch_from = None;
        let mut home_absent = None;
        if let Some(home) = claim.home {
            match self.ask(self.claim_subject(home), check.clone()).await {
                Asked::Answer(Answer::Accepted(_)) => fetch_from = Some(self.claim_subject(home)),
                Asked::Answer(Answer::Moved) => {}
                Asked::Answer(Answer::Refused) => return (Claimed::Refused, None),
                Asked::NoResponders => home_absent = Some(home),
                Asked::Answer(Answer::Chunk { .. }) | Asked::Failed => return unavailable,
            }
        }
        if fetch_from.is_none() {
            match self.ask(session_subject.clone(), check).await {
                Asked::Answer(Answer::Accepted(_)) => fetch_from = Some(session_subject.clone()),
                Asked::Answer(Answer::Refused) => return (Claimed::Refused, None),
                // Nobody holds it — unless its home is failing over this very moment.
                Asked::NoResponders => {
                    return match home_absent {
                        Some(home) if self.absent(home) == Verdict::Absent => unavailable,
                        _ => (Claimed::Refused, None),
                    };
                }
                Asked::Answer(Answer::Moved | Answer::Chunk { .. }) | Asked::Failed => {
                    return unavailable;
                }
            }
        }
        let Some(fetch_from) = fetch_from else {
            return unavailable;
        };
        // Subscribed, at the server, before the holder lets go: from here on every ROUTE
        // to the session reaches this node.
        let Ok(subscriber) = self.client.subscribe(session_subject).await else {
            return unavailable;
        };
        let inbox = self.client.new_inbox();
        let Ok(mut replies) = self.client.subscribe(inbox.clone()).await else {
            return unavailable;
        };
        if self.client.flush().await.is_err() {
            return unavailable;
        }
        let fetch = step(Step::Fetch);
        if self
            .client
            .publish_with_reply(fetch_from, inbox.clone(), fetch.into())
            .await
            .is_err()
        {
            return unavailable;
        }
        let mut state = Vec::new();
        loop {
            let Ok(Some(message)) = tokio::time::timeout(self.timeout, replies.next()).await else {
                return unavailable;
            };
            if message.status == Some(StatusCode::NO_RESPONDERS) {
                return unavailable;
            }
            match hw::decode_answer(&message.payload) {
                Some(Answer::Chunk { last, bytes }) => {
                    state.extend_from_slice(&bytes);
                    if state.len() > MAX_STATE_BYTES {
                        return unavailable;
                    }
                    if last {
                        break;
                    }
                }
                Some(Answer::Refused) => return (Claimed::Refused, None),
                _ => return unavailable,
            }
        }
        let Some((exported, inbound)) = hw::decode_state(claim.address, &state) else {
            tracing::warn!(address = %claim.address, "cluster link: a session's state could not be read; the RESUME gets 503");
            return unavailable;
        };
        if let Some(problem) = exported.problem() {
            tracing::warn!(address = %claim.address, %problem, "cluster link: a session's state is inconsistent; the RESUME gets 503");
            return unavailable;
        }
        (
            Claimed::Moved(exported),
            Some(Adoption {
                subscriber,
                inbound,
                own_inbox: inbox,
                home: claim.home,
            }),
        )
    }

    async fn ask(&self, subject: String, payload: Vec<u8>) -> Asked {
        let request = async_nats::Request::new()
            .payload(payload.into())
            .timeout(Some(self.timeout));
        match self.client.send_request(subject, request).await {
            Ok(message) => hw::decode_answer(&message.payload).map_or(Asked::Failed, Asked::Answer),
            Err(err) if err.kind() == RequestErrorKind::NoResponders => Asked::NoResponders,
            Err(_) => Asked::Failed,
        }
    }

    /// Serve the subject of `cell`, a session that moved here, until it ends or moves on.
    pub(crate) fn adopt(self: &Arc<Self>, adoption: Adoption, cell: Arc<SessionCell>) {
        self.roaming
            .spawn(Arc::clone(self).serve_session(adoption, cell));
    }

    async fn serve_session(self: Arc<Self>, adoption: Adoption, cell: Arc<SessionCell>) {
        let Some(directory) = self.directory.get().cloned() else {
            return;
        };
        let Adoption {
            mut subscriber,
            inbound,
            own_inbox,
            home,
        } = adoption;
        let mut inbound = Inbound::new(inbound);
        let patience = self.timeout / 4;
        let moved = loop {
            let gap = inbound.deadline(patience);
            let message = tokio::select! {
                () = cell.over.cancelled() => break cell.has_moved(),
                () = sleep_until(gap) => {
                    for message in inbound.give_up() {
                        self.deliver(&directory, message).await;
                    }
                    continue;
                }
                message = subscriber.next() => match message {
                    Some(message) => message,
                    None => break false,
                },
            };
            if hw::is_control(&message.payload) {
                match hw::decode_control(&message.payload) {
                    Some(Control::Claim(claim)) if claim.address == cell.address => {
                        if message.reply.as_deref() == Some(own_inbox.as_str()) {
                            continue;
                        }
                        let at_home = home.is_none();
                        let reply = message.reply;
                        if self
                            .answer_claim(&directory, claim, reply, at_home, Some(&inbound))
                            .await
                        {
                            // What waited here for ROUTEs before it goes with the session.
                            for waiting in inbound.take_waiting() {
                                self.pass_on(waiting).await;
                            }
                            break true;
                        }
                    }
                    Some(Control::LateErr { route, code, text }) => {
                        cell.push_err(code, &text, route);
                    }
                    _ => {}
                }
                continue;
            }
            match wire::decode_request(&message.payload)
                .ok()
                .and_then(|r| r.numbered)
            {
                Some(numbered) => {
                    let (stream, seq) = (numbered.stream, numbered.seq);
                    for message in inbound.offer(stream, seq, message, Instant::now()) {
                        self.deliver(&directory, message).await;
                    }
                }
                // Not numbered (not from a node of this version), or malformed: judged
                // as it is (refused if malformed).
                None => self.deliver(&directory, message).await,
            }
        };
        if moved {
            // A ROUTE can still reach this node and not the new holder (one that NATS
            // matched before the new holder subscribed): pass on what comes for a while.
            let until = tokio::time::Instant::now() + self.timeout;
            while let Ok(Some(message)) = tokio::time::timeout_at(until, subscriber.next()).await {
                self.pass_on(message).await;
            }
            return;
        }
        if let Some(home) = home {
            // Its home may forget that it moved: ROUTEs to it get 404 there at once.
            let released = Bytes::from(hw::encode_released(cell.address));
            let _ = self
                .client
                .publish(self.claim_subject(home), released)
                .await;
        }
        // The session ended. ROUTEs on their way to its subject still get their 404 at
        // once, not a 503 after the cluster timeout: answer them for that long, then go.
        let until = tokio::time::Instant::now() + self.timeout;
        while let Ok(Some(message)) = tokio::time::timeout_at(until, subscriber.next()).await {
            self.answer_late(&directory, message).await;
        }
        let _ = subscriber.unsubscribe().await;
        while let Some(message) = subscriber.next().await {
            self.answer_late(&directory, message).await;
        }
    }

    /// Deliver a ROUTE from the session's subject and answer its sender.
    async fn deliver(&self, directory: &Directory<Outbox>, message: async_nats::Message) {
        let Some(reply) = message.reply else {
            return;
        };
        self.metrics.cluster_routes_received.inc();
        let verdict = serving::judge(
            directory,
            &message.payload,
            self.max_message_bytes,
            true,
            || self.verdict_sender(reply.clone()),
        );
        let answer = Bytes::copy_from_slice(&wire::encode_verdict(verdict));
        if let Err(err) = self.client.publish(reply, answer).await {
            tracing::debug!(error = %err, "cluster link: cannot answer a forwarded ROUTE");
        }
    }

    /// Send a numbered ROUTE that reached this node after it let its session go on to
    /// the session's subject, for its new holder (which drops it if it has it already).
    /// What was passed on once is not passed on again (this node hears its own too).
    async fn pass_on(&self, message: async_nats::Message) {
        let (Some(reply), Some(bytes)) = (message.reply, wire::pass_on(&message.payload)) else {
            return;
        };
        let subject = message.subject;
        if let Err(err) = self
            .client
            .publish_with_reply(subject, reply, bytes.into())
            .await
        {
            tracing::debug!(error = %err, "cluster link: cannot pass a ROUTE on");
        }
    }

    /// Answer a ROUTE (404: it is gone) or a claim (410) that reached the subject of a
    /// session that has ended here.
    async fn answer_late(&self, directory: &Directory<Outbox>, message: async_nats::Message) {
        if let (true, Some(reply)) = (hw::is_control(&message.payload), message.reply.clone()) {
            let _ = self
                .client
                .publish(reply, Bytes::from(hw::encode_answer(&Answer::Refused)))
                .await;
            return;
        }
        self.deliver(directory, message).await;
    }

    /// Serve claims for the sessions drawn on this node, and news of those that ended
    /// elsewhere, until `departed` (and then those that reached this node before).
    pub(super) async fn serve_claims(
        self: Arc<Self>,
        mut claims: Subscriber,
        departed: tokio_util::sync::CancellationToken,
    ) {
        let Some(directory) = self.directory.get().cloned() else {
            return;
        };
        while let Some(message) = next_until_departed(&mut claims, &departed).await {
            match hw::decode_control(&message.payload) {
                Some(Control::Claim(claim)) => {
                    // Claims for sessions drawn here do not overlap with ROUTEs to the
                    // session's subject (nobody sends there while this node answers for
                    // it), so there is nothing to note.
                    self.answer_claim(&directory, claim, message.reply, true, None)
                        .await;
                }
                Some(Control::Released(address)) => directory.forget_moved(address),
                _ => tracing::warn!("cluster link: a claim this node cannot read was ignored"),
            }
        }
    }

    /// Answer one claim step for a session of this node's directory; `at_home`: the
    /// session was drawn here; `inbound`: where the ROUTEs on the session's own subject
    /// stand (`None` on the claim subject, which a session that moved is not claimed on).
    /// Returns whether the session has left (fetched).
    async fn answer_claim(
        &self,
        directory: &Directory<Outbox>,
        claim: hw::Claim,
        reply: Option<Subject>,
        at_home: bool,
        inbound: Option<&Inbound<async_nats::Message>>,
    ) -> bool {
        let Some(reply) = reply else {
            return false;
        };
        let answer = match directory.session(claim.address) {
            None if directory.has_moved(claim.address) => Answer::Moved,
            None => Answer::Refused,
            // A session that moved is claimed on its subject, where its holder notes the
            // ROUTEs delivered while the claimer subscribes (even back at its home).
            Some(cell) if cell.roaming && inbound.is_none() => Answer::Moved,
            Some(cell) => match claim.step {
                Step::Check => match cell.check(&claim.secret, claim.seq) {
                    Resume::Resumed { .. } => Answer::Accepted(self.node),
                    Resume::Stolen { settled } => {
                        self.revoke(directory, &cell, settled);
                        Answer::Refused
                    }
                    Resume::Refused => Answer::Refused,
                },
                Step::Fetch => {
                    let Ok(fresh) = session::draw_secret() else {
                        // No answer: the claimer's RESUME gets 503 and is tried again.
                        tracing::error!("the OS random source failed; cannot hand a session over");
                        return false;
                    };
                    match cell.export(&claim.secret, claim.seq, fresh) {
                        Ok((exported, settled)) => {
                            for owed in settled {
                                owed.settle(Verdict::Delivered, &|_| None);
                            }
                            directory.moved_away(cell.claimed_by, cell.address, at_home);
                            cell.set_late_errs(self.late_errs(cell.address));
                            self.metrics.session("moved_away");
                            let chunk = self.client.server_info().max_payload.saturating_sub(64);
                            let streams = inbound.map(Inbound::state).unwrap_or_default();
                            // Behind the ROUTEs this node forwarded for the session: NATS
                            // keeps one publisher's order, so they are on their way before
                            // the claimer can resume the session and its client send the
                            // next ones from there (which must not overtake them).
                            for part in hw::encode_state(&exported, &streams, chunk.max(1024)) {
                                let bytes = Bytes::from(hw::encode_answer(&part));
                                self.publish_in_order(reply.to_string(), bytes).await;
                            }
                            tracing::info!(address = %cell.address, replayed = exported.stream.len(), "session handed over to another node");
                            return true;
                        }
                        Err(Resume::Stolen { settled }) => {
                            self.revoke(directory, &cell, settled);
                            Answer::Refused
                        }
                        Err(_) => Answer::Refused,
                    }
                }
            },
        };
        let answer = Bytes::from(hw::encode_answer(&answer));
        self.publish_in_order(reply.to_string(), answer).await;
        false
    }

    /// A claim used a superseded secret: the session is revoked here, as for a local
    /// RESUME (rule 6.9).
    fn revoke(
        &self,
        directory: &Directory<Outbox>,
        cell: &SessionCell,
        settled: Vec<session::Owed>,
    ) {
        tracing::warn!(
            address = %cell.address,
            "a superseded resume secret was used (from another node): the session is revoked (docs/security.md)"
        );
        let texts = |verdict: Verdict| {
            (verdict == Verdict::NotFound).then(|| (codes::NOT_FOUND, NOT_FOUND_TEXT.to_owned()))
        };
        for owed in settled {
            owed.settle(Verdict::NotFound, &texts);
        }
        directory.release(cell.claimed_by, cell.address);
    }

    /// Where the ERRs of a session that left go: to its subject, where its new holder
    /// puts them in its stream.
    fn late_errs(&self, address: Address) -> session::LateErrs {
        let client = self.client.clone();
        let subject = self.session_subject(address);
        let tasks = self.late_errs.clone();
        Box::new(move |code, text, route| {
            let client = client.clone();
            let subject = subject.clone();
            let payload = Bytes::from(hw::encode_late_err(route, code, text));
            tasks.spawn(async move {
                let _ = client.publish(subject, payload).await;
            });
        })
    }
}

/// Until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
