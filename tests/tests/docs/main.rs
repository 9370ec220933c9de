//! The documentation tells the truth: the README's taste runs against a real
//! `bowtie dev --demo`, and `docs/configuration.md` lists exactly the built-in
//! settings of `crates/runtime/src/defaults.toml`.

mod configuration;
mod taste;

use std::path::{Path, PathBuf};

/// The repository's root.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// A file of the repository, as text.
fn read(relative: &str) -> anyhow::Result<String> {
    let path = workspace().join(relative);
    std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))
}
