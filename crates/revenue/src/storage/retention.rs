//! Retention from the paying spans: who paid what at two instants, and the
//! spans the cohort grid folds.

use sea_orm::sea_query::{Alias, Asterisk, Expr, Func, Order, Query, SelectStatement, SimpleExpr};
use std::collections::{BTreeMap, HashMap};

use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect};

use bowtie_runtime::error::Error;
use bowtie_runtime::sql::{corrupt, query};

use super::entity::paying_span;
use super::{CHUNK, CohortFilter, OPEN_END, keys, segment_code, stored_account};
use crate::domain::{
    AccountCuts, AccountId, BookPeople, Dimension, Instant, Minor, PayingSpan, Retention, Segment,
};

/// Retention between `t0` and `t1` from the paying spans.
pub async fn retention<C: ConnectionTrait>(
    conn: &C,
    t0: Instant,
    t1: Instant,
    filter: &CohortFilter,
) -> Result<Retention, Error> {
    let rows = retention_rows(conn, t0, t1, filter, None).await?;
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
    t0: Instant,
    t1: Instant,
    filter: &CohortFilter,
) -> Result<Vec<(String, Retention)>, Error> {
    retention_rows(conn, t0, t1, filter, Some(paying_span::Column::Owner)).await
}

/// Retention between `t0` and `t1` per customer success manager ("" for
/// accounts without one), the largest starting MRR first.
pub async fn retention_by_csm<C: ConnectionTrait>(
    conn: &C,
    t0: Instant,
    t1: Instant,
    filter: &CohortFilter,
) -> Result<Vec<(String, Retention)>, Error> {
    retention_rows(conn, t0, t1, filter, Some(paying_span::Column::Csm)).await
}

/// Each account's MRR at `t0` (`m0`) and at `t1` (`m1`), with its owner
/// and CSM:
/// one pass over the spans that overlap `[t0, t1]`, grouped by account (the
/// table is clustered by account), rather than a join of two point-in-time
/// lookups.
fn per_account(t0: Instant, t1: Instant) -> SelectStatement {
    use paying_span::Column as P;
    let (t0, t1) = (t0.micros(), t1.micros());
    let contains = |t: i64| {
        Expr::col(P::ValidFrom)
            .lte(t)
            .and(Expr::col(P::ValidTo).gt(t))
    };
    let mrr_at = |t: i64| -> SimpleExpr {
        Expr::case(contains(t), Expr::col(P::Mrr))
            .finally(0i64)
            .into()
    };
    // A value of the span paying at t0 (spans are split where a value
    // changes, so an account's values at t0 are those of one span).
    let at_t0 = |c: P| -> SimpleExpr {
        Func::max(Expr::case(contains(t0), Expr::col(c)).finally(Expr::cust("NULL"))).into()
    };
    Query::select()
        .column(P::AccountId)
        .expr_as(at_t0(P::Owner), P::Owner)
        .expr_as(at_t0(P::Csm), P::Csm)
        .expr_as(at_t0(P::Segment), P::Segment)
        .expr_as(at_t0(P::Plan), P::Plan)
        .expr_as(at_t0(P::Extras), P::Extras)
        .expr_as(Func::sum(mrr_at(t0)), Alias::new("m0"))
        .expr_as(Func::sum(mrr_at(t1)), Alias::new("m1"))
        .from(paying_span::Entity)
        .and_where(Expr::col(P::ValidFrom).lte(t1))
        .and_where(Expr::col(P::ValidTo).gt(t0))
        .group_by_col(P::AccountId)
        .to_owned()
}

/// The accounts of `per_account`'s rows that `filter` keeps, by their
/// values at t0.
fn keep(stmt: &mut SelectStatement, filter: &CohortFilter) {
    use paying_span::Column as P;
    stmt.and_where_option(
        filter
            .segment
            .map(|s| Expr::col(P::Segment).eq(segment_code(s))),
    )
    .and_where_option(filter.owner.clone().map(|o| Expr::col(P::Owner).eq(o)))
    .and_where_option(filter.csm.clone().map(|c| Expr::col(P::Csm).eq(c)));
}

