//! The change feed: an outbox table written in the same transaction as each
//! change, served in sequence order by `WatchEvents`, and the cursors that
//! consumers keep so a restart neither loses nor repeats an event.
//!
//! Ordering on PostgreSQL: sequences come from a `bigserial`, and two
//! transactions can commit out of sequence order, which would let a reader at
//! cursor 10 skip event 9 committed a moment later. Appends therefore take a
//! transaction-scoped advisory lock, so outbox rows become visible in sequence
//! order. SQLite has a single writer and needs no lock.
//!
//! Retention: the outbox is pruned in the background (see `retention`).
//! A watcher that names itself (`consumer` in `WatchEventsRequest`) is
//! registered in `feed_consumers` with the sequence it asked to resume
//! after, and pruning never deletes an event after the lowest registered
//! position. A watcher that asks to resume before what was pruned gets
//! FAILED_PRECONDITION naming the oldest kept sequence, never a silent gap.

use std::pin::Pin;
use std::time::Duration;

use bowtie_proto::common;
use futures::Stream;
use prost::Name;
use sea_orm::sea_query::{Expr, OnConflict, Order, Query};
use sea_orm::{ConnectionTrait, DbBackend, StatementBuilder};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::db::Db;
use crate::error::Error;
use crate::schema::{FeedConsumers, FeedCursors, OutboxEvents, OutboxPruned};
use crate::shutdown::Shutdown;
use crate::validate::to_timestamp;

/// Rows read per batch when streaming.
const BATCH: u64 = 500;
/// How often an idle stream looks for events written by another replica.
const POLL: Duration = Duration::from_millis(500);
/// The columns an event is written with (the sequence is assigned).
const EVENT_COLUMNS: [OutboxEvents; 7] = [
    OutboxEvents::EventId,
    OutboxEvents::AggregateType,
    OutboxEvents::AggregateId,
    OutboxEvents::EventType,
    OutboxEvents::PayloadType,
    OutboxEvents::Payload,
    OutboxEvents::OccurredAt,
];
/// Taken by pruning and by a consumer's registration, so pruning never
/// passes a position registered while it ran (PostgreSQL; SQLite's one
/// writer serialises them anyway).
const PRUNE_LOCK: &str = "bowtie.outbox.prune";
/// Longest consumer name a watcher may give.
const MAX_CONSUMER_NAME: usize = 200;
/// Events per INSERT statement when appending.
const APPEND_CHUNK: usize = 1000;
/// Key of the advisory lock that orders outbox appends on PostgreSQL.
const OUTBOX_LOCK: i64 = 0x626f_7774_6965;

/// An event to append when the surrounding transaction commits.
#[derive(Debug, Clone)]
pub struct NewEvent {
    aggregate_type: &'static str,
    aggregate_id: String,
    event_type: &'static str,
    payload: prost_types::Any,
}

impl NewEvent {
    /// What kind of aggregate changed, e.g. `account`.
    pub fn aggregate_type(&self) -> &'static str {
        self.aggregate_type
    }

    /// Which one.
    pub fn aggregate_id(&self) -> &str {
        &self.aggregate_id
    }

    /// An event whose payload is the state of `payload` after the change.
    pub fn new<M: Name>(
        aggregate_type: &'static str,
        aggregate_id: impl Into<String>,
        event_type: &'static str,
        payload: &M,
    ) -> Self {
        Self {
            aggregate_type,
            aggregate_id: aggregate_id.into(),
            event_type,
            payload: prost_types::Any {
                type_url: M::type_url(),
                value: payload.encode_to_vec(),
            },
        }
    }
}

