//! The funnel case: 1,000,000 transitions over 100,000 accounts spread over
//! 24 months, loaded through the funnel's bulk import (the same admission and
//! stage-entry derivation as `RecordTransition`), then measured through gRPC:
//! the 24-month funnel report (target < 1 s) and journey lookups (target
//! p99 < 5 ms).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bowtie_funnel::convert::NewTransition;
use bowtie_funnel::storage::Profile;
use bowtie_proto::common::{Period, Segment, Stage};
use bowtie_proto::funnel::funnel_service_client::FunnelServiceClient;
use bowtie_proto::funnel::{CohortBy, GetFunnelReportRequest, GetJourneyRequest};
use bowtie_runtime::auth::{ApiKeys, hash_key};
use bowtie_runtime::config::{ApiKeySettings, Settings};
use bowtie_runtime::db::Db;
use bowtie_runtime::feed::Feed;
use bowtie_runtime::peer::AccountDirectory;
use bowtie_runtime::shutdown::Shutdown;
use bowtie_runtime::store::Store;
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
    let account_id = Uuid::nil();
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
            occurred_at: START + day * DAY + rng.below(DAY as u64),
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
        let mut rng = Lcg(7);
        let segments = [Segment::Smb, Segment::MidMarket, Segment::Enterprise];
        let mut batch = Vec::new();
        for i in 0..ACCOUNTS {
            let id = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + i as u128);
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
        let mut volume = 0;
        for _ in 0..5 {
            let (answer, took) = timed(client.get_funnel_report(request.clone())).await;
            volume = answer?.into_inner().stages.first().map_or(0, |s| s.volume);
            samples.push(took);
        }
        println!("  ({label}: AWARENESS volume {volume})");
        report.add(
            "funnel",
            &format!("{label} (median of 5)"),
            ms(quantile(&mut samples, 0.5)),
            "ms",
            Some(1000.0),
        );
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
    Ok(())
}
