//! The success case: 100,000 accounts enter red in one burst and the success
//! service turns every ENTERED_RED alert into a CTA with its tasks (target:
//! the last CTA within 20 s of the burst); `ListCtas` for one owner with
//! 5,000 open CTAs (p99 < 20 ms); the effectiveness report of a playbook
//! over 12 months of 100,000 CTAs (< 500 ms); the idle memory of a
//! `bowtie serve success` process (< 30 MiB).
//!
//! The burst comes the way it does in production: the real scoring service
//! holds 100,000 accounts (their profiles loaded through its library, as in
//! the scoring case), each with one login 40 days ago and none since, with
//! its recompute worker held back; `RecomputeHealth` then scores them all
//! at once, every one falls into red and scoring raises 100,000 ENTERED_RED
//! alerts (and as many band changes) on its feed, which the real success
//! service follows. What success knows of the accounts (CSM, segment) is
//! loaded through its library beforehand, as the accounts feed would have
//! told it: 20 CSMs with 5,000 accounts each.
//!
//! The effectiveness report reads a second playbook's 12 months of
//! enrollments written through success's storage library (a data set, like
//! the other cases' generated rows): 111,112 triggers spread over the last
//! 365 days, one in ten held out, 100,000 CTAs with their tasks (most of
//! those older than 30 days closed), and churns for part of both arms.
//!
//! With `BOWTIE_BENCH_DATABASE_URL` set, the burst, `ListCtas` and the
//! report run again with both services on PostgreSQL.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bowtie_proto::common::{PageRequest, Period};
use bowtie_proto::scoring::scoring_service_client::ScoringServiceClient;
use bowtie_proto::scoring::{RecomputeHealthRequest, RecordSignalsRequest, Signal, SignalType};
use bowtie_proto::success::success_service_client::SuccessServiceClient;
use bowtie_proto::success::{
    AutoClose, CreatePlaybookRequest, CtaType, GetPlaybookEffectivenessRequest, ListCtasRequest,
    PlaybookMode, PlaybookSpec, Priority, Step, Trigger, TriggerKind,
};
use bowtie_runtime::auth::{ApiKeys, hash_key};
use bowtie_runtime::config::{ApiKeySettings, Settings};
use bowtie_runtime::db::Db;
use bowtie_runtime::shutdown::Shutdown;
use bowtie_runtime::{AccountId, Minor};
use bowtie_success::domain::{
    AccountFacts, Arm, CtaId, CtaStatus, CtaType as DomainCtaType, Outcome, PlaybookId,
    Priority as DomainPriority, Segment, TaskStatus,
};
use bowtie_success::storage::{self, Cta, Task, TriggerRow, Turn};
use futures::StreamExt;
use sea_orm::{EntityTrait, PaginatorTrait};
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use uuid::Uuid;

use crate::funnel::Lcg;
use crate::measure::{Report, ms, quantile, timed};
use crate::unary::{Process, bowtie_binary, free_port, wait_serving};

/// Accounts entering red in the burst.
pub const ACCOUNTS: usize = 100_000;
/// CSMs the accounts are spread over (5,000 accounts each).
pub const CSMS: usize = 20;
/// Signals per `RecordSignals` batch.
const BATCH: usize = 5_000;
/// `ListCtas` calls measured.
const LIST_CALLS: usize = 1_000;
/// CTAs of the effectiveness playbook.
pub const EFFECT_CTAS: usize = 100_000;
/// One trigger in this many is held out.
const HOLDOUT_EVERY: usize = 10;
/// Rows written per transaction while generating the report's data set.
const WRITE_CHUNK: usize = 2_000;
/// Runs of the effectiveness report (the median is reported).
const REPORT_RUNS: usize = 5;
/// The longest the burst may take before the run fails.
const BURST_DEADLINE: Duration = Duration::from_secs(600);
const KEY: &str = "bench-key";
const DAY: i64 = 86_400;
const MICROS_PER_DAY: i64 = DAY * 1_000_000;

/// Adds the bench key to every call.
#[derive(Clone)]
struct Bearer(MetadataValue<tonic::metadata::Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        r.metadata_mut().insert("authorization", self.0.clone());
        Ok(r)
    }
}

