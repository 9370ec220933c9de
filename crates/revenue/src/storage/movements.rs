//! MRR movements: recomputing an account's movements and paying spans from
//! its history, keeping the monthly roll-ups current by deltas, and the
//! queries the waterfall, the movement list and the cohort grid read.

use std::collections::{BTreeMap, HashMap, HashSet};

use sea_orm::sea_query::{Alias, Expr, Func, OnConflict, Query, SimpleExpr};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use bowtie_runtime::error::Error;
use bowtie_runtime::sql::{corrupt, query};

use super::entity::{account_version, cut_rollup, movement, paying_span, rollup};
use super::ledger::subscription_invoices;
use super::{
    CHUNK, MovementFilter, OPEN_END, insert_chunks, keys, segment_code, stored_account,
    stored_segment,
};
use crate::domain::{
    AccountCuts, AccountHistory, AccountId, AccountVersion, Cause, CauseRow, CutKey, CutSpan,
    Dimension, FxTable, Instant, Invoice, Minor, Month, Movement, MovementKind, Revision,
    RollupKey, Segment, StoredMovement, Subscription, Tally, add_cut_contributions, add_to_rollup,
    cut_spans, lapses, month_of, month_start, movements,
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
    save_versions(conn, accounts).await?;
    let versions = versions_of(conn, &ids).await?;
    let mut stored: HashMap<AccountId, Vec<(Movement, Segment)>> = HashMap::new();
    // Each account's stored spans as cut spans; `None` when one of them
    // predates the cuts (it never entered the cut roll-up).
    let mut stored_spans: HashMap<AccountId, Option<Vec<CutSpan>>> = HashMap::new();
    for chunk in ids.chunks(CHUNK) {
        let chunk = keys(chunk);
        for row in paying_span::Entity::find()
            .filter(paying_span::Column::AccountId.is_in(chunk.clone()))
            .order_by_asc(paying_span::Column::ValidFrom)
            .all(conn)
            .await?
        {
            let account = stored_account(&row.account_id)?;
            let span = stored_cut_span(&row)?;
            let entry = stored_spans
                .entry(account)
                .or_insert_with(|| Some(Vec::new()));
            match (entry.as_mut(), span) {
                (Some(spans), Some(span)) => spans.push(span),
                _ => *entry = None,
            }
        }
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
    let mut cut_deltas: BTreeMap<CutKey, Tally> = BTreeMap::new();
    let mut movement_rows = Vec::new();
    let mut span_rows = Vec::new();
    let mut revisions = Vec::with_capacity(accounts.len());
    for account in accounts {
        let lapsed: Vec<Subscription>;
        let subscriptions = if invoices.is_empty() {
            &account.subscriptions
        } else {
            lapsed = account
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
            &lapsed
        };
        let new = movements(subscriptions, fx)?;
        // An account no version was recorded for reports as it is written.
        let fallback;
        let account_versions = match versions.get(&account.account_id) {
            Some(v) if !v.is_empty() => v,
            _ => {
                fallback = vec![AccountVersion {
                    version: 0,
                    effective_at: Instant::from_micros(0),
                    cuts: AccountCuts {
                        segment: account.segment,
                        owner: account.owner.clone(),
                        csm: account.csm.clone(),
                        ..AccountCuts::default()
                    },
                }];
                &fallback
            }
        };
        let new_spans = cut_spans(&new, subscriptions, account_versions, fx);
        let old = stored.remove(&account.account_id).unwrap_or_default();
        for (m, segment) in &old {
            add_to_rollup(&mut deltas, *segment, std::slice::from_ref(m), -1);
        }
        add_to_rollup(&mut deltas, account.segment, &new, 1);
        if let Some(Some(old_spans)) = stored_spans.remove(&account.account_id) {
            let old_movements: Vec<Movement> = old.iter().map(|(m, _)| m.clone()).collect();
            add_cut_contributions(&mut cut_deltas, &old_movements, &old_spans, -1);
        }
        add_cut_contributions(&mut cut_deltas, &new, &new_spans, 1);
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
        for s in new_spans {
            span_rows.push(vec![
                id.clone().into(),
                s.from.micros().into(),
                s.to.map_or(OPEN_END, Instant::micros).into(),
                s.mrr.get().into(),
                segment_code(s.cuts.segment).into(),
                s.cuts.owner.clone().into(),
                s.cuts.csm.clone().into(),
                s.cuts.plan.clone().into(),
                s.cuts.extras_json().into(),
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
                P::Plan,
                P::Extras,
            ])
            .to_owned();
        insert_chunks(conn, &insert, span_rows).await?;
    }
    apply_deltas(conn, deltas).await?;
    apply_cut_deltas(conn, cut_deltas).await?;
    Ok(revisions)
}

/// A stored span as a cut span; `None` for a span written before the cuts.
pub(super) fn stored_cut_span(row: &paying_span::Model) -> Result<Option<CutSpan>, Error> {
    let Some(extras) = row.extras.as_deref() else {
        return Ok(None);
    };
    let cuts = AccountCuts {
        segment: stored_segment(row.segment)?,
        plan: row.plan.clone(),
        owner: row.owner.clone(),
        csm: row.csm.clone(),
        ..AccountCuts::default()
    }
    .with_extras(extras)
    .ok_or_else(|| corrupt("paying span extras"))?;
    Ok(Some(CutSpan {
        from: Instant::from_micros(row.valid_from),
        to: (row.valid_to != OPEN_END).then_some(Instant::from_micros(row.valid_to)),
        mrr: Minor(row.mrr),
        cuts,
    }))
}

/// Records the version each account was written with (a version already
/// recorded is kept as it is).
async fn save_versions<C: ConnectionTrait>(
    conn: &C,
    accounts: &[AccountHistory],
) -> Result<(), Error> {
    use account_version::Column as V;
    let rows: Vec<Vec<SimpleExpr>> = accounts
        .iter()
        .filter_map(|a| Some((a, a.version.as_ref()?)))
        .map(|(a, v)| {
            vec![
                a.account_id.to_string().into(),
                v.version.into(),
                v.effective_at.micros().into(),
                segment_code(v.cuts.segment).into(),
                v.cuts.owner.clone().into(),
                v.cuts.csm.clone().into(),
                v.cuts.extras_json().into(),
            ]
        })
        .collect();
    let insert = Query::insert()
        .into_table(account_version::Entity)
        .columns([
            V::AccountId,
            V::Version,
            V::EffectiveAt,
            V::Segment,
            V::Owner,
            V::Csm,
            V::Extras,
        ])
        .on_conflict(
            OnConflict::columns([V::AccountId, V::Version])
                .do_nothing()
                .to_owned(),
        )
        .to_owned();
    insert_chunks(conn, &insert, rows).await
}

/// The recorded versions of each of `accounts`, in version order.
pub async fn versions_of<C: ConnectionTrait>(
    conn: &C,
    accounts: &[AccountId],
) -> Result<HashMap<AccountId, Vec<AccountVersion>>, Error> {
    use account_version::Column as V;
    let mut out: HashMap<AccountId, Vec<AccountVersion>> = HashMap::new();
    for chunk in accounts.chunks(CHUNK) {
        for row in account_version::Entity::find()
            .filter(V::AccountId.is_in(keys(chunk)))
            .order_by_asc(V::Version)
            .all(conn)
            .await?
        {
            let cuts = AccountCuts {
                segment: stored_segment(row.segment)?,
                owner: row.owner,
                csm: row.csm,
                ..AccountCuts::default()
            }
            .with_extras(&row.extras)
            .ok_or_else(|| corrupt("account version extras"))?;
            out.entry(stored_account(&row.account_id)?)
                .or_default()
                .push(AccountVersion {
                    version: row.version,
                    effective_at: Instant::from_micros(row.effective_at),
                    cuts,
                });
        }
    }
    Ok(out)
}

/// Adds the non-zero cut `deltas` to the cut roll-up.
async fn apply_cut_deltas<C: ConnectionTrait>(
    conn: &C,
    deltas: BTreeMap<CutKey, Tally>,
) -> Result<(), Error> {
    use cut_rollup::Column as R;
    let rows: Vec<Vec<SimpleExpr>> = deltas
        .into_iter()
        .filter(|(_, t)| *t != Tally::default())
        .map(|((dimension, value, month, kind), t)| {
            vec![
                dimension.into(),
                value.into(),
                month.index().into(),
                kind.into(),
                t.amount.get().into(),
                t.count.into(),
            ]
        })
        .collect();
    let plus_excluded =
        |c: R| Expr::col((cut_rollup::Entity, c)).add(Expr::col((Alias::new("excluded"), c)));
    let insert = Query::insert()
        .into_table(cut_rollup::Entity)
        .columns([
            R::Dimension,
            R::Value,
            R::Month,
            R::Kind,
            R::Amount,
            R::Movements,
        ])
        .on_conflict(
            OnConflict::columns([R::Dimension, R::Value, R::Month, R::Kind])
                .value(R::Amount, plus_excluded(R::Amount))
                .value(R::Movements, plus_excluded(R::Movements))
                .to_owned(),
        )
        .to_owned();
    insert_chunks(conn, &insert, rows).await
}

/// Cut roll-up sums of one dimension per (value, month, kind code) up to
/// `last`, optionally of one value.
pub async fn cut_rollups<C: ConnectionTrait>(
    conn: &C,
    dimension: &Dimension,
    value: Option<&str>,
    last: Month,
) -> Result<Vec<(String, Month, i32, Tally)>, Error> {
    use cut_rollup::Column as R;
    let stmt = Query::select()
        .columns([R::Value, R::Month, R::Kind, R::Amount, R::Movements])
        .from(cut_rollup::Entity)
        .and_where(Expr::col(R::Dimension).eq(dimension.key()))
        .and_where_option(value.map(|v| Expr::col(R::Value).eq(v)))
        .and_where(Expr::col(R::Month).lte(last.index()))
        .to_owned();
    query(conn, &stmt)
        .await?
        .iter()
        .map(|row| {
            Ok((
                row.try_get("", "value")?,
                Month::from_index(row.try_get("", "month")?),
                row.try_get("", "kind")?,
                Tally {
                    amount: Minor(row.try_get("", "amount")?),
                    count: row.try_get("", "movements")?,
                },
            ))
        })
        .collect()
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

/// Whether any account ever carried a value of `dimension` (one row of the
/// cut roll-up by its key).
pub async fn dimension_seen<C: ConnectionTrait>(
    conn: &C,
    dimension: &Dimension,
) -> Result<bool, Error> {
    Ok(cut_rollup::Entity::find()
        .filter(cut_rollup::Column::Dimension.eq(dimension.key()))
        .one(conn)
        .await?
        .is_some())
}
