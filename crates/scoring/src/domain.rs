//! Health maths, pure: each component's score and one-line reason from an
//! account's aggregated inputs, the weighted total over the components that
//! have data (weights renormalised), bands, alert triggers, and value tiers
//! and quadrants; `cells`, the fold of an account's day cells into those
//! inputs. No I/O here; every rule is unit-tested with hand-worked numbers.

use bowtie_proto::common::Segment;
use bowtie_proto::scoring::{AlertKind, Band, Component, Quadrant, Tier};
use bowtie_runtime::{Instant, Minor};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub mod cells;

/// One day in microseconds.
pub const DAY: i64 = bowtie_runtime::types::MICROS_PER_DAY;

/// The id of an alert (a UUIDv7: alerts sort by when they were raised).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AlertId(pub Uuid);

impl AlertId {
    /// A fresh id, after every id generated before it.
    pub fn generate() -> Self {
        AlertId(Uuid::now_v7())
    }
}

impl std::fmt::Display for AlertId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The version of a segment's scorecard: 0 for the built-in one, then 1, 2,
/// ... for each stored edit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ScorecardVersion(pub i64);

impl ScorecardVersion {
    /// The version an edit of this one stores.
    pub const fn next(self) -> Self {
        ScorecardVersion(self.0 + 1)
    }
}

/// Every component, in the order of the proto enum.
pub const COMPONENTS: [Component; 9] = [
    Component::UsageTrend,
    Component::Breadth,
    Component::PaymentPunctuality,
    Component::PlanChanges,
    Component::SupportEngagement,
    Component::Sentiment,
    Component::Onboarding,
    Component::StakeholderStability,
    Component::RenewalProximity,
];

/// Position of a component in [`COMPONENTS`] and in a scorecard's weights.
pub fn component_index(c: Component) -> Option<usize> {
    COMPONENTS.iter().position(|x| *x == c)
}

/// The short name of a component, also its feature name in the churn model.
pub fn component_name(c: Component) -> &'static str {
    match c {
        Component::UsageTrend => "usage_trend",
        Component::Breadth => "breadth",
        Component::PaymentPunctuality => "payment_punctuality",
        Component::PlanChanges => "plan_changes",
        Component::SupportEngagement => "support_engagement",
        Component::Sentiment => "sentiment",
        Component::Onboarding => "onboarding",
        Component::StakeholderStability => "stakeholder_stability",
        Component::RenewalProximity => "renewal_proximity",
        Component::Unspecified => "unspecified",
    }
}

/// Weights and thresholds of one segment; versioned by the service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scorecard {
    /// Relative weight of each component, in [`COMPONENTS`] order.
    pub weights: [i32; 9],
    /// Lowest yellow score.
    pub yellow_from: i32,
    /// Lowest green score.
    pub green_from: i32,
    /// Points per late payment.
    pub late_payment_penalty: i32,
    /// Points per downgrade.
    pub downgrade_penalty: i32,
    /// Points per unresolved complaint.
    pub complaint_penalty: i32,
    /// Points per departed stakeholder.
    pub stakeholder_penalty: i32,
    /// Days within which first value counts as fast.
    pub onboarding_target_days: i32,
    /// Days before renewal from which proximity lowers the score.
    pub renewal_window_days: i32,
}

impl Default for Scorecard {
    /// The built-in scorecard: usage weighs most, then payments; bands
    /// red 0-49, yellow 50-75, green 76-100 (docs/design.md section 3).
    fn default() -> Self {
        Self {
            weights: [25, 10, 15, 10, 10, 10, 10, 5, 5],
            yellow_from: 50,
            green_from: 76,
            late_payment_penalty: 40,
            downgrade_penalty: 50,
            complaint_penalty: 25,
            stakeholder_penalty: 60,
            onboarding_target_days: 30,
            renewal_window_days: 90,
        }
    }
}

