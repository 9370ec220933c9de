//! Database connection and migrations.
//!
//! Each service owns its database: an SQLite file by default (WAL journal, so
//! readers never wait for the writer) or, in production, its own schema in
//! PostgreSQL, selected through `search_path` so that the same SQL runs on
//! both. SQLite gets a pool of readers and a single writer connection: SQLite
//! admits one writer at a time anyway, and a single writer connection avoids
//! the `SQLITE_BUSY` failures that deferred transactions hit when two
//! connections race to upgrade from reading to writing. Replicas of one
//! service on one SQLite file each have their own writer, so a write
//! transaction takes the file's write lock first ([`Db::begin_write`]).

use std::time::Duration;

use sea_orm::sea_query::{Expr, Query};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    StatementBuilder, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;

use crate::config::DatabaseSettings;
use crate::error::Error;
use crate::schema::FeedCursors;

/// A service's database: a reader and a writer handle (the same pool on PostgreSQL).
#[derive(Debug, Clone)]
pub struct Db {
    reader: DatabaseConnection,
    writer: DatabaseConnection,
    /// The PostgreSQL schema; `None` on SQLite.
    schema: Option<String>,
}

/// The advisory-lock key under which a schema is created and migrated.
fn schema_lock(schema: &str) -> String {
    format!("bowtie.schema.{schema}")
}

impl Db {
    /// Connects (creating the SQLite file or the PostgreSQL schema when missing).
    pub async fn connect(settings: &DatabaseSettings) -> Result<Self, Error> {
        let url = settings.url();
        if url.starts_with("sqlite:") {
            Self::connect_sqlite(settings).await
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Self::connect_postgres(settings).await
        } else {
            Err(Error::Internal(anyhow::anyhow!(
                "database.url must start with sqlite:// or postgres://"
            )))
        }
    }

    async fn connect_sqlite(settings: &DatabaseSettings) -> Result<Self, Error> {
        let url = settings.url();
        let path = url
            .trim_start_matches("sqlite://")
            .trim_start_matches("sqlite:");
        let path = path.split('?').next().unwrap_or_default();
        if let Some(parent) = std::path::Path::new(path).parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| {
                Error::Internal(anyhow::Error::new(e).context("creating the SQLite directory"))
            })?;
        }
        let open = |max: u32| {
            let mut options = Self::options(settings, url, max);
            options.map_sqlx_sqlite_opts(|o| {
                o.create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(5))
                    .foreign_keys(true)
                    // 16 MiB of page cache per connection (the default is
                    // 2 MiB): bulk writes into large indexes stay in memory.
                    .pragma("cache_size", "-16384")
                    // Checkpoint the WAL every ~40 MiB rather than ~4 MiB: a
                    // page rewritten by many commits is copied back once.
                    .pragma("wal_autocheckpoint", "10000")
                    // Rows cross from SQLite's thread in batches of up to
                    // 4,096 (the default is 50): a large read hands off
                    // between threads far less often.
                    .row_buffer_size(4096)
            });
            options
        };
        let writer = Database::connect(open(1)).await?;
        // Switch to WAL once through the writer before readers open the file.
        writer.execute_unprepared("PRAGMA journal_mode=WAL").await?;
        let reader = Database::connect(open(settings.max_connections.max(1))).await?;
        Ok(Self {
            reader,
            writer,
            schema: None,
        })
    }

    async fn connect_postgres(settings: &DatabaseSettings) -> Result<Self, Error> {
        let schema = &settings.schema;
        if !crate::pg::valid_schema(schema) {
            return Err(Error::Internal(anyhow::anyhow!(
                "database.schema must be a lower-case identifier, got {schema:?}"
            )));
        }
        let mut options = Self::options(settings, settings.url(), settings.max_connections);
        options.set_schema_search_path(schema.clone());
        let pool = Database::connect(options).await?;
        // Replicas that start together would race on CREATE SCHEMA IF NOT
        // EXISTS (a duplicate-key error from the catalog); they take turns.
        let txn = pool.begin().await?;
        crate::store::lock(&txn, &schema_lock(schema)).await?;
        crate::pg::create_schema(&txn, schema).await?;
        txn.commit().await?;
        // With per-service roles, a schema that exists but belongs to another
        // service passes CREATE SCHEMA IF NOT EXISTS and then silently drops
        // out of the search path; say so now rather than fail later with
        // "no schema has been selected to create in".
        let usable = crate::pg::schema_usable(&pool, schema).await?;
        if !usable {
            return Err(Error::Internal(anyhow::anyhow!(
                "permission denied: the database role may not use schema {schema:?} \
                 (each service connects with its own role to its own schema)"
            )));
        }
        Ok(Self {
            reader: pool.clone(),
            writer: pool,
            schema: Some(schema.clone()),
        })
    }

    fn options(settings: &DatabaseSettings, url: &str, max: u32) -> ConnectOptions {
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .max_connections(max)
            .min_connections(0)
            .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
            .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
            .sqlx_logging(false);
        options
    }

    /// The handle for reads.
    pub fn reader(&self) -> &DatabaseConnection {
        &self.reader
    }

    /// The handle for writes and transactions.
    pub fn writer(&self) -> &DatabaseConnection {
        &self.writer
    }

    /// SQLite or PostgreSQL.
    pub fn backend(&self) -> DbBackend {
        self.writer.get_database_backend()
    }

    /// Applies every pending migration of `M`.
    pub async fn migrate<M: MigratorTrait>(&self) -> Result<(), Error> {
        let Some(schema) = &self.schema else {
            M::up(&self.writer, None).await?;
            return Ok(());
        };
        // Replicas (or migration jobs) that start together migrate one at a
        // time: the others wait for the lock, then find nothing to do. The
        // lock and the schema changes share one transaction, so a failed
        // migration leaves nothing half-applied.
        let txn = self.writer.begin().await?;
        crate::store::lock(&txn, &schema_lock(schema)).await?;
        M::up(&txn, None).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Starts a write transaction. On SQLite its first statement takes the
    /// file's write lock, waiting up to the busy timeout for another
    /// process's writer; a deferred transaction that read first and then
    /// found the file changed by that writer would fail at once with
    /// `SQLITE_BUSY` instead. PostgreSQL's row locks need nothing here.
    pub async fn begin_write(&self) -> Result<DatabaseTransaction, Error> {
        let txn = self.writer.begin().await?;
        if txn.get_database_backend() == DbBackend::Sqlite {
            // An update that matches no row still opens the write transaction.
            let claim = Query::update()
                .table(FeedCursors::Table)
                .value(FeedCursors::Position, Expr::col(FeedCursors::Position))
                .and_where(Expr::val(1).eq(0))
                .to_owned();
            txn.execute(StatementBuilder::build(&claim, &DbBackend::Sqlite))
                .await?;
        }
        Ok(txn)
    }

    /// Round trip to the database, for health checks.
    pub async fn ping(&self) -> Result<(), Error> {
        self.reader.ping().await?;
        Ok(())
    }

    /// Closes both pools.
    pub async fn close(self) {
        let _ = self.reader.close_by_ref().await;
        let _ = self.writer.close_by_ref().await;
    }
}
