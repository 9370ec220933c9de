//! The scoring service's own tables and the queries on them.
//!
//! - `signals`: every accepted signal, keyed by its idempotency key (a replay
//!   inserts nothing).
//! - `signal_days`: per account, kind and UTC day, the sum, the number of
//!   events and the latest value; maintained in the same transaction as the
//!   signals (and by the revenue feed: late payments, downgrades, expansions),
//!   so health reads a few aggregated rows per account, never raw signals.
//! - `profiles`: what the feeds say about an account (segment, strategic,
//!   MRR, seats, renewal date, onboarding start, first value, churn).
//! - `subscriptions`: quantity and term of each subscription (seats, renewal).
//! - `health`, `health_history`: the current score (with its components,
//!   encoded) and one snapshot per account and day.
//! - `scorecards`, `scorecard_versions`, `alerts`, `models`.

use bowtie_proto::common::Segment;
use bowtie_proto::scoring as pb;
use bowtie_runtime::error::Error;
use futures::StreamExt;
use prost::Message;
use sea_orm::sea_query::{Alias, Expr, OnConflict, Query};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, QueryResult, RuntimeErr, Statement,
    StatementBuilder,
};
use sea_orm_migration::prelude::{
    ColumnDef, DeriveIden, Index, MigrationName, MigrationTrait, MigratorTrait, SchemaManager,
    Table,
};
use uuid::Uuid;

use crate::domain::{DAY, Inputs, Scorecard};

/// Internal `signal_days` kinds fed by the revenue feed (signal kinds are 1..=11).
pub mod kinds {
    /// An invoice paid late (or unpaid past due).
    pub const LATE_PAYMENT: i32 = 100;
    /// A contraction movement.
    pub const DOWNGRADE: i32 = 101;
    /// An expansion movement.
    pub const EXPANSION: i32 = 102;
}

