//! The JSON shapes of the REST API and their conversions from and to the
//! protobuf messages.
//!
//! They are written out rather than derived from the protos so the API reads
//! like JSON (enum values without their prefix, RFC 3339 times, durations in
//! seconds, report amounts as minor units beside one currency) and so the
//! OpenAPI document, generated from these types, describes exactly what is
//! sent.

use bowtie_proto::{accounts as acc, common, funnel as fun, revenue as rev, scoring as sco};
use chrono::{DateTime, Utc};
use prost_types::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Declares a JSON enum mirroring a protobuf enum: `UNSPECIFIED` for the
/// zero value (and any value this gateway does not know yet), the other
/// values without their prefix.
macro_rules! mirror_enum {
    ($(#[$meta:meta])* $name:ident, $pb:path { $($(#[$vmeta:meta])* $variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum $name {
            /// Not set (or a value this gateway does not know).
            #[default]
            Unspecified,
            $($(#[$vmeta])* $variant),+
        }

        impl From<i32> for $name {
            fn from(v: i32) -> Self {
                use $pb as P;
                match P::try_from(v) {
                    $(Ok(P::$variant) => $name::$variant,)+
                    _ => $name::Unspecified,
                }
            }
        }

        impl From<$name> for i32 {
            fn from(v: $name) -> i32 {
                use $pb as P;
                match v {
                    $name::Unspecified => 0,
                    $($name::$variant => P::$variant as i32,)+
                }
            }
        }
    };
}

mirror_enum!(
    /// A bowtie stage or outcome.
    Stage, common::Stage {
        /// A target account is identified.
        Awareness,
        /// It engages and is qualified (MQL).
        Education,
        /// An opportunity is open (SQL).
        Selection,
        /// Contract signed.
        Commit,
        /// Being set up.
        Onboarding,
        /// First value reached.
        Impact,
        /// Renewed and/or expanded.
        Growth,
        /// Did not buy.
        Lost,
        /// All revenue gone.
        Churned,
    }
);

mirror_enum!(
    /// Customer segment.
    Segment, common::Segment {
        /// Small business.
        Smb,
        /// Mid-market.
        MidMarket,
        /// Enterprise.
        Enterprise,
    }
);

mirror_enum!(
    /// How customer success covers an account.
    CoverageModel, common::CoverageModel {
        /// Automated programmes.
        TechTouch,
        /// A pool of CSMs.
        PooledCsm,
        /// A named senior CSM.
        NamedCsm,
    }
);

mirror_enum!(
    /// Account lifecycle status.
    AccountStatus, acc::AccountStatus {
        /// Live.
        Active,
        /// Archived.
        Archived,
    }
);

mirror_enum!(
    /// Which stage entries a funnel report counts.
    CohortBy, fun::CohortBy {
        /// Entries that happened in the period.
        StageEntry,
        /// Attempts that started in the period, followed through later stages.
        AttemptStart,
    }
);

mirror_enum!(
    /// Kind of MRR movement.
    MovementType, rev::MovementType {
        /// First payment.
        New,
        /// MRR up.
        Expansion,
        /// MRR down.
        Contraction,
        /// MRR to zero.
        Churn,
        /// Paying again after churn.
        Reactivation,
    }
);

mirror_enum!(
    /// Report granularity.
    Granularity, rev::Granularity {
        /// Calendar months.
        Month,
        /// Calendar quarters.
        Quarter,
    }
);

mirror_enum!(
    /// Billing interval.
    BillingInterval, rev::BillingInterval {
        /// Monthly.
        Month,
        /// Quarterly.
        Quarter,
        /// Yearly.
        Year,
    }
);

mirror_enum!(
    /// Voluntary or involuntary cancellation.
    CancellationKind, rev::CancellationKind {
        /// The customer chose to leave.
        Voluntary,
        /// Payment failure, business closed.
        Involuntary,
    }
);

mirror_enum!(
    /// Outcome of a renewal.
    RenewalOutcome, rev::RenewalOutcome {
        /// Renewed flat.
        Renewed,
        /// Renewed with expansion.
        RenewedWithExpansion,
        /// Renewed with contraction.
        RenewedWithContraction,
        /// Churned at renewal.
        Churned,
    }
);

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

/// Business time from a protobuf timestamp.
pub fn time(t: Option<&Timestamp>) -> Option<DateTime<Utc>> {
    t.and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
}

/// A protobuf timestamp from business time.
pub fn timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// Seconds of a protobuf duration.
pub fn seconds(d: Option<&prost_types::Duration>) -> Option<f64> {
    d.map(|d| d.seconds as f64 + f64::from(d.nanos) / 1e9)
}

/// An amount of money.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Money {
    /// ISO-4217 code, e.g. `USD`.
    pub currency: String,
    /// Whole minor units (cents).
    pub minor_units: i64,
}

impl Money {
    /// From the protobuf message (absent is zero of no currency).
    pub fn from_pb(m: Option<&common::Money>) -> Self {
        m.map_or(
            Self {
                currency: String::new(),
                minor_units: 0,
            },
            |m| Self {
                currency: m.currency_code.clone(),
                minor_units: m.minor_units,
            },
        )
    }

    /// To the protobuf message.
    pub fn to_pb(&self) -> common::Money {
        common::Money {
            currency_code: self.currency.clone(),
            minor_units: self.minor_units,
        }
    }
}

fn minor(m: Option<&common::Money>) -> i64 {
    m.map_or(0, |m| m.minor_units)
}

// --- accounts -------------------------------------------------------------

/// The id of an account in another system.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExternalId {
    /// The system, e.g. `hubspot`.
    pub source: String,
    /// The id there.
    pub external_id: String,
}

