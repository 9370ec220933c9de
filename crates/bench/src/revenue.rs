//! The revenue case: 1,000,000 subscription changes over 100,000 accounts,
//! generated from a fixed seed and loaded through the revenue service's own
//! write path (the bulk import, which derives movements, paying spans and
//! roll-ups with the same code as a single write). Then a 24-month
//! `GetMrrReport` and a 12-month `GetRetention` are timed over gRPC, and the
//! same two questions are asked of DuckDB over the same changes exported as
//! CSV; the table shows both times and their ratio, and whether the answers
//! agree. Last, `ExportMovements` streams every movement (rows/s).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bowtie_proto::revenue::revenue_service_client::RevenueServiceClient;
use bowtie_proto::revenue::{
    CutDimension, ExportMovementsRequest, GetMrrReportRequest, GetRetentionRequest, GroupBy,
};
use bowtie_revenue::domain::{
    AccountId, Cancellation, CancellationKind, Interval, Minor, Month, NewSubscription, Segment,
    Subscription, SubscriptionId, Terms, month_start,
};
use bowtie_revenue::service::{AccountInfo, Imported};
use bowtie_runtime::auth::{ApiKeys, hash_key};
use bowtie_runtime::config::{ApiKeySettings, Settings};
use bowtie_runtime::db::Db;
use bowtie_runtime::shutdown::Shutdown;
use tonic::metadata::MetadataValue;
use uuid::Uuid;

use crate::measure::{Report, ms};

/// Accounts in the data set.
pub const ACCOUNTS: usize = 100_000;
/// Subscription changes per account (creation, changes, cancellation).
pub const CHANGES_PER_ACCOUNT: usize = 10;
/// Accounts per import transaction.
const BATCH: usize = 2_000;
/// Timed repetitions of each query (the median is reported).
const REPEAT: usize = 5;
const KEY: &str = "bt_bench_reader_5f1e0c9a7b3d2e4f6a8c0b1d3e5f7a9c";
const DAY: i64 = 86_400_000_000;
/// Plans the generated terms pick from.
const PLANS: [&str; 3] = ["starter", "pro", "scale"];
/// Values of the `region` attribute, one per account in turn.
const REGIONS: [&str; 4] = ["eu", "us", "apac", "latam"];

/// A small deterministic generator (the data set is the same on every run).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: i64) -> i64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % n as u64) as i64
    }
}

/// The data set: what is imported, and the same changes as CSV rows
/// (account, segment, subscription, instant, MRR of the subscription from
/// that instant on).
struct DataSet {
    accounts: Vec<Vec<Imported>>,
    csv: String,
    changes: usize,
}

