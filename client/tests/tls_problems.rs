//! Each TLS mistake people make gets a typed [`TlsProblem`] and a message that says what
//! to do — with certificates made here (rcgen) and served by our relay.

mod support;

use std::path::PathBuf;

use compendium_client::{Client, ConnectError, ConnectStage, Error, TlsProblem};
use compendium_server::{Config, TlsFiles};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use time::{Duration, OffsetDateTime};

/// A directory of PEM files, gone with the test.
struct Pem(tempfile::TempDir);

impl Pem {
    fn new() -> Self {
        Self(tempfile::tempdir().expect("tempdir"))
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.path().join(name);
        std::fs::write(&path, text).expect("write PEM");
        path
    }
}

/// A CA named `name`: its issuer and its certificate as PEM.
fn ca(name: &str) -> (Issuer<'static, KeyPair>, String) {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("CA");
    (Issuer::new(params, key), cert.pem())
}

/// A leaf for `names`, valid from `from` to `until` days from now, signed by `issuer`:
/// (certificate PEM, key PEM).
fn leaf(issuer: &Issuer<'_, KeyPair>, names: &[&str], from: i64, until: i64) -> (String, String) {
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .expect("names");
    let now = OffsetDateTime::now_utc();
    params.not_before = now + Duration::days(from);
    params.not_after = now + Duration::days(until);
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, issuer).expect("sign");
    (cert.pem(), key.serialize_pem())
}

/// What `openssl req -x509` makes by default: a self-signed certificate for localhost
/// marked CA:TRUE (certificate PEM, key PEM).
fn ca_as_leaf() -> (String, String) {
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("names");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("cert").pem();
    (cert, key.serialize_pem())
}

/// Our relay serving `cert` and `key` over TLS: its `wss://localhost:PORT` URL.
async fn relay(pem: &Pem, cert: &str, key: &str) -> String {
    let mut config = Config::ephemeral();
    config.tls = Some(TlsFiles {
        cert: pem.write("cert.pem", cert),
        key: pem.write("key.pem", key),
    });
    let (url, _) = support::relay(config).await;
    url.replace("ws://127.0.0.1", "wss://localhost")
}

/// Connect to `url` trusting `ca`, which must fail at `stage`.
async fn refused(url: &str, ca: &PathBuf, stage: ConnectStage) -> ConnectError {
    match Client::builder().ca_cert(ca).connect(url).await {
        Err(Error::Connect(err)) => {
            assert_eq!(err.stage(), stage, "{err}");
            err
        }
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("connected to {url}"),
    }
}

/// The certificate the usual one-line openssl recipe makes: self-signed, CA:TRUE. The
/// user trusts it as --ca-cert and is told what to change.
#[tokio::test]
async fn a_ca_certificate_served_as_the_servers_own() {
    let pem = Pem::new();
    let (cert, key) = ca_as_leaf();
    let url = relay(&pem, &cert, &key).await;
    let err = refused(&url, &pem.write("trusted.pem", &cert), ConnectStage::Tls).await;
    assert_eq!(
        err.tls_problem(),
        Some(&TlsProblem::CaCertificateAsServerCertificate)
    );
    let message = err.to_string();
    assert!(
        message.starts_with("TLS handshake with localhost: the server's certificate is a CA certificate (basicConstraints CA:TRUE)"),
        "{message}"
    );
    assert!(
        message.contains("-addext basicConstraints=critical,CA:FALSE")
            && message.contains("--tls-self-signed"),
        "{message}"
    );
}

/// The report, from the command line: the same advice instead of an enum name.
#[tokio::test]
async fn the_cli_says_the_same() {
    let pem = Pem::new();
    let (cert, key) = ca_as_leaf();
    let url = relay(&pem, &cert, &key).await;
    let trusted = pem.write("trusted.pem", &cert);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_compendium-client"))
            .args(["--url", &url, "--ca-cert"])
            .arg(&trusted)
            .args(["init", "--once"])
            .output()
            .expect("run")
    })
    .await
    .expect("join");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("compendium-client: cannot connect: TLS handshake with localhost: the server's certificate is a CA certificate (basicConstraints CA:TRUE)"),
        "{stderr}"
    );
    assert!(!stderr.contains("CaUsedAsEndEntity"), "{stderr}");
}

