//! The journey index: every account's stage entries in a compact in-memory
//! form, so funnel and cohort reports over any period and filter are one
//! pass over memory (about 40 bytes per stage entry) instead of a scan of
//! the `stage_entries` table.
//!
//! Consistency: the index follows the service's own change feed (the outbox
//! in the shared database), so every replica sees every replica's writes. A
//! report first reads the feed's last sequence and waits until the index has
//! applied it, so it reflects everything committed before the report began,
//! including the caller's own writes.
//!
//! Start-up: the index notes the last sequence, loads all stage entries in
//! pages, then follows the feed from the noted sequence; reports wait until
//! the load is done.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bowtie_proto::common::Stage;
use bowtie_runtime::error::Error;
use bowtie_runtime::feed;
use bowtie_runtime::shutdown::Shutdown;
use bowtie_runtime::sql::{query, stored_uuid};
use bowtie_runtime::store::Store;
use bowtie_runtime::{AccountId, Instant};
use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{Cond, Expr, Order, Query};
use tokio::sync::watch;
use uuid::Uuid;

use crate::domain::{self, CohortMember, Filters, FunnelReport, ReportRow, Selection};
use crate::storage::{ENTRY_COLUMNS, StageEntries as E};

/// "No time" in a compact entry.
const NONE: i64 = i64::MIN;
/// Rows per page when loading.
const LOAD_PAGE: u64 = 20_000;
/// Events per batch when following the feed.
const FOLLOW_BATCH: u64 = 2_000;
/// How often an idle follower looks for other replicas' writes.
const POLL: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy)]
struct Compact {
    stage: i8,
    exit_stage: i8,
    attempt: i32,
    reason: u32,
    entered_at: i64,
    next_at: i64,
    commit_at: i64,
    attempt_started_at: i64,
}

fn opt(v: i64) -> Option<Instant> {
    (v != NONE).then_some(Instant::from_micros(v))
}

#[derive(Debug, Default)]
struct Account {
    segment: i32,
    owner: u32,
    entries: Vec<Compact>,
}

#[derive(Debug, Default)]
struct Inner {
    accounts: HashMap<AccountId, Account>,
    strings: Vec<String>,
    string_ids: HashMap<String, u32>,
}

impl Inner {
    fn intern(&mut self, s: &str) -> u32 {
        if let Some(id) = self.string_ids.get(s) {
            return *id;
        }
        let id = self.strings.len() as u32;
        self.strings.push(s.to_owned());
        self.string_ids.insert(s.to_owned(), id);
        id
    }

    fn matches(&self, account: &Account, filters: &Filters) -> bool {
        filters.segment.is_none_or(|s| account.segment == s as i32)
            && filters.owner.as_deref().is_none_or(|o| {
                self.strings
                    .get(account.owner as usize)
                    .is_some_and(|x| x == o)
            })
    }
}

/// The in-memory journey index.
#[derive(Debug)]
pub struct JourneyIndex {
    inner: RwLock<Inner>,
    /// The feed sequence applied so far; `None` until the initial load is done.
    applied: watch::Sender<Option<i64>>,
}

/// One stage entry row as loaded from the database.
struct Loaded {
    account_id: AccountId,
    segment: i32,
    owner: String,
    reason: String,
    entry: Compact,
}

fn loaded(row: &sea_orm::QueryResult) -> Result<Loaded, Error> {
    let account_id = AccountId(stored_uuid(&row.try_get::<String>("", "account_id")?)?);
    let stage: i32 = row.try_get("", "stage")?;
    let exit: Option<i32> = row.try_get("", "exit_stage")?;
    Ok(Loaded {
        account_id,
        segment: row.try_get("", "segment")?,
        owner: row.try_get("", "owner")?,
        reason: row.try_get("", "exit_reason")?,
        entry: Compact {
            stage: stage as i8,
            exit_stage: exit.unwrap_or(0) as i8,
            attempt: row.try_get("", "attempt")?,
            reason: 0,
            entered_at: row.try_get("", "entered_at")?,
            next_at: row.try_get::<Option<i64>>("", "next_at")?.unwrap_or(NONE),
            commit_at: row.try_get::<Option<i64>>("", "commit_at")?.unwrap_or(NONE),
            attempt_started_at: row.try_get("", "attempt_started_at")?,
        },
    })
}

