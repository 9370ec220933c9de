//! Bounded storage (docs/design.md section 4): what each setting keeps, and
//! the background pruner that deletes the rest (docs/operations.md,
//! "Retention").
//!
//! The runtime prunes its own tables in every service: idempotency keys
//! older than `idempotency.retention_days`, and outbox events older than
//! `feed.retention_days` that every registered consumer has passed. A
//! service adds its own tables as further [`Prune`] tasks (scoring its raw
//! signals and old day cells). Every task deletes at most
//! `pruning.batch_size` rows per transaction and the pass yields between
//! batches, so a write never waits behind a long delete. Each pass counts the
//! rows it deleted per table in the `bowtie.retention.pruned_rows` counter
//! (attribute `table`) and logs them.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use opentelemetry::KeyValue;

use crate::config::{PruningSettings, Settings};
use crate::db::Db;
use crate::error::Error;
use crate::shutdown::Shutdown;
use crate::validate::now_micros;

/// Microseconds in a day.
const DAY_MICROS: f64 = 86_400_000_000.0;
/// The pause between two batches of one table, so queued writes go first.
const BETWEEN_BATCHES: Duration = Duration::from_millis(5);

/// A retention in days as microseconds; `None` (keep for ever) for zero, a
/// negative number or one that is not a number.
pub fn retention_micros(days: f64) -> Option<i64> {
    if days.is_nan() || days <= 0.0 {
        return None;
    }
    let micros = days * DAY_MICROS;
    Some(if micros >= i64::MAX as f64 {
        i64::MAX
    } else {
        (micros as i64).max(1)
    })
}

/// The instant (microseconds) before which a row kept for `retention` is
/// expired as of `now`; with no retention nothing is, so `i64::MIN`.
pub fn expired_before(now: i64, retention: Option<i64>) -> i64 {
    match retention {
        Some(r) => now.saturating_sub(r),
        None => i64::MIN,
    }
}

/// The highest outbox sequence pruning may delete: events older than the
/// retention end at `aged_through` (0: none is that old); no registered
/// consumer may lose an event it has not passed (`lowest_consumer`, the
/// lowest position, `None` without consumers); and the newest event
/// (`last`) always stays, so the sequence never restarts below what
/// consumers have seen.
pub fn outbox_prunable_through(aged_through: i64, lowest_consumer: Option<i64>, last: i64) -> i64 {
    let mut through = aged_through.min(last.saturating_sub(1));
    if let Some(position) = lowest_consumer {
        through = through.min(position);
    }
    through.max(0)
}

/// One table's pruning: deletes a batch of its expired rows.
#[async_trait]
pub trait Prune: Send + Sync {
    /// The table, as the metric and the log name it.
    fn table(&self) -> &'static str;

    /// Deletes at most `batch` expired rows as of `now` (microseconds) in
    /// one short transaction; answers how many it deleted.
    async fn prune_batch(&self, db: &Db, now: i64, batch: u64) -> Result<u64, Error>;
}

impl std::fmt::Debug for dyn Prune {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prune")
            .field("table", &self.table())
            .finish()
    }
}

/// How long the runtime's own rows are kept, read from the settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Idempotency keys, in microseconds; `None`: for ever.
    pub keys: Option<i64>,
    /// Outbox events at least, in microseconds; `None`: for ever.
    pub events: Option<i64>,
}

impl Retention {
    /// The retention `settings` configure.
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            keys: retention_micros(settings.idempotency.retention_days),
            events: retention_micros(settings.feed.retention_days),
        }
    }

    /// The runtime's pruning tasks for these retentions; the outbox keeps
    /// every event after the position stored in `feed_cursors` under each of
    /// `own_cursors` (in-process readers of the service's own outbox).
    pub fn tasks(&self, own_cursors: &[&'static str]) -> Vec<Arc<dyn Prune>> {
        let mut tasks: Vec<Arc<dyn Prune>> = Vec::new();
        if let Some(retention) = self.keys {
            tasks.push(Arc::new(Keys { retention }));
        }
        if let Some(retention) = self.events {
            tasks.push(Arc::new(Events {
                retention,
                own_cursors: own_cursors.to_vec(),
            }));
        }
        tasks
    }
}

impl Default for Retention {
    /// The built-in defaults: 30 days each.
    fn default() -> Self {
        Self {
            keys: retention_micros(30.0),
            events: retention_micros(30.0),
        }
    }
}

/// Expired idempotency keys.
struct Keys {
    retention: i64,
}

