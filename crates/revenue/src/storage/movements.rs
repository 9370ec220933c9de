//! MRR movements: recomputing an account's movements and paying spans from
//! its history, keeping the monthly roll-ups current by deltas, and the
//! queries the waterfall, the movement list and the cohort grid read.

use std::collections::{BTreeMap, HashMap, HashSet};

use sea_orm::sea_query::{Alias, Expr, Func, OnConflict, Query, SimpleExpr};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use bowtie_runtime::error::Error;
use bowtie_runtime::sql::{corrupt, query};

use super::entity::{movement, paying_span, rollup};
use super::ledger::subscription_invoices;
use super::{
    CHUNK, MovementFilter, OPEN_END, insert_chunks, keys, segment_code, stored_account,
    stored_segment,
};
use crate::domain::{
    AccountHistory, AccountId, Cause, CauseRow, FxTable, Instant, Invoice, Minor, Month, Movement,
    MovementKind, Revision, RollupKey, Segment, StoredMovement, Subscription, Tally, add_to_rollup,
    lapses, month_of, month_start, movements, paying_spans,
};

fn from_model(m: &movement::Model) -> Result<Movement, Error> {
    Ok(Movement {
        at: Instant::from_micros(m.occurred_at),
        kind: MovementKind::from_code(m.kind).ok_or_else(|| corrupt("movement kind"))?,
        amount: Minor(m.amount),
        before: Minor(m.mrr_before),
        after: Minor(m.mrr_after),
        cause: (m.cause_kind != 0 || !m.cause_reason.is_empty())
            .then(|| Cause::from_stored(m.cause_kind, m.cause_reason.clone()))
            .or_else(|| {
                // Rows written before causes were stored.
                matches!(m.kind, 3 | 4).then(Cause::unspecified)
            }),
    })
}

/// Recomputes the movements of each account from its history (with the
/// lapses the past-due policy of `past_due_days` derives from its invoices),
/// replaces the stored movements and paying spans, and applies the
/// differences to the monthly roll-ups. Returns each account's revision, in
/// input order.
pub async fn recompute<C: ConnectionTrait>(
    conn: &C,
    accounts: &[AccountHistory],
    fx: &FxTable,
    past_due_days: i64,
) -> Result<Vec<Revision>, Error> {
    let ids: Vec<AccountId> = accounts.iter().map(|a| a.account_id).collect();
    let invoices = if past_due_days > 0 {
        subscription_invoices(conn, &ids).await?
    } else {
        HashMap::new()
    };
    let mut stored: HashMap<AccountId, Vec<(Movement, Segment)>> = HashMap::new();
    for chunk in ids.chunks(CHUNK) {
        let chunk = keys(chunk);
        let rows = movement::Entity::find()
            .filter(movement::Column::AccountId.is_in(chunk.clone()))
            .order_by_asc(movement::Column::OccurredAt)
            .all(conn)
            .await?;
        for row in rows {
            stored
                .entry(stored_account(&row.account_id)?)
                .or_default()
                .push((from_model(&row)?, stored_segment(row.segment)?));
        }
        movement::Entity::delete_many()
            .filter(movement::Column::AccountId.is_in(chunk.clone()))
            .exec(conn)
            .await?;
        paying_span::Entity::delete_many()
            .filter(paying_span::Column::AccountId.is_in(chunk))
            .exec(conn)
            .await?;
    }
    let mut deltas: BTreeMap<RollupKey, Tally> = BTreeMap::new();
    let mut movement_rows = Vec::new();
    let mut span_rows = Vec::new();
    let mut revisions = Vec::with_capacity(accounts.len());
    for account in accounts {
        let new = if invoices.is_empty() {
            movements(&account.subscriptions, fx)?
        } else {
            let lapsed: Vec<Subscription> = account
                .subscriptions
                .iter()
                .map(|s| {
                    let of: Vec<&Invoice> = invoices.get(&s.id).into_iter().flatten().collect();
                    Subscription {
                        lapses: lapses(&of, past_due_days),
                        ..s.clone()
                    }
                })
                .collect();
            movements(&lapsed, fx)?
        };
        let old = stored.remove(&account.account_id).unwrap_or_default();
        for (m, segment) in &old {
            add_to_rollup(&mut deltas, *segment, std::slice::from_ref(m), -1);
        }
        add_to_rollup(&mut deltas, account.segment, &new, 1);
        let old_set: HashSet<&Movement> = old.iter().map(|(m, _)| m).collect();
        let new_set: HashSet<&Movement> = new.iter().collect();
        revisions.push(Revision {
            recorded: new
                .iter()
                .filter(|m| !old_set.contains(m))
                .cloned()
                .collect(),
            retracted: old
                .iter()
                .map(|(m, _)| m)
                .filter(|m| !new_set.contains(m))
                .cloned()
                .collect(),
        });
        let id = account.account_id.to_string();
        let segment = segment_code(account.segment);
        for m in &new {
            movement_rows.push(vec![
                id.clone().into(),
                m.at.micros().into(),
                m.kind.code().into(),
                m.amount.get().into(),
                m.before.get().into(),
                m.after.get().into(),
                segment.into(),
                m.cause.as_ref().map_or(0, Cause::kind_code).into(),
                m.cause
                    .as_ref()
                    .map_or_else(String::new, |c| c.reason.clone())
                    .into(),
            ]);
        }
        for s in paying_spans(&new) {
            span_rows.push(vec![
                id.clone().into(),
                s.from.micros().into(),
                s.to.map_or(OPEN_END, Instant::micros).into(),
                s.mrr.get().into(),
                segment.into(),
                account.owner.clone().into(),
                account.csm.clone().into(),
            ]);
        }
    }
    {
        use movement::Column as M;
        let insert = Query::insert()
            .into_table(movement::Entity)
            .columns([
                M::AccountId,
                M::OccurredAt,
                M::Kind,
                M::Amount,
                M::MrrBefore,
                M::MrrAfter,
                M::Segment,
                M::CauseKind,
                M::CauseReason,
            ])
            .to_owned();
        insert_chunks(conn, &insert, movement_rows).await?;
    }
    {
        use paying_span::Column as P;
        let insert = Query::insert()
            .into_table(paying_span::Entity)
            .columns([
                P::AccountId,
                P::ValidFrom,
                P::ValidTo,
                P::Mrr,
                P::Segment,
                P::Owner,
                P::Csm,
            ])
            .to_owned();
        insert_chunks(conn, &insert, span_rows).await?;
    }
    apply_deltas(conn, deltas).await?;
    Ok(revisions)
}

