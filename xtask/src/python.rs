//! `cargo xtask test-python` (and the last step of `cargo xtask test`): build the Python
//! package and run its checks.
//!
//! A fresh machine has CPython with pip and nothing else, so this makes a virtual
//! environment in `target/python-venv`, installs `python/requirements-dev.txt` from PyPI
//! into it, builds the package with `pip install ./python` exactly as a user would (maturin
//! as the PEP 517 backend) — but into the workspace's own target directory and with the
//! dev profile, so the client's dependency tree, already built by the Rust tests, is reused
//! rather than built again — then runs mypy (`--strict`, on the package and the tests),
//! mypy's stubtest (the native module's `.pyi` against the module itself) and pytest.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

pub(crate) fn run() -> Result<()> {
    let root = crate::project_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let venv = target.join("python-venv");
    let bin = venv.join("bin");
    let python = bin.join("python");
    if !python.exists() {
        let system = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        eprintln!(
            "xtask test-python: creating {} with {system}",
            venv.display()
        );
        status(
            Command::new(&system).args(["-m", "venv"]).arg(&venv),
            &format!(
                "creating a virtual environment with `{system} -m venv` (install CPython \
                 3.10 or newer with its venv module, or set PYTHON=/path/to/python3)"
            ),
        )?;
    }
    status(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(root.join("python/requirements-dev.txt")),
        "installing the Python test tools from PyPI",
    )?;
    // The relay the tests start.
    status(
        cargo().args(["build", "-q", "-p", "compendium-server"]),
        "building compendium-server",
    )?;
    let path = std::env::join_paths(std::iter::once(bin.clone()).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))?;
    status(
        Command::new(&python)
            .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
            .args(["--no-build-isolation", "--force-reinstall", "--no-deps"])
            .arg(root.join("python"))
            .env("PATH", &path)
            .env("CARGO_TARGET_DIR", &target)
            .env("MATURIN_PEP517_ARGS", "--profile dev"),
        "building and installing the Python package (pip install ./python)",
    )?;
    let python_dir = root.join("python");
    status(
        Command::new(&python)
            .args(["-m", "mypy", "--strict", "compendium_wss", "tests"])
            .current_dir(&python_dir),
        "mypy --strict",
    )?;
    // stubtest imports the installed package: run it away from the source folder, whose
    // compendium_wss/ (without the native module) would be found first.
    status(
        Command::new(&python)
            .args(["-m", "mypy.stubtest", "compendium_wss._native"])
            .current_dir(&target),
        "mypy.stubtest (the native module's stub against the module)",
    )?;
    pytest(&python, &python_dir, &target)
}

fn pytest(python: &Path, python_dir: &Path, target: &Path) -> Result<()> {
    let outcome = Command::new(python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"])
        .current_dir(python_dir)
        .env("CARGO_TARGET_DIR", target)
        // The installed package, not the source folder's copy without its native module.
        .env("PYTHONSAFEPATH", "1")
        .status()
        .context("running pytest")?;
    match outcome.code() {
        Some(0) => Ok(()),
        // pytest's "no tests collected": never a success.
        Some(5) => bail!("pytest collected no tests from python/tests"),
        _ => bail!("the Python tests failed ({outcome})"),
    }
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn status(command: &mut Command, what: &str) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("{what}: could not start it"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}