#[async_trait]
impl Prune for Keys {
    fn table(&self) -> &'static str {
        "idempotency_keys"
    }

    async fn prune_batch(&self, db: &Db, now: i64, batch: u64) -> Result<u64, Error> {
        let txn = db.begin_write().await?;
        let pruned =
            crate::idempotency::prune(&txn, expired_before(now, Some(self.retention)), batch)
                .await?;
        txn.commit().await?;
        Ok(pruned)
    }
}

/// Outbox events past the retention that every registered consumer (and
/// every in-process reader) passed.
struct Events {
    retention: i64,
    own_cursors: Vec<&'static str>,
}

#[async_trait]
impl Prune for Events {
    fn table(&self) -> &'static str {
        "outbox_events"
    }

    async fn prune_batch(&self, db: &Db, now: i64, batch: u64) -> Result<u64, Error> {
        let txn = db.begin_write().await?;
        let expired = expired_before(now, Some(self.retention));
        let pruned = crate::feed::prune(&txn, expired, batch, &self.own_cursors).await?;
        txn.commit().await?;
        Ok(pruned)
    }
}

/// Runs `tasks` on `db` every `settings.interval_ms` until `shutdown`, the
/// first pass right away.
pub fn spawn(db: Db, tasks: Vec<Arc<dyn Prune>>, settings: PruningSettings, shutdown: Shutdown) {
    if tasks.is_empty() {
        return;
    }
    let counter = opentelemetry::global::meter("bowtie")
        .u64_counter("bowtie.retention.pruned_rows")
        .with_description("Rows the background pruning deleted, by table")
        .build();
    let batch = settings.batch_size.max(1);
    let interval = Duration::from_millis(settings.interval_ms.max(1));
    tokio::spawn(async move {
        loop {
            for task in &tasks {
                let table = task.table();
                let pruned = tokio::select! {
                    pruned = prune_table(&db, task.as_ref(), batch) => pruned,
                    () = shutdown.wait() => return,
                };
                match pruned {
                    Ok(0) => {}
                    Ok(rows) => {
                        counter.add(rows, &[KeyValue::new("table", table)]);
                        tracing::info!(table, rows, "pruned expired rows");
                    }
                    Err(e) => {
                        tracing::warn!(table, error = %e, "pruning failed; retrying next pass")
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = shutdown.wait() => return,
            }
        }
    });
}

/// One table's pass: batches until one comes back short.
async fn prune_table(db: &Db, task: &dyn Prune, batch: u64) -> Result<u64, Error> {
    let mut total = 0;
    loop {
        let pruned = task.prune_batch(db, now_micros(), batch).await?;
        total += pruned;
        if pruned < batch {
            return Ok(total);
        }
        tokio::time::sleep(BETWEEN_BATCHES).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retention_in_days_is_counted_in_microseconds_and_zero_keeps_for_ever() {
        assert_eq!(retention_micros(30.0), Some(2_592_000_000_000));
        assert_eq!(retention_micros(0.5), Some(43_200_000_000));
        assert_eq!(retention_micros(0.0), None);
        assert_eq!(retention_micros(-1.0), None);
        assert_eq!(retention_micros(f64::NAN), None);
    }

    #[test]
    fn rows_are_expired_before_now_minus_the_retention() {
        let now = 10_000_000_000_000;
        assert_eq!(
            expired_before(now, Some(2_592_000_000_000)),
            7_408_000_000_000
        );
        assert_eq!(expired_before(now, None), i64::MIN);
        assert_eq!(expired_before(i64::MIN + 5, Some(10)), i64::MIN);
    }

    #[test]
    fn the_outbox_is_pruned_up_to_the_aged_events_unless_a_consumer_lags() {
        // Events 1..=40 are past the retention, 100 is the newest.
        assert_eq!(outbox_prunable_through(40, None, 100), 40);
        // A consumer at 25 keeps 26 onwards though they are old.
        assert_eq!(outbox_prunable_through(40, Some(25), 100), 25);
        // Consumers ahead of the aged events change nothing.
        assert_eq!(outbox_prunable_through(40, Some(90), 100), 40);
        // The newest event stays even when every event is old.
        assert_eq!(outbox_prunable_through(100, None, 100), 99);
        assert_eq!(outbox_prunable_through(100, Some(100), 100), 99);
        // Nothing old, or an empty outbox: nothing to prune.
        assert_eq!(outbox_prunable_through(0, Some(50), 100), 0);
        assert_eq!(outbox_prunable_through(0, None, 0), 0);
    }
}