/// Everything health is computed from, aggregated as of `now`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inputs {
    /// The instant of the computation.
    pub now: Instant,
    /// Usage events (logins and feature uses) of the last 30 days.
    pub usage_recent: i64,
    /// Usage events of the 30 days before.
    pub usage_prior: i64,
    /// The latest active-user count of the last 30 days.
    pub active_users: Option<i64>,
    /// Seats paid for (from the revenue feed).
    pub seats: Option<i64>,
    /// Whether the revenue service told us about a subscription.
    pub paying: bool,
    /// Late payments in the last 180 days.
    pub late_payments: i64,
    /// Downgrades in the last 180 days.
    pub downgrades: i64,
    /// Tickets opened in the last 30 days.
    pub tickets_recent: i64,
    /// Tickets opened in the 30 days before.
    pub tickets_prior: i64,
    /// Complaints filed minus resolved, over the last 180 days (never negative).
    pub complaints_open: i64,
    /// NPS answers of the last 180 days: (sum, count).
    pub nps: (i64, i64),
    /// CSAT answers of the last 180 days: (sum, count).
    pub csat: (i64, i64),
    /// When onboarding began (COMMIT), if known.
    pub onboarding_started_at: Option<Instant>,
    /// When first value was reached, if it was.
    pub first_value_at: Option<Instant>,
    /// Stakeholders who left in the last 180 days.
    pub stakeholders_left: i64,
    /// Whether any signal of the account was ever received.
    pub listening: bool,
    /// The next renewal date, if a subscription has a term.
    pub renewal_at: Option<Instant>,
}

/// One scored component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scored {
    /// The component.
    pub component: Component,
    /// 0..=100.
    pub score: i32,
    /// One line saying why.
    pub reason: String,
}

fn scored(component: Component, score: i64, reason: String) -> Option<Scored> {
    Some(Scored {
        component,
        score: score.clamp(0, 100) as i32,
        reason,
    })
}

/// Rounded integer division, halves away from zero (inputs non-negative).
fn div_round(n: i64, d: i64) -> i64 {
    if d == 0 { 0 } else { (2 * n + d) / (2 * d) }
}

/// Usage trend: 100 x recent / prior, capped at 100; 100 when usage starts
/// from nothing; missing when there was no usage in either window.
pub fn usage_trend(recent: i64, prior: i64) -> Option<Scored> {
    let c = Component::UsageTrend;
    match (recent, prior) {
        (0, 0) => None,
        (r, 0) => scored(
            c,
            100,
            format!("{r} usage events in the last 30 days, none before"),
        ),
        (r, p) if r >= p => scored(
            c,
            100,
            format!("usage held or grew from {p} to {r} events (30 days vs the 30 before)"),
        ),
        (r, p) => scored(
            c,
            div_round(100 * r, p),
            format!("usage fell from {p} to {r} events (30 days vs the 30 before)"),
        ),
    }
}

/// Breadth: 100 x active users / seats, capped at 100; missing without both.
pub fn breadth(active_users: Option<i64>, seats: Option<i64>) -> Option<Scored> {
    let (a, s) = (active_users?, seats?);
    if s <= 0 {
        return None;
    }
    scored(
        Component::Breadth,
        div_round(100 * a.min(s), s),
        format!("{a} active users on {s} seats"),
    )
}

/// Payment punctuality: 100 minus the penalty per late payment; missing
/// when the account pays nothing we know of.
pub fn payment_punctuality(paying: bool, late: i64, penalty: i32) -> Option<Scored> {
    if !paying && late == 0 {
        return None;
    }
    let reason = match late {
        0 => "no late payment in 180 days".to_owned(),
        1 => "1 late payment in 180 days".to_owned(),
        n => format!("{n} late payments in 180 days"),
    };
    scored(
        Component::PaymentPunctuality,
        100 - late * i64::from(penalty),
        reason,
    )
}

/// Plan changes: 100 minus the penalty per downgrade; missing when the
/// account pays nothing we know of.
pub fn plan_changes(paying: bool, downgrades: i64, penalty: i32) -> Option<Scored> {
    if !paying && downgrades == 0 {
        return None;
    }
    let reason = match downgrades {
        0 => "no downgrade in 180 days".to_owned(),
        1 => "1 downgrade in 180 days".to_owned(),
        n => format!("{n} downgrades in 180 days"),
    };
    scored(
        Component::PlanChanges,
        100 - downgrades * i64::from(penalty),
        reason,
    )
}

/// Support engagement: 100, halved when tickets went quiet (some in the 30
/// days before, none in the last 30), minus the penalty per unresolved
/// complaint; missing without tickets or complaints.
pub fn support_engagement(
    recent: i64,
    prior: i64,
    complaints_open: i64,
    penalty: i32,
) -> Option<Scored> {
    if recent == 0 && prior == 0 && complaints_open == 0 {
        return None;
    }
    let quiet = recent == 0 && prior > 0;
    let base: i64 = if quiet { 50 } else { 100 };
    let score = base - complaints_open * i64::from(penalty);
    let mut reason = if quiet {
        format!("tickets went quiet: {prior} in the 30 days before, none in the last 30")
    } else {
        format!("{recent} tickets in the last 30 days, {prior} in the 30 before")
    };
    if complaints_open > 0 {
        reason.push_str(&format!("; {complaints_open} unresolved complaint(s)"));
    }
    scored(Component::SupportEngagement, score, reason)
}

