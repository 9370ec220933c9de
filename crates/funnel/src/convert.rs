//! Wire <-> domain: parse requests into checked values (every problem named
//! by field) and render domain values as protobuf messages.

use bowtie_proto::accounts as accounts_pb;
use bowtie_proto::common::{Money, PageResponse, Segment, Stage};
use bowtie_proto::funnel as pb;
use bowtie_runtime::api::{idempotency, parsed};
use bowtie_runtime::error::{Error, FieldViolations};
use bowtie_runtime::idempotency::Idempotency;
use bowtie_runtime::paging::Page;
use bowtie_runtime::validate;
use bowtie_runtime::{AccountId, Instant};
use prost_types::Duration;

use crate::domain::{
    self, Cohort, Entry, Filters, FunnelReport, JourneyRow, NewTransition, Profile, Recorded,
    Selection, Transition,
};
use crate::measure::{Measured, Window};
use crate::sensitivity::{self, Inputs, MODEL_STAGES, Sensitivity};

/// Longest reason code.
pub const MAX_REASON: usize = 64;
/// Longest source.
pub const MAX_SOURCE: usize = 64;
/// Longest owner filter.
pub const MAX_OWNER: usize = 200;
/// How far ahead of now a transition may be dated (clock skew allowance).
pub const MAX_FUTURE_MICROS: i64 = 24 * 3600 * 1_000_000;

/// A reason code: lower-case ASCII letters, digits and underscores; required
/// for LOST and CHURNED.
pub fn reason(
    v: &mut FieldViolations,
    field: &str,
    raw: &str,
    stage: Option<Stage>,
) -> Option<String> {
    let reason = raw.trim();
    if reason.len() > MAX_REASON
        || !reason
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        v.add(
            field,
            format!("must be at most {MAX_REASON} lower-case letters, digits or underscores"),
        );
        return None;
    }
    if reason.is_empty() && stage.is_some_and(domain::is_outcome) {
        v.add(field, "is required for LOST and CHURNED");
        return None;
    }
    Some(reason.to_owned())
}

/// Parses RecordTransition.
pub fn new_transition(
    v: &mut FieldViolations,
    req: &pb::RecordTransitionRequest,
    now: Instant,
) -> Option<NewTransition> {
    let account_id = validate::account_id(v, "account_id", &req.account_id);
    let stage: Option<Stage> = validate::enum_value(v, "to_stage", req.to_stage, true);
    let occurred_at = validate::required_instant(v, "occurred_at", req.occurred_at.as_ref());
    if let Some(at) = occurred_at
        && at > now.plus_micros(MAX_FUTURE_MICROS)
    {
        v.add("occurred_at", "must not be more than one day in the future");
    }
    let reason = reason(v, "reason", &req.reason, stage);
    let source = validate::optional_text(v, "source", &req.source, MAX_SOURCE)
        .map(|s| if s.is_empty() { "api".to_owned() } else { s });
    Some(NewTransition {
        account_id: account_id?,
        stage: stage?,
        occurred_at: occurred_at?,
        reason: reason?,
        source: source?,
    })
}

/// Parses the segment and owner filters.
pub fn filters(v: &mut FieldViolations, segment: i32, owner: &str) -> Filters {
    let segment: Option<Segment> = validate::enum_value(v, "segment", segment, false);
    let owner = validate::optional_text(v, "owner", owner, MAX_OWNER);
    Filters {
        segment: segment.filter(|s| *s != Segment::Unspecified),
        owner: owner.filter(|o| !o.is_empty()),
    }
}

/// Parses the report's cohort choice.
pub fn selection(v: &mut FieldViolations, raw: i32) -> Option<Selection> {
    let by: Option<pb::CohortBy> = validate::enum_value(v, "cohort_by", raw, false);
    by.map(|by| match by {
        pb::CohortBy::AttemptStart => Selection::AttemptStartedIn,
        pb::CohortBy::Unspecified | pb::CohortBy::StageEntry => Selection::EnteredIn,
    })
}

/// Parses the cohort-defining stage: AWARENESS (default) or COMMIT.
pub fn cohort_stage(v: &mut FieldViolations, raw: i32) -> Option<Stage> {
    match Stage::try_from(raw) {
        Ok(Stage::Unspecified) => Some(Stage::Awareness),
        Ok(s @ (Stage::Awareness | Stage::Commit)) => Some(s),
        _ => {
            v.add("cohort_stage", "must be STAGE_AWARENESS or STAGE_COMMIT");
            None
        }
    }
}

