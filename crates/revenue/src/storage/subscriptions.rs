//! Subscriptions (each row holds the whole history as JSON) and the renewal
//! book read from their term ends.

use std::collections::{BTreeSet, HashMap};

use bowtie_runtime::error::Error;
use bowtie_runtime::sql::{corrupt, internal, query};
use sea_orm::sea_query::{Alias, Cond, Expr, Func, OnConflict, Order, Query, SimpleExpr};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

use super::entity::{paying_span, renewal_outcome, subscription};
use super::{CHUNK, insert_chunks, keys, stored_account, stored_segment};
use crate::domain::{
    AccountHistory, AccountId, Instant, RenewalOutcome, Subscription, SubscriptionId,
};

fn from_json(data: &str) -> Result<Subscription, Error> {
    serde_json::from_str(data).map_err(|_| corrupt("subscription"))
}

/// The subscription `id`, or NOT_FOUND.
pub async fn require_subscription<C: ConnectionTrait>(
    conn: &C,
    id: SubscriptionId,
) -> Result<Subscription, Error> {
    let data = subscription::Entity::find_by_id(id.to_string())
        .select_only()
        .column(subscription::Column::Data)
        .into_tuple::<String>()
        .one(conn)
        .await?
        .ok_or_else(|| Error::not_found("subscription", id.to_string()))?;
    from_json(&data)
}

/// At most `limit` subscriptions with an id after `after` (every one
/// without), by id: a page of the streaming export, read by the primary key.
pub async fn subscriptions_after<C: ConnectionTrait>(
    conn: &C,
    after: Option<SubscriptionId>,
    limit: u64,
) -> Result<Vec<Subscription>, Error> {
    let mut select = subscription::Entity::find()
        .select_only()
        .column(subscription::Column::Data);
    if let Some(after) = after {
        select = select.filter(subscription::Column::Id.gt(after.to_string()));
    }
    select
        .order_by_asc(subscription::Column::Id)
        .limit(limit)
        .into_tuple::<String>()
        .all(conn)
        .await?
        .iter()
        .map(|data| from_json(data))
        .collect()
}

/// Every subscription of the given accounts, grouped by account.
pub async fn subscriptions_of<C: ConnectionTrait>(
    conn: &C,
    accounts: &[AccountId],
) -> Result<HashMap<AccountId, Vec<Subscription>>, Error> {
    let mut out: HashMap<AccountId, Vec<Subscription>> = HashMap::new();
    for chunk in accounts.chunks(CHUNK) {
        let rows = subscription::Entity::find()
            .select_only()
            .column(subscription::Column::Data)
            .filter(subscription::Column::AccountId.is_in(keys(chunk)))
            .order_by_asc(subscription::Column::Id)
            .into_tuple::<String>()
            .all(conn)
            .await?;
        for data in rows {
            let s = from_json(&data)?;
            out.entry(s.account_id).or_default().push(s);
        }
    }
    Ok(out)
}

/// The account of each of the subscriptions `ids` that exists.
pub async fn accounts_of_subscriptions<C: ConnectionTrait>(
    conn: &C,
    ids: &[SubscriptionId],
) -> Result<HashMap<SubscriptionId, AccountId>, Error> {
    let mut out = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(CHUNK) {
        let rows = subscription::Entity::find()
            .select_only()
            .column(subscription::Column::Id)
            .column(subscription::Column::AccountId)
            .filter(subscription::Column::Id.is_in(chunk.iter().map(SubscriptionId::to_string)))
            .into_tuple::<(String, String)>()
            .all(conn)
            .await?;
        for (id, account) in rows {
            let id = SubscriptionId(bowtie_runtime::sql::stored_uuid(&id)?);
            out.insert(id, stored_account(&account)?);
        }
    }
    Ok(out)
}

/// Inserts or replaces subscriptions.
pub async fn save_subscriptions<C: ConnectionTrait>(
    conn: &C,
    subscriptions: &[&Subscription],
    now: Instant,
) -> Result<(), Error> {
    use subscription::Column as S;
    let mut rows = Vec::with_capacity(subscriptions.len());
    for s in subscriptions {
        let data = serde_json::to_string(s).map_err(internal)?;
        rows.push(vec![
            s.id.to_string().into(),
            s.account_id.to_string().into(),
            s.term_end.map(Instant::micros).into(),
            data.into(),
            s.version.into(),
            now.micros().into(),
        ]);
    }
    let insert = Query::insert()
        .into_table(subscription::Entity)
        .columns([
            S::Id,
            S::AccountId,
            S::RenewalAt,
            S::Data,
            S::Version,
            S::UpdatedAt,
        ])
        .on_conflict(
            OnConflict::column(S::Id)
                .update_columns([S::RenewalAt, S::Data, S::Version, S::UpdatedAt])
                .to_owned(),
        )
        .to_owned();
    insert_chunks(conn, &insert, rows).await
}

