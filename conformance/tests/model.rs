//! Property test: the relay against a pure reference model.
//!
//! Random sequences over three client slots — connect, INIT, re-INIT, ROUTE to a live,
//! retired or random address, invalid message, binary frame, graceful close, abrupt drop
//! — are applied to the model and to a real relay; after every step the relay's
//! observable behaviour must be what the model says (deliveries exactly once, in order,
//! unchanged; 404 exactly where the model says; 400 on invalid input; release on close).
//!
//! Runs against an in-process relay, or any relay via `CONFORMANCE_URL`, and against a
//! relay that re-encodes JSON (which it must pass: rule 3.4 requires JSON equality; byte
//! identity is a SHOULD, reported). Case count: `PROPTEST_CASES` (default 24 here, to keep
//! CI quick). A failing sequence shrinks, and
//! the last (smallest) failing one is also written as a session file to
//! `target/conformance-model-failure.json`, to keep as a regression case.

mod support;

use std::marker::PhantomData;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use compendium_client::ClientBuilder;
use compendium_conformance::case::Case;
use compendium_conformance::jsoneq::{Sameness, sameness};
use compendium_conformance::peer::{Peer, Received};
use compendium_conformance::report::Verdict;
use compendium_conformance::runner::{PROBE, RunOptions, run_case};
use compendium_conformance::session;
use compendium_messages::Message;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest};
use serde_json::{Value, json};
use support::toy_relay::{self, Fault};

const SLOTS: usize = 3;
const WAIT: Duration = Duration::from_secs(5);

/// A relay the model judges. Each is started once per test binary.
trait UnderTest: 'static {
    /// Its URLs: one, or one per node of a cluster (slot i connects to node i mod n; the
    /// observer to the last).
    fn urls() -> Vec<String>;
    /// How its DELIVERs compared with the ROUTEs byte for byte (rule 3.4's SHOULD).
    fn bytes() -> &'static Bytes;
}

/// DELIVERs seen, and how many were JSON-equal to their ROUTE's `msg` but not
/// byte-identical: allowed (rule 3.4 requires JSON equality), reported.
#[derive(Default)]
struct Bytes {
    delivers: AtomicUsize,
    only_json_equal: AtomicUsize,
}

/// `CONFORMANCE_URL` (comma-separated for several nodes), or ours on a background
/// runtime.
struct Ours;

static OURS: LazyLock<(Vec<String>, Option<tokio::runtime::Runtime>)> = LazyLock::new(|| {
    if let Ok(urls) = std::env::var("CONFORMANCE_URL") {
        return (urls.split(',').map(str::to_owned).collect(), None);
    }
    let (url, runtime) = in_background(support::our_relay(compendium_server::Config::ephemeral()));
    (vec![url], Some(runtime))
});

impl UnderTest for Ours {
    fn urls() -> Vec<String> {
        OURS.0.clone()
    }
    fn bytes() -> &'static Bytes {
        static BYTES: LazyLock<Bytes> = LazyLock::new(Bytes::default);
        &BYTES
    }
}

/// A relay that re-encodes every frame as Python's `json.dumps` does: JSON-equal, never
/// byte-identical. The model must pass it, reporting the bytes.
struct PythonStyle;

static PYTHON_STYLE: LazyLock<(String, tokio::runtime::Runtime)> =
    LazyLock::new(|| in_background(toy_relay::start(Fault::PythonStyle)));

impl UnderTest for PythonStyle {
    fn urls() -> Vec<String> {
        vec![PYTHON_STYLE.0.clone()]
    }
    fn bytes() -> &'static Bytes {
        static BYTES: LazyLock<Bytes> = LazyLock::new(Bytes::default);
        &BYTES
    }
}

/// Two nodes of our relay joined through a real nats-server: the model must hold as if
/// they were one relay, with its clients spread over both.
struct TwoNodes;

/// The nats-server lives as long as the test binary (in a mutex only to be shareable).
type Cluster = (
    Vec<String>,
    std::sync::Mutex<compendium_harness::Nats>,
    tokio::runtime::Runtime,
);

static TWO_NODES: LazyLock<Cluster> = LazyLock::new(|| {
    let ((nats, urls), runtime) = in_background(support::our_cluster(
        2,
        compendium_server::Config::ephemeral,
    ));
    (urls, std::sync::Mutex::new(nats), runtime)
});

