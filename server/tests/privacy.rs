//! Rule 4.5: logs never contain `msg` contents, even at the most verbose level.
//! (Its own test binary: it installs a process-wide log subscriber.)

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use support::TestServer;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn rule_4_5_logs_never_contain_msg_contents() {
    let captured = Captured::default();
    let sink = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink.clone())
        .init();

    const SECRET: &str = "TOP-SECRET-7f3a9c";
    let server = TestServer::default().await;
    let (mut a, mut b) = (server.client().await, server.client().await);
    let b_addr = b.init().await;
    a.route(&b_addr, &format!(r#"{{"secret":"{SECRET}"}}"#))
        .await;
    b.recv_json().await;
    a.route(
        "0123456789abcdef0123456789abcdef",
        &format!(r#"{{"secret":"{SECRET}"}}"#),
    )
    .await;
    a.expect_err(404).await;
    a.send(&format!(
        r#"{{"type":"ROUTE","EpheWssAddr":"bad","msg":{{"secret":"{SECRET}"}}}}"#
    ))
    .await;
    a.expect_err(400).await;
    drop((a, b));
    server.stop().await;

    let logs = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf-8");
    assert!(logs.contains("listening on"), "the capture works: {logs}");
    assert!(
        logs.contains("disconnected"),
        "per-connection events are logged: {logs}"
    );
    assert!(
        !logs.contains(SECRET),
        "msg contents leaked into the logs:\n{logs}"
    );
}
