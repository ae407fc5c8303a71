//! What a certificate says about itself: the names it is valid for, when, and whether it is
//! a CA certificate — for the expiry metric, the log, and warnings at startup about
//! certificates that clients will refuse.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use compendium_cli_support::rfc3339;
use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// What the serving certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// Valid from.
    pub not_before: SystemTime,
    /// Valid until: renew before.
    pub not_after: SystemTime,
    /// Its DNS names and IP addresses (subjectAltName), which clients check the host
    /// against.
    pub names: Vec<String>,
    /// Marked as a CA certificate (basicConstraints CA:TRUE). rustls-based clients (ours
    /// among them) refuse such a certificate as a server's own.
    pub is_ca: bool,
}

/// Renewal is due when less than this is left (ACME clients renew with 30 days left).
const RENEW_WITHIN: Duration = Duration::from_secs(14 * 24 * 3600);

fn time(asn1: x509_parser::time::ASN1Time) -> SystemTime {
    let seconds = asn1.timestamp();
    match u64::try_from(seconds) {
        Ok(after) => UNIX_EPOCH + Duration::from_secs(after),
        Err(_) => UNIX_EPOCH - Duration::from_secs(seconds.unsigned_abs()),
    }
}

impl CertificateInfo {
    /// Read a DER certificate.
    ///
    /// # Errors
    /// If it is not a parseable X.509 certificate.
    pub fn of(der: &CertificateDer<'_>) -> Result<Self, String> {
        let (_, cert) = X509Certificate::from_der(der.as_ref())
            .map_err(|e| format!("not a readable X.509 certificate ({e})"))?;
        let validity = cert.validity();
        let names = match cert.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                    GeneralName::IPAddress(bytes) => ip(bytes),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let is_ca = matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
        Ok(Self {
            not_before: time(validity.not_before),
            not_after: time(validity.not_after),
            names,
            is_ca,
        })
    }

    /// `not_after` in seconds since the Unix epoch (the metric's value).
    #[must_use]
    pub fn not_after_unix(&self) -> i64 {
        compendium_cli_support::unix_seconds(self.not_after)
    }

    /// What clients will object to at `now`, each said so that an operator can act.
    #[must_use]
    pub fn warnings(&self, now: SystemTime) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.is_ca {
            warnings.push(
                "it is a CA certificate (basicConstraints CA:TRUE): rustls-based clients, \
                 this project's among them, refuse it as a server certificate (browsers and \
                 Python may not). Make a leaf certificate: add \
                 `-addext basicConstraints=critical,CA:FALSE` to the openssl command, or use \
                 `compendium-server --tls-self-signed DIR`"
                    .to_owned(),
            );
        }
        if now < self.not_before {
            warnings.push(format!(
                "it is not valid yet: valid from {}",
                rfc3339(self.not_before)
            ));
        } else if now > self.not_after {
            warnings.push(format!(
                "it expired at {}: clients refuse it",
                rfc3339(self.not_after)
            ));
        } else if self.not_after.duration_since(now).unwrap_or_default() < RENEW_WITHIN {
            warnings.push(format!(
                "it expires at {}: renew it (and send SIGHUP)",
                rfc3339(self.not_after)
            ));
        }
        if self.names.is_empty() {
            warnings.push(
                "it has no subjectAltName: clients match the host only against those, so \
                 every client will refuse it"
                    .to_owned(),
            );
        }
        warnings
    }
}

/// A subjectAltName IP address as text.
fn ip(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes)
            .ok()
            .map(|b| std::net::Ipv4Addr::from(b).to_string()),
        16 => <[u8; 16]>::try_from(bytes)
            .ok()
            .map(|b| std::net::Ipv6Addr::from(b).to_string()),
        _ => None,
    }
}
