//! Integration tests of the `bowtie` command's library against real
//! accounts, revenue and funnel servers on random ports, on SQLite and on
//! PostgreSQL: the demo company, CSV import and the terminal reports.

mod demo;
mod import;
mod report;
mod scoring;
mod success;

use bowtie::demo::DemoOptions;
use bowtie::demo::plan::anchor_for;

/// 2026-11-01T00:00:00Z: the demo anchor of the tests, so their figures
/// do not move from day to day (today's midnight if the clock is earlier).
const TEST_ANCHOR: i64 = 1_793_491_200;

/// The default demo (2,000 accounts, seed 42) at the tests' anchor.
pub fn default_demo() -> DemoOptions {
    DemoOptions {
        anchor: small_demo().anchor,
        ..DemoOptions::new(0)
    }
}

/// A small demo: 200 accounts, seed 6 (which has churn, comebacks and
/// declining accounts at this size).
pub fn small_demo() -> DemoOptions {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
    DemoOptions {
        seed: 6,
        accounts: 200,
        anchor: TEST_ANCHOR.min(anchor_for(now)),
    }
}
