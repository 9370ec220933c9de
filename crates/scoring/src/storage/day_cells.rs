//! The day cells health is folded from, behind one type whatever the
//! backend: [`DayCells`].
//!
//! On PostgreSQL, where replicas share the database, ingest adds every
//! signal to `signal_days` in its own transaction and reads take the cells
//! from there. On SQLite, where one process owns the file, the signals'
//! cells live in memory (rebuilt from `signals` at start), so ingest writes
//! one row per signal and nothing else; `signal_days` then holds the
//! revenue feed's kinds, and the cells of raw signals pruned after
//! `scoring.raw_signal_days` (folded in by the pruning before their rows
//! go, and read back into memory at start). Either way a read answers every cell of the
//! accounts it names, folded by [`crate::domain::cells::fold`].

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use bowtie_runtime::error::Error;
use bowtie_runtime::sql::{corrupt, execute, internal, query};
use bowtie_runtime::{AccountId, Instant};
use sea_orm::sea_query::{Alias, Asterisk, Expr, Func, OnConflict, Query, SelectStatement};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, QueryResult};

use super::entity::signal::{Column as S, Entity as Signals};
use super::entity::signal_day::{Column as D, Entity as SignalDays};
use super::signals::NewSignal;
use super::{Scope, pg, stored_account};
use crate::domain::DAY;
use crate::domain::cells::{
    Aggregates, Cell, DayDelta, FEED_KINDS_FROM, Kind, WINDOW_DAYS, Windows, day_of, fold,
};

/// Day cells read from the database, by account.
pub type ReadCells = HashMap<AccountId, Vec<Cell>>;

/// Per account, the cells of its signals of the last [`WINDOW_DAYS`] days,
/// each account's in (day, kind) order.
type Ledger = HashMap<AccountId, Vec<Cell>>;

/// Where the day cells are: in memory (SQLite) or in `signal_days`
/// (PostgreSQL). Cheap to clone; clones share the memory.
#[derive(Clone)]
pub struct DayCells {
    /// `Some` on SQLite: the signals' cells.
    memory: Option<Arc<RwLock<Ledger>>>,
}

impl std::fmt::Debug for DayCells {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DayCells")
            .field("in_memory", &self.memory.is_some())
            .finish_non_exhaustive()
    }
}

fn poisoned() -> Error {
    internal("the day cells' lock was poisoned")
}

impl DayCells {
    /// The day cells of the database behind `conn`; on SQLite, the last
    /// [`WINDOW_DAYS`] days of signals as of `now` are summed into memory.
    pub async fn open(conn: &DatabaseConnection, now: Instant) -> Result<Self, Error> {
        if conn.get_database_backend() == DbBackend::Postgres {
            return Ok(Self { memory: None });
        }
        let (from, to) = (day_of(now) - WINDOW_DAYS, i64::from(i32::MAX));
        // The raw signals, and the cells of those pruned (folded into
        // `signal_days` before their rows went).
        let mut cells = signal_cells(conn, from, to).await?;
        cells.extend(folded_cells(conn, Scope::All, from, to).await?);
        Ok(Self {
            memory: Some(Arc::new(RwLock::new(merged(cells)))),
        })
    }

    /// Inside ingest's transaction: adds the signals just inserted to
    /// `signal_days` when that is where the cells are.
    pub async fn record<C: ConnectionTrait>(
        &self,
        conn: &C,
        signals: &[&NewSignal],
    ) -> Result<(), Error> {
        if self.memory.is_none() {
            add_days(conn, &day_deltas(signals.iter().copied())).await?;
        }
        Ok(())
    }

