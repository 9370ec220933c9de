//! Stage sensitivity (docs/design.md 7.2): a small history written through
//! the real funnel and revenue services, whose inputs are worked out by
//! hand below, then the report measured over it.

use bowtie_proto::common::{Money, Segment, Stage};
use bowtie_proto::funnel::funnel_service_client::FunnelServiceClient;
use bowtie_proto::funnel::{
    GetStageSensitivityRequest, GetStageSensitivityResponse, RecordTransitionRequest,
};
use bowtie_proto::revenue::CancelSubscriptionRequest;
use bowtie_testkit::gateway::Stack;
use bowtie_testkit::revenue::{self, Revenue, change, create, monthly, terms};
use bowtie_testkit::{READ_KEY, TestDatabase, TestServer, WRITE_KEY, assert, backend_test, within};
use prost_types::{Duration, Timestamp};

use crate::*;

backend_test!(
    the_sensitivity_report_measures_the_trailing_year_and_ranks_education_first,
    bad_sensitivity_requests_are_refused_with_the_field_named,
    the_gateway_answers_the_sensitivity_of_an_empty_company_with_every_stage_tied,
);

const DAY_SECONDS: i64 = 86_400;
/// One month of the model: 365.25 / 12 days.
const MONTH_DAYS: f64 = 30.4375;

/// `stage` for `account` on `at`, a LOST with a reason.
async fn enter(
    funnel: &mut FunnelClient,
    account: &str,
    stage: Stage,
    at: Timestamp,
) -> anyhow::Result<()> {
    funnel
        .record_transition(RecordTransitionRequest {
            account_id: account.to_owned(),
            to_stage: stage as i32,
            occurred_at: Some(at),
            reason: if stage == Stage::Lost {
                "no_budget".to_owned()
            } else {
                String::new()
            },
            source: "test".to_owned(),
            idempotency_key: String::new(),
        })
        .await?;
    Ok(())
}

fn d(month: u32, day: u32) -> Timestamp {
    revenue::day(2025, month, day)
}

fn days(n: i64) -> Option<Duration> {
    Some(Duration {
        seconds: n * DAY_SECONDS,
        nanos: 0,
    })
}

fn usd(minor_units: i64) -> Option<Money> {
    Some(Money {
        currency_code: "USD".to_owned(),
        minor_units,
    })
}

