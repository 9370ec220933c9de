//! The funnel service: where each account stands on the bowtie, its journey
//! through the stages, and how well and how fast each stage converts
//! (docs/design.md section 1). It owns its database schema, asks the accounts
//! service whether an account exists, follows the accounts feed for segment
//! and owner changes and the revenue feed for the stages money decides
//! (COMMIT, ONBOARDING, GROWTH, CHURNED) and the scoring feed for first value
//! (IMPACT), and publishes every transition on its own feed.
//!
//! Layout: `domain` (pure rules and report maths), `convert` (wire <->
//! domain), `storage` (tables and queries), `service` (units of work),
//! `feeds` (the change feeds it follows), `api` (thin tonic handlers).

pub mod api;
pub mod convert;
pub mod domain;
pub mod feeds;
pub mod index;
pub mod service;
pub mod storage;

use std::sync::Arc;

use bowtie_proto::funnel::funnel_service_server::FunnelServiceServer;
use bowtie_runtime::auth::ApiKeys;
use bowtie_runtime::config::Settings;
use bowtie_runtime::db::Db;
use bowtie_runtime::feed::Feed;
use bowtie_runtime::peer::AccountDirectory;
use bowtie_runtime::server::GrpcServer;
use bowtie_runtime::shutdown::Shutdown;
use bowtie_runtime::store::Store;

/// Methods that need the admin scope (none).
pub const ADMIN_METHODS: &[&str] = &[];

/// Connects the funnel database, applies migrations, starts the change-feed
/// consumers and binds the server on `settings.funnel.listen`.
pub async fn build(
    settings: &Settings,
    keys: Arc<ApiKeys>,
    shutdown: Shutdown,
) -> anyhow::Result<GrpcServer> {
    let db = Db::connect(&settings.funnel.database).await?;
    db.migrate::<storage::Migrator>().await?;
    let store = Store::new(db.clone(), Feed::new(db.clone(), shutdown.clone()));
    let accounts = AccountDirectory::connect(&settings.peers)?;
    feeds::accounts_consumer(&settings.peers, store.clone(), shutdown.clone())?.spawn();
    feeds::revenue_consumer(
        &settings.peers,
        store.clone(),
        accounts.clone(),
        shutdown.clone(),
    )?
    .spawn();
    feeds::scoring_consumer(
        &settings.peers,
        store.clone(),
        accounts.clone(),
        shutdown.clone(),
    )?
    .spawn();
    let index = index::JourneyIndex::new();
    index.spawn(store.clone(), shutdown.clone());
    let app = service::Funnel::new(store, accounts, index);
    let max = settings.server.max_message_bytes;
    let service = FunnelServiceServer::new(api::FunnelApi::new(app))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    GrpcServer::bind(
        settings.funnel.listen,
        &settings.server,
        keys,
        ADMIN_METHODS,
        shutdown,
    )
    .await?
    .add_service(service)
    .watch_database(db)
    .serve_health_on(settings.funnel.health_listen)
}
