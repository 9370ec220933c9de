//! A service's start, written once: connect its database, apply its
//! migrations, open its change feed, then bind its gRPC server with the
//! shared settings (message limits, auth, health following the database, the
//! optional plaintext health listener), and start the background pruning
//! of what the retention settings let go. A service's `build()` adds only
//! what is its own between the two: its application, its feed consumers,
//! its workers, its own tables' pruning.

use std::sync::Arc;

use sea_orm_migration::MigratorTrait;

use crate::auth::ApiKeys;
use crate::config::{DatabaseSettings, ServiceSettings, Settings};
use crate::db::Db;
use crate::feed::Feed;
use crate::retention::{self, Prune, Retention};
use crate::server::GrpcServer;
use crate::shutdown::Shutdown;
use crate::store::Store;

/// A service's generated gRPC server (every service's; see `contracts`).
pub trait ServiceServer {
    /// Adds this service to `server`, accepting and sending messages of at
    /// most `max_message_bytes`.
    fn add_to(self, server: GrpcServer, max_message_bytes: usize) -> GrpcServer;
}

/// Connects `database`, applies `M`'s migrations and closes the connection
/// (`bowtie migrate`).
pub async fn migrate<M: MigratorTrait>(database: &DatabaseSettings) -> anyhow::Result<()> {
    let db = Db::connect(database).await?;
    db.migrate::<M>().await?;
    db.close().await;
    Ok(())
}

/// A service halfway started: its database connected and migrated, its feed
/// open, its server not yet bound.
#[derive(Debug)]
pub struct Bootstrap<'a> {
    settings: &'a Settings,
    service: &'a ServiceSettings,
    keys: Arc<ApiKeys>,
    shutdown: Shutdown,
    db: Db,
    feed: Feed,
    retention: Retention,
    pruning: Vec<Arc<dyn Prune>>,
    own_cursors: Vec<&'static str>,
}

impl<'a> Bootstrap<'a> {
    /// Connects `service.database` and applies `M`'s migrations; the feed's
    /// streams and the server stop when `shutdown` fires.
    pub async fn open<M: MigratorTrait>(
        settings: &'a Settings,
        service: &'a ServiceSettings,
        keys: Arc<ApiKeys>,
        shutdown: Shutdown,
    ) -> anyhow::Result<Self> {
        let db = Db::connect(&service.database).await?;
        db.migrate::<M>().await?;
        let feed = Feed::new(db.clone(), shutdown.clone());
        let retention = Retention::from_settings(settings);
        Ok(Self {
            settings,
            service,
            keys,
            shutdown,
            db,
            feed,
            retention,
            pruning: Vec::new(),
            own_cursors: Vec::new(),
        })
    }

    /// How long the runtime's rows are kept, for a store built by hand.
    pub fn retention(&self) -> Retention {
        self.retention
    }

    /// Prunes `task`'s table too, with the runtime's (one pass every
    /// `pruning.interval_ms`, batches of `pruning.batch_size`).
    pub fn prune(&mut self, task: Arc<dyn Prune>) {
        self.pruning.push(task);
    }

    /// An in-process reader of the service's own outbox (a notifier, a
    /// webhook sender) stores its position in `feed_cursors` under
    /// `cursor`: pruning keeps every event after it.
    pub fn keep_events_for(&mut self, cursor: &'static str) {
        self.own_cursors.push(cursor);
    }

    /// The migrated database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The database with the service's feed, for its application. Every
    /// store shares the one feed, so each write wakes every watcher.
    pub fn store(&self) -> Store {
        Store::new(self.db.clone(), self.feed.clone()).with_retention(self.retention)
    }

    /// The signal that stops the service, for its consumers and workers.
    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Binds the server on the service's `listen` address (port 0 picks a
    /// free port) serving `service`, `admin_methods` needing the admin
    /// scope; health follows the database. Pruning starts here.
    pub async fn serve<S: ServiceServer>(
        self,
        admin_methods: &'static [&'static str],
        service: S,
    ) -> anyhow::Result<GrpcServer> {
        let mut pruning = self.retention.tasks(&self.own_cursors);
        pruning.extend(self.pruning);
        retention::spawn(
            self.db.clone(),
            pruning,
            self.settings.pruning.clone(),
            self.shutdown.clone(),
        );
        let server = GrpcServer::bind(
            self.service.listen,
            &self.settings.server,
            self.keys,
            admin_methods,
            self.shutdown,
        )
        .await?;
        service
            .add_to(server, self.settings.server.max_message_bytes)
            .watch_database(self.db)
            .serve_health_on(self.service.health_listen)
    }
}
