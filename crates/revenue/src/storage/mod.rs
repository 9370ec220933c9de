//! The revenue service's own tables and the queries on them. Nothing outside
//! this module knows the table layout; it takes and returns domain values.
//!
//! - `subscriptions`: one row per subscription, its full history of terms as
//!   JSON (the domain recomputes an account's movements from it).
//! - `movements`: the derived MRR movements, one per account and instant.
//! - `mrr_rollup`: signed sum and count of movements per month x segment x
//!   type, maintained by deltas, so a waterfall reads O(months) rows.
//! - `paying_spans`: the intervals in which each account paid, with its MRR,
//!   segment, owner and CSM, so retention between two instants is one pass over
//!   the spans that overlap them instead of a scan of history.
//! - `fx_rates`, `invoices`, `renewal_outcomes` and `monthly_spend`.
//!
//! Rows are read and written through the sea-orm entities in [`entity`];
//! reports, roll-up deltas, multi-row writes and dynamic filters are built
//! with sea-query. Every value is a bound parameter.
//!
//! Layout: [`entity`] (tables), `schema` (the migration), `subscriptions`
//! (subscriptions and renewals), `movements` (recompute, roll-ups and the
//! movement list), `retention` (paying spans), `ledger` (FX rates,
//! invoices and spend).

pub mod entity;
mod ledger;
mod movements;
mod retention;
mod schema;
mod subscriptions;

use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{InsertStatement, SimpleExpr};

use bowtie_runtime::error::Error;
use bowtie_runtime::sql::{corrupt, execute, internal, stored_uuid};

use crate::domain::{AccountId, Instant, MovementKind, Segment};

pub use ledger::{
    fx_table, insert_invoice, invoice_by_external_id, mark_invoice_paid, save_rate, save_spend,
    spend, subscription_invoices,
};
pub use movements::{
    cut_rollups, dimension_seen, first_payments, list_movements, loss_causes, recompute, rollups,
    versions_of,
};
pub use retention::{
    book_people, cuts_at, retention, retention_by_csm, retention_by_cut, retention_by_owner,
    spans_of,
};
pub use schema::Migrator;
pub use subscriptions::{
    accounts_of_subscriptions, histories_in_currency, renewals, require_subscription,
    save_renewal_outcome, save_subscriptions, subscriptions_after, subscriptions_of,
};

/// Open spans end here (a time no instant reaches), as stored.
pub const OPEN_END: i64 = i64::MAX;
/// Rows per multi-row insert and ids per `IN` list (well under SQLite's
/// variable limit).
const CHUNK: usize = 1000;

/// Inserts `rows` with `insert` (its table, columns and conflict clause),
/// [`CHUNK`] rows per statement: one round trip per thousand rows is what
/// keeps a bulk import fast.
async fn insert_chunks<C: ConnectionTrait>(
    conn: &C,
    insert: &InsertStatement,
    rows: Vec<Vec<SimpleExpr>>,
) -> Result<(), Error> {
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let mut stmt = insert.clone();
        for row in rows.by_ref().take(CHUNK) {
            stmt.values(row).map_err(internal)?;
        }
        execute(conn, &stmt).await?;
    }
    Ok(())
}

/// A stored segment code.
fn stored_segment(code: i32) -> Result<Segment, Error> {
    Segment::try_from(code).map_err(|_| corrupt(format_args!("stored segment {code}")))
}

/// A stored segment's code.
fn segment_code(segment: Segment) -> i32 {
    segment as i32
}

/// A stored account id.
fn stored_account(raw: &str) -> Result<AccountId, Error> {
    stored_uuid(raw).map(AccountId)
}

/// Stored ids of `accounts`, for an `IN` list.
fn keys(accounts: &[AccountId]) -> Vec<String> {
    accounts.iter().map(AccountId::to_string).collect()
}

/// On PostgreSQL, serialises writes to one account for the rest of the
/// transaction, so two concurrent writes never derive movements from the same
/// stale history. SQLite has a single writer already.
pub async fn lock_account<C: ConnectionTrait>(conn: &C, account: AccountId) -> Result<(), Error> {
    bowtie_runtime::store::lock(conn, &format!("revenue.account.{account}")).await
}

/// Which accounts a retention query looks at.
#[derive(Debug, Clone, Default)]
pub struct CohortFilter {
    /// One segment.
    pub segment: Option<Segment>,
    /// Owner.
    pub owner: Option<String>,
    /// Customer success manager.
    pub csm: Option<String>,
}

/// Filters of `ListMovements`.
#[derive(Debug, Clone)]
pub struct MovementFilter {
    /// From, inclusive.
    pub start: Instant,
    /// To, exclusive.
    pub end: Instant,
    /// One account.
    pub account: Option<AccountId>,
    /// One kind.
    pub kind: Option<MovementKind>,
}
