//! Timing helpers and the result table shared by every case.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// The case, e.g. `funnel`.
    pub case: String,
    /// What was measured, e.g. `GetFunnelReport (12 months)`.
    pub metric: String,
    /// The value.
    pub value: f64,
    /// Its unit, e.g. `ms`.
    pub unit: String,
    /// The target, e.g. `< 1000 ms`, empty when there is none.
    pub target: String,
    /// Whether the target is met (true when there is none).
    pub ok: bool,
}

/// Every figure of a run.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// The figures in the order they were measured.
    pub figures: Vec<Figure>,
}

impl Report {
    /// Adds a figure; `limit` is an upper bound on the value when given.
    pub fn add(&mut self, case: &str, metric: &str, value: f64, unit: &str, limit: Option<f64>) {
        println!("  {case:<10} {metric:<48} {value:>12.3} {unit}");
        self.figures.push(Figure {
            case: case.into(),
            metric: metric.into(),
            value,
            unit: unit.into(),
            target: limit.map(|l| format!("< {l} {unit}")).unwrap_or_default(),
            ok: limit.is_none_or(|l| value < l),
        });
    }

    /// Adds a figure whose target is a lower bound.
    pub fn add_at_least(&mut self, case: &str, metric: &str, value: f64, unit: &str, floor: f64) {
        println!("  {case:<10} {metric:<48} {value:>12.3} {unit}");
        self.figures.push(Figure {
            case: case.into(),
            metric: metric.into(),
            value,
            unit: unit.into(),
            target: format!(">= {floor} {unit}"),
            ok: value >= floor,
        });
    }

    /// Prints the table.
    pub fn print(&self) {
        println!();
        println!(
            "{:<10} {:<48} {:>12} {:<6} {:<14} ok",
            "case", "metric", "value", "unit", "target"
        );
        for f in &self.figures {
            println!(
                "{:<10} {:<48} {:>12.3} {:<6} {:<14} {}",
                f.case,
                f.metric,
                f.value,
                f.unit,
                f.target,
                if f.ok { "yes" } else { "NO" }
            );
        }
    }

    /// Writes the figures as JSON, creating the directory.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_vec_pretty(self)?)?;
        println!("\nresults written to {}", path.display());
        Ok(())
    }
}

/// Milliseconds of a duration.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs `f` and returns its result and how long it took.
pub async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, Duration) {
    let start = Instant::now();
    let out = f.await;
    (out, start.elapsed())
}

/// The `q` quantile (0..=1) of `samples` by nearest rank; sorts in place.
pub fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let rank = (q * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}