#[derive(DeriveIden, Clone, Copy)]
enum Signals {
    Table,
    IdempotencyKey,
    AccountId,
    Kind,
    Value,
    OccurredAt,
    RecordedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum SignalDays {
    Table,
    AccountId,
    Kind,
    Day,
    Total,
    Events,
    LastValue,
    LastAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum Profiles {
    Table,
    AccountId,
    Segment,
    Strategic,
    CreatedAt,
    Mrr,
    MrrAt,
    FirstPaidAt,
    ChurnedAt,
    OnboardingAt,
    FirstValueAt,
    Seats,
    RenewalAt,
    ContractMonths,
    LastMrr,
    UpdatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum Subscriptions {
    Table,
    Id,
    AccountId,
    Quantity,
    TermEnd,
    IntervalMonths,
    Cancelled,
}

#[derive(DeriveIden, Clone, Copy)]
enum Health {
    Table,
    AccountId,
    Segment,
    Score,
    Band,
    RiskBp,
    Tier,
    Quadrant,
    Mrr,
    Body,
    ComputedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum HealthHistory {
    Table,
    AccountId,
    Day,
    Score,
    Band,
}

#[derive(DeriveIden, Clone, Copy)]
enum Scorecards {
    Table,
    Segment,
    Version,
    Body,
    UpdatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum ScorecardVersions {
    Table,
    Segment,
    Version,
    Body,
    UpdatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum Alerts {
    Table,
    Id,
    AccountId,
    Kind,
    State,
    Dedupe,
    Message,
    Score,
    RiskBp,
    Version,
    Note,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum Models {
    Table,
    Id,
    TrainedAt,
    Body,
}

struct CreateScoringTables;

impl MigrationName for CreateScoringTables {
    fn name(&self) -> &str {
        "m0400_scoring_tables"
    }
}

fn big(c: impl sea_orm::sea_query::IntoIden) -> ColumnDef {
    ColumnDef::new(c).big_integer().not_null().to_owned()
}

fn big_null(c: impl sea_orm::sea_query::IntoIden) -> ColumnDef {
    ColumnDef::new(c).big_integer().null().to_owned()
}

fn int(c: impl sea_orm::sea_query::IntoIden) -> ColumnDef {
    ColumnDef::new(c).integer().not_null().to_owned()
}

fn text(c: impl sea_orm::sea_query::IntoIden) -> ColumnDef {
    ColumnDef::new(c).string().not_null().to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for CreateScoringTables {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Signals::Table)
                .if_not_exists()
                .col(text(Signals::IdempotencyKey).primary_key())
                .col(text(Signals::AccountId))
                .col(int(Signals::Kind))
                .col(big(Signals::Value))
                .col(big(Signals::OccurredAt))
                .col(big(Signals::RecordedAt))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(SignalDays::Table)
                .if_not_exists()
                .col(text(SignalDays::AccountId))
                .col(int(SignalDays::Kind))
                .col(big(SignalDays::Day))
                .col(big(SignalDays::Total))
                .col(big(SignalDays::Events))
                .col(big(SignalDays::LastValue))
                .col(big(SignalDays::LastAt))
                .primary_key(
                    Index::create()
                        .col(SignalDays::AccountId)
                        .col(SignalDays::Day)
                        .col(SignalDays::Kind),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Profiles::Table)
                .if_not_exists()
                .col(text(Profiles::AccountId).primary_key())
                .col(int(Profiles::Segment))
                .col(int(Profiles::Strategic))
                .col(big_null(Profiles::CreatedAt))
                .col(big(Profiles::Mrr))
                .col(big_null(Profiles::MrrAt))
                .col(big_null(Profiles::FirstPaidAt))
                .col(big_null(Profiles::ChurnedAt))
                .col(big_null(Profiles::OnboardingAt))
                .col(big_null(Profiles::FirstValueAt))
                .col(big_null(Profiles::Seats))
                .col(big_null(Profiles::RenewalAt))
                .col(big_null(Profiles::ContractMonths))
                .col(big(Profiles::LastMrr))
                .col(big(Profiles::UpdatedAt))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Subscriptions::Table)
                .if_not_exists()
                .col(text(Subscriptions::Id).primary_key())
                .col(text(Subscriptions::AccountId))
                .col(big(Subscriptions::Quantity))
                .col(big_null(Subscriptions::TermEnd))
                .col(int(Subscriptions::IntervalMonths))
                .col(int(Subscriptions::Cancelled))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("subscriptions_account")
                .table(Subscriptions::Table)
                .col(Subscriptions::AccountId)
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Health::Table)
                .if_not_exists()
                .col(text(Health::AccountId).primary_key())
                .col(int(Health::Segment))
                .col(int(Health::Score))
                .col(int(Health::Band))
                .col(ColumnDef::new(Health::RiskBp).integer().null())
                .col(int(Health::Tier))
                .col(int(Health::Quadrant))
                .col(big(Health::Mrr))
                .col(ColumnDef::new(Health::Body).binary().not_null())
                .col(big(Health::ComputedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("health_score")
                .table(Health::Table)
                .col(Health::Score)
                .col(Health::AccountId)
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(HealthHistory::Table)
                .if_not_exists()
                .col(text(HealthHistory::AccountId))
                .col(big(HealthHistory::Day))
                .col(int(HealthHistory::Score))
                .col(int(HealthHistory::Band))
                .primary_key(
                    Index::create()
                        .col(HealthHistory::AccountId)
                        .col(HealthHistory::Day),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Scorecards::Table)
                .if_not_exists()
                .col(int(Scorecards::Segment).primary_key())
                .col(big(Scorecards::Version))
                .col(ColumnDef::new(Scorecards::Body).text().not_null())
                .col(big(Scorecards::UpdatedAt))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(ScorecardVersions::Table)
                .if_not_exists()
                .col(int(ScorecardVersions::Segment))
                .col(big(ScorecardVersions::Version))
                .col(ColumnDef::new(ScorecardVersions::Body).text().not_null())
                .col(big(ScorecardVersions::UpdatedAt))
                .primary_key(
                    Index::create()
                        .col(ScorecardVersions::Segment)
                        .col(ScorecardVersions::Version),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Alerts::Table)
                .if_not_exists()
                .col(text(Alerts::Id).primary_key())
                .col(text(Alerts::AccountId))
                .col(int(Alerts::Kind))
                .col(int(Alerts::State))
                .col(text(Alerts::Dedupe))
                .col(text(Alerts::Message))
                .col(int(Alerts::Score))
                .col(int(Alerts::RiskBp))
                .col(big(Alerts::Version))
                .col(text(Alerts::Note))
                .col(big(Alerts::CreatedAt))
                .col(big(Alerts::UpdatedAt))
                .to_owned(),
        )
        .await?;
        // One alert per account and kind is not resolved: `dedupe` is "open"
        // until resolution, then the alert's own id.
        m.create_index(
            Index::create()
                .name("alerts_open_once")
                .table(Alerts::Table)
                .col(Alerts::AccountId)
                .col(Alerts::Kind)
                .col(Alerts::Dedupe)
                .unique()
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Models::Table)
                .if_not_exists()
                .col(text(Models::Id).primary_key())
                .col(big(Models::TrainedAt))
                .col(ColumnDef::new(Models::Body).text().not_null())
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            "models",
            "alerts",
            "scorecard_versions",
            "scorecards",
            "health_history",
            "health",
            "subscriptions",
            "profiles",
            "signal_days",
            "signals",
        ] {
            m.drop_table(Table::drop().table(Alias::new(t)).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}

/// The PostgreSQL layout of the scoring tables, for a recomputation that
/// rewrites most health rows at once. SQLite is left as it is.
///
/// - Keys compare byte by byte. They are UUIDs and idempotency keys, never
///   text sorted for a reader, yet a database's default collation
///   (`en_US.UTF-8`, even `C.UTF-8` before PostgreSQL 17) compares them
///   through the C library's locale routines, without abbreviated keys, on
///   every index look-up, upsert and sort. The "C" collation orders these
///   keys exactly as before (ASCII), so paging by key is unchanged.
/// - A health row is updated in place (a HOT update: no new index entries)
///   when its page has room and no indexed column changed. Pages are left
///   half empty for that, and the index on the score is dropped: the score
///   changes with almost every rescoring, and every change meant new
///   entries in both indexes. ListHealth sorts the matching rows instead
///   (tens of milliseconds per page for 100,000 accounts).
struct PostgresLayout;

impl MigrationName for PostgresLayout {
    fn name(&self) -> &str {
        "m0401_scoring_postgres_layout"
    }
}

/// The columns [`PostgresLayout`] compares byte by byte, by table.
const KEY_COLUMNS: &[(&str, &[&str])] = &[
    ("signals", &["idempotency_key", "account_id"]),
    ("signal_days", &["account_id"]),
    ("profiles", &["account_id"]),
    ("subscriptions", &["id", "account_id"]),
    ("health", &["account_id"]),
    ("health_history", &["account_id"]),
    ("alerts", &["id", "account_id", "dedupe"]),
];

/// Sets the collation of every [`KEY_COLUMNS`] column.
async fn collate_keys(m: &SchemaManager<'_>, collation: &str) -> Result<(), DbErr> {
    for (table, columns) in KEY_COLUMNS {
        let alters: Vec<String> = columns
            .iter()
            .map(|c| format!("ALTER COLUMN {c} TYPE varchar COLLATE \"{collation}\""))
            .collect();
        m.get_connection()
            .execute_unprepared(&format!("ALTER TABLE {table} {}", alters.join(", ")))
            .await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for PostgresLayout {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if m.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        collate_keys(m, "C").await?;
        let db = m.get_connection();
        db.execute_unprepared("DROP INDEX IF EXISTS health_score")
            .await?;
        db.execute_unprepared("ALTER TABLE health SET (fillfactor = 50)")
            .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if m.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        let db = m.get_connection();
        db.execute_unprepared("ALTER TABLE health RESET (fillfactor)")
            .await?;
        db.execute_unprepared(
            "CREATE INDEX IF NOT EXISTS health_score ON health (score, account_id)",
        )
        .await?;
        collate_keys(m, "default").await
    }
}

/// The scoring service's migrations: the runtime's tables, then its own.
#[derive(Debug)]
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        let mut migrations = bowtie_runtime::schema::runtime_migrations();
        migrations.push(Box::new(CreateScoringTables));
        migrations.push(Box::new(PostgresLayout));
        migrations
    }
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(anyhow::anyhow!("{e}"))
}

async fn execute<C: ConnectionTrait, S: StatementBuilder>(conn: &C, stmt: &S) -> Result<(), Error> {
    conn.execute(StatementBuilder::build(stmt, &conn.get_database_backend()))
        .await?;
    Ok(())
}

async fn raw<C: ConnectionTrait>(conn: &C, sql: String) -> Result<Vec<QueryResult>, Error> {
    Ok(conn
        .query_all(Statement::from_string(conn.get_database_backend(), sql))
        .await?)
}

/// `'id1','id2'` for an IN list. Uuids render as hex and dashes only, so
/// inlining them is safe.
fn id_list(ids: &[Uuid]) -> String {
    ids.iter()
        .map(|id| format!("'{id}'"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Which accounts a read covers.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// Every account.
    All,
    /// These accounts.
    Ids(&'a [Uuid]),
    /// The accounts whose id is after `after` (from the first when `None`)
    /// and at most `last`: a key range, read without an id list.
    Range {
        /// Exclusive lower bound.
        after: Option<Uuid>,
        /// Inclusive upper bound.
        last: Uuid,
    },
}

impl Scope<'_> {
    /// The condition on `account_id`, `None` for every account; `Err(())`
    /// when the scope names no account at all.
    fn condition(&self) -> Result<Option<String>, ()> {
        match self {
            Self::All => Ok(None),
            Self::Ids([]) => Err(()),
            Self::Ids(ids) => Ok(Some(format!("account_id IN ({})", id_list(ids)))),
            Self::Range { after, last } => Ok(Some(match after {
                Some(a) => format!("account_id > '{a}' AND account_id <= '{last}'"),
                None => format!("account_id <= '{last}'"),
            })),
        }
    }

    /// `AND <condition>` (empty for every account), `None` when it names no account.
    fn and(&self) -> Option<String> {
        self.condition()
            .ok()
            .map(|c| c.map_or(String::new(), |c| format!("AND {c}")))
    }

    /// `WHERE <condition>` (empty for every account), `None` when it names no account.
    fn where_(&self) -> Option<String> {
        self.condition()
            .ok()
            .map(|c| c.map_or(String::new(), |c| format!("WHERE {c}")))
    }
}

fn uuid(raw: &str) -> Result<Uuid, Error> {
    Uuid::parse_str(raw).map_err(|_| internal(format!("stored id {raw:?} is not a UUID")))
}

/// The UTC day number of an instant.
pub fn day_of(micros: i64) -> i64 {
    micros.div_euclid(DAY)
}

/// A validated signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSignal {
    /// Its idempotency key.
    pub key: String,
    /// The account.
    pub account_id: Uuid,
    /// Signal type number.
    pub kind: i32,
    /// The value (counts already defaulted to 1).
    pub value: i64,
    /// When it happened (µs).
    pub occurred_at: i64,
}

/// Inserts signals, skipping keys recorded before; returns the keys inserted.
pub async fn insert_signals<C: ConnectionTrait>(
    conn: &C,
    signals: &[NewSignal],
    now: i64,
) -> Result<std::collections::HashSet<String>, Error> {
    let mut inserted = std::collections::HashSet::with_capacity(signals.len());
    // 6 values a row: within SQLite's 32,766 and PostgreSQL's 65,535 parameters.
    for chunk in signals.chunks(5000) {
        let mut insert = Query::insert();
        insert
            .into_table(Signals::Table)
            .columns([
                Signals::IdempotencyKey,
                Signals::AccountId,
                Signals::Kind,
                Signals::Value,
                Signals::OccurredAt,
                Signals::RecordedAt,
            ])
            .on_conflict(
                OnConflict::column(Signals::IdempotencyKey)
                    .do_nothing()
                    .to_owned(),
            )
            .returning_col(Signals::IdempotencyKey);
        for s in chunk {
            insert
                .values([
                    s.key.clone().into(),
                    s.account_id.to_string().into(),
                    s.kind.into(),
                    s.value.into(),
                    s.occurred_at.into(),
                    now.into(),
                ])
                .map_err(internal)?;
        }
        let rows = conn
            .query_all(StatementBuilder::build(
                &insert,
                &conn.get_database_backend(),
            ))
            .await?;
        for row in rows {
            inserted.insert(row.try_get_by_index::<String>(0)?);
        }
    }
    Ok(inserted)
}

/// One `signal_days` increment: (account, kind, day) -> (sum, events, latest value, its time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayDelta {
    /// The account.
    pub account_id: Uuid,
    /// Kind number.
    pub kind: i32,
    /// UTC day number.
    pub day: i64,
    /// Added to the sum (negative to take back).
    pub total: i64,
    /// Added to the event count.
    pub events: i64,
    /// The latest value seen in this delta.
    pub last_value: i64,
    /// Its time.
    pub last_at: i64,
}

/// Adds the deltas to `signal_days` (one row per key per statement).
pub async fn add_days<C: ConnectionTrait>(conn: &C, deltas: &[DayDelta]) -> Result<(), Error> {
    use SignalDays as D;
    for chunk in deltas.chunks(1000) {
        let mut insert = Query::insert();
        insert
            .into_table(D::Table)
            .columns([
                D::AccountId,
                D::Kind,
                D::Day,
                D::Total,
                D::Events,
                D::LastValue,
                D::LastAt,
            ])
            .on_conflict(
                OnConflict::columns([D::AccountId, D::Day, D::Kind])
                    .value(D::Total, Expr::cust("signal_days.total + excluded.total"))
                    .value(
                        D::Events,
                        Expr::cust("signal_days.events + excluded.events"),
                    )
                    .value(
                        D::LastValue,
                        Expr::cust(
                            "CASE WHEN excluded.last_at >= signal_days.last_at \
                             THEN excluded.last_value ELSE signal_days.last_value END",
                        ),
                    )
                    .value(
                        D::LastAt,
                        Expr::cust(
                            "CASE WHEN excluded.last_at >= signal_days.last_at \
                             THEN excluded.last_at ELSE signal_days.last_at END",
                        ),
                    )
                    .to_owned(),
            );
        for d in chunk {
            insert
                .values([
                    d.account_id.to_string().into(),
                    d.kind.into(),
                    d.day.into(),
                    d.total.into(),
                    d.events.into(),
                    d.last_value.into(),
                    d.last_at.into(),
                ])
                .map_err(internal)?;
        }
        execute(conn, &insert).await?;
    }
    Ok(())
}

/// What the feeds say about an account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    /// The account.
    pub account_id: Uuid,
    /// Segment.
    pub segment: Segment,
    /// Flagged strategic.
    pub strategic: bool,
    /// When the account was created.
    pub created_at: Option<i64>,
    /// MRR (reporting currency minor units).
    pub mrr: i64,
    /// Business time of the movement that set the MRR.
    pub mrr_at: Option<i64>,
    /// First payment.
    pub first_paid_at: Option<i64>,
    /// Last time all revenue was lost (cleared by a reactivation).
    pub churned_at: Option<i64>,
    /// Onboarding start (COMMIT).
    pub onboarding_at: Option<i64>,
    /// First value reached.
    pub first_value_at: Option<i64>,
    /// Seats.
    pub seats: Option<i64>,
    /// Next renewal date.
    pub renewal_at: Option<i64>,
    /// Longest billing term in months.
    pub contract_months: Option<i64>,
    /// The last positive MRR (kept after a churn, for the churn model).
    pub last_mrr: i64,
}

const PROFILE_COLUMNS: [Profiles; 14] = [
    Profiles::AccountId,
    Profiles::Segment,
    Profiles::Strategic,
    Profiles::CreatedAt,
    Profiles::Mrr,
    Profiles::MrrAt,
    Profiles::FirstPaidAt,
    Profiles::ChurnedAt,
    Profiles::OnboardingAt,
    Profiles::FirstValueAt,
    Profiles::Seats,
    Profiles::RenewalAt,
    Profiles::ContractMonths,
    Profiles::LastMrr,
];

const PROFILE_SELECT: &str = "account_id, segment, strategic, created_at, mrr, mrr_at, \
    first_paid_at, churned_at, onboarding_at, first_value_at, seats, renewal_at, contract_months, last_mrr";

fn profile_row(row: &QueryResult) -> Result<Profile, Error> {
    Ok(Profile {
        account_id: uuid(&row.try_get_by_index::<String>(0)?)?,
        segment: Segment::try_from(row.try_get_by_index::<i32>(1)?).unwrap_or(Segment::Unspecified),
        strategic: row.try_get_by_index::<i32>(2)? != 0,
        created_at: row.try_get_by_index(3)?,
        mrr: row.try_get_by_index(4)?,
        mrr_at: row.try_get_by_index(5)?,
        first_paid_at: row.try_get_by_index(6)?,
        churned_at: row.try_get_by_index(7)?,
        onboarding_at: row.try_get_by_index(8)?,
        first_value_at: row.try_get_by_index(9)?,
        seats: row.try_get_by_index(10)?,
        renewal_at: row.try_get_by_index(11)?,
        contract_months: row.try_get_by_index(12)?,
        last_mrr: row.try_get_by_index(13)?,
    })
}

/// Creates empty profiles for accounts that have none (known to exist).
pub async fn ensure_profiles<C: ConnectionTrait>(
    conn: &C,
    ids: &[Uuid],
    now: i64,
) -> Result<(), Error> {
    for chunk in ids.chunks(1000) {
        let mut insert = Query::insert();
        insert
            .into_table(Profiles::Table)
            .columns([
                Profiles::AccountId,
                Profiles::Segment,
                Profiles::Strategic,
                Profiles::Mrr,
                Profiles::LastMrr,
                Profiles::UpdatedAt,
            ])
            .on_conflict(
                OnConflict::column(Profiles::AccountId)
                    .do_nothing()
                    .to_owned(),
            );
        for id in chunk {
            insert
                .values([
                    id.to_string().into(),
                    0i32.into(),
                    0i32.into(),
                    0i64.into(),
                    0i64.into(),
                    now.into(),
                ])
                .map_err(internal)?;
        }
        execute(conn, &insert).await?;
    }
    Ok(())
}

/// Serialises read-modify-writes of one account's profile until the
/// transaction ends, so feed consumers and ingest running at once cannot
/// overwrite each other's fields (PostgreSQL; SQLite has one writer).
pub async fn lock_profile<C: ConnectionTrait>(conn: &C, id: Uuid) -> Result<(), Error> {
    bowtie_runtime::store::lock(conn, &format!("scoring.profile.{id}")).await
}

/// The profile of an account, if scoring knows it.
pub async fn get_profile<C: ConnectionTrait>(conn: &C, id: Uuid) -> Result<Option<Profile>, Error> {
    Ok(load_profiles(conn, Scope::Ids(&[id]))
        .await?
        .into_iter()
        .next())
}

/// Profiles of the accounts in `scope`.
pub async fn load_profiles<C: ConnectionTrait>(
    conn: &C,
    scope: Scope<'_>,
) -> Result<Vec<Profile>, Error> {
    let Some(filter) = scope.where_() else {
        return Ok(Vec::new());
    };
    let sql = format!("SELECT {PROFILE_SELECT} FROM profiles {filter}");
    raw(conn, sql).await?.iter().map(profile_row).collect()
}

/// Up to `limit` profiles after `after` (from the first when `None`), in
/// id order: a key range of accounts to rescore.
pub async fn profiles_after<C: ConnectionTrait>(
    conn: &C,
    after: Option<Uuid>,
    limit: u64,
) -> Result<Vec<Profile>, Error> {
    let filter = after.map_or(String::new(), |a| format!("WHERE account_id > '{a}'"));
    let sql =
        format!("SELECT {PROFILE_SELECT} FROM profiles {filter} ORDER BY account_id LIMIT {limit}");
    raw(conn, sql).await?.iter().map(profile_row).collect()
}

/// Writes a whole profile (insert or replace).
pub async fn save_profile<C: ConnectionTrait>(
    conn: &C,
    p: &Profile,
    now: i64,
) -> Result<(), Error> {
    save_profiles(conn, &[p], now).await
}

/// Writes whole profiles (insert or replace), many rows a statement.
pub async fn save_profiles<C: ConnectionTrait>(
    conn: &C,
    profiles: &[&Profile],
    now: i64,
) -> Result<(), Error> {
    let mut cols = PROFILE_COLUMNS.to_vec();
    cols.push(Profiles::UpdatedAt);
    // 15 values a row: within SQLite's 32,766 and PostgreSQL's 65,535 parameters.
    for chunk in profiles.chunks(1000) {
        let mut insert = Query::insert();
        insert
            .into_table(Profiles::Table)
            .columns(cols.clone())
            .on_conflict(
                OnConflict::column(Profiles::AccountId)
                    .update_columns(cols.iter().skip(1).copied())
                    .to_owned(),
            );
        for p in chunk {
            insert
                .values([
                    p.account_id.to_string().into(),
                    (p.segment as i32).into(),
                    i32::from(p.strategic).into(),
                    p.created_at.into(),
                    p.mrr.into(),
                    p.mrr_at.into(),
                    p.first_paid_at.into(),
                    p.churned_at.into(),
                    p.onboarding_at.into(),
                    p.first_value_at.into(),
                    p.seats.into(),
                    p.renewal_at.into(),
                    p.contract_months.into(),
                    p.last_mrr.into(),
                    now.into(),
                ])
                .map_err(internal)?;
        }
        if !chunk.is_empty() {
            execute(conn, &insert).await?;
        }
    }
    Ok(())
}

/// Every account id with a profile (the accounts scoring knows to exist).
pub async fn known_ids<C: ConnectionTrait>(conn: &C) -> Result<Vec<Uuid>, Error> {
    raw(conn, "SELECT account_id FROM profiles".into())
        .await?
        .iter()
        .map(|r| uuid(&r.try_get_by_index::<String>(0)?))
        .collect()
}

/// A subscription as the revenue feed last described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRow {
    /// Its id.
    pub id: String,
    /// The account.
    pub account_id: Uuid,
    /// Seats / units.
    pub quantity: i64,
    /// End of the current term.
    pub term_end: Option<i64>,
    /// Billing interval in months.
    pub interval_months: i32,
    /// Cancelled.
    pub cancelled: bool,
}

/// Stores a subscription and returns the account's seats, next renewal and
/// longest term over its live subscriptions.
pub async fn save_subscription<C: ConnectionTrait>(
    conn: &C,
    s: &SubscriptionRow,
) -> Result<(Option<i64>, Option<i64>, Option<i64>), Error> {
    use Subscriptions as S;
    let cols = [
        S::Id,
        S::AccountId,
        S::Quantity,
        S::TermEnd,
        S::IntervalMonths,
        S::Cancelled,
    ];
    let stmt = Query::insert()
        .into_table(S::Table)
        .columns(cols)
        .values([
            s.id.clone().into(),
            s.account_id.to_string().into(),
            s.quantity.into(),
            s.term_end.into(),
            s.interval_months.into(),
            i32::from(s.cancelled).into(),
        ])
        .map_err(internal)?
        .on_conflict(
            OnConflict::column(S::Id)
                .update_columns(cols.into_iter().skip(1))
                .to_owned(),
        )
        .to_owned();
    execute(conn, &stmt).await?;
    let rows = raw(
        conn,
        format!(
            "SELECT CAST(SUM(quantity) AS BIGINT), MIN(term_end), MAX(interval_months), COUNT(*) FROM subscriptions \
             WHERE account_id = '{}' AND cancelled = 0",
            s.account_id
        ),
    )
    .await?;
    let Some(row) = rows.first() else {
        return Ok((None, None, None));
    };
    let live: i64 = row.try_get_by_index(3)?;
    if live == 0 {
        return Ok((None, None, None));
    }
    let seats: Option<i64> = row.try_get_by_index::<Option<i64>>(0)?;
    let renewal: Option<i64> = row.try_get_by_index(1)?;
    let months: Option<i32> = row.try_get_by_index(2)?;
    Ok((seats, renewal, months.map(i64::from)))
}

/// Aggregated inputs of one account plus the facts tiers need.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Aggregates {
    /// Health inputs (profile fields are filled by the caller).
    pub inputs: Inputs,
    /// A late payment within the PROBLEM window.
    pub late_recently: bool,
    /// An expansion within the POTENTIAL window.
    pub expanded_recently: bool,
    /// Last day with usage.
    pub last_usage_day: Option<i64>,
}

/// Windows of [`load_aggregates`], as day numbers.
#[derive(Debug, Clone, Copy)]
pub struct Windows {
    /// Today (the day of `now`).
    pub now: i64,
    /// Days of the PROBLEM window.
    pub problem_days: i64,
    /// Days of the POTENTIAL window.
    pub potential_days: i64,
}

/// Aggregates `signal_days` as of `now` for `ids` (every account when
/// `None`): one grouped statement, one row per account.
pub async fn load_aggregates<C: ConnectionTrait>(
    conn: &C,
    scope: Scope<'_>,
    w: Windows,
) -> Result<Vec<(Uuid, Aggregates)>, Error> {
    let today = day_of(w.now);
    let (d30, d60, d180) = (today - 29, today - 59, today - 179);
    let problem = today - w.problem_days + 1;
    let potential = today - w.potential_days + 1;
    let Some(filter) = scope.and() else {
        return Ok(Vec::new());
    };
    let (late, down, exp) = (kinds::LATE_PAYMENT, kinds::DOWNGRADE, kinds::EXPANSION);
    let sql = format!(
        "SELECT account_id, \
         CAST(SUM(CASE WHEN kind IN (1,3) AND day >= {d30} THEN total ELSE 0 END) AS BIGINT), \
         CAST(SUM(CASE WHEN kind IN (1,3) AND day < {d30} AND day >= {d60} THEN total ELSE 0 END) AS BIGINT), \
         MAX(CASE WHEN kind = 2 AND day >= {d30} THEN day * 10000000 + last_value END), \
         CAST(SUM(CASE WHEN kind = 4 AND day >= {d30} THEN total ELSE 0 END) AS BIGINT), \
         CAST(SUM(CASE WHEN kind = 4 AND day < {d30} AND day >= {d60} THEN total ELSE 0 END) AS BIGINT), \
         CAST(SUM(CASE WHEN kind = 6 THEN total WHEN kind = 7 THEN -total ELSE 0 END) AS BIGINT), \
         CAST(SUM(CASE WHEN kind = 8 THEN total ELSE 0 END) AS BIGINT), \
         CAST(SUM(CASE WHEN kind = 8 THEN events ELSE 0 END) AS BIGINT), \
         CAST(SUM(CASE WHEN kind = 9 THEN total ELSE 0 END) AS BIGINT), \
         CAST(SUM(CASE WHEN kind = 9 THEN events ELSE 0 END) AS BIGINT), \
         CAST(SUM(CASE WHEN kind = 10 THEN total ELSE 0 END) AS BIGINT), \
         CAST(SUM(CASE WHEN kind < 100 THEN events ELSE 0 END) AS BIGINT), \
         CAST(SUM(CASE WHEN kind = {late} THEN total ELSE 0 END) AS BIGINT), \
         CAST(SUM(CASE WHEN kind = {down} THEN total ELSE 0 END) AS BIGINT), \
         CAST(SUM(CASE WHEN kind = {late} AND day >= {problem} THEN total ELSE 0 END) AS BIGINT), \
         CAST(SUM(CASE WHEN kind = {exp} AND day >= {potential} THEN total ELSE 0 END) AS BIGINT), \
         MAX(CASE WHEN kind IN (1,3) THEN day END) \
         FROM signal_days WHERE day >= {d180} AND day <= {today} {filter} GROUP BY account_id"
    );
    raw(conn, sql)
        .await?
        .iter()
        .map(|r| {
            let g = |i: usize| -> Result<i64, Error> {
                Ok(r.try_get_by_index::<Option<i64>>(i)?.unwrap_or(0))
            };
            let active: Option<i64> = r.try_get_by_index(3)?;
            Ok((
                uuid(&r.try_get_by_index::<String>(0)?)?,
                Aggregates {
                    inputs: Inputs {
                        now: w.now,
                        usage_recent: g(1)?,
                        usage_prior: g(2)?,
                        active_users: active.map(|v| v.rem_euclid(10_000_000)),
                        tickets_recent: g(4)?,
                        tickets_prior: g(5)?,
                        complaints_open: g(6)?.max(0),
                        nps: (g(7)?, g(8)?),
                        csat: (g(9)?, g(10)?),
                        stakeholders_left: g(11)?,
                        listening: g(12)? > 0,
                        late_payments: g(13)?,
                        downgrades: g(14)?,
                        ..Inputs::default()
                    },
                    late_recently: g(15)? > 0,
                    expanded_recently: g(16)? > 0,
                    last_usage_day: r.try_get_by_index(17)?,
                },
            ))
        })
        .collect()
}

/// One kind of signal of an account on one UTC day: what a `signal_days`
/// row holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    /// UTC day number.
    pub day: i32,
    /// Kind number (signal type, or one of [`kinds`]).
    pub kind: i32,
    /// Sum of the values.
    pub total: i64,
    /// Number of events.
    pub events: i64,
    /// The latest value.
    pub last_value: i64,
    /// Its time (µs).
    pub last_at: i64,
}

impl Cell {
    /// Adds a delta of the same account, kind and day (the later value wins,
    /// the delta's on a tie).
    pub fn add(&mut self, d: &DayDelta) {
        self.total += d.total;
        self.events += d.events;
        if d.last_at >= self.last_at {
            self.last_at = d.last_at;
            self.last_value = d.last_value;
        }
    }

    /// A new cell from a delta.
    pub fn of(d: &DayDelta) -> Self {
        Self {
            day: d.day as i32,
            kind: d.kind,
            total: d.total,
            events: d.events,
            last_value: d.last_value,
            last_at: d.last_at,
        }
    }
}

/// Aggregates one account's cells as of `w`, exactly as [`load_aggregates`]
/// does in SQL; `None` when no cell falls within the last 180 days.
pub fn fold<'a>(cells: impl IntoIterator<Item = &'a Cell>, w: Windows) -> Option<Aggregates> {
    let today = day_of(w.now);
    let (d30, d60, d180) = (today - 29, today - 59, today - 179);
    let problem = today - w.problem_days + 1;
    let potential = today - w.potential_days + 1;
    let mut a = Aggregates {
        inputs: Inputs {
            now: w.now,
            ..Inputs::default()
        },
        ..Aggregates::default()
    };
    let mut any = false;
    let mut active: Option<(i64, i64)> = None;
    let mut complaints = 0;
    let mut events = 0;
    let (mut late_recent, mut expanded) = (0, 0);
    for c in cells {
        let day = i64::from(c.day);
        if day < d180 || day > today {
            continue;
        }
        any = true;
        let i = &mut a.inputs;
        match c.kind {
            1 | 3 => {
                if day >= d30 {
                    i.usage_recent += c.total;
                } else if day >= d60 {
                    i.usage_prior += c.total;
                }
                a.last_usage_day = a.last_usage_day.max(Some(day));
            }
            2 if day >= d30 => {
                // The latest day's value (the SQL takes MAX(day * 10^7 + value)).
                let key = (day, c.last_value.rem_euclid(10_000_000));
                active = active.max(Some(key));
            }
            4 => {
                if day >= d30 {
                    i.tickets_recent += c.total;
                } else if day >= d60 {
                    i.tickets_prior += c.total;
                }
            }
            6 => complaints += c.total,
            7 => complaints -= c.total,
            8 => {
                i.nps.0 += c.total;
                i.nps.1 += c.events;
            }
            9 => {
                i.csat.0 += c.total;
                i.csat.1 += c.events;
            }
            10 => i.stakeholders_left += c.total,
            kinds::LATE_PAYMENT => {
                i.late_payments += c.total;
                if day >= problem {
                    late_recent += c.total;
                }
            }
            kinds::DOWNGRADE => i.downgrades += c.total,
            kinds::EXPANSION if day >= potential => expanded += c.total,
            _ => {}
        }
        if c.kind < 100 {
            events += c.events;
        }
    }
    if !any {
        return None;
    }
    a.inputs.active_users = active.map(|(_, v)| v);
    a.inputs.complaints_open = complaints.max(0);
    a.inputs.listening = events > 0;
    a.late_recently = late_recent > 0;
    a.expanded_recently = expanded > 0;
    Some(a)
}

/// Runs `select` (the seven columns of a `signal_days` row, in order) on
/// PostgreSQL as `COPY ... TO STDOUT` in the binary format and decodes the
/// rows here: a recomputation reads about ten cells per account, and the
/// binary copy is much lighter for both sides than a result set read
/// column by column.
async fn copy_cells(conn: &DatabaseConnection, select: &str) -> Result<Vec<(Uuid, Cell)>, Error> {
    use sea_orm::sqlx::Executor;
    let sqlx_error =
        |e: sea_orm::sqlx::Error| Error::Database(DbErr::Query(RuntimeErr::SqlxError(e)));
    let pool = conn.get_postgres_connection_pool();
    let mut txn = pool.begin().await.map_err(sqlx_error)?;
    // A key range's cells are scattered over the table (rows arrive in time
    // order, not account order): a bitmap scan reads each page once, where
    // an index scan returns to a page for every row. Without statistics,
    // e.g. on a table filled minutes ago, PostgreSQL expects a few rows and
    // picks the index scan, so it is ruled out for this statement.
    (&mut *txn)
        .execute("SET LOCAL enable_indexscan = off")
        .await
        .map_err(sqlx_error)?;
    let mut out = Vec::new();
    {
        let mut stream = txn
            .copy_out_raw(&format!("COPY ({select}) TO STDOUT (FORMAT binary)"))
            .await
            .map_err(sqlx_error)?;
        let mut decoder = CopyDecoder::default();
        while let Some(chunk) = stream.next().await {
            decoder.feed(&chunk.map_err(sqlx_error)?, &mut out)?;
        }
        decoder.finish()?;
    }
    txn.commit().await.map_err(sqlx_error)?;
    Ok(out)
}

/// Decodes `signal_days` rows in PostgreSQL's binary `COPY` format, as the
/// chunks arrive (a row may span chunks).
#[derive(Default)]
struct CopyDecoder {
    /// Bytes not decoded yet.
    pending: Vec<u8>,
    /// The header was read.
    started: bool,
    /// The trailer was read.
    ended: bool,
}

/// The binary `COPY` signature.
const COPY_SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

impl CopyDecoder {
    /// Decodes every complete row of `chunk` (with what was pending) into `out`.
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<(Uuid, Cell)>) -> Result<(), Error> {
        self.pending.extend_from_slice(chunk);
        let mut at = 0;
        if !self.started {
            // Signature, flags, then the header extension's length and bytes.
            let Some(extension) = read_i32(&self.pending, COPY_SIGNATURE.len() + 4) else {
                return Ok(());
            };
            if !self.pending.starts_with(COPY_SIGNATURE) {
                return Err(internal("copied cells: not in the binary COPY format"));
            }
            let header = COPY_SIGNATURE.len() + 8 + usize::try_from(extension).map_err(internal)?;
            if self.pending.len() < header {
                return Ok(());
            }
            at = header;
            self.started = true;
        }
        while !self.ended {
            match decode_cell(&self.pending[at..])? {
                Decoded::Row(used, id, cell) => {
                    out.push((id, cell));
                    at += used;
                }
                Decoded::End(used) => {
                    self.ended = true;
                    at += used;
                }
                Decoded::Incomplete => break,
            }
        }
        self.pending.drain(..at);
        Ok(())
    }

