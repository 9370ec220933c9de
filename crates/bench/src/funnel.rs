//! The funnel case: 1,000,000 transitions over 100,000 accounts spread over
//! 24 months, loaded through the funnel's bulk import (the same admission and
//! stage-entry derivation as `RecordTransition`), then measured through gRPC:
//! the 24-month funnel report (target < 1 s) and journey lookups (target
//! p99 < 5 ms). DuckDB then answers the same period report from the same
//! transitions exported as CSV (window functions over the raw events), and
//! both answers must agree stage by stage.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bowtie_funnel::domain::{NewTransition, Profile};
use bowtie_proto::common::{Period, Segment, Stage};
use bowtie_proto::funnel::funnel_service_client::FunnelServiceClient;
use bowtie_proto::funnel::{
    CohortBy, GetFunnelReportRequest, GetFunnelReportResponse, GetJourneyRequest,
};
use bowtie_runtime::auth::{ApiKeys, hash_key};
use bowtie_runtime::config::{ApiKeySettings, Settings};
use bowtie_runtime::db::Db;
use bowtie_runtime::feed::Feed;
use bowtie_runtime::peer::AccountDirectory;
use bowtie_runtime::shutdown::Shutdown;
use bowtie_runtime::store::Store;
use bowtie_runtime::{AccountId, Instant as At};
use tonic::metadata::MetadataValue;
use uuid::Uuid;

use crate::measure::{Report, ms, quantile, timed};

/// Accounts in the data set.
pub const ACCOUNTS: usize = 100_000;
/// Transitions per account.
pub const PER_ACCOUNT: usize = 10;
const DAY: i64 = 86_400_000_000;
/// 2025-01-01T00:00:00Z.
const START: i64 = 1_735_689_600_000_000;
const KEY: &str = "bench-key";

/// A small deterministic generator (64-bit LCG).
pub struct Lcg(pub u64);