/// An account.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Account {
    /// UUID.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Segment.
    pub segment: Segment,
    /// Coverage model derived from the segment.
    pub coverage_model: CoverageModel,
    /// Industry.
    pub industry: String,
    /// Sales owner.
    pub owner: String,
    /// Customer success manager.
    pub csm: String,
    /// Flagged strategic.
    pub strategic: bool,
    /// Ids in other systems.
    pub external_ids: Vec<ExternalId>,
    /// Lifecycle status.
    pub status: AccountStatus,
    /// Version, for `expected_version` on updates.
    pub version: i64,
    /// Created at.
    pub created_at: Option<DateTime<Utc>>,
    /// Last changed at.
    pub updated_at: Option<DateTime<Utc>>,
}

impl From<acc::Account> for Account {
    fn from(a: acc::Account) -> Self {
        Self {
            id: a.id,
            name: a.name,
            segment: a.segment.into(),
            coverage_model: a.coverage_model.into(),
            industry: a.industry,
            owner: a.owner,
            csm: a.csm,
            strategic: a.strategic,
            external_ids: a
                .external_ids
                .into_iter()
                .map(|e| ExternalId {
                    source: e.source,
                    external_id: e.external_id,
                })
                .collect(),
            status: a.status.into(),
            version: a.version,
            created_at: time(a.create_time.as_ref()),
            updated_at: time(a.update_time.as_ref()),
        }
    }
}

/// A new account.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct NewAccount {
    /// Display name, 1 to 200 characters.
    pub name: String,
    /// Segment; required.
    pub segment: Segment,
    /// Industry.
    #[serde(default)]
    pub industry: String,
    /// Sales owner.
    #[serde(default)]
    pub owner: String,
    /// Customer success manager.
    #[serde(default)]
    pub csm: String,
    /// Strategic flag.
    #[serde(default)]
    pub strategic: bool,
    /// Ids in other systems, at most one per source.
    #[serde(default)]
    pub external_ids: Vec<ExternalId>,
}

impl NewAccount {
    /// The protobuf account.
    pub fn to_pb(&self) -> acc::Account {
        acc::Account {
            name: self.name.clone(),
            segment: self.segment.into(),
            industry: self.industry.clone(),
            owner: self.owner.clone(),
            csm: self.csm.clone(),
            strategic: self.strategic,
            external_ids: self
                .external_ids
                .iter()
                .map(|e| acc::ExternalId {
                    source: e.source.clone(),
                    external_id: e.external_id.clone(),
                })
                .collect(),
            ..acc::Account::default()
        }
    }
}

