//! The accounts service: the system of record for the companies Bowtie tracks
//! and the people in them. It owns its database schema, publishes every
//! change on its feed (`WatchEvents`) and answers other services' "does this
//! account exist" questions.
//!
//! Layout: `domain` (pure rules), `convert` (wire <-> domain parsing),
//! `storage` (tables and queries), `service` (units of work), `api` (thin
//! tonic handlers).

pub mod api;
pub mod convert;
pub mod domain;
pub mod service;
pub mod storage;

use std::sync::Arc;

use bowtie_proto::accounts::accounts_service_server::AccountsServiceServer;
use bowtie_runtime::auth::ApiKeys;
use bowtie_runtime::config::Settings;
use bowtie_runtime::db::Db;
use bowtie_runtime::feed::Feed;
use bowtie_runtime::server::GrpcServer;
use bowtie_runtime::shutdown::Shutdown;
use bowtie_runtime::store::Store;

/// Methods that need the admin scope (none: accounts has no configuration RPCs).
pub const ADMIN_METHODS: &[&str] = &[];

/// Connects the accounts database, applies migrations and binds the server on
/// `settings.accounts.listen` (port 0 picks a free port).
pub async fn build(
    settings: &Settings,
    keys: Arc<ApiKeys>,
    shutdown: Shutdown,
) -> anyhow::Result<GrpcServer> {
    let db = Db::connect(&settings.accounts.database).await?;
    db.migrate::<storage::Migrator>().await?;
    let feed = Feed::new(db.clone(), shutdown.clone());
    let app = service::Accounts::new(Store::new(db.clone(), feed));
    app.cache().follow(app.store().clone(), shutdown.clone());
    let max = settings.server.max_message_bytes;
    let service = AccountsServiceServer::new(api::AccountsApi::new(app))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    GrpcServer::bind(
        settings.accounts.listen,
        &settings.server,
        keys,
        ADMIN_METHODS,
        shutdown,
    )
    .await?
    .add_service(service)
    .watch_database(db)
    .serve_health_on(settings.accounts.health_listen)
}
