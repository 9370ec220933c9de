//! The README's taste works: every grpcurl and curl line of the code block
//! after the `<!-- taste -->` comment runs and succeeds against a real
//! `bowtie dev --demo`.
//!
//! The test starts the `bowtie` binary the workspace built (`BOWTIE_BIN`, or
//! `target/<profile>/bowtie` beside this test; `make test` builds it) on
//! SQLite files in a temporary directory, every service and the gateway on a
//! free port, waits for the demo company to be seeded, then runs each line
//! with `sh -c`, the README's default addresses replaced by the ones the
//! instance listens on. The keys are the development keys `bowtie dev`
//! documents, so they stay as written.
//!
//! grpcurl comes from `BOWTIE_GRPCURL` (`make test` installs the pinned one
//! into `.tools/` and sets it). Without it, or without curl, the test prints
//! why it is skipped and passes, except under `CI=true`, where it fails.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context as _;
use bowtie_testkit::demo::DemoProcess;

use super::read;

/// Accounts of the demo company: enough for every list the taste shows,
/// quick to seed in a debug build.
const DEMO_ACCOUNTS: &str = "200";

/// The addresses the README uses (the defaults of `make run`), each with the
/// environment variable that moves its listener.
const ADDRESSES: [(&str, &str); 6] = [
    ("127.0.0.1:50051", "BOWTIE__ACCOUNTS__LISTEN"),
    ("127.0.0.1:50052", "BOWTIE__FUNNEL__LISTEN"),
    ("127.0.0.1:50053", "BOWTIE__REVENUE__LISTEN"),
    ("127.0.0.1:50054", "BOWTIE__SCORING__LISTEN"),
    ("127.0.0.1:50055", "BOWTIE__SUCCESS__LISTEN"),
    ("127.0.0.1:8080", "BOWTIE__GATEWAY__LISTEN"),
];

/// What the taste needs: grpcurl and the `bowtie` binary.
struct Tools {
    grpcurl: PathBuf,
    bowtie: PathBuf,
}

/// grpcurl, curl and the binary, or why the test cannot run here.
fn find_tools() -> Result<Tools, String> {
    let grpcurl = std::env::var_os("BOWTIE_GRPCURL")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .ok_or("BOWTIE_GRPCURL is not set (`make test` sets it; `make grpcurl-tools` installs grpcurl)")?;
    let runs = |program: &PathBuf, arg: &str| {
        Command::new(program)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !runs(&grpcurl, "-version") {
        return Err(format!("BOWTIE_GRPCURL={} does not run", grpcurl.display()));
    }
    if !runs(&PathBuf::from("curl"), "--version") {
        return Err("curl is not on PATH".into());
    }
    let bowtie = match std::env::var_os("BOWTIE_BIN") {
        Some(path) => PathBuf::from(path),
        // target/<profile>/deps/docs-<hash> -> target/<profile>/bowtie
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.parent()?.join("bowtie")))
            .unwrap_or_default(),
    };
    Ok(Tools { grpcurl, bowtie })
}

/// The commands of the README's taste: the first fenced block after the
/// `<!-- taste` comment, continuation lines joined, blank and comment lines
/// left out.
fn taste_commands(readme: &str) -> anyhow::Result<Vec<String>> {
    let mut lines = readme
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("<!-- taste"))
        .skip(1)
        .skip_while(|l| l.trim().is_empty());
    let fence = lines.next().context("no code block after <!-- taste -->")?;
    anyhow::ensure!(
        fence.starts_with("```"),
        "the line after <!-- taste --> opens no code block: {fence:?}"
    );
    let mut commands = Vec::new();
    let mut pending = String::new();
    for line in lines.by_ref() {
        if line.starts_with("```") {
            anyhow::ensure!(pending.is_empty(), "the taste ends inside a command");
            return Ok(commands);
        }
        let line = line.trim();
        if pending.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(start) => {
                pending.push_str(start);
                pending.push(' ');
            }
            None => {
                pending.push_str(line);
                commands.push(std::mem::take(&mut pending));
            }
        }
    }
    anyhow::bail!("the taste's code block is not closed")
}

/// `bowtie dev --demo` and the README's addresses with the ones it listens on.
struct Dev {
    _process: DemoProcess,
    addresses: Vec<(&'static str, String)>,
}

/// Starts `bowtie dev --demo` on free ports and returns once the demo company
/// is seeded.
fn start_demo(bowtie: &Path) -> anyhow::Result<Dev> {
    anyhow::ensure!(
        bowtie.exists(),
        "no bowtie binary at {} (build it with `cargo build -p bowtie`, or set BOWTIE_BIN)",
        bowtie.display()
    );
    // Hold every port at once so that no two are the same, then free them.
    let probes = ADDRESSES
        .iter()
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut addresses = Vec::new();
    let mut listen = Vec::new();
    for ((readme, variable), probe) in ADDRESSES.iter().zip(&probes) {
        let address = probe.local_addr()?.to_string();
        listen.push((*variable, address.clone()));
        addresses.push((*readme, address));
    }
    drop(probes);
    Ok(Dev {
        _process: DemoProcess::start(bowtie, DEMO_ACCOUNTS, &listen, "warn")?,
        addresses,
    })
}

/// `command` as it runs against `dev`: its addresses, and the grpcurl given.
fn localised(command: &str, dev: &Dev, grpcurl: &str) -> String {
    let mut out = command.to_owned();
    for (readme, address) in &dev.addresses {
        out = out.replace(readme, address);
    }
    match out.strip_prefix("grpcurl ") {
        Some(rest) => format!("'{}' {rest}", grpcurl.replace('\'', r"'\''")),
        None => out,
    }
}

#[test]
fn the_readme_taste_is_at_most_five_grpcurl_and_curl_lines() -> anyhow::Result<()> {
    let commands = taste_commands(&read("README.md")?)?;
    assert!(
        (1..=5).contains(&commands.len()),
        "the taste has {} commands, at most five: {commands:#?}",
        commands.len()
    );
    for command in &commands {
        assert!(
            command.starts_with("grpcurl ") || command.starts_with("curl "),
            "the taste runs only grpcurl and curl: {command}"
        );
    }
    assert!(
        commands.iter().any(|c| c.starts_with("grpcurl ")),
        "the taste has no grpcurl line"
    );
    assert!(
        commands.iter().any(|c| c.starts_with("curl ")),
        "the taste has no curl line"
    );
    Ok(())
}

#[test]
fn every_line_of_the_readme_taste_succeeds_against_bowtie_dev_demo() -> anyhow::Result<()> {
    let tools = match find_tools() {
        Ok(tools) => tools,
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            anyhow::bail!("the README taste cannot run under CI=true: {why}")
        }
        Err(why) => {
            eprintln!("skipped: {why}");
            return Ok(());
        }
    };
    let commands = taste_commands(&read("README.md")?)?;
    let dev = start_demo(&tools.bowtie)?;
    let grpcurl = tools.grpcurl.to_string_lossy().into_owned();
    for command in &commands {
        let line = localised(command, &dev, &grpcurl);
        let output = Command::new("sh")
            .arg("-c")
            .arg(&line)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {line}"))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "the README line\n  {command}\nfailed ({}) as\n  {line}\nstdout: {stdout}\nstderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            !stdout.trim().is_empty(),
            "the README line\n  {command}\nanswered nothing"
        );
    }
    Ok(())
}
