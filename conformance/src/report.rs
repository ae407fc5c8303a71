//! Verdicts, per-case results and the report in text, JSON and JUnit XML.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::case::Meta;
use crate::session::Level;

/// How a case went (Autobahn-style: richer than pass/fail).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING-KEBAB-CASE")]
pub enum Verdict {
    /// Every requirement held.
    Pass,
    /// A requirement of the case did not hold (a timeout is a failure, recorded).
    Fail,
    /// The required outcome happened, but a recommendation did not (e.g. right code,
    /// different error text; equal JSON but different bytes).
    NonStrict,
    /// The relay does not have an optional feature (e.g. rate limiting).
    Unsupported,
    /// Not run: not observable over the wire, or needs an option (`--slow-ms`, ...).
    Skipped,
}

impl Verdict {
    /// As printed: PASS, FAIL, NON-STRICT, UNSUPPORTED, SKIPPED.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "PASS",
            Self::Fail => "FAIL",
            Self::NonStrict => "NON-STRICT",
            Self::Unsupported => "UNSUPPORTED",
            Self::Skipped => "SKIPPED",
        }
    }
}

/// How the relay handled the close handshake at the end of a case, judged separately
/// from the messages (RFC 6455 requires it to answer a close frame).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "verdict",
    content = "detail",
    rename_all = "SCREAMING-KEBAB-CASE"
)]
pub enum CloseVerdict {
    /// Every connection still open was closed cleanly.
    Pass,
    /// A connection did not close cleanly: how.
    Fail(String),
    /// No connection was left open to close.
    NotApplicable,
}

/// One case's result.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    /// The case's metadata.
    #[serde(flatten)]
    pub meta: Meta,
    /// The message behaviour's verdict.
    pub verdict: Verdict,
    /// The closing behaviour's verdict.
    pub close: CloseVerdict,
    /// Expected vs actual, or what was observed.
    pub detail: Option<String>,
    /// How long the case took.
    #[serde(serialize_with = "millis")]
    pub duration: Duration,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl CaseResult {
    /// Whether this result makes the run fail: a MUST case FAILed or a close handshake
    /// failed; with `strict`, also a SHOULD case FAILed or any NON-STRICT.
    #[must_use]
    pub fn fails_run(&self, strict: bool) -> bool {
        let message = match self.verdict {
            Verdict::Fail => self.meta.level == Level::Must || strict,
            Verdict::NonStrict => strict,
            _ => false,
        };
        message || matches!(self.close, CloseVerdict::Fail(_))
    }
}

/// All results of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The relay under test.
    pub url: String,
    /// Whether SHOULD failures fail the run.
    pub strict: bool,
    /// Per case, in id order.
    pub results: Vec<CaseResult>,
}

impl Report {
    /// Whether the run failed (see [`CaseResult::fails_run`]).
    #[must_use]
    pub fn failed(&self) -> bool {
        self.results.iter().any(|r| r.fails_run(self.strict))
    }

    /// `41 passed, 0 failed, 1 non-strict, 2 unsupported, 3 skipped` (plus close
    /// failures when there are any).
    #[must_use]
    pub fn summary(&self) -> String {
        let count = |v: Verdict| self.results.iter().filter(|r| r.verdict == v).count();
        let mut line = format!(
            "{} passed, {} failed, {} non-strict, {} unsupported, {} skipped",
            count(Verdict::Pass),
            count(Verdict::Fail),
            count(Verdict::NonStrict),
            count(Verdict::Unsupported),
            count(Verdict::Skipped)
        );
        let close_failures = self
            .results
            .iter()
            .filter(|r| matches!(r.close, CloseVerdict::Fail(_)))
            .count();
        if close_failures > 0 {
            let _ = write!(line, ", {close_failures} close failures");
        }
        line
    }

    /// One line per case, details indented under it, then the summary.
    #[must_use]
    pub fn text(&self) -> String {
        let mut out = String::new();
        for r in &self.results {
            let _ = writeln!(
                out,
                "{:<8} {:<11} {:<6} {}",
                r.meta.id,
                r.verdict.as_str(),
                r.meta.level,
                r.meta.description
            );
            if let Some(detail) = &r.detail {
                for line in detail.lines() {
                    let _ = writeln!(out, "{:<28}{line}", "");
                }
            }
            if let CloseVerdict::Fail(how) = &r.close {
                let _ = writeln!(out, "{:<28}closing handshake FAILED: {how}", "");
            }
        }
        let _ = writeln!(out, "{}", self.summary());
        out
    }

    /// The whole report as JSON.
    #[must_use]
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// JUnit XML, one test case per conformance case (FAIL → failure; NON-STRICT →
    /// failure only with --strict; UNSUPPORTED/SKIPPED → skipped).
    #[must_use]
    pub fn junit(&self) -> String {
        use quick_junit::{NonSuccessKind, Report as JReport, TestCase, TestCaseStatus, TestSuite};
        let mut suite = TestSuite::new("compendium-conformance");
        for r in &self.results {
            let status = if r.fails_run(self.strict) || r.verdict == Verdict::Fail {
                let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
                let message = r.detail.clone().unwrap_or_default();
                let message = match &r.close {
                    CloseVerdict::Fail(how) => {
                        format!("{message}\nclosing handshake FAILED: {how}")
                    }
                    _ => message,
                };
                status.set_message(message.trim().to_owned());
                status.set_type(r.verdict.as_str());
                status
            } else if matches!(r.verdict, Verdict::Unsupported | Verdict::Skipped) {
                let mut status = TestCaseStatus::skipped();
                status.set_message(format!(
                    "{}: {}",
                    r.verdict.as_str(),
                    r.detail.clone().unwrap_or_default()
                ));
                status
            } else {
                TestCaseStatus::success()
            };
            let mut case = TestCase::new(format!("{} {}", r.meta.id, r.meta.description), status);
            case.set_classname(format!("rule {} ({})", r.meta.rule, r.meta.level));
            case.set_time(r.duration);
            suite.add_test_case(case);
        }
        let mut report = JReport::new("compendium-conformance");
        report.add_test_suite(suite);
        report
            .to_string()
            .unwrap_or_else(|e| format!("<!-- cannot render JUnit: {e} -->"))
    }
}