/// Appends events inside the caller's transaction.
pub(crate) async fn append<C: ConnectionTrait>(
    conn: &C,
    events: &[NewEvent],
    now: i64,
) -> Result<(), Error> {
    if events.is_empty() {
        return Ok(());
    }
    let backend = conn.get_database_backend();
    if backend == DbBackend::Postgres {
        crate::pg::advisory_lock_id(conn, OUTBOX_LOCK).await?;
    }
    // Bounded statements: SQLite accepts at most 32,766 bound values.
    for chunk in events.chunks(APPEND_CHUNK) {
        let mut insert = Query::insert();
        insert
            .into_table(OutboxEvents::Table)
            .columns(EVENT_COLUMNS);
        for e in chunk {
            insert
                .values([
                    uuid::Uuid::now_v7().to_string().into(),
                    e.aggregate_type.into(),
                    e.aggregate_id.clone().into(),
                    e.event_type.into(),
                    e.payload.type_url.clone().into(),
                    e.payload.value.clone().into(),
                    now.into(),
                ])
                .map_err(|e| Error::Internal(e.into()))?;
        }
        conn.execute(StatementBuilder::build(&insert, &backend))
            .await?;
    }
    Ok(())
}

/// Up to `limit` events with a sequence greater than `after`, in order.
pub async fn read_after<C: ConnectionTrait>(
    conn: &C,
    after: i64,
    limit: u64,
) -> Result<Vec<common::Event>, Error> {
    let stmt = Query::select()
        .column(OutboxEvents::Sequence)
        .columns(EVENT_COLUMNS)
        .from(OutboxEvents::Table)
        .and_where(Expr::col(OutboxEvents::Sequence).gt(after))
        .order_by(OutboxEvents::Sequence, Order::Asc)
        .limit(limit)
        .to_owned();
    let rows = conn
        .query_all(StatementBuilder::build(&stmt, &conn.get_database_backend()))
        .await?;
    rows.into_iter()
        .map(|row| {
            Ok(common::Event {
                sequence: row.try_get("", "sequence")?,
                event_id: row.try_get("", "event_id")?,
                aggregate_type: row.try_get("", "aggregate_type")?,
                aggregate_id: row.try_get("", "aggregate_id")?,
                event_type: row.try_get("", "event_type")?,
                occurred_at: Some(to_timestamp(row.try_get("", "occurred_at")?)),
                payload: Some(prost_types::Any {
                    type_url: row.try_get("", "payload_type")?,
                    value: row.try_get("", "payload")?,
                }),
            })
        })
        .collect::<Result<_, sea_orm::DbErr>>()
        .map_err(Error::from)
}

/// The highest sequence in the outbox (0 when empty).
pub async fn last_sequence<C: ConnectionTrait>(conn: &C) -> Result<i64, Error> {
    let stmt = Query::select()
        .expr_as(
            Expr::col(OutboxEvents::Sequence).max(),
            sea_orm::sea_query::Alias::new("last"),
        )
        .from(OutboxEvents::Table)
        .to_owned();
    let row = conn
        .query_one(StatementBuilder::build(&stmt, &conn.get_database_backend()))
        .await?;
    Ok(match row {
        Some(row) => row.try_get::<Option<i64>>("", "last")?.unwrap_or(0),
        None => 0,
    })
}

/// The highest sequence of an event other than an audit entry (0 when
/// none): where a consumer that reads without `include_audit` stands once
/// it has applied everything, its stored cursor being the last event it
/// was handed.
pub async fn last_change_sequence<C: ConnectionTrait>(conn: &C) -> Result<i64, Error> {
    let stmt = Query::select()
        .expr_as(
            Expr::col(OutboxEvents::Sequence).max(),
            sea_orm::sea_query::Alias::new("last"),
        )
        .from(OutboxEvents::Table)
        .and_where(Expr::col(OutboxEvents::EventType).ne(crate::audit::RECORDED))
        .to_owned();
    let row = conn
        .query_one(StatementBuilder::build(&stmt, &conn.get_database_backend()))
        .await?;
    Ok(match row {
        Some(row) => row.try_get::<Option<i64>>("", "last")?.unwrap_or(0),
        None => 0,
    })
}

/// The highest sequence pruning deleted (0 when nothing was pruned): no
/// event at or below it is kept.
pub async fn pruned_through<C: ConnectionTrait>(conn: &C) -> Result<i64, Error> {
    let stmt = Query::select()
        .column(OutboxPruned::Through)
        .from(OutboxPruned::Table)
        .and_where(Expr::col(OutboxPruned::Id).eq(1))
        .to_owned();
    let row = conn
        .query_one(StatementBuilder::build(&stmt, &conn.get_database_backend()))
        .await?;
    Ok(match row {
        Some(row) => row.try_get("", "through")?,
        None => 0,
    })
}