    /// Checks that the copy ended where it should.
    fn finish(&self) -> Result<(), Error> {
        if self.ended && self.pending.is_empty() {
            Ok(())
        } else {
            Err(internal("copied cells: the data ended early"))
        }
    }
}

/// One step of [`CopyDecoder`].
enum Decoded {
    /// A row and the bytes it took.
    Row(usize, Uuid, Cell),
    /// The trailer and its length.
    End(usize),
    /// More bytes are needed.
    Incomplete,
}

fn read_i16(bytes: &[u8], at: usize) -> Option<i16> {
    Some(i16::from_be_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn read_i32(bytes: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn read_i64(bytes: &[u8], at: usize) -> Option<i64> {
    Some(i64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// Decodes the row at the start of `bytes`: an account id (text), then
/// kind (int4), day, total, events, last value and last time (int8).
fn decode_cell(bytes: &[u8]) -> Result<Decoded, Error> {
    let Some(fields) = read_i16(bytes, 0) else {
        return Ok(Decoded::Incomplete);
    };
    if fields == -1 {
        return Ok(Decoded::End(2));
    }
    if fields != 7 {
        return Err(internal(format!("copied cells: {fields} columns, not 7")));
    }
    let Some(id_len) = read_i32(bytes, 2) else {
        return Ok(Decoded::Incomplete);
    };
    let id_len = usize::try_from(id_len).map_err(|_| internal("copied cells: no account id"))?;
    // The id, then one int4 and five int8, each after its length.
    let len = 6 + id_len + (4 + 4) + 5 * (4 + 8);
    if bytes.len() < len {
        return Ok(Decoded::Incomplete);
    }
    let id = Uuid::try_parse_ascii(&bytes[6..6 + id_len]).map_err(internal)?;
    let mut at = 6 + id_len;
    let mut field = |width: usize| -> Result<usize, Error> {
        if read_i32(bytes, at) != Some(width as i32) {
            return Err(internal("copied cells: unexpected column width"));
        }
        at += 4 + width;
        Ok(at - width)
    };
    let kind = read_i32(bytes, field(4)?);
    let day = read_i64(bytes, field(8)?);
    let total = read_i64(bytes, field(8)?);
    let events = read_i64(bytes, field(8)?);
    let last_value = read_i64(bytes, field(8)?);
    let last_at = read_i64(bytes, field(8)?);
    let (Some(kind), Some(day), Some(total), Some(events), Some(last_value), Some(last_at)) =
        (kind, day, total, events, last_value, last_at)
    else {
        return Err(internal("copied cells: truncated row"));
    };
    let cell = Cell {
        day: i32::try_from(day).map_err(internal)?,
        kind,
        total,
        events,
        last_value,
        last_at,
    };
    Ok(Decoded::Row(len, id, cell))
}

/// Where [`day_cells`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellSource {
    /// Every kind from `signal_days` (PostgreSQL, where ingest maintains it).
    Table,
    /// Signal kinds summed from the `signals` table (SQLite, where ingest
    /// keeps no `signal_days` rows), the feeds' kinds from `signal_days`.
    Signals,
    /// Only the feeds' kinds, from `signal_days`.
    Feeds,
}

/// The cells of the accounts in `scope` from day `from` to day `to`.
pub async fn day_cells(
    conn: &DatabaseConnection,
    scope: Scope<'_>,
    from: i64,
    to: i64,
    source: CellSource,
) -> Result<Vec<(Uuid, Cell)>, Error> {
    let Some(filter) = scope.and() else {
        return Ok(Vec::new());
    };
    let cell = |r: &QueryResult| -> Result<(Uuid, Cell), Error> {
        Ok((
            uuid(&r.try_get_by_index::<String>(0)?)?,
            Cell {
                kind: r.try_get_by_index(1)?,
                day: i32::try_from(r.try_get_by_index::<i64>(2)?).map_err(internal)?,
                total: r.try_get_by_index(3)?,
                events: r.try_get_by_index(4)?,
                last_value: r.try_get_by_index(5)?,
                last_at: r.try_get_by_index(6)?,
            },
        ))
    };
    let feeds_only = if source == CellSource::Table {
        ""
    } else {
        "AND kind >= 100"
    };
    let select = format!(
        "SELECT account_id, kind, day, total, events, last_value, last_at FROM signal_days \
         WHERE day >= {from} AND day <= {to} {feeds_only} {filter}"
    );
    let mut out: Vec<(Uuid, Cell)> = match conn {
        DatabaseConnection::SqlxPostgresPoolConnection(_) => copy_cells(conn, &select).await?,
        _ => raw(conn, select)
            .await?
            .iter()
            .map(cell)
            .collect::<Result<_, _>>()?,
    };
    if source == CellSource::Signals {
        // SQLite takes the bare `value` from the row holding MAX(occurred_at).
        let rows = raw(
            conn,
            format!(
                "SELECT account_id, kind, occurred_at / {DAY} AS d, CAST(SUM(value) AS BIGINT), \
                 CAST(COUNT(*) AS BIGINT), value, MAX(occurred_at) FROM signals \
                 WHERE occurred_at >= {} AND occurred_at < {} {filter} GROUP BY account_id, kind, d",
                from.saturating_mul(DAY),
                to.saturating_add(1).saturating_mul(DAY)
            ),
        )
        .await?;
        out.reserve(rows.len());
        for r in &rows {
            out.push(cell(r)?);
        }
    }
    Ok(out)
}

/// What the previous computation of an account said.
#[derive(Debug, Clone, PartialEq)]
pub struct PreviousHealth {
    /// Score.
    pub score: i32,
    /// Band number.
    pub band: i32,
    /// Risk.
    pub risk_bp: Option<i32>,
    /// The stored body (see [`HealthRow::body`]).
    pub body: Vec<u8>,
    /// The UTC day it was computed on.
    pub day: i64,
}

/// The stored health of the accounts in `scope`.
pub async fn previous_health<C: ConnectionTrait>(
    conn: &C,
    scope: Scope<'_>,
) -> Result<std::collections::HashMap<Uuid, PreviousHealth>, Error> {
    let Some(filter) = scope.where_() else {
        return Ok(Default::default());
    };
    raw(
        conn,
        format!("SELECT account_id, score, band, risk_bp, body, computed_at FROM health {filter}"),
    )
    .await?
    .iter()
    .map(|r| {
        Ok((
            uuid(&r.try_get_by_index::<String>(0)?)?,
            PreviousHealth {
                score: r.try_get_by_index(1)?,
                band: r.try_get_by_index(2)?,
                risk_bp: r.try_get_by_index(3)?,
                body: r.try_get_by_index(4)?,
                day: day_of(r.try_get_by_index(5)?),
            },
        ))
    })
    .collect()
}

/// The accounts in `scope` that have a snapshot on `day`.
pub async fn snapshotted<C: ConnectionTrait>(
    conn: &C,
    scope: Scope<'_>,
    day: i64,
) -> Result<std::collections::HashSet<Uuid>, Error> {
    let Some(filter) = scope.and() else {
        return Ok(Default::default());
    };
    raw(
        conn,
        format!("SELECT account_id FROM health_history WHERE day = {day} {filter}"),
    )
    .await?
    .iter()
    .map(|r| uuid(&r.try_get_by_index::<String>(0)?))
    .collect()
}

/// The latest snapshot score of each account in `scope` on or before `day`
/// (within a week before it).
pub async fn scores_at<C: ConnectionTrait>(
    conn: &C,
    scope: Scope<'_>,
    day: i64,
) -> Result<std::collections::HashMap<Uuid, i32>, Error> {
    let Some(filter) = scope.and() else {
        return Ok(Default::default());
    };
    let rows = raw(
        conn,
        format!(
            "SELECT account_id, day, score FROM health_history WHERE day <= {day} AND day > {} {filter} \
             ORDER BY account_id, day",
            day - 7
        ),
    )
    .await?;
    let mut out = std::collections::HashMap::new();
    for r in rows {
        // Ordered by day: the last one wins.
        out.insert(
            uuid(&r.try_get_by_index::<String>(0)?)?,
            r.try_get_by_index::<i32>(2)?,
        );
    }
    Ok(out)
}

/// A computed health row.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthRow {
    /// The health (deltas unset; they are read from history).
    pub health: pb::AccountHealth,
    /// The account.
    pub account_id: Uuid,
    /// `health` encoded without its compute time (the `computed_at` column
    /// holds it): two computations that agree store the same bytes.
    pub body: Vec<u8>,
}

impl HealthRow {
    /// The row of `health`.
    pub fn new(account_id: Uuid, mut health: pb::AccountHealth) -> Self {
        let computed = health.compute_time.take();
        let body = health.encode_to_vec();
        health.compute_time = computed;
        Self {
            health,
            account_id,
            body,
        }
    }
}

/// Writes health rows (insert or replace).
pub async fn save_health<C: ConnectionTrait>(
    conn: &C,
    rows: &[&HealthRow],
    now: i64,
) -> Result<(), Error> {
    if rows.is_empty() {
        return Ok(());
    }
    if is_postgres(conn) {
        // One array per column: a short statement PostgreSQL plans once,
        // however many rows (a risk of -1 stands for none).
        let h = |f: fn(&pb::AccountHealth) -> i32| -> sea_orm::Value {
            rows.iter()
                .map(|r| f(&r.health))
                .collect::<Vec<i32>>()
                .into()
        };
        let values: Vec<sea_orm::Value> = vec![
            rows.iter()
                .map(|r| r.account_id.to_string())
                .collect::<Vec<String>>()
                .into(),
            h(|h| h.segment),
            h(|h| h.score),
            h(|h| h.band),
            h(|h| h.churn_risk_bp.unwrap_or(-1)),
            h(|h| h.tier),
            h(|h| h.quadrant),
            rows.iter()
                .map(|r| r.health.mrr_minor_units)
                .collect::<Vec<i64>>()
                .into(),
            rows.iter()
                .map(|r| r.body.clone())
                .collect::<Vec<Vec<u8>>>()
                .into(),
            now.into(),
        ];
        conn.execute(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO health (account_id, segment, score, band, risk_bp, tier, quadrant, mrr, \
             body, computed_at) \
             SELECT a, s, sc, b, NULLIF(r, -1), t, q, m, bo, $10 FROM UNNEST($1::varchar[], \
             $2::int4[], $3::int4[], $4::int4[], $5::int4[], $6::int4[], $7::int4[], $8::int8[], \
             $9::bytea[]) AS u(a, s, sc, b, r, t, q, m, bo) \
             ON CONFLICT (account_id) DO UPDATE SET segment = EXCLUDED.segment, \
             score = EXCLUDED.score, band = EXCLUDED.band, risk_bp = EXCLUDED.risk_bp, \
             tier = EXCLUDED.tier, quadrant = EXCLUDED.quadrant, mrr = EXCLUDED.mrr, \
             body = EXCLUDED.body, computed_at = EXCLUDED.computed_at",
            values,
        ))
        .await?;
        return Ok(());
    }
    for chunk in rows.chunks(1000) {
        let mut insert = Query::insert();
        let cols = [
            Health::AccountId,
            Health::Segment,
            Health::Score,
            Health::Band,
            Health::RiskBp,
            Health::Tier,
            Health::Quadrant,
            Health::Mrr,
            Health::Body,
            Health::ComputedAt,
        ];
        insert.into_table(Health::Table).columns(cols).on_conflict(
            OnConflict::column(Health::AccountId)
                .update_columns(cols.into_iter().skip(1))
                .to_owned(),
        );
        for r in chunk {
            let h = &r.health;
            insert
                .values([
                    r.account_id.to_string().into(),
                    h.segment.into(),
                    h.score.into(),
                    h.band.into(),
                    h.churn_risk_bp.into(),
                    h.tier.into(),
                    h.quadrant.into(),
                    h.mrr_minor_units.into(),
                    r.body.clone().into(),
                    now.into(),
                ])
                .map_err(internal)?;
        }
        if !chunk.is_empty() {
            execute(conn, &insert).await?;
        }
    }
    Ok(())
}

/// One day's score of an account: a `health_history` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// The account.
    pub account_id: Uuid,
    /// UTC day number.
    pub day: i64,
    /// Score.
    pub score: i32,
    /// Band number.
    pub band: i32,
}

/// Writes snapshots (insert or replace).
pub async fn save_snapshots<C: ConnectionTrait>(conn: &C, rows: &[&Snapshot]) -> Result<(), Error> {
    if rows.is_empty() {
        return Ok(());
    }
    if is_postgres(conn) {
        // As in `save_health`: one array per column.
        let values: Vec<sea_orm::Value> = vec![
            rows.iter()
                .map(|r| r.account_id.to_string())
                .collect::<Vec<String>>()
                .into(),
            rows.iter().map(|r| r.day).collect::<Vec<i64>>().into(),
            rows.iter().map(|r| r.score).collect::<Vec<i32>>().into(),
            rows.iter().map(|r| r.band).collect::<Vec<i32>>().into(),
        ];
        conn.execute(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO health_history (account_id, day, score, band) \
             SELECT a, d, s, b FROM UNNEST($1::varchar[], $2::int8[], $3::int4[], $4::int4[]) \
             AS u(a, d, s, b) \
             ON CONFLICT (account_id, day) DO UPDATE SET score = EXCLUDED.score, \
             band = EXCLUDED.band",
            values,
        ))
        .await?;
        return Ok(());
    }
    for chunk in rows.chunks(2000) {
        let mut history = Query::insert();
        history
            .into_table(HealthHistory::Table)
            .columns([
                HealthHistory::AccountId,
                HealthHistory::Day,
                HealthHistory::Score,
                HealthHistory::Band,
            ])
            .on_conflict(
                OnConflict::columns([HealthHistory::AccountId, HealthHistory::Day])
                    .update_columns([HealthHistory::Score, HealthHistory::Band])
                    .to_owned(),
            );
        for r in chunk {
            history
                .values([
                    r.account_id.to_string().into(),
                    r.day.into(),
                    r.score.into(),
                    r.band.into(),
                ])
                .map_err(internal)?;
        }
        execute(conn, &history).await?;
    }
    Ok(())
}