/// A duration in microseconds (possibly fractional) as a protobuf Duration,
/// rounded to the nanosecond.
pub fn duration(micros: f64) -> Duration {
    let nanos = (micros * 1000.0).round() as i128;
    Duration {
        seconds: (nanos / 1_000_000_000) as i64,
        nanos: (nanos % 1_000_000_000) as i32,
    }
}

/// A write whose request carried an optional idempotency key.
pub type Write<T> = (T, Option<Idempotency>);

/// Parses RecordTransition; `now` bounds how far ahead it may be dated.
pub fn record_transition(
    req: &pb::RecordTransitionRequest,
    now: Instant,
) -> Result<Write<NewTransition>, Error> {
    let mut v = FieldViolations::default();
    let new = new_transition(&mut v, req, now);
    let idem = idempotency(&mut v, &req.idempotency_key, "RecordTransition", req);
    v.into_result()?;
    Ok((parsed(new)?, idem))
}

/// Parses one imported transition with the checks of RecordTransition; an
/// empty source is "import".
pub fn imported_transition(
    t: &pb::ImportedTransition,
    now: Instant,
) -> Result<NewTransition, Error> {
    let req = pb::RecordTransitionRequest {
        account_id: t.account_id.clone(),
        to_stage: t.to_stage,
        occurred_at: t.occurred_at,
        reason: t.reason.clone(),
        source: if t.source.is_empty() {
            "import".to_owned()
        } else {
            t.source.clone()
        },
        idempotency_key: String::new(),
    };
    let mut v = FieldViolations::default();
    let new = new_transition(&mut v, &req, now);
    v.into_result()?;
    parsed(new)
}

/// What ListAccountsInStage asks: the stage, the filters, the page and the
/// keyset position (since, account id) the page token carries.
#[derive(Debug, Clone)]
pub struct InStageQuery {
    /// The stage.
    pub stage: Stage,
    /// Segment and owner.
    pub filters: Filters,
    /// The page.
    pub page: Page,
    /// Where the previous page ended.
    pub after: Option<(Instant, String)>,
}

/// Parses ListAccountsInStage.
pub fn list_in_stage(req: &pb::ListAccountsInStageRequest) -> Result<InStageQuery, Error> {
    let mut v = FieldViolations::default();
    let stage: Option<Stage> = validate::enum_value(&mut v, "stage", req.stage, true);
    let filters = filters(&mut v, req.segment, &req.owner);
    v.into_result()?;
    let page = Page::parse(
        req.page.as_ref(),
        &format!("{}|{:?}|{:?}", req.stage, filters.segment, filters.owner),
    )?;
    let after = match &page.after {
        None => None,
        Some(token) => {
            let bad = || Error::invalid("page.page_token", "is not a token issued for this query");
            let (since, id) = token.split_once(',').ok_or_else(bad)?;
            let since = since.parse::<i64>().map_err(|_| bad())?;
            Some((Instant::from_micros(since), id.to_owned()))
        }
    };
    Ok(InStageQuery {
        stage: parsed(stage)?,
        filters,
        page,
        after,
    })
}

/// The page token that resumes a list of accounts in a stage after `row`.
pub fn in_stage_key(row: &JourneyRow) -> String {
    format!("{},{}", row.current_since.micros(), row.account_id)
}

/// Parses GetFunnelReport: the period, the filters and which entries count.
pub fn funnel_report(
    req: &pb::GetFunnelReportRequest,
) -> Result<((Instant, Instant), Filters, Selection), Error> {
    let mut v = FieldViolations::default();
    let period = validate::instant_period(&mut v, "period", req.period.as_ref());
    let filters = filters(&mut v, req.segment, &req.owner);
    let selection = selection(&mut v, req.cohort_by);
    v.into_result()?;
    Ok((parsed(period)?, filters, parsed(selection)?))
}

/// Parses GetCohortReport: the period, the cohort stage and the filters.
pub fn cohort_report(
    req: &pb::GetCohortReportRequest,
) -> Result<((Instant, Instant), Stage, Filters), Error> {
    let mut v = FieldViolations::default();
    let period = validate::instant_period(&mut v, "period", req.period.as_ref());
    let stage = cohort_stage(&mut v, req.cohort_stage);
    let filters = filters(&mut v, req.segment, &req.owner);
    v.into_result()?;
    Ok((parsed(period)?, parsed(stage)?, filters))
}

/// The profile the accounts service reports for an account.
pub fn profile_of(account: &accounts_pb::Account) -> Profile {
    Profile {
        segment: Segment::try_from(account.segment).unwrap_or(Segment::Unspecified),
        owner: account.owner.clone(),
    }
}

