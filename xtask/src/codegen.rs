//! `cargo xtask codegen`: Rust types and embedded schema copies, generated from `schema/`.
//!
//! Every generator is a pure function from files in the repository to file contents;
//! [`ensure_file_contents`] then writes or checks them, so `--check` and the drift test see
//! exactly what a real run would write.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};
use typify::{TypeSpace, TypeSpaceSettings};

use crate::ensure::{Mode, ensure_file_contents};
use crate::project_root;
use crate::schema_diff::Change;

/// One schema turned into one Rust module inside one crate.
struct Target {
    /// The schema, relative to the repository root.
    schema: &'static str,
    /// Where the generated Rust goes.
    rust_out: &'static str,
    /// A folder that mirrors the schema's folder byte for byte (schema and examples), for
    /// a crate that embeds the schema and tests against the examples: a vendored crate
    /// cannot read `schema/`, so it carries its own copy.
    mirror: Option<(&'static str, &'static str)>,
    /// The manifest of the crate that compiles the generated code: it must list every
    /// runtime crate the generated code names.
    manifest: &'static str,
    /// typify settings: named schema definitions replaced by hand-written types.
    replacements: &'static [(&'static str, &'static str)],
    /// The tagged enum that also gets generated constructors, `type_name` and `direction`
    /// ([`crate::message_api`]).
    api_for: Option<&'static str>,
}

const TARGETS: &[Target] = &[
    Target {
        schema: "schema/message.schema.json",
        rust_out: "messages/src/generated.rs",
        mirror: Some(("schema", "messages/schema")),
        manifest: "messages/Cargo.toml",
        // `msg` is kept as the sender's raw bytes so a relay forwards it without re-encoding;
        // the address is a 128-bit `Copy` value so the relay's registry key costs no allocation.
        // The resume secret is hand-written so that it never prints (its Debug is redacted)
        // and compares in constant time.
        // The hand-written types are proven by tests to accept exactly what the schema does.
        replacements: &[
            ("Payload", "crate::Payload"),
            ("EpheWssAddr", "crate::Address"),
            ("Secret", "crate::Secret"),
            // Ranges the schema validates before anything is built; plain integers here.
            ("Seq", "u64"),
            ("Seconds", "u32"),
        ],
        api_for: Some("Message"),
    },
    Target {
        schema: "conformance/session.schema.json",
        rust_out: "conformance/src/session/generated.rs",
        mirror: None,
        manifest: "conformance/Cargo.toml",
        replacements: &[],
        api_for: None,
    },
];

/// The conformance session files, embedded in the conformance crate by a generated index,
/// so a session file added without re-running codegen is drift like any other.
const SESSIONS_DIR: &str = "conformance/sessions";
const SESSIONS_INDEX: &str = "conformance/src/session/index.rs";

/// Run every generator in `mode` on this repository, printing what changed in the message
/// schema since the last run and what each change means for compatibility.
pub(crate) fn run(mode: Mode) -> Result<()> {
    run_in(&project_root(), mode).map(|_| ())
}