    /// After ingest's transaction committed: adds the signals it recorded
    /// to memory when that is where the cells are.
    pub fn committed<'a>(
        &self,
        signals: impl IntoIterator<Item = &'a NewSignal>,
    ) -> Result<(), Error> {
        if let Some(memory) = &self.memory {
            let deltas = day_deltas(signals);
            let mut ledger = memory.write().map_err(|_| poisoned())?;
            for d in &deltas {
                add_cell(ledger.entry(d.account_id).or_default(), d);
            }
        }
        Ok(())
    }

    /// The database's part of the cells of the accounts in `scope` that a
    /// fold as of `w` looks at (the memory's part is added by
    /// [`Self::fold`]).
    pub async fn read(
        &self,
        conn: &DatabaseConnection,
        scope: Scope<'_>,
        w: Windows,
    ) -> Result<ReadCells, Error> {
        let today = day_of(w.now);
        let feeds_only = self.memory.is_some();
        let cells = table_cells(conn, scope, today - WINDOW_DAYS, today, feeds_only).await?;
        let mut read = ReadCells::new();
        for (id, cell) in cells {
            read.entry(id).or_default().push(cell);
        }
        Ok(read)
    }

    /// The aggregates of `ids` as of `w`: the cells `read` (by
    /// [`Self::read`]) with those in memory, folded; accounts without a
    /// cell in the window are left out.
    pub fn fold(
        &self,
        read: &ReadCells,
        ids: &[AccountId],
        w: Windows,
    ) -> Result<HashMap<AccountId, Aggregates>, Error> {
        let ledger = match &self.memory {
            Some(memory) => Some(memory.read().map_err(|_| poisoned())?),
            None => None,
        };
        let none = Vec::new();
        Ok(ids
            .iter()
            .filter_map(|id| {
                let mine = ledger.as_ref().and_then(|l| l.get(id)).unwrap_or(&none);
                let theirs = read.get(id).unwrap_or(&none);
                fold(mine.iter().chain(theirs), w).map(|a| (*id, a))
            })
            .collect())
    }

    /// Every account's cells from day `from` to day `to`, however old (the
    /// churn model learns from the past, as far as retention keeps it): from
    /// `signal_days` on PostgreSQL, summed from `signals` (with the feeds'
    /// kinds and the pruned signals' cells from `signal_days`) on SQLite,
    /// whose memory holds only the recent days.
    pub async fn history(
        &self,
        conn: &DatabaseConnection,
        from: i64,
        to: i64,
    ) -> Result<ReadCells, Error> {
        // On SQLite `signal_days` holds the feeds' kinds and the cells of
        // pruned signals; the rest are summed from the raw rows.
        let mut cells = table_cells(conn, Scope::All, from, to, false).await?;
        if self.memory.is_some() {
            cells.extend(signal_cells(conn, from, to).await?);
        }
        Ok(merged(cells))
    }

    /// Drops the cells in memory that fell out of the window as of `now`.
    pub fn trim(&self, now: Instant) -> Result<(), Error> {
        if let Some(memory) = &self.memory {
            let oldest = (day_of(now) - WINDOW_DAYS) as i32;
            let mut ledger = memory.write().map_err(|_| poisoned())?;
            ledger.retain(|_, cells| {
                cells.retain(|c| c.day >= oldest);
                !cells.is_empty()
            });
            ledger.shrink_to_fit();
        }
        Ok(())
    }
}

/// The time of the newest signal the database holds, raw or folded into
/// its day cell (the revenue feed's kinds included); `None` without any.
/// Training takes its reference instant from it (docs/design.md section 3,
/// "The reference instant").
pub async fn newest_signal<C: ConnectionTrait>(conn: &C) -> Result<Option<Instant>, Error> {
    let raw = Query::select()
        .expr_as(Expr::col(S::OccurredAt).max(), Alias::new("newest"))
        .from(Signals)
        .to_owned();
    let folded = Query::select()
        .expr_as(Expr::col(D::LastAt).max(), Alias::new("newest"))
        .from(SignalDays)
        .to_owned();
    let mut newest: Option<i64> = None;
    for stmt in [raw, folded] {
        for row in query(conn, &stmt).await? {
            if let Some(at) = row.try_get::<Option<i64>>("", "newest")? {
                newest = Some(newest.map_or(at, |n| n.max(at)));
            }
        }
    }
    Ok(newest.map(Instant::from_micros))
}

/// Cells by account, each account's in (day, kind) order with the parts of
/// one cell (a raw and a folded part, on SQLite) added into one.
fn merged(cells: Vec<(AccountId, Cell)>) -> Ledger {
    let mut ledger = Ledger::new();
    for (id, cell) in cells {
        let delta = DayDelta {
            account_id: id,
            kind: cell.kind,
            day: i64::from(cell.day),
            total: cell.total,
            events: cell.events,
            last_value: cell.last_value,
            last_at: cell.last_at,
        };
        add_cell(ledger.entry(id).or_default(), &delta);
    }
    ledger
}

