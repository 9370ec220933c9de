//! Bounded storage of the scoring tables (docs/operations.md, "Retention"):
//! raw signals that occurred and were recorded more than
//! `scoring.raw_signal_days` ago and day cells older than anything reads are
//! pruned in batches by the runtime's pruner, and `m0402_scoring_retention`
//! adds the indexes those deletes look rows up by.
//!
//! A signal's row is also its idempotency key, so it is kept for the window
//! after it was recorded, however old its time: a batch of history replayed
//! within the window is still recognised.
//!
//! A raw signal is pruned only once its day cell holds it: on PostgreSQL
//! ingest added it to `signal_days` when it arrived; on SQLite, where the
//! signals' cells live in memory, the batch first adds the signals it
//! deletes to `signal_days`, in the same transaction, so a restart reads
//! them back (see `day_cells`).

use std::sync::Arc;

use async_trait::async_trait;
use bowtie_proto::scoring::SignalType;
use bowtie_runtime::Instant;
use bowtie_runtime::db::Db;
use bowtie_runtime::error::Error;
use bowtie_runtime::retention::{Prune, expired_before};
use bowtie_runtime::sql::{corrupt, execute_counted, query};
use sea_orm::sea_query::{Alias, Expr, Order, Query};
use sea_orm::{DbBackend, DbErr};
use sea_orm_migration::prelude::{Index, MigrationName, MigrationTrait, SchemaManager};

use super::day_cells::{add_days, day_deltas};
use super::entity::signal::{Column as S, Entity as Signals};
use super::entity::signal_day::{Column as D, Entity as SignalDays};
use super::signals::NewSignal;
use super::stored_account;
use crate::domain::cells::{day_of, first_kept_day};

/// Signals deleted per statement on SQLite (one bound key each).
const DELETE_CHUNK: usize = 5000;
/// The index raw signals are pruned by (a signal's time is at most the
/// future tolerance after its recording, so rows recorded before a cutoff
/// occurred before it too, bar minutes).
const SIGNALS_BY_TIME: &str = "signals_recorded_at";
/// The index day cells are pruned by.
const CELLS_BY_DAY: &str = "signal_days_day";

/// `m0402_scoring_retention`: indexes on the signals' recording time and
/// the cells' day.
pub struct RetentionIndexes;

impl MigrationName for RetentionIndexes {
    fn name(&self) -> &str {
        "m0402_scoring_retention"
    }
}

#[async_trait]
impl MigrationTrait for RetentionIndexes {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_index(
            Index::create()
                .name(SIGNALS_BY_TIME)
                .table(Signals)
                .col(S::RecordedAt)
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name(CELLS_BY_DAY)
                .table(SignalDays)
                .col(D::Day)
                .if_not_exists()
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(
            Index::drop()
                .name(SIGNALS_BY_TIME)
                .table(Signals)
                .if_exists()
                .to_owned(),
        )
        .await?;
        m.drop_index(
            Index::drop()
                .name(CELLS_BY_DAY)
                .table(SignalDays)
                .if_exists()
                .to_owned(),
        )
        .await
    }
}

/// The pruning of raw signals that occurred and were recorded more than
/// `retention` microseconds ago.
pub fn raw_signals(retention: i64) -> Arc<dyn Prune> {
    Arc::new(RawSignals { retention })
}

/// The pruning of day cells older than anything reads (see
/// [`first_kept_day`]) with a churn horizon of `horizon_days` and the
/// policy's other windows.
pub fn old_cells(horizon_days: i64, windows: Vec<i64>) -> Arc<dyn Prune> {
    Arc::new(OldCells {
        horizon_days,
        windows,
    })
}

struct RawSignals {
    retention: i64,
}

