//! The change feeds success follows, each through the runtime's consumer
//! (stored cursor, exactly-once application), and what each event means to
//! it (docs/design.md section 6):
//!
//! - scoring: `alert.raised` fires the ENTERED_RED, SCORE_DROP and HIGH_RISK
//!   triggers and lands on the timeline; `health.band_changed` and
//!   `health.scored` (a first score, or a score that moved within its band)
//!   update the account's band and churn risk, which may auto-close its
//!   CTAs. The scores all three carry (at the alert's creation, at the
//!   health's computation) make the score history of the effectiveness
//!   report and the book of business's mean health.
//!   `signal.recorded` (complaints and their resolutions only) keeps the
//!   open complaints the sweep fires COMPLAINT_UNRESOLVED on.
//!   `segment.changed` (a new value tier or quadrant) fires TIER_ENTERED
//!   and QUADRANT_ENTERED.
//! - revenue: `movement.recorded` keeps the account's MRR and its revenue
//!   to date (the sweep fires REVENUE_MILESTONE on it), fires CHURN and
//!   CONTRACTION and records churns for the effectiveness report (a
//!   `movement.retracted` churn is taken back); `invoice.late` fires
//!   PAYMENT_FAILED; `subscription.*` keeps each subscription's renewal date
//!   (the sweep fires RENEWAL_DUE on it) and `renewal.recorded` marks that
//!   date's outcome known and auto-closes renewal CTAs.
//! - funnel: `transition.recorded` fires STAGE_ENTERED; reaching IMPACT is
//!   first value, which may auto-close onboarding CTAs; entering ONBOARDING
//!   starts the clock of ONBOARDING_STALLED, any later stage stops it.
//! - accounts: the CSM, owner and segment (who gets a CTA, which filter
//!   passes); `contact.left` of a champion or decision maker fires
//!   CHAMPION_LEFT.

use std::sync::Arc;

use bowtie_proto::accounts as accounts_pb;
use bowtie_proto::common::{self, Stage};
use bowtie_proto::funnel as funnel_pb;
use bowtie_proto::revenue as revenue_pb;
use bowtie_proto::scoring as scoring_pb;
use bowtie_runtime::config::PeerSettings;
use bowtie_runtime::error::Error;
use bowtie_runtime::peer::{Consumer, Upstream, payload};
use bowtie_runtime::shutdown::Shutdown;
use bowtie_runtime::{AccountId, FieldViolations, Instant, Minor, validate};

use crate::domain::{
    AccountFacts, ActivityKind, Event, Quadrant, Segment, SegmentMove, Tier, TriggerKind,
};
use crate::service::{Success, defer_system, flush_pending, log_system};
use crate::storage::{self, Turn};

/// Cursor name of the scoring feed consumer.
pub const SCORING_CONSUMER: &str = "success.scoring";
/// Cursor name of the revenue feed consumer.
pub const REVENUE_CONSUMER: &str = "success.revenue";
/// Cursor name of the funnel feed consumer.
pub const FUNNEL_CONSUMER: &str = "success.funnel";
/// Cursor name of the accounts feed consumer.
pub const ACCOUNTS_CONSUMER: &str = "success.accounts";

fn account(field: &str, raw: &str) -> Result<AccountId, Error> {
    bowtie_runtime::api::account_id(field, raw)
}

fn instant(field: &str, ts: Option<&prost_types::Timestamp>) -> Result<Instant, Error> {
    let mut v = FieldViolations::default();
    let at = validate::required_instant(&mut v, field, ts);
    v.into_result()?;
    bowtie_runtime::api::parsed(at)
}

fn trigger(kind: TriggerKind, account_id: AccountId, at: Instant, reason: String) -> Event {
    Event {
        kind,
        account_id,
        at,
        reason,
        percent: 0,
        stage: Stage::Unspecified,
        segment: None,
    }
}

/// A tier or quadrant as a person reads it: `DIAMOND`, `B`.
fn tier_name(t: Tier) -> &'static str {
    t.as_str_name().trim_start_matches("TIER_")
}

