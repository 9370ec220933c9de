//! Stage sensitivity (docs/design.md 7.2): which stage to work on first.
//! Pure maths, no I/O: the service measures the inputs (the funnel's own
//! stage entries, revenue's waterfall) and this module turns them into the
//! ARR the next 12 months of leads add, and into how much that ARR moves
//! when one stage converts a point better or goes 10% faster.
//!
//! **The model.** Time runs in months of 365.25 / 12 days from the end of
//! the measured window, over a horizon of H = 12 months. Leads enter
//! AWARENESS at the measured monthly rate L, spread evenly over the horizon
//! (a continuous flow rather than a lump at each month's start, so a
//! shorter stage time always lets more leads close: lumps would make the
//! ARR jump at whole months and most time changes would move nothing). A
//! lead passes the left side with the product w = CR_AWARENESS x
//! CR_EDUCATION x CR_SELECTION of the measured conversions and closes
//! (COMMIT) C = T_AWARENESS + T_EDUCATION + T_SELECTION months after it
//! arrived (the median stage times). From its close it pays the mean first
//! MRR M; it is still paying u months later with probability q^u, q = 1 -
//! the monthly logo churn (fractional months compound exactly, no
//! rounding to whole months); and once R = T_COMMIT + T_ONBOARDING +
//! T_IMPACT months have passed since its close, a share g = CR_COMMIT x
//! CR_ONBOARDING x CR_IMPACT of the survivors has reached GROWTH and pays
//! the mean expansion MRR E on top.
//!
//! A lead arriving at a (0 <= a < H) has been a customer for u = H - C - a
//! months at the horizon's end, so only u >= 0 counts (leads whose cycle
//! ends after the horizon add nothing) and the MRR at the end is
//!
//! MRR(H) = L w [ M I(0, H - C) + g E I(R, H - C) ],
//! I(x, y) = integral of q^u du from x to y = (q^y - q^x) / ln q
//!
//! (y - x when nothing churns, 0 when everything does, 0 when y <= x).
//! The **ARR added** is 12 x MRR(H), in minor units, rounded half away from
//! zero once. Money inputs are whole minor units; rates are plain shares.

use bowtie_proto::common::Stage;

use crate::domain::FunnelReport;

/// Months the rates are measured over (the window before `as_of`).
pub const WINDOW_MONTHS: i32 = 12;
/// The horizon the ARR is measured at, in months.
pub const HORIZON_MONTHS: f64 = 12.0;
/// One month in microseconds: 365.25 / 12 days.
pub const MONTH_MICROS: f64 = 30.4375 * 86_400_000_000.0;
/// How much a stage's conversion is raised: one percentage point.
pub const CONVERSION_STEP: f64 = 0.01;
/// How much a stage's median time is cut: 10%.
pub const TIME_CUT: f64 = 0.10;

/// The stages that lead somewhere, in bowtie order: the three of the left
/// side, then COMMIT, ONBOARDING and IMPACT (GROWTH has no next stage).
pub const MODEL_STAGES: [Stage; 6] = [
    Stage::Awareness,
    Stage::Education,
    Stage::Selection,
    Stage::Commit,
    Stage::Onboarding,
    Stage::Impact,
];

/// How many of [`MODEL_STAGES`] are on the left side (before COMMIT).
const LEFT: usize = 3;

/// One stage's measured conversion to the next and median time to it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StageRate {
    /// Share of entries that reached the next stage, 0 to 1.
    pub conversion: f64,
    /// Median months from entering the stage to entering the next.
    pub months_to_next: f64,
}

/// The figures the model runs on.
#[derive(Debug, Clone, PartialEq)]
pub struct Inputs {
    /// Leads entering AWARENESS per month.
    pub leads_per_month: f64,
    /// Per stage of [`MODEL_STAGES`], in that order.
    pub stages: [StageRate; 6],
    /// What a new customer pays from its close (minor units a month).
    pub first_mrr: i64,
    /// Share of paying accounts lost each month, 0 to 1.
    pub monthly_churn: f64,
    /// What a customer adds when it reaches GROWTH (minor units a month).
    pub expansion_mrr: i64,
}