/// Changes to an account: only the fields present change.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct AccountChanges {
    /// New name.
    pub name: Option<String>,
    /// New segment.
    pub segment: Option<Segment>,
    /// New industry.
    pub industry: Option<String>,
    /// New owner.
    pub owner: Option<String>,
    /// New CSM.
    pub csm: Option<String>,
    /// New strategic flag.
    pub strategic: Option<bool>,
    /// Apply only if the account is still at this version (else 409 ABORTED).
    pub expected_version: Option<i64>,
}

impl AccountChanges {
    /// The protobuf account with `id` and the update mask naming the changed fields.
    pub fn to_pb(&self, id: &str) -> (acc::Account, Vec<String>) {
        let mut a = acc::Account {
            id: id.to_owned(),
            ..acc::Account::default()
        };
        let mut mask = Vec::new();
        if let Some(v) = &self.name {
            a.name = v.clone();
            mask.push("name".to_owned());
        }
        if let Some(v) = self.segment {
            a.segment = v.into();
            mask.push("segment".to_owned());
        }
        if let Some(v) = &self.industry {
            a.industry = v.clone();
            mask.push("industry".to_owned());
        }
        if let Some(v) = &self.owner {
            a.owner = v.clone();
            mask.push("owner".to_owned());
        }
        if let Some(v) = &self.csm {
            a.csm = v.clone();
            mask.push("csm".to_owned());
        }
        if let Some(v) = self.strategic {
            a.strategic = v;
            mask.push("strategic".to_owned());
        }
        (a, mask)
    }
}

/// One page of accounts.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AccountPage {
    /// The accounts, oldest first.
    pub accounts: Vec<Account>,
    /// Pass as `page_token` for the next page; empty on the last page.
    pub next_page_token: String,
}

/// Result of an upsert by external id.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UpsertedAccount {
    /// The account after the upsert.
    pub account: Account,
    /// True when it did not exist before.
    pub created: bool,
}

// --- funnel ---------------------------------------------------------------

/// A recorded stage transition.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Transition {
    /// Id.
    pub id: String,
    /// The account.
    pub account_id: String,
    /// Stage or outcome entered.
    pub stage: Stage,
    /// Business time.
    pub occurred_at: Option<DateTime<Utc>>,
    /// When it was recorded.
    pub recorded_at: Option<DateTime<Utc>>,
    /// Reason code (LOST, CHURNED).
    pub reason: String,
    /// Origin, e.g. `crm:hubspot`.
    pub source: String,
}

impl From<fun::Transition> for Transition {
    fn from(t: fun::Transition) -> Self {
        Self {
            id: t.id,
            account_id: t.account_id,
            stage: t.to_stage.into(),
            occurred_at: time(t.occurred_at.as_ref()),
            recorded_at: time(t.record_time.as_ref()),
            reason: t.reason,
            source: t.source,
        }
    }
}

/// A transition to record.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct NewTransition {
    /// Stage or outcome entered.
    pub stage: Stage,
    /// Business time; at most one day ahead.
    pub occurred_at: DateTime<Utc>,
    /// Reason code; required for LOST and CHURNED.
    #[serde(default)]
    pub reason: String,
    /// Origin; defaults to `api`.
    #[serde(default)]
    pub source: String,
}

/// Result of recording a transition.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RecordedTransition {
    /// The transition as stored.
    pub transition: Option<Transition>,
    /// False when it was a no-op repeat.
    pub applied: bool,
    /// The account's stage afterwards.
    pub current_stage: Stage,
}

/// One continuous stay in a stage.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StageVisit {
    /// The stage.
    pub stage: Stage,
    /// Entered at.
    pub entered_at: Option<DateTime<Utc>>,
    /// Left at; absent for the current stage.
    pub exited_at: Option<DateTime<Utc>>,
    /// Seconds spent.
    pub duration_seconds: Option<f64>,
    /// Attempt number.
    pub attempt: i32,
}

