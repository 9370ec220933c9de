//! What `bowtie dev` prints when its output is not a terminal (`make run |
//! tee`, CI, a service manager): the banner as one block on stdout, logs on
//! stderr at `warn` and without colour codes, and `RUST_LOG` or `--log`
//! bringing the INFO lines back.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// How long a debug build may take to start the suite (and seed a small demo).
const START: Duration = Duration::from_secs(180);

/// A running `bowtie dev` with its stdout read line by line and its stderr
/// collected until it exits.
struct Dev {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: JoinHandle<String>,
}

impl Dev {
    /// `bowtie dev <args>` in `dir`, every service on a free port, with
    /// `RUST_LOG` set to `rust_log` (unset when `None`).
    fn start(dir: &Path, args: &[&str], rust_log: Option<&str>) -> anyhow::Result<Self> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_bowtie"));
        command
            .current_dir(dir)
            .arg("dev")
            .args(["--data-dir", "data"])
            .args(args)
            .env_remove("BOWTIE_CONFIG")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for service in [
            "ACCOUNTS", "FUNNEL", "REVENUE", "SCORING", "SUCCESS", "GATEWAY",
        ] {
            command.env(format!("BOWTIE__{service}__LISTEN"), "127.0.0.1:0");
        }
        if let Some(filter) = rust_log {
            command.env("RUST_LOG", filter);
        }
        let mut child = command.spawn().context("starting bowtie dev")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut stderr = child.stderr.take().context("no stderr")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Ok(Self {
            child,
            stdout: rx,
            stderr,
        })
    }

    /// The stdout lines up to and including the banner's last (`ready: ...`).
    fn until_ready(&self) -> anyhow::Result<Vec<String>> {
        let deadline = Instant::now() + START;
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.stdout.recv_timeout(left).with_context(|| {
                format!("bowtie dev printed no `ready:` line; stdout so far: {lines:#?}")
            })?;
            let ready = line.starts_with("ready: ");
            lines.push(line);
            if ready {
                return Ok(lines);
            }
        }
    }

    /// Stops the process; its stderr.
    fn stop(mut self) -> anyhow::Result<String> {
        let _ = self.child.kill();
        self.child.wait()?;
        self.stderr
            .join()
            .map_err(|_| anyhow::anyhow!("the stderr reader panicked"))
    }
}

/// Whether `text` holds an INFO log line (the text format, no colours).
fn has_info_line(text: &str) -> bool {
    text.lines().any(|l| l.contains(" INFO "))
}

#[test]
fn the_demo_banner_is_one_block_on_stdout_and_stderr_has_no_info_and_no_colour()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let dev = Dev::start(
        dir.path(),
        &["--demo", "--demo-seed", "6", "--demo-accounts", "200"],
        None,
    )?;
    let lines = dev.until_ready();
    let stderr = dev.stop()?;
    let lines = lines.with_context(|| format!("stderr: {stderr}"))?;

    assert_eq!(
        lines[0], "seeding the demo company (200 accounts, seed 6)...",
        "{lines:#?}"
    );
    // The block: the addresses, the keys, the demo, what to open, where to
    // start; nothing in between.
    let block = &lines[1..];
    let starts = [
        "accounts  grpc://127.0.0.1:",
        "revenue   grpc://127.0.0.1:",
        "funnel    grpc://127.0.0.1:",
        "scoring   grpc://127.0.0.1:",
        "success   grpc://127.0.0.1:",
        "gateway   http://127.0.0.1:",
        "dashboard http://127.0.0.1:",
        "development API keys: bowtie-dev-admin (admin), bowtie-dev-read (read)",
        "demo company seeded in ",
    ];
    for (line, start) in block.iter().zip(starts) {
        assert!(line.starts_with(start), "{start:?} expected: {lines:#?}");
    }
    let open = block
        .iter()
        .position(|l| l.starts_with("open http://127.0.0.1:"))
        .with_context(|| format!("no `open` line: {lines:#?}"))?;
    let terminal = block
        .iter()
        .position(|l| l == "in the terminal:")
        .with_context(|| format!("no `in the terminal` line: {lines:#?}"))?;
    assert!(starts.len() < open && open < terminal, "{lines:#?}");
    // Between the headings, only the indented description and the key hint.
    for line in &block[starts.len()..block.len() - 1] {
        assert!(
            line.starts_with("  ")
                || line.starts_with("open ")
                || line == "in the terminal:"
                || line.starts_with("(with BOWTIE_API_KEY"),
            "{line:?} inside the banner: {lines:#?}"
        );
    }
    assert!(
        block[block.len() - 1].starts_with("ready: try `grpcurl -plaintext 127.0.0.1:"),
        "{lines:#?}"
    );

    assert!(!has_info_line(&stderr), "INFO on stderr: {stderr}");
    assert!(
        !stderr.contains("\x1b["),
        "ANSI escapes on stderr: {stderr:?}"
    );
    Ok(())
}

#[test]
fn rust_log_or_the_log_flag_brings_the_info_lines_back_without_colour() -> anyhow::Result<()> {
    for (args, rust_log) in [(&[][..], Some("info")), (&["--log", "info"][..], None)] {
        let dir = tempfile::tempdir()?;
        let dev = Dev::start(dir.path(), args, rust_log)?;
        let lines = dev.until_ready();
        let stderr = dev.stop()?;
        let lines = lines.with_context(|| format!("stderr: {stderr}"))?;
        assert!(
            lines[0].starts_with("accounts  grpc://"),
            "{args:?} {rust_log:?}: {lines:#?}"
        );
        assert!(
            !lines.iter().any(|l| l.contains(" INFO ")),
            "log lines on stdout: {lines:#?}"
        );
        assert!(
            has_info_line(&stderr) && stderr.contains("listening"),
            "{args:?} {rust_log:?}: no INFO line on stderr: {stderr}"
        );
        assert!(
            !stderr.contains("\x1b["),
            "ANSI escapes on stderr: {stderr:?}"
        );
    }
    Ok(())
}
