//! The one place that decides between writing a generated file and checking it.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// Whether generators write their output or only compare it with what is on disk.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Mode {
    /// Overwrite stale files.
    Write,
    /// Write nothing; fail (with a diff) if any file is stale.
    Check,
}

/// Make `path` hold `contents`.
///
/// Line endings are normalised first so a checkout with CRLF does not look stale. In
/// [`Mode::Check`] a stale file is an error that names the file and the command that fixes
/// it, after a unified diff of the change on stderr.
pub(crate) fn ensure_file_contents(
    mode: Mode,
    root: &Path,
    rel: &str,
    contents: &str,
) -> Result<()> {
    let path = root.join(rel);
    let want = normalize_newlines(contents);
    let have = match fs::read_to_string(&path) {
        Ok(text) => Some(normalize_newlines(&text)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    };
    if have.as_deref() == Some(want.as_str()) {
        return Ok(());
    }
    match mode {
        Mode::Write => {
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            fs::write(&path, &want).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("updated {rel}");
            Ok(())
        }
        Mode::Check => {
            let old = have.unwrap_or_default();
            let diff = similar::TextDiff::from_lines(&old, &want);
            eprint!(
                "{}",
                diff.unified_diff()
                    .context_radius(3)
                    .header(&format!("a/{rel}"), &format!("b/{rel}"))
            );
            bail!("{rel} is stale: run `cargo xtask codegen` and commit the result")
        }
    }
}

fn normalize_newlines(s: &str) -> String {
    s.replace("\r\n", "\n")
}