/// Whether the accounts service reports the account archived.
pub fn is_archived(account: &accounts_pb::Account) -> bool {
    account.status == accounts_pb::AccountStatus::Archived as i32
}

/// RecordTransition's answer.
pub fn recorded_to_pb(r: &Recorded) -> pb::RecordTransitionResponse {
    pb::RecordTransitionResponse {
        transition: Some(transition_to_pb(&r.transition)),
        applied: r.applied,
        current_stage: r.current_stage as i32,
    }
}

/// ListAccountsInStage's answer.
pub fn in_stage_listed(rows: &[JourneyRow], page: PageResponse) -> pb::ListAccountsInStageResponse {
    pb::ListAccountsInStageResponse {
        accounts: rows.iter().map(account_in_stage).collect(),
        page: Some(page),
    }
}

/// A batch of the transitions export, each row with its cursor.
pub fn exported_transitions(rows: Vec<(Transition, String)>) -> pb::ExportTransitionsResponse {
    pb::ExportTransitionsResponse {
        rows: rows
            .into_iter()
            .map(|(t, cursor)| pb::ExportedTransition {
                transition: Some(transition_to_pb(&t)),
                cursor,
            })
            .collect(),
    }
}

/// A stored transition on the wire.
pub fn transition_to_pb(t: &Transition) -> pb::Transition {
    pb::Transition {
        id: t.id.to_string(),
        account_id: t.account_id.to_string(),
        to_stage: t.stage as i32,
        occurred_at: Some(t.occurred_at.to_timestamp()),
        record_time: Some(t.recorded_at.to_timestamp()),
        reason: t.reason.clone(),
        source: t.source.clone(),
    }
}

/// GetJourney's answer: the journey as it stands at `now`.
pub fn journey_to_pb(
    account_id: AccountId,
    transitions: &[Transition],
    entries: &[Entry],
    now: Instant,
) -> pb::GetJourneyResponse {
    let last = entries.last();
    let journey = pb::Journey {
        account_id: account_id.to_string(),
        current_stage: last.map_or(0, |e| e.stage as i32),
        current_since: last.map(|e| e.entered_at.to_timestamp()),
        transitions: transitions.iter().map(transition_to_pb).collect(),
        visits: entries
            .iter()
            .map(|e| pb::StageVisit {
                stage: e.stage as i32,
                enter_time: Some(e.entered_at.to_timestamp()),
                exit_time: e.exited_at.map(Instant::to_timestamp),
                duration: Some(duration(e.duration(now) as f64)),
                attempt: e.attempt,
            })
            .collect(),
        time_in_stage: domain::time_in_stages(entries, now)
            .into_iter()
            .map(|(stage, total, visits)| pb::StageTime {
                stage: stage as i32,
                total: Some(duration(total as f64)),
                visits,
            })
            .collect(),
        attempts: last.map_or(0, |e| e.attempt),
    };
    pb::GetJourneyResponse {
        journey: Some(journey),
    }
}

/// A journeys row on the wire.
pub fn account_in_stage(row: &JourneyRow) -> pb::AccountInStage {
    pb::AccountInStage {
        account_id: row.account_id.to_string(),
        stage: row.current_stage as i32,
        since: Some(row.current_since.to_timestamp()),
        segment: row.profile.segment as i32,
        owner: row.profile.owner.clone(),
    }
}

/// A funnel report on the wire.
pub fn report_to_pb(r: &FunnelReport) -> pb::GetFunnelReportResponse {
    pb::GetFunnelReportResponse {
        stages: r
            .stages
            .iter()
            .map(|s| pb::StageMetrics {
                stage: s.stage as i32,
                volume: s.volume,
                converted: s.converted,
                conversion_rate: s.conversion_rate.unwrap_or(0.0),
                dropped: s.drop_offs.iter().map(|d| d.2).sum(),
                drop_offs: s
                    .drop_offs
                    .iter()
                    .map(|(outcome, reason, count)| pb::DropOff {
                        outcome: *outcome as i32,
                        reason: reason.clone(),
                        count: *count,
                    })
                    .collect(),
                median_time_to_next: s.median_to_next.map(duration),
                p90_time_to_next: s.p90_to_next.map(duration),
            })
            .collect(),
        left_side_win_rate_product: r.left_side_win_rate_product,
        measured_win_rate: r.measured_win_rate,
        awareness_attempts: r.awareness_attempts,
        won_attempts: r.won_attempts,
        median_cycle_time: r.median_cycle_time.map(duration),
        p90_cycle_time: r.p90_cycle_time.map(duration),
    }
}

