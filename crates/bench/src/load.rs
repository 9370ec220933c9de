//! The load generator: `concurrency` workers each send one request after
//! another for a fixed time over a few shared HTTP/2 connections and record
//! every latency. Throughput is completed requests over the measured time;
//! errors are counted apart and never enter the latencies.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::measure::quantile;

/// What one load run measured.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// Workers sending at once.
    pub concurrency: usize,
    /// Successful requests.
    pub ok: u64,
    /// Failed requests.
    pub errors: u64,
    /// Successful requests per second.
    pub per_second: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
}

/// Runs `call(worker)` from `concurrency` workers for `duration`, after a
/// warm-up of a tenth of it that is not counted.
pub async fn run<F, Fut, E>(concurrency: usize, duration: Duration, call: F) -> LoadResult
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: Send + 'static,
{
    let warm_up = duration / 10;
    let start = Instant::now() + warm_up;
    let end = start + duration;
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let call = call.clone();
        workers.spawn(async move {
            let mut latencies = Vec::with_capacity(4096);
            let mut errors = 0u64;
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let outcome = call(worker).await;
                if sent < start {
                    continue;
                }
                match outcome {
                    Ok(()) => latencies.push(sent.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (latencies, errors)
        });
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    while let Some(joined) = workers.join_next().await {
        if let Ok((mine, failed)) = joined {
            latencies.extend(mine);
            errors += failed;
        }
    }
    let ok = latencies.len() as u64;
    LoadResult {
        concurrency,
        ok,
        errors,
        per_second: ok as f64 / duration.as_secs_f64(),
        p50: quantile(&mut latencies, 0.50),
        p99: quantile(&mut latencies, 0.99),
    }
}