/// Total time in one stage.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StageTime {
    /// The stage.
    pub stage: Stage,
    /// Seconds over all visits.
    pub total_seconds: Option<f64>,
    /// Visits.
    pub visits: i32,
}

/// An account's path through the bowtie.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Journey {
    /// The account.
    pub account_id: String,
    /// Current stage or outcome.
    pub current_stage: Stage,
    /// Since when.
    pub current_since: Option<DateTime<Utc>>,
    /// Transitions by business time.
    pub transitions: Vec<Transition>,
    /// Stage visits in order.
    pub visits: Vec<StageVisit>,
    /// Time per stage, bowtie order.
    pub time_in_stage: Vec<StageTime>,
    /// Attempts (1 + returns after LOST or CHURNED).
    pub attempts: i32,
}

impl From<fun::Journey> for Journey {
    fn from(j: fun::Journey) -> Self {
        Self {
            account_id: j.account_id,
            current_stage: j.current_stage.into(),
            current_since: time(j.current_since.as_ref()),
            transitions: j.transitions.into_iter().map(Into::into).collect(),
            visits: j
                .visits
                .into_iter()
                .map(|v| StageVisit {
                    stage: v.stage.into(),
                    entered_at: time(v.enter_time.as_ref()),
                    exited_at: time(v.exit_time.as_ref()),
                    duration_seconds: seconds(v.duration.as_ref()),
                    attempt: v.attempt,
                })
                .collect(),
            time_in_stage: j
                .time_in_stage
                .into_iter()
                .map(|t| StageTime {
                    stage: t.stage.into(),
                    total_seconds: seconds(t.total.as_ref()),
                    visits: t.visits,
                })
                .collect(),
            attempts: j.attempts,
        }
    }
}

/// Where accounts left the bowtie, for one reason.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DropOff {
    /// LOST or CHURNED.
    pub outcome: Stage,
    /// Reason code.
    pub reason: String,
    /// Entries that ended this way.
    pub count: i64,
}

/// Metrics of one stage.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StageMetrics {
    /// The stage.
    pub stage: Stage,
    /// Entries into the stage.
    pub volume: i64,
    /// Entries that reached the next stage.
    pub converted: i64,
    /// converted / volume.
    pub conversion_rate: f64,
    /// Entries that dropped off.
    pub dropped: i64,
    /// Drop-offs by reason.
    pub drop_offs: Vec<DropOff>,
    /// Median seconds to the next stage.
    pub median_time_to_next_seconds: Option<f64>,
    /// 90th percentile seconds to the next stage.
    pub p90_time_to_next_seconds: Option<f64>,
}

/// The funnel report.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FunnelReport {
    /// One row per stage, AWARENESS to GROWTH.
    pub stages: Vec<StageMetrics>,
    /// CR1 x CR2 x CR3.
    pub left_side_win_rate_product: f64,
    /// Measured win rate.
    pub measured_win_rate: f64,
    /// Attempts that entered AWARENESS.
    pub awareness_attempts: i64,
    /// Of those, attempts that reached COMMIT.
    pub won_attempts: i64,
    /// Median seconds from AWARENESS to COMMIT.
    pub median_cycle_time_seconds: Option<f64>,
    /// 90th percentile of the same.
    pub p90_cycle_time_seconds: Option<f64>,
}

impl From<fun::GetFunnelReportResponse> for FunnelReport {
    fn from(r: fun::GetFunnelReportResponse) -> Self {
        Self {
            stages: r
                .stages
                .into_iter()
                .map(|s| StageMetrics {
                    stage: s.stage.into(),
                    volume: s.volume,
                    converted: s.converted,
                    conversion_rate: s.conversion_rate,
                    dropped: s.dropped,
                    drop_offs: s
                        .drop_offs
                        .into_iter()
                        .map(|d| DropOff {
                            outcome: d.outcome.into(),
                            reason: d.reason,
                            count: d.count,
                        })
                        .collect(),
                    median_time_to_next_seconds: seconds(s.median_time_to_next.as_ref()),
                    p90_time_to_next_seconds: seconds(s.p90_time_to_next.as_ref()),
                })
                .collect(),
            left_side_win_rate_product: r.left_side_win_rate_product,
            measured_win_rate: r.measured_win_rate,
            awareness_attempts: r.awareness_attempts,
            won_attempts: r.won_attempts,
            median_cycle_time_seconds: seconds(r.median_cycle_time.as_ref()),
            p90_cycle_time_seconds: seconds(r.p90_cycle_time.as_ref()),
        }
    }
}

