//! The funnel service's own tables and the queries on them.
//!
//! - `transitions`: every recorded transition (the source of truth).
//! - `stage_entries`: the journey split into stage entries, each knowing
//!   whether and when it converted, how it ended and when its attempt began.
//!   Derived from an account's transitions whenever they change, in the same
//!   transaction, so reports read prepared rows and never replay journeys.
//! - `journeys`: one row per account: current stage, since when, and the
//!   segment and owner the accounts service last reported (report filters).

use bowtie_proto::common::{Segment, Stage};
use sea_orm::sea_query::{Alias, Cond, Expr, OnConflict, Order, Query, SelectStatement};
use sea_orm::{ConnectionTrait, DbErr, QueryResult};
use sea_orm_migration::prelude::{
    ColumnDef, DeriveIden, Index, MigrationName, MigrationTrait, MigratorTrait, SchemaManager,
    Table,
};
use uuid::Uuid;

use bowtie_runtime::error::Error;
use bowtie_runtime::sql::{corrupt, execute, internal, query, stored_uuid as uuid};

use crate::domain::{Entry, Transition};

/// `transitions`
#[derive(DeriveIden, Clone, Copy)]
pub enum Transitions {
    /// The table.
    Table,
    /// UUIDv7.
    Id,
    /// The account.
    AccountId,
    /// Stage number.
    Stage,
    /// Business time (µs).
    OccurredAt,
    /// Recording time (µs).
    RecordedAt,
    /// Reason code.
    Reason,
    /// Origin.
    Source,
}

/// `stage_entries`
#[derive(DeriveIden, Clone, Copy)]
pub enum StageEntries {
    /// The table.
    Table,
    /// The account.
    AccountId,
    /// 0-based position in the journey.
    Position,
    /// 1-based attempt.
    Attempt,
    /// Stage number.
    Stage,
    /// Entry time.
    EnteredAt,
    /// Time the next entry began.
    ExitedAt,
    /// Time the attempt entered the next bowtie stage.
    NextAt,
    /// Time the attempt reached COMMIT (left-side entries).
    CommitAt,
    /// Outcome that immediately followed.
    ExitStage,
    /// Its reason.
    ExitReason,
    /// When the attempt began.
    AttemptStartedAt,
    /// Segment number (filter).
    Segment,
    /// Owner (filter).
    Owner,
}

/// `journeys`
#[derive(DeriveIden, Clone, Copy)]
pub enum Journeys {
    /// The table.
    Table,
    /// The account.
    AccountId,
    /// Current stage number.
    CurrentStage,
    /// Since when.
    CurrentSince,
    /// Attempts so far.
    Attempts,
    /// Segment number.
    Segment,
    /// Owner.
    Owner,
    /// Last change (µs).
    UpdatedAt,
}

struct CreateFunnelTables;

impl MigrationName for CreateFunnelTables {
    fn name(&self) -> &str {
        "m0200_funnel_tables"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateFunnelTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use StageEntries as E;
        use Transitions as T;
        manager
            .create_table(
                Table::create()
                    .table(T::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(T::Id).string().not_null().primary_key())
                    .col(ColumnDef::new(T::AccountId).string().not_null())
                    .col(ColumnDef::new(T::Stage).integer().not_null())
                    .col(ColumnDef::new(T::OccurredAt).big_integer().not_null())
                    .col(ColumnDef::new(T::RecordedAt).big_integer().not_null())
                    .col(ColumnDef::new(T::Reason).string().not_null())
                    .col(ColumnDef::new(T::Source).string().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("transitions_account")
                    .table(T::Table)
                    .col(T::AccountId)
                    .col(T::OccurredAt)
                    .col(T::Stage)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(E::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(E::AccountId).string().not_null())
                    .col(ColumnDef::new(E::Position).integer().not_null())
                    .col(ColumnDef::new(E::Attempt).integer().not_null())
                    .col(ColumnDef::new(E::Stage).integer().not_null())
                    .col(ColumnDef::new(E::EnteredAt).big_integer().not_null())
                    .col(ColumnDef::new(E::ExitedAt).big_integer().null())
                    .col(ColumnDef::new(E::NextAt).big_integer().null())
                    .col(ColumnDef::new(E::CommitAt).big_integer().null())
                    .col(ColumnDef::new(E::ExitStage).integer().null())
                    .col(ColumnDef::new(E::ExitReason).string().not_null())
                    .col(ColumnDef::new(E::AttemptStartedAt).big_integer().not_null())
                    .col(ColumnDef::new(E::Segment).integer().not_null())
                    .col(ColumnDef::new(E::Owner).string().not_null())
                    .primary_key(Index::create().col(E::AccountId).col(E::Position))
                    .to_owned(),
            )
            .await?;
        for (name, column) in [
            ("stage_entries_entered", E::EnteredAt),
            ("stage_entries_attempt_started", E::AttemptStartedAt),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(E::Table)
                        .col(column)
                        .if_not_exists()
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("stage_entries_stage_entered")
                    .table(E::Table)
                    .col(E::Stage)
                    .col(E::EnteredAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Journeys::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Journeys::AccountId)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Journeys::CurrentStage).integer().not_null())
                    .col(
                        ColumnDef::new(Journeys::CurrentSince)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Journeys::Attempts).integer().not_null())
                    .col(ColumnDef::new(Journeys::Segment).integer().not_null())
                    .col(ColumnDef::new(Journeys::Owner).string().not_null())
                    .col(ColumnDef::new(Journeys::UpdatedAt).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("journeys_stage")
                    .table(Journeys::Table)
                    .col(Journeys::CurrentStage)
                    .col(Journeys::CurrentSince)
                    .col(Journeys::AccountId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Alias::new("journeys"),
            Alias::new("stage_entries"),
            Alias::new("transitions"),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}

/// The funnel service's migrations: the runtime's tables, then its own.
#[derive(Debug)]
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        let mut migrations = bowtie_runtime::schema::runtime_migrations();
        migrations.push(Box::new(CreateFunnelTables));
        migrations
    }
}

