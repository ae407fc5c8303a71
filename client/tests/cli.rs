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