/// Columns a stored health is read from, for [`health_body`].
const HEALTH_BODY: &str = "body, computed_at";

/// The health stored in a row selected with [`HEALTH_BODY`] first.
fn health_body(row: &QueryResult) -> Result<pb::AccountHealth, Error> {
    let bytes: Vec<u8> = row.try_get_by_index(0)?;
    let mut health = pb::AccountHealth::decode(bytes.as_slice())
        .map_err(|e| internal(format!("stored health: {e}")))?;
    if health.compute_time.is_none() {
        health.compute_time = Some(bowtie_runtime::validate::to_timestamp(
            row.try_get_by_index(1)?,
        ));
    }
    Ok(health)
}

/// The stored health of an account.
pub async fn get_health<C: ConnectionTrait>(
    conn: &C,
    id: Uuid,
) -> Result<Option<pb::AccountHealth>, Error> {
    raw(
        conn,
        format!("SELECT {HEALTH_BODY} FROM health WHERE account_id = '{id}'"),
    )
    .await?
    .first()
    .map(health_body)
    .transpose()
}

/// Filters of ListHealth / ListAtRisk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthFilter {
    /// Segment number.
    pub segment: Option<i32>,
    /// Band number.
    pub band: Option<i32>,
    /// Tier number.
    pub tier: Option<i32>,
    /// Lowest score.
    pub min_score: i32,
    /// Highest score.
    pub max_score: i32,
    /// At risk: red or risk at or above this.
    pub at_risk_bp: Option<i32>,
    /// Highest score first.
    pub descending: bool,
}

