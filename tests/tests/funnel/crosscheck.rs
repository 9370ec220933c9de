//! The funnel report on a generated data set equals an independent
//! computation: a SQL query over the stored transitions that derives stage
//! entries, attempts, conversions and drop-offs with window functions, and
//! percentiles worked out here.

use std::collections::BTreeMap;

use bowtie_proto::common::{Segment, Stage};
use bowtie_proto::funnel::{CohortBy, GetFunnelReportRequest, GetFunnelReportResponse};
use bowtie_runtime::db::Db;
use bowtie_testkit::{TestDatabase, backend_test};
use sea_orm::{ConnectionTrait, Statement};

use crate::*;

backend_test!(the_report_on_generated_journeys_equals_an_independent_sql_computation);

/// A small deterministic generator (64-bit LCG), so failures reproduce.
struct Lcg(u64);

impl Lcg {
    fn step(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> i64 {
        (self.step() % n) as i64
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent as i64
    }
}

/// A journey: forward steps of 1..30 days, some skipping EDUCATION, some
/// lost or churned, some lost leads returning.
fn generate(rng: &mut Lcg) -> Vec<(Stage, i64)> {
    let mut path = Vec::new();
    let mut day = rng.below(150) - 30;
    let mut stage = 1;
    loop {
        path.push((Stage::try_from(stage).unwrap_or(Stage::Awareness), day));
        day += 1 + rng.below(30);
        if stage < 7 && rng.chance(70) {
            stage += if stage == 1 && rng.chance(15) { 2 } else { 1 };
        } else if rng.chance(50) {
            let outcome = if stage >= 4 {
                Stage::Churned
            } else {
                Stage::Lost
            };
            path.push((outcome, day));
            day += 1 + rng.below(60);
            if outcome == Stage::Lost && rng.chance(30) {
                stage = 1;
                continue;
            }
            return path;
        } else {
            return path;
        }
    }
}

/// One stage entry as the SQL derives it.
struct Row {
    stage: i32,
    entered: i64,
    next: Option<i64>,
    commit: Option<i64>,
    exit: Option<i32>,
}

const INDEPENDENT_SQL: &str = "
WITH ordered AS (
  SELECT account_id, stage, occurred_at,
         LAG(stage) OVER (PARTITION BY account_id ORDER BY occurred_at, stage) AS prev
  FROM transitions
), kept AS (
  SELECT account_id, stage, occurred_at,
         ROW_NUMBER() OVER (PARTITION BY account_id ORDER BY occurred_at, stage) AS pos
  FROM ordered
  WHERE prev IS NULL OR prev <> stage
), attempts AS (
  SELECT k.account_id, k.stage, k.occurred_at, k.pos,
         1 + (SELECT COUNT(*) FROM kept o
              WHERE o.account_id = k.account_id AND o.pos < k.pos AND o.stage IN (8, 9)) AS attempt
  FROM kept k
)
SELECT a.stage AS stage, a.occurred_at AS entered,
  (SELECT MIN(b.occurred_at) FROM attempts b
    WHERE b.account_id = a.account_id AND b.attempt = a.attempt AND b.pos > a.pos
      AND b.stage = a.stage + 1 AND a.stage < 7) AS next_at,
  (SELECT MIN(b.occurred_at) FROM attempts b
    WHERE b.account_id = a.account_id AND b.attempt = a.attempt AND b.pos > a.pos
      AND b.stage = 4 AND a.stage < 4) AS commit_at,
  (SELECT MIN(b.stage) FROM attempts b
    WHERE b.account_id = a.account_id AND b.pos = a.pos + 1 AND b.stage IN (8, 9)) AS exit_stage
FROM attempts a
WHERE a.stage <= 7 AND a.occurred_at >= {start} AND a.occurred_at < {end}";

/// Linear interpolation between closest ranks, in microseconds.
fn percentile(mut xs: Vec<i64>, q: f64) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    xs.sort();
    let h = q * (xs.len() as f64 - 1.0);
    let below = xs[h.floor() as usize] as f64;
    let above = xs[h.ceil() as usize] as f64;
    Some(below + (h - h.floor()) * (above - below))
}

fn micros(d: &Option<prost_types::Duration>) -> Option<f64> {
    d.as_ref()
        .map(|d| d.seconds as f64 * 1e6 + f64::from(d.nanos) / 1e3)
}

fn same(actual: Option<f64>, expected: Option<f64>, what: &str) {
    match (actual, expected) {
        (None, None) => {}
        (Some(a), Some(e)) => assert!((a - e).abs() < 1.0, "{what}: {a} != {e}"),
        _ => panic!("{what}: {actual:?} != {expected:?}"),
    }
}

