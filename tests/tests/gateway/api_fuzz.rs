//! The OpenAPI document tells the truth: schemathesis generates requests
//! from it (valid ones, and ones breaking each declared constraint) and runs
//! all its checks against `bowtie dev --demo`: no 5xx, every answer in its
//! declared status, headers and schema, valid requests accepted, invalid
//! ones rejected, undeclared methods 405 with `Allow`, auth enforced. Every
//! check is on by default; `tests/gateway/schemathesis.toml` says where one
//! is narrowed and why.
//!
//! Needs schemathesis (`make api-fuzz` installs the pinned one into
//! `.tools/` and sets `BOWTIE_SCHEMATHESIS` to its `st`) and the `bowtie`
//! binary (`BOWTIE_BIN`, default `target/debug/bowtie`). Without
//! `BOWTIE_SCHEMATHESIS` the test prints why it is skipped and passes, so
//! `cargo test` alone needs no Python. The run is bounded (fixed seed,
//! `BOWTIE_API_FUZZ_EXAMPLES` cases per operation, default 20) so it takes
//! a few minutes at most on two cores.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use bowtie_testkit::demo::{DemoProcess, free_port, gateway_only};

/// Accounts of the demo company: enough for every report to hold data,
/// quick to seed in a debug build.
const DEMO_ACCOUNTS: &str = "200";
/// The development key with every scope that `bowtie dev` prints.
const DEV_ADMIN_KEY: &str = "bowtie-dev-admin";
/// Seed of the generated cases, so a failure reproduces.
const SEED: &str = "16";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// `bowtie dev --demo` and its gateway's URL.
struct Dev {
    _process: DemoProcess,
    url: String,
}

/// Starts `bowtie dev --demo` on SQLite in a temporary directory and returns
/// once the demo company is seeded.
fn start_demo(bin: &Path) -> anyhow::Result<Dev> {
    let port = free_port()?;
    Ok(Dev {
        _process: DemoProcess::start(bin, DEMO_ACCOUNTS, &gateway_only(port), "error")?,
        url: format!("http://127.0.0.1:{port}"),
    })
}

#[test]
fn schemathesis_finds_the_api_true_to_its_openapi_document() -> anyhow::Result<()> {
    let Some(st) = std::env::var_os("BOWTIE_SCHEMATHESIS").map(PathBuf::from) else {
        eprintln!(
            "skipped: BOWTIE_SCHEMATHESIS is not set (`make api-fuzz` installs schemathesis and runs this)"
        );
        return Ok(());
    };
    let bin = std::env::var_os("BOWTIE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/debug/bowtie"));
    anyhow::ensure!(
        bin.exists(),
        "no bowtie binary at {} (cargo build -p bowtie, or set BOWTIE_BIN)",
        bin.display()
    );
    let examples = std::env::var("BOWTIE_API_FUZZ_EXAMPLES").unwrap_or_else(|_| "20".to_owned());
    let dev = start_demo(&bin)?;
    let report = tempfile::tempdir()?;
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/gateway/schemathesis.toml");
    // Run in the report directory: schemathesis keeps a cache in its
    // working directory, which must not land in the source tree.
    let status = Command::new(&st)
        .current_dir(report.path())
        .arg("--no-color")
        .arg("--config-file")
        .arg(&config)
        .args(["run", &format!("{}/openapi.json", dev.url)])
        .args([
            "--header",
            &format!("Authorization: Bearer {DEV_ADMIN_KEY}"),
        ])
        .args(["--seed", SEED, "--max-examples", &examples])
        // One worker: the Python 3.11 parser is not thread-safe when
        // Hypothesis describes its strategies from several threads.
        .args(["--workers", "1"])
        .arg("--report-dir")
        .arg(report.path())
        .status()
        .with_context(|| format!("running {}", st.display()))?;
    anyhow::ensure!(
        status.success(),
        "schemathesis found requests or answers the OpenAPI document does not describe ({status})"
    );
    Ok(())
}