impl Lcg {
    /// Next 31 random bits.
    pub fn step(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    /// Uniform in 0..n.
    pub fn below(&mut self, n: u64) -> i64 {
        (self.step() % n.max(1)) as i64
    }
}

/// Exactly `PER_ACCOUNT` transitions: forward through the bowtie with some
/// losses and returns, renewals (repeated GROWTH) once grown.
fn journey(rng: &mut Lcg) -> Vec<NewTransition> {
    let account_id = AccountId(Uuid::nil());
    let mut out = Vec::with_capacity(PER_ACCOUNT);
    let mut day = rng.below(700);
    let mut stage = 1;
    while out.len() < PER_ACCOUNT {
        let (to, reason) = match stage {
            8 => (Stage::Lost, "no_budget"),
            9 => (Stage::Churned, "price"),
            s => (Stage::try_from(s).unwrap_or(Stage::Awareness), ""),
        };
        out.push(NewTransition {
            account_id,
            stage: to,
            occurred_at: At::from_micros(START + day * DAY + rng.below(DAY as u64)),
            reason: reason.into(),
            source: "bench".into(),
        });
        day += 1 + rng.below(20);
        let roll = rng.below(100);
        stage = match stage {
            8 | 9 => 1,
            7 if roll < 90 => 7,
            s if s < 4 && roll < 25 => 8,
            s if (4..7).contains(&s) && roll < 5 => 9,
            s if s < 7 => s + 1,
            _ => 9,
        };
    }
    out
}

/// The data set, account by account: id, profile and journey.
fn data_set() -> impl Iterator<Item = (AccountId, Profile, Vec<NewTransition>)> {
    let mut rng = Lcg(7);
    let segments = [Segment::Smb, Segment::MidMarket, Segment::Enterprise];
    (0..ACCOUNTS).map(move |i| {
        let id = AccountId(Uuid::from_u128(
            0x0190_0000_0000_7000_8000_0000_0000_0000 + i as u128,
        ));
        let profile = Profile {
            segment: segments[i % 3],
            owner: format!("owner-{}", i % 20),
        };
        let path = journey(&mut rng)
            .into_iter()
            .map(|t| NewTransition {
                account_id: id,
                ..t
            })
            .collect();
        (id, profile, path)
    })
}

fn settings(dir: &std::path::Path) -> anyhow::Result<Settings> {
    let mut settings = Settings::defaults()?;
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    for (service, name) in [
        (&mut settings.accounts, "accounts"),
        (&mut settings.funnel, "funnel"),
    ] {
        service.listen = any;
        let url = format!("sqlite://{}", dir.join(format!("{name}.db")).display());
        service.database = service.database.with_url(&url, name);
    }
    settings.server.drain_seconds = 0;
    settings.auth.keys = vec![ApiKeySettings {
        name: "bench".into(),
        hash: hash_key(KEY),
        scopes: vec!["admin".into()],
        expires_at: None,
        rate_limit: None,
        role: None,
    }];
    settings.peers.api_key = KEY.to_owned().into();
    Ok(settings)
}

/// The 24-month report request.
fn two_years(cohort_by: CohortBy) -> GetFunnelReportRequest {
    GetFunnelReportRequest {
        period: Some(Period {
            start: Some(bowtie_runtime::validate::to_timestamp(START)),
            end: Some(bowtie_runtime::validate::to_timestamp(START + 730 * DAY)),
        }),
        segment: 0,
        owner: String::new(),
        cohort_by: cohort_by as i32,
    }
}

/// Runs the case and adds its figures to `report`.
pub async fn run(report: &mut Report) -> anyhow::Result<()> {
    // BOWTIE_BENCH_DATA=<dir> keeps the data set between runs (and reuses it).
    let temp = tempfile::tempdir()?;
    let dir = std::env::var_os("BOWTIE_BENCH_DATA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| temp.path().to_owned());
    std::fs::create_dir_all(&dir)?;
    let reuse = dir.join("funnel.db").exists();
    let mut settings = settings(&dir)?;

    let loaded = Instant::now();
    if !reuse {
        println!(
            "funnel: loading {} transitions over {ACCOUNTS} accounts",
            ACCOUNTS * PER_ACCOUNT
        );
        let db = Db::connect(&settings.funnel.database).await?;
        db.migrate::<bowtie_funnel::storage::Migrator>().await?;
        let store = Store::new(db.clone(), Feed::new(db.clone(), Shutdown::new()));
        let app = bowtie_funnel::service::Funnel::new(
            store,
            AccountDirectory::connect(&settings.peers)?,
            bowtie_funnel::index::JourneyIndex::new(),
        );
        let mut batch = Vec::new();
        for (id, profile, path) in data_set() {
            batch.push((id, profile, path));
            if batch.len() == 2_000 {
                app.import_journeys(std::mem::take(&mut batch)).await?;
            }
        }
        if !batch.is_empty() {
            app.import_journeys(batch).await?;
        }
        db.close().await;
        report.add(
            "funnel",
            "bulk load 1M transitions",
            loaded.elapsed().as_secs_f64(),
            "s",
            None,
        );
    }

    let keys = Arc::new(ApiKeys::from_settings(&settings.auth)?);
    let shutdown = Shutdown::new();
    let accounts = bowtie_accounts::build(&settings, keys.clone(), shutdown.clone()).await?;
    settings.peers.accounts = format!("http://{}", accounts.local_addr());
    tokio::spawn(accounts.run_until_stopped(std::future::pending()));
    let funnel = bowtie_funnel::build(&settings, keys, shutdown.clone()).await?;
    let addr = funnel.local_addr();
    tokio::spawn(funnel.run_until_stopped(std::future::pending()));

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let auth = MetadataValue::try_from(format!("Bearer {KEY}"))?;
    let mut client =
        FunnelServiceClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert("authorization", auth.clone());
            Ok(r)
        })
        .max_decoding_message_size(64 << 20);

