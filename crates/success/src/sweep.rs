//! The sweep: the triggers that fire because time passed rather than on a
//! feed event (docs/design.md section 6.1), run every
//! `success_policy.sweep_interval_seconds` until shutdown.
//!
//! - RENEWAL_DUE: an account's earliest open renewal date (not cancelled,
//!   no outcome recorded for it) is within the trigger's `days`.
//! - ONBOARDING_STALLED: the account entered ONBOARDING more than `days`
//!   days ago and has not moved on.
//! - COMPLAINT_UNRESOLVED: the account's oldest open complaint is more than
//!   `days` days old.
//!
//! - REVENUE_MILESTONE: the account's revenue to date (revenue's movements,
//!   MRR earned month by month) reached the trigger's milestone.
//!
//! Each playbook fires at most once per account and occurrence (the renewal
//! date, the onboarding entry, the complaint's time, the milestone): `sweep_fired` records
//! it in the same transaction as the CTA it opens, so a restart, a second
//! replica or a second run fires nothing twice.

use std::time::Duration;

use bowtie_runtime::error::Error;
use bowtie_runtime::shutdown::Shutdown;
use bowtie_runtime::{AccountId, Instant};

use crate::domain::{
    Event, Playbook, SWEPT, SWEPT_ONCE, Stage, TriggerKind, date, days_until, due_renewals, overdue,
};
use crate::feeds::money;
use crate::service::{Success, flush_pending};
use crate::storage;

/// Starts the sweep: one run at once, then one every `interval`.
pub fn spawn(app: Success, interval: Duration, shutdown: Shutdown) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval.max(Duration::from_secs(1)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.wait() => return,
                _ = ticks.tick() => {}
            }
            if let Err(e) = run(&app, Instant::now()).await {
                tracing::warn!(error = %e, "trigger sweep failed; retrying at the next run");
            }
        }
    });
}

/// One occurrence the sweep found for a playbook.
struct Due {
    account_id: AccountId,
    occurrence: Instant,
    reason: String,
}

/// Fires every swept trigger due at `now`, in one transaction.
pub async fn run(app: &Success, now: Instant) -> Result<(), Error> {
    let app = app.clone();
    app.store()
        .clone()
        .write(None, move |tx| {
            Box::pin(async move {
                for kind in SWEPT.into_iter().chain(SWEPT_ONCE) {
                    for p in storage::playbooks_for(tx.conn(), kind).await? {
                        for due in due_for(tx.conn(), &p, now).await? {
                            if !storage::mark_fired(
                                tx.conn(),
                                p.id,
                                due.account_id,
                                due.occurrence,
                                now,
                            )
                            .await?
                            {
                                continue;
                            }
                            let event = Event {
                                kind,
                                account_id: due.account_id,
                                at: now,
                                reason: due.reason,
                                percent: 0,
                                stage: Stage::Unspecified,
                                segment: None,
                            };
                            app.apply_to(tx, std::slice::from_ref(&p), &event).await?;
                        }
                    }
                }
                flush_pending(tx).await
            })
        })
        .await
}

/// What playbook `p` (a swept kind) is due to fire on at `now`.
async fn due_for<C: sea_orm::ConnectionTrait>(
    conn: &C,
    p: &Playbook,
    now: Instant,
) -> Result<Vec<Due>, Error> {
    let days = p.spec.trigger.days;
    let horizon = now.plus_days(-i64::from(days));
    Ok(match p.spec.trigger.kind {
        TriggerKind::RenewalDue => {
            let open = storage::renewals_between(conn, now, now.plus_days(i64::from(days))).await?;
            due_renewals(&open, now, days)
                .into_iter()
                .map(|r| Due {
                    account_id: r.account_id,
                    occurrence: r.renews_at,
                    reason: format!(
                        "renewal on {} (in {} days)",
                        date(r.renews_at),
                        days_until(now, r.renews_at)
                    ),
                })
                .collect()
        }
        TriggerKind::OnboardingStalled => storage::onboarding_before(conn, horizon)
            .await?
            .into_iter()
            .filter(|(_, since)| overdue(*since, now, days))
            .map(|(account_id, since)| Due {
                account_id,
                occurrence: since,
                reason: format!(
                    "in onboarding since {} ({} days) without first value",
                    date(since),
                    now.days_since(since)
                ),
            })
            .collect(),
        TriggerKind::ComplaintUnresolved => storage::complaints_before(conn, horizon)
            .await?
            .into_iter()
            .filter(|(_, at)| overdue(*at, now, days))
            .map(|(account_id, at)| Due {
                account_id,
                occurrence: at,
                reason: format!(
                    "complaint of {} unresolved after {} days",
                    date(at),
                    now.days_since(at)
                ),
            })
            .collect(),
        TriggerKind::RevenueMilestone => {
            let milestone = p.spec.trigger.milestone;
            storage::earning_toward(conn, milestone)
                .await?
                .into_iter()
                .filter(|(_, r)| r.at(now) >= milestone)
                .map(|(account_id, r)| Due {
                    account_id,
                    // Once per account and milestone: the amount is the
                    // occurrence.
                    occurrence: Instant::from_micros(milestone.get()),
                    reason: format!(
                        "revenue to date {} passed the {} milestone",
                        money(r.at(now), &r.currency),
                        money(milestone, &r.currency)
                    ),
                })
                .collect()
        }
        _ => Vec::new(),
    })
}