async fn the_report_on_generated_journeys_equals_an_independent_sql_computation(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Suite::start(db).await?;
    let mut funnel = suite.funnel();
    let mut rng = Lcg(20_261_123);
    let mut all = Vec::new();
    for i in 0..60 {
        let id = suite
            .customer(&format!("Account {i}"), Segment::Smb, "ana")
            .await?;
        for (stage, on_day) in generate(&mut rng) {
            all.push((id.clone(), stage, on_day));
        }
    }
    // Imported out of order: a deterministic shuffle.
    for i in (1..all.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        all.swap(i, j);
    }
    for (id, stage, on_day) in &all {
        record(&mut funnel, id, *stage, *on_day).await?;
    }

    let (start, end) = (JAN_2026 * 1_000_000, (JAN_2026 + 120 * DAY) * 1_000_000);
    let conn = Db::connect(&db.service_database("funnel")).await?;
    let sql = INDEPENDENT_SQL
        .replace("{start}", &start.to_string())
        .replace("{end}", &end.to_string());
    let rows: Vec<Row> = conn
        .reader()
        .query_all(Statement::from_string(conn.backend(), sql))
        .await?
        .iter()
        .map(|r| {
            Ok(Row {
                stage: i32::try_from(
                    r.try_get::<i64>("", "stage")
                        .or_else(|_| r.try_get::<i32>("", "stage").map(i64::from))?,
                )?,
                entered: r.try_get("", "entered")?,
                next: r.try_get("", "next_at")?,
                commit: r.try_get("", "commit_at")?,
                exit: r
                    .try_get::<Option<i64>>("", "exit_stage")
                    .or_else(|_| {
                        r.try_get::<Option<i32>>("", "exit_stage")
                            .map(|v| v.map(i64::from))
                    })?
                    .map(i32::try_from)
                    .transpose()?,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    conn.close().await;
    assert!(
        rows.len() > 100,
        "the generated set is big enough to mean something"
    );

    let report: GetFunnelReportResponse = funnel
        .get_funnel_report(GetFunnelReportRequest {
            period: period(0, 120),
            segment: 0,
            owner: String::new(),
            cohort_by: CohortBy::StageEntry as i32,
        })
        .await?
        .into_inner();

    let mut by_stage: BTreeMap<i32, Vec<&Row>> = BTreeMap::new();
    for r in &rows {
        by_stage.entry(r.stage).or_default().push(r);
    }
    let mut product = 1.0;
    for metrics in &report.stages {
        let entries = by_stage.get(&metrics.stage).cloned().unwrap_or_default();
        let durations: Vec<i64> = entries
            .iter()
            .filter_map(|r| r.next.map(|n| n - r.entered))
            .collect();
        let dropped = entries.iter().filter(|r| r.exit.is_some()).count() as i64;
        let what = format!("stage {}", metrics.stage);
        assert_eq!(metrics.volume, entries.len() as i64, "{what} volume");
        assert_eq!(
            metrics.converted,
            durations.len() as i64,
            "{what} converted"
        );
        assert_eq!(metrics.dropped, dropped, "{what} dropped");
        let rate = if entries.is_empty() {
            0.0
        } else {
            durations.len() as f64 / entries.len() as f64
        };
        assert!(
            (metrics.conversion_rate - rate).abs() < 1e-12,
            "{what} rate"
        );
        if metrics.stage <= 3 {
            product *= rate;
        }
        same(
            micros(&metrics.median_time_to_next),
            percentile(durations.clone(), 0.5),
            &what,
        );
        same(
            micros(&metrics.p90_time_to_next),
            percentile(durations, 0.9),
            &what,
        );
    }
    assert!((report.left_side_win_rate_product - product).abs() < 1e-12);

    let awareness = by_stage
        .get(&(Stage::Awareness as i32))
        .cloned()
        .unwrap_or_default();
    let cycles: Vec<i64> = awareness
        .iter()
        .filter_map(|r| r.commit.map(|c| c - r.entered))
        .collect();
    assert_eq!(report.awareness_attempts, awareness.len() as i64);
    assert_eq!(report.won_attempts, cycles.len() as i64);
    same(
        micros(&report.median_cycle_time),
        percentile(cycles.clone(), 0.5),
        "cycle median",
    );
    same(
        micros(&report.p90_cycle_time),
        percentile(cycles, 0.9),
        "cycle p90",
    );
    Ok(())
}
