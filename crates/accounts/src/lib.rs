//! The accounts service: the system of record for the companies Bowtie tracks
//! and the people in them. It owns its database schema, publishes every
//! change on its feed (`WatchEvents`) and answers other services' "does this
//! account exist" questions.
//!
//! Layout: `domain` (pure rules), `convert` (wire <-> domain parsing),
//! `storage` (tables and queries), `service` (units of work), `api` (thin
//! tonic handlers).

pub mod api;
pub mod attributes;
pub mod convert;
pub mod domain;
pub mod service;
pub mod sources;
pub mod storage;

use std::sync::Arc;

use bowtie_proto::accounts::accounts_service_server::AccountsServiceServer;
use bowtie_runtime::auth::ApiKeys;
use bowtie_runtime::bootstrap::Bootstrap;
use bowtie_runtime::config::Settings;
use bowtie_runtime::server::GrpcServer;
use bowtie_runtime::shutdown::Shutdown;

/// Methods that need the admin scope: the attribute declarations.
pub const ADMIN_METHODS: &[&str] = &["DeclareAttribute", "DeleteAttributeDeclaration"];

/// Connects the accounts database, applies migrations and binds the server on
/// `settings.accounts.listen` (port 0 picks a free port).
pub async fn build(
    settings: &Settings,
    keys: Arc<ApiKeys>,
    shutdown: Shutdown,
) -> anyhow::Result<GrpcServer> {
    let boot =
        Bootstrap::open::<storage::Migrator>(settings, &settings.accounts, keys, shutdown).await?;
    let app = service::Accounts::new(boot.store());
    app.cache().follow(app.store().clone(), boot.shutdown());
    let api = AccountsServiceServer::new(api::AccountsApi::new(app));
    boot.serve(ADMIN_METHODS, api).await
}