/// The `signal_days` increments of `signals`, in key order: neighbouring
/// rows share B-tree pages, and two concurrent batches lock rows in the same
/// order, so they cannot deadlock.
pub(super) fn day_deltas<'a>(signals: impl IntoIterator<Item = &'a NewSignal>) -> Vec<DayDelta> {
    let mut deltas: HashMap<(AccountId, Kind, i64), DayDelta> = HashMap::new();
    for s in signals {
        let day = day_of(s.occurred_at);
        let kind = Kind::Signal(s.kind);
        let d = deltas.entry((s.account_id, kind, day)).or_insert(DayDelta {
            account_id: s.account_id,
            kind,
            day,
            total: 0,
            events: 0,
            last_value: s.value,
            last_at: s.occurred_at,
        });
        d.total += s.value;
        d.events += 1;
        if s.occurred_at >= d.last_at {
            d.last_at = s.occurred_at;
            d.last_value = s.value;
        }
    }
    let mut deltas: Vec<DayDelta> = deltas.into_values().collect();
    deltas.sort_unstable_by_key(|d| (d.account_id, d.day, d.kind));
    deltas
}

/// Adds a delta to an account's cells, kept in (day, kind) order.
fn add_cell(cells: &mut Vec<Cell>, d: &DayDelta) {
    let key = (d.day as i32, d.kind);
    match cells.binary_search_by_key(&key, |c| (c.day, c.kind)) {
        Ok(i) => cells[i].add(d),
        Err(i) => cells.insert(i, Cell::of(d)),
    }
}

/// The columns of a `signal_days` row, in the order a cell is written and
/// read (see [`cell_row`] and the binary `COPY` reader).
const CELL_COLUMNS: [D; 7] = [
    D::AccountId,
    D::Kind,
    D::Day,
    D::Total,
    D::Events,
    D::LastValue,
    D::LastAt,
];

/// Adds the deltas to `signal_days` (one row per key per statement): the
/// sums and counts add up, the later value wins.
pub async fn add_days<C: ConnectionTrait>(conn: &C, deltas: &[DayDelta]) -> Result<(), Error> {
    let stored = |c: D| Expr::col((SignalDays, c));
    let excluded = |c: D| Expr::col((Alias::new("excluded"), c));
    let later = || excluded(D::LastAt).gte(stored(D::LastAt));
    for chunk in deltas.chunks(1000) {
        let mut insert = Query::insert();
        insert
            .into_table(SignalDays)
            .columns(CELL_COLUMNS)
            .on_conflict(
                OnConflict::columns([D::AccountId, D::Day, D::Kind])
                    .value(D::Total, stored(D::Total).add(excluded(D::Total)))
                    .value(D::Events, stored(D::Events).add(excluded(D::Events)))
                    .value(
                        D::LastValue,
                        Expr::case(later(), excluded(D::LastValue)).finally(stored(D::LastValue)),
                    )
                    .value(
                        D::LastAt,
                        Expr::case(later(), excluded(D::LastAt)).finally(stored(D::LastAt)),
                    )
                    .to_owned(),
            );
        for d in chunk {
            insert
                .values([
                    d.account_id.to_string().into(),
                    d.kind.stored().into(),
                    d.day.into(),
                    d.total.into(),
                    d.events.into(),
                    d.last_value.into(),
                    d.last_at.micros().into(),
                ])
                .map_err(internal)?;
        }
        execute(conn, &insert).await?;
    }
    Ok(())
}

/// A cell read column by column: account, kind, day, total, events, last
/// value, last time.
fn cell_row(r: &QueryResult) -> Result<(AccountId, Cell), Error> {
    Ok((
        stored_account(&r.try_get_by_index::<String>(0)?)?,
        Cell {
            kind: stored_kind(r.try_get_by_index(1)?)?,
            day: i32::try_from(r.try_get_by_index::<i64>(2)?).map_err(internal)?,
            total: r.try_get_by_index(3)?,
            events: r.try_get_by_index(4)?,
            last_value: r.try_get_by_index(5)?,
            last_at: Instant::from_micros(r.try_get_by_index(6)?),
        },
    ))
}

/// The kind a cell is stored under, or an internal error for a number
/// Bowtie never writes.
pub(super) fn stored_kind(number: i32) -> Result<Kind, Error> {
    Kind::from_stored(number).ok_or_else(|| corrupt(format_args!("cell kind {number}")))
}

