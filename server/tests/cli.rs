//! The `compendium-server` binary: flags, startup line, errors, signals.

mod support;

use std::process::Command;

use support::process::{Running, server};

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
    let mut command = server();
    command.args(["--listen", "127.0.0.1:0"]);
    let mut running = Running::spawn(command);
    let url = running.url();
    assert!(url.starts_with("ws://127.0.0.1:"), "{url}");
    assert!(init_over(&url).starts_with(r#"{"type":"INITRESP","EpheWssAddr":""#));
    assert_eq!(running.terminate(), Some(0));
    running.wait_for_line("SIGTERM received");
    running.wait_for_line("stopped");
}

#[test]
fn accept_errors_are_logged_and_the_accept_loop_keeps_running() {
    // Out of file descriptors (EMFILE) is the classic accept error of a busy relay.
    let mut command = Command::new("sh");
    command.env_remove("RUST_LOG").args([
        "-c",
        &format!(
            "ulimit -n 40 && exec '{}' --listen 127.0.0.1:0 --handshake-timeout 0.3",
            env!("CARGO_BIN_EXE_compendium-server")
        ),
    ]);
    let mut running = Running::spawn(command);
    let url = running.url();
    let addr = url.trim_start_matches("ws://").to_owned();
    let hogs: Vec<std::net::TcpStream> = (0..60)
        .map(|_| std::net::TcpStream::connect(&addr).expect("connect"))
        .collect();
    running.wait_for_line("accept failed; retrying");
    drop(hogs);
    // Once the stalled handshakes time out, descriptors are free and service resumes.
    assert!(init_over(&url).starts_with(r#"{"type":"INITRESP""#));
    assert_eq!(running.terminate(), Some(0));
}

#[test]
fn json_logs_are_one_object_per_line() {
    let mut command = server();
    command.args(["--listen", "127.0.0.1:0", "--log-format", "json"]);
    let mut running = Running::spawn(command);
    let line = running.wait_for_line("listening on");
    let event: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
    assert_eq!(event["level"], "INFO", "{line}");
    assert!(
        event["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("listening on ws://127.0.0.1:")),
        "{line}"
    );
    assert_eq!(running.terminate(), Some(0));
}
