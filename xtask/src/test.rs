//! `cargo xtask test`: provision what the tests need, then run them all.
//!
//! The cluster tests run a real `nats-server` (never a mock). When there is none, this
//! installs Debian's package (2.9.10, the oldest version we support) with apt-get, as
//! root or through sudo; elsewhere it stops and says how to install one. Then it runs
//! `cargo test --workspace` with any extra arguments given, and the Python package's
//! checks (`crate::python`).

use std::process::Command;

use anyhow::{Context, Result, bail};

pub(crate) fn run(args: &[String]) -> Result<()> {
    provision_nats_server()?;
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(crate::project_root())
        .args(["test", "--workspace"])
        .args(args)
        .status()
        .context("running cargo test")?;
    if !status.success() {
        bail!("cargo test --workspace failed ({status})");
    }
    crate::python::run()
}

/// Make sure `nats-server` can be found, installing it if need be.
pub(crate) fn provision_nats_server() -> Result<()> {
    if let Ok(path) = compendium_harness::nats_server_binary() {
        eprintln!("xtask test: nats-server is {}", path.display());
        return Ok(());
    }
    let Some(apt) = which("apt-get") else {
        bail!(
            "nats-server is missing and this machine has no apt-get: install nats-server \
             2.9.10 or newer (https://github.com/nats-io/nats-server/releases, or your \
             package manager) or set NATS_SERVER=/path/to/nats-server, then run again"
        );
    };
    // Root installs directly; anyone else through sudo, if there is one.
    let as_root = std::env::var("USER").is_ok_and(|u| u == "root")
        || Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let sudo = if as_root { None } else { which("sudo") };
    if !as_root && sudo.is_none() {
        bail!(
            "nats-server is missing: install it with `apt-get install nats-server` as root, \
             or set NATS_SERVER=/path/to/nats-server, then run again"
        );
    }
    let apt_get = |args: &[&str]| -> Result<bool> {
        let mut command = match &sudo {
            Some(sudo) => {
                let mut c = Command::new(sudo);
                c.arg(&apt);
                c
            }
            None => Command::new(&apt),
        };
        let status = command
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("running apt-get")?;
        Ok(status.success())
    };
    eprintln!("xtask test: nats-server is missing; installing Debian's package");
    if !apt_get(&["install", "-y", "nats-server"])? {
        // A fresh machine may not have package lists yet.
        if !(apt_get(&["update"])? && apt_get(&["install", "-y", "nats-server"])?) {
            bail!("apt-get could not install nats-server; install it by hand and run again");
        }
    }
    let path = compendium_harness::nats_server_binary()
        .context("apt-get installed nats-server, but it cannot be found")?;
    eprintln!("xtask test: installed {}", path.display());
    Ok(())
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}
