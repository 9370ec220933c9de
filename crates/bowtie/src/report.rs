//! `bowtie report funnel|mrr|retention|at-risk|...`: the services' report RPCs
//! printed as terminal tables (the default), as CSV or as JSON. The figures
//! are the services' own; a table formats them for reading: money in the
//! reporting currency with cents and thousands separators, rates as
//! percentages with one decimal, durations in days. CSV (RFC 4180, a header
//! row) and JSON are the gateway's representation of the same report (the
//! REST API's `?format=csv` columns and JSON document): exact minor units
//! and fractions, for a spreadsheet or a script.

use anyhow::Context as _;
use bowtie_gateway::representation as rest;
use bowtie_proto::common::{Money, Period, Segment, Stage};
use bowtie_proto::funnel::{GetFunnelReportRequest, GetStageSensitivityRequest};
use bowtie_proto::revenue::{
    CancellationKind, Cut, GetChurnAnalysisRequest, GetCohortRetentionRequest, GetMrrReportRequest,
    GetRetentionRequest, GroupBy,
};
use chrono::{Datelike, Months, NaiveDate};
use comfy_table::{CellAlignment, Table, presets};
use prost_types::Timestamp;
use serde::Serialize;

use crate::client::{Target, describe};

/// How a report is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// A terminal table, figures formatted for reading.
    #[default]
    Table,
    /// CSV (RFC 4180, CRLF line ends, a header row): the columns of the
    /// gateway's `?format=csv` for the same report.
    Csv,
    /// The report as the gateway's JSON document, pretty-printed.
    Json,
}

/// `body` (made only when asked) as CSV of the array under its field `rows`
/// (the whole document as one row when `rows` is empty) or as JSON; `None`
/// for a table, which the report draws itself.
fn export<T: Serialize>(
    format: Format,
    rows: &str,
    body: impl FnOnce() -> T,
) -> anyhow::Result<Option<String>> {
    if format == Format::Table {
        return Ok(None);
    }
    let document = serde_json::to_value(body()).context("report to JSON")?;
    Ok(Some(match format {
        Format::Csv => rest::to_csv(&document, rows).context("report to CSV")?,
        Format::Json | Format::Table => {
            let mut text = serde_json::to_string_pretty(&document).context("report to JSON")?;
            text.push('\n');
            text
        }
    }))
}

/// An inclusive range of calendar months (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MonthRange {
    /// The first day of the first month.
    pub first: NaiveDate,
    /// The first day of the last month.
    pub last: NaiveDate,
}

impl MonthRange {
    /// "YYYY-MM" of the first month.
    pub fn start_month(&self) -> String {
        self.first.format("%Y-%m").to_string()
    }

    /// "YYYY-MM" of the last month.
    pub fn end_month(&self) -> String {
        self.last.format("%Y-%m").to_string()
    }

    /// Midnight UTC of the first day.
    pub fn start(&self) -> i64 {
        midnight(self.first)
    }

    /// Midnight UTC of the first day after the last month.
    pub fn end(&self) -> i64 {
        midnight(
            self.last
                .checked_add_months(Months::new(1))
                .unwrap_or(self.last),
        )
    }
}

fn midnight(date: NaiveDate) -> i64 {
    date.and_hms_opt(0, 0, 0)
        .map_or(0, |t| t.and_utc().timestamp())
}

fn month_start(year: i32, month: u32) -> anyhow::Result<NaiveDate> {
    NaiveDate::from_ymd_opt(year, month, 1)
        .with_context(|| format!("{year}-{month:02} is not a month"))
}

fn parse_month(text: &str) -> anyhow::Result<NaiveDate> {
    let (year, month) = text
        .split_once('-')
        .with_context(|| format!("{text:?} is not a month (YYYY-MM)"))?;
    let year: i32 = year
        .parse()
        .with_context(|| format!("{text:?} is not a month (YYYY-MM)"))?;
    let month: u32 = month
        .parse()
        .with_context(|| format!("{text:?} is not a month (YYYY-MM)"))?;
    month_start(year, month)
}

/// Parses `--period`: `YYYY-MM`, `YYYY-MM..YYYY-MM` (inclusive), `YYYY`,
/// `YYYY-Qn`, or `Nm` (the last N months up to and including this one).
/// Without a period, the last 12 months.
pub fn parse_period(text: Option<&str>, today: NaiveDate) -> anyhow::Result<MonthRange> {
    let this_month = month_start(today.year(), today.month())?;
    let last_n = |n: u32| -> anyhow::Result<MonthRange> {
        anyhow::ensure!((1..=120).contains(&n), "a period spans 1 to 120 months");
        Ok(MonthRange {
            first: this_month
                .checked_sub_months(Months::new(n - 1))
                .context("period out of range")?,
            last: this_month,
        })
    };
    let Some(text) = text.map(str::trim) else {
        return last_n(12);
    };
    let range = if let Some(n) = text.strip_suffix('m') {
        last_n(
            n.parse()
                .with_context(|| format!("{text:?}: expected Nm, e.g. 6m"))?,
        )?
    } else if let Some((a, b)) = text.split_once("..") {
        MonthRange {
            first: parse_month(a)?,
            last: parse_month(b)?,
        }
    } else if let Some((year, quarter)) = text.split_once("-Q").or_else(|| text.split_once("-q")) {
        let year: i32 = year
            .parse()
            .with_context(|| format!("{text:?} is not a quarter (YYYY-Qn)"))?;
        let q: u32 = quarter
            .parse()
            .ok()
            .filter(|q| (1..=4).contains(q))
            .with_context(|| format!("{text:?} is not a quarter (YYYY-Q1 to YYYY-Q4)"))?;
        MonthRange {
            first: month_start(year, q * 3 - 2)?,
            last: month_start(year, q * 3)?,
        }
    } else if text.len() == 4 && text.chars().all(|c| c.is_ascii_digit()) {
        let year: i32 = text.parse()?;
        MonthRange {
            first: month_start(year, 1)?,
            last: month_start(year, 12)?,
        }
    } else {
        let month = parse_month(text)?;
        MonthRange {
            first: month,
            last: month,
        }
    };
    anyhow::ensure!(
        range.first <= range.last,
        "the period {text:?} ends before it starts"
    );
    Ok(range)
}