/// `integral of q^u du` over [from, to]: the customer-months still paying.
fn surviving(from: f64, to: f64, q: f64) -> f64 {
    if to <= from {
        return 0.0;
    }
    if q >= 1.0 {
        return to - from;
    }
    if q <= 0.0 {
        return 0.0;
    }
    (q.powf(to) - q.powf(from)) / q.ln()
}

/// A share clamped to 0..=1 (NaN as 0), so no measured figure can take the
/// model outside its domain.
fn share(x: f64) -> f64 {
    if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) }
}

/// A non-negative finite figure (NaN and negatives as 0).
fn non_negative(x: f64) -> f64 {
    if x.is_finite() && x > 0.0 { x } else { 0.0 }
}

/// The ARR (minor units, unrounded) the leads of the next 12 months add,
/// at the horizon's end.
pub fn arr_added_exact(inputs: &Inputs) -> f64 {
    let leads = non_negative(inputs.leads_per_month);
    let (left, right) = inputs.stages.split_at(LEFT);
    let win: f64 = left.iter().map(|s| share(s.conversion)).product();
    let cycle: f64 = left.iter().map(|s| non_negative(s.months_to_next)).sum();
    let grow: f64 = right.iter().map(|s| share(s.conversion)).product();
    let to_growth: f64 = right.iter().map(|s| non_negative(s.months_to_next)).sum();
    let q = 1.0 - share(inputs.monthly_churn);
    let paying_for = HORIZON_MONTHS - cycle;
    let first = inputs.first_mrr.max(0) as f64 * surviving(0.0, paying_for, q);
    let expansion = grow * inputs.expansion_mrr.max(0) as f64 * surviving(to_growth, paying_for, q);
    12.0 * leads * win * (first + expansion)
}

/// The ARR added, rounded once to the minor unit (half away from zero).
pub fn arr_added(inputs: &Inputs) -> i64 {
    arr_added_exact(inputs).round() as i64
}

/// How the ARR added moves with one stage's rates.
#[derive(Debug, Clone, PartialEq)]
pub struct StageSensitivity {
    /// The stage.
    pub stage: Stage,
    /// The conversion raised by one point, at most 1.
    pub raised_conversion: f64,
    /// ARR added with the raised conversion, less the baseline.
    pub conversion_delta: i64,
    /// The median time cut by 10%, in months.
    pub shortened_months: f64,
    /// ARR added with the shortened time, less the baseline.
    pub time_delta: i64,
    /// 1-based rank by the larger delta; ties in bowtie order.
    pub rank: i32,
}

impl StageSensitivity {
    /// The larger of the two deltas: what the ranking orders by.
    pub fn best(&self) -> i64 {
        self.conversion_delta.max(self.time_delta)
    }
}

/// The baseline and each stage's sensitivity.
#[derive(Debug, Clone, PartialEq)]
pub struct Sensitivity {
    /// ARR added at the measured rates.
    pub baseline: i64,
    /// Per stage of [`MODEL_STAGES`], in that order.
    pub stages: Vec<StageSensitivity>,
    /// The stages, the one to work on first first.
    pub ranking: Vec<Stage>,
}

