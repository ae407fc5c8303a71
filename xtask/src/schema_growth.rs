//! `cargo xtask check-schema-growth`: prove that the schema can grow with no hand edit
//! (docs/protocol.md section 5). Each of three changes is applied to a scratch copy of the
//! repository, `cargo xtask codegen` is run there, and the copy is built:
//!
//! 1. optional members, on a client-to-server message (`ROUTE.ttlMs`) and on a
//!    server-to-client one (`DELIVER.hops`): the workspace builds, and the messages and
//!    server tests pass;
//! 2. a new client-to-server type (`PING`): the same, plus the relay answers it ERR 501
//!    (rule 3.12) and the conformance suite still runs;
//! 3. a new required member (`ROUTE.ttl`): codegen calls it BREAKING, and the build fails
//!    only where a ROUTE is constructed (errors E0061 "wrong number of arguments" or E0063
//!    "missing field", nothing else).
//!
//! The copies share one target directory (`target/schema-growth`), so dependencies are
//! compiled once.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::ensure::Mode;
use crate::project_root;

/// One change to the schema and what must follow from it.
struct Growth {
    name: &'static str,
    apply: fn(&mut Value) -> Result<()>,
    /// What codegen's summary must say (each a substring of one change line).
    summary: &'static [&'static str],
    /// Whether the workspace must still build.
    builds: bool,
    /// Extra `cargo test` arguments to run once it builds.
    tests: &'static [&'static [&'static str]],
}

const GROWTHS: &[Growth] = &[
    Growth {
        name: "optional members",
        apply: optional_members,
        summary: &[
            "compatible: ROUTE: new optional member \"ttlMs\"",
            "compatible: DELIVER: new optional member \"hops\"",
        ],
        builds: true,
        tests: &[&["-p", "compendium-messages", "-p", "compendium-server"]],
    },
    Growth {
        name: "a new client-to-server type",
        apply: new_client_type,
        summary: &["compatible: PING: new client-to-server type"],
        builds: true,
        tests: &[
            &["-p", "compendium-messages", "-p", "compendium-server"],
            &["-p", "compendium-conformance", "--test", "cli"],
        ],
    },
    Growth {
        name: "a new required member",
        apply: new_required_member,
        summary: &["BREAKING: ROUTE: new required member \"ttl\""],
        builds: false,
        tests: &[],
    },
];

pub(crate) fn run() -> Result<()> {
    // The grown copies run the server tests, cluster tests included.
    crate::test::provision_nats_server()?;
    let root = project_root();
    let target_dir = root.join("target/schema-growth");
    for growth in GROWTHS {
        eprintln!("== schema growth: {}", growth.name);
        check(&root, &target_dir, growth)
            .with_context(|| format!("schema growth: {}", growth.name))?;
    }
    eprintln!("== the schema can grow: every change behaved as docs/protocol.md section 5 says");
    Ok(())
}

fn check(root: &Path, target_dir: &Path, growth: &Growth) -> Result<()> {
    let scratch = tempfile::Builder::new()
        .prefix("compendium-schema-growth-")
        .tempdir()
        .context("creating a temporary directory")?;
    let copy = scratch.path().join("repo");
    copy_repository(root, &copy)?;
    let schema_path = copy.join("schema/message.schema.json");
    let mut schema: Value = serde_json::from_str(&fs::read_to_string(&schema_path)?)?;
    (growth.apply)(&mut schema)?;
    fs::write(&schema_path, serde_json::to_string_pretty(&schema)? + "\n")?;

    let changes = crate::codegen::run_in(&copy, Mode::Write)?;
    let lines: Vec<String> = changes.iter().map(ToString::to_string).collect();
    for wanted in growth.summary {
        if !lines.iter().any(|line| line.contains(wanted)) {
            bail!("codegen's summary does not say {wanted:?}; it says {lines:#?}");
        }
    }

    let output = cargo(&copy, target_dir)
        .args([
            "build",
            "--workspace",
            "--exclude",
            "xtask",
            "--all-targets",
        ])
        .args(["--message-format", "json-diagnostic-short"])
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo build")?;
    let errors = compiler_errors(&String::from_utf8_lossy(&output.stdout));
    match (growth.builds, output.status.success()) {
        (true, true) => {}
        (true, false) => bail!(
            "the workspace no longer builds with no hand edit:\n{}",
            errors.join("\n")
        ),
        (false, true) => bail!("the workspace still builds; a new required member must break it"),
        (false, false) => {
            let unexpected: Vec<&String> = errors
                .iter()
                .filter(|e| !(e.contains("E0061") || e.contains("E0063")))
                .collect();
            if errors.is_empty() || !unexpected.is_empty() {
                bail!(
                    "the build must fail only where a ROUTE is constructed (E0061/E0063); \
                     it failed with:\n{}",
                    errors.join("\n")
                );
            }
            eprintln!(
                "the build fails where a ROUTE is constructed, as it must:\n  {}",
                errors.join("\n  ")
            );
        }
    }
    for args in growth.tests {
        let status = cargo(&copy, target_dir)
            .arg("test")
            .args(*args)
            .status()
            .context("running cargo test")?;
        if !status.success() {
            bail!("cargo test {} failed in the grown copy", args.join(" "));
        }
    }
    if growth.name == "a new client-to-server type" {
        let output = cargo(&copy, target_dir)
            .args([
                "test",
                "-p",
                "compendium-server",
                "--test",
                "relay_rules",
                "rule_3_12",
            ])
            .args(["--", "--nocapture"])
            .output()
            .context("running the rule 3.12 test")?;
        let printed = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() || !printed.contains("rule 3.12: PING -> ERR 501") {
            bail!("the relay did not answer PING with ERR 501:\n{printed}");
        }
        eprintln!("the relay answers the new PING with ERR 501 (rule 3.12)");
    }
    Ok(())
}

