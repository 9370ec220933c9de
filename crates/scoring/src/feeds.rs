//! The change feeds scoring follows, each through the runtime's consumer
//! (stored cursor, exactly-once application), each event rescoring the
//! account it is about:
//!
//! - accounts: segment (which scorecard), strategic flag, creation time, the
//!   CSM and owner (the ownership rules of writes, `mine=true`), and the
//!   account ids known to exist (signal ingest checks them in memory).
//! - revenue: MRR and the first payment (movements), downgrades and
//!   expansions (contraction / expansion movements), churn (the label the
//!   churn model learns from), late payments (`invoice.late`), seats, renewal
//!   date and contract length (subscriptions). A retracted movement takes its
//!   downgrade, expansion or churn back out.
//! - funnel: the onboarding start (COMMIT) and first value (IMPACT).

use bowtie_proto::accounts as accounts_pb;
use bowtie_proto::common::{Segment, Stage};
use bowtie_proto::funnel as funnel_pb;
use bowtie_proto::revenue as revenue_pb;
use bowtie_runtime::config::PeerSettings;
use bowtie_runtime::error::Error;
use bowtie_runtime::peer::{Consumer, Upstream};
use bowtie_runtime::shutdown::Shutdown;
use bowtie_runtime::store::Tx;
use bowtie_runtime::validate;
use bowtie_runtime::{AccountId, Instant, Minor};
use uuid::Uuid;

pub use bowtie_runtime::peer::payload;

use crate::service::{Scoring, reach_first_values, tx_now};
use crate::storage::{self, DayDelta, Kind, Profile, SubscriptionRow};

/// Cursor name of the accounts feed consumer.
pub const ACCOUNTS_CONSUMER: &str = "scoring.accounts";
/// Cursor name of the revenue feed consumer.
pub const REVENUE_CONSUMER: &str = "scoring.revenue";
/// Cursor name of the funnel feed consumer.
pub const FUNNEL_CONSUMER: &str = "scoring.funnel";

fn account_id(raw: &str) -> Result<AccountId, Error> {
    Uuid::parse_str(raw)
        .map(AccountId)
        .map_err(|_| Error::invalid("payload.account_id", "is not a UUID"))
}

fn instant(field: &str, ts: Option<&prost_types::Timestamp>) -> Result<Instant, Error> {
    let mut v = bowtie_runtime::FieldViolations::default();
    let at = validate::required_instant(&mut v, field, ts);
    v.into_result()?;
    at.ok_or_else(|| Error::invalid(field.to_owned(), "is required"))
}

/// The account's profile, locked for this transaction's read-modify-write.
async fn profile(tx: &Tx, id: AccountId) -> Result<Profile, Error> {
    storage::lock_profile(tx.conn(), id).await?;
    Ok(storage::get_profile(tx.conn(), id)
        .await?
        .unwrap_or_else(|| Profile {
            account_id: id,
            ..Profile::default()
        }))
}

/// Follows the accounts feed.
pub fn accounts_consumer(
    settings: &PeerSettings,
    app: Scoring,
    shutdown: Shutdown,
) -> Result<Consumer, Error> {
    Consumer::of(
        ACCOUNTS_CONSUMER,
        Upstream::Accounts,
        settings,
        app.store().clone(),
        app,
        shutdown,
        |app, tx, event| {
            Box::pin(async move {
                let Some(account) = payload::<accounts_pb::Account>(&event)? else {
                    return Ok(());
                };
                let id = Uuid::parse_str(&account.id)
                    .map(AccountId)
                    .map_err(|_| Error::invalid("payload.id", "is not a UUID"))?;
                let mut p = profile(tx, id).await?;
                p.segment = Segment::try_from(account.segment).unwrap_or(Segment::Unspecified);
                p.strategic = account.strategic;
                if let Some(created) = account.create_time.as_ref() {
                    p.created_at = Some(instant("payload.create_time", Some(created))?);
                }
                storage::save_profile(tx.conn(), &p, tx_now(tx)).await?;
                storage::save_people(tx.conn(), id, &account.csm, &account.owner, tx_now(tx))
                    .await?;
                app.remember([id])?;
                app.mark_dirty_after_commit(id);
                Ok(())
            })
        },
    )
}

fn interval_months(raw: i32) -> i32 {
    match revenue_pb::BillingInterval::try_from(raw) {
        Ok(revenue_pb::BillingInterval::Quarter) => 3,
        Ok(revenue_pb::BillingInterval::Year) => 12,
        _ => 1,
    }
}

async fn count(tx: &Tx, id: AccountId, kind: Kind, at: Instant, delta: i64) -> Result<(), Error> {
    storage::add_days(
        tx.conn(),
        &[DayDelta {
            account_id: id,
            kind,
            day: storage::day_of(at),
            total: delta,
            events: delta,
            last_value: delta,
            last_at: at,
        }],
    )
    .await
}

