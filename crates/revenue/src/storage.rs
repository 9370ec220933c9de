//! The revenue service's own tables and the queries on them.
//!
//! - `subscriptions`: one row per subscription, its full history of terms as
//!   JSON (the domain recomputes an account's movements from it).
//! - `movements`: the derived MRR movements, one per account and instant.
//! - `mrr_rollup`: signed sum and count of movements per month x segment x
//!   type, maintained by deltas, so a waterfall reads O(months) rows.
//! - `paying_spans`: the intervals in which each account paid, with its MRR,
//!   segment and owner, so retention between two instants is two indexed
//!   point-in-interval lookups per account instead of a scan of history.
//! - `fx_rates` and `invoices`.
//!
//! The SQL is plain and portable; `?` placeholders become `$n` on PostgreSQL.

use std::collections::{BTreeMap, HashMap, HashSet};

use sea_orm::{ConnectionTrait, DbBackend, QueryResult, Statement, Value};
use sea_orm_migration::prelude::{
    DbErr, MigrationName, MigrationTrait, MigratorTrait, SchemaManager,
};
use uuid::Uuid;

use bowtie_runtime::error::Error;

use crate::domain::*;

/// Open spans end here (a time no instant reaches).
pub const OPEN_END: i64 = i64::MAX;
/// Rows per multi-row insert (well under SQLite's variable limit).
const CHUNK: usize = 1000;

const CREATE_TABLES: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS subscriptions (
        id VARCHAR(36) NOT NULL PRIMARY KEY,
        account_id VARCHAR(36) NOT NULL,
        renewal_at BIGINT NULL,
        data TEXT NOT NULL,
        version BIGINT NOT NULL,
        updated_at BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS subscriptions_account ON subscriptions (account_id)",
    "CREATE INDEX IF NOT EXISTS subscriptions_renewal ON subscriptions (renewal_at)",
    "CREATE TABLE IF NOT EXISTS movements (
        account_id VARCHAR(36) NOT NULL,
        occurred_at BIGINT NOT NULL,
        kind INTEGER NOT NULL,
        amount BIGINT NOT NULL,
        mrr_before BIGINT NOT NULL,
        mrr_after BIGINT NOT NULL,
        segment INTEGER NOT NULL,
        PRIMARY KEY (account_id, occurred_at))",
    "CREATE INDEX IF NOT EXISTS movements_time ON movements (occurred_at, account_id)",
    "CREATE TABLE IF NOT EXISTS mrr_rollup (
        month INTEGER NOT NULL,
        segment INTEGER NOT NULL,
        kind INTEGER NOT NULL,
        amount BIGINT NOT NULL,
        movements BIGINT NOT NULL,
        PRIMARY KEY (month, segment, kind))",
    "CREATE TABLE IF NOT EXISTS paying_spans (
        account_id VARCHAR(36) NOT NULL,
        valid_from BIGINT NOT NULL,
        valid_to BIGINT NOT NULL,
        mrr BIGINT NOT NULL,
        segment INTEGER NOT NULL,
        owner VARCHAR(200) NOT NULL,
        PRIMARY KEY (account_id, valid_from))",
    "CREATE INDEX IF NOT EXISTS paying_spans_from ON paying_spans (valid_from)",
    "CREATE TABLE IF NOT EXISTS fx_rates (
        currency VARCHAR(3) NOT NULL,
        effective_at BIGINT NOT NULL,
        rate_nanos BIGINT NOT NULL,
        PRIMARY KEY (currency, effective_at))",
    "CREATE TABLE IF NOT EXISTS invoices (
        id VARCHAR(36) NOT NULL PRIMARY KEY,
        account_id VARCHAR(36) NOT NULL,
        subscription_id VARCHAR(36) NOT NULL,
        currency VARCHAR(3) NOT NULL,
        amount BIGINT NOT NULL,
        due_at BIGINT NOT NULL,
        paid_at BIGINT NULL,
        created_at BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS invoices_account ON invoices (account_id)",
    "CREATE TABLE IF NOT EXISTS renewal_outcomes (
        subscription_id VARCHAR(36) NOT NULL,
        renewal_at BIGINT NOT NULL,
        outcome INTEGER NOT NULL,
        decided_at BIGINT NOT NULL,
        PRIMARY KEY (subscription_id, renewal_at))",
    "CREATE TABLE IF NOT EXISTS monthly_spend (
        month INTEGER NOT NULL PRIMARY KEY,
        spend BIGINT NOT NULL,
        gross_margin_bp INTEGER NOT NULL)",
];

