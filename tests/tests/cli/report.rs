//! The terminal reports print the figures the services' report RPCs return.

use bowtie::demo;
use bowtie::report::{self, Format, MonthRange, group_thousands, money, percent};
use bowtie_proto::common::{Period, Segment};
use bowtie_proto::funnel::GetFunnelReportRequest;
use bowtie_proto::revenue::{GetChurnAnalysisRequest, GetMrrReportRequest, GetRetentionRequest};
use bowtie_proto::scoring::ListAtRiskRequest;
use bowtie_proto::success::{BookGrouping, GetBookOfBusinessRequest};
use bowtie_testkit::stack::Stack;
use bowtie_testkit::{READ_KEY, TestDatabase, backend_test};
use prost_types::Timestamp;

use super::small_demo;

backend_test!(
    the_reports_print_the_figures_the_services_return,
    the_reports_export_as_csv_and_json_with_the_services_figures
);

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

    let text = report::mrr(
        &target,
        range,
        Some(Segment::Smb),
        &report::Cuts::none(),
        Format::Table,
    )
    .await?;
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
    let text = report::mrr(&target, range, None, &cuts, Format::Table).await?;
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
    let text = report::churn(&target, range, None, Format::Table).await?;
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

    let text = report::funnel(&target, range, None, Format::Table).await?;
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
    let text = report::retention(
        &target,
        range,
        None,
        &report::Cuts::none(),
        now,
        Format::Table,
    )
    .await?;
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

/// The records of a CSV text read with a standard CSV reader, each as
/// (column, value) pairs by the header row.
fn csv_records(text: &str) -> anyhow::Result<Vec<std::collections::HashMap<String, String>>> {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader.headers()?.clone();
    let mut out = Vec::new();
    for record in reader.records() {
        let record = record?;
        anyhow::ensure!(record.len() == header.len(), "a ragged record in\n{text}");
        out.push(
            header
                .iter()
                .map(str::to_owned)
                .zip(record.iter().map(str::to_owned))
                .collect(),
        );
    }
    Ok(out)
}

/// The cell `column` of `record` as an integer.
fn int(record: &std::collections::HashMap<String, String>, column: &str) -> anyhow::Result<i64> {
    record
        .get(column)
        .ok_or_else(|| anyhow::anyhow!("no column {column:?} in {record:?}"))?
        .parse()
        .map_err(|e| anyhow::anyhow!("{column}: {e}"))
}

fn json_int(value: &serde_json::Value, pointer: &str) -> anyhow::Result<i64> {
    value
        .pointer(pointer)
        .and_then(serde_json::Value::as_i64)
        .ok_or_else(|| anyhow::anyhow!("no integer at {pointer} in {value}"))
}