/// Adds the non-zero `deltas` to the roll-ups (`amount = amount + delta`),
/// creating the rows that do not exist yet.
async fn apply_deltas<C: ConnectionTrait>(
    conn: &C,
    deltas: BTreeMap<RollupKey, Tally>,
) -> Result<(), Error> {
    use rollup::Column as R;
    let rows: Vec<Vec<SimpleExpr>> = deltas
        .into_iter()
        .filter(|(_, t)| *t != Tally::default())
        .map(|((month, segment, kind), t)| {
            vec![
                month.index().into(),
                segment_code(segment).into(),
                kind.code().into(),
                t.amount.get().into(),
                t.count.into(),
            ]
        })
        .collect();
    let plus_excluded =
        |c: R| Expr::col((rollup::Entity, c)).add(Expr::col((Alias::new("excluded"), c)));
    let insert = Query::insert()
        .into_table(rollup::Entity)
        .columns([R::Month, R::Segment, R::Kind, R::Amount, R::Movements])
        .on_conflict(
            OnConflict::columns([R::Month, R::Segment, R::Kind])
                .value(R::Amount, plus_excluded(R::Amount))
                .value(R::Movements, plus_excluded(R::Movements))
                .to_owned(),
        )
        .to_owned();
    insert_chunks(conn, &insert, rows).await
}

/// A sum cast back to `BIGINT` (PostgreSQL sums `BIGINT` into `NUMERIC`).
pub(super) fn sum_bigint(expr: impl Into<SimpleExpr>) -> SimpleExpr {
    Func::cast_as(Func::sum(expr.into()), Alias::new("BIGINT")).into()
}

/// Roll-up sums per (month, kind) up to `last`, optionally of one segment.
pub async fn rollups<C: ConnectionTrait>(
    conn: &C,
    last: Month,
    segment: Option<Segment>,
) -> Result<Vec<(Month, MovementKind, Tally)>, Error> {
    use rollup::Column as R;
    let stmt = Query::select()
        .column(R::Month)
        .column(R::Kind)
        .expr_as(sum_bigint(Expr::col(R::Amount)), R::Amount)
        .expr_as(sum_bigint(Expr::col(R::Movements)), R::Movements)
        .from(rollup::Entity)
        .and_where(Expr::col(R::Month).lte(last.index()))
        .and_where_option(segment.map(|s| Expr::col(R::Segment).eq(segment_code(s))))
        .group_by_col(R::Month)
        .group_by_col(R::Kind)
        .to_owned();
    query(conn, &stmt)
        .await?
        .iter()
        .map(|row| {
            let kind: i32 = row.try_get("", "kind")?;
            Ok((
                Month::from_index(row.try_get("", "month")?),
                MovementKind::from_code(kind).ok_or_else(|| corrupt("rollup kind"))?,
                Tally {
                    amount: Minor(row.try_get("", "amount")?),
                    count: row.try_get("", "movements")?,
                },
            ))
        })
        .collect()
}