/// Retention between `t0` and `t1` per value of `dimension` at t0 (only
/// `only`'s value when given), the largest starting MRR first (ties by
/// value). The "" value of an attribute is not listed (it is what the total
/// leaves); every other value is.
pub async fn retention_by_cut<C: ConnectionTrait>(
    conn: &C,
    t0: Instant,
    t1: Instant,
    filter: &CohortFilter,
    dimension: &Dimension,
    only: Option<&str>,
) -> Result<Vec<(String, Retention)>, Error> {
    use paying_span::Column as P;
    let column = match dimension {
        Dimension::Plan => Some(P::Plan),
        Dimension::Owner => Some(P::Owner),
        Dimension::Csm => Some(P::Csm),
        _ => None,
    };
    let mut rows = if let Some(column) = column {
        retention_rows(conn, t0, t1, filter, Some(column)).await?
    } else {
        retention_folded(conn, t0, t1, filter, dimension).await?
    };
    if let Some(only) = only {
        rows.retain(|(value, _)| value == only);
    }
    rows.sort_by(|(a, ra), (b, rb)| rb.mrr_start.cmp(&ra.mrr_start).then_with(|| a.cmp(b)));
    Ok(rows)
}

/// Retention per value of a dimension read from the span paying at t0 of
/// each account, folded here (segments, tags and attributes).
async fn retention_folded<C: ConnectionTrait>(
    conn: &C,
    t0: Instant,
    t1: Instant,
    filter: &CohortFilter,
    dimension: &Dimension,
) -> Result<Vec<(String, Retention)>, Error> {
    let (m0, m1) = (Alias::new("m0"), Alias::new("m1"));
    let mut stmt = Query::select()
        .columns([paying_span::Column::Segment, paying_span::Column::Extras])
        .expr_as(
            Func::cast_as(Expr::col(m0.clone()), Alias::new("BIGINT")),
            m0.clone(),
        )
        .expr_as(
            Func::cast_as(Expr::col(m1.clone()), Alias::new("BIGINT")),
            m1,
        )
        .from_subquery(per_account(t0, t1), Alias::new("x"))
        .and_where(Expr::col(m0).gt(0i64))
        .to_owned();
    keep(&mut stmt, filter);
    let mut pairs: BTreeMap<String, Vec<(Minor, Minor)>> = BTreeMap::new();
    for row in query(conn, &stmt).await? {
        let segment: Option<i32> = row.try_get("", "segment")?;
        let extras: Option<String> = row.try_get("", "extras")?;
        let (m0, m1): (i64, i64) = (row.try_get("", "m0")?, row.try_get("", "m1")?);
        let cuts = AccountCuts {
            segment: segment
                .map(super::stored_segment)
                .transpose()?
                .unwrap_or(Segment::Unspecified),
            ..AccountCuts::default()
        };
        // Spans written before the cuts have no tags or attributes.
        let cuts = match extras.as_deref() {
            Some(json) => cuts
                .with_extras(json)
                .ok_or_else(|| corrupt("paying span extras"))?,
            None => cuts,
        };
        for value in cuts.values_of(dimension) {
            if value.is_empty() && dimension.remainder_is_empty_value() {
                continue;
            }
            pairs.entry(value).or_default().push((Minor(m0), Minor(m1)));
        }
    }
    Ok(pairs
        .into_iter()
        .map(|(value, p)| (value, Retention::from_pairs(p)))
        .collect())
}