    // The first report waits for the journey index to load from the database.
    let started = Instant::now();
    client
        .get_funnel_report(two_years(CohortBy::StageEntry))
        .await?;
    report.add(
        "funnel",
        "first report after start (loads the index)",
        ms(started.elapsed()),
        "ms",
        None,
    );

    let mut period_view = None;
    for (label, cohort_by) in [
        (
            "GetFunnelReport 24 months, period view",
            CohortBy::StageEntry,
        ),
        (
            "GetFunnelReport 24 months, cohort view",
            CohortBy::AttemptStart,
        ),
    ] {
        let request = two_years(cohort_by);
        let mut samples = Vec::new();
        let mut answer = GetFunnelReportResponse::default();
        for _ in 0..5 {
            let (got, took) = timed(client.get_funnel_report(request.clone())).await;
            answer = got?.into_inner();
            samples.push(took);
        }
        let volume = answer.stages.first().map_or(0, |s| s.volume);
        println!("  ({label}: AWARENESS volume {volume})");
        let median = ms(quantile(&mut samples, 0.5));
        report.add(
            "funnel",
            &format!("{label} (median of 5)"),
            median,
            "ms",
            Some(1000.0),
        );
        if cohort_by == CohortBy::StageEntry {
            period_view = Some((answer, median));
        }
    }

    let mut rng = Lcg(11);
    let mut samples: Vec<Duration> = Vec::with_capacity(5_000);
    for _ in 0..5_000 {
        let i = rng.below(ACCOUNTS as u64) as u128;
        let id = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + i);
        let (answer, took) = timed(client.get_journey(GetJourneyRequest {
            account_id: id.to_string(),
        }))
        .await;
        answer?;
        samples.push(took);
    }
    report.add(
        "funnel",
        "GetJourney p50 (5,000 lookups)",
        ms(quantile(&mut samples, 0.5)),
        "ms",
        None,
    );
    report.add(
        "funnel",
        "GetJourney p99 (5,000 lookups)",
        ms(quantile(&mut samples, 0.99)),
        "ms",
        Some(5.0),
    );
    shutdown.trigger();
    if let Some((answer, median)) = period_view {
        compare_with_duckdb(report, &dir, &answer, median)?;
    }
    Ok(())
}

/// The DuckDB side, run by the bench virtualenv's Python: the period report
/// (stage entries in the period; conversion to the next stage within the
/// same attempt; drop-off when the next event is LOST or CHURNED; median
/// and p90 time to the next stage) straight from the raw transitions.
const DUCKDB_SCRIPT: &str = r#"
import json, sys, time, duckdb
csv, start, end = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
con = duckdb.connect()
con.execute(f"CREATE TABLE t AS SELECT * FROM read_csv('{csv}', header=true, columns={{'account_id':'VARCHAR','stage':'INTEGER','ts':'BIGINT'}})")
REPORT = '''
WITH ordered AS (
  SELECT account_id, stage, ts,
         LAG(stage) OVER (PARTITION BY account_id ORDER BY ts, stage) AS prev
  FROM t),
kept AS (
  SELECT account_id, stage, ts,
         ROW_NUMBER() OVER (PARTITION BY account_id ORDER BY ts, stage) AS pos
  FROM ordered WHERE prev IS NULL OR prev <> stage),
att AS (
  SELECT account_id, stage, ts, pos,
         1 + COALESCE(SUM(CASE WHEN stage IN (8, 9) THEN 1 ELSE 0 END) OVER (
             PARTITION BY account_id ORDER BY pos
             ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS attempt,
         LEAD(stage) OVER (PARTITION BY account_id ORDER BY pos) AS following
  FROM kept),
entries AS (SELECT * FROM att WHERE stage <= 7 AND ts >= $start AND ts < $end),
nxt AS (
  SELECT e.account_id, e.pos, MIN(b.ts) AS next_at
  FROM entries e JOIN att b
    ON b.account_id = e.account_id AND b.attempt = e.attempt
   AND b.pos > e.pos AND b.stage = e.stage + 1
  WHERE e.stage < 7
  GROUP BY e.account_id, e.pos)
SELECT e.stage, COUNT(*) AS volume, COUNT(n.next_at) AS converted,
       SUM(CASE WHEN e.following IN (8, 9) THEN 1 ELSE 0 END) AS dropped,
       quantile_cont(n.next_at - e.ts, 0.5) AS median_us,
       quantile_cont(n.next_at - e.ts, 0.9) AS p90_us
FROM entries e LEFT JOIN nxt n USING (account_id, pos)
GROUP BY e.stage ORDER BY e.stage
'''
times, rows = [], None
for _ in range(5):
    started = time.perf_counter()
    rows = con.execute(REPORT, {"start": start, "end": end}).fetchall()
    times.append(time.perf_counter() - started)
