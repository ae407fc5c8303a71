//! Running cases against a relay: the session interpreter, closing-behaviour judging,
//! and the whole-suite run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use compendium_client::ClientBuilder;
use compendium_messages::Message;

use crate::bindings::Bindings;
use crate::case::{Body, Case, Ctx, Outcome};
use crate::matcher::{check, expected_kind};
use crate::peer::{Peer, Received};
use crate::report::{CaseResult, CloseVerdict, Report, Verdict};
use crate::session::{MatcherFrame, Session, Step};

/// The message `expect_silence` and `eventually` send: invalid (unknown type), so a
/// conforming relay answers ERR 400 (rule 3.7) — a reply that marks "everything before
/// has been answered" without changing any state.
pub const PROBE: &str = r#"{"type":"CONFORMANCE_PROBE"}"#;

/// What a failure says about a probe, so that a relay which hangs up on it (or never
/// answers it) learns why a case about something else waited for an ERR 400.
pub const PROBE_SENT: &str = "to see that nothing else was waiting, sent the invalid \
     message {\"type\":\"CONFORMANCE_PROBE\"}, which rule 3.7 requires to be answered \
     with ERR 400";

/// The default of [`RunOptions::case_timeout`].
pub const DEFAULT_CASE_TIMEOUT: Duration = Duration::from_secs(60);

/// How to run the suite.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The relay under test, `ws://` or `wss://`: one URL, or one per node of a cluster
    /// that must behave as one relay. A case's connections are spread over them,
    /// round-robin (a session's actors in name order).
    pub urls: Vec<String>,
    /// Run only cases whose id starts with one of these (all when empty).
    pub prefixes: Vec<String>,
    /// SHOULD failures and NON-STRICT fail the run too.
    pub strict: bool,
    /// Default wait for each expected frame; also the limit for opening each connection
    /// (TCP, TLS and WebSocket handshakes).
    pub timeout: Duration,
    /// The most one case may take (plus [`RunOptions::slow`] if set); a case still running
    /// then is stopped and FAILs. With it, a whole run ends within
    /// `cases × (case_timeout + slow)`, whatever the relay does.
    pub case_timeout: Duration,
    /// TLS trust for `wss://` (its connect and handshake timeouts are replaced by
    /// [`RunOptions::timeout`]).
    pub client: ClientBuilder,
    /// Wait this long for the relay's own timers (ping, idle, handshake timeouts);
    /// `None` skips those cases.
    pub slow: Option<Duration>,
    /// The relay's stated connection limit, to check rule 4.3.
    pub max_connections: Option<usize>,
}

impl RunOptions {
    /// Defaults: every case, not strict, 2 s per expectation, 60 s per case, no slow cases.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self::on_nodes(vec![url.into()])
    }

    /// Defaults, for a relay of several nodes (at least one URL).
    #[must_use]
    pub fn on_nodes(urls: Vec<String>) -> Self {
        Self {
            urls,
            prefixes: Vec::new(),
            strict: false,
            timeout: Duration::from_secs(2),
            case_timeout: DEFAULT_CASE_TIMEOUT,
            client: ClientBuilder::default(),
            slow: None,
            max_connections: None,
        }
    }

    /// Whether `id` is selected by the prefixes.
    #[must_use]
    pub fn selects(&self, id: &str) -> bool {
        self.prefixes.is_empty() || self.prefixes.iter().any(|p| id.starts_with(p.as_str()))
    }

    /// The most one case may take: [`RunOptions::case_timeout`] plus
    /// [`RunOptions::slow`].
    #[must_use]
    pub fn case_deadline(&self) -> Duration {
        self.case_timeout + self.slow.unwrap_or_default()
    }

    /// How every connection of a case is opened: the user's TLS trust, and
    /// [`RunOptions::timeout`] for TCP and for the handshakes, so a relay that accepts TCP
    /// and never answers costs one timeout, not the client library's 10 s default.
    fn dialer(&self) -> ClientBuilder {
        self.client
            .clone()
            .connect_timeout(self.timeout)
            .handshake_timeout(self.timeout)
    }

    fn ctx(&self) -> Ctx {
        Ctx {
            urls: self.urls.clone(),
            next: Arc::default(),
            client: self.dialer(),
            timeout: self.timeout,
            slow: self.slow,
            max_connections: self.max_connections,
        }
    }
}

/// Run the selected `cases` one after another.
pub async fn run(cases: &[Case], options: &RunOptions) -> Report {
    let mut results = Vec::new();
    for case in cases.iter().filter(|c| options.selects(&c.meta.id)) {
        results.push(run_case(case, options).await);
    }
    Report {
        url: options.urls.join(" "),
        strict: options.strict,
        results,
    }
}

