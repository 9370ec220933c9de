//! `health` and `health_history`: each account's current score (its
//! components encoded in `body`) and one snapshot per account and day.

use std::collections::{HashMap, HashSet};

use bowtie_proto::common::Segment;
use bowtie_proto::scoring::{Band, Quadrant, Tier};
use bowtie_runtime::error::Error;
use bowtie_runtime::sql::{execute, internal, query, query_one};
use bowtie_runtime::{AccountId, Instant, Minor};
use sea_orm::sea_query::{Condition, Expr, OnConflict, Order, Query, SelectStatement};
use sea_orm::{ConnectionTrait, DbBackend, QueryResult};

use super::entity::health::{Column as H, Entity as Health};
use super::entity::health_history::{Column as HH, Entity as HealthHistory};
use super::{Scope, pg, stored_account, stored_enum};
use crate::domain::cells::day_of;

/// What the previous computation of an account said.
#[derive(Debug, Clone, PartialEq)]
pub struct PreviousHealth {
    /// Score.
    pub score: i32,
    /// Band.
    pub band: Band,
    /// Risk.
    pub risk_bp: Option<i32>,
    /// Value tier.
    pub tier: Tier,
    /// Value x loyalty quadrant.
    pub quadrant: Quadrant,
    /// The stored body (see [`HealthRow::body`]).
    pub body: Vec<u8>,
    /// The UTC day it was computed on.
    pub day: i64,
}

