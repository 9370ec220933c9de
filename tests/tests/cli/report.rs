//! The terminal reports print the figures the services' report RPCs return.

use bowtie::demo;
use bowtie::report::{self, MonthRange, group_thousands, money, percent};
use bowtie_proto::common::{Period, Segment};
use bowtie_proto::funnel::GetFunnelReportRequest;
use bowtie_proto::revenue::{GetChurnAnalysisRequest, GetMrrReportRequest, GetRetentionRequest};
use bowtie_testkit::stack::Stack;
use bowtie_testkit::{READ_KEY, TestDatabase, backend_test};
use prost_types::Timestamp;

use super::small_demo;

backend_test!(the_reports_print_the_figures_the_services_return);

fn amount(m: Option<&bowtie_proto::common::Money>) -> String {
    money(m.map_or(0, |m| m.minor_units))
}

/// The table row whose first cell is `first`.
fn row<'a>(text: &'a str, first: &str) -> anyhow::Result<&'a str> {
    text.lines()
        .find(|l| l.split(['│', '┆']).nth(1).map(str::trim) == Some(first))
        .ok_or_else(|| anyhow::anyhow!("no row {first:?} in\n{text}"))
}

fn ts(seconds: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos: 0 })
}

async fn the_reports_print_the_figures_the_services_return(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let stack = Stack::start(db).await?;
    let options = small_demo();
    demo::seed(&stack.target(), options).await?;
    // Reports need only the read scope.
    let target = stack.target_with(READ_KEY);
    let month = |back| {
        chrono::NaiveDate::parse_from_str(
            &format!("{}-01", demo::plan::month_before(options.anchor, back)),
            "%Y-%m-%d",
        )
    };
    let range = MonthRange {
        first: month(11)?,
        last: month(0)?,
    };

    let text = report::mrr(&target, range, Some(Segment::Smb), &report::Cuts::none()).await?;
    let api = target
        .revenue()?
        .get_mrr_report(GetMrrReportRequest {
            start_month: range.start_month(),
            end_month: range.end_month(),
            segment: Segment::Smb as i32,
            ..GetMrrReportRequest::default()
        })
        .await?
        .into_inner();
    assert_eq!(api.periods.len(), 12);
    for p in &api.periods {
        let line = row(&text, &p.period)?;
        for figure in [
            amount(p.start_mrr.as_ref()),
            amount(p.new_mrr.as_ref()),
            amount(p.churn_mrr.as_ref()),
            amount(p.end_mrr.as_ref()),
            amount(p.end_arr.as_ref()),
            percent(p.customer_churn_rate),
        ] {
            assert!(line.contains(&figure), "{figure} missing from {line}");
        }
    }

    // `--group-by plan` prints the total, then one table per plan with
    // that plan's end MRR for every month, as GetMrrReport groups it.
    let cuts = report::parse_cuts(None, Some("plan"))?;
    let text = report::mrr(&target, range, None, &cuts).await?;
    let api = target
        .revenue()?
        .get_mrr_report(GetMrrReportRequest {
            start_month: range.start_month(),
            end_month: range.end_month(),
            group_by: cuts.group_by.clone(),
            ..GetMrrReportRequest::default()
        })
        .await?
        .into_inner();
    assert!(!api.groups.is_empty());
    assert!(text.contains("by plan"));
    let mut rest = text.as_str();
    for g in &api.groups {
        let name = if g.value.is_empty() {
            "(none)"
        } else {
            &g.value
        };
        let at = rest
            .find(&format!("\n{name}\n"))
            .ok_or_else(|| anyhow::anyhow!("no table for plan {name} in\n{text}"))?;
        rest = &rest[at..];
        for p in &g.periods {
            let line = row(rest, &p.period)?;
            assert!(line.contains(&amount(p.end_mrr.as_ref())), "{line}");
        }
    }
    assert!(report::parse_cuts(None, Some("colour")).is_err());
    assert!(report::parse_cuts(Some("plan"), None).is_err());

    // The churn report prints every period's churn total and each reason's
    // line as the service returns them.
    let text = report::churn(&target, range, None).await?;
    let api = target
        .revenue()?
        .get_churn_analysis(GetChurnAnalysisRequest {
            start_month: range.start_month(),
            end_month: range.end_month(),
            ..GetChurnAnalysisRequest::default()
        })
        .await?
        .into_inner();
    assert_eq!(api.periods.len(), 12);
    let lines: Vec<&str> = text.lines().collect();
    for p in &api.periods {
        let total = lines
            .iter()
            .find(|l| l.contains(&p.period) && l.contains("churn") && l.contains("total"))
            .ok_or_else(|| anyhow::anyhow!("no churn total of {} in\n{text}", p.period))?;
        assert!(total.contains(&amount(p.churn_mrr.as_ref())), "{total}");
        for r in &p.churn_by_reason {
            let line = lines
                .iter()
                .find(|l| l.contains(&p.period) && l.contains(&format!(" {} ", r.reason_code)))
                .ok_or_else(|| anyhow::anyhow!("no {} line in\n{text}", r.reason_code))?;
            assert!(line.contains(&amount(r.lost_mrr.as_ref())), "{line}");
        }
    }
    assert!(
        api.periods.iter().any(|p| !p.churn_by_reason.is_empty()),
        "the demo churns some accounts"
    );

    let text = report::funnel(&target, range, None).await?;
    let api = target
        .funnel()?
        .get_funnel_report(GetFunnelReportRequest {
            period: Some(Period {
                start: ts(range.start()),
                end: ts(range.end()),
            }),
            ..GetFunnelReportRequest::default()
        })
        .await?
        .into_inner();
    let awareness = api
        .stages
        .first()
        .ok_or_else(|| anyhow::anyhow!("no stages"))?;
    assert!(awareness.volume > 0);
    let line = row(&text, "awareness")?;
    assert!(line.contains(&group_thousands(awareness.volume)), "{line}");
    assert!(line.contains(&percent(awareness.conversion_rate)), "{line}");
    assert!(text.contains(&format!(
        "measured {} ({} of {} attempts)",
        percent(api.measured_win_rate),
        group_thousands(api.won_attempts),
        group_thousands(api.awareness_attempts)
    )));

    let now = options.anchor;
    let text = report::retention(&target, range, None, &report::Cuts::none(), now).await?;
    let api = target
        .revenue()?
        .get_retention(GetRetentionRequest {
            start_at: ts(range.start()),
            end_at: ts(now),
            by_owner: true,
            ..GetRetentionRequest::default()
        })
        .await?
        .into_inner();
    let line = row(&text, "all segments")?;
    for figure in [
        group_thousands(api.accounts_start),
        percent(api.logo_retention),
        amount(api.mrr_start.as_ref()),
        amount(api.mrr_end.as_ref()),
        percent(api.grr),
        percent(api.nrr),
    ] {
        assert!(line.contains(&figure), "{figure} missing from {line}");
    }
    for owner in &api.by_owner {
        let line = row(&text, &owner.owner)?;
        assert!(line.contains(&percent(owner.nrr)), "{line}");
    }
    Ok(())
}
