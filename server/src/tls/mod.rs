//! `wss://`: the certificate and key (rustls with the ring provider: no C toolchain),
//! re-read without a restart, and what the certificate says about itself.
//!
//! Every handshake asks [`Reloadable`] for the certificate, so a reload swaps what new
//! handshakes get while open connections keep the session they made. A reload that fails
//! (a missing file, a key that does not match) changes nothing.

pub mod dev;
mod inspect;

use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;
pub use inspect::CertificateInfo;

/// The serving certificate, swappable while handshakes read it.
#[derive(Debug)]
struct Reloadable(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Reloadable {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self
                .0
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        ))
    }
}

/// The TLS side of a `wss://` server: its files, the acceptor, and the certificate in use.
pub(crate) struct Tls {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: Arc<Reloadable>,
    /// What the certificate in use says (its expiry, names).
    info: RwLock<CertificateInfo>,
    pub(crate) acceptor: TlsAcceptor,
}

impl Tls {
    /// Load the PEM files, or say which file is wrong and how.
    pub(crate) fn load(files: &TlsFiles) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (key, info) = read(files, &provider)?;
        let current = Arc::new(Reloadable(RwLock::new(key)));
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS configuration: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&current) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            files: files.clone(),
            provider,
            current,
            info: RwLock::new(info),
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Read the files again; if they make a usable pair, new handshakes get it from now on.
    pub(crate) fn reload(&self) -> Result<CertificateInfo, String> {
        let (key, info) = read(&self.files, &self.provider)?;
        *self
            .current
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = key;
        *self
            .info
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = info.clone();
        Ok(info)
    }

    /// What the certificate in use says.
    pub(crate) fn info(&self) -> CertificateInfo {
        self.info
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The files, for messages.
    pub(crate) fn files(&self) -> &TlsFiles {
        &self.files
    }
}

/// The certificate chain and key of `files` as rustls serves them, and what the leaf says.
fn read(
    files: &TlsFiles,
    provider: &CryptoProvider,
) -> Result<(Arc<CertifiedKey>, CertificateInfo), String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(Iterator::collect)
        .map_err(|e| format!("reading certificates from {}: {e}", files.cert.display()))?;
    let Some(leaf) = certs.first() else {
        return Err(format!(
            "no PEM certificate found in {}",
            files.cert.display()
        ));
    };
    let info = CertificateInfo::of(leaf)
        .map_err(|e| format!("the first certificate in {}: {e}", files.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("reading the private key from {}: {e}", files.key.display()))?;
    let pair_error = |e: rustls::Error| {
        format!(
            "certificate {} and key {} do not make a usable pair: {e}",
            files.cert.display(),
            files.key.display()
        )
    };
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(pair_error)?;
    let certified = CertifiedKey::new(certs, signing);
    certified.keys_match().map_err(pair_error)?;
    Ok((Arc::new(certified), info))
}
