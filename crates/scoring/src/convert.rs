//! Wire <-> domain: request messages become checked values (every problem
//! named by field), domain values become response messages.

use bowtie_proto::common::Segment;
use bowtie_proto::scoring as pb;
use bowtie_runtime::error::FieldViolations;
use bowtie_runtime::validate::{self, to_timestamp};
use tonic::Code;

use crate::domain::{self, COMPONENTS, DAY, Health, Scorecard, component_index};
use prost::Message;
use uuid::Uuid;

use crate::service::StoredModel;
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
/// and a time no later than `now + tolerance` (µs).
pub fn signal(s: &pb::Signal, now: i64, tolerance: i64) -> Result<NewSignal, Rejection> {
    let mut v = FieldViolations::default();
    let key = validate::idempotency_key(&mut v, &s.idempotency_key);
    if let Some(first) = v.0.first() {
        return Err(invalid("idempotency_key", first.description.clone()));
    }
    let Some(key) = key else {
        return Err(invalid("idempotency_key", "is required"));
    };
    let account_id = validate::uuid(&mut v, "account_id", &s.account_id);
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
    let Some(at) = validate::required_timestamp(&mut v, "occurred_at", s.occurred_at.as_ref())
    else {
        return Err(invalid(
            "occurred_at",
            v.0.first()
                .map_or("is required".to_owned(), |f| f.description.clone()),
        ));
    };
    if at > now + tolerance {
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

/// A segment filter (UNSPECIFIED = any).
pub fn segment_filter(v: &mut FieldViolations, field: &str, raw: i32) -> Option<i32> {
    let s: Option<Segment> = validate::enum_value(v, field, raw, false);
    s.filter(|s| *s != Segment::Unspecified).map(|s| s as i32)
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

/// A scorecard on the wire.
pub fn scorecard_to_pb(segment: Segment, card: &Scorecard, version: i64, at: i64) -> pb::Scorecard {
    pb::Scorecard {
        segment: segment as i32,
        version,
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
        update_time: (at > 0).then(|| to_timestamp(at)),
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
    to_timestamp(day * DAY)
}

/// A stored scorecard version on the wire.
pub fn stored_scorecard_to_pb(segment: Segment, s: &StoredScorecard) -> pb::Scorecard {
    scorecard_to_pb(segment, &s.card, s.version, s.updated_at)
}

/// The row a computed health is stored as: its filter columns, and the
/// health encoded without its compute time (the `computed_at` column holds
/// it), so two computations that agree store the same bytes.
pub fn health_row(account_id: Uuid, health: &mut pb::AccountHealth) -> HealthRow {
    let computed = health.compute_time.take();
    let body = health.encode_to_vec();
    health.compute_time = computed;
    HealthRow {
        account_id,
        segment: health.segment,
        score: health.score,
        band: health.band,
        risk_bp: health.churn_risk_bp,
        tier: health.tier,
        quadrant: health.quadrant,
        mrr: health.mrr_minor_units,
        body,
    }
}

/// A stored health on the wire (deltas unset; they come from the snapshots).
pub fn stored_health(
    stored: &StoredHealth,
) -> Result<pb::AccountHealth, bowtie_runtime::error::Error> {
    let mut health = pb::AccountHealth::decode(stored.body.as_slice())
        .map_err(|e| bowtie_runtime::sql::corrupt(format_args!("stored health: {e}")))?;
    if health.compute_time.is_none() {
        health.compute_time = Some(to_timestamp(stored.computed_at));
    }
    Ok(health)
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
        create_time: Some(to_timestamp(a.created_at)),
        update_time: Some(to_timestamp(a.updated_at)),
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
        train_time: Some(to_timestamp(m.trained_at)),
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
    }
}

/// GetSegments from every scored account's value row.
pub fn segments_to_pb(rows: &[ValueRow]) -> pb::GetSegmentsResponse {
    let total: i64 = rows.iter().map(|r| r.mrr.max(0)).sum();
    let tiers = [
        pb::Tier::Diamond,
        pb::Tier::Gold,
        pb::Tier::Strategic,
        pb::Tier::Potential,
        pb::Tier::General,
        pb::Tier::Problem,
    ]
    .into_iter()
    .map(|t| {
        let of: Vec<&ValueRow> = rows.iter().filter(|r| r.tier == t as i32).collect();
        let mrr: i64 = of.iter().map(|r| r.mrr.max(0)).sum();
        pb::TierSummary {
            tier: t as i32,
            accounts: of.len() as i64,
            mrr_minor_units: mrr,
            revenue_share_bp: domain::share_bp(mrr, total),
        }
    })
    .collect();
    let quadrants = [
        pb::Quadrant::A,
        pb::Quadrant::B,
        pb::Quadrant::C,
        pb::Quadrant::D,
        pb::Quadrant::E,
    ]
    .into_iter()
    .map(|q| {
        let of: Vec<&ValueRow> = rows.iter().filter(|r| r.quadrant == q as i32).collect();
        let mrr: i64 = of.iter().map(|r| r.mrr.max(0)).sum();
        pb::QuadrantSummary {
            quadrant: q as i32,
            accounts: of.len() as i64,
            mrr_minor_units: mrr,
            revenue_share_bp: domain::share_bp(mrr, total),
        }
    })
    .collect();
    pb::GetSegmentsResponse {
        tiers,
        quadrants,
        accounts: rows.len() as i64,
        mrr_minor_units: total,
        top_20_percent_share_bp: domain::top_20_share_bp(rows.iter().map(|r| r.mrr).collect()),
    }
}

/// One day of GetHealthHistory.
pub fn snapshot_to_pb(d: &DayScore) -> pb::HealthSnapshot {
    pb::HealthSnapshot {
        day: Some(day_start(d.day)),
        score: d.score,
        band: d.band,
    }
}

/// A computed health on the wire (deltas unset; they come from the
/// snapshots when it is read).
pub fn account_health(
    p: &Profile,
    h: &Health,
    scorecard_version: i64,
    risk_bp: Option<i32>,
    tier: pb::Tier,
    quadrant: pb::Quadrant,
    now: i64,
) -> pb::AccountHealth {
    pb::AccountHealth {
        account_id: p.account_id.to_string(),
        score: h.score,
        band: h.band as i32,
        components: components_to_pb(h),
        missing: h.missing.iter().map(|c| *c as i32).collect(),
        delta_7d: None,
        delta_30d: None,
        segment: p.segment as i32,
        scorecard_version,
        churn_risk_bp: risk_bp,
        tier: tier as i32,
        quadrant: quadrant as i32,
        mrr_minor_units: p.mrr,
        compute_time: Some(to_timestamp(now)),
    }
}

/// GetChurnRisk: the probability and the (at most five) features that
/// raise it most, from the model's drivers (feature, contribution, value).
pub fn churn_risk_to_pb(
    account_id: Uuid,
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
    account_id: Uuid,
    at: i64,
    days_to_value: Option<i32>,
) -> pb::FirstValueReached {
    pb::FirstValueReached {
        account_id: account_id.to_string(),
        reached_at: Some(to_timestamp(at)),
        days_to_value,
    }
}