impl UnderTest for TwoNodes {
    fn urls() -> Vec<String> {
        TWO_NODES.0.clone()
    }
    fn bytes() -> &'static Bytes {
        static BYTES: LazyLock<Bytes> = LazyLock::new(Bytes::default);
        &BYTES
    }
}

/// Start a relay on a runtime of its own that lives as long as the test binary.
fn in_background<T>(start: impl std::future::Future<Output = T>) -> (T, tokio::runtime::Runtime) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let url = runtime.block_on(start);
    (url, runtime)
}

// ---------------------------------------------------------------- the reference model

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// The current address of client slot j.
    Client(usize),
    /// The t-th address ever assigned, now retired.
    Retired(usize),
    /// An address no relay assigned.
    Random,
}

#[derive(Clone, Debug)]
enum Transition {
    Connect(usize),
    Init(usize),
    Route { from: usize, to: Target, seq: u64 },
    Invalid(usize),
    Binary(usize),
    Close(usize),
    Drop(usize),
}

/// What the relay must do in answer to the last transition.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Expect {
    Nothing,
    InitResp { token: usize },
    Deliver { to: usize },
    NotFound,
    Invalid,
    Released { token: Option<usize> },
}

#[derive(Clone, Debug, Default)]
struct Slot {
    connected: bool,
    /// Token of the live address (index among all addresses ever assigned).
    token: Option<usize>,
}

#[derive(Clone, Debug)]
struct Model {
    slots: Vec<Slot>,
    retired: Vec<usize>,
    assigned: usize,
    last: Expect,
}

struct RelayModel;

impl ReferenceStateMachine for RelayModel {
    type State = Model;
    type Transition = Transition;

    fn init_state() -> BoxedStrategy<Model> {
        Just(Model {
            slots: vec![Slot::default(); SLOTS],
            retired: Vec::new(),
            assigned: 0,
            last: Expect::Nothing,
        })
        .boxed()
    }

    fn transitions(state: &Model) -> BoxedStrategy<Transition> {
        let connected: Vec<usize> = (0..SLOTS).filter(|&i| state.slots[i].connected).collect();
        let idle: Vec<usize> = (0..SLOTS).filter(|&i| !state.slots[i].connected).collect();
        let live: Vec<usize> = (0..SLOTS)
            .filter(|&i| state.slots[i].token.is_some())
            .collect();
        let mut options: Vec<BoxedStrategy<Transition>> = Vec::new();
        if !idle.is_empty() {
            options.push(
                proptest::sample::select(idle)
                    .prop_map(Transition::Connect)
                    .boxed(),
            );
        }
        if !connected.is_empty() {
            let c = connected.clone();
            options.push(
                proptest::sample::select(c.clone())
                    .prop_map(Transition::Init)
                    .boxed(),
            );
            let mut targets: Vec<BoxedStrategy<Target>> = vec![Just(Target::Random).boxed()];
            if !live.is_empty() {
                targets.push(
                    proptest::sample::select(live)
                        .prop_map(Target::Client)
                        .boxed(),
                );
            }
            if !state.retired.is_empty() {
                targets.push(
                    proptest::sample::select(state.retired.clone())
                        .prop_map(Target::Retired)
                        .boxed(),
                );
            }
            let target = proptest::strategy::Union::new(targets);
            options.push(
                (proptest::sample::select(c.clone()), target, any::<u64>())
                    .prop_map(|(from, to, seq)| Transition::Route { from, to, seq })
                    .boxed(),
            );
            options.push(
                (proptest::sample::select(c.clone()), 0..4u8)
                    .prop_map(|(i, k)| match k {
                        0 => Transition::Invalid(i),
                        1 => Transition::Binary(i),
                        2 => Transition::Close(i),
                        _ => Transition::Drop(i),
                    })
                    .boxed(),
            );
        }
        proptest::strategy::Union::new(options).boxed()
    }

    fn preconditions(state: &Model, transition: &Transition) -> bool {
        let connected = |i: usize| state.slots[i].connected;
        match transition {
            Transition::Connect(i) => !connected(*i),
            Transition::Init(i)
            | Transition::Invalid(i)
            | Transition::Binary(i)
            | Transition::Close(i)
            | Transition::Drop(i) => connected(*i),
            Transition::Route { from, to, .. } => {
                connected(*from)
                    && match to {
                        Target::Client(j) => state.slots[*j].token.is_some(),
                        Target::Retired(t) => state.retired.contains(t),
                        Target::Random => true,
                    }
            }
        }
    }