/// An account in a stage.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AccountInStage {
    /// The account.
    pub account_id: String,
    /// Its stage.
    pub stage: Stage,
    /// Since when.
    pub since: Option<DateTime<Utc>>,
    /// Segment.
    pub segment: Segment,
    /// Owner.
    pub owner: String,
}

/// One page of accounts in a stage.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AccountsInStagePage {
    /// Longest in the stage first.
    pub accounts: Vec<AccountInStage>,
    /// Next page token; empty on the last page.
    pub next_page_token: String,
}

impl From<fun::ListAccountsInStageResponse> for AccountsInStagePage {
    fn from(r: fun::ListAccountsInStageResponse) -> Self {
        Self {
            accounts: r
                .accounts
                .into_iter()
                .map(|a| AccountInStage {
                    account_id: a.account_id,
                    stage: a.stage.into(),
                    since: time(a.since.as_ref()),
                    segment: a.segment.into(),
                    owner: a.owner,
                })
                .collect(),
            next_page_token: r.page.map(|p| p.next_page_token).unwrap_or_default(),
        }
    }
}

// --- revenue --------------------------------------------------------------

/// One period of the MRR waterfall; amounts in minor units of the report's currency.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MrrPeriod {
    /// `YYYY-MM` or `YYYY-Qn`.
    pub period: String,
    /// MRR at the start.
    pub start_mrr: i64,
    /// NEW movements.
    pub new_mrr: i64,
    /// EXPANSION movements.
    pub expansion_mrr: i64,
    /// REACTIVATION movements.
    pub reactivation_mrr: i64,
    /// CONTRACTION movements (positive).
    pub contraction_mrr: i64,
    /// CHURN movements (positive).
    pub churn_mrr: i64,
    /// MRR at the end.
    pub end_mrr: i64,
    /// 12 x end MRR.
    pub end_arr: i64,
    /// Paying accounts at the start.
    pub paying_accounts_start: i64,
    /// Paying accounts at the end.
    pub paying_accounts_end: i64,
    /// First payments.
    pub new_accounts: i64,
    /// Reactivations.
    pub reactivated_accounts: i64,
    /// Churns.
    pub churned_accounts: i64,
    /// End MRR per paying account.
    pub arpa: i64,
    /// Churned / paying at start.
    pub customer_churn_rate: f64,
    /// (churn + contraction) / start MRR.
    pub revenue_churn_rate: f64,
}

/// The MRR report.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MrrReport {
    /// Currency of every amount.
    pub currency: String,
    /// Periods in order.
    pub periods: Vec<MrrPeriod>,
}

impl From<rev::GetMrrReportResponse> for MrrReport {
    fn from(r: rev::GetMrrReportResponse) -> Self {
        Self {
            currency: r.reporting_currency_code,
            periods: r
                .periods
                .into_iter()
                .map(|p| MrrPeriod {
                    period: p.period,
                    start_mrr: minor(p.start_mrr.as_ref()),
                    new_mrr: minor(p.new_mrr.as_ref()),
                    expansion_mrr: minor(p.expansion_mrr.as_ref()),
                    reactivation_mrr: minor(p.reactivation_mrr.as_ref()),
                    contraction_mrr: minor(p.contraction_mrr.as_ref()),
                    churn_mrr: minor(p.churn_mrr.as_ref()),
                    end_mrr: minor(p.end_mrr.as_ref()),
                    end_arr: minor(p.end_arr.as_ref()),
                    paying_accounts_start: p.paying_accounts_start,
                    paying_accounts_end: p.paying_accounts_end,
                    new_accounts: p.new_accounts,
                    reactivated_accounts: p.reactivated_accounts,
                    churned_accounts: p.churned_accounts,
                    arpa: minor(p.arpa.as_ref()),
                    customer_churn_rate: p.customer_churn_rate,
                    revenue_churn_rate: p.revenue_churn_rate,
                })
                .collect(),
        }
    }
}

