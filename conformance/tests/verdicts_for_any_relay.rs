//! The suite against relays that are not ours, one class of misbehaviour each (see
//! `support::toy_relay`): every run ends in bounded time with a verdict for every case,
//! and the verdicts are the ones the protocol's text calls for (snapshotted, one line per
//! case, so a change is a reviewed diff).

mod support;

use std::fmt::Write as _;
use std::time::Duration;

use compendium_conformance::case;
use compendium_conformance::report::{Report, Verdict};
use compendium_conformance::runner::{RunOptions, run};
use support::toy_relay::{self, Fault, python_dumps};

/// Run every case against `url` with `timeout` per expectation, checking the promise the
/// README makes: each case ends within its deadline, so the run within cases × deadline.
async fn judge(url: &str, timeout: Duration) -> Report {
    let cases = case::all().expect("the shipped sessions load");
    let mut options = RunOptions::new(url);
    options.timeout = timeout;
    options.case_timeout = Duration::from_secs(20);
    let deadline = options.case_deadline();
    let bound = deadline * u32::try_from(cases.len()).expect("few cases");
    let report = tokio::time::timeout(bound, run(&cases, &options))
        .await
        .unwrap_or_else(|_| panic!("the run did not end within {bound:?}"));
    // Shown if the test fails: every verdict with its detail.
    eprintln!("{}", report.text());
    assert_eq!(
        report.results.len(),
        cases.len(),
        "a verdict for every case"
    );
    for result in &report.results {
        // The deadline stops a case; a little slack for the stopping itself.
        assert!(
            result.duration <= deadline + Duration::from_secs(1),
            "{} took {:?}",
            result.meta.id,
            result.duration
        );
    }
    report
}

/// `id VERDICT` per case, with `(deadline)` where a case was stopped by its deadline.
fn verdicts(report: &Report) -> String {
    let mut out = String::new();
    for r in &report.results {
        let stopped = r
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("did not finish within"));
        let _ = writeln!(
            out,
            "{:<7} {}{}",
            r.meta.id,
            r.verdict.as_str(),
            if stopped { " (deadline)" } else { "" }
        );
    }
    out
}

fn detail<'a>(report: &'a Report, id: &str) -> &'a str {
    report
        .results
        .iter()
        .find(|r| r.meta.id == id)
        .and_then(|r| r.detail.as_deref())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_hangs_up_on_invalid_input_fails_the_invalid_input_cases() {
    let url = toy_relay::start(Fault::HangUpOnInvalid).await;
    let report = judge(&url, Duration::from_secs(1)).await;
    insta::assert_snapshot!(verdicts(&report));
    let detail = detail(&report, "3.7/1");
    assert!(
        detail.contains("the relay closed the connection with 1011 \"internal error\""),
        "{detail}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_reencodes_json_is_non_strict_never_failed_for_bytes() {
    let url = toy_relay::start(Fault::PythonStyle).await;
    let report = judge(&url, Duration::from_secs(1)).await;
    insta::assert_snapshot!(verdicts(&report));
    for id in ["1.4/1", "3.3/5", "3.5/2"] {
        let detail = detail(&report, id);
        assert!(
            detail.contains("JSON-equal to what was routed but not byte-identical"),
            "{id}: {detail}"
        );
    }
    assert!(!report.failed(), "{}", report.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_never_answers_the_handshake_fails_every_case_quickly() {
    let url = toy_relay::start(Fault::NeverHandshake).await;
    let report = judge(&url, Duration::from_millis(300)).await;
    insta::assert_snapshot!(verdicts(&report));
    let detail = detail(&report, "3.3/1");
    assert!(detail.contains("handshake timed out"), "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_answers_garbage_fails_every_case_quickly() {
    let url = toy_relay::start(Fault::Garbage).await;
    let report = judge(&url, Duration::from_millis(300)).await;
    insta::assert_snapshot!(verdicts(&report));
    let detail = detail(&report, "3.1/1");
    assert!(detail.contains("garbage"), "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_closes_every_connection_fails_every_case_quickly() {
    let url = toy_relay::start(Fault::ClosesEveryConnection).await;
    let report = judge(&url, Duration::from_millis(300)).await;
    insta::assert_snapshot!(verdicts(&report));
    let detail = detail(&report, "3.1/1");
    assert!(
        detail.contains("the relay closed the connection with 1001 \"going away\""),
        "{detail}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_relay_gets_verdicts_in_bounded_time() {
    let url = toy_relay::start(Fault::Slow(Duration::from_millis(400))).await;
    let report = judge(&url, Duration::from_millis(300)).await;
    insta::assert_snapshot!(verdicts(&report));
}

/// Rule 3.8 is a MAY: a relay that blocks the sender instead of answering 503 lacks the
/// feature (UNSUPPORTED) — unless it loses a message on the way (FAIL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_blocks_the_sender_is_unsupported_for_backpressure_unless_it_loses() {
    let backpressure = |fault| async move {
        let url = toy_relay::start(fault).await;
        let mut options = RunOptions::new(url);
        options.prefixes = vec!["3.8/".into()];
        options.timeout = Duration::from_millis(500);
        let report = run(&case::all().expect("load"), &options).await;
        let result = report.results[0].clone();
        (result.verdict, result.detail.unwrap_or_default())
    };
    let (verdict, detail) = backpressure(Fault::BlocksTheSender).await;
    assert_eq!(verdict, Verdict::Unsupported, "{detail}");
    assert!(
        detail.contains("the relay stopped reading from the sender")
            && detail.contains("nothing was lost"),
        "{detail}"
    );
    let (verdict, detail) = backpressure(Fault::BlocksTheSenderAndLoses).await;
    assert_eq!(verdict, Verdict::Fail, "{detail}");
    assert!(
        detail.contains("message 10 arrived where 9 was due"),
        "{detail}"
    );
}

#[test]
fn python_dumps_writes_what_python_writes() {
    // python3 -c 'import json; print(json.dumps(json.loads(TEXT)))', numbers aside.
    assert_eq!(
        python_dumps(r#"{"type":"DELIVER","msg":{ "a" : [1,2.50], "é":"\/x\u00e9😀\n"}}"#),
        r#"{"type": "DELIVER", "msg": {"a": [1, 2.50], "\u00e9": "/x\u00e9\ud83d\ude00\n"}}"#
    );
    assert_eq!(python_dumps(r#"{"s":"\ud800"}"#), r#"{"s": "\ud800"}"#);
}