/// Parses `--segment` (smb, mid_market, enterprise).
pub fn parse_segment(text: Option<&str>) -> anyhow::Result<Option<Segment>> {
    text.map(|t| {
        crate::import::parse_segment(t)
            .with_context(|| format!("unknown segment {t:?} (smb, mid_market or enterprise)"))
    })
    .transpose()
}

/// `n` with a comma every three digits: 1234567 -> "1,234,567".
pub fn group_thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Minor units as an amount with two decimals: 7349512 -> "73,495.12".
/// (Every reporting currency Bowtie supports by default has cents; the
/// header names the currency.)
pub fn money(minor_units: i64) -> String {
    let sign = if minor_units < 0 { "-" } else { "" };
    let abs = minor_units.unsigned_abs();
    let whole = i64::try_from(abs / 100).unwrap_or(i64::MAX);
    format!("{sign}{}.{:02}", group_thousands(whole), abs % 100)
}

fn amount(m: Option<&Money>) -> String {
    money(m.map_or(0, |m| m.minor_units))
}

/// A rate as a percentage with one decimal: 0.1234 -> "12.3%".
pub fn percent(rate: f64) -> String {
    format!("{:.1}%", rate * 100.0)
}

/// A duration in days with one decimal: 36 hours -> "1.5 d"; "-" when unset.
pub fn days(duration: Option<&prost_types::Duration>) -> String {
    duration.map_or_else(
        || "-".to_owned(),
        |d| format!("{:.1} d", d.seconds as f64 / 86_400.0),
    )
}

fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_preset(presets::UTF8_FULL_CONDENSED);
    table.set_header(header.iter().copied());
    for i in 1..header.len() {
        if let Some(column) = table.column_mut(i) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    table
}

fn stage_name(stage: i32) -> String {
    Stage::try_from(stage)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("STAGE_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| stage.to_string())
}

fn segment_label(segment: Option<Segment>) -> &'static str {
    match segment {
        None | Some(Segment::Unspecified) => "all segments",
        Some(Segment::Smb) => "SMB",
        Some(Segment::MidMarket) => "mid-market",
        Some(Segment::Enterprise) => "enterprise",
    }
}

fn timestamp(seconds: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos: 0 })
}

/// The funnel report: volume, conversion, drop-offs and velocity per stage.
pub async fn funnel(
    target: &Target,
    range: MonthRange,
    segment: Option<Segment>,
    format: Format,
) -> anyhow::Result<String> {
    let report = target
        .funnel()?
        .get_funnel_report(GetFunnelReportRequest {
            period: Some(Period {
                start: timestamp(range.start()),
                end: timestamp(range.end()),
            }),
            segment: segment.unwrap_or(Segment::Unspecified) as i32,
            ..GetFunnelReportRequest::default()
        })
        .await
        .map_err(|s| anyhow::anyhow!("GetFunnelReport: {}", describe(&s)))?
        .into_inner();
    if let Some(out) = export(format, "stages", || {
        rest::FunnelReport::from(report.clone())
    })? {
        return Ok(out);
    }
    let mut t = table(&[
        "stage",
        "entered",
        "converted",
        "conversion",
        "median to next",
        "p90 to next",
        "dropped",
        "top reasons",
    ]);
    if let Some(column) = t.column_mut(7) {
        column.set_cell_alignment(CellAlignment::Left);
    }
    for s in &report.stages {
        let last = s.stage == Stage::Growth as i32;
        let reasons: Vec<String> = s
            .drop_offs
            .iter()
            .take(3)
            .map(|d| {
                let reason = if d.reason.is_empty() { "-" } else { &d.reason };
                format!("{reason} {}", d.count)
            })
            .collect();
        t.add_row(vec![
            stage_name(s.stage),
            group_thousands(s.volume),
            if last {
                "-".to_owned()
            } else {
                group_thousands(s.converted)
            },
            if last {
                "-".to_owned()
            } else {
                percent(s.conversion_rate)
            },
            days(s.median_time_to_next.as_ref()),
            days(s.p90_time_to_next.as_ref()),
            group_thousands(s.dropped),
            reasons.join(", "),
        ]);
    }
    Ok(format!(
        "Funnel {}..{} ({}), stage entries in the period\n{t}\n\
         win rate: measured {} ({} of {} attempts), product of left-side conversions {}\n\
         cycle time awareness -> commit: median {}, p90 {}\n",
        range.start_month(),
        range.end_month(),
        segment_label(segment),
        percent(report.measured_win_rate),
        group_thousands(report.won_attempts),
        group_thousands(report.awareness_attempts),
        percent(report.left_side_win_rate_product),
        days(report.median_cycle_time.as_ref()),
        days(report.p90_cycle_time.as_ref()),
    ))
}

