//! The JSON shapes of the revenue routes and their conversions from and to
//! the revenue service's messages.

use bowtie_proto::revenue as rev;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};

use crate::common::{Money, Segment, minor, mirror_enum, time, timestamp};
use crate::schema;

/// The schema of a price: a currency the revenue service knows and
/// non-negative minor units.
fn price_schema() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("currency", schema::currency())
        .property(
            "minor_units",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                .minimum(Some(0)),
        )
        .required("currency")
        .required("minor_units")
        .into()
}

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
    /// (new + expansion + reactivation) / (contraction + churn); `null` when
    /// the period lost nothing (undefined).
    pub quick_ratio: Option<f64>,
    /// In a cut: MRR moved into the value by accounts whose value changed
    /// while they paid (negative when more moved out); 0 uncut.
    pub moved_mrr: i64,
    /// In a cut: paying accounts moved in less those moved out.
    pub moved_accounts: i64,
}

/// The waterfall of one value of the group-by dimension.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MrrGroup {
    /// The value.
    pub value: String,
    /// Its periods.
    pub periods: Vec<MrrPeriod>,
}

/// The MRR report.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MrrReport {
    /// Currency of every amount.
    pub currency: String,
    /// Periods in order (of the cut's value with `cut`).
    pub periods: Vec<MrrPeriod>,
    /// With `group_by`: each value's waterfall, the largest end MRR first.
    pub groups: Vec<MrrGroup>,
}

fn mrr_periods(periods: Vec<rev::MrrPeriod>) -> Vec<MrrPeriod> {
    periods
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
            quick_ratio: p.quick_ratio,
            moved_mrr: minor(p.moved_mrr.as_ref()),
            moved_accounts: p.moved_accounts,
        })
        .collect()
}

impl From<rev::GetMrrReportResponse> for MrrReport {
    fn from(r: rev::GetMrrReportResponse) -> Self {
        Self {
            currency: r.reporting_currency_code,
            periods: mrr_periods(r.periods),
            groups: r
                .groups
                .into_iter()
                .map(|g| MrrGroup {
                    value: g.value,
                    periods: mrr_periods(g.periods),
                })
                .collect(),
        }
    }
}

/// MRR lost to one reason code in a period; amounts in minor units.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChurnReason {
    /// The reason code as stored; `payment_failure` for lapses of the
    /// past-due policy, `unspecified` when no cancellation caused the loss.
    pub reason_code: String,
    /// MRR lost (positive).
    pub lost_mrr: i64,
    /// Movements (logos for churn).
    pub movements: i64,
    /// lost_mrr / the period's total of that loss.
    pub share: f64,
}

/// MRR lost to one kind of cancellation in a period; amounts in minor units.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChurnKind {
    /// VOLUNTARY or INVOLUNTARY; UNSPECIFIED when no cancellation caused it.
    pub kind: CancellationKind,
    /// MRR lost (positive).
    pub lost_mrr: i64,
    /// Movements (logos for churn).
    pub movements: i64,
    /// lost_mrr / the period's total of that loss.
    pub share: f64,
}

/// One period of the churn analysis: totals equal the MRR report's churn
/// and contraction; each split adds up to them.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChurnPeriod {
    /// `YYYY-MM` or `YYYY-Qn`.
    pub period: String,
    /// CHURN movements (positive).
    pub churn_mrr: i64,
    /// Logos lost.
    pub churned_accounts: i64,
    /// Churn per reason, largest first.
    pub churn_by_reason: Vec<ChurnReason>,
    /// Churn per kind, largest first.
    pub churn_by_kind: Vec<ChurnKind>,
    /// CONTRACTION movements (positive).
    pub contraction_mrr: i64,
    /// Contraction movements.
    pub contractions: i64,
    /// Contraction per reason, largest first.
    pub contraction_by_reason: Vec<ChurnReason>,
    /// Contraction per kind, largest first.
    pub contraction_by_kind: Vec<ChurnKind>,
}

/// The churn analysis.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChurnAnalysis {
    /// Currency of every amount.
    pub currency: String,
    /// Periods in order.
    pub periods: Vec<ChurnPeriod>,
}

fn churn_reasons(lines: Vec<rev::ChurnReason>) -> Vec<ChurnReason> {
    lines
        .into_iter()
        .map(|l| ChurnReason {
            reason_code: l.reason_code,
            lost_mrr: minor(l.lost_mrr.as_ref()),
            movements: l.movements,
            share: l.share,
        })
        .collect()
}

fn churn_kinds(lines: Vec<rev::ChurnKind>) -> Vec<ChurnKind> {
    lines
        .into_iter()
        .map(|l| ChurnKind {
            kind: l.kind.into(),
            lost_mrr: minor(l.lost_mrr.as_ref()),
            movements: l.movements,
            share: l.share,
        })
        .collect()
}

impl From<rev::GetChurnAnalysisResponse> for ChurnAnalysis {
    fn from(r: rev::GetChurnAnalysisResponse) -> Self {
        Self {
            currency: r.reporting_currency_code,
            periods: r
                .periods
                .into_iter()
                .map(|p| ChurnPeriod {
                    period: p.period,
                    churn_mrr: minor(p.churn_mrr.as_ref()),
                    churned_accounts: p.churned_accounts,
                    churn_by_reason: churn_reasons(p.churn_by_reason),
                    churn_by_kind: churn_kinds(p.churn_by_kind),
                    contraction_mrr: minor(p.contraction_mrr.as_ref()),
                    contractions: p.contractions,
                    contraction_by_reason: churn_reasons(p.contraction_by_reason),
                    contraction_by_kind: churn_kinds(p.contraction_by_kind),
                })
                .collect(),
        }
    }
}