fn stage(raw: i32) -> Result<Stage, Error> {
    Stage::try_from(raw).map_err(|_| corrupt(format_args!("stored stage {raw} is unknown")))
}

/// Stores new transitions (multi-row insert).
pub async fn insert_transitions<C: ConnectionTrait>(
    conn: &C,
    transitions: &[Transition],
) -> Result<(), Error> {
    use Transitions as T;
    for chunk in transitions.chunks(500) {
        let mut insert = Query::insert();
        insert.into_table(T::Table).columns([
            T::Id,
            T::AccountId,
            T::Stage,
            T::OccurredAt,
            T::RecordedAt,
            T::Reason,
            T::Source,
        ]);
        for t in chunk {
            insert
                .values([
                    t.id.to_string().into(),
                    t.account_id.to_string().into(),
                    (t.stage as i32).into(),
                    t.occurred_at.into(),
                    t.recorded_at.into(),
                    t.reason.clone().into(),
                    t.source.clone().into(),
                ])
                .map_err(internal)?;
        }
        execute(conn, &insert).await?;
    }
    Ok(())
}

/// Serialises writers of one account's journey until the transaction ends
/// (PostgreSQL; SQLite has a single writer already), so two concurrent
/// transitions cannot each derive the journey without the other.
pub async fn lock_journey<C: ConnectionTrait>(conn: &C, account_id: Uuid) -> Result<(), Error> {
    bowtie_runtime::store::lock(conn, &format!("funnel.journey.{account_id}")).await
}

/// Deletes transitions by id.
pub async fn delete_transitions<C: ConnectionTrait>(conn: &C, ids: &[Uuid]) -> Result<(), Error> {
    if ids.is_empty() {
        return Ok(());
    }
    execute(
        conn,
        Query::delete()
            .from_table(Transitions::Table)
            .and_where(Expr::col(Transitions::Id).is_in(ids.iter().map(Uuid::to_string))),
    )
    .await
}

/// An account's transitions (unsorted).
pub async fn load_transitions<C: ConnectionTrait>(
    conn: &C,
    account_id: Uuid,
) -> Result<Vec<Transition>, Error> {
    use Transitions as T;
    let stmt = Query::select()
        .columns([
            T::Id,
            T::AccountId,
            T::Stage,
            T::OccurredAt,
            T::RecordedAt,
            T::Reason,
            T::Source,
        ])
        .from(T::Table)
        .and_where(Expr::col(T::AccountId).eq(account_id.to_string()))
        .to_owned();
    query(conn, &stmt)
        .await?
        .iter()
        .map(|row| {
            Ok(Transition {
                id: uuid(&row.try_get::<String>("", "id")?)?,
                account_id,
                stage: stage(row.try_get("", "stage")?)?,
                occurred_at: row.try_get("", "occurred_at")?,
                recorded_at: row.try_get("", "recorded_at")?,
                reason: row.try_get("", "reason")?,
                source: row.try_get("", "source")?,
            })
        })
        .collect()
}

/// Who an account is, for the report filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// Its segment.
    pub segment: Segment,
    /// Its owner.
    pub owner: String,
}

/// The `journeys` row of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JourneyRow {
    /// The account.
    pub account_id: Uuid,
    /// Current stage.
    pub current_stage: Stage,
    /// Since when.
    pub current_since: i64,
    /// Attempts.
    pub attempts: i32,
    /// Segment and owner.
    pub profile: Profile,
}