/// Which stage to work on first: the ARR the next 12 months of leads add at
/// the rates of the 12 whole months before `as_of` (seconds; now when
/// `None`), and what a point of conversion or 10% less time in each stage
/// would add.
pub async fn sensitivity(
    target: &Target,
    as_of: Option<i64>,
    segment: Option<Segment>,
    format: Format,
) -> anyhow::Result<String> {
    let report = target
        .funnel()?
        .get_stage_sensitivity(GetStageSensitivityRequest {
            as_of: as_of.and_then(timestamp),
            segment: segment.unwrap_or(Segment::Unspecified) as i32,
        })
        .await
        .map_err(|s| anyhow::anyhow!("GetStageSensitivity: {}", describe(&s)))?
        .into_inner();
    if let Some(out) = export(format, "stages", || {
        rest::StageSensitivityReport::from(report.clone())
    })? {
        return Ok(out);
    }
    let inputs = report.inputs.clone().unwrap_or_default();
    let mut t = table(&[
        "rank",
        "stage",
        "conversion",
        "median to next",
        "+1 point",
        "-10% time",
    ]);
    if let Some(column) = t.column_mut(1) {
        column.set_cell_alignment(CellAlignment::Left);
    }
    let mut rows: Vec<_> = report.stages.iter().collect();
    rows.sort_by_key(|r| r.rank);
    for r in rows {
        let measured = inputs.stages.iter().find(|m| m.stage == r.stage);
        t.add_row(vec![
            r.rank.to_string(),
            stage_name(r.stage),
            measured.map_or_else(|| "-".to_owned(), |m| percent(m.conversion_rate)),
            days(measured.and_then(|m| m.median_time_to_next.as_ref())),
            amount(r.arr_delta_conversion.as_ref()),
            amount(r.arr_delta_time.as_ref()),
        ]);
    }
    let month = |t: Option<&Timestamp>| {
        t.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
            .map_or_else(|| "-".to_owned(), |d| d.format("%Y-%m").to_string())
    };
    let last_month = inputs.window_end.as_ref().map(|t| Timestamp {
        seconds: t.seconds - 1,
        nanos: 0,
    });
    Ok(format!(
        "Stage sensitivity, rates of {}..{} ({}), ARR added over the next 12 months: {} {}\n{t}\n\
         leads a month {:.1}, first MRR {}, monthly logo churn {}, expansion in growth {}\n",
        month(inputs.window_start.as_ref()),
        month(last_month.as_ref()),
        segment_label(segment),
        report.reporting_currency_code,
        amount(report.baseline_arr_added.as_ref()),
        inputs.leads_per_month,
        amount(inputs.mean_first_mrr.as_ref()),
        percent(inputs.monthly_logo_churn),
        amount(inputs.mean_expansion_mrr.as_ref()),
    ))
}

/// A revenue report's cut (`--cut plan=pro`, `--cut attr.region=eu`) and
/// group-by (`--group-by csm`, `--group-by attr.region`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cuts {
    /// Only one value of one dimension.
    pub cut: Option<Cut>,
    /// A break-down by one dimension.
    pub group_by: Option<GroupBy>,
}

impl Cuts {
    /// Nothing cut.
    pub fn none() -> Self {
        Self::default()
    }

    /// How the report's title names the cut.
    fn label(&self) -> String {
        match (&self.cut, &self.group_by) {
            (Some(c), _) => format!(
                ", {}={}",
                dimension_label(c.dimension, &c.attribute),
                c.value
            ),
            (None, Some(g)) => format!(", by {}", dimension_label(g.dimension, &g.attribute)),
            (None, None) => String::new(),
        }
    }
}

/// Parses a dimension: segment, plan, owner, csm, tag or `attr.<name>`.
fn parse_dimension(option: &str, text: &str) -> anyhow::Result<(i32, String)> {
    use bowtie_proto::revenue::CutDimension as D;
    let d = match text {
        "segment" => D::Segment,
        "plan" => D::Plan,
        "owner" => D::Owner,
        "csm" => D::Csm,
        "tag" => D::Tag,
        _ => match text.strip_prefix("attr.") {
            Some(name) if !name.is_empty() => return Ok((D::Attribute as i32, name.to_owned())),
            _ => anyhow::bail!(
                "{option}: {text:?} is not a dimension (segment, plan, owner, csm, tag or attr.<name>)"
            ),
        },
    };
    Ok((d as i32, String::new()))
}

fn dimension_label(dimension: i32, attribute: &str) -> String {
    use bowtie_proto::revenue::CutDimension as D;
    match D::try_from(dimension) {
        Ok(D::Attribute) => format!("attr.{attribute}"),
        Ok(d) => d
            .as_str_name()
            .trim_start_matches("CUT_DIMENSION_")
            .to_ascii_lowercase(),
        Err(_) => dimension.to_string(),
    }
}

/// Parses `--cut <dimension>=<value>` and `--group-by <dimension>`.
pub fn parse_cuts(cut: Option<&str>, group_by: Option<&str>) -> anyhow::Result<Cuts> {
    let cut = cut
        .map(|text| {
            let (dimension, value) = text.split_once('=').ok_or_else(|| {
                anyhow::anyhow!("--cut: expected <dimension>=<value>, got {text:?}")
            })?;
            let (dimension, attribute) = parse_dimension("--cut", dimension)?;
            anyhow::Ok(Cut {
                dimension,
                attribute,
                value: value.to_owned(),
            })
        })
        .transpose()?;
    let group_by = group_by
        .map(|text| {
            let (dimension, attribute) = parse_dimension("--group-by", text)?;
            anyhow::Ok(GroupBy {
                dimension,
                attribute,
            })
        })
        .transpose()?;
    Ok(Cuts { cut, group_by })
}

fn waterfall_table(periods: &[bowtie_proto::revenue::MrrPeriod], moved: bool) -> Table {
    let mut columns = vec![
        "month",
        "start MRR",
        "+ new",
        "+ expansion",
        "+ reactivation",
        "- contraction",
        "- churn",
    ];
    if moved {
        columns.push("+ moved");
    }
    columns.extend(["end MRR", "ARR", "paying", "logo churn"]);
    let mut t = table(&columns);
    for p in periods {
        let mut row = vec![
            p.period.clone(),
            amount(p.start_mrr.as_ref()),
            amount(p.new_mrr.as_ref()),
            amount(p.expansion_mrr.as_ref()),
            amount(p.reactivation_mrr.as_ref()),
            amount(p.contraction_mrr.as_ref()),
            amount(p.churn_mrr.as_ref()),
        ];
        if moved {
            row.push(amount(p.moved_mrr.as_ref()));
        }
        row.extend([
            amount(p.end_mrr.as_ref()),
            amount(p.end_arr.as_ref()),
            group_thousands(p.paying_accounts_end),
            percent(p.customer_churn_rate),
        ]);
        t.add_row(row);
    }
    t
}