#[async_trait]
impl Prune for RawSignals {
    fn table(&self) -> &'static str {
        "signals"
    }

    async fn prune_batch(&self, db: &Db, now: i64, batch: u64) -> Result<u64, Error> {
        let cutoff = expired_before(now, Some(self.retention));
        let oldest = Query::select()
            .columns([
                S::IdempotencyKey,
                S::AccountId,
                S::Kind,
                S::Value,
                S::OccurredAt,
            ])
            .from(Signals)
            .and_where(Expr::col(S::RecordedAt).lt(cutoff))
            .and_where(Expr::col(S::OccurredAt).lt(cutoff))
            .order_by(S::RecordedAt, Order::Asc)
            .limit(batch)
            .to_owned();
        let txn = db.begin_write().await?;
        let pruned = if db.backend() == DbBackend::Postgres {
            // Ingest put every signal in its day cell already.
            let keys = Query::select()
                .column(S::IdempotencyKey)
                .from(Signals)
                .and_where(Expr::col(S::RecordedAt).lt(cutoff))
                .and_where(Expr::col(S::OccurredAt).lt(cutoff))
                .order_by(S::RecordedAt, Order::Asc)
                .limit(batch)
                .to_owned();
            let delete = Query::delete()
                .from_table(Signals)
                .and_where(Expr::col(S::IdempotencyKey).in_subquery(keys))
                .to_owned();
            execute_counted(&txn, &delete).await?
        } else {
            let signals = query(&txn, &oldest)
                .await?
                .iter()
                .map(|r| {
                    let kind: i32 = r.try_get_by_index(2)?;
                    Ok(NewSignal {
                        key: r.try_get_by_index(0)?,
                        account_id: stored_account(&r.try_get_by_index::<String>(1)?)?,
                        kind: SignalType::try_from(kind)
                            .map_err(|_| corrupt(format_args!("signal kind {kind}")))?,
                        value: r.try_get_by_index(3)?,
                        occurred_at: Instant::from_micros(r.try_get_by_index(4)?),
                    })
                })
                .collect::<Result<Vec<_>, Error>>()?;
            add_days(&txn, &day_deltas(&signals)).await?;
            let mut pruned = 0;
            for chunk in signals.chunks(DELETE_CHUNK) {
                let delete = Query::delete()
                    .from_table(Signals)
                    .and_where(
                        Expr::col(S::IdempotencyKey).is_in(chunk.iter().map(|s| s.key.clone())),
                    )
                    .to_owned();
                pruned += execute_counted(&txn, &delete).await?;
            }
            pruned
        };
        txn.commit().await?;
        Ok(pruned)
    }
}

struct OldCells {
    horizon_days: i64,
    windows: Vec<i64>,
}

#[async_trait]
impl Prune for OldCells {
    fn table(&self) -> &'static str {
        "signal_days"
    }

    async fn prune_batch(&self, db: &Db, now: i64, batch: u64) -> Result<u64, Error> {
        // Kept back from the newest day that has cells, not from today: a
        // history that stopped arriving keeps what training as of its end
        // reads (docs/design.md section 3, "The reference instant").
        let newest = Query::select()
            .expr_as(Expr::col(D::Day).max(), Alias::new("newest"))
            .from(SignalDays)
            .to_owned();
        let newest = match query(db.reader(), &newest).await?.first() {
            Some(row) => row.try_get::<Option<i64>>("", "newest")?,
            None => None,
        };
        let Some(newest) = newest else {
            return Ok(0);
        };
        let today = day_of(Instant::from_micros(now)).min(newest);
        let first = first_kept_day(today, self.horizon_days, &self.windows);
        let oldest = Query::select()
            .columns([D::AccountId, D::Day, D::Kind])
            .from(SignalDays)
            .and_where(Expr::col(D::Day).lt(first))
            .order_by(D::Day, Order::Asc)
            .limit(batch)
            .to_owned();
        let delete = Query::delete()
            .from_table(SignalDays)
            .and_where(
                Expr::tuple([
                    Expr::col(D::AccountId).into(),
                    Expr::col(D::Day).into(),
                    Expr::col(D::Kind).into(),
                ])
                .in_subquery(oldest),
            )
            .to_owned();
        let txn = db.begin_write().await?;
        let pruned = execute_counted(&txn, &delete).await?;
        txn.commit().await?;
        Ok(pruned)
    }
}
