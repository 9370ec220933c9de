//! Wire <-> domain: parses requests into domain values, naming every
//! offending field, and renders domain values as protobuf messages.

use bowtie_proto::common::Money;
use bowtie_proto::revenue as pb;
use bowtie_runtime::error::FieldViolations;
use bowtie_runtime::validate::{self, timestamp_micros, to_timestamp};
use prost_types::Timestamp;
use uuid::Uuid;

use crate::domain::*;

/// Parses a required time.
pub fn required_time(v: &mut FieldViolations, field: &str, ts: Option<&Timestamp>) -> Option<i64> {
    match ts {
        Some(ts) => timestamp_micros(v, field, ts),
        None => {
            v.add(field, "is required");
            None
        }
    }
}

/// Parses an optional time: `Some(None)` when absent, `None` when invalid.
pub fn optional_time(
    v: &mut FieldViolations,
    field: &str,
    ts: Option<&Timestamp>,
) -> Option<Option<i64>> {
    match ts {
        Some(ts) => timestamp_micros(v, field, ts).map(Some),
        None => Some(None),
    }
}

/// Parses a currency code.
pub fn currency(v: &mut FieldViolations, field: &str, code: &str) -> Option<String> {
    if minor_exponent(code).is_some() {
        Some(code.to_owned())
    } else {
        v.add(field, format!("unknown ISO-4217 currency {code:?}"));
        None
    }
}

/// Parses a non-negative amount of money: (currency, minor units).
pub fn amount(v: &mut FieldViolations, field: &str, m: Option<&Money>) -> Option<(String, i64)> {
    let Some(m) = m else {
        v.add(field, "is required");
        return None;
    };
    let code = currency(v, &format!("{field}.currency_code"), &m.currency_code);
    if m.minor_units < 0 {
        v.add(format!("{field}.minor_units"), "must not be negative");
        return None;
    }
    Some((code?, m.minor_units))
}

/// Parses terms: the terms and their currency.
pub fn terms(
    v: &mut FieldViolations,
    field: &str,
    t: Option<&pb::Terms>,
) -> Option<(Terms, String)> {
    let Some(t) = t else {
        v.add(field, "is required");
        return None;
    };
    let plan = validate::required_text(v, &format!("{field}.plan"), &t.plan, MAX_PLAN);
    let mut ok = true;
    if !(0..=MAX_QUANTITY).contains(&t.quantity) {
        v.add(
            format!("{field}.quantity"),
            format!("must be between 0 and {MAX_QUANTITY}"),
        );
        ok = false;
    }
    let price = amount(v, &format!("{field}.unit_price"), t.unit_price.as_ref());
    if !(0..=FULL_BP).contains(&i64::from(t.discount_basis_points)) {
        v.add(
            format!("{field}.discount_basis_points"),
            "must be between 0 and 10000",
        );
        ok = false;
    }
    let (code, unit_price) = price?;
    if ok && i128::from(t.quantity) * i128::from(unit_price) > i128::from(MAX_INTERVAL_AMOUNT) {
        v.add(
            format!("{field}.unit_price"),
            "quantity x unit price is too large",
        );
        ok = false;
    }
    let plan = plan?;
    ok.then_some((
        Terms {
            plan,
            quantity: t.quantity,
            unit_price,
            discount_bp: i64::from(t.discount_basis_points),
        },
        code,
    ))
}

/// Parses a billing interval.
pub fn interval(v: &mut FieldViolations, field: &str, raw: i32) -> Option<Interval> {
    match validate::enum_value::<pb::BillingInterval>(v, field, raw, true)? {
        pb::BillingInterval::Month => Some(Interval::Month),
        pb::BillingInterval::Quarter => Some(Interval::Quarter),
        pb::BillingInterval::Year => Some(Interval::Year),
        pb::BillingInterval::Unspecified => None,
    }
}

/// Parses the subscription of a create request.
pub fn new_subscription(v: &mut FieldViolations, s: &pb::Subscription) -> Option<NewSubscription> {
    let account_id = validate::uuid(v, "subscription.account_id", &s.account_id);
    let interval = interval(v, "subscription.billing_interval", s.billing_interval);
    let terms = terms(v, "subscription.terms", s.terms.as_ref());
    let start = required_time(v, "subscription.start_at", s.start_at.as_ref());
    let trial_end = optional_time(v, "subscription.trial_end_at", s.trial_end_at.as_ref());
    let term_end = optional_time(v, "subscription.term_end_at", s.term_end_at.as_ref());
    if let (Some(start), Some(Some(trial_end))) = (start, trial_end)
        && trial_end < start
    {
        v.add("subscription.trial_end_at", "must not be before start_at");
    }
    if let (Some(start), Some(Some(term_end))) = (start, term_end)
        && term_end <= start
    {
        v.add("subscription.term_end_at", "must be after start_at");
    }
    let (terms, currency) = terms?;
    Some(NewSubscription {
        account_id: account_id?,
        currency,
        interval: interval?,
        start: start?,
        trial_end: trial_end?,
        term_end: term_end?,
        terms,
    })
}