struct CreateRevenueTables;

impl MigrationName for CreateRevenueTables {
    fn name(&self) -> &str {
        "m0300_revenue_tables"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateRevenueTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let sqlite = manager.get_database_backend() == DbBackend::Sqlite;
        for sql in CREATE_TABLES {
            // On SQLite the span and movement tables are clustered by their
            // primary key (account first), so per-account reads are one range.
            let clustered = sqlite && sql.contains("PRIMARY KEY (account_id");
            let sql = if clustered {
                format!("{sql} WITHOUT ROWID")
            } else {
                (*sql).to_owned()
            };
            manager.get_connection().execute_unprepared(&sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            "monthly_spend",
            "renewal_outcomes",
            "invoices",
            "fx_rates",
            "paying_spans",
            "mrr_rollup",
            "movements",
            "subscriptions",
        ] {
            manager
                .get_connection()
                .execute_unprepared(&format!("DROP TABLE IF EXISTS {table}"))
                .await?;
        }
        Ok(())
    }
}

/// The revenue service's migrations: the runtime's tables, then its own.
#[derive(Debug)]
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        let mut migrations = bowtie_runtime::schema::runtime_migrations();
        migrations.push(Box::new(CreateRevenueTables));
        migrations
    }
}

fn corrupt(what: &str) -> Error {
    Error::Internal(anyhow::anyhow!("corrupt row: {what}"))
}

/// A statement with `?` placeholders, numbered for PostgreSQL.
fn stmt(backend: DbBackend, sql: &str, values: Vec<Value>) -> Statement {
    let sql = if backend == DbBackend::Postgres {
        let mut out = String::with_capacity(sql.len() + 16);
        let mut n = 0;
        for c in sql.chars() {
            if c == '?' {
                n += 1;
                out.push_str(&format!("${n}"));
            } else {
                out.push(c);
            }
        }
        out
    } else {
        sql.to_owned()
    };
    Statement::from_sql_and_values(backend, sql, values)
}

async fn exec<C: ConnectionTrait>(conn: &C, sql: &str, values: Vec<Value>) -> Result<(), Error> {
    conn.execute(stmt(conn.get_database_backend(), sql, values))
        .await?;
    Ok(())
}

async fn query<C: ConnectionTrait>(
    conn: &C,
    sql: &str,
    values: Vec<Value>,
) -> Result<Vec<QueryResult>, Error> {
    Ok(conn
        .query_all(stmt(conn.get_database_backend(), sql, values))
        .await?)
}

/// Inserts rows of `width` values each, in chunks.
async fn insert_rows<C: ConnectionTrait>(
    conn: &C,
    head: &str,
    tail: &str,
    width: usize,
    rows: Vec<Vec<Value>>,
) -> Result<(), Error> {
    let tuple = format!("({})", vec!["?"; width].join(", "));
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<Vec<Value>> = rows.by_ref().take(CHUNK).collect();
        let sql = format!(
            "{head} VALUES {} {tail}",
            vec![tuple.as_str(); chunk.len()].join(", ")
        );
        exec(conn, &sql, chunk.into_iter().flatten().collect()).await?;
    }
    Ok(())
}