type Channel = tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>;

async fn channel(addr: std::net::SocketAddr) -> anyhow::Result<Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    Ok(tonic::service::interceptor::InterceptedService::new(
        channel,
        Bearer(format!("Bearer {KEY}").parse()?),
    ))
}

fn settings(url: &str, schemas: (&str, &str)) -> anyhow::Result<Settings> {
    let mut settings = Settings::defaults()?;
    settings.scoring.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    settings.success.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    settings.scoring.database = settings.scoring.database.with_url(url, schemas.0);
    settings.success.database = settings.success.database.with_url(url, schemas.1);
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
    // The worker waits: the accounts are scored together by RecomputeHealth.
    settings.scoring_policy.recompute_interval_ms = 3_600_000;
    for peer in [
        &mut settings.peers.accounts,
        &mut settings.peers.revenue,
        &mut settings.peers.funnel,
        &mut settings.peers.scoring,
    ] {
        *peer = "http://127.0.0.1:1".into();
    }
    Ok(settings)
}

/// Runs the case on SQLite, then on PostgreSQL when configured, then the
/// memory of an idle `bowtie serve success` process.
pub async fn run(report: &mut Report) -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let url = |name: &str| format!("sqlite://{}", temp.path().join(name).display());
    // Each SQLite service has a file of its own.
    let sqlite = (url("scoring.db"), url("success.db"));
    let batched = run_on(
        report,
        "SQLite",
        (&sqlite.0, &sqlite.1),
        ("scoring", "success"),
        Batch::Default,
    )
    .await?;
    // The same burst with every feed event in its own transaction.
    let single = (url("scoring-1.db"), url("success-1.db"));
    let one_by_one = run_on(
        report,
        "SQLite, 1 event per transaction",
        (&single.0, &single.1),
        ("scoring", "success"),
        Batch::One,
    )
    .await?;
    report.add(
        "success",
        "  burst time, batched / 1 event per transaction",
        batched.as_secs_f64() / one_by_one.as_secs_f64(),
        "ratio",
        None,
    );
    if let Ok(url) = std::env::var("BOWTIE_BENCH_DATABASE_URL")
        && !url.trim().is_empty()
    {
        let tag = Uuid::new_v4().simple().to_string();
        let schemas = (
            format!("bench_scoring_{tag}"),
            format!("bench_success_{tag}"),
        );
        let outcome = run_on(
            report,
            "PostgreSQL",
            (&url, &url),
            (&schemas.0, &schemas.1),
            Batch::Default,
        )
        .await;
        // The stopped servers' last transactions end first.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let db = Db::connect(&settings(&url, (&schemas.0, &schemas.1))?.success.database).await?;
        let mut dropped = Ok(());
        for schema in [&schemas.0, &schemas.1] {
            for _ in 0..5 {
                dropped = bowtie_runtime::pg::drop_schema(db.writer(), schema).await;
                if dropped.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        db.close().await;
        outcome?;
        dropped?;
    }
    idle_memory(report).await
}

/// How many feed events success applies per transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Batch {
    /// `peers.feed_batch` as configured by default; the whole case runs.
    Default,
    /// One (the burst only).
    One,
}