/// Sentiment: mean NPS answer x 10 and/or (mean CSAT - 1) x 25, averaged
/// when both exist; missing without answers.
pub fn sentiment(nps: (i64, i64), csat: (i64, i64)) -> Option<Scored> {
    let nps_score = (nps.1 > 0).then(|| div_round(10 * nps.0, nps.1));
    let csat_score = (csat.1 > 0).then(|| div_round(25 * (csat.0 - csat.1), csat.1));
    let (score, reason) = match (nps_score, csat_score) {
        (None, None) => return None,
        (Some(n), None) => (
            n,
            format!(
                "mean NPS answer {:.1} over {} answer(s)",
                nps.0 as f64 / nps.1 as f64,
                nps.1
            ),
        ),
        (None, Some(c)) => (
            c,
            format!(
                "mean CSAT {:.1} over {} answer(s)",
                csat.0 as f64 / csat.1 as f64,
                csat.1
            ),
        ),
        (Some(n), Some(c)) => (
            div_round(n + c, 2),
            format!(
                "mean NPS answer {:.1} ({} answer(s)) and mean CSAT {:.1} ({} answer(s))",
                nps.0 as f64 / nps.1 as f64,
                nps.1,
                csat.0 as f64 / csat.1 as f64,
                csat.1
            ),
        ),
    };
    scored(Component::Sentiment, score, reason)
}

/// Onboarding: first value within the target = 100, within twice the target
/// = 75, later = 50; not reached yet: 70 while within the target, then 2
/// points less per day overdue (at least 0); missing when neither the start
/// nor first value is known.
pub fn onboarding(
    started_at: Option<Instant>,
    first_value_at: Option<Instant>,
    now: Instant,
    target_days: i32,
) -> Option<Scored> {
    let c = Component::Onboarding;
    let target = i64::from(target_days);
    match (started_at, first_value_at) {
        (None, None) => None,
        (None, Some(_)) => scored(c, 100, "first value reached".to_owned()),
        (Some(start), Some(reached)) => {
            let days = reached.micros_since(start).max(0) / DAY;
            let score = if days <= target {
                100
            } else if days <= 2 * target {
                75
            } else {
                50
            };
            scored(
                c,
                score,
                format!("first value reached {days} days after onboarding began (target {target})"),
            )
        }
        (Some(start), None) => {
            let days = now.micros_since(start).max(0) / DAY;
            if days <= target {
                scored(
                    c,
                    70,
                    format!(
                        "onboarding for {days} days, first value not reached yet (target {target})"
                    ),
                )
            } else {
                scored(
                    c,
                    70 - 2 * (days - target),
                    format!(
                        "no first value {days} days into onboarding ({} days over the target)",
                        days - target
                    ),
                )
            }
        }
    }
}

/// Stakeholder stability: 100 minus the penalty per champion or decision
/// maker who left; missing when no signal was ever received.
pub fn stakeholder_stability(listening: bool, left: i64, penalty: i32) -> Option<Scored> {
    if !listening && left == 0 {
        return None;
    }
    let reason = match left {
        0 => "no champion or decision maker left in 180 days".to_owned(),
        n => format!("{n} champion(s) or decision maker(s) left in 180 days"),
    };
    scored(
        Component::StakeholderStability,
        100 - left * i64::from(penalty),
        reason,
    )
}

/// Renewal proximity: 100 outside the window; inside it 50 + 50 x days left
/// / window; 50 on or after the renewal date; missing without a renewal date.
pub fn renewal_proximity(
    renewal_at: Option<Instant>,
    now: Instant,
    window_days: i32,
) -> Option<Scored> {
    let at = renewal_at?;
    let window = i64::from(window_days.max(1));
    let days = at.days_since(now);
    let c = Component::RenewalProximity;
    if days > window {
        scored(c, 100, format!("renewal in {days} days"))
    } else if days >= 0 {
        scored(
            c,
            50 + div_round(50 * days, window),
            format!("renewal in {days} days (window {window})"),
        )
    } else {
        scored(c, 50, format!("renewal date passed {} days ago", -days))
    }
}

