//! The funnel service: where each account stands on the bowtie, its journey
//! through the stages, and how well and how fast each stage converts
//! (docs/design.md section 1). It owns its database schema, asks the accounts
//! service whether an account exists, follows the accounts feed for segment
//! and owner changes and the revenue feed for the stages money decides
//! (COMMIT, ONBOARDING, GROWTH, CHURNED) and the scoring feed for first value
//! (IMPACT), and publishes every transition on its own feed.
//!
//! Layout: `domain` (pure rules and report maths), `sensitivity` (the pure
//! stage sensitivity model), `convert` (wire <-> domain), `storage`
//! (tables and queries), `service` (units of work), `measure` (the
//! sensitivity inputs from the journey index and the revenue service),
//! `feeds` (the change feeds it follows), `api` (thin tonic handlers).

pub mod api;
pub mod convert;
pub mod domain;
pub mod feeds;
pub mod index;
pub mod measure;
pub mod sensitivity;
pub mod service;
pub mod storage;

use std::sync::Arc;

use bowtie_proto::funnel::funnel_service_server::FunnelServiceServer;
use bowtie_runtime::auth::ApiKeys;
use bowtie_runtime::bootstrap::Bootstrap;
use bowtie_runtime::config::Settings;
use bowtie_runtime::peer::AccountDirectory;
use bowtie_runtime::server::GrpcServer;
use bowtie_runtime::shutdown::Shutdown;

/// Methods that need the admin scope (none).
pub const ADMIN_METHODS: &[&str] = &[];

/// Connects the funnel database, applies migrations, starts the change-feed
/// consumers and binds the server on `settings.funnel.listen`.
pub async fn build(
    settings: &Settings,
    keys: Arc<ApiKeys>,
    shutdown: Shutdown,
) -> anyhow::Result<GrpcServer> {
    let boot =
        Bootstrap::open::<storage::Migrator>(settings, &settings.funnel, keys, shutdown).await?;
    let (store, shutdown) = (boot.store(), boot.shutdown());
    let accounts = AccountDirectory::connect(&settings.peers)?;
    feeds::spawn_consumers(&settings.peers, &store, &accounts, &shutdown)?;
    let index = index::JourneyIndex::new();
    index.spawn(store.clone(), shutdown.clone());
    let measures = measure::Measures::connect(store.clone(), index.clone(), &settings.peers)?;
    let app = service::Funnel::new(store, accounts, index);
    let api = FunnelServiceServer::new(api::FunnelApi::new(app, measures));
    boot.serve(ADMIN_METHODS, api).await
}