    fn apply(mut state: Model, transition: &Transition) -> Model {
        state.last = match transition {
            Transition::Connect(i) => {
                state.slots[*i] = Slot {
                    connected: true,
                    token: None,
                };
                Expect::Nothing
            }
            Transition::Init(i) => {
                let token = state.assigned;
                state.assigned += 1;
                if let Some(old) = state.slots[*i].token.replace(token) {
                    state.retired.push(old);
                }
                Expect::InitResp { token }
            }
            Transition::Route { to, .. } => match to {
                Target::Client(j) => Expect::Deliver { to: *j },
                Target::Retired(_) | Target::Random => Expect::NotFound,
            },
            Transition::Invalid(_) | Transition::Binary(_) => Expect::Invalid,
            Transition::Close(i) | Transition::Drop(i) => {
                let token = state.slots[*i].token.take();
                state.retired.extend(token);
                state.slots[*i].connected = false;
                Expect::Released { token }
            }
        };
        state
    }
}

// ---------------------------------------------------------------- the real relay

struct RealRelay<R> {
    runtime: tokio::runtime::Runtime,
    urls: Vec<String>,
    peers: Vec<Option<Peer>>,
    /// An extra connection that checks release after a close or drop.
    observer: Peer,
    addresses: Vec<String>,
    randoms: Vec<String>,
    log: Vec<Transition>,
    under_test: PhantomData<R>,
}