/// `?, ?, ...` for `n` values.
fn marks(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// On PostgreSQL, serialises writes to one account for the rest of the
/// transaction, so two concurrent writes never derive movements from the same
/// stale history. SQLite has a single writer already.
pub async fn lock_account<C: ConnectionTrait>(conn: &C, account: Uuid) -> Result<(), Error> {
    bowtie_runtime::store::lock(conn, &format!("revenue.account.{account}")).await
}

fn subscription_from_json(data: &str) -> Result<Subscription, Error> {
    serde_json::from_str(data).map_err(|_| corrupt("subscription"))
}

/// The subscription `id`, or NOT_FOUND.
pub async fn require_subscription<C: ConnectionTrait>(
    conn: &C,
    id: Uuid,
) -> Result<Subscription, Error> {
    let rows = query(
        conn,
        "SELECT data FROM subscriptions WHERE id = ?",
        vec![id.to_string().into()],
    )
    .await?;
    let row = rows
        .first()
        .ok_or_else(|| Error::not_found("subscription", id.to_string()))?;
    subscription_from_json(&row.try_get::<String>("", "data")?)
}

/// Every subscription of the given accounts, grouped by account.
pub async fn subscriptions_of<C: ConnectionTrait>(
    conn: &C,
    accounts: &[Uuid],
) -> Result<HashMap<Uuid, Vec<Subscription>>, Error> {
    let mut out: HashMap<Uuid, Vec<Subscription>> = HashMap::new();
    for chunk in accounts.chunks(CHUNK) {
        let sql = format!(
            "SELECT data FROM subscriptions WHERE account_id IN ({}) ORDER BY id",
            marks(chunk.len())
        );
        let ids = chunk.iter().map(|a| a.to_string().into()).collect();
        for row in query(conn, &sql, ids).await? {
            let s = subscription_from_json(&row.try_get::<String>("", "data")?)?;
            out.entry(s.account_id).or_default().push(s);
        }
    }
    Ok(out)
}

/// Inserts or replaces subscriptions.
pub async fn save_subscriptions<C: ConnectionTrait>(
    conn: &C,
    subscriptions: &[&Subscription],
    now: i64,
) -> Result<(), Error> {
    let mut rows = Vec::with_capacity(subscriptions.len());
    for s in subscriptions {
        let data = serde_json::to_string(s).map_err(|e| Error::Internal(e.into()))?;
        rows.push(vec![
            s.id.to_string().into(),
            s.account_id.to_string().into(),
            s.term_end.into(),
            data.into(),
            s.version.into(),
            now.into(),
        ]);
    }
    insert_rows(
        conn,
        "INSERT INTO subscriptions (id, account_id, renewal_at, data, version, updated_at)",
        "ON CONFLICT (id) DO UPDATE SET renewal_at = excluded.renewal_at, data = excluded.data, \
         version = excluded.version, updated_at = excluded.updated_at",
        6,
        rows,
    )
    .await
}

/// The FX table.
pub async fn fx_table<C: ConnectionTrait>(conn: &C, reporting: &str) -> Result<FxTable, Error> {
    let mut table = FxTable::new(reporting);
    for row in query(
        conn,
        "SELECT currency, effective_at, rate_nanos FROM fx_rates",
        vec![],
    )
    .await?
    {
        table.insert(
            &row.try_get::<String>("", "currency")?,
            row.try_get("", "effective_at")?,
            Rate(row.try_get("", "rate_nanos")?),
        );
    }
    Ok(table)
}

/// Every account with a subscription in `currency`, with its full history
/// and where it reports (taken from its paying spans; an account that never
/// paid has no movements for a rate to change).
pub async fn histories_in_currency<C: ConnectionTrait>(
    conn: &C,
    currency: &str,
) -> Result<Vec<AccountHistory>, Error> {
    // The JSON match only narrows the scan; the decoded currency decides.
    let mut ids = std::collections::BTreeSet::new();
    for row in query(
        conn,
        "SELECT data FROM subscriptions WHERE data LIKE ?",
        vec![format!("%{currency}%").into()],
    )
    .await?
    {
        let s = subscription_from_json(&row.try_get::<String>("", "data")?)?;
        if s.currency == currency {
            ids.insert(s.account_id);
        }
    }
    let ids: Vec<Uuid> = ids.into_iter().collect();
    let mut subscriptions = subscriptions_of(conn, &ids).await?;
    let mut out = Vec::new();
    for chunk in ids.chunks(CHUNK) {
        let sql = format!(
            "SELECT account_id, MIN(segment) AS segment, MIN(owner) AS owner FROM paying_spans \
             WHERE account_id IN ({}) GROUP BY account_id",
            marks(chunk.len())
        );
        for row in query(
            conn,
            &sql,
            chunk.iter().map(|a| a.to_string().into()).collect(),
        )
        .await?
        {
            let account: String = row.try_get("", "account_id")?;
            let account_id = Uuid::parse_str(&account).map_err(|_| corrupt("account_id"))?;
            out.push(AccountHistory {
                account_id,
                segment: row.try_get("", "segment")?,
                owner: row.try_get("", "owner")?,
                subscriptions: subscriptions.remove(&account_id).unwrap_or_default(),
            });
        }
    }
    // Locks are taken in account order, so concurrent re-valuations cannot deadlock.
    out.sort_by_key(|h| h.account_id);
    Ok(out)
}

/// Sets a rate.
pub async fn save_rate<C: ConnectionTrait>(
    conn: &C,
    currency: &str,
    from: i64,
    rate: Rate,
) -> Result<(), Error> {
    exec(
        conn,
        "INSERT INTO fx_rates (currency, effective_at, rate_nanos) VALUES (?, ?, ?) \
         ON CONFLICT (currency, effective_at) DO UPDATE SET rate_nanos = excluded.rate_nanos",
        vec![currency.into(), from.into(), rate.0.into()],
    )
    .await
}

/// An account with its full subscription history and where it reports.
#[derive(Debug, Clone)]
pub struct AccountHistory {
    /// The account.
    pub account_id: Uuid,
    /// Segment code (bowtie.common.v1.Segment).
    pub segment: i32,
    /// The owner who closed the deal.
    pub owner: String,
    /// Every subscription of the account.
    pub subscriptions: Vec<Subscription>,
}

/// How an account's movements changed when it was recomputed.
#[derive(Debug, Clone, Default)]
pub struct Revision {
    /// Movements that did not exist before.
    pub recorded: Vec<Movement>,
    /// Movements that no longer exist.
    pub retracted: Vec<Movement>,
}

fn movement_from_row(row: &QueryResult) -> Result<(Movement, i32), Error> {
    let kind: i32 = row.try_get("", "kind")?;
    Ok((
        Movement {
            at: row.try_get("", "occurred_at")?,
            kind: MovementKind::from_code(kind).ok_or_else(|| corrupt("movement kind"))?,
            amount: row.try_get("", "amount")?,
            before: row.try_get("", "mrr_before")?,
            after: row.try_get("", "mrr_after")?,
        },
        row.try_get("", "segment")?,
    ))
}

/// Recomputes the movements of each account from its history, replaces the
/// stored movements and paying spans, and applies the differences to the
/// monthly roll-ups. Returns each account's revision, in input order.
pub async fn recompute<C: ConnectionTrait>(
    conn: &C,
    accounts: &[AccountHistory],
    fx: &FxTable,
) -> Result<Vec<Revision>, Error> {
    let ids: Vec<Uuid> = accounts.iter().map(|a| a.account_id).collect();
    let mut stored: HashMap<Uuid, Vec<(Movement, i32)>> = HashMap::new();
    for chunk in ids.chunks(CHUNK) {
        let sql = format!(
            "SELECT account_id, occurred_at, kind, amount, mrr_before, mrr_after, segment \
             FROM movements WHERE account_id IN ({}) ORDER BY occurred_at",
            marks(chunk.len())
        );
        for row in query(
            conn,
            &sql,
            chunk.iter().map(|a| a.to_string().into()).collect(),
        )
        .await?
        {
            let account: String = row.try_get("", "account_id")?;
            let account = Uuid::parse_str(&account).map_err(|_| corrupt("account_id"))?;
            stored
                .entry(account)
                .or_default()
                .push(movement_from_row(&row)?);
        }
        let sql = format!(
            "DELETE FROM movements WHERE account_id IN ({})",
            marks(chunk.len())
        );
        exec(
            conn,
            &sql,
            chunk.iter().map(|a| a.to_string().into()).collect(),
        )
        .await?;
        let sql = format!(
            "DELETE FROM paying_spans WHERE account_id IN ({})",
            marks(chunk.len())
        );
        exec(
            conn,
            &sql,
            chunk.iter().map(|a| a.to_string().into()).collect(),
        )
        .await?;
    }
    let mut deltas: BTreeMap<RollupKey, Tally> = BTreeMap::new();
    let mut movement_rows = Vec::new();
    let mut span_rows = Vec::new();
    let mut revisions = Vec::with_capacity(accounts.len());
    for account in accounts {
        let new = movements(&account.subscriptions, fx)?;
        let old = stored.remove(&account.account_id).unwrap_or_default();
        for (m, segment) in &old {
            add_to_rollup(&mut deltas, *segment, std::slice::from_ref(m), -1);
        }
        add_to_rollup(&mut deltas, account.segment, &new, 1);
        let old_set: HashSet<Movement> = old.iter().map(|(m, _)| *m).collect();
        let new_set: HashSet<Movement> = new.iter().copied().collect();
        revisions.push(Revision {
            recorded: new
                .iter()
                .filter(|m| !old_set.contains(m))
                .copied()
                .collect(),
            retracted: old
                .iter()
                .map(|(m, _)| *m)
                .filter(|m| !new_set.contains(m))
                .collect(),
        });
        let id = account.account_id.to_string();
        for m in &new {
            movement_rows.push(vec![
                id.clone().into(),
                m.at.into(),
                m.kind.code().into(),
                m.amount.into(),
                m.before.into(),
                m.after.into(),
                account.segment.into(),
            ]);
        }
        for s in paying_spans(&new) {
            span_rows.push(vec![
                id.clone().into(),
                s.from.into(),
                s.to.unwrap_or(OPEN_END).into(),
                s.mrr.into(),
                account.segment.into(),
                account.owner.clone().into(),
            ]);
        }
    }
    insert_rows(
        conn,
        "INSERT INTO movements (account_id, occurred_at, kind, amount, mrr_before, mrr_after, segment)",
        "",
        7,
        movement_rows,
    )
    .await?;
    insert_rows(
        conn,
        "INSERT INTO paying_spans (account_id, valid_from, valid_to, mrr, segment, owner)",
        "",
        6,
        span_rows,
    )
    .await?;
    let rollup_rows: Vec<Vec<Value>> = deltas
        .into_iter()
        .filter(|(_, t)| *t != Tally::default())
        .map(|((month, segment, kind), t)| {
            vec![
                month.into(),
                segment.into(),
                kind.code().into(),
                t.amount.into(),
                t.count.into(),
            ]
        })
        .collect();
    insert_rows(
        conn,
        "INSERT INTO mrr_rollup (month, segment, kind, amount, movements)",
        "ON CONFLICT (month, segment, kind) DO UPDATE SET \
         amount = mrr_rollup.amount + excluded.amount, \
         movements = mrr_rollup.movements + excluded.movements",
        5,
        rollup_rows,
    )
    .await?;
    Ok(revisions)
}

/// Roll-up sums per (month, kind) up to `last`, optionally of one segment.
pub async fn rollups<C: ConnectionTrait>(
    conn: &C,
    last: Month,
    segment: Option<i32>,
) -> Result<Vec<(Month, MovementKind, Tally)>, Error> {
    let mut sql = String::from(
        "SELECT month, kind, CAST(SUM(amount) AS BIGINT) AS amount, \
         CAST(SUM(movements) AS BIGINT) AS movements FROM mrr_rollup WHERE month <= ?",
    );
    let mut values: Vec<Value> = vec![last.into()];
    if let Some(segment) = segment {
        sql.push_str(" AND segment = ?");
        values.push(segment.into());
    }
    sql.push_str(" GROUP BY month, kind");
    query(conn, &sql, values)
        .await?
        .iter()
        .map(|row| {
            let kind: i32 = row.try_get("", "kind")?;
            Ok((
                row.try_get("", "month")?,
                MovementKind::from_code(kind).ok_or_else(|| corrupt("rollup kind"))?,
                Tally {
                    amount: row.try_get("", "amount")?,
                    count: row.try_get("", "movements")?,
                },
            ))
        })
        .collect()
}

/// Which accounts a retention query looks at.
#[derive(Debug, Clone, Default)]
pub struct CohortFilter {
    /// Segment code.
    pub segment: Option<i32>,
    /// Owner.
    pub owner: Option<String>,
}

/// Retention between `t0` and `t1` from the paying spans.
pub async fn retention<C: ConnectionTrait>(
    conn: &C,
    t0: i64,
    t1: i64,
    filter: &CohortFilter,
) -> Result<Retention, Error> {
    let rows = retention_rows(conn, t0, t1, filter, false).await?;
    let (_, r) = rows
        .into_iter()
        .next()
        .ok_or_else(|| corrupt("retention"))?;
    Ok(r)
}

/// Retention between `t0` and `t1` per owner who closed the deal, the
/// largest starting MRR first.
pub async fn retention_by_owner<C: ConnectionTrait>(
    conn: &C,
    t0: i64,
    t1: i64,
    filter: &CohortFilter,
) -> Result<Vec<(String, Retention)>, Error> {
    retention_rows(conn, t0, t1, filter, true).await
}

async fn retention_rows<C: ConnectionTrait>(
    conn: &C,
    t0: i64,
    t1: i64,
    filter: &CohortFilter,
    by_owner: bool,
) -> Result<Vec<(String, Retention)>, Error> {
    // One pass over the spans that overlap [t0, t1], grouped by account
    // (the table is clustered by account), rather than a join of two
    // point-in-time lookups.
    let mut sql = String::from(
        "SELECT account_id, MIN(owner) AS owner, \
         SUM(CASE WHEN valid_from <= ? AND valid_to > ? THEN mrr ELSE 0 END) AS m0, \
         SUM(CASE WHEN valid_from <= ? AND valid_to > ? THEN mrr ELSE 0 END) AS m1 \
         FROM paying_spans WHERE valid_from <= ? AND valid_to > ?",
    );
    let mut values: Vec<Value> = vec![
        t0.into(),
        t0.into(),
        t1.into(),
        t1.into(),
        t1.into(),
        t0.into(),
    ];
    if let Some(segment) = filter.segment {
        sql.push_str(" AND segment = ?");
        values.push(segment.into());
    }
    if let Some(owner) = &filter.owner {
        sql.push_str(" AND owner = ?");
        values.push(owner.clone().into());
    }
    let (group, order) = if by_owner {
        ("owner, ", " GROUP BY owner ORDER BY SUM(m0) DESC, owner")
    } else {
        ("'' AS owner, ", "")
    };
    let sql = format!(
        "SELECT {group}CAST(COUNT(*) AS BIGINT) AS accounts_start, \
         CAST(COALESCE(SUM(CASE WHEN m1 > 0 THEN 1 ELSE 0 END), 0) AS BIGINT) AS accounts_retained, \
         CAST(COALESCE(SUM(m0), 0) AS BIGINT) AS mrr_start, \
         CAST(COALESCE(SUM(CASE WHEN m1 < m0 THEN m1 ELSE m0 END), 0) AS BIGINT) AS mrr_retained, \
         CAST(COALESCE(SUM(m1), 0) AS BIGINT) AS mrr_end \
         FROM ({sql} GROUP BY account_id) x WHERE m0 > 0{order}"
    );
    query(conn, &sql, values)
        .await?
        .iter()
        .map(|row| {
            Ok((
                row.try_get("", "owner")?,
                Retention {
                    accounts_start: row.try_get("", "accounts_start")?,
                    accounts_retained: row.try_get("", "accounts_retained")?,
                    mrr_start: row.try_get("", "mrr_start")?,
                    mrr_retained: row.try_get("", "mrr_retained")?,
                    mrr_end: row.try_get("", "mrr_end")?,
                },
            ))
        })
        .collect()
}

/// A stored movement with its account and segment.
#[derive(Debug, Clone)]
pub struct StoredMovement {
    /// The account.
    pub account_id: String,
    /// The movement.
    pub movement: Movement,
    /// Segment code.
    pub segment: i32,
}

/// Filters of `ListMovements`.
#[derive(Debug, Clone)]
pub struct MovementFilter {
    /// From, inclusive.
    pub start: i64,
    /// To, exclusive.
    pub end: i64,
    /// One account.
    pub account: Option<Uuid>,
    /// One kind.
    pub kind: Option<MovementKind>,
}

/// Movements ordered by (time, account) after the cursor `(at, account)`.
pub async fn list_movements<C: ConnectionTrait>(
    conn: &C,
    filter: &MovementFilter,
    after: Option<(i64, String)>,
    limit: u64,
) -> Result<Vec<StoredMovement>, Error> {
    let mut sql = String::from(
        "SELECT account_id, occurred_at, kind, amount, mrr_before, mrr_after, segment \
         FROM movements WHERE occurred_at >= ? AND occurred_at < ?",
    );
    let mut values: Vec<Value> = vec![filter.start.into(), filter.end.into()];
    if let Some(account) = filter.account {
        sql.push_str(" AND account_id = ?");
        values.push(account.to_string().into());
    }
    if let Some(kind) = filter.kind {
        sql.push_str(" AND kind = ?");
        values.push(kind.code().into());
    }
    if let Some((at, account)) = after {
        sql.push_str(" AND (occurred_at > ? OR (occurred_at = ? AND account_id > ?))");
        values.extend([at.into(), at.into(), account.into()]);
    }
    sql.push_str(&format!(
        " ORDER BY occurred_at, account_id LIMIT {}",
        limit.min(10_000)
    ));
    query(conn, &sql, values)
        .await?
        .iter()
        .map(|row| {
            let (movement, segment) = movement_from_row(row)?;
            Ok(StoredMovement {
                account_id: row.try_get("", "account_id")?,
                movement,
                segment,
            })
        })
        .collect()
}

/// A recorded invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceRow {
    /// Id.
    pub id: Uuid,
    /// The account.
    pub account_id: Uuid,
    /// The subscription, when tied to one.
    pub subscription_id: Option<Uuid>,
    /// ISO-4217 code.
    pub currency: String,
    /// Minor units.
    pub amount: i64,
    /// Due, microseconds.
    pub due_at: i64,
    /// Paid, microseconds.
    pub paid_at: Option<i64>,
}