fn select() -> sea_orm::sea_query::SelectStatement {
    Query::select()
        .columns(ENTRY_COLUMNS)
        .from(E::Table)
        .order_by(E::AccountId, Order::Asc)
        .order_by(E::Position, Order::Asc)
        .to_owned()
}

impl JourneyIndex {
    /// An empty index, not ready yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            inner: RwLock::new(Inner::default()),
            applied: watch::channel(None).0,
        })
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds loaded rows (in account, position order) to the index.
    fn absorb(&self, rows: Vec<Loaded>) {
        let mut inner = self.write();
        for row in rows {
            let owner = inner.intern(&row.owner);
            let reason = inner.intern(&row.reason);
            let account = inner.accounts.entry(row.account_id).or_default();
            account.segment = row.segment;
            account.owner = owner;
            account.entries.push(Compact {
                reason,
                ..row.entry
            });
        }
    }

    /// Loads every stage entry, page by page.
    async fn load_all<C: ConnectionTrait>(&self, conn: &C) -> Result<(), Error> {
        let mut after: Option<(String, i32)> = None;
        loop {
            let mut stmt = select().limit(LOAD_PAGE).to_owned();
            if let Some((id, position)) = &after {
                stmt.cond_where(
                    Cond::any().add(Expr::col(E::AccountId).gt(id.clone())).add(
                        Cond::all()
                            .add(Expr::col(E::AccountId).eq(id.clone()))
                            .add(Expr::col(E::Position).gt(*position)),
                    ),
                );
            }
            let rows = query(conn, &stmt).await?;
            let full = rows.len() as u64 == LOAD_PAGE;
            if let Some(last) = rows.last() {
                after = Some((
                    last.try_get("", "account_id")?,
                    last.try_get("", "position")?,
                ));
            }
            let rows = rows.iter().map(loaded).collect::<Result<Vec<_>, _>>()?;
            self.absorb(rows);
            if !full {
                return Ok(());
            }
        }
    }

    /// Re-reads the entries of `ids` (after they changed).
    async fn reload<C: ConnectionTrait>(&self, conn: &C, ids: &[AccountId]) -> Result<(), Error> {
        for chunk in ids.chunks(500) {
            let stmt = select()
                .and_where(Expr::col(E::AccountId).is_in(chunk.iter().map(|id| id.to_string())))
                .to_owned();
            let rows = query(conn, &stmt)
                .await?
                .iter()
                .map(loaded)
                .collect::<Result<Vec<_>, _>>()?;
            {
                let mut inner = self.write();
                for id in chunk {
                    inner.accounts.remove(id);
                }
            }
            self.absorb(rows);
        }
        Ok(())
    }

    /// Loads the index and follows the feed until `shutdown`.
    pub fn spawn(self: &Arc<Self>, store: Store, shutdown: Shutdown) {
        let index = Arc::clone(self);
        tokio::spawn(async move {
            tokio::select! {
                () = index.run(&store) => {}
                () = shutdown.wait() => {}
            }
        });
    }

    async fn run(&self, store: &Store) {
        let mut commits = store.feed().commits();
        let mut cursor = loop {
            match self.start(store).await {
                Ok(cursor) => break cursor,
                Err(e) => {
                    tracing::warn!(error = %e, "journey index cannot load yet; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        loop {
            match self.follow(store, cursor).await {
                Ok((next, more)) => {
                    cursor = next;
                    if more {
                        continue;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "journey index cannot follow the feed; retrying")
                }
            }
            tokio::select! {
                _ = commits.changed() => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }

    async fn start(&self, store: &Store) -> Result<i64, Error> {
        let reader = store.db().reader();
        let cursor = feed::last_sequence(reader).await?;
        *self.write() = Inner::default();
        self.load_all(reader).await?;
        let accounts = self.read().accounts.len();
        tracing::info!(accounts, cursor, "journey index loaded");
        self.applied.send_replace(Some(cursor));
        Ok(cursor)
    }

    /// Applies one batch of feed events; returns the new cursor and whether
    /// more may be waiting.
    async fn follow(&self, store: &Store, cursor: i64) -> Result<(i64, bool), Error> {
        let reader = store.db().reader();
        let events = feed::read_after(reader, cursor, FOLLOW_BATCH).await?;
        let Some(last) = events.last().map(|e| e.sequence) else {
            return Ok((cursor, false));
        };
        let mut ids: Vec<AccountId> = events
            .iter()
            .filter(|e| e.aggregate_type == "account")
            .filter_map(|e| Uuid::parse_str(&e.aggregate_id).ok().map(AccountId))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        self.reload(reader, &ids).await?;
        self.applied.send_replace(Some(last));
        Ok((last, events.len() as u64 == FOLLOW_BATCH))
    }

    /// Waits until the index holds everything committed so far.
    pub async fn catch_up(&self, store: &Store) -> Result<(), Error> {
        let target = feed::last_sequence(store.db().reader()).await?;
        let mut applied = self.applied.subscribe();
        applied
            .wait_for(|a| a.is_some_and(|a| a >= target))
            .await
            .map_err(|_| Error::Unavailable("the journey index stopped".into()))?;
        Ok(())
    }

    /// The funnel report over the entries `selection` picks in `period`.
    pub fn funnel_report(
        &self,
        selection: Selection,
        (start, end): (Instant, Instant),
        filters: &Filters,
    ) -> FunnelReport {
        let (start, end) = (start.micros(), end.micros());
        let inner = self.read();
        let rows = inner
            .accounts
            .values()
            .filter(|a| inner.matches(a, filters))
            .flat_map(|a| a.entries.iter())
            .filter(|e| {
                let t = match selection {
                    Selection::EnteredIn => e.entered_at,
                    Selection::AttemptStartedIn => e.attempt_started_at,
                };
                t >= start && t < end && e.stage <= Stage::Growth as i8
            })
            .map(|e| ReportRow {
                stage: Stage::try_from(i32::from(e.stage)).unwrap_or(Stage::Unspecified),
                entered_at: Instant::from_micros(e.entered_at),
                next_at: opt(e.next_at),
                commit_at: opt(e.commit_at),
                exit_stage: (e.exit_stage != 0)
                    .then(|| Stage::try_from(i32::from(e.exit_stage)).ok())
                    .flatten(),
                exit_reason: inner
                    .strings
                    .get(e.reason as usize)
                    .map_or("", String::as_str),
            });
        domain::funnel_report(rows)
    }

    /// Attempts entering `cohort_stage` in the period, with the first time
    /// each later stage of the same attempt was reached.
    pub fn cohort_members(
        &self,
        cohort_stage: Stage,
        (start, end): (Instant, Instant),
        filters: &Filters,
    ) -> Vec<CohortMember> {
        let (start, end) = (start.micros(), end.micros());
        let inner = self.read();
        let mut members = Vec::new();
        for account in inner
            .accounts
            .values()
            .filter(|a| inner.matches(a, filters))
        {
            for (i, e) in account.entries.iter().enumerate() {
                if e.stage != cohort_stage as i8 || e.entered_at < start || e.entered_at >= end {
                    continue;
                }
                let mut reached: Vec<(Stage, Instant)> = Vec::new();
                for later in account.entries[i + 1..]
                    .iter()
                    .take_while(|l| l.attempt == e.attempt)
                {
                    let Ok(stage) = Stage::try_from(i32::from(later.stage)) else {
                        continue;
                    };
                    if stage != cohort_stage && !reached.iter().any(|(s, _)| *s == stage) {
                        reached.push((stage, Instant::from_micros(later.entered_at)));
                    }
                }
                members.push(CohortMember {
                    entered_at: Instant::from_micros(e.entered_at),
                    reached,
                });
            }
        }
        members
    }

    /// Number of accounts held (for logs and tests).
    pub fn accounts(&self) -> usize {
        self.read().accounts.len()
    }
}
