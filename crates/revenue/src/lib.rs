//! The revenue service: subscriptions and their history, the MRR movements
//! derived from them when they are written, the MRR waterfall, retention,
//! invoices and renewals, and the change feed (`WatchEvents`) that tells the
//! funnel and scoring services about first payments, expansions, churn,
//! downgrades, renewals and late payments.
//!
//! Layout: `domain` (pure rules), `convert` (wire <-> domain parsing),
//! `storage` (tables, roll-ups and queries), `service` (units of work), `api`
//! (thin tonic handlers).

pub mod api;
pub mod convert;
pub mod domain;
pub mod risk;
pub mod service;
pub mod storage;

use std::sync::Arc;

use bowtie_proto::revenue::revenue_service_server::RevenueServiceServer;
use bowtie_runtime::auth::ApiKeys;
use bowtie_runtime::bootstrap::Bootstrap;
use bowtie_runtime::config::Settings;
use bowtie_runtime::db::Db;
use bowtie_runtime::feed::Feed;
use bowtie_runtime::peer::AccountDirectory;
use bowtie_runtime::retention::Retention;
use bowtie_runtime::server::GrpcServer;
use bowtie_runtime::shutdown::Shutdown;
use bowtie_runtime::store::Store;

/// Methods that need the admin scope: the FX table is configuration.
pub const ADMIN_METHODS: &[&str] = &["SetFxRate"];

/// The policy from the settings, checking the reporting currency.
pub fn policy(settings: &Settings) -> anyhow::Result<service::Policy> {
    let reporting = settings.revenue_policy.reporting_currency.clone();
    if domain::minor_exponent(&reporting).is_none() {
        anyhow::bail!(
            "revenue_policy.reporting_currency {reporting:?} is not a known ISO-4217 code"
        );
    }
    Ok(service::Policy {
        reporting_currency: reporting,
        churn_reasons: settings.revenue_policy.churn_reasons.clone(),
        default_renewal_likelihood_bp: i64::from(
            settings
                .revenue_policy
                .default_renewal_likelihood_bp
                .min(10_000),
        ),
        past_due_churn_days: i64::from(settings.revenue_policy.past_due_churn_days),
    })
}

/// The application over a connected, migrated database (also used by the
/// benchmark's bulk import).
pub async fn app(
    settings: &Settings,
    db: Db,
    shutdown: Shutdown,
) -> anyhow::Result<service::Revenue> {
    let feed = Feed::new(db.clone(), shutdown);
    let directory = AccountDirectory::connect(&settings.peers)?;
    Ok(service::Revenue::new(
        Store::new(db, feed).with_retention(Retention::from_settings(settings)),
        directory,
        policy(settings)?,
        risk::ChurnRisk::connect(&settings.peers)?,
    ))
}

/// Connects the revenue database, applies migrations and binds the server on
/// `settings.revenue.listen` (port 0 picks a free port).
pub async fn build(
    settings: &Settings,
    keys: Arc<ApiKeys>,
    shutdown: Shutdown,
) -> anyhow::Result<GrpcServer> {
    let boot =
        Bootstrap::open::<storage::Migrator>(settings, &settings.revenue, keys, shutdown).await?;
    let app = app(settings, boot.db().clone(), boot.shutdown()).await?;
    let api = RevenueServiceServer::new(api::RevenueApi::new(app));
    boot.serve(ADMIN_METHODS, api).await
}
