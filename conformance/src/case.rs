//! [`Case`]: one conformance check — data (a session file) or code — with its metadata.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use compendium_client::ClientBuilder;
use serde::Serialize;

use crate::report::Verdict;
use crate::session::{self, Level, Session, SessionError};

/// What every case states about itself (h2spec-style).
#[derive(Debug, Clone, Serialize)]
pub struct Meta {
    /// Stable id `RULE/N` (e.g. `3.2/1`); never reused or renumbered.
    pub id: String,
    /// The docs/protocol.md rule it checks.
    pub rule: String,
    /// MUST or SHOULD.
    pub level: Level,
    /// One line: what it checks.
    pub description: String,
    /// The requirement, quoted from docs/protocol.md.
    pub requirement: String,
}

/// How a case runs.
pub enum Body {
    /// A session file's steps.
    Data(Session),
    /// Rust code, for what a transcript cannot say (sizes, bursts, many connections,
    /// optional features, timers).
    Code(CodeFn),
}

/// A code case's body.
pub type CodeFn = fn(Ctx) -> Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// A conformance case.
pub struct Case {
    /// Its metadata.
    pub meta: Meta,
    /// Its body.
    pub body: Body,
}

/// What a code case is given.
#[derive(Clone, Debug)]
pub struct Ctx {
    /// The relay under test: one URL per node.
    pub urls: Vec<String>,
    /// Which node the next connection goes to.
    pub next: Arc<AtomicUsize>,
    /// TLS trust and connect timeouts for every connection.
    pub client: ClientBuilder,
    /// How long to wait for any one expected frame.
    pub timeout: Duration,
    /// How long cases that wait for the relay's own timers may wait (`--slow-ms`);
    /// `None` skips them.
    pub slow: Option<Duration>,
    /// The relay's connection limit, if the user states it (`--max-connections`).
    pub max_connections: Option<usize>,
}

/// A code case's result.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The verdict.
    pub verdict: Verdict,
    /// Why (expected vs actual on failure; what was observed otherwise).
    pub detail: Option<String>,
}

impl Ctx {
    /// The URL for the next connection: the nodes in turn, so that a case's connections
    /// are spread over a cluster as a session's actors are.
    #[must_use]
    pub fn next_url(&self) -> &str {
        let at = self.next.fetch_add(1, Ordering::Relaxed);
        &self.urls[at % self.urls.len().max(1)]
    }

    /// The first node's URL, for cases about one node's own limits and timers.
    #[must_use]
    pub fn first_url(&self) -> &str {
        self.urls.first().map_or("", String::as_str)
    }
}

impl Outcome {
    /// PASS.
    #[must_use]
    pub fn pass() -> Self {
        Self {
            verdict: Verdict::Pass,
            detail: None,
        }
    }

    /// A verdict with an explanation.
    #[must_use]
    pub fn with(verdict: Verdict, detail: impl Into<String>) -> Self {
        Self {
            verdict,
            detail: Some(detail.into()),
        }
    }

    /// FAIL with an explanation.
    #[must_use]
    pub fn fail(detail: impl Into<String>) -> Self {
        Self::with(Verdict::Fail, detail)
    }
}

impl From<Result<(), String>> for Outcome {
    fn from(result: Result<(), String>) -> Self {
        match result {
            Ok(()) => Self::pass(),
            Err(detail) => Self::fail(detail),
        }
    }
}

impl Case {
    /// A case from a session file.
    #[must_use]
    pub fn from_session(session: Session) -> Self {
        let meta = Meta {
            id: session.id.to_string(),
            rule: session.rule.to_string(),
            level: session.level,
            description: session.description.to_string(),
            requirement: session.requirement.to_string(),
        };
        Self {
            meta,
            body: Body::Data(session),
        }
    }
}

/// Every case of the suite — the shipped session files and the code cases — in id order.
///
/// # Errors
/// A shipped session file that does not load (a test prevents this).
pub fn all() -> Result<Vec<Case>, SessionError> {
    let mut cases: Vec<Case> = session::builtin()?
        .into_iter()
        .map(Case::from_session)
        .collect();
    cases.extend(crate::code_cases::all());
    cases.sort_by_key(|c| id_key(&c.meta.id));
    Ok(cases)
}

/// `3.10/2` → (3, 10, 2), so that 3.10 sorts after 3.9.
#[must_use]
pub fn id_key(id: &str) -> Vec<u64> {
    id.split(['.', '/'])
        .map(|part| part.parse().unwrap_or(u64::MAX))
        .collect()
}