/// The MRR waterfall, month by month, cut or grouped as `cuts` says (one
/// table per value after the total).
pub async fn mrr(
    target: &Target,
    range: MonthRange,
    segment: Option<Segment>,
    cuts: &Cuts,
    format: Format,
) -> anyhow::Result<String> {
    let report = target
        .revenue()?
        .get_mrr_report(GetMrrReportRequest {
            start_month: range.start_month(),
            end_month: range.end_month(),
            segment: segment.unwrap_or(Segment::Unspecified) as i32,
            cut: cuts.cut.clone(),
            group_by: cuts.group_by.clone(),
            ..GetMrrReportRequest::default()
        })
        .await
        .map_err(|s| anyhow::anyhow!("GetMrrReport: {}", describe(&s)))?
        .into_inner();
    if let Some(out) = export(format, "periods", || rest::MrrReport::from(report.clone()))? {
        return Ok(out);
    }
    let t = waterfall_table(&report.periods, cuts.cut.is_some());
    let mut out = format!(
        "MRR waterfall {}..{} ({}{}), {}\n{t}\n",
        range.start_month(),
        range.end_month(),
        segment_label(segment),
        cuts.label(),
        report.reporting_currency_code,
    );
    for g in &report.groups {
        let name = if g.value.is_empty() {
            "(none)"
        } else {
            &g.value
        };
        out.push_str(&format!(
            "\n{name}\n{}\n",
            waterfall_table(&g.periods, true)
        ));
    }
    Ok(out)
}

/// The churn analysis, month by month: each period's churn and contraction
/// split by cancellation reason code and by kind, with each line's share.
pub async fn churn(
    target: &Target,
    range: MonthRange,
    segment: Option<Segment>,
    format: Format,
) -> anyhow::Result<String> {
    let report = target
        .revenue()?
        .get_churn_analysis(GetChurnAnalysisRequest {
            start_month: range.start_month(),
            end_month: range.end_month(),
            segment: segment.unwrap_or(Segment::Unspecified) as i32,
            ..GetChurnAnalysisRequest::default()
        })
        .await
        .map_err(|s| anyhow::anyhow!("GetChurnAnalysis: {}", describe(&s)))?
        .into_inner();
    if let Some(out) = export(format, "periods", || {
        rest::ChurnAnalysis::from(report.clone())
    })? {
        return Ok(out);
    }
    let kind_label = |k: i32| match CancellationKind::try_from(k) {
        Ok(CancellationKind::Voluntary) => "voluntary",
        Ok(CancellationKind::Involuntary) => "involuntary",
        _ => "unspecified",
    };
    let mut t = table(&[
        "month",
        "loss",
        "by",
        "reason or kind",
        "lost MRR",
        "count",
        "share",
    ]);
    for p in &report.periods {
        for (loss, total, count, reasons, kinds) in [
            (
                "churn",
                &p.churn_mrr,
                p.churned_accounts,
                &p.churn_by_reason,
                &p.churn_by_kind,
            ),
            (
                "contraction",
                &p.contraction_mrr,
                p.contractions,
                &p.contraction_by_reason,
                &p.contraction_by_kind,
            ),
        ] {
            t.add_row(vec![
                p.period.clone(),
                loss.to_owned(),
                "total".to_owned(),
                String::new(),
                amount(total.as_ref()),
                group_thousands(count),
                String::new(),
            ]);
            for r in reasons {
                t.add_row(vec![
                    p.period.clone(),
                    loss.to_owned(),
                    "reason".to_owned(),
                    r.reason_code.clone(),
                    amount(r.lost_mrr.as_ref()),
                    group_thousands(r.movements),
                    percent(r.share),
                ]);
            }
            for k in kinds {
                t.add_row(vec![
                    p.period.clone(),
                    loss.to_owned(),
                    "kind".to_owned(),
                    kind_label(k.kind).to_owned(),
                    amount(k.lost_mrr.as_ref()),
                    group_thousands(k.movements),
                    percent(k.share),
                ]);
            }
        }
    }
    Ok(format!(
        "Churn analysis {}..{} ({}), {}\n{t}\n",
        range.start_month(),
        range.end_month(),
        segment_label(segment),
        report.reporting_currency_code,
    ))
}

/// The retention report as CSV and JSON: a row per segment, then (JSON
/// only) the cohort grid.
#[derive(Serialize)]
struct RetentionExport {
    /// All segments first (with the by-owner split), then each segment.
    segments: Vec<SegmentRetention>,
    /// The cohort grid.
    cohorts: rest::CohortRetention,
}

/// One segment's retention: `all`, `smb`, `mid_market` or `enterprise`.
#[derive(Serialize)]
struct SegmentRetention {
    segment: &'static str,
    #[serde(flatten)]
    retention: rest::Retention,
}

fn segment_key(segment: Option<Segment>) -> &'static str {
    match segment {
        None | Some(Segment::Unspecified) => "all",
        Some(Segment::Smb) => "smb",
        Some(Segment::MidMarket) => "mid_market",
        Some(Segment::Enterprise) => "enterprise",
    }
}