async fn apply_movement(
    tx: &mut Tx,
    m: &revenue_pb::Movement,
    retracted: bool,
) -> Result<AccountId, Error> {
    use revenue_pb::MovementType as M;
    let id = account_id(&m.account_id)?;
    let at = instant("payload.occurred_at", m.occurred_at.as_ref())?;
    let mut p = profile(tx, id).await?;
    let sign = if retracted { -1 } else { 1 };
    match m.r#type() {
        M::Contraction => count(tx, id, Kind::Downgrade, at, sign).await?,
        M::Expansion => count(tx, id, Kind::Expansion, at, sign).await?,
        M::Churn if retracted && p.churned_at == Some(at) => p.churned_at = None,
        M::Churn if retracted => {}
        M::Churn => {
            p.churned_at = Some(at);
            p.last_mrr = m
                .mrr_before
                .as_ref()
                .map_or(p.last_mrr, |x| Minor(x.minor_units));
        }
        M::New | M::Reactivation if !retracted => {
            p.first_paid_at = Some(p.first_paid_at.map_or(at, |f| f.min(at)));
            if p.churned_at.is_some_and(|c| c <= at) {
                p.churned_at = None;
            }
        }
        _ => {}
    }
    if !retracted && p.mrr_at.is_none_or(|t| at >= t) {
        p.mrr = m
            .mrr_after
            .as_ref()
            .map_or(Minor::ZERO, |x| Minor(x.minor_units));
        p.mrr_at = Some(at);
        if p.mrr.is_positive() {
            p.last_mrr = p.mrr;
        }
    }
    storage::save_profile(tx.conn(), &p, tx_now(tx)).await?;
    Ok(id)
}

async fn apply_subscription(tx: &mut Tx, s: &revenue_pb::Subscription) -> Result<AccountId, Error> {
    let id = account_id(&s.account_id)?;
    let now = Instant::now();
    let cancelled = match s
        .cancellation
        .as_ref()
        .and_then(|c| c.effective_at.as_ref())
    {
        Some(at) => instant("payload.cancellation.effective_at", Some(at))? <= now,
        None => false,
    };
    let term_end = match s.term_end_at.as_ref() {
        Some(t) => Some(instant("payload.term_end_at", Some(t))?),
        None => None,
    };
    let row = SubscriptionRow {
        id: s.id.clone(),
        account_id: id,
        quantity: s.terms.as_ref().map_or(0, |t| t.quantity),
        term_end,
        interval_months: interval_months(s.billing_interval),
        cancelled,
    };
    let (seats, renewal, months) = storage::save_subscription(tx.conn(), &row).await?;
    let mut p = profile(tx, id).await?;
    p.seats = seats;
    p.renewal_at = renewal;
    p.contract_months = months;
    storage::save_profile(tx.conn(), &p, tx_now(tx)).await?;
    Ok(id)
}

/// Follows the revenue feed.
pub fn revenue_consumer(
    settings: &PeerSettings,
    app: Scoring,
    shutdown: Shutdown,
) -> Result<Consumer, Error> {
    Consumer::of(
        REVENUE_CONSUMER,
        Upstream::Revenue,
        settings,
        app.store().clone(),
        app,
        shutdown,
        |app, tx, event| {
            Box::pin(async move {
                let id = match event.event_type.as_str() {
                    "movement.recorded" | "movement.retracted" => {
                        let Some(m) = payload::<revenue_pb::Movement>(&event)? else {
                            return Ok(());
                        };
                        apply_movement(tx, &m, event.event_type == "movement.retracted").await?
                    }
                    "subscription.created" | "subscription.changed" | "subscription.cancelled" => {
                        let Some(s) = payload::<revenue_pb::Subscription>(&event)? else {
                            return Ok(());
                        };
                        apply_subscription(tx, &s).await?
                    }
                    "invoice.late" => {
                        let Some(i) = payload::<revenue_pb::Invoice>(&event)? else {
                            return Ok(());
                        };
                        let id = account_id(&i.account_id)?;
                        let due = instant("payload.due_at", i.due_at.as_ref())?;
                        storage::ensure_profiles(tx.conn(), &[id], tx_now(tx)).await?;
                        count(tx, id, Kind::LatePayment, due, 1).await?;
                        id
                    }
                    _ => return Ok(()),
                };
                app.mark_dirty_after_commit(id);
                Ok(())
            })
        },
    )
}

/// Follows the funnel feed.
pub fn funnel_consumer(
    settings: &PeerSettings,
    app: Scoring,
    shutdown: Shutdown,
) -> Result<Consumer, Error> {
    Consumer::of(
        FUNNEL_CONSUMER,
        Upstream::Funnel,
        settings,
        app.store().clone(),
        app,
        shutdown,
        |app, tx, event| {
            Box::pin(async move {
                if event.event_type != "transition.recorded" {
                    return Ok(());
                }
                let Some(t) = payload::<funnel_pb::Transition>(&event)? else {
                    return Ok(());
                };
                let id = account_id(&t.account_id)?;
                let at = instant("payload.occurred_at", t.occurred_at.as_ref())?;
                match Stage::try_from(t.to_stage) {
                    Ok(Stage::Commit) => {
                        let mut p = profile(tx, id).await?;
                        if p.onboarding_at.is_none_or(|s| at > s) {
                            p.onboarding_at = Some(at);
                            storage::save_profile(tx.conn(), &p, tx_now(tx)).await?;
                        }
                    }
                    // First value recorded in the funnel (by hand or from this
                    // service's own feed) is not announced again.
                    Ok(Stage::Impact) => reach_first_values(tx, &[(id, at)], false).await?,
                    _ => return Ok(()),
                }
                app.mark_dirty_after_commit(id);
                Ok(())
            })
        },
    )
}