/// Every component that has data.
pub fn components(i: &Inputs, card: &Scorecard) -> Vec<Scored> {
    [
        usage_trend(i.usage_recent, i.usage_prior),
        breadth(i.active_users, i.seats),
        payment_punctuality(i.paying, i.late_payments, card.late_payment_penalty),
        plan_changes(i.paying, i.downgrades, card.downgrade_penalty),
        support_engagement(
            i.tickets_recent,
            i.tickets_prior,
            i.complaints_open,
            card.complaint_penalty,
        ),
        sentiment(i.nps, i.csat),
        onboarding(
            i.onboarding_started_at,
            i.first_value_at,
            i.now,
            card.onboarding_target_days,
        ),
        stakeholder_stability(i.listening, i.stakeholders_left, card.stakeholder_penalty),
        renewal_proximity(i.renewal_at, i.now, card.renewal_window_days),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// A health score with its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// 0..=100.
    pub score: i32,
    /// Its band.
    pub band: Band,
    /// The components with data, each with its effective weight (bp).
    pub components: Vec<(Scored, i32, i32)>,
    /// Components without data; their weight was dropped.
    pub missing: Vec<Component>,
}

/// The band of a score under a scorecard.
pub fn band(score: i32, card: &Scorecard) -> Band {
    if score < card.yellow_from {
        Band::Red
    } else if score < card.green_from {
        Band::Yellow
    } else {
        Band::Green
    }
}

/// The weighted total over the components present: sum(w x s) / sum(w),
/// rounded half up; `None` when no component with a positive weight has data.
pub fn total(present: Vec<Scored>, card: &Scorecard) -> Option<Health> {
    let weight = |c: Component| component_index(c).map_or(0, |i| card.weights[i].max(0));
    let sum_w: i64 = present.iter().map(|s| i64::from(weight(s.component))).sum();
    if sum_w == 0 {
        return None;
    }
    let sum_ws: i64 = present
        .iter()
        .map(|s| i64::from(weight(s.component)) * i64::from(s.score))
        .sum();
    let score = div_round(sum_ws, sum_w) as i32;
    let missing = COMPONENTS
        .iter()
        .filter(|c| !present.iter().any(|s| s.component == **c))
        .copied()
        .collect();
    let components = present
        .into_iter()
        .map(|s| {
            let w = weight(s.component);
            let bp = div_round(i64::from(w) * 10_000, sum_w) as i32;
            (s, w, bp)
        })
        .collect();
    Some(Health {
        score,
        band: band(score, card),
        components,
        missing,
    })
}

/// Health of `inputs` under `card`.
pub fn health(inputs: &Inputs, card: &Scorecard) -> Option<Health> {
    total(components(inputs, card), card)
}

/// What alert triggers compare: the previous computation and the score 30
/// days ago.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trigger {
    /// The score.
    pub score: i32,
    /// Its band.
    pub band: Band,
    /// Churn probability in basis points, when a model exists.
    pub risk_bp: Option<i32>,
}

/// Alerts to raise on a transition from `before` (None: first computation)
/// to `after`: entering red, a drop of at least `drop_points` below the score
/// of 30 days ago (`baseline`), a risk reaching `risk_threshold_bp`. A
/// condition that already held before raises nothing, so a recomputation
/// never raises the same alert twice.
pub fn alerts(
    before: Option<Trigger>,
    after: Trigger,
    baseline: Option<i32>,
    drop_points: i32,
    risk_threshold_bp: i32,
) -> Vec<AlertKind> {
    let mut out = Vec::new();
    let was_red = before.is_some_and(|b| b.band == Band::Red);
    if after.band == Band::Red && !was_red {
        out.push(AlertKind::EnteredRed);
    }
    if let Some(base) = baseline {
        let dropped = |score: i32| base - score >= drop_points;
        if dropped(after.score) && !before.is_some_and(|b| dropped(b.score)) {
            out.push(AlertKind::ScoreDrop);
        }
    }
    let risky = |t: Option<Trigger>| {
        t.and_then(|t| t.risk_bp)
            .is_some_and(|r| r >= risk_threshold_bp)
    };
    if risky(Some(after)) && !risky(before) {
        out.push(AlertKind::HighRisk);
    }
    out
}

/// The one-line message of an alert.
pub fn alert_message(kind: AlertKind, after: Trigger, baseline: Option<i32>) -> String {
    match kind {
        AlertKind::EnteredRed => format!("health fell into red at {}", after.score),
        AlertKind::ScoreDrop => format!(
            "health dropped {} points in 30 days (from {} to {})",
            baseline.unwrap_or(after.score) - after.score,
            baseline.unwrap_or(after.score),
            after.score
        ),
        AlertKind::HighRisk => format!(
            "churn risk {:.1}% is above the threshold",
            f64::from(after.risk_bp.unwrap_or(0)) / 100.0
        ),
        AlertKind::Unspecified => String::new(),
    }
}