/// Stores an invoice.
pub async fn insert_invoice<C: ConnectionTrait>(
    conn: &C,
    invoice: &InvoiceRow,
    now: i64,
) -> Result<(), Error> {
    exec(
        conn,
        "INSERT INTO invoices (id, account_id, subscription_id, currency, amount, due_at, paid_at, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        vec![
            invoice.id.to_string().into(),
            invoice.account_id.to_string().into(),
            invoice
                .subscription_id
                .map(|s| s.to_string())
                .unwrap_or_default()
                .into(),
            invoice.currency.clone().into(),
            invoice.amount.into(),
            invoice.due_at.into(),
            invoice.paid_at.into(),
            now.into(),
        ],
    )
    .await
}

/// Records (or replaces) the outcome of the renewal at `renewal_at`.
pub async fn save_renewal_outcome<C: ConnectionTrait>(
    conn: &C,
    subscription: Uuid,
    renewal_at: i64,
    outcome: i32,
    decided_at: i64,
) -> Result<(), Error> {
    exec(
        conn,
        "INSERT INTO renewal_outcomes (subscription_id, renewal_at, outcome, decided_at) \
         VALUES (?, ?, ?, ?) ON CONFLICT (subscription_id, renewal_at) DO UPDATE SET \
         outcome = excluded.outcome, decided_at = excluded.decided_at",
        vec![
            subscription.to_string().into(),
            renewal_at.into(),
            outcome.into(),
            decided_at.into(),
        ],
    )
    .await
}

