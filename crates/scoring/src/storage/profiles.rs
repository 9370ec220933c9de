//! `profiles` and `subscriptions`: what the feeds say about each account
//! (segment, strategic, MRR, seats, renewal, onboarding, first value,
//! churn), read a key range at a time by a recomputation.

use bowtie_proto::common::Segment;
use bowtie_runtime::error::Error;
use bowtie_runtime::sql::{execute, internal, query};
use bowtie_runtime::{AccountId, Instant, Minor};
use sea_orm::sea_query::{Alias, Asterisk, Expr, Func, OnConflict, Order, Query, SelectStatement};
use sea_orm::{ConnectionTrait, EntityTrait, QueryOrder, QuerySelect, QueryTrait};

use super::entity::profile::{self, Column as P, Entity as Profiles};
use super::entity::subscription::{Column as Sub, Entity as Subscriptions};
use super::{Scope, stored_account};

/// What the feeds say about an account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    /// The account.
    pub account_id: AccountId,
    /// Segment.
    pub segment: Segment,
    /// Flagged strategic.
    pub strategic: bool,
    /// When the account was created.
    pub created_at: Option<Instant>,
    /// MRR (reporting currency minor units).
    pub mrr: Minor,
    /// Business time of the movement that set the MRR.
    pub mrr_at: Option<Instant>,
    /// First payment.
    pub first_paid_at: Option<Instant>,
    /// Last time all revenue was lost (cleared by a reactivation).
    pub churned_at: Option<Instant>,
    /// Onboarding start (COMMIT).
    pub onboarding_at: Option<Instant>,
    /// First value reached.
    pub first_value_at: Option<Instant>,
    /// Seats.
    pub seats: Option<i64>,
    /// Next renewal date.
    pub renewal_at: Option<Instant>,
    /// Longest billing term in months.
    pub contract_months: Option<i64>,
    /// The last positive MRR (kept after a churn, for the churn model).
    pub last_mrr: Minor,
}

impl TryFrom<profile::Model> for Profile {
    type Error = Error;

    fn try_from(m: profile::Model) -> Result<Self, Error> {
        let at = |t: Option<i64>| t.map(Instant::from_micros);
        Ok(Self {
            account_id: stored_account(&m.account_id)?,
            segment: Segment::try_from(m.segment).unwrap_or(Segment::Unspecified),
            strategic: m.strategic != 0,
            created_at: at(m.created_at),
            mrr: Minor(m.mrr),
            mrr_at: at(m.mrr_at),
            first_paid_at: at(m.first_paid_at),
            churned_at: at(m.churned_at),
            onboarding_at: at(m.onboarding_at),
            first_value_at: at(m.first_value_at),
            seats: m.seats,
            renewal_at: at(m.renewal_at),
            contract_months: m.contract_months,
            last_mrr: Minor(m.last_mrr),
        })
    }
}

/// Every column of `profiles` but `updated_at`, in [`save_profiles`]' order.
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

/// The profiles `find` picks, as domain rows.
async fn read_profiles<C: ConnectionTrait>(
    conn: &C,
    find: sea_orm::Select<Profiles>,
) -> Result<Vec<Profile>, Error> {
    find.all(conn)
        .await?
        .into_iter()
        .map(Profile::try_from)
        .collect()
}

/// Creates empty profiles for accounts that have none (known to exist).
pub async fn ensure_profiles<C: ConnectionTrait>(
    conn: &C,
    ids: &[AccountId],
    now: Instant,
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
                    now.micros().into(),
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
pub async fn lock_profile<C: ConnectionTrait>(conn: &C, id: AccountId) -> Result<(), Error> {
    bowtie_runtime::store::lock(conn, &format!("scoring.profile.{id}")).await
}

/// The profile of an account, if scoring knows it.
pub async fn get_profile<C: ConnectionTrait>(
    conn: &C,
    id: AccountId,
) -> Result<Option<Profile>, Error> {
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
    let mut find = Profiles::find();
    if !scope.restrict(QueryTrait::query(&mut find), P::AccountId) {
        return Ok(Vec::new());
    }
    read_profiles(conn, find).await
}

/// Up to `limit` profiles after `after` (from the first when `None`), in
/// id order: a key range of accounts to rescore.
pub async fn profiles_after<C: ConnectionTrait>(
    conn: &C,
    after: Option<AccountId>,
    limit: u64,
) -> Result<Vec<Profile>, Error> {
    let mut find = Profiles::find();
    if let Some(after) = after {
        QueryTrait::query(&mut find).and_where(Expr::col(P::AccountId).gt(after.to_string()));
    }
    read_profiles(conn, find.order_by(P::AccountId, Order::Asc).limit(limit)).await
}

/// Writes a whole profile (insert or replace).
pub async fn save_profile<C: ConnectionTrait>(
    conn: &C,
    p: &Profile,
    now: Instant,
) -> Result<(), Error> {
    save_profiles(conn, &[p], now).await
}

/// Writes whole profiles (insert or replace), many rows a statement.
pub async fn save_profiles<C: ConnectionTrait>(
    conn: &C,
    profiles: &[&Profile],
    now: Instant,
) -> Result<(), Error> {
    let at = |t: Option<Instant>| t.map(Instant::micros);
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
                    at(p.created_at).into(),
                    p.mrr.get().into(),
                    at(p.mrr_at).into(),
                    at(p.first_paid_at).into(),
                    at(p.churned_at).into(),
                    at(p.onboarding_at).into(),
                    at(p.first_value_at).into(),
                    p.seats.into(),
                    at(p.renewal_at).into(),
                    p.contract_months.into(),
                    p.last_mrr.get().into(),
                    now.micros().into(),
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
) -> Result<Vec<AccountId>, Error> {
    query(conn, select)
        .await?
        .iter()
        .map(|r| stored_account(&r.try_get_by_index::<String>(0)?))
        .collect()
}

/// Every account id with a profile (the accounts scoring knows to exist).
pub async fn known_ids<C: ConnectionTrait>(conn: &C) -> Result<Vec<AccountId>, Error> {
    profile_ids(conn, Query::select().column(P::AccountId).from(Profiles)).await
}

/// Account ids with a profile in `segment`.
pub async fn ids_in_segment<C: ConnectionTrait>(
    conn: &C,
    segment: Segment,
) -> Result<Vec<AccountId>, Error> {
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
pub async fn all_mrr<C: ConnectionTrait>(conn: &C) -> Result<Vec<Minor>, Error> {
    let select = Query::select()
        .column(P::Mrr)
        .from(Profiles)
        .and_where(Expr::col(P::Mrr).gt(0i64))
        .to_owned();
    query(conn, &select)
        .await?
        .iter()
        .map(|r| Ok(Minor(r.try_get_by_index(0)?)))
        .collect()
}

/// A subscription as the revenue feed last described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRow {
    /// Its id.
    pub id: String,
    /// The account.
    pub account_id: AccountId,
    /// Seats / units.
    pub quantity: i64,
    /// End of the current term.
    pub term_end: Option<Instant>,
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
) -> Result<(Option<i64>, Option<Instant>, Option<i64>), Error> {
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
            s.term_end.map(Instant::micros).into(),
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
    Ok((
        seats,
        renewal.map(Instant::from_micros),
        months.map(i64::from),
    ))
}
