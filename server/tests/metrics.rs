//! `/healthz` and `/metrics` on the metrics listener, in the Prometheus text format.

mod support;

use compendium_server::Config;
use support::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
    (head.to_owned(), body.to_owned())
}

#[tokio::test]
async fn healthz_and_metrics_report_what_happened() {
    let mut config = Config::ephemeral();
    config.metrics_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let server = compendium_server::Server::bind(config).await.expect("bind");
    let metrics_addr = server.metrics_addr().expect("metrics address");
    let url = format!("ws://{}", server.local_addrs()[0]);
    let handle = server.handle();
    let task = tokio::spawn(server.run(std::future::pending()));

    let (mut a, mut b) = (
        support::Client::connect(&url).await,
        support::Client::connect(&url).await,
    );
    let b_addr = b.init().await;
    a.route(&b_addr, r#"{"n":1}"#).await;
    b.recv_json().await;
    a.route("0123456789abcdef0123456789abcdef", "{}").await;
    a.expect_err(404).await;
    a.send("nope").await;
    a.expect_err(400).await;

    let (head, body) = http_get(metrics_addr, "/healthz").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "ok\n");

    let (head, body) = http_get(metrics_addr, "/metrics").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    for line in [
        "compendium_connections_open 2",
        "compendium_addresses_live 1",
        "compendium_messages_received_total 4",
        "compendium_messages_routed_total 1",
        "compendium_errors_sent_total{code=\"404\"} 1",
        "compendium_errors_sent_total{code=\"400\"} 1",
        "compendium_queue_full_refusals_total 0",
    ] {
        assert!(
            body.lines().any(|l| l == line),
            "missing {line:?} in:\n{body}"
        );
    }
    assert!(body.contains("# HELP compendium_received_bytes "), "{body}");
    assert!(body.contains("# HELP compendium_sent_bytes "), "{body}");

    let (head, _) = http_get(metrics_addr, "/other").await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");

    drop((a, b));
    handle.shutdown();
    task.await.expect("run");
}

#[tokio::test]
async fn closed_connections_are_counted_by_reason() {
    let server = TestServer::default().await;
    let mut a = server.client().await;
    a.ws.close(None).await.expect("close");
    while a.next_frame().await.is_some() {}
    server.handle.wait_for_ended_connections(1).await;
    let text = server.handle.metrics_text();
    assert!(
        text.contains("compendium_connections_closed_total{reason=\"client_closed\"} 1"),
        "{text}"
    );
    assert!(text.contains("compendium_connections_open 0"), "{text}");
    server.stop().await;
}