/// Retention of the accounts paying at the start of a period.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Retention {
    /// Accounts paying at the start.
    pub accounts_start: i64,
    /// Of those, paying at the end.
    pub accounts_retained: i64,
    /// accounts_retained / accounts_start.
    pub logo_retention: f64,
    /// MRR at the start (minor units).
    pub mrr_start: i64,
    /// Sum of min(end, start) MRR.
    pub mrr_retained: i64,
    /// MRR at the end.
    pub mrr_end: i64,
    /// Gross revenue retention.
    pub grr: f64,
    /// Net revenue retention.
    pub nrr: f64,
    /// Currency of the amounts.
    pub currency: String,
}

impl From<rev::GetRetentionResponse> for Retention {
    fn from(r: rev::GetRetentionResponse) -> Self {
        Self {
            accounts_start: r.accounts_start,
            accounts_retained: r.accounts_retained,
            logo_retention: r.logo_retention,
            currency: Money::from_pb(r.mrr_start.as_ref()).currency,
            mrr_start: minor(r.mrr_start.as_ref()),
            mrr_retained: minor(r.mrr_retained.as_ref()),
            mrr_end: minor(r.mrr_end.as_ref()),
            grr: r.grr,
            nrr: r.nrr,
        }
    }
}

/// One cell of the cohort grid.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CohortCell {
    /// Months since the cohort month.
    pub month: i32,
    /// Cohort accounts paying at the end of that month.
    pub paying_accounts: i64,
    /// paying_accounts / cohort size.
    pub logo_retention: f64,
    /// The cohort's MRR then (minor units).
    pub mrr: i64,
    /// mrr / month-0 MRR.
    pub mrr_retention: f64,
}

/// One cohort by first payment month.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RevenueCohort {
    /// `YYYY-MM`.
    pub cohort: String,
    /// Accounts in it.
    pub accounts: i64,
    /// Cells per month that has ended.
    pub cells: Vec<CohortCell>,
}

/// The cohort retention grid.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CohortRetention {
    /// Currency of the amounts.
    pub currency: String,
    /// Cohorts in month order.
    pub cohorts: Vec<RevenueCohort>,
}

