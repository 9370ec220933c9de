//! The demo company: deterministic, complete, and idempotent on restart.

use bowtie::demo::{self, Company};
use bowtie_proto::accounts::ListAccountsRequest;
use bowtie_proto::common::{PageRequest, Segment};
use bowtie_proto::revenue::{GetMrrReportRequest, GetMrrReportResponse};
use bowtie_proto::success::{
    ActivityKind, CtaStatus, ListActivitiesRequest, ListCtasRequest, Outcome,
};
use bowtie_testkit::stack::Stack;
use bowtie_testkit::{TestDatabase, backend_test, within};

use super::small_demo;

backend_test!(
    seeding_the_same_demo_twice_gives_the_same_figures,
    the_demo_has_every_segment_churn_comebacks_and_a_balanced_waterfall,
    seeding_again_on_a_seeded_suite_adds_nothing,
);

/// The MRR report of the demo's 24 months and the anchor's month.
async fn waterfall(stack: &Stack) -> anyhow::Result<GetMrrReportResponse> {
    let options = small_demo();
    let months = |back| demo::plan::month_before(options.anchor, back);
    Ok(stack
        .target()
        .revenue()?
        .get_mrr_report(GetMrrReportRequest {
            start_month: months(24),
            end_month: months(0),
            ..GetMrrReportRequest::default()
        })
        .await?
        .into_inner())
}

async fn account_count(stack: &Stack, segment: Segment) -> anyhow::Result<usize> {
    let mut client = stack.target().accounts()?;
    let mut token = String::new();
    let mut n = 0;
    loop {
        let page = client
            .list_accounts(ListAccountsRequest {
                segment: segment as i32,
                page: Some(PageRequest {
                    page_size: 1000,
                    page_token: token,
                }),
                ..ListAccountsRequest::default()
            })
            .await?
            .into_inner();
        n += page.accounts.len();
        token = page.page.map(|p| p.next_page_token).unwrap_or_default();
        if token.is_empty() {
            return Ok(n);
        }
    }
}

async fn seeding_the_same_demo_twice_gives_the_same_figures(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    // Two suites on two fresh databases, seeded with the same options.
    let first = Stack::start(db).await?;
    demo::seed(&first.target(), small_demo()).await?;
    let other_db = TestDatabase::create(db.backend())
        .await?
        .ok_or_else(|| anyhow::anyhow!("the second database was skipped"))?;
    let second = Stack::start(&other_db).await?;
    demo::seed(&second.target(), small_demo()).await?;

    let (a, b) = (waterfall(&first).await?, waterfall(&second).await?);
    assert_eq!(a, b, "the two MRR reports differ");
    assert_eq!(a.periods.len(), 25);
    // The funnel also moves accounts on its own as it follows the revenue
    // and scoring feeds: compare each suite's report once it holds still.
    let settled_funnel = |stack: &Stack| {
        let target = stack.target();
        async move {
            let options = small_demo();
            let range = bowtie::report::MonthRange {
                first: chrono_month(options.anchor, 24)?,
                last: chrono_month(options.anchor, 0)?,
            };
            within(30, "the funnel to follow the feeds", async {
                let mut last =
                    bowtie::report::funnel(&target, range, None, bowtie::report::Format::Table)
                        .await?;
                loop {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    let now =
                        bowtie::report::funnel(&target, range, None, bowtie::report::Format::Table)
                            .await?;
                    if now == last {
                        return anyhow::Ok(now);
                    }
                    last = now;
                }
            })
            .await?
        }
    };
    assert_eq!(
        settled_funnel(&first).await?,
        settled_funnel(&second).await?
    );
    Ok(())
}

/// The first day of the month `back` months before the anchor's.
fn chrono_month(anchor: i64, back: i64) -> anyhow::Result<chrono::NaiveDate> {
    let month = demo::plan::month_before(anchor, back);
    Ok(chrono::NaiveDate::parse_from_str(
        &format!("{month}-01"),
        "%Y-%m-%d",
    )?)
}

async fn the_demo_has_every_segment_churn_comebacks_and_a_balanced_waterfall(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let stack = Stack::start(db).await?;
    let seeded = demo::seed(&stack.target(), small_demo()).await?;
    let plan = Company::generate(small_demo()).summary();
    assert_eq!(seeded.summary, plan);
    assert!(!seeded.resumed);
    assert!(
        plan.churned > 0 && plan.reactivated > 0,
        "seed 6 at 200 accounts should churn and bring customers back: {plan:?}"
    );

    for segment in [Segment::Smb, Segment::MidMarket, Segment::Enterprise] {
        assert!(
            account_count(&stack, segment).await? > 0,
            "no {segment:?} account"
        );
    }
    assert_eq!(account_count(&stack, Segment::Unspecified).await?, 200);

    let report = waterfall(&stack).await?;
    let money = |m: &Option<bowtie_proto::common::Money>| m.as_ref().map_or(0, |m| m.minor_units);
    let (mut churned, mut reactivated) = (0, 0);
    for p in &report.periods {
        // start + new + reactivation + expansion - contraction - churn = end.
        assert_eq!(
            money(&p.start_mrr)
                + money(&p.new_mrr)
                + money(&p.reactivation_mrr)
                + money(&p.expansion_mrr)
                - money(&p.contraction_mrr)
                - money(&p.churn_mrr),
            money(&p.end_mrr),
            "waterfall of {}",
            p.period
        );
        churned += p.churned_accounts;
        reactivated += p.reactivated_accounts;
    }
    assert_eq!(churned, i64::try_from(plan.churned)?);
    assert_eq!(reactivated, i64::try_from(plan.reactivated)?);
    // The anchor's month ends with the MRR the plan has at the anchor
    // (nothing is dated after it).
    let last = report.periods.last().map(|p| money(&p.end_mrr));
    assert_eq!(last, Some(plan.mrr));
    Ok(())
}

