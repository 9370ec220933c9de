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
use sea_orm::sea_query::{
    Alias, Cond, Expr, IntoIden, OnConflict, Order, Query, SelectStatement, SimpleExpr,
};
use sea_orm::{ConnectionTrait, DbErr, QueryResult};
use sea_orm_migration::prelude::{
    DeriveIden, Index, MigrationName, MigrationTrait, SchemaManager, Table,
};
use sea_orm_migration::schema::{big_integer, big_integer_null, integer, integer_null, string};

use bowtie_runtime::error::Error;
use bowtie_runtime::sql::{corrupt, execute, internal, query, stored_uuid};
use bowtie_runtime::{AccountId, Instant};

use crate::domain::{Entry, Filters, JourneyRow, Profile, Transition, TransitionId};

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

/// Creates the index `name` on `columns` of `table`, unless it exists.
async fn create_index<T: IntoIden + Copy + 'static>(
    manager: &SchemaManager<'_>,
    name: &str,
    table: T,
    columns: &[T],
    unique: bool,
) -> Result<(), DbErr> {
    let mut index = Index::create();
    index.name(name).table(table).if_not_exists();
    for column in columns {
        index.col(*column);
    }
    if unique {
        index.unique();
    }
    manager.create_index(index.to_owned()).await
}

