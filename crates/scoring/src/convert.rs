//! Wire <-> domain: request messages become checked values (every problem
//! named by field), domain values become response messages.

use bowtie_proto::common::{PageResponse, Segment};
use bowtie_proto::scoring as pb;
use bowtie_runtime::error::FieldViolations;
use bowtie_runtime::validate;
use bowtie_runtime::{AccountId, Instant, Minor};
use prost::Message;
use tonic::Code;

use crate::domain::{self, COMPONENTS, Health, Scorecard, ScorecardVersion, component_index};
use crate::service::{ReferenceSource, StoredModel};
use crate::storage::{
    Alert, DayScore, HealthRow, NewSignal, Profile, StoredHealth, StoredScorecard, ValueRow,
};

/// Most signals in one batch.
pub const MAX_BATCH: usize = 10_000;
/// Largest signal value.
pub const MAX_VALUE: i64 = 1_000_000;

/// A rejected signal: status code, field and description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// gRPC code.
    pub code: Code,
    /// The offending field.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn invalid(field: &str, message: impl Into<String>) -> Rejection {
    Rejection {
        code: Code::InvalidArgument,
        field: field.to_owned(),
        message: message.into(),
    }
}

/// Checks one signal: key, account id, known type, value range by type,
/// and a time no later than `now` plus `tolerance` microseconds.
pub fn signal(s: &pb::Signal, now: Instant, tolerance: i64) -> Result<NewSignal, Rejection> {
    let mut v = FieldViolations::default();
    let key = validate::idempotency_key(&mut v, &s.idempotency_key);
    if let Some(first) = v.0.first() {
        return Err(invalid("idempotency_key", first.description.clone()));
    }
    let Some(key) = key else {
        return Err(invalid("idempotency_key", "is required"));
    };
    let account_id = validate::account_id(&mut v, "account_id", &s.account_id);
    let Some(account_id) = account_id else {
        return Err(invalid(
            "account_id",
            v.0.first()
                .map_or("must be a UUID".to_owned(), |f| f.description.clone()),
        ));
    };
    let kind = match pb::SignalType::try_from(s.r#type) {
        Ok(pb::SignalType::Unspecified) => return Err(invalid("type", "must be set")),
        Ok(t) => t,
        Err(_) => return Err(invalid("type", format!("unknown value {}", s.r#type))),
    };
    let value = match kind {
        pb::SignalType::NpsAnswer if !(0..=10).contains(&s.value) => {
            return Err(invalid("value", "an NPS answer must be 0..=10"));
        }
        pb::SignalType::CsatAnswer if !(1..=5).contains(&s.value) => {
            return Err(invalid("value", "a CSAT answer must be 1..=5"));
        }
        pb::SignalType::NpsAnswer | pb::SignalType::CsatAnswer | pb::SignalType::ActiveUsers => {
            s.value
        }
        _ if s.value == 0 => 1,
        _ => s.value,
    };
    if !(0..=MAX_VALUE).contains(&value) {
        return Err(invalid("value", format!("must be 0..={MAX_VALUE}")));
    }
    let mut v = FieldViolations::default();
    let Some(at) = validate::required_instant(&mut v, "occurred_at", s.occurred_at.as_ref()) else {
        return Err(invalid(
            "occurred_at",
            v.0.first()
                .map_or("is required".to_owned(), |f| f.description.clone()),
        ));
    };
    if at > now.plus_micros(tolerance) {
        return Err(invalid(
            "occurred_at",
            format!(
                "is in the future beyond the tolerance of {} seconds",
                tolerance / 1_000_000
            ),
        ));
    }
    Ok(NewSignal {
        key,
        account_id,
        kind,
        value,
        occurred_at: at,
    })
}

/// The result of a rejected signal.
pub fn rejected(index: usize, r: &Rejection) -> pb::SignalResult {
    pb::SignalResult {
        index: index as i32,
        outcome: pb::SignalOutcome::Rejected as i32,
        code: r.code as i32,
        message: format!("{}: {}", r.field, r.message),
        field: r.field.clone(),
    }
}

/// An optional enum filter: `None` when unset (UNSPECIFIED means any), a
/// violation for an unknown number.
pub fn filter<E: TryFrom<i32>>(v: &mut FieldViolations, field: &str, raw: i32) -> Option<E> {
    let value = validate::enum_value(v, field, raw, false);
    if raw == 0 { None } else { value }
}

/// A segment (UNSPECIFIED allowed: the default scorecard).
pub fn segment(v: &mut FieldViolations, field: &str, raw: i32) -> Option<Segment> {
    validate::enum_value(v, field, raw, false)
}

/// Parses a scorecard edit.
pub fn scorecard(
    v: &mut FieldViolations,
    card: Option<&pb::Scorecard>,
) -> Option<(Segment, Scorecard)> {
    let Some(card) = card else {
        v.add("scorecard", "is required");
        return None;
    };
    let segment = segment(v, "scorecard.segment", card.segment)?;
    let mut weights = [0i32; 9];
    let mut seen = [false; 9];
    for (i, w) in card.weights.iter().enumerate() {
        let field = format!("scorecard.weights[{i}]");
        let c: Option<pb::Component> =
            validate::enum_value(v, &format!("{field}.component"), w.component, true);
        let Some(idx) = c.and_then(component_index) else {
            continue;
        };
        if seen[idx] {
            v.add(format!("{field}.component"), "is listed twice");
            continue;
        }
        seen[idx] = true;
        if !(0..=1000).contains(&w.weight) {
            v.add(format!("{field}.weight"), "must be 0..=1000");
            continue;
        }
        weights[idx] = w.weight;
    }
    if weights.iter().all(|w| *w == 0) {
        v.add("scorecard.weights", "at least one weight must be positive");
    }
    let range = |v: &mut FieldViolations, name: &str, value: i32, lo: i32, hi: i32| {
        if !(lo..=hi).contains(&value) {
            v.add(format!("scorecard.{name}"), format!("must be {lo}..={hi}"));
        }
    };
    range(v, "yellow_from", card.yellow_from, 1, 100);
    range(v, "green_from", card.green_from, 1, 100);
    if card.green_from <= card.yellow_from {
        v.add("scorecard.green_from", "must be above yellow_from");
    }
    range(v, "late_payment_penalty", card.late_payment_penalty, 0, 100);
    range(v, "downgrade_penalty", card.downgrade_penalty, 0, 100);
    range(v, "complaint_penalty", card.complaint_penalty, 0, 100);
    range(v, "stakeholder_penalty", card.stakeholder_penalty, 0, 100);
    range(
        v,
        "onboarding_target_days",
        card.onboarding_target_days,
        1,
        365,
    );
    range(v, "renewal_window_days", card.renewal_window_days, 1, 365);
    Some((
        segment,
        Scorecard {
            weights,
            yellow_from: card.yellow_from,
            green_from: card.green_from,
            late_payment_penalty: card.late_payment_penalty,
            downgrade_penalty: card.downgrade_penalty,
            complaint_penalty: card.complaint_penalty,
            stakeholder_penalty: card.stakeholder_penalty,
            onboarding_target_days: card.onboarding_target_days,
            renewal_window_days: card.renewal_window_days,
        },
    ))
}

/// A segment's scorecard version on the wire (the built-in one, never
/// stored, has no update time).
pub fn scorecard_to_pb(segment: Segment, stored: &StoredScorecard) -> pb::Scorecard {
    let (card, at) = (&stored.card, stored.updated_at);
    pb::Scorecard {
        segment: segment as i32,
        version: stored.version.0,
        weights: COMPONENTS
            .iter()
            .zip(card.weights)
            .map(|(c, w)| pb::ComponentWeight {
                component: *c as i32,
                weight: w,
            })
            .collect(),
        yellow_from: card.yellow_from,
        green_from: card.green_from,
        late_payment_penalty: card.late_payment_penalty,
        downgrade_penalty: card.downgrade_penalty,
        complaint_penalty: card.complaint_penalty,
        stakeholder_penalty: card.stakeholder_penalty,
        onboarding_target_days: card.onboarding_target_days,
        renewal_window_days: card.renewal_window_days,
        update_time: (at > Instant::EPOCH).then(|| at.to_timestamp()),
    }
}

/// A page of ListScorecardVersions.
pub fn scorecard_versions(
    segment: Segment,
    rows: &[StoredScorecard],
    page: PageResponse,
) -> pb::ListScorecardVersionsResponse {
    pb::ListScorecardVersionsResponse {
        scorecards: rows.iter().map(|s| scorecard_to_pb(segment, s)).collect(),
        page: Some(page),
    }
}

/// The components of a health on the wire.
pub fn components_to_pb(h: &Health) -> Vec<pb::ComponentScore> {
    h.components
        .iter()
        .map(|(s, w, bp)| pb::ComponentScore {
            component: s.component as i32,
            score: s.score,
            weight: *w,
            effective_weight_bp: *bp,
            reason: s.reason.clone(),
        })
        .collect()
}

/// Midnight UTC of a day number.
pub fn day_start(day: i64) -> prost_types::Timestamp {
    Instant::EPOCH.plus_days(day).to_timestamp()
}

/// A stored health on the wire (deltas unset; they come from the snapshots).
pub fn stored_health(
    stored: &StoredHealth,
) -> Result<pb::AccountHealth, bowtie_runtime::error::Error> {
    let mut health = pb::AccountHealth::decode(stored.body.as_slice())
        .map_err(|e| bowtie_runtime::sql::corrupt(format_args!("stored health: {e}")))?;
    if health.compute_time.is_none() {
        health.compute_time = Some(stored.computed_at.to_timestamp());
    }
    Ok(health)
}

/// GetHealth: a stored health with its deltas (from the snapshots).
pub fn get_health(
    mut health: pb::AccountHealth,
    score_7d_ago: Option<i32>,
    score_30d_ago: Option<i32>,
) -> pb::GetHealthResponse {
    health.delta_7d = score_7d_ago.map(|s| health.score - s);
    health.delta_30d = score_30d_ago.map(|s| health.score - s);
    pb::GetHealthResponse {
        health: Some(health),
    }
}

/// A page of ListHealth.
pub fn list_health(accounts: Vec<pb::AccountHealth>, page: PageResponse) -> pb::ListHealthResponse {
    pb::ListHealthResponse {
        accounts,
        page: Some(page),
    }
}

/// A page of ListAtRisk.
pub fn list_at_risk(
    accounts: Vec<pb::AccountHealth>,
    page: PageResponse,
) -> pb::ListAtRiskResponse {
    pb::ListAtRiskResponse {
        accounts,
        page: Some(page),
    }
}

/// GetHealthHistory: one snapshot a day, oldest first.
pub fn health_history(days: &[DayScore]) -> pb::GetHealthHistoryResponse {
    pb::GetHealthHistoryResponse {
        snapshots: days.iter().map(snapshot_to_pb).collect(),
    }
}

/// An alert on the wire.
pub fn alert_to_pb(a: &Alert) -> pb::Alert {
    pb::Alert {
        id: a.id.to_string(),
        account_id: a.account_id.to_string(),
        kind: a.kind as i32,
        state: a.state as i32,
        message: a.message.clone(),
        score: a.score,
        churn_risk_bp: a.risk_bp,
        version: a.version,
        note: a.note.clone(),
        create_time: Some(a.created_at.to_timestamp()),
        update_time: Some(a.updated_at.to_timestamp()),
    }
}

/// A page of ListAlerts.
pub fn alerts_page(alerts: &[Alert], page: PageResponse) -> pb::ListAlertsResponse {
    pb::ListAlertsResponse {
        alerts: alerts.iter().map(alert_to_pb).collect(),
        page: Some(page),
    }
}

/// A stored model on the wire: its coefficients largest first.
pub fn model_info(m: &StoredModel) -> pb::ModelInfo {
    let mut coefficients: Vec<pb::Coefficient> = m
        .model
        .features
        .iter()
        .zip(&m.model.weights)
        .map(|(f, w)| pb::Coefficient {
            feature: f.clone(),
            coefficient: *w,
        })
        .collect();
    coefficients.sort_by(|a, b| b.coefficient.abs().total_cmp(&a.coefficient.abs()));
    pb::ModelInfo {
        id: m.id.clone(),
        train_time: Some(m.trained_at.to_timestamp()),
        horizon_days: m.horizon_days,
        training_examples: m.metrics.train as i32,
        holdout_examples: m.metrics.holdout as i32,
        churn_rate: m.metrics.churn_rate,
        holdout_auc: m.metrics.auc,
        holdout_log_loss: m.metrics.log_loss,
        calibration: m
            .metrics
            .calibration
            .iter()
            .map(|b| pb::CalibrationBin {
                min_predicted: b.0,
                max_predicted: b.1,
                mean_predicted: b.2,
                observed_rate: b.3,
                count: b.4 as i32,
            })
            .collect(),
        coefficients,
        intercept: m.model.intercept,
        reference_time: Some(m.reference_at.unwrap_or(m.trained_at).to_timestamp()),
        reference_source: match m.reference_source {
            ReferenceSource::Unrecorded => pb::ReferenceSource::Unspecified,
            ReferenceSource::LastEvent => pb::ReferenceSource::LastEvent,
            ReferenceSource::Requested => pb::ReferenceSource::Requested,
            ReferenceSource::WallClock => pb::ReferenceSource::WallClock,
        } as i32,
    }
}

/// TrainModel's reference instant: unset, or a valid instant not after `now`.
pub fn reference_time(
    req: &pb::TrainModelRequest,
    now: Instant,
) -> Result<Option<Instant>, bowtie_runtime::error::Error> {
    let mut v = FieldViolations::default();
    let at = validate::optional_instant(&mut v, "reference_time", req.reference_time.as_ref());
    if let Some(Some(at)) = at
        && at > now
    {
        v.add("reference_time", "must not be in the future");
    }
    v.into_result()?;
    Ok(at.flatten())
}

/// How many `rows` there are and their MRR (a negative MRR counts as none).
fn summed<'a>(rows: impl Iterator<Item = &'a ValueRow>) -> (i64, Minor) {
    rows.fold((0, Minor::ZERO), |(n, mrr), r| {
        (n + 1, mrr + r.mrr.max(Minor::ZERO))
    })
}

/// One value segment (a tier or a quadrant): its accounts, their MRR and
/// its share of `total`.
fn spread<K: Copy + PartialEq>(
    rows: &[ValueRow],
    of: impl Fn(&ValueRow) -> K,
    segment: K,
    total: Minor,
) -> (i64, i64, i32) {
    let (accounts, mrr) = summed(rows.iter().filter(|r| of(r) == segment));
    (accounts, mrr.get(), domain::share_bp(mrr, total))
}

/// GetSegments from every scored account's value row.
pub fn segments_to_pb(rows: &[ValueRow]) -> pb::GetSegmentsResponse {
    use pb::{Quadrant as Q, Tier as T};
    let (accounts, total) = summed(rows.iter());
    let tiers = [
        T::Diamond,
        T::Gold,
        T::Strategic,
        T::Potential,
        T::General,
        T::Problem,
    ]
    .into_iter()
    .map(|t| {
        let (accounts, mrr_minor_units, revenue_share_bp) = spread(rows, |r| r.tier, t, total);
        pb::TierSummary {
            tier: t as i32,
            accounts,
            mrr_minor_units,
            revenue_share_bp,
        }
    })
    .collect();
    let quadrants = [Q::A, Q::B, Q::C, Q::D, Q::E]
        .into_iter()
        .map(|q| {
            let (accounts, mrr_minor_units, revenue_share_bp) =
                spread(rows, |r| r.quadrant, q, total);
            pb::QuadrantSummary {
                quadrant: q as i32,
                accounts,
                mrr_minor_units,
                revenue_share_bp,
            }
        })
        .collect();
    pb::GetSegmentsResponse {
        tiers,
        quadrants,
        accounts,
        mrr_minor_units: total.get(),
        top_20_percent_share_bp: domain::top_20_share_bp(rows.iter().map(|r| r.mrr).collect()),
    }
}

/// One day of GetHealthHistory.
pub fn snapshot_to_pb(d: &DayScore) -> pb::HealthSnapshot {
    pb::HealthSnapshot {
        day: Some(day_start(d.day)),
        score: d.score,
        band: d.band as i32,
    }
}

/// What one account's rescoring decided, beside its health.
#[derive(Debug, Clone, Copy)]
pub struct Valued {
    /// The scorecard version it was scored under.
    pub scorecard_version: ScorecardVersion,
    /// Churn risk, when a model is trained.
    pub risk_bp: Option<i32>,
    /// Value tier.
    pub tier: pb::Tier,
    /// Value x loyalty quadrant.
    pub quadrant: pb::Quadrant,
}

/// A computed health on the wire (deltas unset; they come from the
/// snapshots when it is read) and the row it is stored as: its filter
/// columns, and the health encoded without its compute time (the
/// `computed_at` column holds it), so two computations that agree store the
/// same bytes.
pub fn account_health(
    p: &Profile,
    h: &Health,
    valued: Valued,
    now: Instant,
) -> (pb::AccountHealth, HealthRow) {
    let mut health = pb::AccountHealth {
        account_id: p.account_id.to_string(),
        score: h.score,
        band: h.band as i32,
        components: components_to_pb(h),
        missing: h.missing.iter().map(|c| *c as i32).collect(),
        delta_7d: None,
        delta_30d: None,
        segment: p.segment as i32,
        scorecard_version: valued.scorecard_version.0,
        churn_risk_bp: valued.risk_bp,
        tier: valued.tier as i32,
        quadrant: valued.quadrant as i32,
        mrr_minor_units: p.mrr.get(),
        compute_time: None,
    };
    let row = HealthRow {
        account_id: p.account_id,
        segment: p.segment,
        score: h.score,
        band: h.band,
        risk_bp: valued.risk_bp,
        tier: valued.tier,
        quadrant: valued.quadrant,
        mrr: p.mrr,
        body: health.encode_to_vec(),
    };
    health.compute_time = Some(now.to_timestamp());
    (health, row)
}

/// GetChurnRisk: the probability and the (at most five) features that
/// raise it most, from the model's drivers (feature, contribution, value).
pub fn churn_risk_to_pb(
    account_id: AccountId,
    m: &StoredModel,
    probability: f64,
    drivers: Vec<(String, f64, f64)>,
) -> pb::GetChurnRiskResponse {
    pb::GetChurnRiskResponse {
        account_id: account_id.to_string(),
        probability,
        horizon_days: m.horizon_days,
        top_drivers: drivers
            .into_iter()
            .filter(|d| d.1 > 0.0)
            .take(5)
            .map(|(feature, contribution, value)| pb::RiskDriver {
                feature,
                contribution,
                value,
            })
            .collect(),
        model_id: m.id.clone(),
    }
}

/// The result of one accepted signal of a batch.
pub fn signal_result(index: usize, outcome: pb::SignalOutcome) -> pb::SignalResult {
    pb::SignalResult {
        index: index as i32,
        outcome: outcome as i32,
        ..Default::default()
    }
}

/// The results a batch's transaction decided, in the order it took them
/// (the counts are made by [`batch_response`] over the whole batch).
pub fn batch_results(results: Vec<pb::SignalResult>) -> pb::RecordSignalBatchResponse {
    pb::RecordSignalBatchResponse {
        results,
        ..Default::default()
    }
}

/// One answer of the RecordSignals stream: the batch's counts and the
/// results of the signals that were not recorded.
pub fn stream_response(batch: i64, r: pb::RecordSignalBatchResponse) -> pb::RecordSignalsResponse {
    pb::RecordSignalsResponse {
        batch,
        recorded: r.recorded,
        duplicates: r.duplicates,
        rejected: r.rejected,
        results: r
            .results
            .into_iter()
            .filter(|x| x.outcome != pb::SignalOutcome::Recorded as i32)
            .collect(),
    }
}

/// A batch's answer: every signal's result, in order, and the counts.
pub fn batch_response(results: Vec<pb::SignalResult>) -> pb::RecordSignalBatchResponse {
    let count =
        |o: pb::SignalOutcome| results.iter().filter(|r| r.outcome == o as i32).count() as i32;
    pb::RecordSignalBatchResponse {
        recorded: count(pb::SignalOutcome::Recorded),
        duplicates: count(pb::SignalOutcome::Duplicate),
        rejected: count(pb::SignalOutcome::Rejected),
        results,
    }
}

/// The `first_value.reached` event's payload.
pub fn first_value_reached(
    account_id: AccountId,
    at: Instant,
    days_to_value: Option<i32>,
) -> pb::FirstValueReached {
    pb::FirstValueReached {
        account_id: account_id.to_string(),
        reached_at: Some(at.to_timestamp()),
        days_to_value,
    }
}

/// GetScorecard.
pub fn get_scorecard(segment: Segment, stored: &StoredScorecard) -> pb::GetScorecardResponse {
    pb::GetScorecardResponse {
        scorecard: Some(scorecard_to_pb(segment, stored)),
    }
}

/// UpdateScorecard: the version just stored.
pub fn update_scorecard(segment: Segment, stored: &StoredScorecard) -> pb::UpdateScorecardResponse {
    pb::UpdateScorecardResponse {
        scorecard: Some(scorecard_to_pb(segment, stored)),
    }
}

/// RecomputeHealth: how many accounts got a score.
pub fn recomputed(accounts: usize) -> pb::RecomputeHealthResponse {
    pb::RecomputeHealthResponse {
        accounts: accounts as i64,
    }
}

/// TrainModel: the model just trained.
pub fn trained(model: pb::ModelInfo) -> pb::TrainModelResponse {
    pb::TrainModelResponse { model: Some(model) }
}

/// GetModel: the model that scores.
pub fn get_model(model: pb::ModelInfo) -> pb::GetModelResponse {
    pb::GetModelResponse { model: Some(model) }
}

/// AcknowledgeAlert: the alert at its new version.
pub fn acknowledged(alert: pb::Alert) -> pb::AcknowledgeAlertResponse {
    pb::AcknowledgeAlertResponse { alert: Some(alert) }
}

/// ResolveAlert: the alert at its new version.
pub fn resolved(alert: pb::Alert) -> pb::ResolveAlertResponse {
    pb::ResolveAlertResponse { alert: Some(alert) }
}

/// One answer of WatchAlerts: an alert event of the feed.
pub fn watched_alert(
    sequence: i64,
    event_type: String,
    alert: pb::Alert,
) -> pb::WatchAlertsResponse {
    pb::WatchAlertsResponse {
        sequence,
        event_type,
        alert: Some(alert),
    }
}
