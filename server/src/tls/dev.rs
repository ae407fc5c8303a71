//! `compendium-server --tls-self-signed DIR`: `wss://` on a LAN in one step.
//!
//! A phone and a PC on the same network are the protocol's whole point, and neither has a
//! public name to get a certificate for. So the server makes a small private CA
//! (`ca.pem`, the one file clients are told to trust) and a certificate it signs for this
//! machine's names (`cert.pem`, `key.pem`). Unlike the one-certificate recipe most guides
//! give, the served certificate is a leaf (CA:FALSE, serverAuth, names in subjectAltName),
//! which rustls, Python's `ssl`, `websockets` and browsers all accept once `ca.pem` is
//! trusted. The files are kept: a restart reuses them, so a phone that trusts `ca.pem`
//! keeps trusting the server; the leaf alone is re-issued (by the same CA) when a name is
//! missing or it is within 30 days of expiring.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::CertificateInfo;
use crate::config::TlsFiles;

/// How long the CA is valid.
const CA_DAYS: i64 = 5 * 365;
/// How long a leaf is valid (Apple platforms refuse longer for TLS server certificates).
const LEAF_DAYS: i64 = 365;
/// A leaf with less than this left is re-issued at startup.
const REISSUE_WITHIN: Duration = Duration::from_secs(30 * 24 * 3600);

/// What `--tls-self-signed` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Made a new CA and certificate: clients must be given the new `ca.pem`.
    Created,
    /// Used the certificate already there.
    Reused,
    /// Kept the CA, issued a new certificate (a name was missing, or it expires soon).
    Reissued,
}

/// A development certificate, ready to serve.
#[derive(Debug, Clone)]
pub struct DevCertificate {
    /// What the server serves (`cert.pem` holds the leaf, then the CA).
    pub files: TlsFiles,
    /// The file clients must trust.
    pub ca: PathBuf,
    /// The names the certificate is valid for.
    pub names: Vec<String>,
    /// Valid until.
    pub not_after: SystemTime,
    /// What was done.
    pub outcome: Outcome,
}

/// Make sure `dir` holds a CA and a certificate valid for `names`, creating or re-issuing
/// what is missing.
///
/// # Errors
/// If a file cannot be read or written (the message names it), or the files there are not
/// a CA and key this function made.
pub fn ensure(dir: &Path, names: &[String]) -> Result<DevCertificate, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let ca = dir.join("ca.pem");
    let ca_key = dir.join("ca-key.pem");
    let files = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    let (issuer, mut outcome) = if ca.exists() && ca_key.exists() {
        let key = KeyPair::from_pem(&read(&ca_key)?).map_err(|e| {
            format!(
                "{}: not a private key this server made ({e})",
                ca_key.display()
            )
        })?;
        let issuer = Issuer::from_ca_cert_pem(&read(&ca)?, key).map_err(|e| {
            format!(
                "{}: not a CA certificate this server made ({e})",
                ca.display()
            )
        })?;
        (issuer, Outcome::Reused)
    } else {
        let (params, key) = ca_params()?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| format!("making the development CA: {e}"))?;
        write(&ca, &cert.pem(), false)?;
        write(&ca_key, &key.serialize_pem(), true)?;
        (Issuer::new(params, key), Outcome::Created)
    };
    let current = match (outcome, leaf_info(&files.cert)) {
        (Outcome::Reused, Some(info))
            if names.iter().all(|n| info.names.contains(n))
                && info
                    .not_after
                    .duration_since(SystemTime::now())
                    .is_ok_and(|left| left > REISSUE_WITHIN)
                && files.key.exists() =>
        {
            Some(info)
        }
        _ => None,
    };
    let info = match current {
        Some(info) => info,
        None => {
            if outcome == Outcome::Reused {
                outcome = Outcome::Reissued;
            }
            issue_leaf(&issuer, names, &files, &read(&ca)?)?
        }
    };
    Ok(DevCertificate {
        files,
        ca,
        names: info.names,
        not_after: info.not_after,
        outcome,
    })
}

/// The names a development certificate should cover by default: loopback, this machine's
/// host name (and `NAME.local`, as phones resolve it with mDNS), its address on the
/// network it routes through, and the listen addresses that name one interface.
#[must_use]
pub fn default_names(listen: &[SocketAddr]) -> Vec<String> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if let Some(host) = host_name() {
        if !host.contains('.') {
            names.push(format!("{host}.local"));
        }
        names.insert(1, host);
    }
    let mut ips: Vec<IpAddr> = listen
        .iter()
        .map(SocketAddr::ip)
        .filter(|ip| !ip.is_unspecified() && !ip.is_loopback())
        .collect();
    ips.extend(lan_address());
    for ip in ips {
        let ip = ip.to_string();
        if !names.contains(&ip) {
            names.push(ip);
        }
    }
    names
}

fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())?;
    let name = name.trim().to_owned();
    // Only a name a certificate can carry (a host name may hold characters DNS does not).
    let usable = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    (usable && !name.is_empty() && name != "localhost").then_some(name)
}

/// The local address of the route to a documentation-only address (RFC 5737): the
/// machine's LAN address. Connecting a UDP socket sends nothing.
fn lan_address() -> Option<IpAddr> {
    let socket = UdpSocket::bind(("0.0.0.0", 0)).ok()?;
    socket.connect(("192.0.2.1", 9)).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified() && !ip.is_loopback()).then_some(ip)
}

fn ca_params() -> Result<(CertificateParams, KeyPair), String> {
    let key = KeyPair::generate().map_err(|e| format!("making a key: {e}"))?;
    let mut params = CertificateParams::default();
    let host = host_name().unwrap_or_else(|| "this machine".to_owned());
    // Dated, so that a CA made again is told apart from the one a client trusts.
    let made = compendium_cli_support::rfc3339(SystemTime::now());
    params.distinguished_name.push(
        DnType::CommonName,
        format!("Compendium development CA ({host}, {made})"),
    );
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(CA_DAYS);
    Ok((params, key))
}

fn issue_leaf(
    issuer: &Issuer<'_, KeyPair>,
    names: &[String],
    files: &TlsFiles,
    ca_pem: &str,
) -> Result<CertificateInfo, String> {
    let mut params = CertificateParams::new(names.to_vec())
        .map_err(|e| format!("a certificate for {names:?}: {e}"))?;
    params.distinguished_name.push(
        DnType::CommonName,
        names
            .first()
            .cloned()
            .unwrap_or_else(|| "localhost".to_owned()),
    );
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(LEAF_DAYS);
    let key = KeyPair::generate().map_err(|e| format!("making a key: {e}"))?;
    let cert = params
        .signed_by(&key, issuer)
        .map_err(|e| format!("signing the certificate: {e}"))?;
    // The chain, leaf first: clients that were given only the CA still build the path.
    write(&files.cert, &format!("{}{ca_pem}", cert.pem()), false)?;
    write(&files.key, &key.serialize_pem(), true)?;
    CertificateInfo::of(cert.der())
}

/// What the leaf at `path` says, if there is a readable one.
fn leaf_info(path: &Path) -> Option<CertificateInfo> {
    let der = CertificateDer::pem_file_iter(path).ok()?.next()?.ok()?;
    CertificateInfo::of(&der).ok().filter(|info| !info.is_ca)
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))
}

/// Write `text` to `path`, readable by the owner only if `secret`.
fn write(path: &Path, text: &str, secret: bool) -> Result<(), String> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    options
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .map_err(|e| format!("writing {}: {e}", path.display()))
}
