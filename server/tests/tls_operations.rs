//! Running `wss://` as an operator does, with the relay binary: certificates renewed and
//! reloaded on SIGHUP without dropping a connection, a bad renewal that changes nothing,
//! the expiry metric, and a development certificate in one step.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use support::PATIENCE;
use support::process::Relay;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as Frame;

type Wss = WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// A CA named `name`, its certificate as PEM.
fn ca(name: &str) -> (Issuer<'static, KeyPair>, String) {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("CA");
    (Issuer::new(params, key), cert.pem())
}

/// A certificate for localhost valid for `days`: (cert PEM, key PEM, expiry as Unix time).
fn leaf(issuer: &Issuer<'_, KeyPair>, days: i64) -> (String, String, i64) {
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("names");
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("now");
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(days);
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, issuer).expect("sign");
    (
        cert.pem(),
        key.serialize_pem(),
        params.not_after.unix_timestamp(),
    )
}

/// Replace `path` the way renewal tools do: write a new file, rename it over the old one.
fn replace(path: &Path, text: &str) {
    let new = path.with_extension("new");
    std::fs::write(&new, text).expect("write");
    std::fs::rename(&new, path).expect("rename");
}

/// Open `wss://` to `url`'s port, checking the certificate for `name` against `trust` (PEM)
/// with rustls, as strictly as a browser.
async fn wss(url: &str, name: &str, trust: &str) -> Result<Wss, String> {
    let addr = url.trim_start_matches("wss://");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(trust.as_bytes()) {
        roots.add(cert.expect("PEM")).expect("root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(name.to_owned()).expect("name"), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (ws, _) = tokio_tungstenite::client_async(format!("wss://{name}/"), tls)
        .await
        .map_err(|e| e.to_string())?;
    Ok(ws)
}

async fn next_text(ws: &mut Wss) -> serde_json::Value {
    match tokio::time::timeout(PATIENCE, ws.next()).await {
        Ok(Some(Ok(Frame::Text(t)))) => serde_json::from_str(t.as_str()).expect("JSON"),
        other => panic!("{other:?}"),
    }
}

async fn init(ws: &mut Wss) -> String {
    ws.send(Frame::text(r#"{"type":"INIT"}"#))
        .await
        .expect("send");
    next_text(ws).await["EpheWssAddr"]
        .as_str()
        .expect("address")
        .to_owned()
}

/// `from` routes to `to` (whose address is `addr`), which receives it.
async fn relays(from: &mut Wss, to: &mut Wss, addr: &str, n: u32) {
    from.send(Frame::text(format!(
        r#"{{"type":"ROUTE","EpheWssAddr":"{addr}","msg":{{"n":{n}}}}}"#
    )))
    .await
    .expect("send");
    assert_eq!(next_text(to).await["msg"]["n"], n);
}

fn metric(relay: &Relay, name: &str) -> String {
    let text = relay.metrics_text().expect("metrics");
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_and_keeps_open_connections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let (old_ca, old_ca_pem) = ca("old CA");
    let (old_cert, old_key, old_expiry) = leaf(&old_ca, 30);
    std::fs::write(&cert, old_cert).expect("write");
    std::fs::write(&key, old_key).expect("write");
    let mut relay = support::process::relay(&[
        "--tls-cert",
        &cert.display().to_string(),
        "--tls-key",
        &key.display().to_string(),
    ]);
    let url = relay.url().to_owned();
    let expiry = "compendium_tls_certificate_expiry_timestamp_seconds";
    assert_eq!(metric(&relay, expiry), old_expiry.to_string());

    let mut old = wss(&url, "localhost", &old_ca_pem).await.expect("old CA");
    let old_addr = init(&mut old).await;

    // Renewed by another CA, so which certificate a handshake gets is unmistakable.
    let (new_ca, new_ca_pem) = ca("new CA");
    let (new_cert, new_key, new_expiry) = leaf(&new_ca, 90);
    replace(&key, &new_key);
    replace(&cert, &new_cert);
    relay.process.signal("HUP").expect("SIGHUP");
    let line = relay
        .process
        .wait_for_line("tls_reloaded", PATIENCE)
        .expect("reloaded");
    assert!(line.contains(&cert.display().to_string()), "{line}");

    let err = wss(&url, "localhost", &old_ca_pem)
        .await
        .expect_err("the old certificate is no longer served");
    assert!(err.contains("UnknownIssuer"), "{err}");
    let mut new = wss(&url, "localhost", &new_ca_pem).await.expect("new CA");
    let new_addr = init(&mut new).await;
    // The connection made before the reload relays both ways.
    relays(&mut new, &mut old, &old_addr, 1).await;
    relays(&mut old, &mut new, &new_addr, 2).await;
    assert_eq!(metric(&relay, expiry), new_expiry.to_string());
    assert_eq!(
        metric(&relay, "compendium_tls_reloads_total{result=\"ok\"}"),
        "1"
    );

    // A broken renewal: logged with the file's name, and nothing changes.
    replace(&cert, "not a certificate\n");
    relay.process.signal("HUP").expect("SIGHUP");
    let line = relay
        .process
        .wait_for_line("tls_reload_failed", PATIENCE)
        .expect("the failure is logged");
    assert!(
        line.contains(&format!("no PEM certificate found in {}", cert.display())),
        "{line}"
    );
    assert!(
        line.contains("still serving the previous certificate"),
        "{line}"
    );
    let mut third = wss(&url, "localhost", &new_ca_pem)
        .await
        .expect("the previous certificate is still served");
    init(&mut third).await;
    relays(&mut old, &mut new, &new_addr, 3).await;
    assert_eq!(metric(&relay, expiry), new_expiry.to_string());
    assert_eq!(
        metric(&relay, "compendium_tls_reloads_total{result=\"failed\"}"),
        "1"
    );
    drop((old, new, third));
    assert_eq!(relay.process.terminate().expect("stops").code(), Some(0));
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The line the relay printed before it was ready that contains `what`.
fn said(relay: &mut Relay, what: &str) -> String {
    relay
        .process
        .lines()
        .iter()
        .find(|line| line.contains(what))
        .unwrap_or_else(|| panic!("nothing says {what:?}"))
        .clone()
}

fn self_signed_relay(dir: &Path, names: &[&str]) -> Relay {
    let mut args = vec!["--tls-self-signed".to_owned(), dir.display().to_string()];
    for name in names {
        args.extend(["--tls-name".to_owned(), (*name).to_owned()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    support::process::relay(&args)
}

/// `--tls-self-signed DIR`: one command gives a wss:// relay that a strict client trusting
/// DIR/ca.pem accepts by name and by address; later runs keep the CA (a phone that trusts
/// it keeps trusting the relay) and re-issue the certificate only for new names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_development_certificate_in_one_step() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca: PathBuf = dir.path().join("ca.pem");
    let mut relay = self_signed_relay(dir.path(), &[]);
    let told = said(&mut relay, "Clients must trust");
    assert!(
        told.ends_with(&format!("Clients must trust {}:", ca.display())),
        "{told}"
    );
    let ca_pem = read(&ca);
    for name in ["localhost", "127.0.0.1"] {
        let mut ws = wss(relay.url(), name, &ca_pem).await.expect(name);
        init(&mut ws).await;
    }
    #[cfg(unix)]
    for secret in ["key.pem", "ca-key.pem"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(secret))
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{secret}");
    }
    relay.process.terminate().expect("stops");

    let mut relay = self_signed_relay(dir.path(), &[]);
    said(&mut relay, "using the development certificate");
    relay.process.terminate().expect("stops");

    let mut relay = self_signed_relay(dir.path(), &["relay.example"]);
    said(&mut relay, "issued a new development certificate (same CA");
    assert_eq!(read(&ca), ca_pem, "the CA stays");
    let mut ws = wss(relay.url(), "relay.example", &ca_pem)
        .await
        .expect("the new name");
    init(&mut ws).await;
}

/// A certificate that clients will refuse is served (some clients accept it), but the log
/// says why at startup, naming the file and the fix.
#[test]
fn certificates_clients_refuse_are_warned_about_at_startup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("names");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(30);
    params.not_after = now - time::Duration::days(1);
    let key = KeyPair::generate().expect("key");
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, params.self_signed(&key).expect("cert").pem()).expect("write");
    std::fs::write(&key_path, key.serialize_pem()).expect("write");
    let mut relay = support::process::relay(&[
        "--tls-cert",
        &cert_path.display().to_string(),
        "--tls-key",
        &key_path.display().to_string(),
    ]);
    let ca = said(
        &mut relay,
        "it is a CA certificate (basicConstraints CA:TRUE)",
    );
    assert!(
        ca.contains("WARN") && ca.contains(&cert_path.display().to_string()),
        "{ca}"
    );
    assert!(
        ca.contains("-addext basicConstraints=critical,CA:FALSE"),
        "{ca}"
    );
    let expired = said(&mut relay, "it expired at ");
    assert!(expired.contains("clients refuse it"), "{expired}");
}