fn quadrant_name(q: Quadrant) -> &'static str {
    q.as_str_name().trim_start_matches("QUADRANT_")
}

/// The events of scoring's `segment.changed`: TIER_ENTERED when the tier
/// changed, QUADRANT_ENTERED when the quadrant did (both when both did).
pub fn segment_events(id: AccountId, at: Instant, m: SegmentMove) -> Vec<Event> {
    m.kinds()
        .into_iter()
        .map(|kind| {
            let reason = if kind == TriggerKind::TierEntered {
                if m.tier_before == Tier::Unspecified {
                    format!("entered tier {}", tier_name(m.tier_after))
                } else {
                    format!(
                        "entered tier {} (was {})",
                        tier_name(m.tier_after),
                        tier_name(m.tier_before)
                    )
                }
            } else if m.quadrant_before == Quadrant::Unspecified {
                format!(
                    "entered quadrant {} as {}",
                    quadrant_name(m.quadrant_after),
                    tier_name(m.tier_after)
                )
            } else {
                format!(
                    "entered quadrant {} (was {}) as {}",
                    quadrant_name(m.quadrant_after),
                    quadrant_name(m.quadrant_before),
                    tier_name(m.tier_after)
                )
            };
            let mut e = trigger(kind, id, at, reason);
            e.segment = Some(m);
            e
        })
        .collect()
}

/// The consumer writing, after the last event of each of its transactions,
/// the rows the events deferred ([`flush_pending`]).
fn finishing(c: Consumer) -> Consumer {
    c.with_finish(Arc::new(|tx| Box::pin(flush_pending(tx))))
}

/// Follows the scoring feed.
pub fn scoring_consumer(
    settings: &PeerSettings,
    app: Success,
    shutdown: Shutdown,
) -> Result<Consumer, Error> {
    Consumer::of(
        SCORING_CONSUMER,
        Upstream::Scoring,
        settings,
        app.store().clone(),
        app,
        shutdown,
        |app, tx, event| {
            Box::pin(async move {
                match event.event_type.as_str() {
                    "alert.raised" => {
                        let Some(alert) = payload::<scoring_pb::Alert>(&event)? else {
                            return Ok(());
                        };
                        let id = account("payload.account_id", &alert.account_id)?;
                        let at = instant("payload.create_time", alert.create_time.as_ref())?;
                        let kind = match scoring_pb::AlertKind::try_from(alert.kind) {
                            Ok(scoring_pb::AlertKind::EnteredRed) => TriggerKind::EnteredRed,
                            Ok(scoring_pb::AlertKind::ScoreDrop) => TriggerKind::ScoreDrop,
                            Ok(scoring_pb::AlertKind::HighRisk) => TriggerKind::HighRisk,
                            _ => return Ok(()),
                        };
                        let mut facts = app.facts(tx, id).await?;
                        if kind == TriggerKind::EnteredRed {
                            facts.red = true;
                        }
                        if alert.churn_risk_bp > 0 {
                            facts.churn_risk_bp = Some(alert.churn_risk_bp);
                        }
                        app.save_facts(tx, &facts).await?;
                        app.add_score(tx, id, at, alert.score).await?;
                        // The alert's entry is written with the entry of
                        // the CTA it may open, in one statement.
                        defer_system(tx, id, ActivityKind::Alert, at, alert.message.clone());
                        app.apply_event_with(
                            tx,
                            &trigger(kind, id, at, alert.message),
                            Some(&facts),
                        )
                        .await
                    }
                    "signal.recorded" => {
                        let Some(signal) = payload::<scoring_pb::Signal>(&event)? else {
                            return Ok(());
                        };
                        let id = account("payload.account_id", &signal.account_id)?;
                        let at = instant("payload.occurred_at", signal.occurred_at.as_ref())?;
                        // Counts as scoring defaulted them, at most 100 a signal.
                        let count = signal.value.clamp(1, 100);
                        match scoring_pb::SignalType::try_from(signal.r#type) {
                            Ok(scoring_pb::SignalType::Complaint) => {
                                storage::add_complaints(
                                    tx.conn(),
                                    &signal.idempotency_key,
                                    id,
                                    at,
                                    count,
                                )
                                .await
                            }
                            Ok(scoring_pb::SignalType::ComplaintResolved) => {
                                storage::resolve_complaints(tx.conn(), id, at, count).await
                            }
                            _ => Ok(()),
                        }
                    }
                    "health.band_changed" | "health.scored" => {
                        let Some(health) = payload::<scoring_pb::AccountHealth>(&event)? else {
                            return Ok(());
                        };
                        let id = account("payload.account_id", &health.account_id)?;
                        let known = app.facts(tx, id).await?;
                        let mut facts = known.clone();
                        facts.red = health.band == scoring_pb::Band::Red as i32;
                        facts.churn_risk_bp = health.churn_risk_bp;
                        if let Some(ts) = health.compute_time.as_ref() {
                            let at = instant("payload.compute_time", Some(ts))?;
                            app.add_score(tx, id, at, health.score).await?;
                        }
                        // Auto-close follows a change of band or risk: an
                        // open CTA was opened (or last checked) on the facts
                        // as they stand.
                        if facts == known {
                            return Ok(());
                        }
                        app.save_facts(tx, &facts).await?;
                        app.auto_close(tx, &facts).await
                    }
                    "segment.changed" => {
                        let Some(c) = payload::<scoring_pb::SegmentChange>(&event)? else {
                            return Ok(());
                        };
                        let id = account("payload.account_id", &c.account_id)?;
                        let at = instant("payload.compute_time", c.compute_time.as_ref())?;
                        let m = SegmentMove {
                            tier_before: Tier::try_from(c.tier_before).unwrap_or_default(),
                            tier_after: Tier::try_from(c.tier_after).unwrap_or_default(),
                            quadrant_before: Quadrant::try_from(c.quadrant_before)
                                .unwrap_or_default(),
                            quadrant_after: Quadrant::try_from(c.quadrant_after)
                                .unwrap_or_default(),
                        };
                        for e in segment_events(id, at, m) {
                            app.apply_event(tx, &e).await?;
                        }
                        Ok(())
                    }
                    _ => Ok(()),
                }
            })
        },
    )
    .map(finishing)
}

