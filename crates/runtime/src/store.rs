//! The unit of work of every write: one transaction that applies the change,
//! appends its events to the outbox and records the idempotency key, so a
//! write is either entirely there (change, events, key) or not at all.

use futures::future::BoxFuture;
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend};

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

use crate::cache::Invalidates;
use crate::db::Db;
use crate::error::Error;
use crate::feed::{self, Feed, NewEvent};
use crate::idempotency::{self, Idempotency};
use crate::retention::{Retention, expired_before};
use crate::validate::now_micros;

/// How long a consumer's batch waits for any one lock on PostgreSQL before
/// it gives up and is applied one event at a time: under the server's
/// `deadlock_timeout` (1 s by default).
const BATCH_LOCK_TIMEOUT_MS: u32 = 500;

/// An open write transaction.
pub struct Tx {
    txn: DatabaseTransaction,
    events: Vec<NewEvent>,
    now: i64,
    locals: HashMap<TypeId, Box<dyn Any + Send + Sync>>,
}

impl Tx {
    /// The transaction, for the service's queries.
    pub fn conn(&self) -> &DatabaseTransaction {
        &self.txn
    }

    /// Queues an event; it is appended to the outbox when the work commits.
    pub fn emit(&mut self, event: NewEvent) {
        self.events.push(event);
    }

    /// The time of this unit of work, in microseconds since the epoch; every
    /// row it touches carries the same instant.
    pub fn now(&self) -> i64 {
        self.now
    }

    /// The service's state of type `T` for this transaction (`T::default()`
    /// at first): what the transaction has read or written, kept so a batch
    /// of feed events does not read or write the same row again. It lives
    /// and dies with the transaction, so a rollback drops it too.
    pub fn local<T: Default + Send + Sync + 'static>(&mut self) -> &mut T {
        let entry = self
            .locals
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Box::new(T::default()));
        match entry.downcast_mut::<T>() {
            Some(t) => t,
            // The entry under `T`'s type id is only ever a `T`.
            None => unreachable!("transaction state of the wrong type"),
        }
    }

    /// The service's state of type `T` for this transaction, if it keeps any.
    pub fn local_ref<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.locals
            .get(&TypeId::of::<T>())
            .and_then(|t| t.downcast_ref::<T>())
    }
}

/// A service's database together with its change feed.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
    feed: Feed,
    cache: Option<Arc<dyn Invalidates>>,
    /// How long an idempotency key answers a replay (microseconds).
    key_retention: Option<i64>,
}

impl Store {
    /// Wraps a migrated database and its feed; idempotency keys answer
    /// replays for the default 30 days until [`Self::with_retention`].
    pub fn new(db: Db, feed: Feed) -> Self {
        Self {
            db,
            feed,
            cache: None,
            key_retention: Retention::default().keys,
        }
    }