/// Every account with a subscription in `currency`, with its full history
/// and where it reports (taken from its paying spans; an account that never
/// paid has no movements for a rate to change).
pub async fn histories_in_currency<C: ConnectionTrait>(
    conn: &C,
    currency: &str,
) -> Result<Vec<AccountHistory>, Error> {
    // The JSON match only narrows the scan; the decoded currency decides.
    let mut ids = BTreeSet::new();
    let rows = subscription::Entity::find()
        .select_only()
        .column(subscription::Column::Data)
        .filter(subscription::Column::Data.like(["%", currency, "%"].concat()))
        .into_tuple::<String>()
        .all(conn)
        .await?;
    for data in rows {
        let s = from_json(&data)?;
        if s.currency == currency {
            ids.insert(s.account_id);
        }
    }
    let ids: Vec<AccountId> = ids.into_iter().collect();
    let mut subscriptions = subscriptions_of(conn, &ids).await?;
    let mut out = Vec::new();
    for chunk in ids.chunks(CHUNK) {
        use paying_span::Column as P;
        let stmt = Query::select()
            .column(P::AccountId)
            .expr_as(Func::min(Expr::col(P::Segment)), P::Segment)
            .expr_as(Func::min(Expr::col(P::Owner)), P::Owner)
            .expr_as(Func::min(Expr::col(P::Csm)), P::Csm)
            .from(paying_span::Entity)
            .and_where(Expr::col(P::AccountId).is_in(keys(chunk)))
            .group_by_col(P::AccountId)
            .to_owned();
        for row in query(conn, &stmt).await? {
            let account_id = stored_account(&row.try_get::<String>("", "account_id")?)?;
            out.push(AccountHistory {
                account_id,
                segment: stored_segment(row.try_get("", "segment")?)?,
                owner: row.try_get("", "owner")?,
                csm: row.try_get("", "csm")?,
                version: None,
                subscriptions: subscriptions.remove(&account_id).unwrap_or_default(),
            });
        }
    }
    // Locks are taken in account order, so concurrent re-valuations cannot deadlock.
    out.sort_by_key(|h| h.account_id);
    Ok(out)
}

/// Records (or replaces) the outcome of the renewal at `renewal_at`.
pub async fn save_renewal_outcome<C: ConnectionTrait>(
    conn: &C,
    subscription: SubscriptionId,
    renewal_at: Instant,
    outcome: RenewalOutcome,
    decided_at: Instant,
) -> Result<(), Error> {
    use renewal_outcome::Column as O;
    renewal_outcome::Entity::insert(renewal_outcome::ActiveModel {
        subscription_id: Set(subscription.to_string()),
        renewal_at: Set(renewal_at.micros()),
        outcome: Set(outcome as i32),
        decided_at: Set(decided_at.micros()),
    })
    .on_conflict(
        OnConflict::columns([O::SubscriptionId, O::RenewalAt])
            .update_columns([O::Outcome, O::DecidedAt])
            .to_owned(),
    )
    .exec_without_returning(conn)
    .await?;
    Ok(())
}

/// Subscriptions renewing in `[start, end)` with their recorded outcome
/// (unspecified when none), ordered by (renewal date, id) after the cursor.
pub async fn renewals<C: ConnectionTrait>(
    conn: &C,
    start: Instant,
    end: Instant,
    account: Option<AccountId>,
    after: Option<(Instant, String)>,
    limit: u64,
) -> Result<Vec<(Subscription, RenewalOutcome)>, Error> {
    use renewal_outcome::Column as O;
    use subscription::Column as S;
    let s = |c: S| Expr::col((subscription::Entity, c));
    let outcome: SimpleExpr = Func::coalesce([
        Expr::col((renewal_outcome::Entity, O::Outcome)).into(),
        Expr::val(0).into(),
    ])
    .into();
    let stmt = Query::select()
        .column((subscription::Entity, S::Data))
        .expr_as(outcome, Alias::new("outcome"))
        .from(subscription::Entity)
        .left_join(
            renewal_outcome::Entity,
            Cond::all()
                .add(
                    Expr::col((renewal_outcome::Entity, O::SubscriptionId))
                        .equals((subscription::Entity, S::Id)),
                )
                .add(
                    Expr::col((renewal_outcome::Entity, O::RenewalAt))
                        .equals((subscription::Entity, S::RenewalAt)),
                ),
        )
        .and_where(s(S::RenewalAt).gte(start.micros()))
        .and_where(s(S::RenewalAt).lt(end.micros()))
        .and_where_option(account.map(|a| s(S::AccountId).eq(a.to_string())))
        .and_where_option(after.map(|(at, id)| {
            let at = at.micros();
            s(S::RenewalAt)
                .gt(at)
                .or(s(S::RenewalAt).eq(at).and(s(S::Id).gt(id)))
        }))
        .order_by((subscription::Entity, S::RenewalAt), Order::Asc)
        .order_by((subscription::Entity, S::Id), Order::Asc)
        .limit(limit.min(10_000))
        .to_owned();
    query(conn, &stmt)
        .await?
        .iter()
        .map(|row| {
            let code: i32 = row.try_get("", "outcome")?;
            let outcome = RenewalOutcome::try_from(code)
                .map_err(|_| corrupt(format_args!("stored renewal outcome {code}")))?;
            Ok((from_json(&row.try_get::<String>("", "data")?)?, outcome))
        })
        .collect()
}