#[tokio::test]
async fn a_certificate_from_a_ca_the_client_was_not_given() {
    let pem = Pem::new();
    let (issuer, _) = ca("the server's CA");
    let (cert, key) = leaf(&issuer, &["localhost"], -1, 30);
    let url = relay(&pem, &cert, &key).await;
    // Another CA, and one with the same name (a development CA made again).
    for other in ["another CA", "the server's CA"] {
        let trusted = pem.write("other-ca.pem", &ca(other).1);
        let err = refused(&url, &trusted, ConnectStage::Tls).await;
        assert_eq!(
            err.tls_problem(),
            Some(&TlsProblem::UnknownIssuer),
            "{other}"
        );
        let message = err.to_string();
        assert!(
            message.contains(&format!("is not signed by the CA in {}", trusted.display()))
                && message.contains("--ca-cert"),
            "{message}"
        );
    }
}

#[tokio::test]
async fn a_certificate_for_other_names() {
    let pem = Pem::new();
    let (issuer, ca_pem) = ca("CA");
    let (cert, key) = leaf(&issuer, &["relay.example", "192.0.2.7"], -1, 30);
    let url = relay(&pem, &cert, &key).await;
    let err = refused(&url, &pem.write("ca.pem", &ca_pem), ConnectStage::Tls).await;
    assert_eq!(
        err.tls_problem(),
        Some(&TlsProblem::NameMismatch {
            host: "localhost".into(),
            names: vec!["relay.example".into(), "192.0.2.7".into()],
        })
    );
    assert!(
        err.to_string()
            .contains("is valid for relay.example, 192.0.2.7 but not for \"localhost\""),
        "{err}"
    );
}

#[tokio::test]
async fn an_expired_certificate_and_one_not_valid_yet() {
    let (issuer, ca_pem) = ca("CA");
    for (from, until, what) in [(-30, -1, "expired at "), (1, 30, "is valid only from ")] {
        let pem = Pem::new();
        let (cert, key) = leaf(&issuer, &["localhost"], from, until);
        let url = relay(&pem, &cert, &key).await;
        let err = refused(&url, &pem.write("ca.pem", &ca_pem), ConnectStage::Tls).await;
        let message = err.to_string();
        match err.tls_problem() {
            Some(TlsProblem::Expired { not_after, now }) if from < 0 => {
                assert!(not_after < now, "{message}");
            }
            Some(TlsProblem::NotYetValid { not_before, now }) if from > 0 => {
                assert!(not_before > now, "{message}");
            }
            other => panic!("{other:?}: {message}"),
        }
        // The dates, as RFC 3339: "... expired at 2026-11-30T12:00:00Z (it is ...".
        let year = OffsetDateTime::now_utc().year().to_string();
        assert!(message.contains(what), "{message}");
        assert!(message.contains(&format!("Z (it is {year}")), "{message}");
    }
}

/// wss:// to a plain relay, and ws:// to a TLS one: the message gives the right URL.
#[tokio::test]
async fn a_url_whose_scheme_does_not_match_the_server() {
    let pem = Pem::new();
    let (issuer, ca_pem) = ca("CA");
    let ca_path = pem.write("ca.pem", &ca_pem);
    let (plain, _) = support::relay(Config::ephemeral()).await;
    let wss = plain.replace("ws://", "wss://");
    let err = refused(&wss, &ca_path, ConnectStage::Tls).await;
    assert_eq!(
        err.tls_problem(),
        Some(&TlsProblem::PlainServer),
        "{err} / {:?}",
        std::error::Error::source(&err)
    );
    assert!(
        err.to_string().ends_with(&format!(
            "the server did not answer in TLS (it answered in plain text or hung up): it is a ws:// server; use {plain}"
        )),
        "{err}"
    );

    let (cert, key) = leaf(&issuer, &["localhost"], -1, 30);
    let tls_url = relay(&pem, &cert, &key).await;
    let ws = tls_url.replace("wss://", "ws://");
    let err = refused(&ws, &ca_path, ConnectStage::WebSocket).await;
    assert_eq!(err.tls_problem(), Some(&TlsProblem::TlsServer));
    assert!(
        err.to_string().ends_with(&format!(
            "the server answered with TLS: it is a wss:// server; use {tls_url}"
        )),
        "{err}"
    );
}