/// A page of health rows, keyset-paged on (score, account id).
pub async fn list_health<C: ConnectionTrait>(
    conn: &C,
    f: &HealthFilter,
    after: Option<(i32, Uuid)>,
    limit: u64,
) -> Result<Vec<pb::AccountHealth>, Error> {
    let mut wh = vec![format!(
        "score >= {} AND score <= {}",
        f.min_score, f.max_score
    )];
    if let Some(s) = f.segment {
        wh.push(format!("segment = {s}"));
    }
    if let Some(b) = f.band {
        wh.push(format!("band = {b}"));
    }
    if let Some(t) = f.tier {
        wh.push(format!("tier = {t}"));
    }
    if let Some(r) = f.at_risk_bp {
        wh.push(format!(
            "(band = {} OR risk_bp >= {r})",
            pb::Band::Red as i32
        ));
    }
    let (cmp, dir) = if f.descending {
        ("<", "DESC")
    } else {
        (">", "ASC")
    };
    if let Some((score, id)) = after {
        wh.push(format!(
            "(score {cmp} {score} OR (score = {score} AND account_id {cmp} '{id}'))"
        ));
    }
    let sql = format!(
        "SELECT {HEALTH_BODY} FROM health WHERE {} ORDER BY score {dir}, account_id {dir} LIMIT {limit}",
        wh.join(" AND ")
    );
    raw(conn, sql).await?.iter().map(health_body).collect()
}