/// Retention over the period (logo, GRR, NRR) overall and per segment, and
/// the cohort grid of MRR retention by month since the first payment. As
/// CSV, one row per segment (the cohort grid is the gateway's
/// `/api/v1/revenue/cohorts?format=csv`); as JSON, both.
pub async fn retention(
    target: &Target,
    range: MonthRange,
    segment: Option<Segment>,
    cuts: &Cuts,
    now: i64,
    format: Format,
) -> anyhow::Result<String> {
    let mut client = target.revenue()?;
    let t0 = range.start();
    let t1 = range.end().min(now);
    anyhow::ensure!(t1 > t0, "the period starts in the future");
    let segments: Vec<Option<Segment>> = match segment {
        Some(s) => vec![Some(s)],
        None => vec![
            None,
            Some(Segment::Smb),
            Some(Segment::MidMarket),
            Some(Segment::Enterprise),
        ],
    };
    let mut currency = String::new();
    let mut exported = Vec::new();
    let mut t = table(&[
        "segment",
        "paying at start",
        "still paying",
        "logo retention",
        "MRR at start",
        "MRR at end",
        "GRR",
        "NRR",
    ]);
    let mut owners = table(&[
        "owner (closed the deal)",
        "paying at start",
        "still paying",
        "logo retention",
        "MRR at start",
        "MRR at end",
        "GRR",
        "NRR",
    ]);
    let group_title = cuts
        .group_by
        .as_ref()
        .map(|g| dimension_label(g.dimension, &g.attribute))
        .unwrap_or_default();
    let mut groups = table(&[
        group_title.as_str(),
        "paying at start",
        "still paying",
        "logo retention",
        "MRR at start",
        "MRR at end",
        "GRR",
        "NRR",
    ]);
    for (i, s) in segments.into_iter().enumerate() {
        let r = client
            .get_retention(GetRetentionRequest {
                start_at: timestamp(t0),
                end_at: timestamp(t1),
                segment: s.unwrap_or(Segment::Unspecified) as i32,
                owner: String::new(),
                by_owner: i == 0 && cuts.cut.is_none(),
                cut: cuts.cut.clone(),
                group_by: if i == 0 { cuts.group_by.clone() } else { None },
                ..GetRetentionRequest::default()
            })
            .await
            .map_err(|st| anyhow::anyhow!("GetRetention: {}", describe(&st)))?
            .into_inner();
        if let Some(m) = &r.mrr_start {
            currency.clone_from(&m.currency_code);
        }
        t.add_row(vec![
            segment_label(s).to_owned(),
            group_thousands(r.accounts_start),
            group_thousands(r.accounts_retained),
            percent(r.logo_retention),
            amount(r.mrr_start.as_ref()),
            amount(r.mrr_end.as_ref()),
            percent(r.grr),
            percent(r.nrr),
        ]);
        for g in &r.groups {
            groups.add_row(vec![
                if g.value.is_empty() {
                    "(none)".to_owned()
                } else {
                    g.value.clone()
                },
                group_thousands(g.accounts_start),
                group_thousands(g.accounts_retained),
                percent(g.logo_retention),
                amount(g.mrr_start.as_ref()),
                amount(g.mrr_end.as_ref()),
                percent(g.grr),
                percent(g.nrr),
            ]);
        }
        for o in &r.by_owner {
            owners.add_row(vec![
                o.owner.clone(),
                group_thousands(o.accounts_start),
                group_thousands(o.accounts_retained),
                percent(o.logo_retention),
                amount(o.mrr_start.as_ref()),
                amount(o.mrr_end.as_ref()),
                percent(o.grr),
                percent(o.nrr),
            ]);
        }
        if format != Format::Table {
            exported.push(SegmentRetention {
                segment: segment_key(s),
                retention: r.into(),
            });
        }
    }
    let cohorts = client
        .get_cohort_retention(GetCohortRetentionRequest {
            start_month: range.start_month(),
            end_month: range.end_month(),
            months: 12,
            segment: segment.unwrap_or(Segment::Unspecified) as i32,
            cut: cuts.cut.clone(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("GetCohortRetention: {}", describe(&s)))?
        .into_inner();
    if let Some(out) = export(format, "segments", || RetentionExport {
        segments: exported,
        cohorts: cohorts.clone().into(),
    })? {
        return Ok(out);
    }
    let width = cohorts
        .cohorts
        .iter()
        .map(|c| c.cells.len())
        .max()
        .unwrap_or(0);
    let mut header = vec!["cohort".to_owned(), "accounts".to_owned()];
    header.extend((0..width).map(|m| format!("M{m}")));
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut grid = table(&header);
    for c in &cohorts.cohorts {
        let mut row = vec![c.cohort.clone(), group_thousands(c.accounts)];
        row.extend(c.cells.iter().map(|cell| percent(cell.mrr_retention)));
        grid.add_row(row);
    }
    let until = chrono::DateTime::from_timestamp(t1, 0)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default();
    let by_value = if cuts.group_by.is_some() {
        format!(
            "Retention by {group_title} (each account by its value on the first day)\n{groups}\n"
        )
    } else {
        String::new()
    };
    let sales = if cuts.cut.is_none() {
        format!(
            "Sales quality ({}): retention by the owner who closed the deal\n{owners}\n",
            segment_label(segment)
        )
    } else {
        String::new()
    };
    Ok(format!(
        "Retention of the accounts paying on {} until {until}{}, {currency}\n{t}\n\
         {by_value}{sales}\
         MRR retention by month since the first payment, cohorts {}..{}\n{grid}\n",
        range.first,
        cuts.label(),
        range.start_month(),
        range.end_month(),
    ))
}

/// The accounts at risk (red health or a churn risk at or above the
/// threshold), lowest score first, with the reason for each: the one-line
/// reason of the account's weakest health component; only the caller's
/// book with `mine`.
pub async fn at_risk(
    target: &Target,
    segment: Option<Segment>,
    limit: usize,
    mine: bool,
    format: Format,
) -> anyhow::Result<String> {
    use bowtie_proto::scoring::{Band, ListAtRiskRequest};
    let page_size = i32::try_from(limit.clamp(1, 1000)).unwrap_or(50);
    let response = target
        .scoring()?
        .list_at_risk(ListAtRiskRequest {
            segment: segment.unwrap_or(Segment::Unspecified) as i32,
            page: Some(bowtie_proto::common::PageRequest {
                page_size,
                page_token: String::new(),
            }),
            mine,
        })
        .await
        .map_err(|s| anyhow::anyhow!("ListAtRisk: {}", describe(&s)))?
        .into_inner();
    let mut accounts = target.accounts()?;
    if format != Format::Table {
        let mut rows = Vec::with_capacity(response.accounts.len());
        for h in response.accounts {
            let account = match accounts
                .get_account(bowtie_proto::accounts::GetAccountRequest {
                    id: h.account_id.clone(),
                })
                .await
            {
                Ok(r) => r.into_inner().account.unwrap_or_default(),
                // An account scored but since removed still shows, by id.
                Err(s) if s.code() == tonic::Code::NotFound => Default::default(),
                Err(s) => anyhow::bail!("GetAccount: {}", describe(&s)),
            };
            rows.push(rest::at_risk_account(h, account));
        }
        let next_page_token = response.page.map(|p| p.next_page_token).unwrap_or_default();
        return export(format, "accounts", || rest::AtRiskPage {
            accounts: rows,
            next_page_token,
        })
        .map(Option::unwrap_or_default);
    }
    let mut t = table(&[
        "account",
        "segment",
        "health",
        "band",
        "30-day change",
        "churn risk",
        "MRR",
        "why",
    ]);
    for i in [1, 3, 7] {
        if let Some(column) = t.column_mut(i) {
            column.set_cell_alignment(CellAlignment::Left);
        }
    }
    for h in &response.accounts {
        let name = match accounts
            .get_account(bowtie_proto::accounts::GetAccountRequest {
                id: h.account_id.clone(),
            })
            .await
        {
            Ok(r) => r.into_inner().account.map(|a| a.name).unwrap_or_default(),
            Err(_) => h.account_id.clone(),
        };
        let weakest = h
            .components
            .iter()
            .min_by_key(|c| c.score)
            .map(|c| c.reason.clone())
            .unwrap_or_default();
        t.add_row(vec![
            name,
            segment_label(Segment::try_from(h.segment).ok()).to_owned(),
            h.score.to_string(),
            Band::try_from(h.band)
                .map(|b| {
                    b.as_str_name()
                        .trim_start_matches("BAND_")
                        .to_ascii_lowercase()
                })
                .unwrap_or_default(),
            h.delta_30d
                .map_or_else(|| "-".to_owned(), |d| format!("{d:+}")),
            h.churn_risk_bp
                .map_or_else(|| "-".to_owned(), |bp| percent(f64::from(bp) / 10_000.0)),
            money(h.mrr_minor_units),
            weakest,
        ]);
    }
    Ok(format!(
        "Accounts at risk ({}), lowest health first: {} shown\n{t}\n",
        segment_label(segment),
        response.accounts.len()
    ))
}

/// A person's open CTAs (or, without `owner`, the person with the most),
/// earliest due first, overdue ones marked.
pub async fn work(
    target: &Target,
    owner: Option<&str>,
    limit: usize,
    format: Format,
) -> anyhow::Result<String> {
    use bowtie_proto::success::{CtaType, ListCtasRequest, Priority};
    let mut success = target.success()?;
    let page = |size: usize| {
        Some(bowtie_proto::common::PageRequest {
            page_size: i32::try_from(size.clamp(1, 1000)).unwrap_or(1000),
            page_token: String::new(),
        })
    };
    let owner = match owner {
        Some(o) => o.to_owned(),
        None => {
            let all = success
                .list_ctas(ListCtasRequest {
                    page: page(1000),
                    ..ListCtasRequest::default()
                })
                .await
                .map_err(|s| anyhow::anyhow!("ListCtas: {}", describe(&s)))?
                .into_inner();
            let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
            for c in all.ctas.iter().filter(|c| !c.owner.is_empty()) {
                *counts.entry(c.owner.clone()).or_default() += 1;
            }
            let busiest = counts.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)));
            match busiest {
                Some((o, _)) => o.clone(),
                None => {
                    let none = || rest::CtaPage {
                        ctas: Vec::new(),
                        next_page_token: String::new(),
                    };
                    return Ok(export(format, "ctas", none)?
                        .unwrap_or_else(|| "No open call to action.\n".to_owned()));
                }
            }
        }
    };
    let response = success
        .list_ctas(ListCtasRequest {
            owner: owner.clone(),
            page: page(limit),
            ..ListCtasRequest::default()
        })
        .await
        .map_err(|s| anyhow::anyhow!("ListCtas: {}", describe(&s)))?
        .into_inner();
    if let Some(out) = export(format, "ctas", || rest::CtaPage {
        ctas: response.ctas.iter().cloned().map(rest::Cta::from).collect(),
        next_page_token: response
            .page
            .as_ref()
            .map(|p| p.next_page_token.clone())
            .unwrap_or_default(),
    })? {
        return Ok(out);
    }
    let mut accounts = target.accounts()?;
    let mut t = table(&["due", "account", "priority", "type", "why", "status"]);
    for i in 1..6 {
        if let Some(column) = t.column_mut(i) {
            column.set_cell_alignment(CellAlignment::Left);
        }
    }
    let now = chrono::Utc::now().timestamp();
    let name = |raw: &str, prefix: &str| raw.trim_start_matches(prefix).to_ascii_lowercase();
    let mut overdue = 0;
    for c in &response.ctas {
        let account = match accounts
            .get_account(bowtie_proto::accounts::GetAccountRequest {
                id: c.account_id.clone(),
            })
            .await
        {
            Ok(r) => r.into_inner().account.map(|a| a.name).unwrap_or_default(),
            Err(_) => c.account_id.clone(),
        };
        let due = c.due_time.map_or(0, |t| t.seconds);
        let late = due < now;
        overdue += usize::from(late);
        let day = chrono::DateTime::from_timestamp(due, 0)
            .map(|d| d.format("%Y-%m-%d").to_string())
            .unwrap_or_default();
        t.add_row(vec![
            if late { format!("{day} overdue") } else { day },
            account,
            Priority::try_from(c.priority)
                .map(|p| name(p.as_str_name(), "PRIORITY_"))
                .unwrap_or_default(),
            CtaType::try_from(c.r#type)
                .map(|k| name(k.as_str_name(), "CTA_TYPE_").replace('_', "-"))
                .unwrap_or_default(),
            c.reason.clone(),
            bowtie_proto::success::CtaStatus::try_from(c.status)
                .map(|s| name(s.as_str_name(), "CTA_STATUS_").replace('_', " "))
                .unwrap_or_default(),
        ]);
    }
    Ok(format!(
        "Open calls to action of {owner}, earliest due first: {} shown, {overdue} overdue\n{t}\n",
        response.ctas.len()
    ))
}