impl From<rev::GetCohortRetentionResponse> for CohortRetention {
    fn from(r: rev::GetCohortRetentionResponse) -> Self {
        Self {
            currency: r.reporting_currency_code,
            cohorts: r
                .cohorts
                .into_iter()
                .map(|c| RevenueCohort {
                    cohort: c.cohort,
                    accounts: c.accounts,
                    cells: c
                        .cells
                        .into_iter()
                        .map(|x| CohortCell {
                            month: x.month,
                            paying_accounts: x.paying_accounts,
                            logo_retention: x.logo_retention,
                            mrr: minor(x.mrr.as_ref()),
                            mrr_retention: x.mrr_retention,
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// One MRR movement.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Movement {
    /// The account.
    pub account_id: String,
    /// Kind.
    #[serde(rename = "type")]
    pub kind: MovementType,
    /// MRR after minus before.
    pub amount: Money,
    /// MRR before.
    pub mrr_before: Money,
    /// MRR after.
    pub mrr_after: Money,
    /// When.
    pub occurred_at: Option<DateTime<Utc>>,
    /// Segment.
    pub segment: Segment,
}

/// One page of movements.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MovementPage {
    /// By time, then account.
    pub movements: Vec<Movement>,
    /// Next page token; empty on the last page.
    pub next_page_token: String,
}

impl From<rev::ListMovementsResponse> for MovementPage {
    fn from(r: rev::ListMovementsResponse) -> Self {
        Self {
            movements: r
                .movements
                .into_iter()
                .map(|m| Movement {
                    account_id: m.account_id,
                    kind: m.r#type.into(),
                    amount: Money::from_pb(m.amount.as_ref()),
                    mrr_before: Money::from_pb(m.mrr_before.as_ref()),
                    mrr_after: Money::from_pb(m.mrr_after.as_ref()),
                    occurred_at: time(m.occurred_at.as_ref()),
                    segment: m.segment.into(),
                })
                .collect(),
            next_page_token: r.page.map(|p| p.next_page_token).unwrap_or_default(),
        }
    }
}

/// One entry of the renewal book.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RenewalEntry {
    /// The subscription.
    pub subscription_id: String,
    /// The account.
    pub account_id: String,
    /// Renewal date.
    pub renewal_at: Option<DateTime<Utc>>,
    /// Days to it (negative once passed).
    pub days_to_renewal: i64,
    /// Annual value at stake.
    pub amount_at_stake: Money,
    /// Likelihood in basis points.
    pub likelihood_basis_points: i32,
    /// amount x likelihood.
    pub forecast: Money,
    /// Recorded outcome.
    pub outcome: RenewalOutcome,
}

/// One page of the renewal book.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RenewalPage {
    /// By renewal date.
    pub renewals: Vec<RenewalEntry>,
    /// Next page token; empty on the last page.
    pub next_page_token: String,
}

impl From<rev::ListRenewalsResponse> for RenewalPage {
    fn from(r: rev::ListRenewalsResponse) -> Self {
        Self {
            renewals: r
                .renewals
                .into_iter()
                .map(|e| RenewalEntry {
                    subscription_id: e.subscription_id,
                    account_id: e.account_id,
                    renewal_at: time(e.renewal_at.as_ref()),
                    days_to_renewal: e.days_to_renewal,
                    amount_at_stake: Money::from_pb(e.amount_at_stake.as_ref()),
                    likelihood_basis_points: e.likelihood_basis_points,
                    forecast: Money::from_pb(e.forecast.as_ref()),
                    outcome: e.outcome.into(),
                })
                .collect(),
            next_page_token: r.page.map(|p| p.next_page_token).unwrap_or_default(),
        }
    }
}

/// What a subscription charges.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Terms {
    /// Plan name.
    pub plan: String,
    /// Seats or units.
    pub quantity: i64,
    /// Price of one unit per billing interval.
    pub unit_price: Money,
    /// Discount in basis points.
    #[serde(default)]
    pub discount_basis_points: i32,
}

impl Terms {
    fn from_pb(t: Option<&rev::Terms>) -> Option<Self> {
        t.map(|t| Self {
            plan: t.plan.clone(),
            quantity: t.quantity,
            unit_price: Money::from_pb(t.unit_price.as_ref()),
            discount_basis_points: t.discount_basis_points,
        })
    }

    /// To the protobuf message.
    pub fn to_pb(&self) -> rev::Terms {
        rev::Terms {
            plan: self.plan.clone(),
            quantity: self.quantity,
            unit_price: Some(self.unit_price.to_pb()),
            discount_basis_points: self.discount_basis_points,
        }
    }
}

/// A subscription.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Subscription {
    /// Id.
    pub id: String,
    /// The account.
    pub account_id: String,
    /// Billing interval.
    pub billing_interval: BillingInterval,
    /// Terms in force now (or the last ones).
    pub terms: Option<Terms>,
    /// Start.
    pub start_at: Option<DateTime<Utc>>,
    /// End of the trial.
    pub trial_end_at: Option<DateTime<Utc>>,
    /// Renewal date.
    pub term_end_at: Option<DateTime<Utc>>,
    /// Cancellation time, once cancelled.
    pub cancelled_at: Option<DateTime<Utc>>,
    /// Cancellation reason code, once cancelled.
    pub cancellation_reason: Option<String>,
    /// MRR now.
    pub mrr: Money,
    /// Version.
    pub version: i64,
}

impl From<rev::Subscription> for Subscription {
    fn from(s: rev::Subscription) -> Self {
        Self {
            id: s.id,
            account_id: s.account_id,
            billing_interval: s.billing_interval.into(),
            terms: Terms::from_pb(s.terms.as_ref()),
            start_at: time(s.start_at.as_ref()),
            trial_end_at: time(s.trial_end_at.as_ref()),
            term_end_at: time(s.term_end_at.as_ref()),
            cancelled_at: s
                .cancellation
                .as_ref()
                .and_then(|c| time(c.effective_at.as_ref())),
            cancellation_reason: s.cancellation.map(|c| c.reason_code),
            mrr: Money::from_pb(s.mrr.as_ref()),
            version: s.version,
        }
    }
}

/// A new subscription.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct NewSubscription {
    /// The account.
    pub account_id: String,
    /// Billing interval.
    pub billing_interval: BillingInterval,
    /// Terms at the start.
    pub terms: Terms,
    /// Start.
    pub start_at: DateTime<Utc>,
    /// End of a free trial.
    pub trial_end_at: Option<DateTime<Utc>>,
    /// End of the first term (renewal date).
    pub term_end_at: Option<DateTime<Utc>>,
}