/// Snapshots of an account from `from_day` on, oldest first: (day, score, band).
pub async fn history<C: ConnectionTrait>(
    conn: &C,
    id: Uuid,
    from_day: i64,
) -> Result<Vec<(i64, i32, i32)>, Error> {
    let mut days: Vec<(i64, i32, i32)> = raw(
        conn,
        format!(
            "SELECT day, score, band FROM health_history WHERE account_id = '{id}' AND day >= {from_day} ORDER BY day"
        ),
    )
    .await?
    .iter()
    .map(|r| {
        Ok((
            r.try_get_by_index(0)?,
            r.try_get_by_index(1)?,
            r.try_get_by_index(2)?,
        ))
    })
    .collect::<Result<_, Error>>()?;
    // The stored health is the last word on the day it was computed: that
    // day's snapshot keeps the day's first score until a later day's first
    // rescoring closes it.
    let latest = raw(
        conn,
        format!("SELECT computed_at, score, band FROM health WHERE account_id = '{id}'"),
    )
    .await?;
    if let Some(r) = latest.first() {
        let day = day_of(r.try_get_by_index(0)?);
        if day >= from_day {
            let last = (day, r.try_get_by_index(1)?, r.try_get_by_index(2)?);
            match days.binary_search_by_key(&day, |d| d.0) {
                Ok(i) => days[i] = last,
                Err(i) => days.insert(i, last),
            }
        }
    }
    Ok(days)
}

