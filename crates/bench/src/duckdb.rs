//! DuckDB beside Bowtie: a case's script runs in the bench virtualenv's
//! Python (`make bench` installs the pinned `duckdb` package there) over the
//! same data the case loaded, and prints its answers and timings as JSON.

use std::path::Path;
use std::process::Command;

use anyhow::Context as _;

/// Runs `script` (saved in `dir`) with `args`; its JSON output, or `None`
/// when the virtualenv is missing (the comparison is then skipped, said on
/// stdout).
pub fn run(
    case: &str,
    script: &str,
    dir: &Path,
    args: &[String],
) -> anyhow::Result<Option<serde_json::Value>> {
    let python = std::env::var("BOWTIE_BENCH_PYTHON")
        .unwrap_or_else(|_| ".tools/bench-venv-duckdb-1.4.1/bin/python".to_owned());
    if !Path::new(&python).exists() {
        println!(
            "{case}: DuckDB comparison skipped ({python} not found; `make bench` installs it)"
        );
        return Ok(None);
    }
    let path = dir.join(format!("duckdb_{case}.py"));
    std::fs::write(&path, script)?;
    println!("{case}: running the same queries in DuckDB");
    let output = Command::new(&python)
        .arg(&path)
        .args(args)
        .output()
        .context("running DuckDB")?;
    anyhow::ensure!(
        output.status.success(),
        "DuckDB failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(Some(serde_json::from_slice(&output.stdout)?))
}
