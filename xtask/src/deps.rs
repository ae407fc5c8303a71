//! The dependency policy, as a test: no crate in two semver-incompatible versions unless
//! it is listed here with the reason (docs/dependencies.md).

/// Crates allowed in more than one incompatible version, and why.
const ALLOWED_DUPLICATES: &[(&str, &str)] = &[
    (
        "getrandom",
        "0.2 via ring (TLS), 0.3 via ahash (jsonschema) and the server, 0.4 via rand \
         (tungstenite) and tempfile; no single version serves them all",
    ),
    (
        "syn",
        "2 for serde_derive, schemars_derive and strum_macros, 3 for clap_derive, \
         futures-macro and prettyplease; build time only",
    ),
    ("winnow", "toml 0.9 itself uses both (xtask only)"),
    (
        "bit-set",
        "fancy-regex (jsonschema) and proptest (tests only) pin different versions",
    ),
    ("bit-vec", "with bit-set"),
    (
        "base64",
        "0.22 via async-nats (cluster mode), 0.23 via rcgen's pem (tests only)",
    ),
    (
        "rand",
        "0.8 via nkeys (async-nats's credentials-file support, cluster mode), 0.10 via \
         async-nats itself, tungstenite and proptest",
    ),
    ("rand_core", "with rand"),
    (
        "digest",
        "two generations of RustCrypto: 0.10 via nkeys' ed25519 (credentials files, cluster \
         mode), 0.11 via sha1 in tungstenite; nothing newer of nkeys exists",
    ),
    (
        "crypto-common",
        "with digest; aes 0.8 (cluster addresses) is on the 0.1 generation too",
    ),
    ("block-buffer", "with digest"),
    ("const-oid", "with digest (nkeys' pkcs8 vs sha1)"),
    ("cpufeatures", "with digest and aes 0.8"),
    (
        "synstructure",
        "0.13 via asn1-rs-derive (x509-parser: the TLS certificate's expiry and the \
         development CA, server), 0.14 via yoke-derive (url); build time only",
    ),
];

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::process::Command;

    use super::ALLOWED_DUPLICATES;

    /// "1.2.3" → "1", "0.4.1" → "0.4", "0.0.3" → "0.0.3": what semver calls compatible.
    fn compatibility(version: &str) -> String {
        let parts: Vec<&str> = version.split(['.', '-', '+']).take(3).collect();
        match parts.as_slice() {
            ["0", "0", patch, ..] => format!("0.0.{patch}"),
            ["0", minor, ..] => format!("0.{minor}"),
            [major, ..] => (*major).to_owned(),
            [] => version.to_owned(),
        }
    }

    #[test]
    fn no_unexplained_duplicate_dependencies() {
        // `cargo tree -d` sees what is really built (features resolved, this platform),
        // unlike the lock file, which also lists optional crates nobody enables.
        let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(crate::project_root())
            .args(["tree", "--workspace", "--locked", "--duplicates"])
            .args(["--depth", "0", "--prefix", "none", "-e", "normal,build,dev"])
            .output()
            .expect("cargo tree");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut versions: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let mut words = line.split_whitespace();
            let (Some(name), Some(version)) = (words.next(), words.next()) else {
                continue;
            };
            versions
                .entry(name.to_owned())
                .or_default()
                .insert(compatibility(version.trim_start_matches('v')));
        }
        for (name, found) in &versions {
            assert!(
                found.len() > 1,
                "{name} is built twice in semver-compatible versions {found:?}: run cargo update"
            );
        }
        let duplicated: BTreeSet<&str> = versions.keys().map(String::as_str).collect();
        let allowed: BTreeSet<&str> = ALLOWED_DUPLICATES.iter().map(|(name, _)| *name).collect();
        let unexplained: Vec<_> = duplicated.difference(&allowed).collect();
        assert!(
            unexplained.is_empty(),
            "in several incompatible versions, with no reason in xtask/src/deps.rs: \
             {unexplained:?} ({versions:?})"
        );
        let stale: Vec<_> = allowed.difference(&duplicated).collect();
        assert!(
            stale.is_empty(),
            "no longer duplicated; remove from ALLOWED_DUPLICATES: {stale:?}"
        );
    }

    #[test]
    fn compatibility_follows_semver() {
        assert_eq!(compatibility("1.2.3"), "1");
        assert_eq!(compatibility("0.4.1"), "0.4");
        assert_eq!(compatibility("0.0.3"), "0.0.3");
        assert_eq!(compatibility("0.9.12+spec-1.1.0"), "0.9");
    }
}
