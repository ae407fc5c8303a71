//! The `compendium-conformance` binary: exit status, formats, the text report.

mod support;

use std::process::Command;

use compendium_server::Config;
use support::toy_relay::{self, Fault};

fn conformance() -> Command {
    Command::new(env!("CARGO_BIN_EXE_compendium-conformance"))
}

/// Run the binary off the async runtime's threads (it is a blocking child process).
async fn output(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || conformance().args(args).output().expect("run"))
        .await
        .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_against_our_relay_and_prints_one_line_per_case() {
    let url = support::our_relay(Config::ephemeral()).await;
    let out = output(vec![
        "run".into(),
        "--url".into(),
        url,
        "1.".into(),
        "2.".into(),
        "3.6".into(),
    ])
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    insta::assert_snapshot!(String::from_utf8_lossy(&out.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_against_a_broken_relay_naming_the_cases() {
    let url = toy_relay::start(Fault::ExtraDeliverMember).await;
    let out = output(vec!["run".into(), "--url".into(), url, "3.4".into()]).await;
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for id in ["3.4/1", "3.4/2", "3.4/3"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(id) && l.contains("FAIL")),
            "{id} not failed in:\n{stdout}"
        );
    }
    assert!(stdout.contains("0 passed, 3 failed"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_junit_formats() {
    let url = support::our_relay(Config::ephemeral()).await;
    let out = output(vec![
        "run".into(),
        "--url".into(),
        url.clone(),
        "--format".into(),
        "json".into(),
        "3.6/1".into(),
    ])
    .await;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["results"][0]["id"], "3.6/1");
    assert_eq!(report["results"][0]["verdict"], "PASS");
    assert_eq!(report["results"][0]["close"]["verdict"], "PASS");

    let out = output(vec![
        "run".into(),
        "--url".into(),
        url,
        "--format".into(),
        "junit".into(),
        "3.6".into(),
        "4.5".into(),
    ])
    .await;
    let xml = String::from_utf8_lossy(&out.stdout);
    assert!(xml.starts_with("<?xml"), "{xml}");
    assert!(
        xml.contains("tests=\"3\"") && xml.contains("disabled=\"1\"") && xml.contains("<skipped"),
        "{xml}"
    );
}

#[tokio::test]
async fn usage_errors_exit_2() {
    let out = output(vec![
        "run".into(),
        "--url".into(),
        "ws://127.0.0.1:1".into(),
        "9.9".into(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no case matches [\"9.9\"]"));

    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"id":"1.1/1"}"#).expect("write");
    let out = output(vec![
        "run".into(),
        "--session".into(),
        bad.display().to_string(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.json: \"rule\" is a required property"),
        "{stderr}"
    );
}

/// `load --rate` is the open loop: it cannot be combined with a closed-loop mode, and a
/// rate of nothing is refused before any connection is made.
#[tokio::test]
async fn load_rate_conflicts_with_a_closed_loop_and_must_be_positive() {
    let args = |extra: &[&str]| {
        ["load", "--url", "ws://127.0.0.1:9"]
            .iter()
            .chain(extra)
            .map(|a| (*a).to_owned())
            .collect::<Vec<_>>()
    };
    let out = output(args(&["--rate", "1000", "--mode", "flood"])).await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("'--rate <N>' cannot be used with '--mode <MODE>'"),
        "{stderr}"
    );

    let out = output(args(&["--rate", "0"])).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        "compendium-conformance: load: an open loop needs a rate above 0 msgs/s, not 0"
    );
}
