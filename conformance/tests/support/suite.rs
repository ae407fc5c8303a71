//! The whole suite against our relay, one node or several: every case it can observe
//! passes.

use std::time::Duration;

use compendium_conformance::case;
use compendium_conformance::report::{Report, Verdict};
use compendium_conformance::runner::{RunOptions, run};

/// Cases that cannot be observed over the wire: always SKIPPED.
pub const UNOBSERVABLE: &[&str] = &["3.11/1", "3.12/1", "4.4/1", "4.5/1"];
/// Cases that need our relay configured with limits and short timers.
pub const TIGHT: &[&str] = &["3.9/", "4.1/", "4.2/", "4.3/"];

/// Run the cases whose ids start with `prefixes` against `urls` (with the options the
/// TIGHT cases need when `tight`).
pub async fn run_on(urls: &[String], prefixes: &[&str], tight: bool) -> Report {
    let cases = case::all().expect("the shipped sessions load");
    let mut options = RunOptions::on_nodes(urls.to_vec());
    options.prefixes = prefixes.iter().map(ToString::to_string).collect();
    if tight {
        options.slow = Some(Duration::from_secs(3));
        options.max_connections = Some(super::TIGHT_MAX_CONNECTIONS);
    }
    run(&cases, &options).await
}

/// Whether the relay under test speaks version 2 (section 6): a cluster does not offer it
/// until sessions can move between nodes, and its version 2 cases are UNSUPPORTED.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum V2 {
    /// Every case passes.
    Offered,
    /// The section 6 cases are UNSUPPORTED; every other case passes.
    NotOffered,
}

/// Every case once — the TIGHT ones against `tight` (a relay with `tight_config`), the
/// rest against `default` — and each passes, or is SKIPPED when it cannot be observed
/// (or UNSUPPORTED, for the version 2 cases of a relay that does not offer it).
pub async fn assert_passes_everything(default: &[String], tight: &[String], v2: V2) {
    let cases = case::all().expect("load");
    let default_prefixes: Vec<String> = cases
        .iter()
        .map(|c| c.meta.id.clone())
        .filter(|id| !TIGHT.iter().any(|t| id.starts_with(t)))
        .collect();
    let default_prefixes: Vec<&str> = default_prefixes.iter().map(String::as_str).collect();
    let report = run_on(default, &default_prefixes, false).await;
    let tight = run_on(tight, TIGHT, true).await;
    for report in [&report, &tight] {
        for r in &report.results {
            let expected = if UNOBSERVABLE.contains(&r.meta.id.as_str()) {
                Verdict::Skipped
            } else if v2 == V2::NotOffered && r.meta.id.starts_with("6.") {
                Verdict::Unsupported
            } else {
                Verdict::Pass
            };
            assert_eq!(
                r.verdict, expected,
                "{} {}: {:?}",
                r.meta.id, r.meta.description, r.detail
            );
            assert!(!r.fails_run(true), "{}: close {:?}", r.meta.id, r.close);
        }
        assert!(!report.failed());
    }
    assert_eq!(
        report.results.len() + tight.results.len(),
        cases.len(),
        "every case ran once"
    );
}