/// Subscriptions renewing in `[start, end)` with their recorded outcome
/// (0 when none), ordered by (renewal date, id) after the cursor.
pub async fn renewals<C: ConnectionTrait>(
    conn: &C,
    start: i64,
    end: i64,
    account: Option<Uuid>,
    after: Option<(i64, String)>,
    limit: u64,
) -> Result<Vec<(Subscription, i32)>, Error> {
    let mut sql = String::from(
        "SELECT s.data, COALESCE(o.outcome, 0) AS outcome FROM subscriptions s \
         LEFT JOIN renewal_outcomes o ON o.subscription_id = s.id AND o.renewal_at = s.renewal_at \
         WHERE s.renewal_at >= ? AND s.renewal_at < ?",
    );
    let mut values: Vec<Value> = vec![start.into(), end.into()];
    if let Some(account) = account {
        sql.push_str(" AND s.account_id = ?");
        values.push(account.to_string().into());
    }
    if let Some((at, id)) = after {
        sql.push_str(" AND (s.renewal_at > ? OR (s.renewal_at = ? AND s.id > ?))");
        values.extend([at.into(), at.into(), id.into()]);
    }
    sql.push_str(&format!(
        " ORDER BY s.renewal_at, s.id LIMIT {}",
        limit.min(10_000)
    ));
    query(conn, &sql, values)
        .await?
        .iter()
        .map(|row| {
            Ok((
                subscription_from_json(&row.try_get::<String>("", "data")?)?,
                row.try_get("", "outcome")?,
            ))
        })
        .collect()
}