/// Replaces an account's stage entries and journey row with `entries`.
pub async fn save_journey<C: ConnectionTrait>(
    conn: &C,
    account_id: Uuid,
    entries: &[Entry],
    profile: &Profile,
    now: i64,
) -> Result<(), Error> {
    use StageEntries as E;
    let id = account_id.to_string();
    execute(
        conn,
        Query::delete()
            .from_table(E::Table)
            .and_where(Expr::col(E::AccountId).eq(id.clone())),
    )
    .await?;
    insert_entries(conn, &[(account_id, entries, profile)]).await?;
    let Some(last) = entries.last() else {
        return execute(
            conn,
            Query::delete()
                .from_table(Journeys::Table)
                .and_where(Expr::col(Journeys::AccountId).eq(id)),
        )
        .await;
    };
    let stmt = Query::insert()
        .into_table(Journeys::Table)
        .columns([
            Journeys::AccountId,
            Journeys::CurrentStage,
            Journeys::CurrentSince,
            Journeys::Attempts,
            Journeys::Segment,
            Journeys::Owner,
            Journeys::UpdatedAt,
        ])
        .values([
            id.into(),
            (last.stage as i32).into(),
            last.entered_at.into(),
            last.attempt.into(),
            (profile.segment as i32).into(),
            profile.owner.clone().into(),
            now.into(),
        ])
        .map_err(internal)?
        .on_conflict(
            OnConflict::column(Journeys::AccountId)
                .update_columns([
                    Journeys::CurrentStage,
                    Journeys::CurrentSince,
                    Journeys::Attempts,
                    Journeys::Segment,
                    Journeys::Owner,
                    Journeys::UpdatedAt,
                ])
                .to_owned(),
        )
        .to_owned();
    execute(conn, &stmt).await
}

/// Every column of `stage_entries`, in insert order.
pub const ENTRY_COLUMNS: [StageEntries; 13] = [
    StageEntries::AccountId,
    StageEntries::Position,
    StageEntries::Attempt,
    StageEntries::Stage,
    StageEntries::EnteredAt,
    StageEntries::ExitedAt,
    StageEntries::NextAt,
    StageEntries::CommitAt,
    StageEntries::ExitStage,
    StageEntries::ExitReason,
    StageEntries::AttemptStartedAt,
    StageEntries::Segment,
    StageEntries::Owner,
];

/// Inserts the stage entries of several accounts (multi-row).
pub async fn insert_entries<C: ConnectionTrait>(
    conn: &C,
    accounts: &[(Uuid, &[Entry], &Profile)],
) -> Result<(), Error> {
    use StageEntries as E;
    let rows: Vec<(String, &Entry, &Profile)> = accounts
        .iter()
        .flat_map(|(id, entries, profile)| {
            entries.iter().map(move |e| (id.to_string(), e, *profile))
        })
        .collect();
    for chunk in rows.chunks(400) {
        let mut insert = Query::insert();
        insert.into_table(E::Table).columns(ENTRY_COLUMNS);
        for (id, e, profile) in chunk {
            insert
                .values([
                    id.clone().into(),
                    e.position.into(),
                    e.attempt.into(),
                    (e.stage as i32).into(),
                    e.entered_at.into(),
                    e.exited_at.into(),
                    e.next_at.into(),
                    e.commit_at.into(),
                    e.exit.as_ref().map(|(s, _)| *s as i32).into(),
                    e.exit
                        .as_ref()
                        .map(|(_, r)| r.clone())
                        .unwrap_or_default()
                        .into(),
                    e.attempt_started_at.into(),
                    (profile.segment as i32).into(),
                    profile.owner.clone().into(),
                ])
                .map_err(internal)?;
        }
        if !chunk.is_empty() {
            execute(conn, &insert).await?;
        }
    }
    Ok(())
}