/// The SQLite or PostgreSQL run; `urls` and `schemas` are scoring's and
/// success's. Returns how long the burst took.
async fn run_on(
    report: &mut Report,
    engine: &str,
    urls: (&str, &str),
    schemas: (&str, &str),
    batch: Batch,
) -> anyhow::Result<Duration> {
    println!("success ({engine}): {ACCOUNTS} accounts entering red at once");
    let mut settings = settings(urls.0, schemas)?;
    settings.success.database = settings.success.database.with_url(urls.1, schemas.1);
    if batch == Batch::One {
        settings.peers.feed_batch = 1;
    }
    let mut rng = Lcg(7);
    let ids: Vec<Uuid> = (0..ACCOUNTS)
        .map(|_| Uuid::from_u64_pair(rng.step() << 32 | rng.step(), rng.step() << 32 | rng.step()))
        .collect();
    let accounts: Vec<AccountId> = ids.iter().copied().map(AccountId).collect();
    {
        let db = Db::connect(&settings.scoring.database).await?;
        db.migrate::<bowtie_scoring::storage::Migrator>().await?;
        bowtie_scoring::storage::ensure_profiles(
            db.writer(),
            &accounts,
            bowtie_runtime::Instant::EPOCH,
        )
        .await?;
        db.close().await;
    }
    let success_db = Db::connect(&settings.success.database).await?;
    success_db
        .migrate::<bowtie_success::storage::Migrator>()
        .await?;
    seed_facts(&success_db, &accounts).await?;

    let keys = Arc::new(ApiKeys::from_settings(&settings.auth)?);
    let shutdown = Shutdown::new();
    let scoring = bowtie_scoring::build(&settings, keys.clone(), shutdown.clone()).await?;
    let scoring_addr = scoring.local_addr();
    let scoring_task = tokio::spawn(scoring.run_until_stopped(std::future::pending()));
    settings.peers.scoring = format!("http://{scoring_addr}");
    let success = bowtie_success::build(&settings, keys, shutdown.clone()).await?;
    let success_addr = success.local_addr();
    let success_task = tokio::spawn(success.run_until_stopped(std::future::pending()));
    let scoring_channel = channel(scoring_addr).await?;
    let mut client =
        SuccessServiceClient::new(channel(success_addr).await?).max_decoding_message_size(64 << 20);
    let playbook = create_playbook(&mut client, red_playbook()).await?;

    // One login 40 days ago for every account, and nothing scored yet.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let mut scoring = ScoringServiceClient::new(scoring_channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let batches: Vec<RecordSignalsRequest> = ids
        .chunks(BATCH)
        .enumerate()
        .map(|(b, chunk)| RecordSignalsRequest {
            signals: chunk
                .iter()
                .enumerate()
                .map(|(i, id)| Signal {
                    idempotency_key: format!("bench-red-{}", b * BATCH + i),
                    account_id: id.to_string(),
                    r#type: SignalType::Login as i32,
                    value: 1,
                    occurred_at: Some(prost_types::Timestamp {
                        seconds: now - 40 * DAY,
                        nanos: 0,
                    }),
                })
                .collect(),
        })
        .collect();
    let expected = batches.len();
    let mut acks = scoring
        .record_signals(futures::stream::iter(batches))
        .await?
        .into_inner();
    let mut acknowledged = 0;
    while let Some(ack) = acks.next().await {
        let ack = ack?;
        anyhow::ensure!(
            ack.rejected == 0,
            "rejected signals: {:?}",
            ack.results.first()
        );
        acknowledged += 1;
    }
    anyhow::ensure!(
        acknowledged == expected,
        "{acknowledged} of {expected} batches acknowledged"
    );

    // The burst: every account scored at once, each falling into red.
    let started = Instant::now();
    let scored = scoring
        .recompute_health(RecomputeHealthRequest {})
        .await?
        .into_inner()
        .accounts;
    let alerts_written = started.elapsed();
    anyhow::ensure!(
        scored as usize == ACCOUNTS,
        "scored {scored} of {ACCOUNTS} accounts"
    );
    let mut last = 0;
    loop {
        let count = storage::entity::cta::Entity::find()
            .count(success_db.reader())
            .await?;
        if count as usize >= ACCOUNTS {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < BURST_DEADLINE,
            "{count} of {ACCOUNTS} CTAs after {} s",
            BURST_DEADLINE.as_secs()
        );
        if count / 10_000 != last / 10_000 {
            println!(
                "  {count} CTAs after {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        last = count;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let burst = started.elapsed();
    println!(
        "  scoring wrote the alerts in {:.2} s; the last CTA existed {:.2} s after the burst began",
        alerts_written.as_secs_f64(),
        burst.as_secs_f64()
    );
    report.add(
        "success",
        &format!("100k ENTERED_RED -> CTAs, until the last ({engine})"),
        burst.as_secs_f64(),
        "s",
        // The one-event-per-transaction run is the comparison, not the target.
        (batch == Batch::Default).then_some(20.0),
    );
    report.add(
        "success",
        &format!("  lag after scoring committed the last alert ({engine})"),
        (burst - alerts_written).as_secs_f64(),
        "s",
        None,
    );
    report.add(
        "success",
        &format!("  CTAs opened per second ({engine})"),
        ACCOUNTS as f64 / burst.as_secs_f64(),
        "CTA/s",
        None,
    );

    if batch == Batch::Default {
        list_ctas(report, engine, &mut client, &playbook).await?;
        effectiveness(report, engine, &mut client, &success_db).await?;
    }

    shutdown.trigger();
    scoring_task.abort();
    success_task.abort();
    success_db.close().await;
    Ok(burst)
}

/// What the accounts feed would have told success: each account's CSM
/// (`csm-00` to `csm-19`, 5,000 accounts each) and segment.
async fn seed_facts(db: &Db, accounts: &[AccountId]) -> anyhow::Result<()> {
    let segments = [Segment::Smb, Segment::MidMarket, Segment::Enterprise];
    for (c, chunk) in accounts.chunks(10_000).enumerate() {
        let txn = db.begin_write().await?;
        for (i, id) in chunk.iter().enumerate() {
            let n = c * 10_000 + i;
            storage::save_facts(
                &txn,
                &AccountFacts {
                    account_id: *id,
                    csm: csm(n),
                    segment: segments[n % segments.len()],
                    mrr: Minor(10_000 + (n as i64 % 50) * 1_000),
                    ..AccountFacts::default()
                },
            )
            .await?;
        }
        txn.commit().await?;
    }
    Ok(())
}

fn csm(n: usize) -> String {
    format!("csm-{:02}", n % CSMS)
}

/// The playbook of the burst: a HIGH risk CTA due in 7 days with two tasks
/// for every account entering red.
fn red_playbook() -> PlaybookSpec {
    PlaybookSpec {
        name: "Save red accounts".into(),
        description: "Call every account that turns red within a week".into(),
        trigger: Some(Trigger {
            kind: TriggerKind::EnteredRed as i32,
            ..Trigger::default()
        }),
        filter: None,
        cta_type: CtaType::Risk as i32,
        priority: Priority::High as i32,
        owner_pool: vec!["risk-desk".into()],
        sla_days: 7,
        steps: vec![
            Step {
                title: "Call the champion".into(),
                due_offset_days: 1,
                ..Step::default()
            },
            Step {
                title: "Agree a save plan".into(),
                due_offset_days: 3,
                ..Step::default()
            },
        ],
        auto_close: AutoClose::HealthOutOfRed as i32,
        risk_threshold_bp: 0,
        enrollment_limit_days: 0,
        mode: PlaybookMode::On as i32,
        holdout_percent: 0,
    }
}

async fn create_playbook(
    client: &mut SuccessServiceClient<Channel>,
    spec: PlaybookSpec,
) -> anyhow::Result<String> {
    Ok(client
        .create_playbook(CreatePlaybookRequest {
            spec: Some(spec),
            idempotency_key: String::new(),
        })
        .await?
        .into_inner()
        .playbook
        .context("CreatePlaybook returned no playbook")?
        .id)
}

/// `ListCtas` for `csm-00`: every page once (checking each of the 5,000 CTAs
/// has its two tasks), then the first page of 50 [`LIST_CALLS`] times.
async fn list_ctas(
    report: &mut Report,
    engine: &str,
    client: &mut SuccessServiceClient<Channel>,
    playbook: &str,
) -> anyhow::Result<()> {
    let owner = csm(0);
    let request = |token: String, size: i32| ListCtasRequest {
        owner: owner.clone(),
        page: Some(PageRequest {
            page_size: size,
            page_token: token,
        }),
        ..ListCtasRequest::default()
    };
    let mut token = String::new();
    let mut seen = 0;
    loop {
        let page = client.list_ctas(request(token, 1000)).await?.into_inner();
        for cta in &page.ctas {
            anyhow::ensure!(
                cta.playbook_id == playbook && cta.tasks.len() == 2,
                "CTA {} has {} tasks",
                cta.id,
                cta.tasks.len()
            );
        }
        seen += page.ctas.len();
        token = page.page.map(|p| p.next_page_token).unwrap_or_default();
        if token.is_empty() {
            break;
        }
    }
    let expected = ACCOUNTS / CSMS;
    anyhow::ensure!(
        seen == expected,
        "{owner} has {seen} open CTAs, not {expected}"
    );
    let mut latencies = Vec::with_capacity(LIST_CALLS);
    for _ in 0..LIST_CALLS {
        let (answer, took) = timed(client.list_ctas(request(String::new(), 50))).await;
        anyhow::ensure!(answer?.into_inner().ctas.len() == 50, "a short first page");
        latencies.push(took);
    }
    report.add(
        "success",
        &format!("ListCtas, owner with 5,000 open, p50 ({engine})"),
        ms(quantile(&mut latencies, 0.5)),
        "ms",
        None,
    );
    report.add(
        "success",
        &format!("ListCtas, owner with 5,000 open, p99 ({engine})"),
        ms(quantile(&mut latencies, 0.99)),
        "ms",
        Some(20.0),
    );
    Ok(())
}

/// A second playbook's 12 months of enrollments and CTAs, then its
/// effectiveness report over them.
async fn effectiveness(
    report: &mut Report,
    engine: &str,
    client: &mut SuccessServiceClient<Channel>,
    db: &Db,
) -> anyhow::Result<()> {
    let mut spec = red_playbook();
    spec.name = "Score drop outreach".into();
    spec.trigger = Some(Trigger {
        kind: TriggerKind::ScoreDrop as i32,
        ..Trigger::default()
    });
    spec.sla_days = 14;
    spec.auto_close = 0;
    spec.mode = PlaybookMode::Holdout as i32;
    spec.holdout_percent = 10;
    let playbook = create_playbook(client, spec).await?;
    let playbook = PlaybookId(playbook.parse()?);
    let now = bowtie_runtime::Instant::now();
    let start = now.plus_days(-365);
    let generated = Instant::now();
    let triggers = EFFECT_CTAS * HOLDOUT_EVERY / (HOLDOUT_EVERY - 1) + 1;
    let mut rng = Lcg(0x00e7_fec7);
    let mut ctas = 0;
    let mut n = 0;
    while n < triggers {
        let txn = db.begin_write().await?;
        for _ in 0..WRITE_CHUNK.min(triggers - n) {
            let account = AccountId(Uuid::from_u64_pair(
                rng.step() << 32 | rng.step(),
                rng.step() << 32 | rng.step(),
            ));
            // Evenly over the year, an hour clear of either end.
            let span = 365 * MICROS_PER_DAY - 7_200_000_000;
            let at = start.plus_micros(3_600_000_000 + span / triggers as i64 * n as i64);
            let held_out = n % HOLDOUT_EVERY == 0;
            let cta = if held_out {
                None
            } else {
                ctas += 1;
                let cta = effect_cta(&mut rng, playbook, account, at, now);
                storage::insert_cta(&txn, &cta).await?;
                Some(cta.id)
            };
            storage::insert_trigger(
                &txn,
                &TriggerRow {
                    playbook,
                    playbook_version: 1,
                    account_id: account,
                    at,
                    arm: if held_out { Arm::HeldOut } else { Arm::Treated },
                    segment: Segment::MidMarket,
                    cta,
                },
            )
            .await?;
            // Churn within 120 days: 12% of the treated, 18% of the held out.
            if rng.below(100) < if held_out { 18 } else { 12 } {
                let churned = at.plus_micros(rng.below(120 * DAY as u64) * 1_000_000);
                storage::add_turn(&txn, Turn::Churn, account, churned).await?;
            }
            n += 1;
        }
        txn.commit().await?;
    }
    anyhow::ensure!(ctas == EFFECT_CTAS, "wrote {ctas} CTAs, not {EFFECT_CTAS}");
    println!(
        "  wrote {triggers} triggers and {ctas} CTAs over 12 months in {:.1} s",
        generated.elapsed().as_secs_f64()
    );
    let request = GetPlaybookEffectivenessRequest {
        playbook_id: playbook.0.to_string(),
        period: Some(Period {
            start: Some(start.to_timestamp()),
            end: Some(now.to_timestamp()),
        }),
    };
    let mut took = Vec::with_capacity(REPORT_RUNS);
    for _ in 0..REPORT_RUNS {
        let (answer, t) = timed(client.get_playbook_effectiveness(request.clone())).await;
        let answer = answer?.into_inner();
        anyhow::ensure!(
            answer.ctas_opened as usize == EFFECT_CTAS,
            "the report counted {} CTAs",
            answer.ctas_opened
        );
        took.push(t);
    }
    report.add(
        "success",
        &format!("GetPlaybookEffectiveness, 12 months, 100k CTAs ({engine})"),
        ms(quantile(&mut took, 0.5)),
        "ms",
        Some(500.0),
    );
    Ok(())
}

/// A CTA of the effectiveness playbook opened at `at`: due in 14 days with
/// two tasks, acted on within three days (nine in ten), and closed within
/// 20 days when it is older than 30 (four in five).
fn effect_cta(
    rng: &mut Lcg,
    playbook: PlaybookId,
    account: AccountId,
    at: bowtie_runtime::Instant,
    now: bowtie_runtime::Instant,
) -> Cta {
    // Offsets drawn in seconds (the generator gives 31 bits), an hour at least.
    let acted = rng.below(10) < 9;
    let acted_after = 3_600 + rng.below(71 * 3_600);
    let closed = now.days_since(at) > 30 && rng.below(5) < 4;
    let closed_after = 3_600 + rng.below(20 * DAY as u64);
    let first_action_at = acted.then(|| at.plus_micros(acted_after * 1_000_000));
    let closed_at = closed.then(|| at.plus_micros(closed_after * 1_000_000));
    let outcome = if closed {
        [
            Outcome::Saved,
            Outcome::Saved,
            Outcome::Lost,
            Outcome::NotNeeded,
        ][rng.below(4) as usize]
    } else {
        Outcome::Unspecified
    };
    let task = |title: &str, days: i64| Task {
        title: title.into(),
        due_at: at.plus_days(days),
        status: if closed {
            TaskStatus::Done as i32
        } else {
            TaskStatus::Open as i32
        },
    };
    Cta {
        id: CtaId(Uuid::now_v7()),
        account_id: account,
        playbook: Some((playbook, 1)),
        cta_type: DomainCtaType::Risk,
        reason: "health dropped 25 points in 30 days (from 80 to 55)".into(),
        priority: DomainPriority::High,
        owner: csm(rng.below(CSMS as u64) as usize + 1),
        status: if closed {
            CtaStatus::Closed
        } else {
            CtaStatus::Open
        },
        outcome,
        due_at: at.plus_days(14),
        snooze_until: None,
        snooze_reason: String::new(),
        tasks: vec![task("Review the drop", 2), task("Call the sponsor", 5)],
        comments: Vec::new(),
        trigger_count: 1,
        version: 1,
        created_at: at,
        updated_at: closed_at.or(first_action_at).unwrap_or(at),
        closed_at,
        first_action_at: first_action_at.or(closed_at),
    }
}

/// The memory of `bowtie serve success` as its own process, on a fresh
/// SQLite file, idle after it started.
async fn idle_memory(report: &mut Report) -> anyhow::Result<()> {
    let bin = bowtie_binary()?;
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let config = dir.path().join("bowtie.toml");
    std::fs::write(
        &config,
        format!(
            "[telemetry]\nlog_filter = \"warn\"\n\n[server]\ndrain_seconds = 0\n\n\
             [auth]\nkeys = [{{ name = \"bench\", hash = \"{}\", scopes = [\"admin\"] }}]\n\n\
             [peers]\napi_key = \"{KEY}\"\n\n[success]\nlisten = \"127.0.0.1:{port}\"\n\n\
             [success.database]\nurl = \"sqlite://{}\"\n",
            hash_key(KEY),
            dir.path().join("success.db").display()
        ),
    )?;
    let process = Process::spawn(
        Command::new(&bin)
            .arg("--config")
            .arg(&config)
            .args(["serve", "success"]),
        "success",
    )?;
    wait_serving(([127, 0, 0, 1], port).into())
        .await
        .context("success did not start")?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    report.add(
        "memory",
        "success RSS idle",
        process.memory("VmRSS")?,
        "MiB",
        Some(30.0),
    );
    Ok(())
}