/// Run one case, within [`RunOptions::case_deadline`].
pub async fn run_case(case: &Case, options: &RunOptions) -> CaseResult {
    let started = Instant::now();
    let body = async {
        match &case.body {
            Body::Data(session) => run_session(session, options).await,
            Body::Code(body) => (body(options.ctx()).await, CloseVerdict::NotApplicable),
        }
    };
    let deadline = options.case_deadline();
    let (outcome, close) = match tokio::time::timeout(deadline, body).await {
        Ok(result) => result,
        Err(_) => (
            Outcome::fail(format!(
                "the case did not finish within {} s (its deadline): the relay kept it \
                 waiting without ever giving it a verdict",
                deadline.as_secs_f64()
            )),
            CloseVerdict::NotApplicable,
        ),
    };
    CaseResult {
        meta: case.meta.clone(),
        verdict: outcome.verdict,
        close,
        detail: outcome.detail,
        duration: started.elapsed(),
    }
}

/// Interpret a session: connect its actors, play its steps, then close what is left
/// open and judge how the relay closed.
pub async fn run_session(session: &Session, options: &RunOptions) -> (Outcome, CloseVerdict) {
    let mut peers: BTreeMap<String, Peer> = BTreeMap::new();
    // Connect in name order (A before B), whatever the map's order.
    let mut actors: Vec<(&str, &crate::session::Actor)> = session
        .actors
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    actors.sort_by_key(|(name, _)| *name);
    for (index, (name, actor)) in actors.into_iter().enumerate() {
        let path = actor.path.as_deref().map_or("/", |p| p.as_str());
        let node = &options.urls[index % options.urls.len().max(1)];
        let url = format!("{}{}", node.trim_end_matches('/'), path);
        let connected = match actor.subprotocol {
            None => Peer::connect(&url, &options.dialer()).await.map(Some),
            Some(crate::session::ActorSubprotocol::CompendiumV2) => {
                Peer::connect_v2(&url, &options.dialer()).await
            }
        };
        match connected {
            Ok(Some(peer)) => {
                peers.insert(name.to_owned(), peer);
            }
            Ok(None) => {
                return (
                    Outcome::with(
                        Verdict::Unsupported,
                        format!(
                            "actor {name}: the relay selected no subprotocol when offered \
                             compendium.v2: it does not speak version 2"
                        ),
                    ),
                    CloseVerdict::NotApplicable,
                );
            }
            Err(err) => {
                return (
                    Outcome::fail(format!("actor {name}: cannot connect to {url}: {err}")),
                    CloseVerdict::NotApplicable,
                );
            }
        }
    }
    let mut state = Play {
        bindings: Bindings::default(),
        should: Vec::new(),
        close_failures: Vec::new(),
        options,
    };
    let mut failure = None;
    for (index, step) in session.steps.iter().enumerate() {
        if let Err(err) = state.step(step, &mut peers).await {
            failure = Some(format!("step {}: {err}", index + 1));
            break;
        }
    }
    for (name, peer) in std::mem::take(&mut peers) {
        if let Err(err) = peer.close(options.timeout).await {
            state.close_failures.push(format!("actor {name}: {err}"));
        }
    }
    let close = if state.close_failures.is_empty() {
        if session.actors.is_empty() {
            CloseVerdict::NotApplicable
        } else {
            CloseVerdict::Pass
        }
    } else {
        CloseVerdict::Fail(state.close_failures.join("; "))
    };
    let outcome = match failure {
        Some(detail) => Outcome::fail(detail),
        None if !state.should.is_empty() => {
            Outcome::with(Verdict::NonStrict, state.should.join("\n"))
        }
        None => Outcome::pass(),
    };
    (outcome, close)
}

struct Play<'a> {
    bindings: Bindings,
    /// Recommendations (SHOULD) that did not hold.
    should: Vec<String>,
    close_failures: Vec<String>,
    options: &'a RunOptions,
}

