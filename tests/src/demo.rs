//! `bowtie dev --demo` as a child process, for the tests that drive the whole
//! suite from outside (the browser test, the README taste, the API fuzz run):
//! started on the addresses the test chose, in a temporary directory, and
//! handed back only once the demo company is seeded; killed when dropped.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// How long seeding may take before the test fails instead of hanging.
const SEEDING_DEADLINE: Duration = Duration::from_secs(180);

/// A running `bowtie dev --demo`, killed when dropped.
pub struct DemoProcess {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for DemoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The listen settings of a suite whose services take any free port and
/// whose gateway listens on `gateway` (a free port the caller picked).
pub fn gateway_only(gateway: u16) -> Vec<(&'static str, String)> {
    let mut listen: Vec<(&'static str, String)> = [
        "BOWTIE__ACCOUNTS__LISTEN",
        "BOWTIE__FUNNEL__LISTEN",
        "BOWTIE__REVENUE__LISTEN",
        "BOWTIE__SCORING__LISTEN",
        "BOWTIE__SUCCESS__LISTEN",
    ]
    .into_iter()
    .map(|variable| (variable, "127.0.0.1:0".to_owned()))
    .collect();
    listen.push(("BOWTIE__GATEWAY__LISTEN", format!("127.0.0.1:{gateway}")));
    listen
}

/// A free port on 127.0.0.1 (free when asked; the caller binds it soon).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl DemoProcess {
    /// Starts `bin dev --demo --demo-accounts accounts` with the `listen`
    /// environment (variable, address) and `RUST_LOG=rust_log`, and returns
    /// once its output says the demo company is seeded.
    pub fn start(
        bin: &Path,
        accounts: &str,
        listen: &[(&str, String)],
        rust_log: &str,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut command = Command::new(bin);
        for (variable, address) in listen {
            command.env(variable, address);
        }
        let mut child = command
            .current_dir(dir.path())
            .args(["dev", "--demo", "--demo-accounts", accounts, "--data-dir"])
            .arg(dir.path().join("data"))
            .env_remove("BOWTIE_CONFIG")
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {} dev --demo", bin.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let demo = Self { child, _dir: dir };
        // Read the output on a thread; a deadline turns a hang into a failure.
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + SEEDING_DEADLINE;
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
                return Ok(demo);
            }
            if line.contains("failed") {
                anyhow::bail!("{line}\n{}", seen.join("\n"));
            }
            seen.push(line);
        }
    }
}
