//! The suite against real relays: ours passes everything it can observe; a relay with a
//! deliberate fault FAILs exactly the cases for that fault.

mod support;

use std::collections::BTreeSet;

use compendium_conformance::report::{Report, Verdict};
use compendium_server::Config;
use support::suite;
use support::toy_relay::{self, Fault};

async fn run_on(url: &str, prefixes: &[&str], tight: bool) -> Report {
    suite::run_on(&[url.to_owned()], prefixes, tight).await
}

fn ids_with(report: &Report, verdict: Verdict) -> BTreeSet<String> {
    report
        .results
        .iter()
        .filter(|r| r.verdict == verdict)
        .map(|r| r.meta.id.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_relay_passes_every_observable_case() {
    let url = support::our_relay(Config::ephemeral()).await;
    let tight = support::our_relay(support::tight_config()).await;
    suite::assert_passes_everything(&[url], &[tight], suite::V2::Offered).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_adds_a_member_to_deliver_fails_the_deliver_cases() {
    let baseline = run_on(
        &toy_relay::start(Fault::None).await,
        &["1.", "2.", "3."],
        false,
    )
    .await;
    let faulty = run_on(
        &toy_relay::start(Fault::ExtraDeliverMember).await,
        &["1.", "2.", "3."],
        false,
    )
    .await;
    let newly_failed: BTreeSet<String> = ids_with(&faulty, Verdict::Fail)
        .difference(&ids_with(&baseline, Verdict::Fail))
        .cloned()
        .collect();
    // Every case that receives a DELIVER fails; nothing else does.
    let expected: BTreeSet<String> = [
        "1.4/1", "1.4/2", "2.7/1", "3.2/1", "3.3/1", "3.3/2", "3.3/3", "3.3/4", "3.3/5", "3.4/1",
        "3.4/2", "3.4/3", "3.5/1", "3.5/2",
    ]
    .map(String::from)
    .into();
    assert_eq!(newly_failed, expected, "{}", faulty.text());
    assert!(faulty.failed());
    let detail = faulty
        .results
        .iter()
        .find(|r| r.meta.id == "3.4/1")
        .and_then(|r| r.detail.clone())
        .unwrap_or_default();
    assert!(detail.contains("unexpected member \"from\""), "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_never_releases_addresses_fails_the_release_cases() {
    let faulty = run_on(
        &toy_relay::start(Fault::NeverRelease).await,
        &["3.2/", "3.6/", "3.10/"],
        false,
    )
    .await;
    assert_eq!(
        ids_with(&faulty, Verdict::Fail),
        ["3.10/1", "3.10/2", "3.2/1", "3.6/2"]
            .map(String::from)
            .into(),
        "{}",
        faulty.text()
    );
    assert!(faulty.failed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_reencodes_msg_is_non_strict_or_fails_when_numbers_change() {
    let report = run_on(&toy_relay::start(Fault::Reencode).await, &["3.4/"], false).await;
    let verdicts: Vec<(String, Verdict)> = report
        .results
        .iter()
        .map(|r| (r.meta.id.clone(), r.verdict))
        .collect();
    assert_eq!(
        verdicts,
        [
            ("3.4/1".to_owned(), Verdict::NonStrict), // JSON-equal, bytes differ
            ("3.4/2".to_owned(), Verdict::NonStrict),
            ("3.4/3".to_owned(), Verdict::Fail), // a large integer was rounded
        ],
        "{}",
        report.text()
    );
    assert!(report.failed(), "a MUST failure fails the run");
    let mut only_bytes = report.clone();
    only_bytes
        .results
        .retain(|r| r.verdict == Verdict::NonStrict);
    assert!(!only_bytes.failed(), "NON-STRICT alone passes");
    only_bytes.strict = true;
    assert!(only_bytes.failed(), "--strict fails on NON-STRICT");
}
