//! Wire <-> domain: parses requests into domain values, naming every
//! offending field, and renders domain values as protobuf messages.

use bowtie_proto::common::Money;
use bowtie_proto::revenue as pb;
use bowtie_runtime::error::FieldViolations;
use bowtie_runtime::validate::{self, timestamp_micros, to_timestamp};
use prost_types::Timestamp;
use uuid::Uuid;

use crate::domain::*;
use crate::storage::InvoiceRow;

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

/// Renders a recorded invoice; `late` when it was paid after its due date
/// or is unpaid past it.
pub fn invoice_to_pb(invoice: &InvoiceRow, late: bool) -> pb::Invoice {
    pb::Invoice {
        id: invoice.id.to_string(),
        account_id: invoice.account_id.to_string(),
        subscription_id: invoice
            .subscription_id
            .map(|s| s.to_string())
            .unwrap_or_default(),
        amount: money(&invoice.currency, invoice.amount),
        due_at: Some(to_timestamp(invoice.due_at)),
        paid_at: invoice.paid_at.map(to_timestamp),
        late,
    }
}

/// Renders a renewal decision for the term ending at `term_end`, with the
/// subscription's MRR when it was decided and once the renewal took effect.
pub fn renewal_to_pb(
    s: &Subscription,
    term_end: i64,
    outcome: pb::RenewalOutcome,
    decided_at: i64,
) -> pb::Renewal {
    let renewal_at = term_end.max(decided_at);
    pb::Renewal {
        account_id: s.account_id.to_string(),
        subscription_id: s.id.to_string(),
        outcome: outcome as i32,
        decided_at: Some(to_timestamp(decided_at)),
        mrr_before: money(&s.currency, s.mrr_at(decided_at)),
        mrr_after: money(&s.currency, s.mrr_at(renewal_at)),
    }
}

/// Renders one period of the MRR waterfall.
pub fn period_to_pb(p: &Period, currency: &str) -> pb::MrrPeriod {
    let m = |v: i64| money(currency, v);
    let arpa = if p.paying_end > 0 {
        let (num, den) = (i128::from(p.end_mrr), i128::from(p.paying_end));
        i64::try_from((2 * num + den) / (2 * den)).unwrap_or(i64::MAX)
    } else {
        0
    };
    let lost = -(p.tally(MovementKind::Churn).amount + p.tally(MovementKind::Contraction).amount);
    pb::MrrPeriod {
        period: p.label.clone(),
        start_mrr: m(p.start_mrr),
        new_mrr: m(p.tally(MovementKind::New).amount),
        expansion_mrr: m(p.tally(MovementKind::Expansion).amount),
        reactivation_mrr: m(p.tally(MovementKind::Reactivation).amount),
        contraction_mrr: m(-p.tally(MovementKind::Contraction).amount),
        churn_mrr: m(-p.tally(MovementKind::Churn).amount),
        end_mrr: m(p.end_mrr),
        end_arr: m(p.end_mrr.saturating_mul(12)),
        paying_accounts_start: p.paying_start,
        paying_accounts_end: p.paying_end,
        new_accounts: p.tally(MovementKind::New).count,
        reactivated_accounts: p.tally(MovementKind::Reactivation).count,
        churned_accounts: p.tally(MovementKind::Churn).count,
        arpa: m(arpa),
        customer_churn_rate: Retention::ratio(p.tally(MovementKind::Churn).count, p.paying_start),
        revenue_churn_rate: Retention::ratio(lost, p.start_mrr),
    }
}

/// Renders one cohort of the grid: its month, size and cells.
pub fn cohort_to_pb(month: Month, size: i64, cells: &[CohortCell], currency: &str) -> pb::Cohort {
    let base = cells.first().map_or(0, |c| c.mrr);
    pb::Cohort {
        cohort: month_label(month),
        accounts: size,
        cells: cells
            .iter()
            .zip(0..)
            .map(|(c, k)| pb::CohortCell {
                month: k,
                paying_accounts: c.paying,
                logo_retention: Retention::ratio(c.paying, size),
                mrr: money(currency, c.mrr),
                mrr_retention: Retention::ratio(c.mrr, base),
            })
            .collect(),
    }
}

/// Renders retention between two instants, with its split per owner.
pub fn retention_to_pb(
    r: &Retention,
    owners: Vec<(String, Retention)>,
    currency: &str,
) -> pb::GetRetentionResponse {
    pb::GetRetentionResponse {
        accounts_start: r.accounts_start,
        accounts_retained: r.accounts_retained,
        logo_retention: r.logo(),
        mrr_start: money(currency, r.mrr_start),
        mrr_retained: money(currency, r.mrr_retained),
        mrr_end: money(currency, r.mrr_end),
        grr: r.grr(),
        nrr: r.nrr(),
        by_owner: owners
            .into_iter()
            .map(|(owner, r)| pb::OwnerRetention {
                owner,
                accounts_start: r.accounts_start,
                accounts_retained: r.accounts_retained,
                logo_retention: r.logo(),
                mrr_start: money(currency, r.mrr_start),
                mrr_retained: money(currency, r.mrr_retained),
                mrr_end: money(currency, r.mrr_end),
                grr: r.grr(),
                nrr: r.nrr(),
            })
            .collect(),
    }
}
