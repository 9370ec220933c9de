//! The JSON shapes of the scoring routes and their conversions from the
//! scoring service's messages.

use bowtie_proto::scoring as sco;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::common::{Segment, mirror_enum, time};

mirror_enum!(
    /// Health band.
    Band, sco::Band {
        /// 0-49.
        Red,
        /// 50-75.
        Yellow,
        /// 76-100.
        Green,
    }
);

mirror_enum!(
    /// A component of the health score.
    Component, sco::Component {
        /// Usage, last 30 days against the 30 before.
        UsageTrend,
        /// Active users over seats.
        Breadth,
        /// Invoices paid on time.
        PaymentPunctuality,
        /// Downgrades.
        PlanChanges,
        /// Tickets and complaints.
        SupportEngagement,
        /// NPS and CSAT.
        Sentiment,
        /// First value reached, and how fast.
        Onboarding,
        /// Champions and decision makers staying.
        StakeholderStability,
        /// Time to the renewal.
        RenewalProximity,
    }
);

mirror_enum!(
    /// Value tier.
    Tier, sco::Tier {
        /// Top revenue.
        Diamond,
        /// Next revenue band.
        Gold,
        /// Flagged strategic.
        Strategic,
        /// Fast growing.
        Potential,
        /// The rest.
        General,
        /// Red or past due.
        Problem,
    }
);

mirror_enum!(
    /// Value x loyalty quadrant.
    Quadrant, sco::Quadrant {
        /// High value, high loyalty.
        A,
        /// High value, low loyalty.
        B,
        /// Low value, high loyalty.
        C,
        /// Low value, low loyalty.
        D,
        /// Dormant.
        E,
    }
);

mirror_enum!(
    /// Why an alert was raised.
    AlertKind, sco::AlertKind {
        /// The score fell into red.
        EnteredRed,
        /// The score dropped by the configured amount.
        ScoreDrop,
        /// The churn risk passed the threshold.
        HighRisk,
    }
);

mirror_enum!(
    /// Where an alert is in its life.
    AlertState, sco::AlertState {
        /// Waiting for someone.
        Open,
        /// Someone is on it.
        Acknowledged,
        /// Done.
        Resolved,
    }
);

/// A basis-point value as a fraction.
pub fn fraction(bp: i32) -> f64 {
    f64::from(bp) / 10_000.0
}

/// One component of a health score.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ComponentScore {
    /// Which component.
    pub component: Component,
    /// Its score, 0..100.
    pub score: i32,
    /// Its weight in the scorecard.
    pub weight: i32,
    /// Its share of the total after renormalisation (0..1).
    pub effective_weight: f64,
    /// One line saying why.
    pub reason: String,
}

/// The health of one account.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Health {
    /// The account.
    pub account_id: String,
    /// The score, 0..100.
    pub score: i32,
    /// Its band.
    pub band: Band,
    /// The components that have data.
    pub components: Vec<ComponentScore>,
    /// Components without data (their weight was dropped and the rest renormalised).
    pub missing: Vec<Component>,
    /// Score now minus 7 days ago.
    pub delta_7d: Option<i32>,
    /// Score now minus 30 days ago.
    pub delta_30d: Option<i32>,
    /// Segment (it chose the scorecard).
    pub segment: Segment,
    /// Scorecard version used.
    pub scorecard_version: i64,
    /// Churn probability within the horizon (0..1); absent without a model.
    pub churn_risk: Option<f64>,
    /// Value tier.
    pub tier: Tier,
    /// Value x loyalty quadrant.
    pub quadrant: Quadrant,
    /// MRR in minor units of the reporting currency.
    pub mrr_minor_units: i64,
    /// When it was computed.
    pub computed_at: Option<DateTime<Utc>>,
}

impl From<sco::AccountHealth> for Health {
    fn from(h: sco::AccountHealth) -> Self {
        Self {
            account_id: h.account_id,
            score: h.score,
            band: h.band.into(),
            components: h
                .components
                .into_iter()
                .map(|c| ComponentScore {
                    component: c.component.into(),
                    score: c.score,
                    weight: c.weight,
                    effective_weight: fraction(c.effective_weight_bp),
                    reason: c.reason,
                })
                .collect(),
            missing: h.missing.into_iter().map(Into::into).collect(),
            delta_7d: h.delta_7d,
            delta_30d: h.delta_30d,
            segment: h.segment.into(),
            scorecard_version: h.scorecard_version,
            churn_risk: h.churn_risk_bp.map(fraction),
            tier: h.tier.into(),
            quadrant: h.quadrant.into(),
            mrr_minor_units: h.mrr_minor_units,
            computed_at: time(h.compute_time.as_ref()),
        }
    }
}

