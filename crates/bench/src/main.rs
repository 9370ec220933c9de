//! `bowtie-bench`: runs the benchmark cases in a release build, prints one
//! table and writes the figures as JSON (`make bench`).
//!
//! Each case builds its data set with a fixed seed, starts the real services
//! on temporary SQLite files and measures them through their gRPC API.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use bowtie_bench::measure::Report;

/// jemalloc: the binaries allocate on many threads at once (request
/// handlers, SQLite connections, scoring), where glibc's allocator spends
/// far more time (see docs/benchmarks.md).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(name = "bowtie-bench", about = "Bowtie benchmarks")]
struct Cli {
    /// Which cases to run.
    #[arg(value_enum, default_value = "all")]
    case: Case,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench-results/results.json")]
    out: PathBuf,
    /// Measured seconds of each load level of the unary case.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Serve the bare echo server on this address instead (used by the unary case).
    #[arg(long, hide = true)]
    echo_server: Option<std::net::SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Case {
    /// Every case.
    All,
    /// GetAccount throughput and latency beside a bare tonic server; memory of each service.
    Unary,
    /// Funnel report and journey lookups over 1M transitions.
    Funnel,
    /// The revenue service: MRR report and retention over 1M changes.
    Revenue,
    /// The scoring service: 1M streamed signals and a 100k-account recompute.
    Scoring,
    /// Subscription events and transitions imported end to end from CSV
    /// files over the import streams, through the CLI's code path.
    Import,
    /// Stripe webhooks and backfill, Segment batches, through the gateway.
    Connectors,
    /// The success service: 100k accounts entering red at once, ListCtas, effectiveness, memory.
    Success,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(addr) = cli.echo_server {
        return bowtie_bench::unary::serve_echo(addr);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        let mut report = Report::default();
        if matches!(cli.case, Case::All | Case::Unary) {
            bowtie_bench::unary::run(&mut report, cli.seconds).await?;
        }
        if matches!(cli.case, Case::All | Case::Funnel) {
            bowtie_bench::funnel::run(&mut report).await?;
        }
        if matches!(cli.case, Case::All | Case::Revenue) {
            bowtie_bench::revenue::run(&mut report).await?;
        }
        if matches!(cli.case, Case::All | Case::Import) {
            bowtie_bench::import::run(&mut report).await?;
        }
        if matches!(cli.case, Case::All | Case::Scoring) {
            bowtie_bench::scoring::run(&mut report).await?;
        }
        if matches!(cli.case, Case::All | Case::Connectors) {
            bowtie_bench::connectors::run(&mut report).await?;
        }
        if matches!(cli.case, Case::All | Case::Success) {
            bowtie_bench::success::run(&mut report).await?;
        }
        anyhow::Ok(report)
    })?;
    report.print();
    report.write(&cli.out)?;
    Ok(())
}
