//! The `compendium-server` binary: flags, startup line, errors, signals.

mod support;

use std::process::Command;

use compendium_harness::{PATIENCE, Relay};
use support::process::{bin, server};

/// Connect, INIT, and return the INITRESP text.
fn init_over(url: &str) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        use futures_util::{SinkExt, StreamExt};
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        ws.send(tokio_tungstenite::tungstenite::Message::text(
            r#"{"type":"INIT"}"#,
        ))
        .await
        .expect("send");
        let reply = ws.next().await.expect("reply").expect("frame");
        reply.to_text().expect("text").to_owned()
    })
}

#[test]
fn help_explains_every_flag_with_its_env_var_and_default() {
    let out = server().arg("--help").output().expect("run");
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).expect("utf-8");
    for expected in [
        "[env: COMPENDIUM_LISTEN=]",
        "[default: 127.0.0.1:8001]",
        "[env: COMPENDIUM_MAX_MESSAGE_BYTES=]",
        "[default: 1048576]",
        "[env: COMPENDIUM_IDLE_TIMEOUT=]",
        "[env: COMPENDIUM_TLS_CERT=]",
        "[env: COMPENDIUM_METRICS_LISTEN=]",
        "[env: COMPENDIUM_MAX_MSGS_PER_SEC=]",
        "Examples:",
    ] {
        assert!(
            help.contains(expected),
            "--help lacks {expected:?}:\n{help}"
        );
    }
}

#[test]
fn bad_flags_are_rejected_with_a_message() {
    for (args, expected) in [
        (
            &["--ping-interval", "soon"][..],
            "\"soon\" is not a number of seconds",
        ),
        (&["--tls-cert", "c.pem"][..], "--tls-key <PEM>"),
        (
            &["--listen", "localhost"][..],
            "invalid socket address syntax",
        ),
    ] {
        let out = server().args(args).output().expect("run");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[test]
fn an_unusable_setting_or_busy_port_exits_1_with_the_reason() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let out = server()
        .args(["--listen", &addr.to_string()])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}: ")),
        "{stderr}"
    );

    let out = server()
        .args(["--listen", "127.0.0.1:0", "--max-message-bytes", "10"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("below the protocol's minimum of 65536 bytes"),
        "{stderr}"
    );
}

#[test]
fn serves_then_exits_0_on_sigterm() {
    let mut relay = Relay::start(Relay::command(bin())).expect("starts");
    let url = relay.url().to_owned();
    assert!(url.starts_with("ws://127.0.0.1:"), "{url}");
    assert!(init_over(&url).starts_with(r#"{"type":"INITRESP","EpheWssAddr":""#));
    let status = relay.process.terminate().expect("SIGTERM");
    assert_eq!(status.code(), Some(0));
    relay
        .process
        .wait_for_line("SIGTERM received", PATIENCE)
        .expect("logged");
    relay
        .process
        .wait_for_line("stopped", PATIENCE)
        .expect("logged");
}

#[test]
fn accept_errors_are_logged_and_the_accept_loop_keeps_running() {
    // Out of file descriptors (EMFILE) is the classic accept error of a busy relay.
    let relay = Relay::command(bin());
    let args: Vec<String> = relay
        .get_args()
        .map(|a| format!("'{}'", a.to_string_lossy()))
        .collect();
    let mut command = Command::new("sh");
    command.env("RUST_LOG", "info").args([
        "-c",
        &format!(
            "ulimit -n 40 && exec '{}' {} --handshake-timeout 0.3",
            bin().display(),
            args.join(" ")
        ),
    ]);
    let mut relay = Relay::start(command).expect("starts");
    let url = relay.url().to_owned();
    let addr = url.trim_start_matches("ws://").to_owned();
    let hogs: Vec<std::net::TcpStream> = (0..60)
        .map(|_| std::net::TcpStream::connect(&addr).expect("connect"))
        .collect();
    relay
        .process
        .wait_for_line("accept failed; retrying", PATIENCE)
        .expect("logged");
    drop(hogs);
    // Once the stalled handshakes time out, descriptors are free and service resumes.
    assert!(init_over(&url).starts_with(r#"{"type":"INITRESP""#));
    assert_eq!(relay.process.terminate().expect("SIGTERM").code(), Some(0));
}

/// The readiness event is one JSON log line that tools read (docs/operations.md).
#[test]
fn json_logs_are_one_object_per_line_and_ready_is_announced_once_bound() {
    let mut relay = Relay::start(Relay::command(bin())).expect("starts");
    let metrics = relay.ready.metrics.clone().expect("metrics address");
    assert!(
        relay.url().starts_with("ws://127.0.0.1:"),
        "{:?}",
        relay.ready
    );
    for line in relay.process.lines().to_vec() {
        let event: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
        if event["fields"]["event"] == "ready" {
            assert_eq!(event["level"], "INFO", "{line}");
            assert_eq!(event["fields"]["listen"], relay.url(), "{line}");
            assert_eq!(event["fields"]["metrics"], metrics, "{line}");
            assert!(
                event["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("listening on ws://127.0.0.1:")),
                "{line}"
            );
        }
    }
    // Bound means serving: the metrics endpoint answers at once.
    assert!(
        relay
            .metric("compendium_connections_open")
            .expect("metrics")
            == 0.0
    );
    assert_eq!(relay.process.terminate().expect("SIGTERM").code(), Some(0));
}
