//! The JSON shapes of the funnel routes and their conversions from the
//! funnel service's messages.

use bowtie_proto::funnel as fun;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::common::{Money, Segment, Stage, mirror_enum, seconds, time};
use crate::schema;

mirror_enum!(
    /// Which stage entries a funnel report counts.
    CohortBy, fun::CohortBy {
        /// Entries that happened in the period.
        StageEntry,
        /// Attempts that started in the period, followed through later stages.
        AttemptStart,
    }
);

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
    #[schema(schema_with = Stage::input_schema)]
    pub stage: Stage,
    /// Business time; at most one day ahead.
    #[schema(schema_with = schema::time)]
    pub occurred_at: DateTime<Utc>,
    /// Reason code (at most 64 lower-case letters, digits or underscores);
    /// required for LOST and CHURNED.
    #[serde(default)]
    #[schema(schema_with = schema::reason)]
    pub reason: String,
    /// Origin, at most 64 characters; defaults to `api`.
    #[serde(default)]
    #[schema(schema_with = schema::optional_text::<64>)]
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

impl From<fun::RecordTransitionResponse> for RecordedTransition {
    fn from(r: fun::RecordTransitionResponse) -> Self {
        Self {
            transition: r.transition.map(Into::into),
            applied: r.applied,
            current_stage: r.current_stage.into(),
        }
    }
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

/// One funnel cohort's progress through the later stages.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CohortProgress {
    /// The later stage.
    pub stage: Stage,
    /// Members that reached it by the end of month k after entry.
    pub reached: Vec<i64>,
    /// reached / cohort size.
    pub share: Vec<f64>,
}

/// A monthly funnel cohort.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FunnelCohort {
    /// Entry month, `YYYY-MM`.
    pub month: String,
    /// Attempts that entered in that month.
    pub size: i64,
    /// Progress per later stage.
    pub progress: Vec<CohortProgress>,
}

/// Funnel cohorts by entry month.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FunnelCohorts {
    /// The cohort-defining stage.
    pub cohort_stage: Stage,
    /// Oldest first.
    pub cohorts: Vec<FunnelCohort>,
}

impl From<fun::GetCohortReportResponse> for FunnelCohorts {
    fn from(r: fun::GetCohortReportResponse) -> Self {
        Self {
            cohort_stage: r.cohort_stage.into(),
            cohorts: r
                .cohorts
                .into_iter()
                .map(|c| FunnelCohort {
                    month: c.month,
                    size: c.size,
                    progress: c
                        .progress
                        .into_iter()
                        .map(|p| CohortProgress {
                            stage: p.stage.into(),
                            reached: p.reached,
                            share: p.share,
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// One stage's measured rates over the window.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MeasuredStage {
    /// The stage (AWARENESS .. IMPACT).
    pub stage: Stage,
    /// Entries into the stage in the window.
    pub volume: i64,
    /// Of them, entries that reached the next stage.
    pub converted: i64,
    /// converted / volume.
    pub conversion_rate: f64,
    /// Median seconds to the next stage; absent when none converted (the
    /// model uses 0).
    pub median_time_to_next_seconds: Option<f64>,
}

/// The figures the sensitivity model runs on.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SensitivityInputs {
    /// First instant of the 12 measured months.
    pub window_start: Option<DateTime<Utc>>,
    /// First instant after them (the first of the month of `as_of`).
    pub window_end: Option<DateTime<Utc>>,
    /// Entries into AWARENESS in the window.
    pub awareness_entries: i64,
    /// awareness_entries / 12.
    pub leads_per_month: f64,
    /// AWARENESS to IMPACT.
    pub stages: Vec<MeasuredStage>,
    /// Revenue's NEW MRR over the window.
    pub new_mrr: Money,
    /// Revenue's NEW movements over the window.
    pub new_accounts: i64,
    /// new_mrr / new_accounts, half up.
    pub mean_first_mrr: Money,
    /// Mean monthly churned / paying at the month's start, over the months
    /// that began with a paying account.
    pub monthly_logo_churn: f64,
    /// How many months that mean is over.
    pub churn_months: i32,
    /// Revenue's EXPANSION MRR over the window.
    pub expansion_mrr: Money,
    /// Entries into GROWTH in the window.
    pub growth_entries: i64,
    /// expansion_mrr / growth_entries, half up.
    pub mean_expansion_mrr: Money,
}

/// How the ARR added moves with one stage's rates.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StageSensitivity {
    /// The stage.
    pub stage: Stage,
    /// 1 for the stage to work on first.
    pub rank: i32,
    /// The conversion plus one point, at most 1.
    pub raised_conversion_rate: f64,
    /// ARR added with it, less the baseline.
    pub arr_delta_conversion: Money,
    /// The median time less 10%, in seconds.
    pub shortened_time_to_next_seconds: Option<f64>,
    /// ARR added with it, less the baseline.
    pub arr_delta_time: Money,
    /// The larger of the two deltas.
    pub arr_delta_best: Money,
}

/// Which stage to work on first: the ARR the next 12 months of leads add
/// at the measured rates, and how a point of conversion or 10% less time
/// in each stage changes it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StageSensitivityReport {
    /// What the model ran on.
    pub inputs: Option<SensitivityInputs>,
    /// 12 x the MRR, at the horizon's end, of the leads of the next 12 months.
    pub baseline_arr_added: Money,
    /// AWARENESS to IMPACT, in bowtie order.
    pub stages: Vec<StageSensitivity>,
    /// The same stages, best to work on first.
    pub ranking: Vec<Stage>,
    /// The currency of every amount.
    pub reporting_currency: String,
}

impl From<fun::GetStageSensitivityResponse> for StageSensitivityReport {
    fn from(r: fun::GetStageSensitivityResponse) -> Self {
        let money = |m: Option<bowtie_proto::common::Money>| Money::from_pb(m.as_ref());
        Self {
            inputs: r.inputs.map(|i| SensitivityInputs {
                window_start: time(i.window_start.as_ref()),
                window_end: time(i.window_end.as_ref()),
                awareness_entries: i.awareness_entries,
                leads_per_month: i.leads_per_month,
                stages: i
                    .stages
                    .into_iter()
                    .map(|s| MeasuredStage {
                        stage: s.stage.into(),
                        volume: s.volume,
                        converted: s.converted,
                        conversion_rate: s.conversion_rate,
                        median_time_to_next_seconds: seconds(s.median_time_to_next.as_ref()),
                    })
                    .collect(),
                new_mrr: money(i.new_mrr),
                new_accounts: i.new_accounts,
                mean_first_mrr: money(i.mean_first_mrr),
                monthly_logo_churn: i.monthly_logo_churn,
                churn_months: i.churn_months,
                expansion_mrr: money(i.expansion_mrr),
                growth_entries: i.growth_entries,
                mean_expansion_mrr: money(i.mean_expansion_mrr),
            }),
            baseline_arr_added: money(r.baseline_arr_added),
            stages: r
                .stages
                .into_iter()
                .map(|s| StageSensitivity {
                    stage: s.stage.into(),
                    rank: s.rank,
                    raised_conversion_rate: s.raised_conversion_rate,
                    arr_delta_conversion: money(s.arr_delta_conversion),
                    shortened_time_to_next_seconds: seconds(s.shortened_time_to_next.as_ref()),
                    arr_delta_time: money(s.arr_delta_time),
                    arr_delta_best: money(s.arr_delta_best),
                })
                .collect(),
            ranking: r.ranking.into_iter().map(Into::into).collect(),
            reporting_currency: r.reporting_currency_code,
        }
    }
}