impl Play<'_> {
    async fn step(
        &mut self,
        step: &Step,
        peers: &mut BTreeMap<String, Peer>,
    ) -> Result<(), String> {
        let actor = crate::session::step_actor(step);
        let wait = |ms: Option<&crate::session::Millis>| {
            ms.map_or(self.options.timeout, |m| Duration::from_millis(m.0.get()))
        };
        let peer = peers
            .get_mut(actor)
            .ok_or_else(|| format!("actor {actor} is no longer connected"))?;
        match step {
            Step::Send { json, .. } => {
                let value = self.bindings.substitute_value(json)?;
                peer.send_text(value.to_string()).await
            }
            Step::SendText { text, .. } => {
                let text = self.bindings.substitute_text(text)?;
                peer.send_text(text).await
            }
            Step::SendBinary { text, .. } => peer.send_binary(text.as_bytes().to_vec()).await,
            Step::Ping { text, .. } => peer.ping(text.as_bytes().to_vec()).await,
            Step::Expect {
                match_,
                should,
                within_ms,
                ..
            } => {
                let within = wait(within_ms.as_ref());
                let frame = next_relevant(peer, expected_kind(match_), within)
                    .await
                    .map_err(|e| format!("{actor}: expected {}: {e}", describe(match_)))?;
                check(match_, &frame, &mut self.bindings).map_err(|e| {
                    match ended(peer, &frame) {
                        // Say plainly that the relay hung up, not only what did not match.
                        Some(how) if !expects_the_end(match_) => {
                            format!("{actor}: expected {}, but {how}", describe(match_))
                        }
                        _ => format!("{actor}: {e}"),
                    }
                })?;
                if let Some(should) = should
                    && let Err(e) = check(should, &frame, &mut self.bindings)
                {
                    self.should.push(format!("{actor}: should: {e}"));
                }
                Ok(())
            }
            Step::ExpectSilence { within_ms, .. } => {
                let within = wait(within_ms.as_ref());
                peer.send_text(PROBE.to_owned()).await?;
                let frame = next_relevant(peer, MatcherFrame::Text, within)
                    .await
                    .map_err(|e| format!("{actor}: {PROBE_SENT}: {e}"))?;
                if is_probe_answer(&frame) {
                    Ok(())
                } else if let Some(how) = ended(peer, &frame) {
                    Err(format!("{actor}: {PROBE_SENT}, but {how}"))
                } else {
                    Err(format!(
                        "{actor}: expected nothing more; {PROBE_SENT}, and got {frame} first"
                    ))
                }
            }
            Step::Eventually {
                json,
                match_,
                within_ms,
                ..
            } => {
                let within = wait(within_ms.as_ref());
                let deadline = tokio::time::Instant::now() + within;
                let mut last = String::from("no reply");
                loop {
                    let value = self.bindings.substitute_value(json)?;
                    peer.send_text(value.to_string()).await?;
                    peer.send_text(PROBE.to_owned()).await?;
                    loop {
                        let frame = next_relevant(peer, MatcherFrame::Text, within)
                            .await
                            .map_err(|e| format!("{actor}: {e}"))?;
                        if is_probe_answer(&frame) {
                            break;
                        }
                        if let Some(how) = ended(peer, &frame) {
                            return Err(format!(
                                "{actor}: waiting for {}, {how}",
                                describe(match_)
                            ));
                        }
                        let mut trial = self.bindings.clone();
                        match check(match_, &frame, &mut trial) {
                            Ok(()) => {
                                self.bindings = trial;
                                // Drain up to the probe's answer, so the actor is in step.
                                while !is_probe_answer(
                                    &next_relevant(peer, MatcherFrame::Text, within)
                                        .await
                                        .map_err(|e| format!("{actor}: {e}"))?,
                                ) {}
                                return Ok(());
                            }
                            Err(e) => last = e,
                        }
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(format!(
                            "{actor}: within {} ms never got {}: last: {last}",
                            within.as_millis(),
                            describe(match_)
                        ));
                    }
                    // Give the relay a moment to reach the outcome (e.g. notice a TCP
                    // reset); there is no event a client can await for that.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            Step::Close { .. } => {
                if let Some(peer) = peers.remove(actor)
                    && let Err(e) = peer.close(self.options.timeout).await
                {
                    self.close_failures.push(format!("actor {actor}: {e}"));
                }
                Ok(())
            }
            Step::Drop { .. } => {
                if let Some(peer) = peers.remove(actor) {
                    peer.drop_abruptly();
                }
                Ok(())
            }
        }
    }
}

/// The next frame, skipping pongs unless a pong is what is expected, and on a version 2
/// connection ROUTEACKs: when they come is the relay's choice (rule 6.5: batched), so a
/// session cannot script them.
async fn next_relevant(
    peer: &mut Peer,
    kind: MatcherFrame,
    within: Duration,
) -> Result<Received, String> {
    loop {
        let frame = peer.next(within).await?;
        if matches!(frame, Received::Pong(_)) && kind != MatcherFrame::Pong {
            continue;
        }
        if peer.is_v2()
            && let Received::Text(text) = &frame
            && text.starts_with(r#"{"type":"ROUTEACK""#)
            && matches!(Message::parse(text), Ok(Message::Routeack { .. }))
        {
            continue;
        }
        return Ok(frame);
    }
}

/// How the connection ended, if `frame` says it is ending: the relay's close frame or the
/// end of the stream.
fn ended(peer: &Peer, frame: &Received) -> Option<String> {
    match frame {
        Received::Close(_) | Received::Ended(_) => Some(
            peer.ended()
                .map_or_else(|| format!("got {frame}"), ToOwned::to_owned),
        ),
        _ => None,
    }
}

/// Whether the matcher waits for a close frame (then the end is what it wants).
fn expects_the_end(matcher: &crate::session::Matcher) -> bool {
    expected_kind(matcher) == MatcherFrame::Close
}

/// Whether `frame` is a relay's answer to [`PROBE`]: an ERR 400.
pub(crate) fn is_probe_answer(frame: &Received) -> bool {
    match frame {
        Received::Text(text) => matches!(
            compendium_messages::Message::parse(text),
            Ok(compendium_messages::Message::Err { err_code: 400, .. })
        ),
        _ => false,
    }
}

fn describe(matcher: &crate::session::Matcher) -> String {
    serde_json::to_string(matcher).unwrap_or_else(|_| "a frame".into())
}