/// The playbooks report as CSV and JSON: each playbook's name beside the
/// gateway's effectiveness document.
#[derive(Serialize)]
struct PlaybookEffectivenessList {
    playbooks: Vec<PlaybookEffectiveness>,
}

#[derive(Serialize)]
struct PlaybookEffectiveness {
    playbook: String,
    #[serde(flatten)]
    effectiveness: rest::Effectiveness,
}

/// Every playbook over `range`: CTAs opened, the share closed within SLA,
/// outcomes, churn of the treated and the comparison group, and the effect
/// with its 95% interval (or why there is none yet).
pub async fn playbooks(
    target: &Target,
    range: MonthRange,
    format: Format,
) -> anyhow::Result<String> {
    use bowtie_proto::success::{GetPlaybookEffectivenessRequest, ListPlaybooksRequest};
    let mut success = target.success()?;
    let list = success
        .list_playbooks(ListPlaybooksRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("ListPlaybooks: {}", describe(&s)))?
        .into_inner();
    let mut t = table(&[
        "playbook",
        "mode",
        "CTAs",
        "in SLA",
        "saved / lost / won / not needed / auto",
        "churn treated",
        "churn comparison",
        "effect",
    ]);
    for i in [1, 4, 7] {
        if let Some(column) = t.column_mut(i) {
            column.set_cell_alignment(CellAlignment::Left);
        }
    }
    let mut exported = Vec::new();
    let rate = |r: Option<f64>, n: i64| {
        r.map_or_else(|| format!("- of {n}"), |r| format!("{} of {n}", percent(r)))
    };
    for p in &list.playbooks {
        let e = success
            .get_playbook_effectiveness(GetPlaybookEffectivenessRequest {
                playbook_id: p.id.clone(),
                period: Some(bowtie_proto::common::Period {
                    start: Some(prost_types::Timestamp {
                        seconds: range.start(),
                        nanos: 0,
                    }),
                    end: Some(prost_types::Timestamp {
                        seconds: range.end(),
                        nanos: 0,
                    }),
                }),
            })
            .await
            .map_err(|s| anyhow::anyhow!("GetPlaybookEffectiveness: {}", describe(&s)))?
            .into_inner();
        let spec = p.spec.clone().unwrap_or_default();
        if format != Format::Table {
            exported.push(PlaybookEffectiveness {
                playbook: spec.name,
                effectiveness: e.into(),
            });
            continue;
        }
        let mode = bowtie_proto::success::PlaybookMode::try_from(spec.mode)
            .map(|m| {
                m.as_str_name()
                    .trim_start_matches("PLAYBOOK_MODE_")
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        let mode = if spec.holdout_percent > 0 {
            format!("{mode} {}%", spec.holdout_percent)
        } else {
            mode
        };
        let outcomes: Vec<String> = (1..=5)
            .map(|i| e.outcomes.get(i).copied().unwrap_or(0).to_string())
            .collect();
        let (treated, comparison) = (
            e.treated.unwrap_or_default(),
            e.comparison.unwrap_or_default(),
        );
        let effect = match (e.effect, e.effect_low, e.effect_high) {
            (Some(d), Some(lo), Some(hi)) => format!(
                "{:+.1} pts ({:+.1} to {:+.1}){}",
                d * 100.0,
                lo * 100.0,
                hi * 100.0,
                if e.observational {
                    ", observational"
                } else {
                    ""
                }
            ),
            _ => e.note.clone(),
        };
        t.add_row(vec![
            spec.name,
            mode,
            group_thousands(e.ctas_opened),
            e.closed_within_sla.map_or_else(|| "-".to_owned(), percent),
            outcomes.join(" / "),
            rate(treated.churn_rate, treated.matured),
            rate(comparison.churn_rate, comparison.matured),
            effect,
        ]);
    }
    if let Some(out) = export(format, "playbooks", || PlaybookEffectivenessList {
        playbooks: exported,
    })? {
        return Ok(out);
    }
    Ok(format!(
        "Playbooks, {} to {}: churn within the horizon of the matured triggers\n{t}\n",
        range.start_month(),
        range.end_month()
    ))
}

fn period(range: MonthRange) -> Option<bowtie_proto::common::Period> {
    Some(bowtie_proto::common::Period {
        start: timestamp(range.start()),
        end: timestamp(range.end()),
    })
}

fn optional_percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".to_owned(), percent)
}

/// The book of business of every CSM (or owner, `by_owner`), or of one
/// `person`: accounts, ARR, health, red and high-risk accounts, open and
/// overdue CTAs, renewals in the next 90 days with their forecast, and
/// logo retention, GRR and NRR over `range`; only the books of the
/// caller's people with `mine`.
pub async fn book(
    target: &Target,
    by_owner: bool,
    person: Option<&str>,
    mine: bool,
    range: MonthRange,
    format: Format,
) -> anyhow::Result<String> {
    use bowtie_proto::success::{BookGrouping, GetBookOfBusinessRequest};
    let grouping = if by_owner {
        BookGrouping::Owner
    } else {
        BookGrouping::Csm
    };
    let response = target
        .success()?
        .get_book_of_business(GetBookOfBusinessRequest {
            group_by: grouping as i32,
            person: person.unwrap_or_default().to_owned(),
            period: period(range),
            mine,
        })
        .await
        .map_err(|s| anyhow::anyhow!("GetBookOfBusiness: {}", describe(&s)))?
        .into_inner();
    if let Some(out) = export(format, "books", || {
        rest::BookOfBusiness::from(response.clone())
    })? {
        return Ok(out);
    }
    let mut t = table(&[
        if by_owner { "owner" } else { "CSM" },
        "accounts",
        "ARR",
        "health",
        "red",
        "high risk",
        "open CTAs",
        "overdue",
        "renewals 90 d",
        "at stake",
        "forecast",
        "logo retention",
        "GRR",
        "NRR",
    ]);
    if let Some(column) = t.column_mut(0) {
        column.set_cell_alignment(CellAlignment::Left);
    }
    for b in &response.books {
        t.add_row(vec![
            if b.person.is_empty() {
                "(none)".to_owned()
            } else {
                b.person.clone()
            },
            group_thousands(b.accounts),
            amount(b.arr.as_ref()),
            b.average_health
                .map_or_else(|| "-".to_owned(), |h| format!("{h:.1}")),
            group_thousands(b.red),
            group_thousands(b.high_risk),
            group_thousands(b.open_ctas),
            group_thousands(b.overdue_ctas),
            group_thousands(b.renewals_90d),
            amount(b.renewal_amount_at_stake.as_ref()),
            amount(b.renewal_forecast.as_ref()),
            optional_percent(b.logo_retention),
            optional_percent(b.grr),
            optional_percent(b.nrr),
        ]);
    }
    Ok(format!(
        "Book of business by {}, retention {} to {}, {}\n{t}\n",
        if by_owner { "owner" } else { "CSM" },
        range.start_month(),
        range.end_month(),
        response.reporting_currency_code
    ))
}

/// The activities logged over `range` per author and ISO week (and per
/// account owner with `by_owner`), only on `owner`'s accounts if given.
pub async fn touches(
    target: &Target,
    range: MonthRange,
    owner: Option<&str>,
    by_owner: bool,
    format: Format,
) -> anyhow::Result<String> {
    use bowtie_proto::success::GetTouchesReportRequest;
    let response = target
        .success()?
        .get_touches_report(GetTouchesReportRequest {
            period: period(range),
            owner: owner.unwrap_or_default().to_owned(),
            author: String::new(),
            by_owner,
        })
        .await
        .map_err(|s| anyhow::anyhow!("GetTouchesReport: {}", describe(&s)))?
        .into_inner();
    if let Some(out) = export(format, "touches", || rest::TouchesReport {
        touches: response
            .touches
            .iter()
            .cloned()
            .map(rest::Touches::from)
            .collect(),
    })? {
        return Ok(out);
    }
    let mut header = vec!["author", "week"];
    if by_owner {
        header.push("owner");
    }
    header.extend(["notes", "calls", "meetings", "emails", "total", "accounts"]);
    let mut t = table(&header);
    for i in 0..if by_owner { 3 } else { 2 } {
        if let Some(column) = t.column_mut(i) {
            column.set_cell_alignment(CellAlignment::Left);
        }
    }
    for r in &response.touches {
        let mut row = vec![r.author.clone(), r.week.clone()];
        if by_owner {
            row.push(r.owner.clone());
        }
        row.extend(
            [r.notes, r.calls, r.meetings, r.emails, r.total, r.accounts].map(group_thousands),
        );
        t.add_row(row);
    }
    Ok(format!(
        "Touches {} to {}{}: activities logged per author and ISO week\n{t}\n",
        range.start_month(),
        range.end_month(),
        owner.map_or_else(String::new, |o| format!(" on accounts of {o}"))
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default()
    }

    #[test]
    fn thousands_are_grouped_by_three() {
        assert_eq!(group_thousands(0), "0");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1000), "1,000");
        assert_eq!(group_thousands(-1_234_567), "-1,234,567");
    }

    #[test]
    fn money_keeps_the_cents() {
        assert_eq!(money(73_495_120), "734,951.20");
        assert_eq!(money(5), "0.05");
        assert_eq!(money(-150_000), "-1,500.00");
    }

    #[test]
    fn rates_and_durations_are_rounded_for_reading() {
        assert_eq!(percent(0.1234), "12.3%");
        assert_eq!(percent(1.0), "100.0%");
        let d = prost_types::Duration {
            seconds: 36 * 3600,
            nanos: 0,
        };
        assert_eq!(days(Some(&d)), "1.5 d");
        assert_eq!(days(None), "-");
    }

    #[test]
    fn periods_cover_whole_months() -> anyhow::Result<()> {
        let today = date(2026, 11, 23);
        let default = parse_period(None, today)?;
        assert_eq!(
            (default.start_month(), default.end_month()),
            ("2025-12".into(), "2026-11".into())
        );
        let six = parse_period(Some("6m"), today)?;
        assert_eq!(six.start_month(), "2026-06");
        let q = parse_period(Some("2025-Q4"), today)?;
        assert_eq!(
            (q.start_month(), q.end_month()),
            ("2025-10".into(), "2025-12".into())
        );
        // 2025-10-01T00:00:00Z and 2026-01-01T00:00:00Z.
        assert_eq!((q.start(), q.end()), (1_759_276_800, 1_767_225_600));
        let year = parse_period(Some("2025"), today)?;
        assert_eq!(
            (year.start_month(), year.end_month()),
            ("2025-01".into(), "2025-12".into())
        );
        let range = parse_period(Some("2025-11..2026-02"), today)?;
        assert_eq!(
            (range.start_month(), range.end_month()),
            ("2025-11".into(), "2026-02".into())
        );
        assert!(parse_period(Some("2026-02..2025-11"), today).is_err());
        assert!(parse_period(Some("2025-Q5"), today).is_err());
        assert!(parse_period(Some("next year"), today).is_err());
        Ok(())
    }
}