times.sort()
print(json.dumps({"report_ms": times[len(times) // 2] * 1000,
                  "stages": [[int(r[0]), int(r[1]), int(r[2]), int(r[3]), r[4], r[5]] for r in rows]}))
"#;

/// Asks DuckDB for the same period report and adds the time, the ratio and
/// whether the answers agree (volumes, conversions and drop-offs exactly,
/// times to the next stage to the microsecond).
fn compare_with_duckdb(
    report: &mut Report,
    dir: &Path,
    ours: &GetFunnelReportResponse,
    our_ms: f64,
) -> anyhow::Result<()> {
    let mut csv = String::from("account_id,stage,ts\n");
    for (id, _, path) in data_set() {
        for t in path {
            writeln!(csv, "{id},{},{}", t.stage as i32, t.occurred_at.micros())?;
        }
    }
    let file = dir.join("transitions.csv");
    std::fs::write(&file, csv)?;
    let args = [file.display().to_string()]
        .into_iter()
        .chain([START, START + 730 * DAY].map(|v| v.to_string()))
        .collect::<Vec<_>>();
    let Some(duck) = crate::duckdb::run("funnel", DUCKDB_SCRIPT, dir, &args)? else {
        return Ok(());
    };
    let duck_ms = duck["report_ms"].as_f64().unwrap_or(f64::NAN);
    report.add(
        "funnel",
        "DuckDB period report 24 months (median of 5)",
        duck_ms,
        "ms",
        None,
    );
    report.add(
        "funnel",
        "ratio Bowtie / DuckDB, funnel report",
        our_ms / duck_ms,
        "x",
        None,
    );
    let micros = |d: &Option<prost_types::Duration>| {
        d.as_ref()
            .map(|d| d.seconds as f64 * 1e6 + f64::from(d.nanos) / 1e3)
    };
    let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => (a - b).abs() < 1.0,
        _ => false,
    };
    let theirs = duck["stages"].as_array().cloned().unwrap_or_default();
    let mut agree = theirs.len() == ours.stages.iter().filter(|s| s.volume > 0).count();
    for row in &theirs {
        let stage = row[0].as_i64().unwrap_or_default();
        let Some(m) = ours.stages.iter().find(|m| i64::from(m.stage) == stage) else {
            agree = false;
            continue;
        };
        let same = [m.volume, m.converted, m.dropped]
            .iter()
            .zip(1..)
            .all(|(v, i)| row[i].as_i64() == Some(*v))
            && close(micros(&m.median_time_to_next), row[4].as_f64())
            && close(micros(&m.p90_time_to_next), row[5].as_f64());
        if !same {
            println!("  stage {stage}: Bowtie {m:?}, DuckDB {row}");
        }
        agree &= same;
    }
    report.add(
        "funnel",
        "answers equal DuckDB's (1 = yes)",
        f64::from(u8::from(agree)),
        "",
        None,
    );
    Ok(())
}
