//! `profiles` and `subscriptions`: what the feeds say about each account
//! (segment, strategic, MRR, seats, renewal, onboarding, first value,
//! churn), read a key range at a time by a recomputation.

use bowtie_proto::common::Segment;
use bowtie_runtime::error::Error;
use bowtie_runtime::sql::{execute, internal, query, stored_uuid};
use sea_orm::sea_query::{Alias, Asterisk, Expr, Func, OnConflict, Order, Query, SelectStatement};
use sea_orm::{ConnectionTrait, QueryResult};
use uuid::Uuid;

use super::Scope;
use super::entity::profile::{Column as P, Entity as Profiles};
use super::entity::subscription::{Column as Sub, Entity as Subscriptions};

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

/// The columns of a [`Profile`], in the order [`profile_row`] reads them.
const PROFILE_COLUMNS: [P; 14] = [
    P::AccountId,
    P::Segment,
    P::Strategic,
    P::CreatedAt,
    P::Mrr,
    P::MrrAt,
    P::FirstPaidAt,
    P::ChurnedAt,
    P::OnboardingAt,
    P::FirstValueAt,
    P::Seats,
    P::RenewalAt,
    P::ContractMonths,
    P::LastMrr,
];

/// A select of [`PROFILE_COLUMNS`].
fn select_profiles() -> SelectStatement {
    Query::select()
        .columns(PROFILE_COLUMNS)
        .from(Profiles)
        .to_owned()
}

/// A profile read by position (a recomputation reads 100,000 of them).
fn profile_row(row: &QueryResult) -> Result<Profile, Error> {
    Ok(Profile {
        account_id: stored_uuid(&row.try_get_by_index::<String>(0)?)?,
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
            .into_table(Profiles)
            .columns([
                P::AccountId,
                P::Segment,
                P::Strategic,
                P::Mrr,
                P::LastMrr,
                P::UpdatedAt,
            ])
            .on_conflict(OnConflict::column(P::AccountId).do_nothing().to_owned());
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
    let mut select = select_profiles();
    if !scope.restrict(&mut select, P::AccountId) {
        return Ok(Vec::new());
    }
    query(conn, &select)
        .await?
        .iter()
        .map(profile_row)
        .collect()
}

/// Up to `limit` profiles after `after` (from the first when `None`), in
/// id order: a key range of accounts to rescore.
pub async fn profiles_after<C: ConnectionTrait>(
    conn: &C,
    after: Option<Uuid>,
    limit: u64,
) -> Result<Vec<Profile>, Error> {
    let mut select = select_profiles();
    if let Some(after) = after {
        select.and_where(Expr::col(P::AccountId).gt(after.to_string()));
    }
    select.order_by(P::AccountId, Order::Asc).limit(limit);
    query(conn, &select)
        .await?
        .iter()
        .map(profile_row)
        .collect()
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
    cols.push(P::UpdatedAt);
    // 15 values a row: within SQLite's 32,766 and PostgreSQL's 65,535 parameters.
    for chunk in profiles.chunks(1000) {
        let mut insert = Query::insert();
        insert
            .into_table(Profiles)
            .columns(cols.clone())
            .on_conflict(
                OnConflict::column(P::AccountId)
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

/// Account ids of the profiles `select` (of `account_id`) picks.
async fn profile_ids<C: ConnectionTrait>(
    conn: &C,
    select: &SelectStatement,
) -> Result<Vec<Uuid>, Error> {
    query(conn, select)
        .await?
        .iter()
        .map(|r| stored_uuid(&r.try_get_by_index::<String>(0)?))
        .collect()
}

/// Every account id with a profile (the accounts scoring knows to exist).
pub async fn known_ids<C: ConnectionTrait>(conn: &C) -> Result<Vec<Uuid>, Error> {
    profile_ids(conn, Query::select().column(P::AccountId).from(Profiles)).await
}

/// Account ids with a profile in `segment`.
pub async fn ids_in_segment<C: ConnectionTrait>(
    conn: &C,
    segment: Segment,
) -> Result<Vec<Uuid>, Error> {
    profile_ids(
        conn,
        Query::select()
            .column(P::AccountId)
            .from(Profiles)
            .and_where(Expr::col(P::Segment).eq(segment as i32)),
    )
    .await
}

/// MRR of every account with a profile.
pub async fn all_mrr<C: ConnectionTrait>(conn: &C) -> Result<Vec<i64>, Error> {
    let select = Query::select()
        .column(P::Mrr)
        .from(Profiles)
        .and_where(Expr::col(P::Mrr).gt(0i64))
        .to_owned();
    query(conn, &select)
        .await?
        .iter()
        .map(|r| Ok(r.try_get_by_index(0)?))
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
    let cols = [
        Sub::Id,
        Sub::AccountId,
        Sub::Quantity,
        Sub::TermEnd,
        Sub::IntervalMonths,
        Sub::Cancelled,
    ];
    let stmt = Query::insert()
        .into_table(Subscriptions)
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
            OnConflict::column(Sub::Id)
                .update_columns(cols.into_iter().skip(1))
                .to_owned(),
        )
        .to_owned();
    execute(conn, &stmt).await?;
    let live = Query::select()
        .expr(Func::cast_as(
            Expr::col(Sub::Quantity).sum(),
            Alias::new("BIGINT"),
        ))
        .expr(Expr::col(Sub::TermEnd).min())
        .expr(Expr::col(Sub::IntervalMonths).max())
        .expr(Expr::col(Asterisk).count())
        .from(Subscriptions)
        .and_where(Expr::col(Sub::AccountId).eq(s.account_id.to_string()))
        .and_where(Expr::col(Sub::Cancelled).eq(0i32))
        .to_owned();
    let rows = query(conn, &live).await?;
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