impl NewSubscription {
    /// To the protobuf message.
    pub fn to_pb(&self) -> rev::Subscription {
        rev::Subscription {
            account_id: self.account_id.clone(),
            billing_interval: self.billing_interval.into(),
            terms: Some(self.terms.to_pb()),
            start_at: Some(timestamp(self.start_at)),
            trial_end_at: self.trial_end_at.map(timestamp),
            term_end_at: self.term_end_at.map(timestamp),
            ..rev::Subscription::default()
        }
    }
}

/// Unit economics of a month.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UnitEconomics {
    /// Sales and marketing spend.
    pub sales_and_marketing_spend: Money,
    /// New customers.
    pub new_customers: i64,
    /// Customer acquisition cost.
    pub cac: Money,
    /// Average revenue per account.
    pub arpa: Money,
    /// Gross margin (0..1).
    pub gross_margin: f64,
    /// Mean monthly churn rate over 6 months.
    pub average_monthly_churn_rate: f64,
    /// Lifetime value.
    pub ltv: Money,
    /// LTV / CAC.
    pub ltv_to_cac: f64,
    /// CAC payback in months.
    pub cac_payback_months: f64,
}

impl From<rev::GetUnitEconomicsResponse> for UnitEconomics {
    fn from(r: rev::GetUnitEconomicsResponse) -> Self {
        Self {
            sales_and_marketing_spend: Money::from_pb(r.sales_and_marketing_spend.as_ref()),
            new_customers: r.new_customers,
            cac: Money::from_pb(r.cac.as_ref()),
            arpa: Money::from_pb(r.arpa.as_ref()),
            gross_margin: r.gross_margin,
            average_monthly_churn_rate: r.average_monthly_churn_rate,
            ltv: Money::from_pb(r.ltv.as_ref()),
            ltv_to_cac: r.ltv_to_cac,
            cac_payback_months: r.cac_payback_months,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_drop_their_protobuf_prefix_both_ways() -> anyhow::Result<()> {
        let segment = Segment::from(common::Segment::MidMarket as i32);
        assert_eq!(serde_json::to_string(&segment)?, "\"MID_MARKET\"");
        let stage: Stage = serde_json::from_str("\"SELECTION\"")?;
        assert_eq!(i32::from(stage), common::Stage::Selection as i32);
        assert_eq!(Stage::from(42), Stage::Unspecified);
        Ok(())
    }

    #[test]
    fn account_changes_name_exactly_the_fields_present() {
        let changes = AccountChanges {
            owner: Some("bo@example.com".into()),
            strategic: Some(false),
            ..AccountChanges::default()
        };
        let (account, mask) = changes.to_pb("a1");
        assert_eq!(mask, vec!["owner".to_owned(), "strategic".to_owned()]);
        assert_eq!(account.id, "a1");
        assert_eq!(account.owner, "bo@example.com");
    }
}
