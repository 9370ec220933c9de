//! The scoring case: 1,000,000 signals over 100,000 accounts streamed
//! through `RecordSignals` (each batch acknowledged after it committed;
//! target >= 100,000 signals/s on SQLite, >= 50,000/s on PostgreSQL), then
//! `RecomputeHealth` rescoring all 100,000 accounts (target < 2 s).
//!
//! The accounts are known to scoring up front, as the accounts feed would
//! have announced them (their profiles are loaded through the library), so
//! ingest checks them in memory; the accounts service itself is not running,
//! and a signal for an unknown account would fail the run. Signals spread
//! over the last 60 days: logins, feature use, active users, tickets,
//! complaints, survey answers and departures, with a fixed seed. With
//! `BOWTIE_BENCH_DATABASE_URL` set the case runs again on PostgreSQL (a fresh
//! schema, dropped afterwards).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bowtie_proto::scoring::scoring_service_client::ScoringServiceClient;
use bowtie_proto::scoring::{RecomputeHealthRequest, RecordSignalsRequest, Signal, SignalType};
use bowtie_runtime::AccountId;
use bowtie_runtime::auth::{ApiKeys, hash_key};
use bowtie_runtime::config::{ApiKeySettings, Settings};
use bowtie_runtime::db::Db;
use bowtie_runtime::shutdown::Shutdown;
use futures::StreamExt;
use tonic::metadata::MetadataValue;
use uuid::Uuid;

use crate::funnel::Lcg;
use crate::measure::{Report, ms, timed};

/// Accounts in the data set.
pub const ACCOUNTS: usize = 100_000;
/// Signals streamed.
pub const SIGNALS: usize = 1_000_000;
/// Signals per batch (one transaction, one acknowledgement).
pub const BATCH: usize = 5_000;
/// Concurrent streams.
pub const STREAMS: usize = 4;
const KEY: &str = "bench-key";
const DAY: i64 = 86_400;

fn settings(url: &str, schema: &str) -> anyhow::Result<Settings> {
    let mut settings = Settings::defaults()?;
    settings.scoring.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    settings.scoring.database = settings.scoring.database.with_url(url, schema);
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
    if let Ok(ms) = std::env::var("BENCH_RECOMPUTE_MS") {
        settings.scoring_policy.recompute_interval_ms = ms.parse()?;
    }
    for peer in [
        &mut settings.peers.accounts,
        &mut settings.peers.revenue,
        &mut settings.peers.funnel,
    ] {
        *peer = "http://127.0.0.1:1".into();
    }
    Ok(settings)
}

/// The batch `b` of the data set: deterministic from the seed and `b`.
fn batch(b: usize, ids: &[Uuid], now: i64) -> RecordSignalsRequest {
    let mut rng = Lcg(0x5c0_41e6 ^ (b as u64).wrapping_mul(0x9e37_79b9));
    let signals = (0..BATCH)
        .map(|i| {
            let n = b * BATCH + i;
            let account = &ids[rng.below(ids.len() as u64) as usize];
            let roll = rng.below(100);
            let (kind, value) = match roll {
                0..=54 => (SignalType::Login, 1),
                55..=64 => (SignalType::FeatureUsed, 1 + rng.below(3)),
                65..=74 => (SignalType::ActiveUsers, 1 + rng.below(40)),
                75..=82 => (SignalType::TicketOpened, 1),
                83..=88 => (SignalType::TicketResolved, 1),
                89..=90 => (SignalType::Complaint, 1),
                91..=94 => (SignalType::NpsAnswer, rng.below(11)),
                95..=97 => (SignalType::CsatAnswer, 1 + rng.below(5)),
                98 => (SignalType::StakeholderLeft, 1),
                _ => (SignalType::FirstValueReached, 1),
            };
            Signal {
                idempotency_key: format!("bench-{n}"),
                account_id: account.to_string(),
                r#type: kind as i32,
                value,
                occurred_at: Some(prost_types::Timestamp {
                    seconds: now - rng.below(60 * DAY as u64),
                    nanos: 0,
                }),
            }
        })
        .collect();
    RecordSignalsRequest { signals }
}