/// An amount as a person reads it: `585.00 USD` (no decimals for the
/// currencies without a minor unit).
pub fn money(amount: Minor, currency: &str) -> String {
    let minor = amount.get();
    if matches!(currency, "JPY" | "KRW") {
        return format!("{minor} {currency}");
    }
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    format!("{sign}{}.{:02} {currency}", abs / 100, abs % 100)
}

fn minor(money: Option<&common::Money>) -> Minor {
    Minor(money.map_or(0, |m| m.minor_units))
}

/// Follows the revenue feed.
pub fn revenue_consumer(
    settings: &PeerSettings,
    app: Success,
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
                match event.event_type.as_str() {
                    "movement.recorded" | "movement.retracted" => {
                        let Some(m) = payload::<revenue_pb::Movement>(&event)? else {
                            return Ok(());
                        };
                        let id = account("payload.account_id", &m.account_id)?;
                        let at = instant("payload.occurred_at", m.occurred_at.as_ref())?;
                        let kind = revenue_pb::MovementType::try_from(m.r#type)
                            .unwrap_or(revenue_pb::MovementType::Unspecified);
                        let turn = match kind {
                            revenue_pb::MovementType::Churn => Some(Turn::Churn),
                            revenue_pb::MovementType::Reactivation => Some(Turn::Reactivation),
                            _ => None,
                        };
                        if event.event_type == "movement.retracted" {
                            if let Some(turn) = turn {
                                storage::remove_turn(tx.conn(), turn, id, at).await?;
                            }
                            return Ok(());
                        }
                        if let Some(turn) = turn {
                            storage::add_turn(tx.conn(), turn, id, at).await?;
                        }
                        let (before, after) =
                            (minor(m.mrr_before.as_ref()), minor(m.mrr_after.as_ref()));
                        let mut facts = app.facts(tx, id).await?;
                        facts.mrr = after;
                        app.save_facts(tx, &facts).await?;
                        let amount = minor(m.amount.as_ref());
                        let currency = m.amount.as_ref().map_or("", |a| a.currency_code.as_str());
                        let earned = storage::revenue_to_date(tx.conn(), id).await?;
                        storage::save_revenue_to_date(
                            tx.conn(),
                            id,
                            &earned.moved(at, after, currency),
                        )
                        .await?;
                        let shown = |x: Minor| money(x, currency);
                        let name = kind.as_str_name().trim_start_matches("MOVEMENT_TYPE_");
                        log_system(
                            tx,
                            id,
                            ActivityKind::Movement,
                            at,
                            format!(
                                "{}: {} (MRR {} -> {})",
                                name.to_lowercase(),
                                shown(amount),
                                shown(before),
                                shown(after)
                            ),
                        )
                        .await?;
                        match kind {
                            revenue_pb::MovementType::Churn => {
                                let reason = format!("churned: MRR {} lost", shown(before));
                                app.apply_event(tx, &trigger(TriggerKind::Churn, id, at, reason))
                                    .await
                            }
                            revenue_pb::MovementType::Contraction if before.is_positive() => {
                                let lost = (before - after).get();
                                let percent =
                                    i32::try_from(lost.saturating_mul(100) / before.get())
                                        .unwrap_or(100);
                                let mut e = trigger(
                                    TriggerKind::Contraction,
                                    id,
                                    at,
                                    format!(
                                        "MRR contracted by {percent}% ({} -> {})",
                                        shown(before),
                                        shown(after)
                                    ),
                                );
                                e.percent = percent;
                                app.apply_event(tx, &e).await
                            }
                            _ => Ok(()),
                        }
                    }
                    "subscription.created" | "subscription.changed" | "subscription.cancelled" => {
                        let Some(sub) = payload::<revenue_pb::Subscription>(&event)? else {
                            return Ok(());
                        };
                        let id = account("payload.account_id", &sub.account_id)?;
                        let renews_at = match sub.term_end_at.as_ref() {
                            Some(ts) => Some(instant("payload.term_end_at", Some(ts))?),
                            None => None,
                        };
                        storage::save_renewal(
                            tx.conn(),
                            &sub.id,
                            id,
                            renews_at,
                            sub.cancellation.is_some(),
                        )
                        .await
                    }
                    "renewal.recorded" => {
                        let Some(r) = payload::<revenue_pb::Renewal>(&event)? else {
                            return Ok(());
                        };
                        let id = account("payload.account_id", &r.account_id)?;
                        storage::record_renewal(tx.conn(), &r.subscription_id).await?;
                        app.renewal_recorded(tx, id).await
                    }
                    "invoice.late" => {
                        let Some(invoice) = payload::<revenue_pb::Invoice>(&event)? else {
                            return Ok(());
                        };
                        let id = account("payload.account_id", &invoice.account_id)?;
                        let at = instant("payload.due_at", invoice.due_at.as_ref())?;
                        let reason = format!("invoice {} paid late or not at all", invoice.id);
                        app.apply_event(tx, &trigger(TriggerKind::PaymentFailed, id, at, reason))
                            .await
                    }
                    _ => Ok(()),
                }
            })
        },
    )
    .map(finishing)
}