fn generate() -> DataSet {
    let mut rng = Lcg(0x0b0e_71e5);
    let first = month_start(Month::january(2024)).micros();
    let instant = bowtie_runtime::Instant::from_micros;
    let span_days = 730;
    let mut accounts = Vec::with_capacity(ACCOUNTS);
    let mut csv = String::with_capacity(ACCOUNTS * CHANGES_PER_ACCOUNT * 100);
    csv.push_str("account_id,segment,subscription_id,ts,mrr,plan,region,csm\n");
    let mut changes = 0;
    for a in 0..ACCOUNTS {
        let mut account = AccountInfo::new(
            AccountId(Uuid::from_u128(0x1000_0000 + a as u128)),
            [Segment::Smb, Segment::MidMarket, Segment::Enterprise][a % 3],
            format!("owner-{}", a % 20),
            format!("csm-{}", a % 10),
        );
        let region = REGIONS[a % REGIONS.len()];
        account
            .version
            .cuts
            .attributes
            .insert("region".into(), region.into());
        let interval = [Interval::Month, Interval::Quarter, Interval::Year][rng.below(3) as usize];
        let start = first + rng.below(span_days - 60) * DAY + rng.below(24) * 3_600_000_000;
        let terms = |rng: &mut Lcg| Terms {
            plan: PLANS[rng.below(PLANS.len() as i64) as usize].into(),
            quantity: 1 + rng.below(50),
            unit_price: Minor(1_000 + rng.below(100_000)),
            discount_bp: [0, 0, 1_000, 2_000][rng.below(4) as usize],
        };
        let first_terms = terms(&mut rng);
        let mut s = Subscription::create(
            SubscriptionId(Uuid::from_u128(0x2000_0000 + a as u128)),
            NewSubscription {
                account_id: account.id,
                currency: "USD".into(),
                interval,
                start: instant(start),
                trial_end: None,
                term_end: None,
                terms: first_terms.clone(),
            },
        );
        let mut rows = vec![(
            start,
            first_terms.mrr(interval).get(),
            first_terms.plan.clone(),
        )];
        let cancels = rng.below(4) == 0;
        let remaining = span_days * DAY - (start - first);
        let steps = CHANGES_PER_ACCOUNT as i64;
        for k in 1..steps {
            // Spread the rest of the account's events over its remaining time,
            // one per slot, so instants are distinct and ordered.
            let slot = remaining / steps;
            let at = start + k * slot + rng.below(slot.max(2) - 1) / 2 + 1;
            if k == steps - 1 && cancels {
                let _ = s.cancel(Cancellation {
                    effective_at: instant(at),
                    kind: CancellationKind::Voluntary,
                    reason: "price".into(),
                });
                let plan = rows.last().map(|r| r.2.clone()).unwrap_or_default();
                rows.push((at, 0, plan));
            } else {
                let t = terms(&mut rng);
                let mrr = t.mrr(interval).get();
                let plan = t.plan.clone();
                if s.change(instant(at), t).is_ok() {
                    rows.push((at, mrr, plan));
                }
            }
        }
        for (at, mrr, plan) in &rows {
            csv.push_str(&format!(
                "{},{},{},{at},{mrr},{plan},{region},{}\n",
                account.id, account.segment as i32, s.id, account.csm
            ));
        }
        changes += rows.len();
        accounts.push(vec![Imported {
            account,
            subscription: s,
        }]);
    }
    DataSet {
        accounts,
        csv,
        changes,
    }
}