/// Runs the model at the measured rates and once per stage with its
/// conversion raised by [`CONVERSION_STEP`] (capped at 1) and once with its
/// median time cut by [`TIME_CUT`]. A delta is the difference of the two
/// rounded ARRs, so baseline + delta is the ARR of the changed rates.
pub fn sensitivity(inputs: &Inputs) -> Sensitivity {
    let baseline = arr_added(inputs);
    let mut stages: Vec<StageSensitivity> = MODEL_STAGES
        .iter()
        .enumerate()
        .map(|(i, stage)| {
            let rate = inputs.stages[i];
            let raised_conversion = (share(rate.conversion) + CONVERSION_STEP).min(1.0);
            let shortened_months = non_negative(rate.months_to_next) * (1.0 - TIME_CUT);
            let mut raised = inputs.clone();
            raised.stages[i].conversion = raised_conversion;
            let mut faster = inputs.clone();
            faster.stages[i].months_to_next = shortened_months;
            StageSensitivity {
                stage: *stage,
                raised_conversion,
                conversion_delta: arr_added(&raised) - baseline,
                shortened_months,
                time_delta: arr_added(&faster) - baseline,
                rank: 0,
            }
        })
        .collect();
    let mut order: Vec<usize> = (0..stages.len()).collect();
    // A stable sort keeps bowtie order among equal deltas.
    order.sort_by_key(|i| std::cmp::Reverse(stages[*i].best()));
    for (rank, i) in order.iter().enumerate() {
        stages[*i].rank = rank as i32 + 1;
    }
    Sensitivity {
        baseline,
        ranking: order.iter().map(|i| stages[*i].stage).collect(),
        stages,
    }
}

/// Revenue's figures for one month of the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RevenueMonth {
    /// Sum of NEW movements (minor units).
    pub new_mrr: i64,
    /// NEW movements.
    pub new_accounts: i64,
    /// Sum of EXPANSION movements (minor units).
    pub expansion_mrr: i64,
    /// CHURN movements.
    pub churned_accounts: i64,
    /// Accounts paying at the month's first instant.
    pub paying_at_start: i64,
}

/// Revenue's figures over the window, as the model takes them.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RevenueRates {
    /// NEW MRR over the window.
    pub new_mrr: i64,
    /// NEW movements over the window.
    pub new_accounts: i64,
    /// new_mrr / new_accounts, half up (0 without new accounts).
    pub mean_first_mrr: i64,
    /// Mean of min(1, churned / paying at start) over the months that
    /// began with a paying account (0 when none did).
    pub monthly_churn: f64,
    /// How many months that mean is over.
    pub churn_months: i32,
    /// EXPANSION MRR over the window.
    pub expansion_mrr: i64,
}

/// `n / d` rounded half up, for `n >= 0` and `d > 0`; 0 when `d <= 0`.
pub fn mean_half_up(n: i64, d: i64) -> i64 {
    if d <= 0 {
        return 0;
    }
    let (n, d) = (i128::from(n.max(0)), i128::from(d));
    ((2 * n + d) / (2 * d)) as i64
}

/// Sums the window's months into the rates the model takes.
pub fn revenue_rates(months: &[RevenueMonth]) -> RevenueRates {
    let new_mrr = months.iter().map(|m| m.new_mrr).sum();
    let new_accounts = months.iter().map(|m| m.new_accounts).sum();
    let churn: Vec<f64> = months
        .iter()
        .filter(|m| m.paying_at_start > 0)
        .map(|m| share(m.churned_accounts as f64 / m.paying_at_start as f64))
        .collect();
    RevenueRates {
        new_mrr,
        new_accounts,
        mean_first_mrr: mean_half_up(new_mrr, new_accounts),
        monthly_churn: if churn.is_empty() {
            0.0
        } else {
            churn.iter().sum::<f64>() / churn.len() as f64
        },
        churn_months: churn.len() as i32,
        expansion_mrr: months.iter().map(|m| m.expansion_mrr).sum(),
    }
}

