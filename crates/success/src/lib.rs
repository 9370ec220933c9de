//! The success service: playbooks, calls to action (CTAs), the account
//! timeline and playbook effectiveness (docs/design.md section 6). It follows
//! the scoring, revenue, funnel and accounts feeds through stored cursors,
//! turns the events its playbooks name into CTAs with an owner and a due
//! date, and measures each playbook against a held-out comparison group.
//!
//! Layout: `domain` (pure rules), `convert` (wire <-> domain), `storage`
//! (tables and queries), `service` (units of work), `feeds` (the consumers),
//! `api` (thin tonic handlers), `sweep` (the time-based triggers).

pub mod api;
pub mod book;
pub mod convert;
pub mod domain;
pub mod feeds;
pub mod notify;
pub mod service;
pub mod storage;
pub mod sweep;
pub mod tx_facts;

use std::sync::Arc;

use bowtie_proto::success::success_service_server::SuccessServiceServer;
use bowtie_runtime::auth::ApiKeys;
use bowtie_runtime::bootstrap::Bootstrap;
use bowtie_runtime::config::Settings;
use bowtie_runtime::peer::AccountDirectory;
use bowtie_runtime::server::GrpcServer;
use bowtie_runtime::shutdown::Shutdown;

/// Methods that need the admin scope: changing playbooks.
pub const ADMIN_METHODS: &[&str] = &["CreatePlaybook", "UpdatePlaybook"];

/// Connects the success database, applies migrations, starts the feed
/// consumers and binds the server on `settings.success.listen`.
pub async fn build(
    settings: &Settings,
    keys: Arc<ApiKeys>,
    shutdown: Shutdown,
) -> anyhow::Result<GrpcServer> {
    let mut boot =
        Bootstrap::open::<storage::Migrator>(settings, &settings.success, keys, shutdown).await?;
    for (_, cursor) in notify::LANES {
        boot.keep_events_for(cursor);
    }
    let accounts = AccountDirectory::connect(&settings.peers)?;
    let app = service::Success::new(
        boot.store(),
        accounts.clone(),
        settings.success_policy.clone(),
    );
    let shutdown = boot.shutdown();
    notify::spawn(
        boot.store(),
        settings.success_notify.clone(),
        accounts,
        shutdown.clone(),
    )?;
    notify::spawn_schedule(
        app.clone(),
        std::time::Duration::from_millis(settings.success_notify.schedule_interval_ms.max(1)),
        shutdown.clone(),
    );
    for consumer in [
        feeds::accounts_consumer(&settings.peers, app.clone(), shutdown.clone())?,
        feeds::scoring_consumer(&settings.peers, app.clone(), shutdown.clone())?,
        feeds::revenue_consumer(&settings.peers, app.clone(), shutdown.clone())?,
        feeds::funnel_consumer(&settings.peers, app.clone(), shutdown.clone())?,
    ] {
        consumer.spawn();
    }
    sweep::spawn(
        app.clone(),
        std::time::Duration::from_secs(settings.success_policy.sweep_interval_seconds),
        shutdown.clone(),
    );
    let books = book::Books::connect(
        boot.store(),
        &settings.peers,
        settings.success_policy.high_risk_bp,
    )?;
    let api = SuccessServiceServer::new(api::SuccessApi::new(app, books));
    boot.serve(ADMIN_METHODS, api).await
}