/// The trials started in one period, as they stand now.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TrialPeriod {
    /// `YYYY-MM` or `YYYY-Qn`.
    pub period: String,
    /// Trials started in the period.
    pub trials_started: i64,
    /// Of them, the ones whose first payment has come.
    pub converted: i64,
    /// Of them, the ones still in their trial.
    pub in_trial: i64,
    /// Of them, the ones over without paying.
    pub not_converted: i64,
    /// converted / trials_started; null when none started.
    pub conversion_rate: Option<f64>,
    /// Median days from a trial's start to its first payment; null when none converted.
    pub median_days_to_convert: Option<f64>,
}

/// Trial-to-paid conversion per month or quarter.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TrialConversion {
    /// Periods in order.
    pub periods: Vec<TrialPeriod>,
}

impl From<rev::GetTrialConversionResponse> for TrialConversion {
    fn from(r: rev::GetTrialConversionResponse) -> Self {
        Self {
            periods: r
                .periods
                .into_iter()
                .map(|p| TrialPeriod {
                    period: p.period,
                    trials_started: p.trials_started,
                    converted: p.converted,
                    in_trial: p.in_trial,
                    not_converted: p.not_converted,
                    conversion_rate: p.conversion_rate,
                    median_days_to_convert: p.median_days_to_convert,
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
    /// With `group_by`: one row per value at `start`, the largest starting
    /// MRR first.
    pub groups: Vec<RetentionGroup>,
}

/// Retention of the accounts with one value of the group-by dimension.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RetentionGroup {
    /// The value.
    pub value: String,
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
            groups: r
                .groups
                .into_iter()
                .map(|g| RetentionGroup {
                    value: g.value,
                    accounts_start: g.accounts_start,
                    accounts_retained: g.accounts_retained,
                    logo_retention: g.logo_retention,
                    mrr_start: minor(g.mrr_start.as_ref()),
                    mrr_retained: minor(g.mrr_retained.as_ref()),
                    mrr_end: minor(g.mrr_end.as_ref()),
                    grr: g.grr,
                    nrr: g.nrr,
                })
                .collect(),
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

impl From<rev::Movement> for Movement {
    fn from(m: rev::Movement) -> Self {
        Self {
            account_id: m.account_id,
            kind: m.r#type.into(),
            amount: Money::from_pb(m.amount.as_ref()),
            mrr_before: Money::from_pb(m.mrr_before.as_ref()),
            mrr_after: Money::from_pb(m.mrr_after.as_ref()),
            occurred_at: time(m.occurred_at.as_ref()),
            segment: m.segment.into(),
        }
    }
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
            movements: r.movements.into_iter().map(Movement::from).collect(),
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
    /// Plan name, 1 to 200 characters.
    #[schema(schema_with = schema::text::<200>)]
    pub plan: String,
    /// Seats or units, 0 to 1,000,000,000.
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    #[serde(deserialize_with = "crate::common::integer")]
    pub quantity: i64,
    /// Price of one unit per billing interval: a known currency and whole
    /// minor units, at least 0 (quantity x price at most 10^13).
    #[schema(schema_with = price_schema)]
    pub unit_price: Money,
    /// Discount in basis points, 0 to 10,000.
    #[serde(default, deserialize_with = "crate::common::integer")]
    #[schema(minimum = 0, maximum = 10_000)]
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
    #[schema(schema_with = schema::uuid)]
    pub account_id: String,
    /// Billing interval.
    #[schema(schema_with = BillingInterval::input_schema)]
    pub billing_interval: BillingInterval,
    /// Terms at the start.
    pub terms: Terms,
    /// Start.
    #[schema(schema_with = schema::time)]
    pub start_at: DateTime<Utc>,
    /// End of a free trial, not before `start_at`.
    #[schema(schema_with = schema::nullable_time)]
    pub trial_end_at: Option<DateTime<Utc>>,
    /// End of the first term (renewal date), after `start_at`.
    #[schema(schema_with = schema::nullable_time)]
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

/// New terms of a subscription from a time on.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct SubscriptionChange {
    /// The new terms (the currency never changes).
    pub terms: Terms,
    /// When they take effect.
    #[schema(schema_with = schema::time)]
    pub effective_at: DateTime<Utc>,
    /// Apply only if the subscription is still at this version (else 409 ABORTED).
    #[serde(default, deserialize_with = "crate::common::optional_integer")]
    pub expected_version: Option<i64>,
}

/// How and why a subscription ends.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct SubscriptionCancellation {
    /// When it stops; MRR is zero from then on.
    #[schema(schema_with = schema::time)]
    pub effective_at: DateTime<Utc>,
    /// VOLUNTARY or INVOLUNTARY.
    #[schema(schema_with = CancellationKind::input_schema)]
    pub kind: CancellationKind,
    /// A code of the churn reason taxonomy, e.g. `price`: 1 to 100 characters.
    #[schema(schema_with = schema::text::<100>)]
    pub reason_code: String,
    /// Apply only if the subscription is still at this version (else 409 ABORTED).
    #[serde(default, deserialize_with = "crate::common::optional_integer")]
    pub expected_version: Option<i64>,
}