fn cargo(dir: &Path, target_dir: &Path) -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target_dir)
        // Each copy is a new path, so incremental caches would never be reused, and debug
        // info is not needed to see whether it builds: both would only take disk.
        .env("CARGO_INCREMENTAL", "0")
        .env("CARGO_PROFILE_DEV_DEBUG", "false")
        // Whatever the caller's shell says, the grown copy builds as CI would.
        .env_remove("RUSTFLAGS");
    command
}

/// `error[E0061]: ... --> messages/src/lib.rs:62:9` lines from cargo's JSON messages.
fn compiler_errors(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-message" && m["message"]["level"] == "error")
        .filter_map(|m| {
            m["message"]["rendered"]
                .as_str()
                .map(|r| r.trim().to_owned())
        })
        .filter(|rendered| !rendered.starts_with("error: aborting due to"))
        .fold(Vec::new(), |mut seen, error| {
            // The library and its test build report the same errors.
            if !seen.contains(&error) {
                seen.push(error);
            }
            seen
        })
}

/// The files git knows (committed or not, ignored ones left out), as they are now.
fn copy_repository(root: &Path, to: &Path) -> Result<()> {
    let output = Command::new("git")
        .current_dir(root)
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .output()
        .context("running git ls-files (the check copies the files git knows)")?;
    if !output.status.success() {
        bail!(
            "git ls-files failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    for rel in output.stdout.split(|&b| b == 0).filter(|p| !p.is_empty()) {
        let rel = PathBuf::from(String::from_utf8_lossy(rel).into_owned());
        let from = root.join(&rel);
        if !from.is_file() {
            continue; // deleted in the working tree
        }
        let dest = to.join(&rel);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::copy(&from, &dest).with_context(|| format!("copying {}", rel.display()))?;
    }
    Ok(())
}

fn arm<'a>(schema: &'a mut Value, name: &str) -> Result<&'a mut Value> {
    schema["oneOf"]
        .as_array_mut()
        .context("the schema has no oneOf")?
        .iter_mut()
        .find(|arm| arm["properties"]["type"]["const"] == name)
        .with_context(|| format!("the schema has no {name}"))
}

fn optional_members(schema: &mut Value) -> Result<()> {
    arm(schema, "ROUTE")?["properties"]["ttlMs"] = json!({"type": "integer", "minimum": 0});
    arm(schema, "DELIVER")?["properties"]["hops"] = json!({"type": "integer", "minimum": 0});
    Ok(())
}

fn new_client_type(schema: &mut Value) -> Result<()> {
    schema["oneOf"]
        .as_array_mut()
        .context("the schema has no oneOf")?
        .push(json!({
            "description": "Client to server: is the relay there? (No rule implements it yet.)",
            "x-direction": "client-to-server",
            "type": "object",
            "properties": {"type": {"type": "string", "const": "PING"}},
            "required": ["type"],
            "additionalProperties": false
        }));
    Ok(())
}

fn new_required_member(schema: &mut Value) -> Result<()> {
    let route = arm(schema, "ROUTE")?;
    route["properties"]["ttl"] = json!({"type": "integer", "minimum": 0});
    route["required"]
        .as_array_mut()
        .context("ROUTE has no required list")?
        .push(json!("ttl"));
    Ok(())
}