/// The model's inputs from the funnel report over the window and revenue's
/// rates over it: leads per month = AWARENESS entries / 12; each stage's
/// conversion (0 when nothing entered it) and median time to the next in
/// months (0 when nothing converted); the mean expansion MRR = revenue's
/// expansion / the window's GROWTH entries, half up (0 without any).
pub fn inputs(funnel: &FunnelReport, revenue: &RevenueRates) -> Inputs {
    let of = |stage: Stage| funnel.stages.iter().find(|s| s.stage == stage);
    let stages = MODEL_STAGES.map(|stage| {
        let m = of(stage);
        StageRate {
            conversion: m.and_then(|m| m.conversion_rate).unwrap_or(0.0),
            months_to_next: m.and_then(|m| m.median_to_next).unwrap_or(0.0) / MONTH_MICROS,
        }
    });
    Inputs {
        leads_per_month: of(Stage::Awareness).map_or(0, |m| m.volume) as f64
            / f64::from(WINDOW_MONTHS),
        stages,
        first_mrr: revenue.mean_first_mrr,
        monthly_churn: revenue.monthly_churn,
        expansion_mrr: mean_half_up(revenue.expansion_mrr, growth_entries(funnel)),
    }
}

/// Entries into GROWTH in the funnel report.
pub fn growth_entries(funnel: &FunnelReport) -> i64 {
    funnel
        .stages
        .iter()
        .find(|s| s.stage == Stage::Growth)
        .map_or(0, |s| s.volume)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(conversion: f64, months_to_next: f64) -> StageRate {
        StageRate {
            conversion,
            months_to_next,
        }
    }

    /// 100 leads a month. Left side: AWARENESS 50% in 1 month, EDUCATION 50%
    /// in 2, SELECTION 40% in 3: w = 0.1, C = 6. Right side: COMMIT 100% at
    /// once, ONBOARDING 50% in 1, IMPACT 50% in 2: g = 0.25, R = 3. Pays
    /// 100.00 from its close, adds 20.00 in GROWTH, nobody churns.
    fn worked() -> Inputs {
        Inputs {
            leads_per_month: 100.0,
            stages: [
                rate(0.5, 1.0),
                rate(0.5, 2.0),
                rate(0.4, 3.0),
                rate(1.0, 0.0),
                rate(0.5, 1.0),
                rate(0.5, 2.0),
            ],
            first_mrr: 10_000,
            monthly_churn: 0.0,
            expansion_mrr: 2_000,
        }
    }

    #[test]
    fn the_worked_example_adds_the_hand_computed_arr() {
        // Without churn I(x, y) = y - x. Leads arriving in the first
        // H - C = 6 months close in time: 100 x 0.1 x 6 = 60 customers
        // paying 10,000 -> 600,000. Those arriving in the first
        // H - C - R = 3 months have reached GROWTH too: 100 x 0.1 x 0.25 x 3
        // = 7.5 customers x 2,000 = 15,000. MRR 615,000, ARR 7,380,000.
        assert_eq!(arr_added(&worked()), 7_380_000);
    }

    #[test]
    fn each_stage_moves_the_arr_by_the_hand_computed_amount_and_selection_ranks_first() {
        let s = sensitivity(&worked());
        assert_eq!(s.baseline, 7_380_000);
        let deltas: Vec<(Stage, i64, i64, i32)> = s
            .stages
            .iter()
            .map(|r| (r.stage, r.conversion_delta, r.time_delta, r.rank))
            .collect();
        // AWARENESS 50% -> 51%: w x 1.02, ARR x 1.02: +147,600. Its time
        // 1 -> 0.9 month: both windows 0.1 month longer: MRR + 10 x 0.1 x
        // 10,000 + 10 x 0.25 x 0.1 x 2,000 = +10,500, ARR +126,000.
        // EDUCATION: the same conversion gain; 2 -> 1.8: +0.2 month, ARR
        // +252,000. SELECTION 40% -> 41%: x 1.025, ARR +184,500; 3 -> 2.7:
        // +0.3 month, ARR +378,000.
        // COMMIT is at 100% already and takes no time: nothing moves.
        // ONBOARDING 50% -> 51%: expansion 15,000 x 1.02 = +300 MRR, ARR
        // +3,600; 1 -> 0.9: the GROWTH window 0.1 month longer: 10 x 0.25 x
        // 0.1 x 2,000 = +500 MRR, ARR +6,000. IMPACT: +3,600; 2 -> 1.8:
        // +1,000 MRR, ARR +12,000.
        assert_eq!(
            deltas,
            [
                (Stage::Awareness, 147_600, 126_000, 3),
                (Stage::Education, 147_600, 252_000, 2),
                (Stage::Selection, 184_500, 378_000, 1),
                (Stage::Commit, 0, 0, 6),
                (Stage::Onboarding, 3_600, 6_000, 5),
                (Stage::Impact, 3_600, 12_000, 4),
            ]
        );
        assert_eq!(
            s.ranking,
            [
                Stage::Selection,
                Stage::Education,
                Stage::Awareness,
                Stage::Impact,
                Stage::Onboarding,
                Stage::Commit,
            ]
        );
        assert_eq!(s.stages[3].raised_conversion, 1.0);
        assert!((s.stages[2].shortened_months - 2.7).abs() < 1e-12);
    }

    #[test]
    fn churn_compounds_over_fractional_months() {
        // 10 leads a month, every stage converts, the cycle takes 11 months,
        // half the customers leave each month (q = 0.5). Leads of the first
        // month close in time; at the end they have paid for u in [0, 1]:
        // I(0, 1) = (0.5 - 1) / ln 0.5 = 0.721348. GROWTH after R = 0.5
        // month: I(0.5, 1) = (0.5 - 0.707107) / ln 0.5 = 0.298792.
        // MRR = 10 x (1,000 x 0.721348 + 500 x 0.298792) = 8,707.43;
        // ARR = 104,489.2 -> 104,489.
        let inputs = Inputs {
            leads_per_month: 10.0,
            stages: [
                rate(1.0, 11.0),
                rate(1.0, 0.0),
                rate(1.0, 0.0),
                rate(1.0, 0.0),
                rate(1.0, 0.5),
                rate(1.0, 0.0),
            ],
            first_mrr: 1_000,
            monthly_churn: 0.5,
            expansion_mrr: 500,
        };
        assert_eq!(arr_added(&inputs), 104_489);
        // Everyone leaving at once leaves nothing at the end.
        let all_leave = Inputs {
            monthly_churn: 1.0,
            ..inputs
        };
        assert_eq!(arr_added(&all_leave), 0);
    }

    #[test]
    fn no_leads_add_nothing_and_every_stage_ties_in_bowtie_order() {
        let s = sensitivity(&Inputs {
            leads_per_month: 0.0,
            ..worked()
        });
        assert_eq!(s.baseline, 0);
        assert!(s.stages.iter().all(|r| r.best() == 0));
        assert_eq!(s.ranking, MODEL_STAGES);
    }

    #[test]
    fn a_stage_that_never_converts_adds_nothing_until_it_converts_a_point() {
        // EDUCATION at 0%: w = 0, ARR 0. At 1%: w = 0.5 x 0.01 x 0.4 =
        // 0.002, one fiftieth of the worked example: 7,380,000 / 50 =
        // 147,600. Every other change still multiplies zero.
        let mut inputs = worked();
        inputs.stages[1].conversion = 0.0;
        let s = sensitivity(&inputs);
        assert_eq!(s.baseline, 0);
        assert_eq!(s.stages[1].conversion_delta, 147_600);
        assert_eq!(s.ranking[0], Stage::Education);
        assert!(
            s.stages
                .iter()
                .filter(|r| r.rank > 1)
                .all(|r| r.best() == 0)
        );
    }

    #[test]
    fn a_cycle_longer_than_the_horizon_adds_nothing() {
        // C = 13 months > 12: no lead of the horizon closes within it, and
        // cutting one stage's time by 10% (at most 1.3 months) or raising a
        // conversion still closes nobody.
        let mut inputs = worked();
        inputs.stages[0].months_to_next = 8.0;
        inputs.stages[2].months_to_next = 3.0;
        let s = sensitivity(&inputs);
        assert_eq!(s.baseline, 0);
        assert!(s.stages.iter().all(|r| r.best() == 0));
        // Exactly at the horizon the first leads close at its last instant:
        // still nothing paid for.
        inputs.stages[0].months_to_next = 7.0;
        assert_eq!(arr_added(&inputs), 0);
    }

    #[test]
    fn a_slower_right_side_only_delays_the_expansion() {
        // R = 7 > H - C = 6: nobody reaches GROWTH in time, the ARR is the
        // first MRR alone: 12 x 60 x 10,000 = 7,200,000.
        let mut inputs = worked();
        inputs.stages[5].months_to_next = 6.0;
        assert_eq!(arr_added(&inputs), 7_200_000);
    }

    #[test]
    fn the_funnel_report_and_revenue_rates_become_the_model_inputs() {
        use crate::domain::{STAGES, StageMetrics};
        // 24 AWARENESS entries in the window: 2 leads a month. Each stage
        // converts half its entries in one model month (30.4375 days), but
        // IMPACT, where nothing converted: no median, the model uses 0.
        let stages = STAGES
            .iter()
            .map(|stage| StageMetrics {
                stage: *stage,
                volume: if *stage == Stage::Awareness { 24 } else { 3 },
                converted: 1,
                conversion_rate: (*stage != Stage::Growth).then_some(0.5),
                drop_offs: Vec::new(),
                median_to_next: (*stage != Stage::Impact).then_some(MONTH_MICROS),
                p90_to_next: None,
            })
            .collect();
        let funnel = FunnelReport {
            stages,
            left_side_win_rate_product: 0.125,
            won_attempts: 0,
            awareness_attempts: 24,
            measured_win_rate: 0.0,
            median_cycle_time: None,
            p90_cycle_time: None,
        };
        let revenue = RevenueRates {
            mean_first_mrr: 1_500,
            monthly_churn: 0.02,
            // 1,000 of expansion over the 3 GROWTH entries: 333.33 -> 333.
            expansion_mrr: 1_000,
            ..Default::default()
        };
        let i = inputs(&funnel, &revenue);
        assert_eq!(i.leads_per_month, 2.0);
        assert_eq!(i.stages[0], rate(0.5, 1.0));
        assert_eq!(i.stages[5], rate(0.5, 0.0));
        assert_eq!(
            (i.first_mrr, i.monthly_churn, i.expansion_mrr),
            (1_500, 0.02, 333)
        );
    }

    #[test]
    fn revenue_months_sum_into_the_model_rates() {
        let months = [
            // No one paid at the start: the month says nothing of churn.
            RevenueMonth {
                new_mrr: 3_000,
                new_accounts: 2,
                ..Default::default()
            },
            RevenueMonth {
                new_mrr: 2_001,
                new_accounts: 1,
                churned_accounts: 1,
                paying_at_start: 4,
                expansion_mrr: 700,
            },
            RevenueMonth {
                paying_at_start: 3,
                ..Default::default()
            },
        ];
        let r = revenue_rates(&months);
        // (3,000 + 2,001) / 3 = 1,667 (1,667.0 exactly rounds to itself);
        // churn: mean of 1/4 and 0/3 = 0.125 over 2 months.
        assert_eq!(
            (r.new_mrr, r.new_accounts, r.mean_first_mrr),
            (5_001, 3, 1_667)
        );
        assert!((r.monthly_churn - 0.125).abs() < 1e-12);
        assert_eq!((r.churn_months, r.expansion_mrr), (2, 700));
        assert_eq!(mean_half_up(5, 2), 3);
        assert_eq!(mean_half_up(5, 0), 0);
        assert_eq!(revenue_rates(&[]), RevenueRates::default());
    }
}