/// A driver of an account's churn risk.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RiskDriver {
    /// Feature name.
    pub feature: String,
    /// Contribution to the log-odds: positive raises the risk.
    pub contribution: f64,
    /// The account's value of the feature.
    pub value: f64,
}

/// An account's churn risk.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChurnRisk {
    /// The account.
    pub account_id: String,
    /// Probability of churning within the horizon (0..1).
    pub probability: f64,
    /// Horizon in days.
    pub horizon_days: i32,
    /// What raises the risk most, largest first.
    pub top_drivers: Vec<RiskDriver>,
    /// The model used.
    pub model_id: String,
}

/// A scored account (at risk, or a row of the health list), with what a
/// customer-success team acts on.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AtRiskAccount {
    /// The account.
    pub account_id: String,
    /// Its name.
    pub name: String,
    /// Its owner.
    pub owner: String,
    /// Its CSM.
    pub csm: String,
    /// Health score.
    pub score: i32,
    /// Health band.
    pub band: Band,
    /// Churn probability (0..1); absent without a model.
    pub churn_risk: Option<f64>,
    /// Score change over 30 days.
    pub delta_30d: Option<i32>,
    /// Segment.
    pub segment: Segment,
    /// Value tier.
    pub tier: Tier,
    /// MRR in minor units.
    pub mrr_minor_units: i64,
    /// The weakest component's explanation: why it is at risk.
    pub reason: String,
}

/// One page of accounts at risk.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AtRiskPage {
    /// Lowest score first.
    pub accounts: Vec<AtRiskAccount>,
    /// Next page token; empty on the last page.
    pub next_page_token: String,
}

/// One page of the health list.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HealthPage {
    /// In the order asked (lowest score first by default).
    pub accounts: Vec<AtRiskAccount>,
    /// Next page token; empty on the last page.
    pub next_page_token: String,
}

/// A call to action.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Alert {
    /// Id.
    pub id: String,
    /// The account.
    pub account_id: String,
    /// Why it was raised.
    pub kind: AlertKind,
    /// Where it is.
    pub state: AlertState,
    /// What to look at.
    pub message: String,
    /// Health score when raised.
    pub score: i32,
    /// Churn risk when raised (0..1).
    pub churn_risk: f64,
    /// Raised at.
    pub created_at: Option<DateTime<Utc>>,
    /// Last changed at.
    pub updated_at: Option<DateTime<Utc>>,
    /// Note of whoever acknowledged or resolved it.
    pub note: String,
}

/// One page of alerts.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AlertPage {
    /// Newest first.
    pub alerts: Vec<Alert>,
    /// Next page token; empty on the last page.
    pub next_page_token: String,
}

/// Accounts and revenue of one value tier.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TierSummary {
    /// The tier.
    pub tier: Tier,
    /// Accounts.
    pub accounts: i64,
    /// Their MRR (minor units).
    pub mrr_minor_units: i64,
    /// Their share of total MRR (0..1).
    pub revenue_share: f64,
}

/// Accounts and revenue of one quadrant.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QuadrantSummary {
    /// The quadrant.
    pub quadrant: Quadrant,
    /// Accounts.
    pub accounts: i64,
    /// Their MRR (minor units).
    pub mrr_minor_units: i64,
    /// Their share of total MRR (0..1).
    pub revenue_share: f64,
}

/// Value tiers and quadrants.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ValueSegments {
    /// Every tier.
    pub tiers: Vec<TierSummary>,
    /// Every quadrant.
    pub quadrants: Vec<QuadrantSummary>,
    /// Scored accounts.
    pub accounts: i64,
    /// Total MRR (minor units).
    pub mrr_minor_units: i64,
    /// Share of MRR carried by the top 20% of accounts (0..1).
    pub top_20_percent_share: f64,
}