/// Runs the case on SQLite, then on PostgreSQL when configured.
pub async fn run(report: &mut Report) -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let url = format!("sqlite://{}", temp.path().join("scoring.db").display());
    let audited = run_on(report, "SQLite", &url, "scoring", 100_000.0, true).await?;
    // The same ingest on a fresh database without the audit log: what the
    // log costs (docs/design.md, "Audit log").
    let url = format!("sqlite://{}", temp.path().join("unaudited.db").display());
    let unaudited = run_on(report, "SQLite", &url, "scoring", 100_000.0, false).await?;
    let ratio = if unaudited > 0.0 {
        audited / unaudited
    } else {
        0.0
    };
    println!(
        "scoring: signals with / without the audit log = {ratio:.3} (the log costs {:.1}%)",
        (1.0 - ratio) * 100.0
    );
    report.add_at_least(
        "scoring",
        "ratio RecordSignals audited / not audited (SQLite)",
        ratio,
        "x",
        0.85,
    );
    if let Ok(url) = std::env::var("BOWTIE_BENCH_DATABASE_URL")
        && !url.trim().is_empty()
    {
        let schema = format!("bench_scoring_{}", Uuid::new_v4().simple());
        let outcome = run_on(report, "PostgreSQL", &url, &schema, 50_000.0, true).await;
        // The stopped server's last transactions end first.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let db = Db::connect(&settings(&url, &schema)?.scoring.database).await?;
        let mut dropped = Ok(());
        for _ in 0..5 {
            dropped = bowtie_runtime::pg::drop_schema(db.writer(), &schema).await;
            if dropped.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        db.close().await;
        outcome?;
        dropped?;
    }
    Ok(())
}

async fn run_on(
    report: &mut Report,
    engine: &str,
    url: &str,
    schema: &str,
    target: f64,
    audited: bool,
) -> anyhow::Result<f64> {
    let settings = settings(url, schema)?;
    let suffix = if audited { "" } else { ", audit log off" };
    println!("scoring ({engine}{suffix}): {ACCOUNTS} accounts, {SIGNALS} signals");
    let mut rng = Lcg(42);
    let ids: Vec<Uuid> = (0..ACCOUNTS)
        .map(|_| Uuid::from_u64_pair(rng.step() << 32 | rng.step(), rng.step() << 32 | rng.step()))
        .collect();
    {
        let db = Db::connect(&settings.scoring.database).await?;
        db.migrate::<bowtie_scoring::storage::Migrator>().await?;
        let accounts: Vec<AccountId> = ids.iter().copied().map(AccountId).collect();
        bowtie_scoring::storage::ensure_profiles(
            db.writer(),
            &accounts,
            bowtie_runtime::Instant::EPOCH,
        )
        .await?;
        db.close().await;
    }
    let keys = Arc::new(ApiKeys::from_settings(&settings.auth)?.audited(audited));
    let shutdown = Shutdown::new();
    let server = bowtie_scoring::build(&settings, keys, shutdown.clone()).await?;
    let addr = server.local_addr();
    let task = tokio::spawn(server.run_until_stopped(std::future::pending()));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let bearer: MetadataValue<_> = format!("Bearer {KEY}").parse()?;
    let client =
        ScoringServiceClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert("authorization", bearer.clone());
            Ok(r)
        })
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let ids = Arc::new(ids);
    let batches = SIGNALS / BATCH;
    let started = Instant::now();
    let mut streams = Vec::new();
    for s in 0..STREAMS {
        let mut client = client.clone();
        let ids = ids.clone();
        streams.push(tokio::spawn(async move {
            let mine: Vec<usize> = (s..batches).step_by(STREAMS).collect();
            let expected = mine.len();
            let outbound = futures::stream::iter(mine).map(move |b| batch(b, &ids, now));
            let mut acks = client.record_signals(outbound).await?.into_inner();
            let mut recorded = 0i64;
            let mut count = 0;
            while let Some(ack) = acks.next().await {
                let ack = ack?;
                anyhow::ensure!(
                    ack.rejected == 0,
                    "rejected signals: {:?}",
                    ack.results.first()
                );
                recorded += i64::from(ack.recorded);
                count += 1;
            }
            anyhow::ensure!(
                count == expected,
                "{count} of {expected} batches acknowledged"
            );
            anyhow::Ok(recorded)
        }));
    }
    let mut recorded = 0;
    for s in streams {
        recorded += s.await??;
    }
    let elapsed = started.elapsed();
    anyhow::ensure!(
        recorded as usize == SIGNALS,
        "recorded {recorded} of {SIGNALS}"
    );
    let rate = SIGNALS as f64 / elapsed.as_secs_f64();
    if !audited {
        report.add(
            "scoring",
            &format!("RecordSignals stream, 1M signals ({engine}{suffix})"),
            rate,
            "sig/s",
            None,
        );
        shutdown.trigger();
        task.abort();
        return Ok(rate);
    }
    report.add_at_least(
        "scoring",
        &format!("RecordSignals stream, 1M signals ({engine})"),
        rate,
        "sig/s",
        target,
    );
    // Let the worker finish what ingest queued, then rescore everyone.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut admin = client.clone();
    let (answer, took) = timed(admin.recompute_health(RecomputeHealthRequest {})).await;
    let rescored = answer?.into_inner().accounts;
    println!("  rescored {rescored} accounts (the others have no signal)");
    report.add(
        "scoring",
        &format!("RecomputeHealth, 100k accounts ({engine})"),
        ms(took),
        "ms",
        Some(2000.0),
    );
    shutdown.trigger();
    task.abort();
    Ok(rate)
}