/// Cohorts on the wire.
pub fn cohorts_to_pb(stage: Stage, cohorts: &[Cohort]) -> pb::GetCohortReportResponse {
    pb::GetCohortReportResponse {
        cohort_stage: stage as i32,
        cohorts: cohorts
            .iter()
            .map(|c| pb::Cohort {
                month: format!("{:04}-{:02}", c.month.0, c.month.1),
                size: c.size,
                progress: c
                    .progress
                    .iter()
                    .map(|(stage, reached)| pb::CohortProgress {
                        stage: *stage as i32,
                        share: reached
                            .iter()
                            .map(|n| {
                                if c.size == 0 {
                                    0.0
                                } else {
                                    *n as f64 / c.size as f64
                                }
                            })
                            .collect(),
                        reached: reached.clone(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// Parses GetStageSensitivity: the window before `as_of` (`now` when
/// unset) and the segment filter.
pub fn stage_sensitivity(
    req: &pb::GetStageSensitivityRequest,
    now: Instant,
) -> Result<(Window, Filters), Error> {
    let mut v = FieldViolations::default();
    let as_of = validate::optional_instant(&mut v, "as_of", req.as_of.as_ref());
    let filters = filters(&mut v, req.segment, "");
    let window = as_of.and_then(|at| {
        let window = Window::before(at.unwrap_or(now));
        if window.is_none() {
            v.add(
                "as_of",
                "must be 1971-01-01 or later: the rates are measured over the 12 months before it",
            );
        }
        window
    });
    v.into_result()?;
    Ok((parsed(window)?, filters))
}

/// An amount of the reporting currency.
fn money(currency: &str, minor_units: i64) -> Option<Money> {
    Some(Money {
        currency_code: currency.to_owned(),
        minor_units,
    })
}

/// GetStageSensitivity's answer: what was measured, what the model ran on
/// and what it answered.
pub fn sensitivity_to_pb(
    m: &Measured,
    inputs: &Inputs,
    s: &Sensitivity,
) -> pb::GetStageSensitivityResponse {
    let c = m.currency.as_str();
    let metrics = |stage: Stage| m.funnel.stages.iter().find(|x| x.stage == stage);
    let stages = MODEL_STAGES
        .iter()
        .map(|stage| {
            let x = metrics(*stage);
            pb::MeasuredStage {
                stage: *stage as i32,
                volume: x.map_or(0, |x| x.volume),
                converted: x.map_or(0, |x| x.converted),
                conversion_rate: x.and_then(|x| x.conversion_rate).unwrap_or(0.0),
                median_time_to_next: x.and_then(|x| x.median_to_next).map(duration),
            }
        })
        .collect();
    let inputs_pb = pb::SensitivityInputs {
        window_start: Some(m.window.start.to_timestamp()),
        window_end: Some(m.window.end.to_timestamp()),
        awareness_entries: metrics(Stage::Awareness).map_or(0, |x| x.volume),
        leads_per_month: inputs.leads_per_month,
        stages,
        new_mrr: money(c, m.revenue.new_mrr),
        new_accounts: m.revenue.new_accounts,
        mean_first_mrr: money(c, inputs.first_mrr),
        monthly_logo_churn: inputs.monthly_churn,
        churn_months: m.revenue.churn_months,
        expansion_mrr: money(c, m.revenue.expansion_mrr),
        growth_entries: sensitivity::growth_entries(&m.funnel),
        mean_expansion_mrr: money(c, inputs.expansion_mrr),
    };
    let rows = s
        .stages
        .iter()
        .zip(inputs.stages.iter())
        .map(|(row, rate)| pb::StageSensitivity {
            stage: row.stage as i32,
            raised_conversion_rate: row.raised_conversion,
            arr_delta_conversion: money(c, row.conversion_delta),
            shortened_time_to_next: Some(duration(
                rate.months_to_next * (1.0 - sensitivity::TIME_CUT) * sensitivity::MONTH_MICROS,
            )),
            arr_delta_time: money(c, row.time_delta),
            arr_delta_best: money(c, row.best()),
            rank: row.rank,
        })
        .collect();
    pb::GetStageSensitivityResponse {
        inputs: Some(inputs_pb),
        baseline_arr_added: money(c, s.baseline),
        stages: rows,
        ranking: s.ranking.iter().map(|s| *s as i32).collect(),
        reporting_currency_code: m.currency.clone(),
    }
}
