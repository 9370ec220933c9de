//! The scoring service: health scores with their explanations, churn risk
//! from a model trained on the system's own history, alerts, and value
//! segments (docs/design.md section 3). It owns its database schema, asks the
//! accounts service whether an account exists (remembering the answer, and
//! every account its feed announces), follows the accounts, revenue and
//! funnel feeds, and publishes first value, band changes and alerts on its
//! own feed.
//!
//! Layout, one file per layer and concern: `api` (thin tonic handlers),
//! `convert` (wire <-> domain, every response built there), `service/` (one
//! file per use case: ingest, recompute, health, alerts, scorecards,
//! training, segments), `domain` (pure health maths; `domain::cells`, the
//! one fold of day cells into health inputs), `model` (pure churn model),
//! `storage/` (schema, one file per table group, the day cells behind one
//! type, and `storage/pg.rs`, the only SQL text), `feeds` (the change feeds
//! it follows), `webhook` (alert delivery).

pub mod api;
pub mod convert;
pub mod domain;
pub mod feeds;
pub mod model;
pub mod service;
pub mod storage;
pub mod webhook;

use std::sync::Arc;

use bowtie_proto::scoring::scoring_service_server::ScoringServiceServer;
use bowtie_runtime::auth::ApiKeys;
use bowtie_runtime::bootstrap::Bootstrap;
use bowtie_runtime::config::Settings;
use bowtie_runtime::peer::AccountDirectory;
use bowtie_runtime::retention::retention_micros;
use bowtie_runtime::server::GrpcServer;
use bowtie_runtime::shutdown::Shutdown;

/// Methods that need the admin scope.
pub const ADMIN_METHODS: &[&str] = &["RecomputeHealth", "UpdateScorecard", "TrainModel"];

/// Connects the scoring database, applies migrations, starts the feed
/// consumers, the recompute worker and the webhook delivery, and binds the
/// server on `settings.scoring.listen`.
pub async fn build(
    settings: &Settings,
    keys: Arc<ApiKeys>,
    shutdown: Shutdown,
) -> anyhow::Result<GrpcServer> {
    let mut boot =
        Bootstrap::open::<storage::Migrator>(settings, &settings.scoring, keys, shutdown).await?;
    if let Some(retention) = retention_micros(settings.scoring.raw_signal_days) {
        boot.prune(storage::retention::raw_signals(retention));
    }
    let policy = &settings.scoring_policy;
    if !policy.webhook_url.is_empty() {
        boot.keep_events_for(webhook::WEBHOOK_CURSOR);
    }
    boot.prune(storage::retention::old_cells(
        i64::from(policy.churn_horizon_days),
        vec![
            policy.potential_window_days,
            policy.problem_late_days,
            policy.dormant_days,
        ],
    ));
    let (store, shutdown) = (boot.store(), boot.shutdown());
    let accounts = AccountDirectory::connect(&settings.peers)?;
    let policy = settings.scoring_policy.clone();
    let app = service::Scoring::new(store.clone(), accounts, policy.clone()).await?;
    feeds::accounts_consumer(&settings.peers, app.clone(), shutdown.clone())?.spawn();
    feeds::revenue_consumer(&settings.peers, app.clone(), shutdown.clone())?.spawn();
    feeds::funnel_consumer(&settings.peers, app.clone(), shutdown.clone())?.spawn();
    app.spawn_worker(shutdown.clone());
    app.spawn_people_backfill(shutdown.clone());
    webhook::spawn(store, policy, shutdown.clone())?;
    let api = ScoringServiceServer::new(api::ScoringApi::new(app));
    boot.serve(ADMIN_METHODS, api).await
}