/// The stored health of the accounts in `scope`.
pub async fn previous_health<C: ConnectionTrait>(
    conn: &C,
    scope: Scope<'_>,
) -> Result<HashMap<AccountId, PreviousHealth>, Error> {
    let mut select = Query::select()
        .columns([
            H::AccountId,
            H::Score,
            H::Band,
            H::RiskBp,
            H::Body,
            H::ComputedAt,
            H::Tier,
            H::Quadrant,
        ])
        .from(Health)
        .to_owned();
    if !scope.restrict(&mut select, H::AccountId) {
        return Ok(HashMap::new());
    }
    query(conn, &select)
        .await?
        .iter()
        .map(|r| {
            Ok((
                stored_account(&r.try_get_by_index::<String>(0)?)?,
                PreviousHealth {
                    score: r.try_get_by_index(1)?,
                    band: stored_enum(r.try_get_by_index(2)?),
                    risk_bp: r.try_get_by_index(3)?,
                    tier: stored_enum(r.try_get_by_index(6)?),
                    quadrant: stored_enum(r.try_get_by_index(7)?),
                    body: r.try_get_by_index(4)?,
                    day: day_of(Instant::from_micros(r.try_get_by_index(5)?)),
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
) -> Result<HashSet<AccountId>, Error> {
    let mut select = Query::select()
        .column(HH::AccountId)
        .from(HealthHistory)
        .and_where(Expr::col(HH::Day).eq(day))
        .to_owned();
    if !scope.restrict(&mut select, HH::AccountId) {
        return Ok(HashSet::new());
    }
    query(conn, &select)
        .await?
        .iter()
        .map(|r| stored_account(&r.try_get_by_index::<String>(0)?))
        .collect()
}

/// The latest snapshot score of each account in `scope` on or before `day`
/// (within a week before it).
pub async fn scores_at<C: ConnectionTrait>(
    conn: &C,
    scope: Scope<'_>,
    day: i64,
) -> Result<HashMap<AccountId, i32>, Error> {
    let mut select = Query::select()
        .columns([HH::AccountId, HH::Day, HH::Score])
        .from(HealthHistory)
        .and_where(Expr::col(HH::Day).lte(day))
        .and_where(Expr::col(HH::Day).gt(day - 7))
        .to_owned();
    if !scope.restrict(&mut select, HH::AccountId) {
        return Ok(HashMap::new());
    }
    select
        .order_by(HH::AccountId, Order::Asc)
        .order_by(HH::Day, Order::Asc);
    let mut out = HashMap::new();
    for r in query(conn, &select).await? {
        // Ordered by day: the last one wins.
        out.insert(
            stored_account(&r.try_get_by_index::<String>(0)?)?,
            r.try_get_by_index::<i32>(2)?,
        );
    }
    Ok(out)
}

/// A computed health row: the columns reports filter on and the encoded
/// health (see `convert::account_health`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthRow {
    /// The account.
    pub account_id: AccountId,
    /// Its segment.
    pub segment: Segment,
    /// Score.
    pub score: i32,
    /// Its band.
    pub band: Band,
    /// Churn risk, when a model is trained.
    pub risk_bp: Option<i32>,
    /// Value tier.
    pub tier: Tier,
    /// Value x loyalty quadrant.
    pub quadrant: Quadrant,
    /// MRR (minor units).
    pub mrr: Minor,
    /// The health encoded without its compute time (the `computed_at`
    /// column holds it): two computations that agree store the same bytes.
    pub body: Vec<u8>,
}

/// Writes health rows (insert or replace).
pub async fn save_health<C: ConnectionTrait>(
    conn: &C,
    rows: &[&HealthRow],
    now: Instant,
) -> Result<(), Error> {
    if rows.is_empty() {
        return Ok(());
    }
    if conn.get_database_backend() == DbBackend::Postgres {
        return pg::save_health(conn, rows, now).await;
    }
    let cols = [
        H::AccountId,
        H::Segment,
        H::Score,
        H::Band,
        H::RiskBp,
        H::Tier,
        H::Quadrant,
        H::Mrr,
        H::Body,
        H::ComputedAt,
    ];
    for chunk in rows.chunks(1000) {
        let mut insert = Query::insert();
        insert.into_table(Health).columns(cols).on_conflict(
            OnConflict::column(H::AccountId)
                .update_columns(cols.into_iter().skip(1))
                .to_owned(),
        );
        for r in chunk {
            insert
                .values([
                    r.account_id.to_string().into(),
                    (r.segment as i32).into(),
                    r.score.into(),
                    (r.band as i32).into(),
                    r.risk_bp.into(),
                    (r.tier as i32).into(),
                    (r.quadrant as i32).into(),
                    r.mrr.get().into(),
                    r.body.clone().into(),
                    now.micros().into(),
                ])
                .map_err(internal)?;
        }
        execute(conn, &insert).await?;
    }
    Ok(())
}

/// One day's score of an account: a `health_history` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// The account.
    pub account_id: AccountId,
    /// UTC day number.
    pub day: i64,
    /// Score.
    pub score: i32,
    /// Its band.
    pub band: Band,
}

/// Writes snapshots (insert or replace).
pub async fn save_snapshots<C: ConnectionTrait>(conn: &C, rows: &[&Snapshot]) -> Result<(), Error> {
    if rows.is_empty() {
        return Ok(());
    }
    if conn.get_database_backend() == DbBackend::Postgres {
        return pg::save_snapshots(conn, rows).await;
    }
    for chunk in rows.chunks(2000) {
        let mut history = Query::insert();
        history
            .into_table(HealthHistory)
            .columns([HH::AccountId, HH::Day, HH::Score, HH::Band])
            .on_conflict(
                OnConflict::columns([HH::AccountId, HH::Day])
                    .update_columns([HH::Score, HH::Band])
                    .to_owned(),
            );
        for r in chunk {
            history
                .values([
                    r.account_id.to_string().into(),
                    r.day.into(),
                    r.score.into(),
                    (r.band as i32).into(),
                ])
                .map_err(internal)?;
        }
        execute(conn, &history).await?;
    }
    Ok(())
}

/// A stored health as it is answered: the encoded body and when it was
/// computed (decoded by `convert::stored_health`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredHealth {
    /// See [`HealthRow::body`].
    pub body: Vec<u8>,
    /// The compute time.
    pub computed_at: Instant,
}

/// A select of what a [`StoredHealth`] is read from.
fn select_stored() -> SelectStatement {
    Query::select()
        .columns([H::Body, H::ComputedAt])
        .from(Health)
        .to_owned()
}

fn stored_row(r: &QueryResult) -> Result<StoredHealth, Error> {
    Ok(StoredHealth {
        body: r.try_get_by_index(0)?,
        computed_at: Instant::from_micros(r.try_get_by_index(1)?),
    })
}

/// The stored health of an account.
pub async fn get_health<C: ConnectionTrait>(
    conn: &C,
    id: AccountId,
) -> Result<Option<StoredHealth>, Error> {
    let select = select_stored()
        .and_where(Expr::col(H::AccountId).eq(id.to_string()))
        .to_owned();
    query_one(conn, &select)
        .await?
        .as_ref()
        .map(stored_row)
        .transpose()
}

/// Filters of ListHealth / ListAtRisk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthFilter {
    /// Only this segment.
    pub segment: Option<Segment>,
    /// Only this band.
    pub band: Option<Band>,
    /// Only this tier.
    pub tier: Option<Tier>,
    /// Lowest score.
    pub min_score: i32,
    /// Highest score.
    pub max_score: i32,
    /// At risk: red or risk at or above this.
    pub at_risk_bp: Option<i32>,
    /// Highest score first.
    pub descending: bool,
    /// Only the accounts whose CSM or owner is one of these people
    /// (`mine=true`: the caller's book), from `account_people`.
    pub book: Option<Vec<String>>,
}

/// A page of health rows, keyset-paged on (score, account id).
pub async fn list_health<C: ConnectionTrait>(
    conn: &C,
    f: &HealthFilter,
    after: Option<(i32, AccountId)>,
    limit: u64,
) -> Result<Vec<StoredHealth>, Error> {
    let mut select = select_stored();
    select
        .and_where(Expr::col(H::Score).gte(f.min_score))
        .and_where(Expr::col(H::Score).lte(f.max_score));
    if let Some(s) = f.segment {
        select.and_where(Expr::col(H::Segment).eq(s as i32));
    }
    if let Some(b) = f.band {
        select.and_where(Expr::col(H::Band).eq(b as i32));
    }
    if let Some(t) = f.tier {
        select.and_where(Expr::col(H::Tier).eq(t as i32));
    }
    if let Some(r) = f.at_risk_bp {
        select.cond_where(
            Condition::any()
                .add(Expr::col(H::Band).eq(Band::Red as i32))
                .add(Expr::col(H::RiskBp).gte(r)),
        );
    }
    if let Some(book) = &f.book {
        select.and_where(Expr::col(H::AccountId).in_subquery(super::accounts_of(book)));
    }
    if let Some((score, id)) = after {
        let id = id.to_string();
        let beyond = if f.descending {
            Condition::any().add(Expr::col(H::Score).lt(score)).add(
                Condition::all()
                    .add(Expr::col(H::Score).eq(score))
                    .add(Expr::col(H::AccountId).lt(id)),
            )
        } else {
            Condition::any().add(Expr::col(H::Score).gt(score)).add(
                Condition::all()
                    .add(Expr::col(H::Score).eq(score))
                    .add(Expr::col(H::AccountId).gt(id)),
            )
        };
        select.cond_where(beyond);
    }
    let order = if f.descending {
        Order::Desc
    } else {
        Order::Asc
    };
    select
        .order_by(H::Score, order.clone())
        .order_by(H::AccountId, order)
        .limit(limit);
    query(conn, &select).await?.iter().map(stored_row).collect()
}

/// One day's score of an account, as GetHealthHistory answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayScore {
    /// UTC day number.
    pub day: i64,
    /// Score.
    pub score: i32,
    /// Its band.
    pub band: Band,
}