/// (mrr, tier, quadrant) of every scored account, optionally of one segment.
pub async fn value_rows<C: ConnectionTrait>(
    conn: &C,
    segment: Option<i32>,
) -> Result<Vec<(i64, i32, i32)>, Error> {
    let filter = segment.map_or(String::new(), |s| format!("WHERE segment = {s}"));
    raw(
        conn,
        format!("SELECT mrr, tier, quadrant FROM health {filter}"),
    )
    .await?
    .iter()
    .map(|r| {
        Ok((
            r.try_get_by_index(0)?,
            r.try_get_by_index(1)?,
            r.try_get_by_index(2)?,
        ))
    })
    .collect()
}

/// MRR of every account with a profile.
pub async fn all_mrr<C: ConnectionTrait>(conn: &C) -> Result<Vec<i64>, Error> {
    raw(conn, "SELECT mrr FROM profiles WHERE mrr > 0".into())
        .await?
        .iter()
        .map(|r| Ok(r.try_get_by_index(0)?))
        .collect()
}

/// The stored scorecards: segment number -> (card, version, updated_at).
pub async fn scorecards<C: ConnectionTrait>(
    conn: &C,
) -> Result<std::collections::HashMap<i32, (Scorecard, i64, i64)>, Error> {
    raw(
        conn,
        "SELECT segment, version, body, updated_at FROM scorecards".into(),
    )
    .await?
    .iter()
    .map(|r| {
        let body: String = r.try_get_by_index(2)?;
        let card: Scorecard =
            serde_json::from_str(&body).map_err(|e| internal(format!("stored scorecard: {e}")))?;
        Ok((
            r.try_get_by_index(0)?,
            (card, r.try_get_by_index(1)?, r.try_get_by_index(3)?),
        ))
    })
    .collect()
}

/// Stored versions of a segment's scorecard below `before` (every one when
/// `None`), newest first: (card, version, updated_at).
pub async fn scorecard_versions<C: ConnectionTrait>(
    conn: &C,
    segment: i32,
    before: Option<i64>,
    limit: u64,
) -> Result<Vec<(Scorecard, i64, i64)>, Error> {
    let below = before.map_or(String::new(), |v| format!("AND version < {v}"));
    raw(
        conn,
        format!(
            "SELECT version, body, updated_at FROM scorecard_versions \
             WHERE segment = {segment} {below} ORDER BY version DESC LIMIT {limit}"
        ),
    )
    .await?
    .iter()
    .map(|r| {
        let body: String = r.try_get_by_index(1)?;
        let card: Scorecard =
            serde_json::from_str(&body).map_err(|e| internal(format!("stored scorecard: {e}")))?;
        Ok((card, r.try_get_by_index(0)?, r.try_get_by_index(2)?))
    })
    .collect()
}

/// Stores version `version` of a segment's scorecard (and keeps it in the
/// version history).
pub async fn save_scorecard<C: ConnectionTrait>(
    conn: &C,
    segment: i32,
    card: &Scorecard,
    version: i64,
    now: i64,
) -> Result<(), Error> {
    let body = serde_json::to_string(card).map_err(internal)?;
    let stmt = Query::insert()
        .into_table(Scorecards::Table)
        .columns([
            Scorecards::Segment,
            Scorecards::Version,
            Scorecards::Body,
            Scorecards::UpdatedAt,
        ])
        .values([
            segment.into(),
            version.into(),
            body.clone().into(),
            now.into(),
        ])
        .map_err(internal)?
        .on_conflict(
            OnConflict::column(Scorecards::Segment)
                .update_columns([Scorecards::Version, Scorecards::Body, Scorecards::UpdatedAt])
                .to_owned(),
        )
        .to_owned();
    execute(conn, &stmt).await?;
    let stmt = Query::insert()
        .into_table(ScorecardVersions::Table)
        .columns([
            ScorecardVersions::Segment,
            ScorecardVersions::Version,
            ScorecardVersions::Body,
            ScorecardVersions::UpdatedAt,
        ])
        .values([segment.into(), version.into(), body.into(), now.into()])
        .map_err(internal)?
        .to_owned();
    execute(conn, &stmt).await
}

/// Account ids with a profile in `segment`.
pub async fn ids_in_segment<C: ConnectionTrait>(
    conn: &C,
    segment: i32,
) -> Result<Vec<Uuid>, Error> {
    raw(
        conn,
        format!("SELECT account_id FROM profiles WHERE segment = {segment}"),
    )
    .await?
    .iter()
    .map(|r| uuid(&r.try_get_by_index::<String>(0)?))
    .collect()
}

/// Inserts alerts, skipping any whose account already has an unresolved
/// alert of its kind; returns the ids of those inserted.
pub async fn insert_alerts<C: ConnectionTrait>(
    conn: &C,
    alerts: &[&pb::Alert],
    now: i64,
) -> Result<std::collections::HashSet<String>, Error> {
    let mut inserted = std::collections::HashSet::new();
    // 12 values a row: within SQLite's 32,766 and PostgreSQL's 65,535 parameters.
    for chunk in alerts.chunks(1000) {
        let mut insert = Query::insert();
        insert
            .into_table(Alerts::Table)
            .columns([
                Alerts::Id,
                Alerts::AccountId,
                Alerts::Kind,
                Alerts::State,
                Alerts::Dedupe,
                Alerts::Message,
                Alerts::Score,
                Alerts::RiskBp,
                Alerts::Version,
                Alerts::Note,
                Alerts::CreatedAt,
                Alerts::UpdatedAt,
            ])
            .on_conflict(
                OnConflict::columns([Alerts::AccountId, Alerts::Kind, Alerts::Dedupe])
                    .do_nothing()
                    .to_owned(),
            )
            .returning_col(Alerts::Id);
        for a in chunk {
            insert
                .values([
                    a.id.clone().into(),
                    a.account_id.clone().into(),
                    a.kind.into(),
                    a.state.into(),
                    "open".into(),
                    a.message.clone().into(),
                    a.score.into(),
                    a.churn_risk_bp.into(),
                    a.version.into(),
                    a.note.clone().into(),
                    now.into(),
                    now.into(),
                ])
                .map_err(internal)?;
        }
        if chunk.is_empty() {
            continue;
        }
        for row in conn
            .query_all(StatementBuilder::build(
                &insert,
                &conn.get_database_backend(),
            ))
            .await?
        {
            inserted.insert(row.try_get_by_index::<String>(0)?);
        }
    }
    Ok(inserted)
}

const ALERT_SELECT: &str =
    "id, account_id, kind, state, message, score, risk_bp, version, note, created_at, updated_at";

fn alert_row(r: &QueryResult) -> Result<pb::Alert, Error> {
    Ok(pb::Alert {
        id: r.try_get_by_index(0)?,
        account_id: r.try_get_by_index(1)?,
        kind: r.try_get_by_index(2)?,
        state: r.try_get_by_index(3)?,
        message: r.try_get_by_index(4)?,
        score: r.try_get_by_index(5)?,
        churn_risk_bp: r.try_get_by_index(6)?,
        version: r.try_get_by_index(7)?,
        note: r.try_get_by_index(8)?,
        create_time: Some(bowtie_runtime::validate::to_timestamp(
            r.try_get_by_index(9)?,
        )),
        update_time: Some(bowtie_runtime::validate::to_timestamp(
            r.try_get_by_index(10)?,
        )),
    })
}

/// One alert.
pub async fn get_alert<C: ConnectionTrait>(conn: &C, id: Uuid) -> Result<Option<pb::Alert>, Error> {
    raw(
        conn,
        format!("SELECT {ALERT_SELECT} FROM alerts WHERE id = '{id}'"),
    )
    .await?
    .first()
    .map(alert_row)
    .transpose()
}

/// Alerts newest first (by UUIDv7 id), after the id `after`.
pub async fn list_alerts<C: ConnectionTrait>(
    conn: &C,
    state: Option<i32>,
    kind: Option<i32>,
    account: Option<Uuid>,
    after: Option<Uuid>,
    limit: u64,
) -> Result<Vec<pb::Alert>, Error> {
    let mut wh = vec!["1 = 1".to_owned()];
    if let Some(s) = state {
        wh.push(format!("state = {s}"));
    }
    if let Some(k) = kind {
        wh.push(format!("kind = {k}"));
    }
    if let Some(a) = account {
        wh.push(format!("account_id = '{a}'"));
    }
    if let Some(a) = after {
        wh.push(format!("id < '{a}'"));
    }
    raw(
        conn,
        format!(
            "SELECT {ALERT_SELECT} FROM alerts WHERE {} ORDER BY id DESC LIMIT {limit}",
            wh.join(" AND ")
        ),
    )
    .await?
    .iter()
    .map(alert_row)
    .collect()
}