async fn retention_rows<C: ConnectionTrait>(
    conn: &C,
    t0: Instant,
    t1: Instant,
    filter: &CohortFilter,
    group: Option<paying_span::Column>,
) -> Result<Vec<(String, Retention)>, Error> {
    let (m0, m1) = (Alias::new("m0"), Alias::new("m1"));
    let person = Alias::new("person");
    let total = |e: SimpleExpr| -> SimpleExpr {
        Func::cast_as(
            Func::coalesce([Func::sum(e).into(), Expr::val(0i64).into()]),
            Alias::new("BIGINT"),
        )
        .into()
    };
    let positive =
        |c: Alias| -> SimpleExpr { Expr::case(Expr::col(c).gt(0i64), 1i64).finally(0i64).into() };
    let mut stmt = Query::select();
    match group {
        Some(column) => stmt.expr_as(Expr::col(column), person.clone()),
        None => stmt.expr_as(Expr::val(""), person.clone()),
    };
    stmt.expr_as(
        Func::cast_as(Func::count(Expr::col(Asterisk)), Alias::new("BIGINT")),
        Alias::new("accounts_start"),
    )
    .expr_as(total(positive(m1.clone())), Alias::new("accounts_retained"))
    .expr_as(total(Expr::col(m0.clone()).into()), Alias::new("mrr_start"))
    .expr_as(
        total(
            Expr::case(
                Expr::col(m1.clone()).lt(Expr::col(m0.clone())),
                Expr::col(m1.clone()),
            )
            .finally(Expr::col(m0.clone()))
            .into(),
        ),
        Alias::new("mrr_retained"),
    )
    .expr_as(total(Expr::col(m1.clone()).into()), Alias::new("mrr_end"))
    .from_subquery(per_account(t0, t1), Alias::new("x"))
    .and_where(Expr::col(m0.clone()).gt(0i64));
    keep(&mut stmt, filter);
    if let Some(column) = group {
        stmt.group_by_col(column)
            .order_by_expr(Func::sum(Expr::col(m0)).into(), Order::Desc)
            .order_by(column, Order::Asc);
    }
    query(conn, &stmt)
        .await?
        .iter()
        .map(|row| {
            Ok((
                row.try_get("", "person")?,
                Retention {
                    accounts_start: row.try_get("", "accounts_start")?,
                    accounts_retained: row.try_get("", "accounts_retained")?,
                    mrr_start: Minor(row.try_get("", "mrr_start")?),
                    mrr_retained: Minor(row.try_get("", "mrr_retained")?),
                    mrr_end: Minor(row.try_get("", "mrr_end")?),
                },
            ))
        })
        .collect()
}

/// The paying spans of the given accounts.
pub async fn spans_of<C: ConnectionTrait>(
    conn: &C,
    accounts: &[AccountId],
) -> Result<Vec<(AccountId, PayingSpan)>, Error> {
    let mut out = Vec::new();
    for chunk in accounts.chunks(CHUNK) {
        let rows = paying_span::Entity::find()
            .filter(paying_span::Column::AccountId.is_in(keys(chunk)))
            .all(conn)
            .await?;
        for row in rows {
            out.push((
                stored_account(&row.account_id)?,
                PayingSpan {
                    from: Instant::from_micros(row.valid_from),
                    to: (row.valid_to != OPEN_END).then_some(Instant::from_micros(row.valid_to)),
                    mrr: Minor(row.mrr),
                },
            ));
        }
    }
    Ok(out)
}

/// The owner and CSM of each of `accounts` that ever paid, as its latest
/// paying span records them.
pub async fn book_people<C: ConnectionTrait>(
    conn: &C,
    accounts: &[AccountId],
) -> Result<HashMap<AccountId, BookPeople>, Error> {
    use paying_span::Column as P;
    let mut latest: HashMap<AccountId, (i64, BookPeople)> = HashMap::new();
    for chunk in accounts.chunks(CHUNK) {
        let rows: Vec<(String, i64, String, String)> = paying_span::Entity::find()
            .select_only()
            .columns([P::AccountId, P::ValidFrom, P::Owner, P::Csm])
            .filter(P::AccountId.is_in(keys(chunk)))
            .into_tuple()
            .all(conn)
            .await?;
        for (account, from, owner, csm) in rows {
            let account = stored_account(&account)?;
            let newer = latest.get(&account).is_none_or(|(at, _)| from > *at);
            if newer {
                latest.insert(account, (from, BookPeople { owner, csm }));
            }
        }
    }
    Ok(latest.into_iter().map(|(a, (_, p))| (a, p)).collect())
}

/// The values of each account at its first payment (`firsts`: account and
/// instant), from the span that payment started; accounts whose spans
/// predate the cuts are left out.
pub async fn cuts_at<C: ConnectionTrait>(
    conn: &C,
    firsts: &[(AccountId, Instant)],
) -> Result<HashMap<AccountId, AccountCuts>, Error> {
    let at: HashMap<AccountId, Instant> = firsts.iter().copied().collect();
    let accounts: Vec<AccountId> = at.keys().copied().collect();
    let mut out = HashMap::new();
    for chunk in accounts.chunks(CHUNK) {
        for row in paying_span::Entity::find()
            .filter(paying_span::Column::AccountId.is_in(keys(chunk)))
            .all(conn)
            .await?
        {
            let account = stored_account(&row.account_id)?;
            if at.get(&account).map(|t| t.micros()) != Some(row.valid_from) {
                continue;
            }
            if let Some(span) = super::movements::stored_cut_span(&row)? {
                out.insert(account, span.cuts);
            }
        }
    }
    Ok(out)
}