impl<R: UnderTest> RealRelay<R> {
    fn fail(&self, what: String) -> ! {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../target/conformance-model-failure.json"
        );
        let session = to_session(&self.log);
        let _ = std::fs::write(
            path,
            serde_json::to_string_pretty(&session).unwrap_or_default(),
        );
        panic!("{what}\n(the failing sequence is also saved as a session file: {path})");
    }

    fn step(&mut self, ref_state: &Model, transition: &Transition) -> Result<(), String> {
        let runtime = &self.runtime;
        match transition {
            Transition::Connect(i) => {
                let url = &self.urls[*i % self.urls.len()];
                let peer = runtime.block_on(Peer::connect(url, &ClientBuilder::default()))?;
                self.peers[*i] = Some(peer);
                Ok(())
            }
            Transition::Init(i) => {
                let Expect::InitResp { token } = ref_state.last else {
                    return Err("model: expected INITRESP".into());
                };
                let peer = self.peers[*i].as_mut().ok_or("not connected")?;
                let frame = runtime.block_on(async {
                    peer.send_text(Message::init().to_json()).await?;
                    peer.next(WAIT).await
                })?;
                let Received::Text(text) = &frame else {
                    return Err(format!("INIT: expected INITRESP, got {frame}"));
                };
                let Ok(Message::Initresp { ephe_wss_addr, .. }) = Message::parse(text) else {
                    return Err(format!("INIT: expected INITRESP, got {text}"));
                };
                let address = ephe_wss_addr.to_string();
                if self.addresses.contains(&address) {
                    return Err(format!("INIT: address {address} was assigned before"));
                }
                if self.addresses.len() != token {
                    return Err("model and relay disagree on the number of addresses".into());
                }
                self.addresses.push(address);
                Ok(())
            }
            Transition::Route { from, to, seq } => {
                let address = match to {
                    Target::Client(j) => {
                        let token = ref_state.slots[*j]
                            .token
                            .ok_or("model: target has no address")?;
                        self.addresses[token].clone()
                    }
                    Target::Retired(t) => self.addresses[*t].clone(),
                    Target::Random => {
                        let mut bytes = [0u8; 16];
                        getrandom::fill(&mut bytes).map_err(|e| e.to_string())?;
                        let random = format!("{:032x}", u128::from_le_bytes(bytes));
                        self.randoms.push(random.clone());
                        random
                    }
                };
                let msg = format!(r#"{{"seq":{seq},"from":{from}}}"#);
                let route = format!(r#"{{"type":"ROUTE","EpheWssAddr":"{address}","msg":{msg}}}"#);
                let peer = self.peers[*from].as_mut().ok_or("not connected")?;
                runtime.block_on(peer.send_text(route))?;
                match ref_state.last {
                    Expect::Deliver { to } => {
                        let target = self.peers[to].as_mut().ok_or("target not connected")?;
                        let got = runtime.block_on(target.next(WAIT))?;
                        // Rule 3.4: exactly type and msg, msg JSON-equal (MUST); the same
                        // bytes is a SHOULD, counted and reported, not failed.
                        let delivered = match &got {
                            Received::Text(text) => match Message::parse(text) {
                                Ok(Message::Deliver { msg: delivered, .. }) => delivered,
                                _ => {
                                    return Err(format!(
                                        "ROUTE: slot {to} expected DELIVER of {msg}, got {got}"
                                    ));
                                }
                            },
                            _ => {
                                return Err(format!(
                                    "ROUTE: slot {to} expected DELIVER of {msg}, got {got}"
                                ));
                            }
                        };
                        let bytes = R::bytes();
                        bytes.delivers.fetch_add(1, Ordering::Relaxed);
                        match sameness(&msg, delivered.as_str()) {
                            Sameness::Identical => {}
                            Sameness::JsonEqual => {
                                bytes.only_json_equal.fetch_add(1, Ordering::Relaxed);
                            }
                            Sameness::Different => {
                                return Err(format!(
                                    "ROUTE: slot {to} expected a msg JSON-equal to {msg}, got {got}"
                                ));
                            }
                        }
                        // Nothing goes back to the sender.
                        let sender = self.peers[*from].as_mut().ok_or("not connected")?;
                        let extra = runtime.block_on(sync(sender))?;
                        if !extra.is_empty() {
                            return Err(format!("ROUTE: the sender got {extra:?}"));
                        }
                        Ok(())
                    }
                    Expect::NotFound => {
                        let got = runtime.block_on(peer_next(&mut self.peers[*from]))?;
                        expect_err(&got, 404).map_err(|e| format!("ROUTE to a dead address: {e}"))
                    }
                    _ => Err("model: unexpected expectation for ROUTE".into()),
                }
            }
            Transition::Invalid(i) | Transition::Binary(i) => {
                let peer = self.peers[*i].as_mut().ok_or("not connected")?;
                let got = runtime.block_on(async {
                    match transition {
                        Transition::Binary(_) => {
                            peer.send_binary(b"{\"type\":\"INIT\"}".to_vec()).await?
                        }
                        _ => {
                            peer.send_text(r#"{"type":"INIT","bogus":1}"#.to_owned())
                                .await?
                        }
                    }
                    peer.next(WAIT).await
                })?;
                expect_err(&got, 400)
            }
            Transition::Close(i) | Transition::Drop(i) => {
                let peer = self.peers[*i].take().ok_or("not connected")?;
                if matches!(transition, Transition::Close(_)) {
                    runtime
                        .block_on(peer.close(WAIT))
                        .map_err(|e| format!("close: {e}"))?;
                } else {
                    peer.drop_abruptly();
                }
                let Expect::Released { token: Some(token) } = ref_state.last else {
                    return Ok(());
                };
                let address = self.addresses[token].clone();
                let observer = &mut self.observer;
                runtime.block_on(eventually_not_found(observer, &address))
            }
        }
    }
}

async fn peer_next(peer: &mut Option<Peer>) -> Result<Received, String> {
    peer.as_mut().ok_or("not connected")?.next(WAIT).await
}

fn expect_err(frame: &Received, code: u16) -> Result<(), String> {
    match frame {
        Received::Text(text) => match Message::parse(text) {
            Ok(Message::Err { err_code, .. }) if err_code == code => Ok(()),
            _ => Err(format!("expected ERR {code}, got {text}")),
        },
        other => Err(format!("expected ERR {code}, got {other}")),
    }
}

/// Frames that arrive before the answer to a probe.
async fn sync(peer: &mut Peer) -> Result<Vec<Received>, String> {
    peer.send_text(PROBE.to_owned()).await?;
    let mut before = Vec::new();
    loop {
        let frame = peer.next(WAIT).await?;
        if expect_err(&frame, 400).is_ok() {
            return Ok(before);
        }
        before.push(frame);
    }
}

/// A relay may notice a reset a moment later: retry (bounded) until 404.
async fn eventually_not_found(observer: &mut Peer, address: &str) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        observer
            .send_text(format!(
                r#"{{"type":"ROUTE","EpheWssAddr":"{address}","msg":{{}}}}"#
            ))
            .await?;
        let replies = sync(observer).await?;
        if replies.iter().any(|r| expect_err(r, 404).is_ok()) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "address {address} still routable {} ms after its connection ended",
                WAIT.as_millis()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct RelayTest<R>(PhantomData<R>);

impl<R: UnderTest> StateMachineTest for RelayTest<R> {
    type SystemUnderTest = RealRelay<R>;
    type Reference = RelayModel;

    fn init_test(_: &Model) -> RealRelay<R> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let urls = R::urls();
        let observer = runtime
            .block_on(Peer::connect(
                urls.last().expect("a URL"),
                &ClientBuilder::default(),
            ))
            .expect("observer connects");
        RealRelay {
            runtime,
            urls,
            peers: (0..SLOTS).map(|_| None).collect(),
            observer,
            addresses: Vec::new(),
            randoms: Vec::new(),
            log: Vec::new(),
            under_test: PhantomData,
        }
    }

    fn apply(mut sut: RealRelay<R>, ref_state: &Model, transition: Transition) -> RealRelay<R> {
        sut.log.push(transition.clone());
        if let Err(e) = sut.step(ref_state, &transition) {
            sut.fail(format!("after {:?}: {e}", sut.log));
        }
        sut
    }

    fn teardown(mut sut: RealRelay<R>, _: Model) {
        // Nothing stray is waiting anywhere: no duplicate or misrouted DELIVER.
        for (i, peer) in sut.peers.iter_mut().enumerate() {
            if let Some(peer) = peer {
                match sut.runtime.block_on(sync(peer)) {
                    Ok(extra) if extra.is_empty() => {}
                    Ok(extra) => {
                        let what = format!("slot {i} has unexpected frames: {extra:?}");
                        sut.fail(what);
                    }
                    Err(e) => sut.fail(e),
                }
            }
        }
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

/// Run the model against `R` and report how many DELIVERs were only JSON-equal.
fn judge<R: UnderTest>() -> (usize, usize) {
    let config = ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config.clone());
    let result = runner.run(
        &RelayModel::sequential_strategy(1..24),
        |(initial, transitions, seen)| {
            RelayTest::<R>::test_sequential(config.clone(), initial, transitions, seen);
            Ok(())
        },
    );
    if let Err(err) = result {
        panic!("{err}");
    }
    let bytes = R::bytes();
    let (delivers, only_json_equal) = (
        bytes.delivers.load(Ordering::Relaxed),
        bytes.only_json_equal.load(Ordering::Relaxed),
    );
    eprintln!(
        "rule 3.4 (SHOULD, byte-identical msg): {only_json_equal} of {delivers} DELIVERs were \
         JSON-equal to their ROUTE's msg but not byte-identical"
    );
    (delivers, only_json_equal)
}

#[test]
fn the_relay_behaves_like_the_model() {
    let (delivers, only_json_equal) = judge::<Ours>();
    if std::env::var_os("CONFORMANCE_URL").is_none() {
        assert!(delivers > 0, "the model routed nothing");
        assert_eq!(only_json_equal, 0, "our relay forwards msg byte for byte");
    }
}

/// Cluster mode: two nodes behave as one relay, whatever node each client is on.
#[test]
fn two_nodes_behave_like_the_model() {
    let (delivers, only_json_equal) = judge::<TwoNodes>();
    assert!(delivers > 0, "the model routed nothing");
    assert_eq!(only_json_equal, 0, "forwarded byte for byte across nodes");
}

/// Rule 3.4 makes JSON equality the MUST: a relay that re-encodes passes the model, and
/// the bytes are reported, not failed.
#[test]
fn a_relay_that_reencodes_json_passes_the_model() {
    let (delivers, only_json_equal) = judge::<PythonStyle>();
    assert!(delivers > 0, "the model routed nothing");
    assert_eq!(
        only_json_equal, delivers,
        "every re-encoded DELIVER is counted"
    );
}

// ---------------------------------------------------------------- as a session file

/// A transition sequence as a session file (see the module docs). Each connection
/// lifetime is its own actor; `O` observes releases.
fn to_session(log: &[Transition]) -> Value {
    let mut model = RelayModel::init_state_value();
    let mut actor_of: Vec<Option<String>> = vec![None; SLOTS];
    let mut actors = serde_json::Map::new();
    actors.insert("O".into(), json!({}));
    let mut steps = Vec::new();
    let mut randoms = 0;
    for transition in log {
        model = RelayModel::apply(model, transition);
        let actor = |i: usize, actor_of: &[Option<String>]| actor_of[i].clone().unwrap_or_default();
        match transition {
            Transition::Connect(i) => {
                let name = format!("C{}", actors.len());
                actors.insert(name.clone(), json!({}));
                actor_of[*i] = Some(name);
            }
            Transition::Init(i) => {
                let Expect::InitResp { token } = model.last else {
                    continue;
                };
                steps.push(json!({"action": "send", "actor": actor(*i, &actor_of), "json": {"type": "INIT"}}));
                steps.push(json!({"action": "expect", "actor": actor(*i, &actor_of), "match": {"json": {"type": "INITRESP", "EpheWssAddr": format!("$T{token}")}}}));
            }
            Transition::Route { from, to, seq } => {
                let address = match to {
                    Target::Client(j) => model.slots[*j]
                        .token
                        .map(|t| format!("$T{t}"))
                        .unwrap_or_default(),
                    Target::Retired(t) => format!("$T{t}"),
                    Target::Random => {
                        randoms += 1;
                        format!("$NEW{randoms}")
                    }
                };
                let msg = json!({"seq": seq, "from": from});
                let sender = actor(*from, &actor_of);
                steps.push(json!({"action": "send", "actor": sender, "json": {"type": "ROUTE", "EpheWssAddr": address, "msg": msg}}));
                match model.last {
                    Expect::Deliver { to } => {
                        steps.push(json!({"action": "expect", "actor": actor(to, &actor_of), "match": {"json": {"type": "DELIVER", "msg": msg}}}));
                        steps.push(json!({"action": "expect_silence", "actor": sender}));
                    }
                    _ => steps.push(json!({"action": "expect", "actor": sender, "match": {"type": "ERR", "fields": {"errCode": 404}}})),
                }
            }
            Transition::Invalid(i) | Transition::Binary(i) => {
                let a = actor(*i, &actor_of);
                steps.push(match transition {
                    Transition::Binary(_) => json!({"action": "send_binary", "actor": a, "text": "{\"type\":\"INIT\"}"}),
                    _ => json!({"action": "send_text", "actor": a, "text": "{\"type\":\"INIT\",\"bogus\":1}"}),
                });
                steps.push(json!({"action": "expect", "actor": a, "match": {"type": "ERR", "fields": {"errCode": 400}}}));
            }
            Transition::Close(i) | Transition::Drop(i) => {
                let action = if matches!(transition, Transition::Close(_)) {
                    "close"
                } else {
                    "drop"
                };
                steps.push(json!({"action": action, "actor": actor(*i, &actor_of)}));
                if let Expect::Released { token: Some(t) } = model.last {
                    steps.push(json!({"action": "eventually", "actor": "O", "json": {"type": "ROUTE", "EpheWssAddr": format!("$T{t}"), "msg": {}}, "match": {"type": "ERR", "fields": {"errCode": 404}}, "within_ms": 5000}));
                }
                actor_of[*i] = None;
            }
        }
    }
    if steps.is_empty() {
        steps.push(json!({"action": "expect_silence", "actor": "O"}));
    }
    json!({
        "id": "3.3/99", "rule": "3.3", "level": "MUST",
        "description": "a sequence found by the model-based property test",
        "requirement": "On ROUTE to a live address, the server MUST send DELIVER (rule 3.4) to the connection holding that address.",
        "actors": actors, "steps": steps,
    })
}

impl RelayModel {
    fn init_state_value() -> Model {
        Model {
            slots: vec![Slot::default(); SLOTS],
            retired: Vec::new(),
            assigned: 0,
            last: Expect::Nothing,
        }
    }
}

#[test]
fn a_model_sequence_converts_to_a_session_that_replays() {
    use Transition::*;
    let log = [
        Connect(0),
        Connect(1),
        Init(0),
        Init(1),
        Route {
            from: 0,
            to: Target::Client(1),
            seq: 1,
        },
        Init(1),
        Route {
            from: 0,
            to: Target::Retired(1),
            seq: 2,
        },
        Route {
            from: 1,
            to: Target::Random,
            seq: 3,
        },
        Invalid(1),
        Binary(0),
        Drop(0),
        Route {
            from: 1,
            to: Target::Retired(0),
            seq: 4,
        },
        Connect(0),
        Route {
            from: 0,
            to: Target::Client(1),
            seq: 5,
        },
        Close(1),
    ];
    let session = to_session(&log);
    let text = serde_json::to_string_pretty(&session).expect("json");
    let session = session::parse("model.json", &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let urls = Ours::urls();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let result = runtime.block_on(run_case(
        &Case::from_session(session),
        &RunOptions::on_nodes(urls),
    ));
    assert_eq!(result.verdict, Verdict::Pass, "{:?}\n{text}", result.detail);
}