/// Parses a cancellation.
pub fn cancellation(v: &mut FieldViolations, c: Option<&pb::Cancellation>) -> Option<Cancellation> {
    let Some(c) = c else {
        v.add("cancellation", "is required");
        return None;
    };
    let at = required_time(v, "cancellation.effective_at", c.effective_at.as_ref());
    let kind =
        match validate::enum_value::<pb::CancellationKind>(v, "cancellation.kind", c.kind, true) {
            Some(pb::CancellationKind::Voluntary) => Some(CancellationKind::Voluntary),
            Some(pb::CancellationKind::Involuntary) => Some(CancellationKind::Involuntary),
            _ => None,
        };
    let reason = validate::required_text(v, "cancellation.reason_code", &c.reason_code, 100);
    Some(Cancellation {
        effective_at: at?,
        kind: kind?,
        reason: reason?,
    })
}

/// Parses an optional UUID (empty means none).
pub fn optional_uuid(v: &mut FieldViolations, field: &str, raw: &str) -> Option<Option<Uuid>> {
    if raw.is_empty() {
        Some(None)
    } else {
        validate::uuid(v, field, raw).map(Some)
    }
}

fn money(currency: &str, minor: i64) -> Option<Money> {
    Some(Money {
        currency_code: currency.to_owned(),
        minor_units: minor,
    })
}

fn terms_to_pb(t: &Terms, currency: &str) -> pb::Terms {
    pb::Terms {
        plan: t.plan.clone(),
        quantity: t.quantity,
        unit_price: money(currency, t.unit_price),
        discount_basis_points: i32::try_from(t.discount_bp).unwrap_or(0),
    }
}

/// Renders a subscription as of `now`.
pub fn subscription_to_pb(s: &Subscription, now: i64) -> pb::Subscription {
    pb::Subscription {
        id: s.id.to_string(),
        account_id: s.account_id.to_string(),
        billing_interval: match s.interval {
            Interval::Month => pb::BillingInterval::Month,
            Interval::Quarter => pb::BillingInterval::Quarter,
            Interval::Year => pb::BillingInterval::Year,
        } as i32,
        terms: s.terms_at(now).map(|t| terms_to_pb(t, &s.currency)),
        start_at: Some(to_timestamp(s.start)),
        trial_end_at: s.trial_end.map(to_timestamp),
        term_end_at: s.term_end.map(to_timestamp),
        changes: s
            .versions
            .iter()
            .map(|v| pb::TermsChange {
                effective_at: Some(to_timestamp(v.effective_at)),
                terms: Some(terms_to_pb(&v.terms, &s.currency)),
            })
            .collect(),
        cancellation: s.cancellation.as_ref().map(|c| pb::Cancellation {
            effective_at: Some(to_timestamp(c.effective_at)),
            kind: match c.kind {
                CancellationKind::Voluntary => pb::CancellationKind::Voluntary,
                CancellationKind::Involuntary => pb::CancellationKind::Involuntary,
            } as i32,
            reason_code: c.reason.clone(),
        }),
        mrr: money(&s.currency, s.mrr_at(now)),
        version: s.version,
    }
}

/// Renders a movement.
pub fn movement_to_pb(
    account_id: Uuid,
    m: &Movement,
    segment: Segment,
    currency: &str,
) -> pb::Movement {
    pb::Movement {
        account_id: account_id.to_string(),
        r#type: m.kind.code(),
        amount: money(currency, m.amount),
        mrr_before: money(currency, m.before),
        mrr_after: money(currency, m.after),
        occurred_at: Some(to_timestamp(m.at)),
        segment: segment as i32,
    }
}

/// Parses a movement type filter (unspecified means any).
pub fn movement_kind_filter(
    v: &mut FieldViolations,
    field: &str,
    raw: i32,
) -> Option<Option<MovementKind>> {
    validate::enum_value::<pb::MovementType>(v, field, raw, false)?;
    Some(MovementKind::from_code(raw))
}