/// Follows the funnel feed.
pub fn funnel_consumer(
    settings: &PeerSettings,
    app: Success,
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
                let id = account("payload.account_id", &t.account_id)?;
                let at = instant("payload.occurred_at", t.occurred_at.as_ref())?;
                let stage = Stage::try_from(t.to_stage).unwrap_or(Stage::Unspecified);
                let stage_name = stage
                    .as_str_name()
                    .trim_start_matches("STAGE_")
                    .to_lowercase();
                log_system(
                    tx,
                    id,
                    ActivityKind::StageChange,
                    at,
                    format!("entered {stage_name}"),
                )
                .await?;
                let moved_on =
                    |f: &AccountFacts| f.onboarding_since.is_some_and(|since| at >= since);
                if matches!(stage, Stage::Onboarding | Stage::Impact) {
                    let mut facts = app.facts(tx, id).await?;
                    if stage == Stage::Onboarding {
                        facts.onboarding_since = Some(at);
                    } else {
                        facts.first_value = true;
                        if moved_on(&facts) {
                            facts.onboarding_since = None;
                        }
                    }
                    app.save_facts(tx, &facts).await?;
                    if stage == Stage::Impact {
                        app.auto_close(tx, &facts).await?;
                    }
                } else if let Some(mut facts) = app.known_facts(tx, id).await?
                    && moved_on(&facts)
                {
                    facts.onboarding_since = None;
                    app.save_facts(tx, &facts).await?;
                }
                let mut e = trigger(
                    TriggerKind::StageEntered,
                    id,
                    at,
                    format!("entered {stage_name}"),
                );
                e.stage = stage;
                app.apply_event(tx, &e).await
            })
        },
    )
    .map(finishing)
}