    /// The same store with idempotency keys expiring after `retention.keys`.
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.key_retention = retention.keys;
        self
    }

    /// The same store, invalidating `cache` for every event a write of this
    /// process commits, as soon as it commits.
    pub fn with_cache(mut self, cache: Arc<dyn Invalidates>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// After a commit: wake the feed's watchers, drop what the events changed.
    fn committed(&self, events: &[NewEvent]) {
        if events.is_empty() {
            return;
        }
        if let Some(cache) = &self.cache {
            for e in events {
                cache.invalidate(e.aggregate_type(), e.aggregate_id());
            }
        }
        self.feed.notify();
    }

    /// The database, for reads.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The change feed, for `WatchEvents`.
    pub fn feed(&self) -> &Feed {
        &self.feed
    }

    /// Runs `work` in a transaction with idempotency and the outbox.
    ///
    /// With a key that was seen before, returns the stored response without
    /// running `work` (or INVALID_ARGUMENT when the request differs). When two
    /// requests with the same new key race, the loser's transaction rolls back
    /// and it answers with the winner's response. A key older than the
    /// retention counts as never seen: the request runs as new and its
    /// response replaces the expired one.
    pub async fn write<R, F>(&self, idem: Option<Idempotency>, work: F) -> Result<R, Error>
    where
        R: prost::Message + Default,
        F: for<'c> FnOnce(&'c mut Tx) -> BoxFuture<'c, Result<R, Error>> + Send,
    {
        let expired = expired_before(now_micros(), self.key_retention);
        if let Some(idem) = &idem
            && let Some(response) = idempotency::replay(self.db.writer(), idem, expired).await?
        {
            return Ok(response);
        }
        let txn = self.db.begin_write().await?;
        let mut tx = Tx {
            txn,
            events: Vec::new(),
            now: now_micros(),
            locals: HashMap::new(),
        };
        let response = match work(&mut tx).await {
            Ok(response) => response,
            Err(Error::Forbidden {
                account_id,
                message,
            }) => {
                tx.txn.rollback().await?;
                self.refused(idem.as_ref(), &account_id).await?;
                return Err(Error::Forbidden {
                    account_id,
                    message,
                });
            }
            Err(e) => return Err(e),
        };
        let Tx {
            txn,
            mut events,
            now,
            ..
        } = tx;
        let audited = crate::audit::record(&txn, idem.as_ref(), &events, now).await?;
        events.extend(audited);
        feed::append(&txn, &events, now).await?;
        if let Some(idem) = &idem {
            let recorded =
                idempotency::record(&txn, idem, &response.encode_to_vec(), now, expired).await;
            let lost = match recorded {
                Ok(recorded) => !recorded,
                Err(e) if e.is_unique_violation() => true,
                Err(e) => return Err(e),
            };
            if lost {
                txn.rollback().await?;
                return idempotency::replay(self.db.writer(), idem, expired)
                    .await?
                    .ok_or_else(|| {
                        Error::Aborted(
                            "concurrent request with the same idempotency key; retry".into(),
                        )
                    });
            }
        }
        txn.commit().await?;
        self.committed(&events);
        Ok(response)
    }

    /// Records in the audit log, in a transaction of its own, that the
    /// ownership rules refused the call a write on `account_id`
    /// (`crate::access`). A handler that refuses outside [`Self::write`]
    /// calls it before answering with the [`Error::Forbidden`].
    pub async fn refused(&self, idem: Option<&Idempotency>, account_id: &str) -> Result<(), Error> {
        let txn = self.db.begin_write().await?;
        let now = now_micros();
        let target = if account_id.is_empty() {
            String::new()
        } else {
            format!("account:{account_id}")
        };
        let events: Vec<NewEvent> = crate::audit::record_denial(&txn, idem, &target, now)
            .await?
            .into_iter()
            .collect();
        feed::append(&txn, &events, now).await?;
        txn.commit().await?;
        self.committed(&events);
        Ok(())
    }

    /// Applies event `sequence` of another service's feed for `consumer`:
    /// `work`, the consumer's new cursor and any events `work` emits commit
    /// together, and an event at or below the stored cursor is skipped, so a
    /// redelivered event is never applied twice. Returns whether it ran.
    pub async fn consume<F>(&self, consumer: &str, sequence: i64, work: F) -> Result<bool, Error>
    where
        F: for<'c> FnOnce(&'c mut Tx) -> BoxFuture<'c, Result<(), Error>> + Send,
    {
        let ran = self
            .consume_batch(consumer, &[sequence], move |tx, _| work(tx))
            .await?;
        Ok(ran == 1)
    }

    /// Applies consecutive events of another service's feed for `consumer`
    /// in one transaction: `sequences` are theirs, ascending. Those at or
    /// below the stored cursor were applied before and are skipped: `work`
    /// is handed the index in `sequences` of the first one above it and
    /// applies that one and every later one. The cursor moves to the last
    /// sequence in the same transaction, so the batch and its emitted events
    /// are either all there or not at all, exactly once. Returns how many
    /// events ran (0 when all had been applied).
    pub async fn consume_batch<F>(
        &self,
        consumer: &str,
        sequences: &[i64],
        work: F,
    ) -> Result<usize, Error>
    where
        F: for<'c> FnOnce(&'c mut Tx, usize) -> BoxFuture<'c, Result<(), Error>> + Send,
    {
        let Some(&last) = sequences.last() else {
            return Ok(0);
        };
        let txn = self.db.begin_write().await?;
        if sequences.len() > 1 && txn.get_database_backend() == DbBackend::Postgres {
            // A batch locks its events' aggregates in feed order, which a
            // client's write (locking in key order) may cross. Waiting less
            // than PostgreSQL's deadlock check (1 s by default) makes the
            // batch give up first, so a client's write is never the one a
            // deadlock aborts; the consumer then applies the events one per
            // transaction.
            crate::pg::lock_timeout(&txn, BATCH_LOCK_TIMEOUT_MS).await?;
        }
        // Replicas running the same consumer take turns per batch.
        lock(&txn, &format!("consumer.{consumer}")).await?;
        let cursor = feed::load_cursor(&txn, consumer).await?;
        if cursor >= last {
            txn.rollback().await?;
            return Ok(0);
        }
        let first = sequences.partition_point(|&s| s <= cursor);
        let mut tx = Tx {
            txn,
            events: Vec::new(),
            now: now_micros(),
            locals: HashMap::new(),
        };
        work(&mut tx, first).await?;
        let Tx {
            txn, events, now, ..
        } = tx;
        feed::save_cursor(&txn, consumer, last, now).await?;
        feed::append(&txn, &events, now).await?;
        txn.commit().await?;
        self.committed(&events);
        Ok(sequences.len() - first)
    }
}

/// Serialises the transactions that lock the same `key` until each ends:
/// the way to guard a read-modify-write of one aggregate (a journey, an
/// account's movements, a scoring profile) against a concurrent writer on
/// PostgreSQL. Keys name their service and aggregate, e.g.
/// `funnel.journey.<id>`. On SQLite a write transaction holds the file's
/// write lock from its start ([`crate::db::Db::begin_write`]), so nothing more is needed.
pub async fn lock<C: ConnectionTrait>(txn: &C, key: &str) -> Result<(), Error> {
    if txn.get_database_backend() == DbBackend::Postgres {
        crate::pg::advisory_lock(txn, key).await?;
    }
    Ok(())
}