/// Run every generator in `mode` on the repository at `root`; returns the schema changes
/// it found (and printed).
pub(crate) fn run_in(root: &Path, mode: Mode) -> Result<Vec<Change>> {
    let root = root.to_path_buf();
    let mut stale = Vec::new();
    let mut changes = Vec::new();
    for target in TARGETS {
        let schema_text = fs::read_to_string(root.join(target.schema))
            .with_context(|| format!("reading {}", target.schema))?;
        if let Some((_, mirror)) = target.mirror {
            changes.extend(schema_changes(&root, target.schema, mirror, &schema_text));
        }
        let rust = generate_rust(target, &schema_text)?;
        check_runtime_deps(&root, target, &rust)?;
        let mut outputs = vec![(target.rust_out.to_owned(), rust.source)];
        if let Some((from, to)) = target.mirror {
            outputs.extend(mirror_files(&root, from, to, mode, &mut stale)?);
        }
        for (rel, contents) in outputs {
            if let Err(err) = ensure_file_contents(mode, &root, &rel, &contents) {
                stale.push(format!("{err:#}"));
            }
        }
    }
    let index = sessions_index(&root)?;
    if let Err(err) = ensure_file_contents(mode, &root, SESSIONS_INDEX, &index) {
        stale.push(format!("{err:#}"));
    }
    if !changes.is_empty() {
        eprintln!(
            "schema changes since the last `cargo xtask codegen` (docs/protocol.md section 5):"
        );
        for change in &changes {
            eprintln!("  {change}");
        }
        if changes.iter().any(|c| c.breaking) {
            eprintln!(
                "  a BREAKING change needs a new protocol version; the build now fails where \
                 the changed messages are constructed"
            );
        }
    }
    if !stale.is_empty() {
        bail!("{}", stale.join("\n"));
    }
    Ok(changes)
}

/// The changes from the schema copy that the last run mirrored into `mirror` to `schema`
/// now; none when there is no copy yet or either is not JSON (codegen reports that itself).
fn schema_changes(root: &Path, schema: &str, mirror: &str, schema_text: &str) -> Vec<Change> {
    let file = Path::new(schema)
        .file_name()
        .map(Path::new)
        .unwrap_or(Path::new(schema));
    let before = fs::read_to_string(root.join(mirror).join(file))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok());
    let now = serde_json::from_str::<serde_json::Value>(schema_text).ok();
    match (before, now) {
        (Some(before), Some(now)) => crate::schema_diff::changes(&before, &now),
        _ => Vec::new(),
    }
}

/// `conformance/src/session/index.rs`: every `*.json` under `conformance/sessions`, by
/// file name, in name order.
fn sessions_index(root: &Path) -> Result<String> {
    let files: Vec<String> = list_files(&root.join(SESSIONS_DIR))?
        .into_iter()
        .filter(|name| name.ends_with(".json") && !name.contains('/'))
        .collect();
    let mut out = String::from(
        "// @generated by `cargo xtask codegen` from conformance/sessions/; do not edit.\n\n\
         /// Every session file shipped with the suite: (file name, contents), in name order.\n\
         pub(crate) const SESSIONS: &[(&str, &str)] = &[\n",
    );
    for name in files {
        out.push_str(&format!(
            "    ({name:?}, include_str!(\"../../sessions/{name}\")),\n"
        ));
    }
    out.push_str("];\n");
    Ok(out)
}

/// The files of `from` as they should appear under `to`; files under `to` with no
/// counterpart are stale (removed in [`Mode::Write`], reported in [`Mode::Check`]).
fn mirror_files(
    root: &Path,
    from: &str,
    to: &str,
    mode: Mode,
    stale: &mut Vec<String>,
) -> Result<Vec<(String, String)>> {
    let wanted = list_files(&root.join(from))?;
    for rel in list_files(&root.join(to))? {
        if !wanted.contains(&rel) {
            let path = format!("{to}/{rel}");
            match mode {
                Mode::Write => {
                    fs::remove_file(root.join(&path)).with_context(|| format!("removing {path}"))?;
                    eprintln!("removed {path}");
                }
                Mode::Check => stale.push(format!(
                    "{path} has no counterpart in {from}/: run `cargo xtask codegen` and commit the result"
                )),
            }
        }
    }
    wanted
        .into_iter()
        .map(|rel| {
            let text = fs::read_to_string(root.join(from).join(&rel))
                .with_context(|| format!("reading {from}/{rel}"))?;
            Ok((format!("{to}/{rel}"), text))
        })
        .collect()
}

