//! `wss://`: the server loads a PEM certificate and key, and a rustls client that trusts
//! that certificate speaks the protocol over TLS.

mod support;

use std::sync::Arc;

use compendium_server::{Config, Error, Server, TlsFiles};
use futures_util::{SinkExt, StreamExt};
use rustls_pki_types::{CertificateDer, ServerName};
use support::TestServer;
use tokio_tungstenite::tungstenite::Message as Frame;

struct TestCa {
    _dir: tempfile::TempDir,
    files: TlsFiles,
    cert: CertificateDer<'static>,
}

fn self_signed() -> TestCa {
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("rcgen");
    let dir = tempfile::tempdir().expect("tempdir");
    let files = TlsFiles {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
    };
    std::fs::write(&files.cert, generated.cert.pem()).expect("write cert");
    std::fs::write(&files.key, generated.signing_key.serialize_pem()).expect("write key");
    TestCa {
        _dir: dir,
        files,
        cert: generated.cert.der().clone(),
    }
}

#[tokio::test]
async fn a_tls_client_that_trusts_the_certificate_can_route() {
    let ca = self_signed();
    let mut config = Config::ephemeral();
    config.tls = Some(ca.files.clone());
    let server = TestServer::start(config).await;
    let addr = server.url.trim_start_matches("ws://").to_owned();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.clone()).expect("add root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let mut clients = Vec::new();
    for _ in 0..2 {
        let tcp = tokio::net::TcpStream::connect(&addr).await.expect("tcp");
        let tls = connector
            .connect(ServerName::try_from("localhost").expect("name"), tcp)
            .await
            .expect("TLS handshake");
        let (ws, _) = tokio_tungstenite::client_async("wss://localhost/", tls)
            .await
            .expect("ws handshake");
        clients.push(ws);
    }
    let (a, b) = clients.split_at_mut(1);
    let (a, b) = (&mut a[0], &mut b[0]);
    b.send(Frame::text(r#"{"type":"INIT"}"#))
        .await
        .expect("send");
    let reply: serde_json::Value = match b.next().await {
        Some(Ok(Frame::Text(t))) => serde_json::from_str(t.as_str()).expect("json"),
        other => panic!("{other:?}"),
    };
    let b_addr = reply["EpheWssAddr"].as_str().expect("address");
    a.send(Frame::text(format!(
        r#"{{"type":"ROUTE","EpheWssAddr":"{b_addr}","msg":{{"over":"tls"}}}}"#
    )))
    .await
    .expect("send");
    match b.next().await {
        Some(Ok(Frame::Text(t))) => {
            assert_eq!(t.as_str(), r#"{"type":"DELIVER","msg":{"over":"tls"}}"#)
        }
        other => panic!("{other:?}"),
    }
    drop(clients);
    server.stop().await;
}

#[tokio::test]
async fn a_plain_ws_client_cannot_talk_to_a_tls_listener() {
    let ca = self_signed();
    let mut config = Config::ephemeral();
    config.tls = Some(ca.files.clone());
    let server = TestServer::start(config).await;
    let err = tokio_tungstenite::connect_async(&server.url)
        .await
        .expect_err("a TLS listener does not speak plain HTTP");
    // What comes back is a TLS alert, which is not an HTTP response.
    assert!(
        matches!(
            err,
            tokio_tungstenite::tungstenite::Error::Protocol(
                tokio_tungstenite::tungstenite::error::ProtocolError::HttparseError(_)
            )
        ),
        "{err:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn unusable_tls_files_are_a_clear_startup_error() {
    let ca = self_signed();
    let mut config = Config::ephemeral();
    config.tls = Some(TlsFiles {
        cert: ca.files.key.clone(),
        key: ca.files.key.clone(),
    });
    match Server::bind(config).await {
        Err(Error::Tls(message)) => assert!(
            message.starts_with("no PEM certificate found in "),
            "{message}"
        ),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("bound with a key as certificate"),
    }
    let mut config = Config::ephemeral();
    config.tls = Some(TlsFiles {
        cert: ca.files.cert.clone(),
        key: "/nonexistent/key.pem".into(),
    });
    match Server::bind(config).await {
        Err(Error::Tls(message)) => {
            assert!(
                message.starts_with("reading the private key from /nonexistent/key.pem: "),
                "{message}"
            );
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("bound without a key"),
    }
}
