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

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

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

/// `bowtie dev --demo`, killed when dropped.
struct Dev {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `bowtie dev --demo` on SQLite in a temporary directory and returns
/// once the demo company is seeded.
fn start_demo(bin: &Path) -> anyhow::Result<Dev> {
    let dir = tempfile::tempdir()?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut child = Command::new(bin)
        .current_dir(dir.path())
        .args([
            "dev",
            "--demo",
            "--demo-accounts",
            DEMO_ACCOUNTS,
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .env_remove("BOWTIE_CONFIG")
        .env("BOWTIE__ACCOUNTS__LISTEN", "127.0.0.1:0")
        .env("BOWTIE__FUNNEL__LISTEN", "127.0.0.1:0")
        .env("BOWTIE__REVENUE__LISTEN", "127.0.0.1:0")
        .env("BOWTIE__SCORING__LISTEN", "127.0.0.1:0")
        .env("BOWTIE__GATEWAY__LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {} dev --demo", bin.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let dev = Dev {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    };
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).map_err(|_| {
            anyhow::anyhow!(
                "the demo was not seeded in time; output:\n{}",
                seen.join("\n")
            )
        })?;
        if line.starts_with("demo company seeded") || line.contains("already there") {
            return Ok(dev);
        }
        if line.contains("failed") {
            anyhow::bail!("{line}\n{}", seen.join("\n"));
        }
        seen.push(line);
    }
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