async fn the_reports_export_as_csv_and_json_with_the_services_figures(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let stack = Stack::start(db).await?;
    let options = small_demo();
    demo::seed(&stack.target(), options).await?;
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
    let minor = |m: Option<&bowtie_proto::common::Money>| m.map_or(0, |m| m.minor_units);

    // The MRR waterfall: one CSV record and one JSON period per month, each
    // figure the service's to the minor unit.
    let api = target
        .revenue()?
        .get_mrr_report(GetMrrReportRequest {
            start_month: range.start_month(),
            end_month: range.end_month(),
            ..GetMrrReportRequest::default()
        })
        .await?
        .into_inner();
    let csv = report::mrr(&target, range, None, &report::Cuts::none(), Format::Csv).await?;
    assert!(csv.starts_with("period,"), "a header row first:\n{csv}");
    assert!(csv.ends_with("\r\n"), "RFC 4180 line ends");
    let records = csv_records(&csv)?;
    let json: serde_json::Value = serde_json::from_str(
        &report::mrr(&target, range, None, &report::Cuts::none(), Format::Json).await?,
    )?;
    assert_eq!(records.len(), api.periods.len());
    assert_eq!(
        json["periods"].as_array().map(Vec::len),
        Some(api.periods.len())
    );
    assert_eq!(json["currency"], api.reporting_currency_code.as_str());
    for (i, (p, r)) in api.periods.iter().zip(&records).enumerate() {
        assert_eq!(r["period"], p.period);
        assert_eq!(json["periods"][i]["period"], p.period.as_str());
        for (column, figure) in [
            ("start_mrr", minor(p.start_mrr.as_ref())),
            ("new_mrr", minor(p.new_mrr.as_ref())),
            ("expansion_mrr", minor(p.expansion_mrr.as_ref())),
            ("reactivation_mrr", minor(p.reactivation_mrr.as_ref())),
            ("contraction_mrr", minor(p.contraction_mrr.as_ref())),
            ("churn_mrr", minor(p.churn_mrr.as_ref())),
            ("end_mrr", minor(p.end_mrr.as_ref())),
            ("end_arr", minor(p.end_arr.as_ref())),
            ("paying_accounts_end", p.paying_accounts_end),
        ] {
            assert_eq!(int(r, column)?, figure, "{} {column}", p.period);
            assert_eq!(json_int(&json, &format!("/periods/{i}/{column}"))?, figure);
        }
        let rate: f64 = r["customer_churn_rate"].parse()?;
        assert!((rate - p.customer_churn_rate).abs() < 1e-12);
    }
    assert!(api.periods.iter().any(|p| minor(p.end_mrr.as_ref()) > 0));

    // The churn analysis: every reason's lost MRR in its own column.
    let api = target
        .revenue()?
        .get_churn_analysis(GetChurnAnalysisRequest {
            start_month: range.start_month(),
            end_month: range.end_month(),
            ..GetChurnAnalysisRequest::default()
        })
        .await?
        .into_inner();
    let records = csv_records(&report::churn(&target, range, None, Format::Csv).await?)?;
    assert_eq!(records.len(), api.periods.len());
    let mut reasons = 0;
    for (p, r) in api.periods.iter().zip(&records) {
        assert_eq!(int(r, "churn_mrr")?, minor(p.churn_mrr.as_ref()));
        assert_eq!(int(r, "churned_accounts")?, p.churned_accounts);
        for reason in &p.churn_by_reason {
            let column = format!("churn_by_reason.{}.lost_mrr", reason.reason_code);
            assert_eq!(int(r, &column)?, minor(reason.lost_mrr.as_ref()));
            reasons += 1;
        }
    }
    assert!(reasons > 0, "the demo churns for some reason");

    // The funnel: one record per stage, in the service's order.
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
    let records = csv_records(&report::funnel(&target, range, None, Format::Csv).await?)?;
    assert_eq!(records.len(), api.stages.len());
    for (s, r) in api.stages.iter().zip(&records) {
        assert_eq!(int(r, "volume")?, s.volume);
        assert_eq!(int(r, "converted")?, s.converted);
        assert_eq!(int(r, "dropped")?, s.dropped);
    }
    let json: serde_json::Value =
        serde_json::from_str(&report::funnel(&target, range, None, Format::Json).await?)?;
    assert_eq!(json_int(&json, "/won_attempts")?, api.won_attempts);

    // Retention: a record per segment, all segments first.
    let now = options.anchor;
    let records = csv_records(
        &report::retention(
            &target,
            range,
            None,
            &report::Cuts::none(),
            now,
            Format::Csv,
        )
        .await?,
    )?;
    let segments = [
        ("all", Segment::Unspecified),
        ("smb", Segment::Smb),
        ("mid_market", Segment::MidMarket),
        ("enterprise", Segment::Enterprise),
    ];
    assert_eq!(records.len(), segments.len());
    for ((name, segment), r) in segments.into_iter().zip(&records) {
        let api = target
            .revenue()?
            .get_retention(GetRetentionRequest {
                start_at: ts(range.start()),
                end_at: ts(now),
                segment: segment as i32,
                ..GetRetentionRequest::default()
            })
            .await?
            .into_inner();
        assert_eq!(r["segment"], name);
        assert_eq!(int(r, "accounts_start")?, api.accounts_start);
        assert_eq!(int(r, "accounts_retained")?, api.accounts_retained);
        assert_eq!(int(r, "mrr_start")?, minor(api.mrr_start.as_ref()));
        assert_eq!(int(r, "mrr_end")?, minor(api.mrr_end.as_ref()));
        let nrr: f64 = r["nrr"].parse()?;
        assert!(
            (nrr - api.nrr).abs() < 1e-12,
            "{name}: {nrr} vs {}",
            api.nrr
        );
    }
    let json: serde_json::Value = serde_json::from_str(
        &report::retention(
            &target,
            range,
            None,
            &report::Cuts::none(),
            now,
            Format::Json,
        )
        .await?,
    )?;
    assert!(
        json["cohorts"]["cohorts"]
            .as_array()
            .is_some_and(|c| !c.is_empty()),
        "the JSON keeps the cohort grid: {json}"
    );

    // The at-risk list, lowest health first as the service ranks it.
    let api = target
        .scoring()?
        .list_at_risk(ListAtRiskRequest {
            page: Some(bowtie_proto::common::PageRequest {
                page_size: 10,
                page_token: String::new(),
            }),
            ..ListAtRiskRequest::default()
        })
        .await?
        .into_inner();
    let json: serde_json::Value =
        serde_json::from_str(&report::at_risk(&target, None, 10, false, Format::Json).await?)?;
    let rows = json["accounts"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("no accounts in {json}"))?;
    assert_eq!(rows.len(), api.accounts.len());
    for (h, row) in api.accounts.iter().zip(rows) {
        assert_eq!(row["account_id"], h.account_id.as_str());
        assert_eq!(row["score"], h.score);
        assert_eq!(row["mrr_minor_units"], h.mrr_minor_units);
    }

    // The book of business, one record per CSM.
    let api = target
        .success()?
        .get_book_of_business(GetBookOfBusinessRequest {
            group_by: BookGrouping::Csm as i32,
            period: Some(Period {
                start: ts(range.start()),
                end: ts(range.end()),
            }),
            ..GetBookOfBusinessRequest::default()
        })
        .await?
        .into_inner();
    let records =
        csv_records(&report::book(&target, false, None, false, range, Format::Csv).await?)?;
    assert_eq!(records.len(), api.books.len());
    assert!(!api.books.is_empty());
    for (b, r) in api.books.iter().zip(&records) {
        assert_eq!(r["person"], b.person);
        assert_eq!(int(r, "accounts")?, b.accounts);
        assert_eq!(int(r, "arr.minor_units")?, minor(b.arr.as_ref()));
    }
    Ok(())
}