/// Follows the accounts feed.
pub fn accounts_consumer(
    settings: &PeerSettings,
    app: Success,
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
                if event.event_type == "contact.left" {
                    let Some(c) = payload::<accounts_pb::Contact>(&event)? else {
                        return Ok(());
                    };
                    let key = [
                        accounts_pb::ContactRole::Champion as i32,
                        accounts_pb::ContactRole::DecisionMaker as i32,
                    ];
                    if !c.roles.iter().any(|r| key.contains(r)) {
                        return Ok(());
                    }
                    let id = account("payload.account_id", &c.account_id)?;
                    let at = c
                        .left_time
                        .as_ref()
                        .map_or(Ok(Instant::from_micros(tx.now())), |ts| {
                            instant("payload.left_time", Some(ts))
                        })?;
                    let reason = format!("{} ({}) left the company", c.name, c.email);
                    return app
                        .apply_event(tx, &trigger(TriggerKind::ChampionLeft, id, at, reason))
                        .await;
                }
                let Some(a) = payload::<accounts_pb::Account>(&event)? else {
                    return Ok(());
                };
                let id = account("payload.id", &a.id)?;
                let mut facts = app.known_facts(tx, id).await?.unwrap_or(AccountFacts {
                    account_id: id,
                    ..AccountFacts::default()
                });
                facts.csm = a.csm;
                facts.owner = a.owner;
                facts.segment = Segment::try_from(a.segment).unwrap_or(Segment::Unspecified);
                app.save_facts(tx, &facts).await
            })
        },
    )
    .map(finishing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_reads_in_major_units() {
        assert_eq!(money(Minor(58_500), "USD"), "585.00 USD");
        assert_eq!(money(Minor(-5), "EUR"), "-0.05 EUR");
        assert_eq!(money(Minor(1_200), "JPY"), "1200 JPY");
    }

    #[test]
    fn a_segment_change_is_one_event_per_kind_it_moved_with_a_reason_each() {
        let id = AccountId::default();
        let at = Instant::EPOCH;
        let both = SegmentMove {
            tier_before: Tier::Gold,
            tier_after: Tier::Diamond,
            quadrant_before: Quadrant::A,
            quadrant_after: Quadrant::B,
        };
        let events: Vec<(TriggerKind, String)> = segment_events(id, at, both)
            .into_iter()
            .map(|e| (e.kind, e.reason))
            .collect();
        assert_eq!(
            events,
            [
                (
                    TriggerKind::TierEntered,
                    "entered tier DIAMOND (was GOLD)".into()
                ),
                (
                    TriggerKind::QuadrantEntered,
                    "entered quadrant B (was A) as DIAMOND".into()
                ),
            ]
        );
        let first = SegmentMove {
            tier_before: Tier::Unspecified,
            tier_after: Tier::Gold,
            quadrant_before: Quadrant::Unspecified,
            quadrant_after: Quadrant::E,
        };
        let reasons: Vec<String> = segment_events(id, at, first)
            .into_iter()
            .map(|e| e.reason)
            .collect();
        assert_eq!(reasons, ["entered tier GOLD", "entered quadrant E as GOLD"]);
    }
}