/// The lowest sequence in the outbox, if any.
async fn first_sequence<C: ConnectionTrait>(conn: &C) -> Result<Option<i64>, Error> {
    let stmt = Query::select()
        .expr_as(
            Expr::col(OutboxEvents::Sequence).min(),
            sea_orm::sea_query::Alias::new("first"),
        )
        .from(OutboxEvents::Table)
        .to_owned();
    let row = conn
        .query_one(StatementBuilder::build(&stmt, &conn.get_database_backend()))
        .await?;
    Ok(match row {
        Some(row) => row.try_get::<Option<i64>>("", "first")?,
        None => None,
    })
}

/// FAILED_PRECONDITION when a watcher resuming after `after_sequence`
/// would miss pruned events.
async fn check_kept<C: ConnectionTrait>(conn: &C, after_sequence: i64) -> Result<(), Error> {
    let through = pruned_through(conn).await?;
    if after_sequence >= through {
        return Ok(());
    }
    let oldest = first_sequence(conn).await?.unwrap_or(through + 1);
    Err(Error::FailedPrecondition(format!(
        "after_sequence {after_sequence} is behind the kept feed: events up to {through} were \
         pruned (feed.retention_days) and the oldest kept sequence is {oldest}; rebuild from the \
         service's current state, then watch after {through} or later"
    )))
}

/// Stores `consumer`'s `position` in a table of positions (`table`,
/// `consumer`, `position`, `updated_at`): `feed_consumers` and
/// `feed_cursors` share that shape.
async fn upsert_position<C: ConnectionTrait, T: sea_orm::sea_query::Iden + Copy + 'static>(
    conn: &C,
    [table, name, at, updated]: [T; 4],
    consumer: &str,
    position: i64,
    now: i64,
) -> Result<(), Error> {
    let stmt = Query::insert()
        .into_table(table)
        .columns([name, at, updated])
        .values([consumer.into(), position.into(), now.into()])
        .map_err(|e| Error::Internal(e.into()))?
        .on_conflict(
            OnConflict::column(name)
                .update_columns([at, updated])
                .to_owned(),
        )
        .to_owned();
    conn.execute(StatementBuilder::build(&stmt, &conn.get_database_backend()))
        .await?;
    Ok(())
}

/// Registers `consumer` at `position`: it applied every event up to it, and
/// pruning keeps every later one.
pub async fn register_consumer<C: ConnectionTrait>(
    conn: &C,
    consumer: &str,
    position: i64,
    now: i64,
) -> Result<(), Error> {
    upsert_position(
        conn,
        [
            FeedConsumers::Table,
            FeedConsumers::Consumer,
            FeedConsumers::Position,
            FeedConsumers::UpdatedAt,
        ],
        consumer,
        position,
        now,
    )
    .await
}

/// The lowest position of a registered consumer, `None` without any.
async fn lowest_consumer<C: ConnectionTrait>(conn: &C) -> Result<Option<i64>, Error> {
    let stmt = Query::select()
        .expr_as(
            Expr::col(FeedConsumers::Position).min(),
            sea_orm::sea_query::Alias::new("lowest"),
        )
        .from(FeedConsumers::Table)
        .to_owned();
    let row = conn
        .query_one(StatementBuilder::build(&stmt, &conn.get_database_backend()))
        .await?;
    Ok(match row {
        Some(row) => row.try_get::<Option<i64>>("", "lowest")?,
        None => None,
    })
}