/// Waits until the funnel has followed revenue: `account`'s current stage is `stage`.
async fn reaches(funnel: &TestServer, account: &str, stage: Stage) -> anyhow::Result<()> {
    let mut client = FunnelServiceClient::new(funnel.with_key(WRITE_KEY));
    within(20, "the funnel to follow the revenue feed", async {
        loop {
            if let Ok(j) = journey(&mut client, account).await
                && j.current_stage == stage as i32
            {
                return anyhow::Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await?
}

/// The model of docs/design.md 7.2 written out again, independently of the
/// service: ARR = 12 x L w [M I(0, 12 - C) + g E I(R, 12 - C)], with
/// I(x, y) = (q^y - q^x) / ln q. Conversions are shares; times in days.
fn model_arr(
    conversions: [f64; 6],
    times_days: [f64; 6],
    l: f64,
    m: f64,
    e: f64,
    churn: f64,
) -> i64 {
    let q: f64 = 1.0 - churn;
    let i = |x: f64, y: f64| {
        if y <= x {
            0.0
        } else {
            (q.powf(y) - q.powf(x)) / q.ln()
        }
    };
    let w = conversions[0] * conversions[1] * conversions[2];
    let g = conversions[3] * conversions[4] * conversions[5];
    let c = (times_days[0] + times_days[1] + times_days[2]) / MONTH_DAYS;
    let r = (times_days[3] + times_days[4] + times_days[5]) / MONTH_DAYS;
    (12.0 * l * w * (m * i(0.0, 12.0 - c) + g * e * i(r, 12.0 - c))).round() as i64
}

/// The history, every date in 2025 unless said (days between steps in
/// brackets); subscriptions are 1,000 a unit a month, so the funnel moves
/// COMMIT, ONBOARDING, GROWTH and CHURNED on its own from revenue's feed:
///
/// | acct | journey                                                                          |
/// |------|----------------------------------------------------------------------------------|
/// | A    | AW 01-01, ED 01-11 (10), SE 01-21 (10), pays 10 units 01-31 (10): CO + ON, IM 02-10 (10), 15 units 03-02: GROWTH (20) |
/// | B    | AW 01-01, ED 01-21 (20), SE 02-10 (20), pays 20 units 03-12 (30): CO + ON, cancels 05-31: CHURNED |
/// | C    | AW 01-01, ED 01-31 (30), LOST 02-20                                               |
/// | D    | AW 01-01, LOST 01-06                                                              |
/// | E    | AW 01-01, ED 01-11 (10), SE 01-31 (20), LOST 03-02                                |
/// | F    | AW 01-01, ED 01-11 (10)                                                           |
/// | G    | AW 2024-12-15: before the window                                                  |
/// | H    | AW 2026-01-05: after it (as_of is 2026-01-15, the window is 2025)                 |
///
/// By hand, over 2025:
/// - AWARENESS: 6 entries, 5 to EDUCATION (10 10 10 20 30 days: median 10); 6 / 12 = 0.5 leads a month.
/// - EDUCATION: 5, 3 to SELECTION (10 20 20: median 20).
/// - SELECTION: 3, 2 committed (10 30: median 20).
/// - COMMIT: 2, both onboarded at once (median 0).
/// - ONBOARDING: 2, A reached IMPACT (10 days); B churned.
/// - IMPACT: 1, A grew after 20 days; GROWTH: 1 entry.
/// - Revenue: new MRR 10,000 + 20,000 over 2 new accounts: 15,000 first MRR; expansion 5,000
///   over 1 GROWTH entry: 5,000. Paying at each month's start: Jan 0, Feb-Mar 1, Apr-May 2,
///   Jun-Dec 1; one churn in May (1 / 2): monthly logo churn (1/2) / 11 months = 1/22.
async fn the_sensitivity_report_measures_the_trailing_year_and_ranks_education_first(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Revenue::start(db).await?;
    let funnel = start_funnel_with(db, &suite.accounts.uri(), &suite.revenue.uri()).await?;
    let mut client = FunnelServiceClient::new(funnel.with_key(WRITE_KEY));
    let mut ids = std::collections::BTreeMap::new();
    for name in ["A", "B", "C", "D", "E", "F", "G", "H"] {
        ids.insert(name, suite.account(name, Segment::Smb, "ana").await?);
    }
    let id = |name: &str| ids[name].clone();
    use Stage::*;
    let paths: [(&str, Vec<(Stage, Timestamp)>); 8] = [
        (
            "A",
            vec![
                (Awareness, d(1, 1)),
                (Education, d(1, 11)),
                (Selection, d(1, 21)),
            ],
        ),
        (
            "B",
            vec![
                (Awareness, d(1, 1)),
                (Education, d(1, 21)),
                (Selection, d(2, 10)),
            ],
        ),
        (
            "C",
            vec![
                (Awareness, d(1, 1)),
                (Education, d(1, 31)),
                (Lost, d(2, 20)),
            ],
        ),
        ("D", vec![(Awareness, d(1, 1)), (Lost, d(1, 6))]),
        (
            "E",
            vec![
                (Awareness, d(1, 1)),
                (Education, d(1, 11)),
                (Selection, d(1, 31)),
                (Lost, d(3, 2)),
            ],
        ),
        ("F", vec![(Awareness, d(1, 1)), (Education, d(1, 11))]),
        ("G", vec![(Awareness, revenue::day(2024, 12, 15))]),
        ("H", vec![(Awareness, revenue::day(2026, 1, 5))]),
    ];
    for (name, path) in paths {
        for (stage, at) in path {
            enter(&mut client, &id(name), stage, at).await?;
        }
    }
    let mut billing = suite.client();
    let created =
        |name: &str, start: Timestamp, units: i64| create(monthly(&ids[name], start, units, 1_000));
    let a = billing
        .create_subscription(created("A", d(1, 31), 10))
        .await?
        .into_inner()
        .subscription
        .ok_or_else(|| anyhow::anyhow!("no subscription"))?;
    reaches(&funnel, &id("A"), Onboarding).await?;
    enter(&mut client, &id("A"), Impact, d(2, 10)).await?;
    billing
        .change_subscription(change(&a.id, d(3, 2), terms(15, 1_000, "USD")))
        .await?;
    let b = billing
        .create_subscription(created("B", d(3, 12), 20))
        .await?
        .into_inner()
        .subscription
        .ok_or_else(|| anyhow::anyhow!("no subscription"))?;
    billing
        .cancel_subscription(CancelSubscriptionRequest {
            id: b.id,
            cancellation: revenue::cancellation(d(5, 31)),
            ..Default::default()
        })
        .await?;
    reaches(&funnel, &id("A"), Growth).await?;
    reaches(&funnel, &id("B"), Churned).await?;

    let as_of = Some(revenue::day(2026, 1, 15));
    let mut reader = FunnelServiceClient::new(funnel.with_key(READ_KEY));
    let r: GetStageSensitivityResponse = reader
        .get_stage_sensitivity(GetStageSensitivityRequest {
            as_of,
            segment: Segment::Unspecified as i32,
        })
        .await?
        .into_inner();

    let inputs = r.inputs.clone().unwrap_or_default();
    assert_eq!(inputs.window_start, Some(revenue::day(2025, 1, 1)));
    assert_eq!(inputs.window_end, Some(revenue::day(2026, 1, 1)));
    assert_eq!((inputs.awareness_entries, inputs.leads_per_month), (6, 0.5));
    let measured: Vec<(i32, i64, i64, Option<Duration>)> = inputs
        .stages
        .iter()
        .map(|s| (s.stage, s.volume, s.converted, s.median_time_to_next))
        .collect();
    assert_eq!(
        measured,
        [
            (Awareness as i32, 6, 5, days(10)),
            (Education as i32, 5, 3, days(20)),
            (Selection as i32, 3, 2, days(20)),
            (Commit as i32, 2, 2, days(0)),
            (Onboarding as i32, 2, 1, days(10)),
            (Impact as i32, 1, 1, days(20)),
        ]
    );
    let conversions: Vec<f64> = inputs.stages.iter().map(|s| s.conversion_rate).collect();
    assert_eq!(conversions, [5.0 / 6.0, 0.6, 2.0 / 3.0, 1.0, 0.5, 1.0]);
    assert_eq!(
        (inputs.new_mrr, inputs.new_accounts, inputs.mean_first_mrr),
        (usd(30_000), 2, usd(15_000))
    );
    assert_eq!(
        (
            inputs.expansion_mrr,
            inputs.growth_entries,
            inputs.mean_expansion_mrr
        ),
        (usd(5_000), 1, usd(5_000))
    );
    assert_eq!(inputs.churn_months, 11);
    assert!((inputs.monthly_logo_churn - 1.0 / 22.0).abs() < 1e-12);

    // The baseline and EDUCATION's point of conversion, computed again here.
    let times = [10.0, 20.0, 20.0, 0.0, 10.0, 20.0];
    let rates = [5.0 / 6.0, 0.6, 2.0 / 3.0, 1.0, 0.5, 1.0];
    let baseline = model_arr(rates, times, 0.5, 15_000.0, 5_000.0, 1.0 / 22.0);
    assert_eq!(r.baseline_arr_added, usd(baseline));
    let mut education_up = rates;
    education_up[1] = 0.61;
    let education = r.stages.iter().find(|s| s.stage == Education as i32);
    assert_eq!(
        education.and_then(|s| s.arr_delta_conversion.clone()),
        usd(model_arr(education_up, times, 0.5, 15_000.0, 5_000.0, 1.0 / 22.0) - baseline)
    );
    // EDUCATION's point is worth most: it multiplies the win rate by
    // 0.61 / 0.6, against 0.8433 / 0.8333 for AWARENESS and 0.6767 / 0.6667
    // for SELECTION; COMMIT, already at 100% in no time, moves nothing.
    let ranking: Vec<i32> = r.ranking.clone();
    assert_eq!(
        ranking,
        [Education, Selection, Awareness, Onboarding, Impact, Commit].map(|s| s as i32)
    );
    assert_eq!(r.reporting_currency_code, "USD");

    // No account of another segment: nothing measured, nothing added.
    let enterprise = reader
        .get_stage_sensitivity(GetStageSensitivityRequest {
            as_of,
            segment: Segment::Enterprise as i32,
        })
        .await?
        .into_inner();
    let e = enterprise.inputs.unwrap_or_default();
    assert_eq!((e.awareness_entries, e.new_accounts), (0, 0));
    assert_eq!(enterprise.baseline_arr_added, usd(0));
    Ok(())
}

async fn bad_sensitivity_requests_are_refused_with_the_field_named(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Revenue::start(db).await?;
    let funnel = start_funnel_with(db, &suite.accounts.uri(), &suite.revenue.uri()).await?;
    let mut reader = FunnelServiceClient::new(funnel.with_key(READ_KEY));
    let ask =
        |as_of: Option<Timestamp>, segment: i32| GetStageSensitivityRequest { as_of, segment };
    assert::invalid_field(
        reader
            .get_stage_sensitivity(ask(
                Some(Timestamp {
                    seconds: 0,
                    nanos: -1,
                }),
                0,
            ))
            .await,
        "as_of",
    );
    // The twelve months before would begin in 1969.
    assert::invalid_field(
        reader
            .get_stage_sensitivity(ask(Some(revenue::day(1970, 6, 1)), 0))
            .await,
        "as_of",
    );
    assert::invalid_field(reader.get_stage_sensitivity(ask(None, 99)).await, "segment");
    Ok(())
}

async fn the_gateway_answers_the_sensitivity_of_an_empty_company_with_every_stage_tied(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let stack = Stack::start(db).await?;
    let (status, body) = stack
        .get(
            "/api/v1/funnel/sensitivity?as_of=2026-01-15T00:00:00Z",
            READ_KEY,
        )
        .await?;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    assert_eq!(
        body["inputs"]["window_start"], "2025-01-01T00:00:00Z",
        "{body}"
    );
    assert_eq!(body["inputs"]["leads_per_month"], 0.0, "{body}");
    assert_eq!(body["baseline_arr_added"]["minor_units"], 0, "{body}");
    // No leads: every change adds nothing, and the ranking keeps bowtie order.
    assert_eq!(
        body["ranking"],
        serde_json::json!([
            "AWARENESS",
            "EDUCATION",
            "SELECTION",
            "COMMIT",
            "ONBOARDING",
            "IMPACT"
        ]),
        "{body}"
    );
    let (status, bad) = stack
        .get(
            "/api/v1/funnel/sensitivity?as_of=1970-02-01T00:00:00Z",
            READ_KEY,
        )
        .await?;
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{bad}");
    assert_eq!(
        bad["error"]["field_violations"][0]["field"], "as_of",
        "{bad}"
    );
    Ok(())
}