/// Inserts journey rows of accounts that have none yet (bulk import).
pub async fn insert_journeys<C: ConnectionTrait>(
    conn: &C,
    rows: &[JourneyRow],
    now: i64,
) -> Result<(), Error> {
    for chunk in rows.chunks(500) {
        let mut insert = Query::insert();
        insert.into_table(Journeys::Table).columns([
            Journeys::AccountId,
            Journeys::CurrentStage,
            Journeys::CurrentSince,
            Journeys::Attempts,
            Journeys::Segment,
            Journeys::Owner,
            Journeys::UpdatedAt,
        ]);
        for r in chunk {
            insert
                .values([
                    r.account_id.to_string().into(),
                    (r.current_stage as i32).into(),
                    r.current_since.into(),
                    r.attempts.into(),
                    (r.profile.segment as i32).into(),
                    r.profile.owner.clone().into(),
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

/// Whether any of `ids` already has a journey (bulk import must be new accounts).
pub async fn any_journey_exists<C: ConnectionTrait>(conn: &C, ids: &[Uuid]) -> Result<bool, Error> {
    for chunk in ids.chunks(500) {
        let stmt = Query::select()
            .column(Journeys::AccountId)
            .from(Journeys::Table)
            .and_where(Expr::col(Journeys::AccountId).is_in(chunk.iter().map(|id| id.to_string())))
            .limit(1)
            .to_owned();
        if !query(conn, &stmt).await?.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

fn journey_row(row: &QueryResult) -> Result<JourneyRow, Error> {
    Ok(JourneyRow {
        account_id: uuid(&row.try_get::<String>("", "account_id")?)?,
        current_stage: stage(row.try_get("", "current_stage")?)?,
        current_since: row.try_get("", "current_since")?,
        attempts: row.try_get("", "attempts")?,
        profile: Profile {
            segment: Segment::try_from(row.try_get::<i32>("", "segment")?)
                .unwrap_or(Segment::Unspecified),
            owner: row.try_get("", "owner")?,
        },
    })
}

fn journey_select() -> SelectStatement {
    Query::select()
        .columns([
            Journeys::AccountId,
            Journeys::CurrentStage,
            Journeys::CurrentSince,
            Journeys::Attempts,
            Journeys::Segment,
            Journeys::Owner,
        ])
        .from(Journeys::Table)
        .to_owned()
}

/// The journey row of an account, if it has any transition.
pub async fn get_journey<C: ConnectionTrait>(
    conn: &C,
    account_id: Uuid,
) -> Result<Option<JourneyRow>, Error> {
    let stmt = journey_select()
        .and_where(Expr::col(Journeys::AccountId).eq(account_id.to_string()))
        .to_owned();
    query(conn, &stmt)
        .await?
        .first()
        .map(journey_row)
        .transpose()
}

/// Filters of the lists and reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    /// Only this segment.
    pub segment: Option<Segment>,
    /// Only this owner.
    pub owner: Option<String>,
}

impl Filters {
    fn condition<C: sea_orm::sea_query::IntoIden + Copy + 'static>(
        &self,
        segment: C,
        owner: C,
    ) -> Cond {
        let mut cond = Cond::all();
        if let Some(s) = self.segment {
            cond = cond.add(Expr::col(segment).eq(s as i32));
        }
        if let Some(o) = &self.owner {
            cond = cond.add(Expr::col(owner).eq(o.clone()));
        }
        cond
    }
}

/// Accounts currently in `stage`, ordered by (since, id), after the keyset
/// position `after` = (since, id).
pub async fn list_in_stage<C: ConnectionTrait>(
    conn: &C,
    stage: Stage,
    filters: &Filters,
    after: Option<(i64, String)>,
    limit: u64,
) -> Result<Vec<JourneyRow>, Error> {
    let mut stmt = journey_select()
        .and_where(Expr::col(Journeys::CurrentStage).eq(stage as i32))
        .cond_where(filters.condition(Journeys::Segment, Journeys::Owner))
        .order_by(Journeys::CurrentSince, Order::Asc)
        .order_by(Journeys::AccountId, Order::Asc)
        .limit(limit)
        .to_owned();
    if let Some((since, id)) = after {
        stmt.cond_where(
            Cond::any()
                .add(Expr::col(Journeys::CurrentSince).gt(since))
                .add(
                    Cond::all()
                        .add(Expr::col(Journeys::CurrentSince).eq(since))
                        .add(Expr::col(Journeys::AccountId).gt(id)),
                ),
        );
    }
    query(conn, &stmt).await?.iter().map(journey_row).collect()
}

/// Which entries a report selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// Entries made in the period.
    EnteredIn,
    /// Entries of attempts that started in the period.
    AttemptStartedIn,
}

/// Updates the segment and owner that filter an account's rows; returns
/// the journey row when the account has one and it changed.
pub async fn update_profile<C: ConnectionTrait>(
    conn: &C,
    account_id: Uuid,
    profile: &Profile,
) -> Result<Option<JourneyRow>, Error> {
    use StageEntries as E;
    match get_journey(conn, account_id).await? {
        Some(row) if row.profile != *profile => {}
        _ => return Ok(None),
    }
    let id = account_id.to_string();
    execute(
        conn,
        Query::update()
            .table(Journeys::Table)
            .values([
                (Journeys::Segment, (profile.segment as i32).into()),
                (Journeys::Owner, profile.owner.clone().into()),
            ])
            .and_where(Expr::col(Journeys::AccountId).eq(id.clone())),
    )
    .await?;
    execute(
        conn,
        Query::update()
            .table(E::Table)
            .values([
                (E::Segment, (profile.segment as i32).into()),
                (E::Owner, profile.owner.clone().into()),
            ])
            .and_where(Expr::col(E::AccountId).eq(id)),
    )
    .await?;
    get_journey(conn, account_id).await
}