/// The highest sequence at or below which every event occurred before
/// `expired_before`: the newest aged event, but never at or past a younger
/// one (0 when no event is that old). Ordered by sequence, not by time:
/// concurrent writers can commit their events in another order than they
/// started in. It ends at an aged event, never merely below the first young
/// one: a sequence below that may still be uncommitted, or rolled back, and
/// must not count as pruned.
async fn aged_through<C: ConnectionTrait>(conn: &C, expired_before: i64) -> Result<i64, Error> {
    let backend = conn.get_database_backend();
    let newest_aged = Query::select()
        .expr_as(
            Expr::col(OutboxEvents::Sequence).max(),
            sea_orm::sea_query::Alias::new("newest"),
        )
        .from(OutboxEvents::Table)
        .and_where(Expr::col(OutboxEvents::OccurredAt).lt(expired_before))
        .to_owned();
    let newest_aged = match conn
        .query_one(StatementBuilder::build(&newest_aged, &backend))
        .await?
    {
        Some(row) => row.try_get::<Option<i64>>("", "newest")?.unwrap_or(0),
        None => 0,
    };
    if newest_aged == 0 {
        return Ok(0);
    }
    let first_young = Query::select()
        .column(OutboxEvents::Sequence)
        .from(OutboxEvents::Table)
        .and_where(Expr::col(OutboxEvents::OccurredAt).gte(expired_before))
        .order_by(OutboxEvents::Sequence, Order::Asc)
        .limit(1)
        .to_owned();
    match conn
        .query_one(StatementBuilder::build(&first_young, &backend))
        .await?
    {
        Some(row) => Ok(newest_aged.min(row.try_get::<i64>("", "sequence")? - 1)),
        None => Ok(newest_aged),
    }
}

