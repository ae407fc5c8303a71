//! `cargo xtask check-vendor`: prove `messages/` builds and works as a vendored copy.
//!
//! `cargo package` would resolve workspace inheritance and so prove nothing; the only real
//! proof is a plain copy of the folder, outside the repository, used by path from a crate
//! that is its own workspace.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::project_root;

const APP_MANIFEST: &str = r#"[package]
name = "vendor-check"
version = "0.0.0"
edition = "2024"
publish = false

[workspace]

[dependencies]
compendium-messages = { path = "../compendium-messages" }

# Only whether it builds and runs matters; debug info would only take disk.
[profile.dev]
debug = false
"#;

const APP_MAIN: &str = r##"use compendium_messages::{Address, Message, Payload};

fn main() {
    let to: Address = "00112233445566778899aabbccddeeff".parse().expect("address");
    let sent = Message::route(to, Payload::from_json(r#"{"hello": "vendored"}"#).expect("payload"));
    let parsed = Message::parse(&sent.to_json()).expect("parse");
    assert_eq!(parsed, sent);
    let err = Message::parse(r#"{"type":"INIT","extra":1}"#).expect_err("extra member rejected");
    println!("vendored compendium-messages works: {} / rejected: {err}", parsed.to_json());
}
"##;

pub(crate) fn run() -> Result<()> {
    let root = project_root();
    let scratch = tempfile::Builder::new()
        .prefix("compendium-vendor-check-")
        .tempdir()
        .context("creating a temporary directory")?;
    let vendored = scratch.path().join("compendium-messages");
    copy_dir(&root.join("messages"), &vendored)?;
    // A vendored crate must not reach back into the repository.
    let manifest = fs::read_to_string(vendored.join("Cargo.toml"))?;
    if manifest.contains("workspace = true") || manifest.contains(".workspace") {
        bail!("messages/Cargo.toml inherits from the workspace; a vendored copy cannot");
    }

    let app = scratch.path().join("app");
    fs::create_dir_all(app.join("src"))?;
    fs::write(app.join("Cargo.toml"), APP_MANIFEST)?;
    fs::write(app.join("src/main.rs"), APP_MAIN)?;
    // Start from the workspace's lock file so the check builds the dependency versions we
    // ship; cargo prunes the entries this small crate does not use.
    fs::copy(root.join("Cargo.lock"), app.join("Cargo.lock")).context("copying Cargo.lock")?;

    eprintln!(
        "building a copy of messages/ in {}",
        scratch.path().display()
    );
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&app)
        // Reuse compiled dependencies between runs; the vendored crate is still rebuilt
        // from its copy (a different path is a different package).
        .env("CARGO_TARGET_DIR", root.join("target/vendor-check"))
        .args(["run", "--quiet"])
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("the vendored copy of messages/ failed to build or run ({status})");
    }
    if vendored.join("target").exists() {
        bail!("building the vendored copy wrote into it");
    }
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        if name == "target" {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&name));
        if entry.file_type()?.is_dir() {
            copy_dir(&src, &dst)?;
        } else {
            fs::copy(&src, &dst).with_context(|| format!("copying {}", src.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The vendoring promise, checked by plain `cargo test` too (CI also runs
    /// `cargo xtask check-vendor`, after which this is a cached rebuild).
    #[test]
    fn vendored_copy_builds_and_parses() {
        if let Err(err) = super::run() {
            panic!("{err:#}");
        }
    }
}