/// The `signal_days` rows of the accounts in `scope` from day `from` to
/// day `to` (only the feeds' kinds when `feeds_only`); on PostgreSQL
/// through the binary `COPY`.
async fn table_cells(
    conn: &DatabaseConnection,
    scope: Scope<'_>,
    from: i64,
    to: i64,
    feeds_only: bool,
) -> Result<Vec<(AccountId, Cell)>, Error> {
    let mut select: SelectStatement = Query::select()
        .columns(CELL_COLUMNS)
        .from(SignalDays)
        .and_where(Expr::col(D::Day).gte(from))
        .and_where(Expr::col(D::Day).lte(to))
        .to_owned();
    if feeds_only {
        select.and_where(Expr::col(D::Kind).gte(FEED_KINDS_FROM));
    }
    if !scope.restrict(&mut select, D::AccountId) {
        return Ok(Vec::new());
    }
    if conn.get_database_backend() == DbBackend::Postgres {
        return pg::copy_cells(conn, &select).await;
    }
    query(conn, &select).await?.iter().map(cell_row).collect()
}

/// SQLite: the signal cells `signal_days` holds, those of pruned signals.
async fn folded_cells(
    conn: &DatabaseConnection,
    scope: Scope<'_>,
    from: i64,
    to: i64,
) -> Result<Vec<(AccountId, Cell)>, Error> {
    let mut select: SelectStatement = Query::select()
        .columns(CELL_COLUMNS)
        .from(SignalDays)
        .and_where(Expr::col(D::Day).gte(from))
        .and_where(Expr::col(D::Day).lte(to))
        .and_where(Expr::col(D::Kind).lt(FEED_KINDS_FROM))
        .to_owned();
    if !scope.restrict(&mut select, D::AccountId) {
        return Ok(Vec::new());
    }
    query(conn, &select).await?.iter().map(cell_row).collect()
}

/// The signals of every account from day `from` to day `to`, summed per
/// account, kind and day into cells (SQLite, which keeps no `signal_days`
/// rows of signals). SQLite answers the bare `value` from the row holding
/// `MAX(occurred_at)`: the day's latest value.
async fn signal_cells<C: ConnectionTrait>(
    conn: &C,
    from: i64,
    to: i64,
) -> Result<Vec<(AccountId, Cell)>, Error> {
    let day = Alias::new("d");
    let bigint = || Alias::new("BIGINT");
    let select = Query::select()
        .column(S::AccountId)
        .column(S::Kind)
        .expr_as(Expr::col(S::OccurredAt).div(DAY), day.clone())
        .expr(Func::cast_as(Expr::col(S::Value).sum(), bigint()))
        .expr(Func::cast_as(Expr::col(Asterisk).count(), bigint()))
        .column(S::Value)
        .expr(Expr::col(S::OccurredAt).max())
        .from(Signals)
        .and_where(Expr::col(S::OccurredAt).gte(from.saturating_mul(DAY)))
        .and_where(Expr::col(S::OccurredAt).lt(to.saturating_add(1).saturating_mul(DAY)))
        .group_by_col(S::AccountId)
        .group_by_col(S::Kind)
        .group_by_col(day)
        .to_owned();
    query(conn, &select).await?.iter().map(cell_row).collect()
}

#[cfg(test)]
mod tests {
    use bowtie_proto::scoring::SignalType;
    use uuid::Uuid;

    use super::*;

    fn cell(day: i32, kind: Kind, total: i64, events: i64, last: (i64, i64)) -> Cell {
        Cell {
            day,
            kind,
            total,
            events,
            last_value: last.0,
            last_at: Instant::from_micros(last.1),
        }
    }

    #[test]
    fn the_raw_and_the_folded_part_of_a_cell_add_up_into_one() {
        let acme = AccountId(Uuid::from_u128(7));
        let login = Kind::Signal(SignalType::Login);
        let seats = Kind::Signal(SignalType::ActiveUsers);
        let ledger = merged(vec![
            // Day 100's logins: 4 pruned into signal_days, 2 still raw.
            (acme, cell(100, login, 4, 4, (1, 10))),
            (acme, cell(101, seats, 30, 1, (30, 20))),
            (acme, cell(100, login, 2, 2, (1, 30))),
            // The later active-users count of day 101 wins.
            (acme, cell(101, seats, 25, 1, (25, 15))),
        ]);
        assert_eq!(
            ledger.get(&acme),
            Some(&vec![
                cell(100, login, 6, 6, (1, 30)),
                cell(101, seats, 55, 2, (30, 20)),
            ])
        );
    }
}