/// Value thresholds (tiers and quadrants) from the MRR of paying accounts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cutoffs {
    /// Lowest MRR of a DIAMOND account (None: nobody pays).
    pub diamond_min: Option<Minor>,
    /// Lowest MRR of a GOLD account.
    pub gold_min: Option<Minor>,
    /// Lowest MRR counted as high value.
    pub value_min: Option<Minor>,
}

/// Cutoffs from the MRR of every account (zero MRR is not paying): DIAMOND
/// is the top `diamond_pct`% of paying accounts (at least one), GOLD the
/// next `gold_pct`%, high value is at or above the `value_pct` percentile.
pub fn cutoffs(mut mrrs: Vec<Minor>, diamond_pct: u32, gold_pct: u32, value_pct: u32) -> Cutoffs {
    mrrs.retain(|m| m.is_positive());
    if mrrs.is_empty() {
        return Cutoffs::default();
    }
    mrrs.sort_unstable_by(|a, b| b.cmp(a));
    let n = mrrs.len();
    let take = |pct: u32| (n * pct as usize).div_ceil(100).clamp(1, n);
    let diamond = take(diamond_pct);
    let gold = (n * (diamond_pct + gold_pct) as usize)
        .div_ceil(100)
        .clamp(diamond, n);
    // The value percentile counted from the bottom: the top (100 - p)%.
    let value = take(100u32.saturating_sub(value_pct).max(1));
    Cutoffs {
        diamond_min: Some(mrrs[diamond - 1]),
        gold_min: Some(mrrs[gold - 1]),
        value_min: Some(mrrs[value - 1]),
    }
}

/// What decides an account's tier and quadrant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueFacts {
    /// MRR (reporting minor units).
    pub mrr: Minor,
    /// Flagged strategic.
    pub strategic: bool,
    /// Health band.
    pub band: Band,
    /// Health score.
    pub score: i32,
    /// A payment late within the PROBLEM window.
    pub late_recently: bool,
    /// An expansion within the POTENTIAL window.
    pub expanded_recently: bool,
    /// No usage within the dormant window.
    pub dormant: bool,
}

/// The tier: DIAMOND and GOLD by MRR rank first (value contribution), then
/// STRATEGIC, then PROBLEM (red or paying late), then POTENTIAL (growing),
/// else GENERAL.
pub fn tier(f: &ValueFacts, c: &Cutoffs) -> Tier {
    let at_least = |min: Option<Minor>| f.mrr.is_positive() && min.is_some_and(|m| f.mrr >= m);
    if at_least(c.diamond_min) {
        Tier::Diamond
    } else if at_least(c.gold_min) {
        Tier::Gold
    } else if f.strategic {
        Tier::Strategic
    } else if f.band == Band::Red || f.late_recently {
        Tier::Problem
    } else if f.expanded_recently {
        Tier::Potential
    } else {
        Tier::General
    }
}

/// The value x loyalty quadrant: E when dormant, else A/B/C/D by high value
/// (MRR at or above the cutoff) and high loyalty (score at or above
/// `loyalty_score`).
pub fn quadrant(f: &ValueFacts, c: &Cutoffs, loyalty_score: i32) -> Quadrant {
    if f.dormant {
        return Quadrant::E;
    }
    let high_value = f.mrr.is_positive() && c.value_min.is_some_and(|m| f.mrr >= m);
    let loyal = f.score >= loyalty_score;
    match (high_value, loyal) {
        (true, true) => Quadrant::A,
        (true, false) => Quadrant::B,
        (false, true) => Quadrant::C,
        (false, false) => Quadrant::D,
    }
}

/// Share of the total MRR that the top 20% of accounts (by MRR, at least
/// one) carry, in basis points; 0 when nothing is paid.
pub fn top_20_share_bp(mut mrrs: Vec<Minor>) -> i32 {
    let total: Minor = mrrs.iter().map(|m| (*m).max(Minor::ZERO)).sum();
    if total == Minor::ZERO || mrrs.is_empty() {
        return 0;
    }
    mrrs.sort_unstable_by(|a, b| b.cmp(a));
    let take = (mrrs.len() * 20).div_ceil(100).max(1);
    let top: Minor = mrrs.iter().take(take).map(|m| (*m).max(Minor::ZERO)).sum();
    div_round(top.get() * 10_000, total.get()) as i32
}

/// The share of `total` that `part` is, in basis points.
pub fn share_bp(part: Minor, total: Minor) -> i32 {
    if !total.is_positive() {
        0
    } else {
        div_round(part.get().max(0) * 10_000, total.get()) as i32
    }
}

/// The scorecard segment of an account (unknown segments use the default).
pub fn scorecard_segment(segment: Segment) -> Segment {
    segment
}

#[cfg(test)]
mod tests;