/// The DuckDB side, run by the bench virtualenv's Python.
const DUCKDB_SCRIPT: &str = r#"
import json, sys, time, duckdb
csv, t0, t1, first, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
con = duckdb.connect()
con.execute(f"CREATE TABLE changes AS SELECT * FROM read_csv('{csv}', header=true, columns={{'account_id':'VARCHAR','segment':'INTEGER','subscription_id':'VARCHAR','ts':'BIGINT','mrr':'BIGINT','plan':'VARCHAR','region':'VARCHAR','csm':'VARCHAR'}})")
TIMELINE = """
WITH d AS (
  SELECT account_id, ts, mrr - COALESCE(LAG(mrr) OVER (PARTITION BY subscription_id ORDER BY ts), 0) AS delta
  FROM changes),
inst AS (SELECT account_id, ts, SUM(delta) AS delta FROM d GROUP BY account_id, ts),
acc AS (
  SELECT account_id, ts, delta,
         SUM(delta) OVER (PARTITION BY account_id ORDER BY ts ROWS UNBOUNDED PRECEDING) AS after
  FROM inst)
"""
WATERFALL = TIMELINE + """,
mv AS (
  SELECT account_id, ts, delta, after - delta AS before, after,
         MAX(CASE WHEN after > 0 THEN 1 ELSE 0 END) OVER (PARTITION BY account_id ORDER BY ts
             ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS paid_before
  FROM acc WHERE delta <> 0),
cls AS (
  SELECT CASE WHEN ts < $first THEN 'opening' ELSE strftime(make_timestamp(ts), '%Y-%m') END AS month,
         delta,
         CASE WHEN before = 0 AND COALESCE(paid_before, 0) = 1 THEN 'reactivation'
              WHEN before = 0 THEN 'new' WHEN after = 0 THEN 'churn'
              WHEN after > before THEN 'expansion' ELSE 'contraction' END AS kind
  FROM mv WHERE ts < $last)
SELECT month, kind, SUM(delta)::BIGINT AS amount, COUNT(*) AS n FROM cls GROUP BY month, kind ORDER BY month, kind
"""
RETENTION = TIMELINE + """,
a0 AS (SELECT account_id, arg_max(after, ts) AS mrr FROM acc WHERE ts <= $t0 GROUP BY account_id),
a1 AS (SELECT account_id, arg_max(after, ts) AS mrr FROM acc WHERE ts <= $t1 GROUP BY account_id)
SELECT COUNT(*), SUM(CASE WHEN a1.mrr > 0 THEN 1 ELSE 0 END)::BIGINT, SUM(a0.mrr)::BIGINT,
       SUM(LEAST(a0.mrr, COALESCE(a1.mrr, 0)))::BIGINT, SUM(COALESCE(a1.mrr, 0))::BIGINT
FROM a0 LEFT JOIN a1 USING (account_id) WHERE a0.mrr > 0
"""
# One subscription per account: an account's plan at an instant is its
# subscription's; MRR per value at each month's end, from the raw changes.
MONTH_ENDS = """
WITH v AS (
  SELECT account_id, ts, mrr, plan, region,
         COALESCE(LEAD(ts) OVER (PARTITION BY subscription_id ORDER BY ts), 9223372036854775807) AS until
  FROM changes),
m AS (SELECT range AS k, epoch_us(make_timestamp(2024 + range // 12, range % 12 + 1, 1, 0, 0, 0)
             + INTERVAL 1 MONTH) - 1 AS at FROM range(0, 24))
SELECT k, {col} AS value, SUM(mrr)::BIGINT AS mrr
FROM m JOIN v ON v.ts <= m.at AND m.at < v.until
WHERE mrr > 0 GROUP BY k, {col} ORDER BY k, value
"""
BY_CSM = TIMELINE + """,
a0 AS (SELECT account_id, arg_max(after, ts) AS mrr FROM acc WHERE ts <= $t0 GROUP BY account_id),
a1 AS (SELECT account_id, arg_max(after, ts) AS mrr FROM acc WHERE ts <= $t1 GROUP BY account_id),
who AS (SELECT account_id, any_value(csm) AS csm FROM changes GROUP BY account_id)
SELECT csm, COUNT(*), SUM(CASE WHEN a1.mrr > 0 THEN 1 ELSE 0 END)::BIGINT, SUM(a0.mrr)::BIGINT,
       SUM(LEAST(a0.mrr, COALESCE(a1.mrr, 0)))::BIGINT, SUM(COALESCE(a1.mrr, 0))::BIGINT
FROM a0 LEFT JOIN a1 USING (account_id) JOIN who USING (account_id) WHERE a0.mrr > 0
GROUP BY csm ORDER BY csm
"""
def timed(sql, params):
    best = []
    out = None
    for _ in range(5):
        start = time.perf_counter()
        out = con.execute(sql, params).fetchall()
        best.append(time.perf_counter() - start)
    best.sort()
    return out, best[len(best) // 2] * 1000
waterfall, waterfall_ms = timed(WATERFALL, {"first": first, "last": last})
retention, retention_ms = timed(RETENTION, {"t0": t0, "t1": t1})
by_plan, by_plan_ms = timed(MONTH_ENDS.format(col="plan"), {})
by_region, by_region_ms = timed(MONTH_ENDS.format(col="region"), {})
by_csm, by_csm_ms = timed(BY_CSM, {"t0": t0, "t1": t1})
ends, running = {}, 0
for month, kind, amount, n in sorted(waterfall, key=lambda r: (r[0] != "opening", r[0])):
    running += amount
    ends[month] = running
print(json.dumps({"waterfall_ms": waterfall_ms, "retention_ms": retention_ms,
                  "end_mrr": ends, "retention": list(retention[0]),
                  "by_plan_ms": by_plan_ms, "by_region_ms": by_region_ms, "by_csm_ms": by_csm_ms,
                  "by_plan": [list(r) for r in by_plan], "by_region": [list(r) for r in by_region],
                  "by_csm": [list(r) for r in by_csm]}))
"#;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// Runs the case and adds its figures to `report`.
pub async fn run(report: &mut Report) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("bowtie-bench-").tempdir()?;
    println!("revenue: generating {ACCOUNTS} accounts");
    let data = generate();
    anyhow::ensure!(
        data.changes == ACCOUNTS * CHANGES_PER_ACCOUNT,
        "generated {} changes",
        data.changes
    );

    let mut settings = Settings::defaults()?;
    let url = format!("sqlite://{}", dir.path().join("revenue.db").display());
    settings.revenue.database = settings.revenue.database.with_url(&url, "revenue");
    settings.revenue.listen = ([127, 0, 0, 1], 0).into();
    settings.server.drain_seconds = 0;
    settings.auth.keys = vec![ApiKeySettings {
        name: "bench".into(),
        hash: hash_key(KEY),
        scopes: vec!["read".into()],
        expires_at: None,
        rate_limit: None,
        role: None,
    }];

    let db = Db::connect(&settings.revenue.database).await?;
    db.migrate::<bowtie_revenue::storage::Migrator>().await?;
    let shutdown = Shutdown::new();
    let app = bowtie_revenue::app(&settings, db.clone(), shutdown.clone()).await?;
    println!("revenue: importing {} subscription changes", data.changes);
    let started = Instant::now();
    let mut movements = 0;
    let mut batches = data.accounts.into_iter();
    loop {
        let batch: Vec<Imported> = batches.by_ref().take(BATCH).flatten().collect();
        if batch.is_empty() {
            break;
        }
        movements += app.import(batch).await?;
    }
    let load = started.elapsed();
    report.add(
        "revenue",
        "import 1M changes (bulk, SQLite)",
        load.as_secs_f64(),
        "s",
        None,
    );
    report.add(
        "revenue",
        "import throughput",
        data.changes as f64 / load.as_secs_f64(),
        "changes/s",
        None,
    );
    report.add("revenue", "movements derived", movements as f64, "", None);
    db.close().await;

    let keys = Arc::new(ApiKeys::from_settings(&settings.auth)?);
    let server = bowtie_revenue::build(&settings, keys, shutdown.clone()).await?;
    let addr = server.local_addr();
    let task = tokio::spawn(server.run_until_stopped(std::future::pending()));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let bearer: MetadataValue<_> = format!("Bearer {KEY}").parse()?;
    let mut client =
        RevenueServiceClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert("authorization", bearer.clone());
            Ok(r)
        })
        .max_decoding_message_size(16 * 1024 * 1024);

    let report_request = GetMrrReportRequest {
        start_month: "2024-01".into(),
        end_month: "2025-12".into(),
        ..GetMrrReportRequest::default()
    };
    let grouped = |dimension: CutDimension, attribute: &str| GetMrrReportRequest {
        group_by: Some(GroupBy {
            dimension: dimension as i32,
            attribute: attribute.into(),
        }),
        ..report_request.clone()
    };
    let by_plan_request = grouped(CutDimension::Plan, "");
    let by_region_request = grouped(CutDimension::Attribute, "region");
    let t0 = month_start(Month::january(2025));
    let t1 = month_start(Month::january(2026));
    let retention_request = GetRetentionRequest {
        start_at: Some(t0.to_timestamp()),
        end_at: Some(t1.to_timestamp()),
        segment: 0,
        owner: String::new(),
        by_owner: false,
        ..GetRetentionRequest::default()
    };
    let mut samples = Vec::new();
    let mut mrr_report = None;
    for _ in 0..REPEAT {
        let start = Instant::now();
        mrr_report = Some(
            client
                .get_mrr_report(report_request.clone())
                .await?
                .into_inner(),
        );
        samples.push(start.elapsed());
    }
    let report_time = median(samples);
    let mut samples = Vec::new();
    let mut retention = None;
    for _ in 0..REPEAT {
        let start = Instant::now();
        retention = Some(
            client
                .get_retention(retention_request.clone())
                .await?
                .into_inner(),
        );
        samples.push(start.elapsed());
    }
    let retention_time = median(samples);
    let mut timed_mrr = async |request: &GetMrrReportRequest| -> anyhow::Result<_> {
        let mut samples = Vec::new();
        let mut answer = None;
        for _ in 0..REPEAT {
            let start = Instant::now();
            answer = Some(client.get_mrr_report(request.clone()).await?.into_inner());
            samples.push(start.elapsed());
        }
        Ok((median(samples), answer.unwrap_or_default()))
    };
    let (by_plan_time, by_plan) = timed_mrr(&by_plan_request).await?;
    let (by_region_time, by_region) = timed_mrr(&by_region_request).await?;
    let by_csm_request = GetRetentionRequest {
        group_by: Some(GroupBy {
            dimension: CutDimension::Csm as i32,
            attribute: String::new(),
        }),
        ..retention_request.clone()
    };
    let mut samples = Vec::new();
    let mut by_csm = None;
    for _ in 0..REPEAT {
        let start = Instant::now();
        by_csm = Some(
            client
                .get_retention(by_csm_request.clone())
                .await?
                .into_inner(),
        );
        samples.push(start.elapsed());
    }
    let by_csm_time = median(samples);
    report.add(
        "revenue",
        "GetMrrReport 24 months by plan (median)",
        ms(by_plan_time),
        "ms",
        Some(50.0),
    );
    report.add(
        "revenue",
        "GetMrrReport 24 months by attribute (median)",
        ms(by_region_time),
        "ms",
        Some(50.0),
    );
    report.add(
        "revenue",
        "GetRetention 12 months by CSM (median)",
        ms(by_csm_time),
        "ms",
        Some(1000.0),
    );
    report.add(
        "revenue",
        "GetMrrReport 24 months (median)",
        ms(report_time),
        "ms",
        Some(1000.0),
    );
    report.add(
        "revenue",
        "GetRetention 12 months (median)",
        ms(retention_time),
        "ms",
        Some(1000.0),
    );

    // The streaming export of every movement, as a warehouse load reads it:
    // default batches, each message taken as it arrives.
    let started = Instant::now();
    let mut stream = client
        .export_movements(ExportMovementsRequest::default())
        .await?
        .into_inner();
    let (mut exported, mut last_cursor) = (0usize, String::new());
    while let Some(message) = stream.message().await? {
        exported += message.rows.len();
        if let Some(r) = message.rows.last() {
            last_cursor.clone_from(&r.cursor);
        }
    }
    let export_time = started.elapsed();
    anyhow::ensure!(
        exported == movements,
        "the export streamed {exported} of {movements} movements"
    );
    anyhow::ensure!(!last_cursor.is_empty(), "the export had no cursor");
    report.add(
        "revenue",
        "ExportMovements, every movement",
        export_time.as_secs_f64(),
        "s",
        None,
    );
    report.add_at_least(
        "revenue",
        "ExportMovements throughput",
        exported as f64 / export_time.as_secs_f64(),
        "rows/s",
        100_000.0,
    );
    shutdown.trigger();
    let _ = task.await;

    let csv = dir.path().join("changes.csv");
    std::fs::write(&csv, &data.csv)?;
    let mut args = vec![csv.display().to_string()];
    args.extend(
        [
            t0,
            t1,
            month_start(Month::january(2024)),
            month_start(Month::january(2026)),
        ]
        .map(|v| v.micros().to_string()),
    );
    let Some(duck) = crate::duckdb::run("revenue", DUCKDB_SCRIPT, dir.path(), &args)? else {
        return Ok(());
    };
    let duck_report = duck["waterfall_ms"].as_f64().unwrap_or(f64::NAN);
    let duck_retention = duck["retention_ms"].as_f64().unwrap_or(f64::NAN);
    report.add(
        "revenue",
        "DuckDB waterfall 24 months (median)",
        duck_report,
        "ms",
        None,
    );
    report.add(
        "revenue",
        "DuckDB retention 12 months (median)",
        duck_retention,
        "ms",
        None,
    );
    report.add(
        "revenue",
        "ratio Bowtie / DuckDB, MRR report",
        ms(report_time) / duck_report,
        "x",
        None,
    );
    report.add(
        "revenue",
        "ratio Bowtie / DuckDB, retention",
        ms(retention_time) / duck_retention,
        "x",
        None,
    );

    for (name, ours, key) in [
        ("waterfall by plan", by_plan_time, "by_plan_ms"),
        ("waterfall by attribute", by_region_time, "by_region_ms"),
        ("retention by CSM", by_csm_time, "by_csm_ms"),
    ] {
        let theirs = duck[key].as_f64().unwrap_or(f64::NAN);
        report.add(
            "revenue",
            &format!("DuckDB {name} (median)"),
            theirs,
            "ms",
            None,
        );
        report.add(
            "revenue",
            &format!("ratio Bowtie / DuckDB, {name}"),
            ms(ours) / theirs,
            "x",
            None,
        );
    }
    // Each group's end MRR per month, and retention per CSM, as DuckDB's.
    let group_ends = |answer: &bowtie_proto::revenue::GetMrrReportResponse| {
        let mut out: Vec<(i64, String, i64)> = Vec::new();
        for g in &answer.groups {
            for (k, p) in g.periods.iter().enumerate() {
                let mrr = p.end_mrr.as_ref().map_or(0, |m| m.minor_units);
                if mrr != 0 {
                    out.push((k as i64, g.value.clone(), mrr));
                }
            }
        }
        out.sort();
        out
    };
    let duck_groups = |key: &str| {
        let mut out: Vec<(i64, String, i64)> = duck[key]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|r| {
                        (
                            r[0].as_i64().unwrap_or(-1),
                            r[1].as_str().unwrap_or("").to_owned(),
                            r[2].as_i64().unwrap_or(-1),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    };
    let csm_rows: Vec<Vec<serde_json::Value>> = by_csm
        .unwrap_or_default()
        .groups
        .iter()
        .map(|g| {
            vec![
                g.value.clone().into(),
                g.accounts_start.into(),
                g.accounts_retained.into(),
                g.mrr_start.as_ref().map_or(0, |m| m.minor_units).into(),
                g.mrr_retained.as_ref().map_or(0, |m| m.minor_units).into(),
                g.mrr_end.as_ref().map_or(0, |m| m.minor_units).into(),
            ]
        })
        .collect();
    let mut csm_rows = csm_rows;
    csm_rows.sort_by_key(|r| r[0].as_str().unwrap_or("").to_owned());
    let cuts_agree = group_ends(&by_plan) == duck_groups("by_plan")
        && group_ends(&by_region) == duck_groups("by_region")
        && serde_json::Value::from(csm_rows) == duck["by_csm"];
    report.add(
        "revenue",
        "cut answers equal DuckDB's (1 = yes)",
        f64::from(u8::from(cuts_agree)),
        "",
        None,
    );

    // The two engines must agree to the minor unit.
    let periods = mrr_report.map(|r| r.periods).unwrap_or_default();
    let ends_agree = periods.iter().all(|p| {
        duck["end_mrr"][p.period.as_str()].as_i64() == p.end_mrr.as_ref().map(|m| m.minor_units)
    });
    let r = retention.unwrap_or_default();
    let ours = [
        r.accounts_start,
        r.accounts_retained,
        r.mrr_start.map_or(0, |m| m.minor_units),
        r.mrr_retained.map_or(0, |m| m.minor_units),
        r.mrr_end.map_or(0, |m| m.minor_units),
    ];
    let theirs: Vec<i64> = duck["retention"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_i64()).collect())
        .unwrap_or_default();
    let agree = ends_agree && theirs == ours;
    report.add(
        "revenue",
        "answers equal DuckDB's (1 = yes)",
        f64::from(u8::from(agree)),
        "",
        None,
    );
    println!(
        "revenue: NRR {:.4}, GRR {:.4}, logo retention {:.4}; end MRR 2025-12 {}",
        r.nrr,
        r.grr,
        r.logo_retention,
        periods
            .last()
            .and_then(|p| p.end_mrr.as_ref())
            .map_or(0, |m| m.minor_units)
    );
    Ok(())
}