/// The lowest position stored in `feed_cursors` under one of `names`.
async fn lowest_cursor<C: ConnectionTrait>(
    conn: &C,
    names: &[&'static str],
) -> Result<Option<i64>, Error> {
    if names.is_empty() {
        return Ok(None);
    }
    let stmt = Query::select()
        .expr_as(
            Expr::col(FeedCursors::Position).min(),
            sea_orm::sea_query::Alias::new("lowest"),
        )
        .from(FeedCursors::Table)
        .and_where(Expr::col(FeedCursors::Consumer).is_in(names.iter().copied()))
        .to_owned();
    let row = conn
        .query_one(StatementBuilder::build(&stmt, &conn.get_database_backend()))
        .await?;
    Ok(match row {
        Some(row) => row.try_get::<Option<i64>>("", "lowest")?,
        None => None,
    })
}

/// Inside a pruning transaction: deletes up to `batch` of the oldest events
/// that occurred before `expired_before` and that every registered consumer
/// and every in-process reader whose cursor is stored under one of
/// `own_cursors` has passed (never the newest event), and records how far
/// the outbox is pruned; answers how many were deleted.
pub(crate) async fn prune<C: ConnectionTrait>(
    conn: &C,
    expired_before: i64,
    batch: u64,
    own_cursors: &[&'static str],
) -> Result<u64, Error> {
    let backend = conn.get_database_backend();
    crate::store::lock(conn, PRUNE_LOCK).await?;
    let aged = aged_through(conn, expired_before).await?;
    let last = last_sequence(conn).await?;
    let lowest = match (
        lowest_consumer(conn).await?,
        lowest_cursor(conn, own_cursors).await?,
    ) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let through = crate::retention::outbox_prunable_through(aged, lowest, last);
    if through <= pruned_through(conn).await? {
        return Ok(0);
    }
    // The batch ends at its `batch`-th event, or at `through` when fewer remain.
    let end = Query::select()
        .column(OutboxEvents::Sequence)
        .from(OutboxEvents::Table)
        .and_where(Expr::col(OutboxEvents::Sequence).lte(through))
        .order_by(OutboxEvents::Sequence, Order::Asc)
        .limit(1)
        .offset(batch.saturating_sub(1))
        .to_owned();
    let end = match conn
        .query_one(StatementBuilder::build(&end, &backend))
        .await?
    {
        Some(row) => row.try_get::<i64>("", "sequence")?,
        None => through,
    };
    let delete = Query::delete()
        .from_table(OutboxEvents::Table)
        .and_where(Expr::col(OutboxEvents::Sequence).lte(end))
        .to_owned();
    let deleted = conn
        .execute(StatementBuilder::build(&delete, &backend))
        .await?
        .rows_affected();
    let mark = Query::insert()
        .into_table(OutboxPruned::Table)
        .columns([OutboxPruned::Id, OutboxPruned::Through])
        .values([1.into(), end.into()])
        .map_err(|e| Error::Internal(e.into()))?
        .on_conflict(
            OnConflict::column(OutboxPruned::Id)
                .update_column(OutboxPruned::Through)
                .to_owned(),
        )
        .to_owned();
    conn.execute(StatementBuilder::build(&mark, &backend))
        .await?;
    Ok(deleted)
}

/// A consumer name as a watcher gives it: at most 200 letters, digits and
/// `.`, `_`, `-`, `:`; empty for an anonymous watcher.
fn check_consumer(consumer: &str) -> Result<(), Error> {
    if consumer.len() > MAX_CONSUMER_NAME {
        return Err(Error::invalid(
            "consumer",
            format!("must be at most {MAX_CONSUMER_NAME} characters"),
        ));
    }
    if !consumer
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'))
    {
        return Err(Error::invalid(
            "consumer",
            "may hold only letters, digits and . _ - :",
        ));
    }
    Ok(())
}

/// The sequence a consumer applied last (0 when it never ran).
pub async fn load_cursor<C: ConnectionTrait>(conn: &C, consumer: &str) -> Result<i64, Error> {
    let stmt = Query::select()
        .column(FeedCursors::Position)
        .from(FeedCursors::Table)
        .and_where(Expr::col(FeedCursors::Consumer).eq(consumer))
        .to_owned();
    let row = conn
        .query_one(StatementBuilder::build(&stmt, &conn.get_database_backend()))
        .await?;
    Ok(match row {
        Some(row) => row.try_get("", "position")?,
        None => 0,
    })
}

/// Stores a consumer's position; call it in the transaction that applied the event.
pub async fn save_cursor<C: ConnectionTrait>(
    conn: &C,
    consumer: &str,
    position: i64,
    now: i64,
) -> Result<(), Error> {
    upsert_position(
        conn,
        [
            FeedCursors::Table,
            FeedCursors::Consumer,
            FeedCursors::Position,
            FeedCursors::UpdatedAt,
        ],
        consumer,
        position,
        now,
    )
    .await
}

/// A stream of responses for a `WatchEvents` server-streaming RPC.
pub type EventStream<R> = Pin<Box<dyn Stream<Item = Result<R, Status>> + Send + 'static>>;

/// A service's `WatchEventsRequest`: where the watcher resumes. Every
/// service's contract has one (see `contracts`).
pub trait WatchRequest: Send + 'static {
    /// Stream the events with a greater sequence.
    fn after_sequence(&self) -> i64;
    /// Who is watching (empty: an anonymous watcher, not registered).
    fn consumer(&self) -> &str;
    /// Whether the watcher wants the `audit.recorded` events too.
    fn include_audit(&self) -> bool;
    /// The request of `consumer` that resumes after `after_sequence`.
    fn after(after_sequence: i64, consumer: &str) -> Self;
}

/// A service's `WatchEventsResponse`: one event.
pub trait WatchResponse: Send + 'static {
    /// The response carrying `event`.
    fn wrap(event: common::Event) -> Self;
    /// The event it carries.
    fn into_event(self) -> Option<common::Event>;
}

/// Serves a service's feed to watchers and wakes them when a write commits.
#[derive(Debug, Clone)]
pub struct Feed {
    db: Db,
    committed: watch::Sender<u64>,
    shutdown: Shutdown,
}

impl Feed {
    /// A feed over `db`'s outbox; streams end when `shutdown` fires.
    pub fn new(db: Db, shutdown: Shutdown) -> Self {
        let (committed, _) = watch::channel(0);
        Self {
            db,
            committed,
            shutdown,
        }
    }

    /// A receiver that changes whenever events commit on this process, for
    /// in-process followers of the service's own feed.
    pub fn commits(&self) -> watch::Receiver<u64> {
        self.committed.subscribe()
    }

    /// Wakes the watchers: events were committed.
    pub fn notify(&self) {
        self.committed.send_modify(|generation| *generation += 1);
    }