#[async_trait::async_trait]
impl MigrationTrait for CreateFunnelTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use Journeys as J;
        use StageEntries as E;
        use Transitions as T;
        manager
            .create_table(
                Table::create()
                    .table(T::Table)
                    .if_not_exists()
                    .col(string(T::Id).primary_key())
                    .col(string(T::AccountId))
                    .col(integer(T::Stage))
                    .col(big_integer(T::OccurredAt))
                    .col(big_integer(T::RecordedAt))
                    .col(string(T::Reason))
                    .col(string(T::Source))
                    .to_owned(),
            )
            .await?;
        let by_account = [T::AccountId, T::OccurredAt, T::Stage];
        create_index(manager, "transitions_account", T::Table, &by_account, true).await?;
        manager
            .create_table(
                Table::create()
                    .table(E::Table)
                    .if_not_exists()
                    .col(string(E::AccountId))
                    .col(integer(E::Position))
                    .col(integer(E::Attempt))
                    .col(integer(E::Stage))
                    .col(big_integer(E::EnteredAt))
                    .col(big_integer_null(E::ExitedAt))
                    .col(big_integer_null(E::NextAt))
                    .col(big_integer_null(E::CommitAt))
                    .col(integer_null(E::ExitStage))
                    .col(string(E::ExitReason))
                    .col(big_integer(E::AttemptStartedAt))
                    .col(integer(E::Segment))
                    .col(string(E::Owner))
                    .primary_key(Index::create().col(E::AccountId).col(E::Position))
                    .to_owned(),
            )
            .await?;
        for (name, columns) in [
            ("stage_entries_entered", &[E::EnteredAt][..]),
            ("stage_entries_attempt_started", &[E::AttemptStartedAt]),
            ("stage_entries_stage_entered", &[E::Stage, E::EnteredAt]),
        ] {
            create_index(manager, name, E::Table, columns, false).await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(J::Table)
                    .if_not_exists()
                    .col(string(J::AccountId).primary_key())
                    .col(integer(J::CurrentStage))
                    .col(big_integer(J::CurrentSince))
                    .col(integer(J::Attempts))
                    .col(integer(J::Segment))
                    .col(string(J::Owner))
                    .col(big_integer(J::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        let by_stage = [J::CurrentStage, J::CurrentSince, J::AccountId];
        create_index(manager, "journeys_stage", J::Table, &by_stage, false).await
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

bowtie_runtime::migrator!(CreateFunnelTables);

fn stage(raw: i32) -> Result<Stage, Error> {
    Stage::try_from(raw).map_err(|_| corrupt(format_args!("stored stage {raw} is unknown")))
}

fn account_id(raw: &str) -> Result<AccountId, Error> {
    stored_uuid(raw).map(AccountId)
}

fn micros(at: Option<Instant>) -> SimpleExpr {
    at.map(Instant::micros).into()
}

/// Inserts `rows` into `table` many at a time (a multi-row insert of
/// `chunk` rows each), each row rendered by `values` in `columns` order.
async fn insert_many<C, T, R, const N: usize>(
    conn: &C,
    table: T,
    columns: [T; N],
    rows: &[R],
    chunk: usize,
    values: impl Fn(&R) -> [SimpleExpr; N],
) -> Result<(), Error>
where
    C: ConnectionTrait,
    T: IntoIden + Copy + 'static,
{
    for rows in rows.chunks(chunk) {
        let mut insert = Query::insert();
        insert.into_table(table).columns(columns);
        for row in rows {
            insert.values(values(row)).map_err(internal)?;
        }
        execute(conn, &insert).await?;
    }
    Ok(())
}

/// Every column of `transitions`, in insert order.
const TRANSITION_COLUMNS: [Transitions; 7] = [
    Transitions::Id,
    Transitions::AccountId,
    Transitions::Stage,
    Transitions::OccurredAt,
    Transitions::RecordedAt,
    Transitions::Reason,
    Transitions::Source,
];

/// Stores new transitions (multi-row insert).
pub async fn insert_transitions<C: ConnectionTrait>(
    conn: &C,
    transitions: &[Transition],
) -> Result<(), Error> {
    insert_many(
        conn,
        Transitions::Table,
        TRANSITION_COLUMNS,
        transitions,
        500,
        |t| {
            [
                t.id.to_string().into(),
                t.account_id.to_string().into(),
                (t.stage as i32).into(),
                t.occurred_at.micros().into(),
                t.recorded_at.micros().into(),
                t.reason.clone().into(),
                t.source.clone().into(),
            ]
        },
    )
    .await
}

/// Serialises writers of one account's journey until the transaction ends
/// (PostgreSQL; SQLite has a single writer already), so two concurrent
/// transitions cannot each derive the journey without the other.
pub async fn lock_journey<C: ConnectionTrait>(
    conn: &C,
    account_id: AccountId,
) -> Result<(), Error> {
    bowtie_runtime::store::lock(conn, &format!("funnel.journey.{account_id}")).await
}

/// Deletes transitions by id.
pub async fn delete_transitions<C: ConnectionTrait>(
    conn: &C,
    ids: &[TransitionId],
) -> Result<(), Error> {
    if ids.is_empty() {
        return Ok(());
    }
    execute(
        conn,
        Query::delete()
            .from_table(Transitions::Table)
            .and_where(Expr::col(Transitions::Id).is_in(ids.iter().map(TransitionId::to_string))),
    )
    .await
}

/// A `transitions` row.
fn transition_row(row: &QueryResult) -> Result<Transition, Error> {
    Ok(Transition {
        id: TransitionId(stored_uuid(&row.try_get::<String>("", "id")?)?),
        account_id: account_id(&row.try_get::<String>("", "account_id")?)?,
        stage: stage(row.try_get("", "stage")?)?,
        occurred_at: Instant::from_micros(row.try_get("", "occurred_at")?),
        recorded_at: Instant::from_micros(row.try_get("", "recorded_at")?),
        reason: row.try_get("", "reason")?,
        source: row.try_get("", "source")?,
    })
}

/// An account's transitions (unsorted).
pub async fn load_transitions<C: ConnectionTrait>(
    conn: &C,
    account_id: AccountId,
) -> Result<Vec<Transition>, Error> {
    let stmt = Query::select()
        .columns(TRANSITION_COLUMNS)
        .from(Transitions::Table)
        .and_where(Expr::col(Transitions::AccountId).eq(account_id.to_string()))
        .to_owned();
    query(conn, &stmt)
        .await?
        .iter()
        .map(transition_row)
        .collect()
}

/// The transitions of each of `accounts` (unsorted), 500 accounts per query.
pub async fn transitions_of<C: ConnectionTrait>(
    conn: &C,
    accounts: &[AccountId],
) -> Result<std::collections::HashMap<AccountId, Vec<Transition>>, Error> {
    let mut out: std::collections::HashMap<AccountId, Vec<Transition>> =
        accounts.iter().map(|id| (*id, Vec::new())).collect();
    for chunk in accounts.chunks(500) {
        let stmt = Query::select()
            .columns(TRANSITION_COLUMNS)
            .from(Transitions::Table)
            .and_where(
                Expr::col(Transitions::AccountId).is_in(chunk.iter().map(AccountId::to_string)),
            )
            .to_owned();
        for row in query(conn, &stmt).await? {
            let t = transition_row(&row)?;
            out.entry(t.account_id).or_default().push(t);
        }
    }
    Ok(out)
}

/// At most `limit` transitions with an id after `after` (from the first
/// without), by id: a batch of the streaming export, one keyset query on
/// the primary key. Ids are UUIDv7, so this is the order of recording.
pub async fn transitions_after<C: ConnectionTrait>(
    conn: &C,
    after: Option<TransitionId>,
    limit: u64,
) -> Result<Vec<Transition>, Error> {
    let mut stmt = Query::select();
    stmt.columns(TRANSITION_COLUMNS)
        .from(Transitions::Table)
        .order_by(Transitions::Id, Order::Asc)
        .limit(limit);
    if let Some(after) = after {
        stmt.and_where(Expr::col(Transitions::Id).gt(after.to_string()));
    }
    query(conn, &stmt)
        .await?
        .iter()
        .map(transition_row)
        .collect()
}

/// Every column of `journeys`, in insert order.
const JOURNEY_COLUMNS: [Journeys; 7] = [
    Journeys::AccountId,
    Journeys::CurrentStage,
    Journeys::CurrentSince,
    Journeys::Attempts,
    Journeys::Segment,
    Journeys::Owner,
    Journeys::UpdatedAt,
];

/// A `journeys` row as inserted at `now`.
fn journey_values(r: &JourneyRow, now: Instant) -> [SimpleExpr; 7] {
    [
        r.account_id.to_string().into(),
        (r.current_stage as i32).into(),
        r.current_since.micros().into(),
        r.attempts.into(),
        (r.profile.segment as i32).into(),
        r.profile.owner.clone().into(),
        now.micros().into(),
    ]
}

/// Replaces an account's stage entries and journey row with `entries`.
pub async fn save_journey<C: ConnectionTrait>(
    conn: &C,
    account_id: AccountId,
    entries: &[Entry],
    profile: &Profile,
    now: Instant,
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
    let row = JourneyRow {
        account_id,
        current_stage: last.stage,
        current_since: last.entered_at,
        attempts: last.attempt,
        profile: profile.clone(),
    };
    let stmt = Query::insert()
        .into_table(Journeys::Table)
        .columns(JOURNEY_COLUMNS)
        .values(journey_values(&row, now))
        .map_err(internal)?
        .on_conflict(
            OnConflict::column(Journeys::AccountId)
                .update_columns(JOURNEY_COLUMNS[1..].iter().copied())
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
    accounts: &[(AccountId, &[Entry], &Profile)],
) -> Result<(), Error> {
    let rows: Vec<(String, &Entry, &Profile)> = accounts
        .iter()
        .flat_map(|(id, entries, profile)| {
            entries.iter().map(move |e| (id.to_string(), e, *profile))
        })
        .collect();
    insert_many(
        conn,
        StageEntries::Table,
        ENTRY_COLUMNS,
        &rows,
        400,
        |(id, e, profile)| {
            [
                id.clone().into(),
                e.position.into(),
                e.attempt.into(),
                (e.stage as i32).into(),
                e.entered_at.micros().into(),
                micros(e.exited_at),
                micros(e.next_at),
                micros(e.commit_at),
                e.exit.as_ref().map(|(s, _)| *s as i32).into(),
                e.exit
                    .as_ref()
                    .map(|(_, r)| r.clone())
                    .unwrap_or_default()
                    .into(),
                e.attempt_started_at.micros().into(),
                (profile.segment as i32).into(),
                profile.owner.clone().into(),
            ]
        },
    )
    .await
}

/// Inserts journey rows of accounts that have none yet (bulk import).
pub async fn insert_journeys<C: ConnectionTrait>(
    conn: &C,
    rows: &[JourneyRow],
    now: Instant,
) -> Result<(), Error> {
    insert_many(conn, Journeys::Table, JOURNEY_COLUMNS, rows, 500, |r| {
        journey_values(r, now)
    })
    .await
}

/// Replaces the stage entries and journey rows of several accounts, each
/// with at least one entry (multi-row: what `save_journey` does for one).
pub async fn replace_journeys<C: ConnectionTrait>(
    conn: &C,
    accounts: &[(AccountId, &[Entry], &Profile)],
    now: Instant,
) -> Result<(), Error> {
    for chunk in accounts.chunks(500) {
        execute(
            conn,
            Query::delete().from_table(StageEntries::Table).and_where(
                Expr::col(StageEntries::AccountId)
                    .is_in(chunk.iter().map(|(id, _, _)| id.to_string())),
            ),
        )
        .await?;
    }
    insert_entries(conn, accounts).await?;
    let rows: Vec<JourneyRow> = accounts
        .iter()
        .filter_map(|(account_id, entries, profile)| {
            entries.last().map(|last| JourneyRow {
                account_id: *account_id,
                current_stage: last.stage,
                current_since: last.entered_at,
                attempts: last.attempt,
                profile: (*profile).clone(),
            })
        })
        .collect();
    for chunk in rows.chunks(500) {
        let mut stmt = Query::insert();
        stmt.into_table(Journeys::Table)
            .columns(JOURNEY_COLUMNS)
            .on_conflict(
                OnConflict::column(Journeys::AccountId)
                    .update_columns(JOURNEY_COLUMNS[1..].iter().copied())
                    .to_owned(),
            );
        for row in chunk {
            stmt.values(journey_values(row, now)).map_err(internal)?;
        }
        execute(conn, &stmt).await?;
    }
    Ok(())
}

/// Whether any of `ids` already has a journey (bulk import must be new accounts).
pub async fn any_journey_exists<C: ConnectionTrait>(
    conn: &C,
    ids: &[AccountId],
) -> Result<bool, Error> {
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
        account_id: account_id(&row.try_get::<String>("", "account_id")?)?,
        current_stage: stage(row.try_get("", "current_stage")?)?,
        current_since: Instant::from_micros(row.try_get("", "current_since")?),
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
        .columns(JOURNEY_COLUMNS[..6].iter().copied())
        .from(Journeys::Table)
        .to_owned()
}

/// The journey row of an account, if it has any transition.
pub async fn get_journey<C: ConnectionTrait>(
    conn: &C,
    account_id: AccountId,
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

/// The condition `filters` put on a table's segment and owner columns.
fn filtered<C: IntoIden + Copy + 'static>(filters: &Filters, segment: C, owner: C) -> Cond {
    let mut cond = Cond::all();
    if let Some(s) = filters.segment {
        cond = cond.add(Expr::col(segment).eq(s as i32));
    }
    if let Some(o) = &filters.owner {
        cond = cond.add(Expr::col(owner).eq(o.clone()));
    }
    cond
}

/// Accounts currently in `stage`, ordered by (since, id), after the keyset
/// position `after` = (since, id).
pub async fn list_in_stage<C: ConnectionTrait>(
    conn: &C,
    stage: Stage,
    filters: &Filters,
    after: Option<(Instant, String)>,
    limit: u64,
) -> Result<Vec<JourneyRow>, Error> {
    let mut stmt = journey_select()
        .and_where(Expr::col(Journeys::CurrentStage).eq(stage as i32))
        .cond_where(filtered(filters, Journeys::Segment, Journeys::Owner))
        .order_by(Journeys::CurrentSince, Order::Asc)
        .order_by(Journeys::AccountId, Order::Asc)
        .limit(limit)
        .to_owned();
    if let Some((since, id)) = after {
        stmt.cond_where(
            Cond::any()
                .add(Expr::col(Journeys::CurrentSince).gt(since.micros()))
                .add(
                    Cond::all()
                        .add(Expr::col(Journeys::CurrentSince).eq(since.micros()))
                        .add(Expr::col(Journeys::AccountId).gt(id)),
                ),
        );
    }
    query(conn, &stmt).await?.iter().map(journey_row).collect()
}

/// Updates the segment and owner that filter an account's rows; returns
/// the journey row when the account has one and it changed.
pub async fn update_profile<C: ConnectionTrait>(
    conn: &C,
    account_id: AccountId,
    profile: &Profile,
) -> Result<Option<JourneyRow>, Error> {
    match get_journey(conn, account_id).await? {
        Some(row) if row.profile != *profile => {}
        _ => return Ok(None),
    }
    let id = account_id.to_string();
    for (table, segment, owner, key) in [
        (
            Journeys::Table.into_iden(),
            Journeys::Segment.into_iden(),
            Journeys::Owner.into_iden(),
            Journeys::AccountId.into_iden(),
        ),
        (
            StageEntries::Table.into_iden(),
            StageEntries::Segment.into_iden(),
            StageEntries::Owner.into_iden(),
            StageEntries::AccountId.into_iden(),
        ),
    ] {
        execute(
            conn,
            Query::update()
                .table(table)
                .values([
                    (segment, (profile.segment as i32).into()),
                    (owner, profile.owner.clone().into()),
                ])
                .and_where(Expr::col(key).eq(id.clone())),
        )
        .await?;
    }
    get_journey(conn, account_id).await
}