/// Movements ordered by (time, account) after the cursor `(at, account)`.
pub async fn list_movements<C: ConnectionTrait>(
    conn: &C,
    filter: &MovementFilter,
    after: Option<(Instant, String)>,
    limit: u64,
) -> Result<Vec<StoredMovement>, Error> {
    use movement::Column as M;
    let mut select = movement::Entity::find()
        .filter(M::OccurredAt.gte(filter.start.micros()))
        .filter(M::OccurredAt.lt(filter.end.micros()));
    if let Some(account) = filter.account {
        select = select.filter(M::AccountId.eq(account.to_string()));
    }
    if let Some(kind) = filter.kind {
        select = select.filter(M::Kind.eq(kind.code()));
    }
    if let Some((at, account)) = after {
        let at = at.micros();
        select = select.filter(
            M::OccurredAt
                .gt(at)
                .or(M::OccurredAt.eq(at).and(M::AccountId.gt(account))),
        );
    }
    select
        .order_by_asc(M::OccurredAt)
        .order_by_asc(M::AccountId)
        .limit(limit.min(10_000))
        .all(conn)
        .await?
        .iter()
        .map(|row| {
            Ok(StoredMovement {
                account_id: stored_account(&row.account_id)?,
                movement: from_model(row)?,
                segment: stored_segment(row.segment)?,
            })
        })
        .collect()
}

/// The first payment (NEW movement) of every account in `[start, end)`,
/// optionally of one segment.
pub async fn first_payments<C: ConnectionTrait>(
    conn: &C,
    start: Instant,
    end: Instant,
    segment: Option<Segment>,
) -> Result<Vec<(AccountId, Instant)>, Error> {
    use movement::Column as M;
    let mut select = movement::Entity::find()
        .select_only()
        .column(M::AccountId)
        .column(M::OccurredAt)
        .filter(M::Kind.eq(MovementKind::New.code()))
        .filter(M::OccurredAt.gte(start.micros()))
        .filter(M::OccurredAt.lt(end.micros()));
    if let Some(segment) = segment {
        select = select.filter(M::Segment.eq(segment_code(segment)));
    }
    select
        .into_tuple::<(String, i64)>()
        .all(conn)
        .await?
        .into_iter()
        .map(|(account, at)| Ok((stored_account(&account)?, Instant::from_micros(at))))
        .collect()
}

/// The CHURN and CONTRACTION movements of months `first..=last`, optionally
/// of one segment (the one the movement was derived in, as the roll-ups),
/// summed per month, kind and cause. Reads only those movements (by the
/// kind and time index), never a subscription's history.
pub async fn loss_causes<C: ConnectionTrait>(
    conn: &C,
    first: Month,
    last: Month,
    segment: Option<Segment>,
) -> Result<Vec<CauseRow>, Error> {
    use movement::Column as M;
    let mut select = movement::Entity::find()
        .select_only()
        .column(M::OccurredAt)
        .column(M::Kind)
        .column(M::CauseKind)
        .column(M::CauseReason)
        .column(M::Amount)
        .filter(M::Kind.is_in([MovementKind::Churn.code(), MovementKind::Contraction.code()]))
        .filter(M::OccurredAt.gte(month_start(first).micros()))
        .filter(M::OccurredAt.lt(month_start(last + 1).micros()));
    if let Some(segment) = segment {
        select = select.filter(M::Segment.eq(segment_code(segment)));
    }
    let mut sums: BTreeMap<(Month, MovementKind, Cause), Tally> = BTreeMap::new();
    for (at, kind, cause_kind, reason, amount) in select
        .into_tuple::<(i64, i32, i32, String, i64)>()
        .all(conn)
        .await?
    {
        let kind = MovementKind::from_code(kind).ok_or_else(|| corrupt("movement kind"))?;
        let t = sums
            .entry((
                month_of(Instant::from_micros(at)),
                kind,
                Cause::from_stored(cause_kind, reason),
            ))
            .or_default();
        t.amount += Minor(amount);
        t.count += 1;
    }
    Ok(sums
        .into_iter()
        .map(|((month, kind, cause), t)| (month, kind, cause, t))
        .collect())
}