/// Writes an alert's new state (resolution frees its dedupe slot).
pub async fn update_alert<C: ConnectionTrait>(
    conn: &C,
    a: &pb::Alert,
    now: i64,
) -> Result<(), Error> {
    let dedupe = if a.state == pb::AlertState::Resolved as i32 {
        a.id.clone()
    } else {
        "open".to_owned()
    };
    execute(
        conn,
        Query::update()
            .table(Alerts::Table)
            .values([
                (Alerts::State, a.state.into()),
                (Alerts::Dedupe, dedupe.into()),
                (Alerts::Version, a.version.into()),
                (Alerts::Note, a.note.clone().into()),
                (Alerts::UpdatedAt, now.into()),
            ])
            .and_where(Expr::col(Alerts::Id).eq(a.id.clone())),
    )
    .await
}

/// Stores a trained model.
pub async fn save_model<C: ConnectionTrait>(
    conn: &C,
    id: &str,
    trained_at: i64,
    body: &str,
) -> Result<(), Error> {
    execute(
        conn,
        Query::insert()
            .into_table(Models::Table)
            .columns([Models::Id, Models::TrainedAt, Models::Body])
            .values([id.into(), trained_at.into(), body.into()])
            .map_err(internal)?,
    )
    .await
}

/// The newest model's body.
pub async fn latest_model<C: ConnectionTrait>(conn: &C) -> Result<Option<String>, Error> {
    raw(
        conn,
        "SELECT body FROM models ORDER BY trained_at DESC, id DESC LIMIT 1".into(),
    )
    .await?
    .first()
    .map(|r| Ok(r.try_get_by_index::<String>(0)?))
    .transpose()
}

/// True on PostgreSQL.
pub fn is_postgres<C: ConnectionTrait>(conn: &C) -> bool {
    conn.get_database_backend() == DbBackend::Postgres
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(kind: i32, day: i32, total: i64, events: i64, last_value: i64) -> Cell {
        Cell {
            day,
            kind,
            total,
            events,
            last_value,
            last_at: i64::from(day) * DAY,
        }
    }

    /// Noon of day 1000: the last 30 days are 971..=1000, the 30 before
    /// 941..=970, the 180-day window starts at 821; PROBLEM looks back 30
    /// days (from 971), POTENTIAL 90 (from 911).
    fn windows() -> Windows {
        Windows {
            now: 1000 * DAY + DAY / 2,
            problem_days: 30,
            potential_days: 90,
        }
    }

    /// A `signal_days` row as PostgreSQL's binary COPY writes it.
    fn copied_row(id: Uuid, c: &Cell) -> Vec<u8> {
        let mut out = 7i16.to_be_bytes().to_vec();
        let text = id.to_string();
        out.extend((text.len() as i32).to_be_bytes());
        out.extend(text.as_bytes());
        out.extend(4i32.to_be_bytes());
        out.extend(c.kind.to_be_bytes());
        for v in [i64::from(c.day), c.total, c.events, c.last_value, c.last_at] {
            out.extend(8i32.to_be_bytes());
            out.extend(v.to_be_bytes());
        }
        out
    }

    /// A whole binary COPY: header (with `extension` bytes), rows, trailer.
    fn copied(rows: &[(Uuid, Cell)], extension: &[u8]) -> Vec<u8> {
        let mut out = COPY_SIGNATURE.to_vec();
        out.extend(0i32.to_be_bytes());
        out.extend((extension.len() as i32).to_be_bytes());
        out.extend(extension);
        for (id, c) in rows {
            out.extend(copied_row(*id, c));
        }
        out.extend((-1i16).to_be_bytes());
        out
    }

    fn decode(bytes: &[u8], chunk: usize) -> Result<Vec<(Uuid, Cell)>, String> {
        let mut decoder = CopyDecoder::default();
        let mut out = Vec::new();
        for piece in bytes.chunks(chunk) {
            decoder.feed(piece, &mut out).map_err(|e| e.to_string())?;
        }
        decoder.finish().map_err(|e| e.to_string())?;
        Ok(out)
    }

    #[test]
    fn a_binary_copy_decodes_into_the_same_cells_however_it_is_split() -> Result<(), String> {
        let rows = vec![
            (Uuid::from_u128(1), cell(1, 1000, 5, 5, 1)),
            (
                Uuid::from_u128(u128::MAX),
                cell(104, 971, -250, 2, i64::MIN),
            ),
            (Uuid::from_u128(7), cell(9, 0, i64::MAX, 0, 0)),
        ];
        let bytes = copied(&rows, b"ext");
        for chunk in [1, 2, 7, 19, 64, bytes.len()] {
            assert_eq!(decode(&bytes, chunk)?, rows, "chunks of {chunk} bytes");
        }
        Ok(())
    }

    #[test]
    fn a_binary_copy_without_rows_is_empty() -> Result<(), String> {
        assert_eq!(decode(&copied(&[], b""), 5)?, Vec::new());
        Ok(())
    }

    #[test]
    fn a_binary_copy_cut_short_or_of_another_shape_is_an_error() {
        let rows = [(Uuid::from_u128(3), cell(1, 10, 1, 1, 1))];
        let bytes = copied(&rows, b"");
        // No trailer, or half a row.
        assert!(decode(&bytes[..bytes.len() - 2], 4).is_err());
        assert!(decode(&bytes[..bytes.len() - 20], 4).is_err());
        // Not a binary COPY at all.
        assert!(decode(b"account_id,kind\n0000,1\n and more text", 8).is_err());
        // Six columns instead of seven.
        let mut six = bytes.clone();
        let at = COPY_SIGNATURE.len() + 8;
        six[at..at + 2].copy_from_slice(&6i16.to_be_bytes());
        assert!(decode(&six, 16).is_err());
        // A kind eight bytes wide.
        let mut wide = bytes;
        let kind_len = at + 2 + 4 + 36;
        wide[kind_len..kind_len + 4].copy_from_slice(&8i32.to_be_bytes());
        assert!(decode(&wide, 16).is_err());
    }

    #[test]
    fn folding_cells_sums_each_window_like_the_aggregate_query() -> Result<(), String> {
        let cells = [
            cell(1, 1000, 5, 5, 1),
            cell(3, 971, 2, 2, 1),      // first day of the recent window
            cell(1, 970, 4, 4, 1),      // last day of the prior window
            cell(1, 940, 9, 9, 1),      // before both, still within 180 days
            cell(1, 1001, 100, 100, 1), // tomorrow: ignored
            cell(2, 990, 12, 1, 12),
            cell(2, 995, 8, 1, 8),   // the latest active-user count
            cell(2, 960, 50, 1, 50), // older than 30 days
            cell(4, 980, 3, 3, 1),
            cell(4, 950, 1, 1, 1),
            cell(6, 900, 2, 2, 1),
            cell(7, 990, 3, 3, 1), // more resolved than filed: 2 - 3 -> 0 open
            cell(8, 999, 17, 2, 9),
            cell(9, 820, 5, 1, 5), // day 820 is outside the 180 days
            cell(10, 900, 1, 1, 1),
            cell(kinds::LATE_PAYMENT, 975, 1, 1, 1),
            cell(kinds::LATE_PAYMENT, 960, 1, 1, 1),
            cell(kinds::DOWNGRADE, 850, 1, 1, 1),
            cell(kinds::EXPANSION, 905, 1, 1, 1), // before the POTENTIAL window
        ];
        let a = fold(&cells, windows()).ok_or("no cell in the window")?;
        // usage: 5 + 2 recent, 4 prior; tickets: 3 recent, 1 prior.
        assert_eq!((a.inputs.usage_recent, a.inputs.usage_prior), (7, 4));
        assert_eq!(a.inputs.active_users, Some(8));
        assert_eq!((a.inputs.tickets_recent, a.inputs.tickets_prior), (3, 1));
        assert_eq!(a.inputs.complaints_open, 0);
        assert_eq!(a.inputs.nps, (17, 2));
        assert_eq!(a.inputs.csat, (0, 0));
        assert_eq!(a.inputs.stakeholders_left, 1);
        assert_eq!((a.inputs.late_payments, a.inputs.downgrades), (2, 1));
        assert!(a.late_recently);
        assert!(!a.expanded_recently);
        assert!(a.inputs.listening);
        assert_eq!(a.last_usage_day, Some(1000));
        assert_eq!(a.inputs.now, windows().now);
        Ok(())
    }

    #[test]
    fn folding_only_cells_outside_the_window_gives_nothing() {
        let cells = [cell(1, 820, 3, 3, 1), cell(1, 1001, 1, 1, 1)];
        assert_eq!(fold(&cells, windows()), None);
    }

    #[test]
    fn an_account_with_only_revenue_rows_is_not_listening() -> Result<(), String> {
        let cells = [cell(kinds::EXPANSION, 911, 1, 1, 1)];
        let a = fold(&cells, windows()).ok_or("no cell in the window")?;
        assert!(!a.inputs.listening);
        // Day 911 is the first day of the 90-day POTENTIAL window.
        assert!(a.expanded_recently);
        Ok(())
    }

    #[test]
    fn adding_a_later_delta_replaces_the_latest_value() {
        let mut c = cell(2, 990, 12, 1, 12);
        c.add(&DayDelta {
            account_id: Uuid::nil(),
            kind: 2,
            day: 990,
            total: 7,
            events: 1,
            last_value: 7,
            last_at: 990 * DAY + 5,
        });
        // 12 + 7 summed, 2 events, the later value 7 is the latest.
        assert_eq!((c.total, c.events, c.last_value), (19, 2, 7));
        c.add(&DayDelta {
            account_id: Uuid::nil(),
            kind: 2,
            day: 990,
            total: 30,
            events: 1,
            last_value: 30,
            last_at: 990 * DAY,
        });
        // An earlier value adds to the sum but is not the latest.
        assert_eq!((c.total, c.events, c.last_value), (49, 3, 7));
    }
}