/// Every file below `dir`, as sorted `/`-separated relative paths; none if it is missing.
fn list_files(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let entries = match fs::read_dir(&current) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err).with_context(|| format!("listing {}", current.display())),
        };
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(rel) = path.strip_prefix(dir) {
                let parts: Vec<_> = rel
                    .iter()
                    .map(|p| p.to_string_lossy().into_owned())
                    .collect();
                out.push(parts.join("/"));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Generated source plus the runtime crates it refers to.
struct Generated {
    source: String,
    needs: Vec<&'static str>,
}

fn generate_rust(target: &Target, schema_text: &str) -> Result<Generated> {
    let root_schema: schemars::schema::RootSchema = serde_json::from_str(schema_text)
        .with_context(|| format!("{} is not a JSON Schema typify can read", target.schema))?;

    let mut settings = TypeSpaceSettings::default();
    settings
        .with_struct_builder(false)
        .with_derive("PartialEq".to_owned());
    for (name, replacement) in target.replacements {
        settings.with_replacement(*name, *replacement, std::iter::empty());
    }
    let mut space = TypeSpace::new(&settings);
    space
        .add_root_schema(root_schema)
        .with_context(|| format!("generating types from {}", target.schema))?;

    let mut file: syn::File =
        syn::parse2(space.to_stream()).context("typify produced unparsable Rust")?;
    if let Some(enum_name) = target.api_for {
        let schema: serde_json::Value = serde_json::from_str(schema_text)
            .with_context(|| format!("{} is not JSON", target.schema))?;
        let api = crate::message_api::generate(&file, &schema, enum_name).with_context(|| {
            format!(
                "generating {enum_name}'s constructors from {}",
                target.schema
            )
        })?;
        let api: syn::File =
            syn::parse_str(&api).context("the generated constructors do not parse")?;
        file.items.extend(api.items);
    }
    // One blank line between top-level items, so generated diffs read like hand-written ones.
    let empty = syn::File {
        items: Vec::new(),
        ..file.clone()
    };
    let body = file
        .items
        .into_iter()
        .map(|item| {
            prettyplease::unparse(&syn::File {
                items: vec![item],
                ..empty.clone()
            })
        })
        .collect::<Vec<_>>()
        .join("\n");
    let source = format!(
        "// @generated by `cargo xtask codegen` from {schema}; do not edit.\n\
         #![allow(dead_code, missing_docs, unreachable_pub, clippy::all, clippy::pedantic, clippy::unwrap_used)]\n\n{body}",
        schema = target.schema,
    );

    let mut needs = vec!["serde"];
    if space.uses_serde_json() {
        needs.push("serde_json");
    }
    if space.uses_regress() {
        needs.push("regress");
    }
    if space.uses_chrono() {
        needs.push("chrono");
    }
    if space.uses_uuid() {
        needs.push("uuid");
    }
    Ok(Generated { source, needs })
}

/// Fail when the crate that compiles the generated code does not depend on a crate the
/// generated code uses: typify tells us which (`uses_*`), the manifest must agree.
fn check_runtime_deps(root: &Path, target: &Target, generated: &Generated) -> Result<()> {
    let text = fs::read_to_string(root.join(target.manifest))
        .with_context(|| format!("reading {}", target.manifest))?;
    let manifest: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", target.manifest))?;
    let deps = manifest.get("dependencies").and_then(toml::Value::as_table);
    let missing: Vec<&str> = generated
        .needs
        .iter()
        .copied()
        .filter(|krate| !deps.is_some_and(|d| d.contains_key(*krate)))
        .collect();
    eprintln!(
        "{}: generated code uses {}",
        target.rust_out,
        generated.needs.join(", ")
    );
    if !missing.is_empty() {
        bail!(
            "{} lacks [dependencies] needed by {}: {}",
            target.manifest,
            target.rust_out,
            missing.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// rust-analyzer's pattern: plain `cargo test` fails when generated code drifts from
    /// the schema, naming the file and the command that fixes it.
    #[test]
    fn generated_code_is_fresh() {
        if let Err(err) = super::run(super::Mode::Check) {
            panic!("{err:#}");
        }
    }
}