/// Every CTA (id, status, outcome, version), and how many timeline entries
/// people logged on their accounts.
async fn worked_ctas(stack: &Stack) -> anyhow::Result<(Vec<(String, i32, i32, i64)>, usize)> {
    let mut success = stack.target().success()?;
    let mut ctas = Vec::new();
    for status in [CtaStatus::Unspecified, CtaStatus::Closed] {
        let mut token = String::new();
        loop {
            let page = success
                .list_ctas(ListCtasRequest {
                    status: status as i32,
                    page: Some(PageRequest {
                        page_size: 500,
                        page_token: token,
                    }),
                    ..ListCtasRequest::default()
                })
                .await?
                .into_inner();
            ctas.extend(page.ctas);
            token = page.page.map(|p| p.next_page_token).unwrap_or_default();
            if token.is_empty() {
                break;
            }
        }
    }
    let mut logged = 0;
    let mut accounts: Vec<String> = ctas.iter().map(|c| c.account_id.clone()).collect();
    accounts.sort();
    accounts.dedup();
    for account in accounts {
        logged += success
            .list_activities(ListActivitiesRequest {
                account_id: account,
                kinds: vec![ActivityKind::Call as i32, ActivityKind::Note as i32],
                page: Some(PageRequest {
                    page_size: 500,
                    page_token: String::new(),
                }),
                ..ListActivitiesRequest::default()
            })
            .await?
            .into_inner()
            .activities
            .len();
    }
    let mut out: Vec<(String, i32, i32, i64)> = ctas
        .into_iter()
        .map(|c| (c.id, c.status, c.outcome, c.version))
        .collect();
    out.sort();
    Ok((out, logged))
}

async fn seeding_again_on_a_seeded_suite_adds_nothing(db: &TestDatabase) -> anyhow::Result<()> {
    let stack = Stack::start(db).await?;
    let first = demo::seed(&stack.target(), small_demo()).await?;
    let before = waterfall(&stack).await?;
    let model_before = model_id(&stack).await?;
    // The history's CTAs were worked: calls and notes logged, some closed
    // by their owners with an outcome.
    let (ctas, logged) = worked_ctas(&stack).await?;
    let by_people = ctas
        .iter()
        .filter(|c| {
            [Outcome::Saved, Outcome::Lost, Outcome::Won]
                .iter()
                .any(|o| *o as i32 == c.2)
        })
        .count();
    assert!(by_people > 0, "{ctas:?}");
    assert!(
        logged >= 2 * by_people,
        "{logged} entries for {by_people} closed"
    );
    // A restart on another day finds the first anchor again.
    let mut later = small_demo();
    later.anchor -= 3 * demo::plan::DAY;
    let again = demo::seed(&stack.target(), later).await?;
    assert!(again.resumed);
    assert_eq!(again.options, first.options);
    assert_eq!(account_count(&stack, Segment::Unspecified).await?, 200);
    assert_eq!(waterfall(&stack).await?, before);
    // The churn model the first seeding trained is kept.
    assert_eq!(model_id(&stack).await?, model_before);
    // No CTA was worked twice.
    let closed_by_people = |all: &[(String, i32, i32, i64)]| -> Vec<(String, i32, i32, i64)> {
        all.iter()
            .filter(|c| {
                [Outcome::Saved, Outcome::Lost, Outcome::Won]
                    .iter()
                    .any(|o| *o as i32 == c.2)
            })
            .cloned()
            .collect()
    };
    let (after, logged_after) = worked_ctas(&stack).await?;
    assert_eq!(closed_by_people(&after), closed_by_people(&ctas));
    assert_eq!(logged_after, logged);
    Ok(())
}

/// The current churn model's id, `None` when none was trained.
async fn model_id(stack: &Stack) -> anyhow::Result<Option<String>> {
    match stack
        .target()
        .scoring()?
        .get_model(bowtie_proto::scoring::GetModelRequest {})
        .await
    {
        Ok(r) => Ok(r.into_inner().model.map(|m| m.id)),
        Err(s) if s.code() == tonic::Code::FailedPrecondition => Ok(None),
        Err(s) => Err(s.into()),
    }
}
