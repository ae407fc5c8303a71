//! The `compendium-client` binary end to end: `init --once` in one process, `send` from
//! another.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn client() -> Command {
    Command::new(env!("CARGO_BIN_EXE_compendium-client"))
}

#[test]
fn init_once_prints_the_message_sent_by_another_process() {
    let (_relay, url) = support::relay_in_background();
    let mut listener = client()
        .args(["--url", &url, "init", "--once"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdout = BufReader::new(listener.stdout.take().expect("stdout"));
    let mut address = String::new();
    stdout.read_line(&mut address).expect("address line");
    let address = address.trim().to_owned();
    assert_eq!(address.len(), 32, "{address:?}");

    let sent = client()
        .args([
            "--url",
            &url,
            "send",
            &address,
            "{\"hello\":\n \"from another process\"}",
        ])
        .output()
        .expect("send");
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );

    let mut line = String::new();
    stdout.read_line(&mut line).expect("message line");
    assert_eq!(line, "{\"hello\":  \"from another process\"}\n");
    assert!(listener.wait().expect("wait").success());
}

#[test]
fn send_reports_the_relays_error_and_exits_1() {
    let (_relay, url) = support::relay_in_background();
    let out = client()
        .args([
            "--url",
            &url,
            "send",
            "0123456789abcdef0123456789abcdef",
            "{}",
        ])
        .output()
        .expect("send");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("relay error 404: Socket address not found"),
        "{stderr}"
    );
}

#[test]
fn send_lines_reads_stdin_and_reports_each_failure() {
    let (_relay, url) = support::relay_in_background();
    let mut child = client()
        .args([
            "--url",
            &url,
            "send",
            "0123456789abcdef0123456789abcdef",
            "--lines",
        ])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(b"{\"a\":1}\nnot json\n\n[2]\n")
            .expect("write");
    }
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("stdin line 2: payload is not valid JSON"),
        "{stderr}"
    );
    assert!(
        stderr.contains("stdin line 4: a payload must be a JSON object, this is an array"),
        "{stderr}"
    );
    assert!(
        stderr.contains("2 invalid, 1 refused by the relay"),
        "{stderr}"
    );
}

#[test]
fn timeout_exits_3_and_usage_errors_exit_2() {
    let (_relay, url) = support::relay_in_background();
    let out = client()
        .args(["--url", &url, "--timeout", "0.2", "init", "--once"])
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("timed out after 200ms"));

    let out = client()
        .args(["send", "not-an-address", "{}"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("an address is 32 lowercase hexadecimal characters")
    );
}

/// `--resumable listen` through a link the test resets: it keeps its address, prints each
/// message once and in order across the drop, and says it resumed; when the session cannot
/// come back (the relay is gone past the grace) it exits 1 saying so, and never prints a
/// new address.
#[test]
fn resumable_listen_survives_a_reset_and_exits_1_when_the_session_is_lost() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let mut config = compendium_server::Config::ephemeral();
    config.sessions.grace = std::time::Duration::from_secs(2);
    config.sessions.hold = std::time::Duration::from_secs(2);
    let ((url, relay), link) = runtime.block_on(async {
        let relay = support::relay(config).await;
        let link = support::link::Link::start(&relay.0).await;
        (relay, link)
    });
    let mut listener = client()
        .args(["--url", &link.url, "--resumable", "listen"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdout = BufReader::new(listener.stdout.take().expect("stdout"));
    let mut address = String::new();
    stdout.read_line(&mut address).expect("address line");
    let address: compendium_messages::Address = address.trim().parse().expect("an address");
    let sender = runtime
        .block_on(compendium_client::Client::connect(&url))
        .expect("sender");
    let send = |n: u64| {
        runtime
            .block_on(sender.route(&address, &serde_json::json!({ "n": n })))
            .expect("route");
    };
    let mut expect_line = |n: u64| {
        let mut line = String::new();
        stdout.read_line(&mut line).expect("a message line");
        assert_eq!(line, format!("{{\"n\":{n}}}\n"), "message {n}");
    };
    for n in 1..=5 {
        send(n);
    }
    for n in 1..=5 {
        expect_line(n);
    }
    link.reset_all();
    // Sent while the listener is away (held, rule 6.8) or just back: each printed once.
    for n in 6..=10 {
        send(n);
    }
    for n in 6..=10 {
        expect_line(n);
    }
    assert_eq!(link.accepted(), 2, "one reconnection");

    relay.shutdown();
    let status = listener.wait().expect("wait");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).expect("stdout");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut listener.stderr.take().expect("stderr"), &mut stderr)
        .expect("stderr");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(rest, "", "nothing more printed, no new address");
    assert!(stderr.contains("session resumed (same address"), "{stderr}");
    assert!(stderr.contains("session lost: "), "{stderr}");
    drop(runtime);
}