/// The first payment (NEW movement) of every account in `[start, end)`,
/// optionally of one segment.
pub async fn first_payments<C: ConnectionTrait>(
    conn: &C,
    start: i64,
    end: i64,
    segment: Option<i32>,
) -> Result<Vec<(String, i64)>, Error> {
    let mut sql = String::from(
        "SELECT account_id, occurred_at FROM movements WHERE kind = ? AND occurred_at >= ? AND occurred_at < ?",
    );
    let mut values: Vec<Value> = vec![MovementKind::New.code().into(), start.into(), end.into()];
    if let Some(segment) = segment {
        sql.push_str(" AND segment = ?");
        values.push(segment.into());
    }
    query(conn, &sql, values)
        .await?
        .iter()
        .map(|row| {
            Ok((
                row.try_get("", "account_id")?,
                row.try_get("", "occurred_at")?,
            ))
        })
        .collect()
}

/// The paying spans of the given accounts.
pub async fn spans_of<C: ConnectionTrait>(
    conn: &C,
    accounts: &[String],
) -> Result<Vec<(String, PayingSpan)>, Error> {
    let mut out = Vec::new();
    for chunk in accounts.chunks(CHUNK) {
        let sql = format!(
            "SELECT account_id, valid_from, valid_to, mrr FROM paying_spans WHERE account_id IN ({})",
            marks(chunk.len())
        );
        let ids = chunk.iter().map(|a| a.clone().into()).collect();
        for row in query(conn, &sql, ids).await? {
            let to: i64 = row.try_get("", "valid_to")?;
            out.push((
                row.try_get("", "account_id")?,
                PayingSpan {
                    from: row.try_get("", "valid_from")?,
                    to: (to != OPEN_END).then_some(to),
                    mrr: row.try_get("", "mrr")?,
                },
            ));
        }
    }
    Ok(out)
}

/// Records a month's spend and gross margin.
pub async fn save_spend<C: ConnectionTrait>(
    conn: &C,
    month: Month,
    spend: i64,
    margin_bp: i32,
) -> Result<(), Error> {
    exec(
        conn,
        "INSERT INTO monthly_spend (month, spend, gross_margin_bp) VALUES (?, ?, ?) \
         ON CONFLICT (month) DO UPDATE SET spend = excluded.spend, gross_margin_bp = excluded.gross_margin_bp",
        vec![month.into(), spend.into(), margin_bp.into()],
    )
    .await
}

/// A month's (spend, gross margin in basis points), when recorded.
pub async fn spend<C: ConnectionTrait>(
    conn: &C,
    month: Month,
) -> Result<Option<(i64, i32)>, Error> {
    let rows = query(
        conn,
        "SELECT spend, gross_margin_bp FROM monthly_spend WHERE month = ?",
        vec![month.into()],
    )
    .await?;
    rows.first()
        .map(|row| {
            Ok((
                row.try_get("", "spend")?,
                row.try_get("", "gross_margin_bp")?,
            ))
        })
        .transpose()
}