    /// The `WatchEvents` handler of every service: the events after the
    /// request's `after_sequence`, as [`watch`](Self::watch) streams them.
    /// A named consumer is registered at `after_sequence` first (pruning
    /// keeps what it has not passed); a request behind the pruned part of
    /// the feed is FAILED_PRECONDITION naming the oldest kept sequence.
    pub async fn watch_events<Q: WatchRequest, R: WatchResponse>(
        &self,
        request: tonic::Request<Q>,
    ) -> Result<tonic::Response<EventStream<R>>, Status> {
        let request = request.into_inner();
        let after_sequence = request.after_sequence();
        let consumer = request.consumer();
        check_consumer(consumer)?;
        if after_sequence < 0 {
            return Err(Error::invalid("after_sequence", "must not be negative").into());
        }
        if consumer.is_empty() {
            check_kept(self.db.reader(), after_sequence).await?;
        } else {
            // The check and the registration commit together, so pruning
            // cannot pass the position between them.
            let txn = self.db.begin_write().await?;
            crate::store::lock(&txn, PRUNE_LOCK).await?;
            check_kept(&txn, after_sequence).await?;
            register_consumer(
                &txn,
                consumer,
                after_sequence,
                crate::validate::now_micros(),
            )
            .await?;
            txn.commit().await.map_err(Error::from)?;
        }
        let include_audit = request.include_audit();
        Ok(tonic::Response::new(self.watch_with(
            after_sequence,
            include_audit,
            R::wrap,
        )?))
    }

    /// Every event after `after_sequence`, then new ones as they commit, each
    /// wrapped by `wrap` into the service's response type. The stream ends with
    /// UNAVAILABLE when the server shuts down; the client resumes from the last
    /// sequence it received.
    pub fn watch<R, F>(&self, after_sequence: i64, wrap: F) -> Result<EventStream<R>, Error>
    where
        R: Send + 'static,
        F: Fn(common::Event) -> R + Send + 'static,
    {
        self.watch_with(after_sequence, false, wrap)
    }

    /// [`Self::watch`], with the `audit.recorded` events when
    /// `include_audit` (they are skipped otherwise, the cursor moving past
    /// them all the same).
    pub fn watch_with<R, F>(
        &self,
        after_sequence: i64,
        include_audit: bool,
        wrap: F,
    ) -> Result<EventStream<R>, Error>
    where
        R: Send + 'static,
        F: Fn(common::Event) -> R + Send + 'static,
    {
        if after_sequence < 0 {
            return Err(Error::invalid("after_sequence", "must not be negative"));
        }
        let (tx, rx) = mpsc::channel(64);
        let db = self.db.clone();
        let mut committed = self.committed.subscribe();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let mut cursor = after_sequence;
            loop {
                let batch = match read_after(db.reader(), cursor, BATCH).await {
                    Ok(batch) => batch,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                };
                // A gap may be sequences rolled back, or events pruned
                // under an anonymous watcher that fell behind: say which.
                if let Some(first) = batch.first()
                    && first.sequence > cursor + 1
                    && let Err(e) = check_kept(db.reader(), cursor).await
                {
                    let _ = tx.send(Err(Status::from(e))).await;
                    return;
                }
                let full = batch.len() as u64 == BATCH;
                for event in batch {
                    cursor = event.sequence;
                    if !include_audit && event.event_type == crate::audit::RECORDED {
                        continue;
                    }
                    if tx.send(Ok(wrap(event))).await.is_err() {
                        return;
                    }
                }
                if full {
                    continue;
                }
                tokio::select! {
                    changed = committed.changed() => {
                        if changed.is_err() {
                            tokio::time::sleep(POLL).await;
                        }
                    }
                    () = tokio::time::sleep(POLL) => {}
                    () = tx.closed() => return,
                    () = shutdown.wait() => {
                        let _ = tx
                            .send(Err(Status::unavailable(
                                "server is shutting down; resume from the last sequence received",
                            )))
                            .await;
                        return;
                    }
                }
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }
}
