//! What went wrong in a TLS handshake, said so that a person can act on it.
//!
//! rustls reports a refused certificate as an enum (`Other(OtherError(CaUsedAsEndEntity))`),
//! which names the check, not the fix. [`TlsProblem`] is the same verdict for the mistakes
//! people actually make — a CA certificate served as the server's own (what the usual
//! one-line openssl recipe produces), a CA the client was not given, a name the certificate
//! does not cover, dates, and a URL whose scheme does not match the server — and
//! [`TlsProblem::advice`] says what to do about each.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::{CertificateError, Error as TlsError, InvalidMessage};
use rustls_pki_types::UnixTime;

use compendium_cli_support::rfc3339;

use crate::connect::Trust;

/// A TLS problem a person can fix, found when opening a connection
/// ([`ConnectError::tls_problem`](crate::ConnectError::tls_problem)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsProblem {
    /// The server presents a CA certificate (basicConstraints CA:TRUE) as its own, as
    /// `openssl req -x509` makes by default. Browsers and Python may accept it; rustls,
    /// and so this client, does not.
    CaCertificateAsServerCertificate,
    /// The certificate is not signed by a CA this client trusts.
    UnknownIssuer,
    /// The certificate does not cover the host in the URL.
    NameMismatch {
        /// The host asked for.
        host: String,
        /// The names the certificate covers.
        names: Vec<String>,
    },
    /// The certificate has expired.
    Expired {
        /// When it expired.
        not_after: SystemTime,
        /// The time this client checked it at.
        now: SystemTime,
    },
    /// The certificate is not valid yet.
    NotYetValid {
        /// When it becomes valid.
        not_before: SystemTime,
        /// The time this client checked it at.
        now: SystemTime,
    },
    /// A `wss://` URL, but the server answered in plain text, or hung up without a TLS
    /// answer (as a `ws://` relay does when a TLS hello arrives): a `ws://` server.
    PlainServer,
    /// A `ws://` URL, but the server answered with TLS: a `wss://` server.
    TlsServer,
    /// Another certificate problem, as rustls describes it.
    OtherCertificate(String),
}

/// rustls presents names as `DnsName("relay.example")` and `IpAddress(192.0.2.7)`; a
/// person wants `relay.example` and `192.0.2.7`.
fn plain_name(presented: &str) -> String {
    let inner = presented
        .strip_prefix("DnsName(\"")
        .and_then(|rest| rest.strip_suffix("\")"))
        .or_else(|| {
            presented
                .strip_prefix("IpAddress(")
                .and_then(|rest| rest.strip_suffix(')'))
        });
    inner.unwrap_or(presented).to_owned()
}

fn system_time(t: UnixTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(t.as_secs())
}

impl TlsProblem {
    /// The problem behind a failed TLS handshake with `host`, if it is one of these.
    pub(crate) fn of_handshake(err: &std::io::Error, host: &str) -> Option<Self> {
        // A TLS server answers a hello, if only with an alert; hanging up on it is what a
        // plain server does with bytes it cannot parse.
        if err.kind() == std::io::ErrorKind::UnexpectedEof {
            return Some(Self::PlainServer);
        }
        let tls = err.get_ref()?.downcast_ref::<TlsError>()?;
        Some(match tls {
            TlsError::InvalidCertificate(cert) => match cert {
                // BadSignature: a trusted CA has the issuer's name but did not sign it (a CA
                // made again under the same name, say).
                CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                    Self::UnknownIssuer
                }
                CertificateError::NotValidForNameContext { presented, .. } => Self::NameMismatch {
                    host: host.to_owned(),
                    names: presented.iter().map(|n| plain_name(n)).collect(),
                },
                CertificateError::ExpiredContext { time, not_after } => Self::Expired {
                    not_after: system_time(*not_after),
                    now: system_time(*time),
                },
                CertificateError::NotValidYetContext { time, not_before } => Self::NotYetValid {
                    not_before: system_time(*not_before),
                    now: system_time(*time),
                },
                CertificateError::Other(other)
                    if matches!(
                        other.0.downcast_ref::<webpki::Error>(),
                        Some(webpki::Error::CaUsedAsEndEntity)
                    ) =>
                {
                    Self::CaCertificateAsServerCertificate
                }
                other => Self::OtherCertificate(format!("{other:?}")),
            },
            // The first bytes back were not a TLS record: HTTP, from a plain server.
            TlsError::InvalidMessage(InvalidMessage::InvalidContentType) => Self::PlainServer,
            _ => return None,
        })
    }

    /// What is wrong and what to do, for a connection to `url`, trusting `trust`.
    pub(crate) fn advice(&self, url: &str, trust: &Trust) -> String {
        match self {
            Self::CaCertificateAsServerCertificate => "the server's certificate is a CA \
                certificate (basicConstraints CA:TRUE), which this client (rustls) does not \
                accept as a server's own certificate. Give the server a leaf certificate: add \
                `-addext basicConstraints=critical,CA:FALSE` to the `openssl req -x509` \
                command, or run `compendium-server --tls-self-signed DIR` and trust DIR/ca.pem \
                (docs/security.md)"
                .to_owned(),
            Self::UnknownIssuer => match trust {
                Trust::CaFile(path) => format!(
                    "the server's certificate is not signed by the CA in {} (nor is it that \
                     certificate; a CA of the same name made again is a different CA): pass \
                     the certificate of the CA that signed it with --ca-cert (with \
                     --tls-self-signed DIR, that is DIR/ca.pem)",
                    path.display()
                ),
                Trust::WebPki => "the server's certificate is not signed by a publicly \
                    trusted CA: for a private CA or a self-signed certificate, pass its CA's \
                    certificate with --ca-cert (ClientBuilder::ca_cert)"
                    .to_owned(),
            },
            Self::NameMismatch { host, names } => format!(
                "the server's certificate is valid for {} but not for {host:?}: connect with \
                 one of those names, or issue a certificate that covers {host:?} in its \
                 subjectAltName (with --tls-self-signed: --tls-name {host})",
                if names.is_empty() {
                    "no name at all (it has no subjectAltName)".to_owned()
                } else {
                    names.join(", ")
                }
            ),
            Self::Expired { not_after, now } => format!(
                "the server's certificate expired at {} (it is {} here): the server must \
                 renew it (compendium-server reloads renewed files on SIGHUP)",
                rfc3339(*not_after),
                rfc3339(*now)
            ),
            Self::NotYetValid { not_before, now } => format!(
                "the server's certificate is valid only from {} (it is {} here): check this \
                 machine's clock, and the date the certificate was issued for",
                rfc3339(*not_before),
                rfc3339(*now)
            ),
            Self::PlainServer => format!(
                "the server did not answer in TLS (it answered in plain text or hung up): it \
                 is a ws:// server; use {}",
                url.replacen("wss://", "ws://", 1)
            ),
            Self::TlsServer => format!(
                "the server answered with TLS: it is a wss:// server; use {}",
                url.replacen("ws://", "wss://", 1)
            ),
            Self::OtherCertificate(what) => format!("the server's certificate is refused: {what}"),
        }
    }
}