/// Snapshots of an account from `from_day` on, oldest first.
pub async fn history<C: ConnectionTrait>(
    conn: &C,
    id: AccountId,
    from_day: i64,
) -> Result<Vec<DayScore>, Error> {
    let select = Query::select()
        .columns([HH::Day, HH::Score, HH::Band])
        .from(HealthHistory)
        .and_where(Expr::col(HH::AccountId).eq(id.to_string()))
        .and_where(Expr::col(HH::Day).gte(from_day))
        .order_by(HH::Day, Order::Asc)
        .to_owned();
    let mut days: Vec<DayScore> = query(conn, &select)
        .await?
        .iter()
        .map(|r| {
            Ok(DayScore {
                day: r.try_get_by_index(0)?,
                score: r.try_get_by_index(1)?,
                band: stored_enum(r.try_get_by_index(2)?),
            })
        })
        .collect::<Result<_, Error>>()?;
    // The stored health is the last word on the day it was computed: that
    // day's snapshot keeps the day's first score until a later day's first
    // rescoring closes it.
    let latest = Query::select()
        .columns([H::ComputedAt, H::Score, H::Band])
        .from(Health)
        .and_where(Expr::col(H::AccountId).eq(id.to_string()))
        .to_owned();
    if let Some(r) = query_one(conn, &latest).await? {
        let day = day_of(Instant::from_micros(r.try_get_by_index(0)?));
        if day >= from_day {
            let last = DayScore {
                day,
                score: r.try_get_by_index(1)?,
                band: stored_enum(r.try_get_by_index(2)?),
            };
            match days.binary_search_by_key(&day, |d| d.day) {
                Ok(i) => days[i] = last,
                Err(i) => days.insert(i, last),
            }
        }
    }
    Ok(days)
}

/// What value segments are computed from: one scored account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueRow {
    /// MRR (minor units).
    pub mrr: Minor,
    /// Value tier.
    pub tier: Tier,
    /// Value x loyalty quadrant.
    pub quadrant: Quadrant,
}

/// Every scored account's value row, optionally of one segment.
pub async fn value_rows<C: ConnectionTrait>(
    conn: &C,
    segment: Option<Segment>,
) -> Result<Vec<ValueRow>, Error> {
    let mut select = Query::select()
        .columns([H::Mrr, H::Tier, H::Quadrant])
        .from(Health)
        .to_owned();
    if let Some(s) = segment {
        select.and_where(Expr::col(H::Segment).eq(s as i32));
    }
    query(conn, &select)
        .await?
        .iter()
        .map(|r| {
            Ok(ValueRow {
                mrr: Minor(r.try_get_by_index(0)?),
                tier: stored_enum(r.try_get_by_index(1)?),
                quadrant: stored_enum(r.try_get_by_index(2)?),
            })
        })
        .collect()
}
