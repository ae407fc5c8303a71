//! `wss://` to our relay, trusting a test CA from a PEM file.

mod support;

use compendium_client::{Client, ConnectStage, Error};
use compendium_server::{Config, TlsFiles};

#[tokio::test]
async fn wss_with_a_custom_ca_file() {
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("rcgen");
    let dir = tempfile::tempdir().expect("tempdir");
    let files = TlsFiles {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
    };
    std::fs::write(&files.cert, generated.cert.pem()).expect("cert");
    std::fs::write(&files.key, generated.signing_key.serialize_pem()).expect("key");
    let mut config = Config::ephemeral();
    config.tls = Some(files.clone());
    let (url, _) = support::relay(config).await;
    let url = url.replace("ws://127.0.0.1", "wss://localhost");

    let mut phone = Client::builder()
        .ca_cert(&files.cert)
        .connect(&url)
        .await
        .expect("connect over TLS");
    let pc = Client::builder()
        .ca_cert(&files.cert)
        .connect(&url)
        .await
        .expect("connect over TLS");
    let addr = phone.init().await.expect("init");
    pc.route(&addr, &serde_json::json!({"secure": true}))
        .await
        .expect("route");
    let msg: serde_json::Value = phone.recv_json().await.expect("deliver");
    assert_eq!(msg["secure"], true);

    // With the default (public) roots, a self-signed relay is not trusted.
    match Client::connect(&url).await {
        Err(Error::Connect(err)) => {
            assert_eq!(err.stage(), ConnectStage::Tls, "{err}");
            assert!(
                err.to_string()
                    .starts_with("TLS handshake with localhost: "),
                "{err}"
            );
        }
        other => panic!("{other:?}"),
    }
    // A CA file that holds no certificate is a clear error.
    match Client::builder().ca_cert(&files.key).connect(&url).await {
        Err(Error::Tls(message)) => {
            assert!(message.starts_with("no PEM certificate in "), "{message}")
        }
        other => panic!("{other:?}"),
    }
}
