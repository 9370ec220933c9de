//! Wire <-> domain: parses requests into domain values, naming every
//! offending field, and renders domain values as protobuf messages. Every
//! response the service answers with is built here.

use bowtie_proto::common::{Money, PageResponse};
use bowtie_proto::revenue as pb;
use bowtie_runtime::error::{Error, FieldViolations};
use bowtie_runtime::validate::{self, required_instant};

use crate::domain::*;
use crate::service::{MrrReport, RetentionReport};

/// The message of a month field that does not parse.
const MONTH_FORMAT: &str = "must be a month written YYYY-MM";
/// Longest external invoice id, in bytes (the column is as long).
const EXTERNAL_ID_MAX: usize = 200;

/// Parses a currency code.
pub fn currency(v: &mut FieldViolations, field: &str, code: &str) -> Option<String> {
    if minor_exponent(code).is_some() {
        Some(code.to_owned())
    } else {
        v.add(field, format!("unknown ISO-4217 currency {code:?}"));
        None
    }
}

/// Parses a non-negative amount of money: (currency, amount).
pub fn amount(v: &mut FieldViolations, field: &str, m: Option<&Money>) -> Option<(String, Minor)> {
    let Some(m) = m else {
        v.add(field, "is required");
        return None;
    };
    let code = currency(v, &format!("{field}.currency_code"), &m.currency_code);
    if m.minor_units < 0 {
        v.add(format!("{field}.minor_units"), "must not be negative");
        return None;
    }
    Some((code?, Minor(m.minor_units)))
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
    if ok && i128::from(t.quantity) * i128::from(unit_price.get()) > i128::from(MAX_INTERVAL_AMOUNT)
    {
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
pub fn new_subscription(
    v: &mut FieldViolations,
    s: Option<&pb::Subscription>,
) -> Option<NewSubscription> {
    let Some(s) = s else {
        v.add("subscription", "is required");
        return None;
    };
    let account_id = validate::account_id(v, "subscription.account_id", &s.account_id);
    let interval = interval(v, "subscription.billing_interval", s.billing_interval);
    let terms = terms(v, "subscription.terms", s.terms.as_ref());
    let start = required_instant(v, "subscription.start_at", s.start_at.as_ref());
    let trial_end =
        validate::optional_instant(v, "subscription.trial_end_at", s.trial_end_at.as_ref());
    let term_end =
        validate::optional_instant(v, "subscription.term_end_at", s.term_end_at.as_ref());
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
    let at = required_instant(v, "cancellation.effective_at", c.effective_at.as_ref());
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

/// Parses a required subscription id.
pub fn subscription_id(v: &mut FieldViolations, field: &str, raw: &str) -> Option<SubscriptionId> {
    validate::uuid(v, field, raw).map(SubscriptionId)
}

/// Parses an optional id field (empty means none) into `T`.
fn optional_id<T>(
    v: &mut FieldViolations,
    field: &str,
    raw: &str,
    id: fn(uuid::Uuid) -> T,
) -> Option<Option<T>> {
    if raw.is_empty() {
        Some(None)
    } else {
        validate::uuid(v, field, raw).map(|u| Some(id(u)))
    }
}

/// Parses an optional account id (empty means none).
pub fn optional_account_id(
    v: &mut FieldViolations,
    field: &str,
    raw: &str,
) -> Option<Option<AccountId>> {
    optional_id(v, field, raw, AccountId)
}

/// Parses the `[start_at, end_at)` window of a list or report: both set,
/// the end after the start.
pub fn window(
    v: &mut FieldViolations,
    start: Option<&prost_types::Timestamp>,
    end: Option<&prost_types::Timestamp>,
) -> (Option<Instant>, Option<Instant>) {
    let start = required_instant(v, "start_at", start);
    let end = required_instant(v, "end_at", end);
    if let (Some(start), Some(end)) = (start, end)
        && end <= start
    {
        v.add("end_at", "must be after start_at");
    }
    (start, end)
}

/// Parses a month written `YYYY-MM`.
pub fn month(v: &mut FieldViolations, field: &str, raw: &str) -> Option<Month> {
    let month = parse_month(raw);
    if month.is_none() {
        v.add(field, MONTH_FORMAT);
    }
    month
}

/// Parses a segment filter: `Some(None)` for any segment (unspecified),
/// `None` for an unknown code.
pub fn segment_filter(v: &mut FieldViolations, field: &str, raw: i32) -> Option<Option<Segment>> {
    validate::enum_value::<Segment>(v, field, raw, false)
        .map(|s| (s != Segment::Unspecified).then_some(s))
}

/// Parses the invoice of a record request (its id is assigned when it is
/// recorded).
pub fn invoice(v: &mut FieldViolations, i: Option<&pb::Invoice>) -> Option<Invoice> {
    let Some(i) = i else {
        v.add("invoice", "is required");
        return None;
    };
    let account = validate::account_id(v, "invoice.account_id", &i.account_id);
    let subscription = optional_id(
        v,
        "invoice.subscription_id",
        &i.subscription_id,
        SubscriptionId,
    );
    let amount = amount(v, "invoice.amount", i.amount.as_ref());
    let due = required_instant(v, "invoice.due_at", i.due_at.as_ref());
    let paid = validate::optional_instant(v, "invoice.paid_at", i.paid_at.as_ref());
    let external_id = i.external_id.trim();
    if external_id.len() > EXTERNAL_ID_MAX {
        v.add(
            "invoice.external_id",
            format!("must be at most {EXTERNAL_ID_MAX} bytes"),
        );
    } else if external_id.chars().any(char::is_control) {
        v.add("invoice.external_id", "must not contain control characters");
    }
    let (currency, amount) = amount?;
    Some(Invoice {
        id: uuid::Uuid::nil(),
        account_id: account?,
        subscription_id: subscription?,
        currency,
        amount,
        due_at: due?,
        paid_at: paid?,
        external_id: (!external_id.is_empty()).then(|| external_id.to_owned()),
    })
}

/// Parses one row with `parse`, which names fields as the unary request
/// does (`subscription.start_at`), and names them as the import row does
/// (`effective_at`) with `rename`: a row is refused with exactly the
/// checks of the unary write.
fn import_row<T>(
    parse: impl FnOnce(&mut FieldViolations) -> Option<T>,
    rename: impl Fn(&str) -> String,
) -> Result<T, Error> {
    let mut v = FieldViolations::default();
    let parsed = parse(&mut v);
    if v.is_empty()
        && let Some(parsed) = parsed
    {
        return Ok(parsed);
    }
    let mut renamed = FieldViolations::default();
    for violation in v.0 {
        renamed.add(rename(&violation.field), violation.description);
    }
    renamed.into_result()?;
    Err(Error::invalid("", "could not be read"))
}

/// Parses the billing system's id of a subscription in `field`.
fn external_subscription(v: &mut FieldViolations, field: &str, raw: &str) -> Option<String> {
    validate::required_text(v, field, raw.trim(), EXTERNAL_ID_MAX)
}

/// Parses one event of an imported subscription history with the checks of
/// CreateSubscription, ChangeSubscription and CancelSubscription.
pub fn imported_event(e: &pb::SubscriptionEvent) -> Result<ImportedEvent, Error> {
    let kind = pb::SubscriptionEventType::try_from(e.r#type).unwrap_or_default();
    let event = |v: &mut FieldViolations| -> Option<HistoryEvent> {
        match kind {
            pb::SubscriptionEventType::Start => {
                let s = pb::Subscription {
                    account_id: e.account_id.clone(),
                    billing_interval: e.billing_interval,
                    terms: e.terms.clone(),
                    start_at: e.effective_at,
                    trial_end_at: e.trial_end_at,
                    term_end_at: e.term_end_at,
                    ..pb::Subscription::default()
                };
                new_subscription(v, Some(&s)).map(HistoryEvent::Start)
            }
            pb::SubscriptionEventType::Change => {
                let terms = terms(v, "terms", e.terms.as_ref());
                let at = required_instant(v, "effective_at", e.effective_at.as_ref());
                let (terms, currency) = terms?;
                Some(HistoryEvent::Change {
                    at: at?,
                    terms,
                    currency,
                })
            }
            pb::SubscriptionEventType::Cancel => {
                let c = pb::Cancellation {
                    effective_at: e.effective_at,
                    kind: e.cancellation_kind,
                    reason_code: e.reason_code.clone(),
                };
                cancellation(v, Some(&c)).map(HistoryEvent::Cancel)
            }
            pb::SubscriptionEventType::Unspecified => {
                v.add("type", "must be START, CHANGE or CANCEL");
                None
            }
        }
    };
    let rename = |field: &str| {
        let field = field
            .strip_prefix("subscription.")
            .or_else(|| field.strip_prefix("cancellation."))
            .unwrap_or(field);
        match field {
            "start_at" => "effective_at".to_owned(),
            "kind" => "cancellation_kind".to_owned(),
            other => other.to_owned(),
        }
    };
    import_row(
        |v| {
            let external = external_subscription(v, "subscription_id", &e.subscription_id);
            let account_id = if kind == pb::SubscriptionEventType::Start {
                None
            } else {
                optional_account_id(v, "account_id", &e.account_id)
            };
            let event = event(v);
            Some(ImportedEvent {
                external: external?,
                account_id: account_id.flatten(),
                event: event?,
            })
        },
        rename,
    )
}

/// Parses one imported invoice with the checks of RecordInvoice; its
/// external id is required (it is what makes a repeat a duplicate).
pub fn imported_invoice(i: &pb::ImportedInvoice) -> Result<Invoice, Error> {
    let wire = pb::Invoice {
        account_id: i.account_id.clone(),
        amount: i.amount.clone(),
        due_at: i.due_at,
        paid_at: i.paid_at,
        external_id: i.external_id.clone(),
        ..pb::Invoice::default()
    };
    import_row(
        |v| {
            let parsed = invoice(v, Some(&wire));
            if i.external_id.trim().is_empty() {
                v.add("external_id", "is required");
            }
            let subscription_id = i.subscription_id.trim();
            let subscription_id =
                (!subscription_id.is_empty()).then(|| imported_subscription_id(subscription_id));
            if i.subscription_id.trim().len() > EXTERNAL_ID_MAX {
                v.add(
                    "subscription_id",
                    format!("must be at most {EXTERNAL_ID_MAX} bytes"),
                );
            }
            Some(Invoice {
                subscription_id,
                ..parsed?
            })
        },
        |field| field.strip_prefix("invoice.").unwrap_or(field).to_owned(),
    )
}

/// Parses the rate of a `SetFxRate` request: (currency, from when, rate).
pub fn fx_rate(v: &mut FieldViolations, r: Option<&pb::FxRate>) -> Option<(String, Instant, Rate)> {
    let Some(r) = r else {
        v.add("rate", "is required");
        return None;
    };
    let currency = currency(v, "rate.currency_code", &r.currency_code);
    let at = required_instant(v, "rate.effective_at", r.effective_at.as_ref());
    let rate = Rate::parse(&r.rate);
    if rate.is_none() {
        v.add(
            "rate.rate",
            "must be a positive decimal with at most 9 fractional digits",
        );
    }
    let (currency, at) = (currency?, at?);
    Some((currency, at, rate?))
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

fn money(currency: &str, amount: Minor) -> Option<Money> {
    Some(Money {
        currency_code: currency.to_owned(),
        minor_units: amount.get(),
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
pub fn subscription_to_pb(s: &Subscription, now: Instant) -> pb::Subscription {
    pb::Subscription {
        id: s.id.to_string(),
        account_id: s.account_id.to_string(),
        billing_interval: match s.interval {
            Interval::Month => pb::BillingInterval::Month,
            Interval::Quarter => pb::BillingInterval::Quarter,
            Interval::Year => pb::BillingInterval::Year,
        } as i32,
        terms: s.terms_at(now).map(|t| terms_to_pb(t, &s.currency)),
        start_at: Some(s.start.to_timestamp()),
        trial_end_at: s.trial_end.map(Instant::to_timestamp),
        term_end_at: s.term_end.map(Instant::to_timestamp),
        changes: s
            .versions
            .iter()
            .map(|v| pb::TermsChange {
                effective_at: Some(v.effective_at.to_timestamp()),
                terms: Some(terms_to_pb(&v.terms, &s.currency)),
            })
            .collect(),
        cancellation: s.cancellation.as_ref().map(|c| pb::Cancellation {
            effective_at: Some(c.effective_at.to_timestamp()),
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
    account_id: AccountId,
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
        occurred_at: Some(m.at.to_timestamp()),
        segment: segment as i32,
        cancellation_kind: m
            .cause
            .as_ref()
            .map_or(pb::CancellationKind::Unspecified as i32, |c| {
                kind_to_pb(c.kind) as i32
            }),
        reason_code: m
            .cause
            .as_ref()
            .map_or_else(String::new, |c| c.reason.clone()),
    }
}

/// The protobuf kind of a cause (unspecified: no cancellation caused it).
fn kind_to_pb(kind: Option<CancellationKind>) -> pb::CancellationKind {
    match kind {
        None => pb::CancellationKind::Unspecified,
        Some(CancellationKind::Voluntary) => pb::CancellationKind::Voluntary,
        Some(CancellationKind::Involuntary) => pb::CancellationKind::Involuntary,
    }
}

/// Renders one kind of loss of a churn analysis period: its totals and its
/// splits by reason and by kind, with each line's share of the total.
fn loss_to_pb(loss: &LossBreakdown, currency: &str) -> (Vec<pb::ChurnReason>, Vec<pb::ChurnKind>) {
    let share = |lost: Minor| Retention::ratio(lost.get(), loss.lost.get());
    (
        loss.by_reason
            .iter()
            .map(|l| pb::ChurnReason {
                reason_code: l.key.clone(),
                lost_mrr: money(currency, l.lost),
                movements: l.count,
                share: share(l.lost),
            })
            .collect(),
        loss.by_kind
            .iter()
            .map(|l| pb::ChurnKind {
                kind: kind_to_pb(l.key) as i32,
                lost_mrr: money(currency, l.lost),
                movements: l.count,
                share: share(l.lost),
            })
            .collect(),
    )
}

/// Renders the churn analysis.
pub fn churn_analysis_to_pb(
    periods: &[ChurnPeriod],
    currency: &str,
) -> pb::GetChurnAnalysisResponse {
    pb::GetChurnAnalysisResponse {
        periods: periods
            .iter()
            .map(|p| {
                let (churn_by_reason, churn_by_kind) = loss_to_pb(&p.churn, currency);
                let (contraction_by_reason, contraction_by_kind) =
                    loss_to_pb(&p.contraction, currency);
                pb::ChurnPeriod {
                    period: p.label.clone(),
                    churn_mrr: money(currency, p.churn.lost),
                    churned_accounts: p.churn.count,
                    churn_by_reason,
                    churn_by_kind,
                    contraction_mrr: money(currency, p.contraction.lost),
                    contractions: p.contraction.count,
                    contraction_by_reason,
                    contraction_by_kind,
                }
            })
            .collect(),
        reporting_currency_code: currency.to_owned(),
    }
}

/// Renders a page of stored movements.
pub fn movements_to_pb(
    rows: &[StoredMovement],
    page: PageResponse,
    currency: &str,
) -> pb::ListMovementsResponse {
    pb::ListMovementsResponse {
        movements: rows
            .iter()
            .map(|m| movement_to_pb(m.account_id, &m.movement, m.segment, currency))
            .collect(),
        page: Some(page),
    }
}

/// A batch of the movements export, each row with its cursor.
pub fn exported_movements(
    rows: Vec<(StoredMovement, String)>,
    currency: &str,
) -> pb::ExportMovementsResponse {
    pb::ExportMovementsResponse {
        rows: rows
            .into_iter()
            .map(|(m, cursor)| pb::ExportedMovement {
                movement: Some(movement_to_pb(
                    m.account_id,
                    &m.movement,
                    m.segment,
                    currency,
                )),
                cursor,
            })
            .collect(),
    }
}

/// A batch of the subscriptions export, each row with its cursor, rendered
/// at `now` as GetSubscription renders one.
pub fn exported_subscriptions(
    rows: Vec<(Subscription, String)>,
    now: Instant,
) -> pb::ExportSubscriptionsResponse {
    pb::ExportSubscriptionsResponse {
        rows: rows
            .into_iter()
            .map(|(s, cursor)| pb::ExportedSubscription {
                subscription: Some(subscription_to_pb(&s, now)),
                cursor,
            })
            .collect(),
    }
}

/// Renders a recorded invoice; `late` when it was paid after its due date
/// or is unpaid past it.
pub fn invoice_to_pb(invoice: &Invoice, late: bool) -> pb::Invoice {
    pb::Invoice {
        id: invoice.id.to_string(),
        account_id: invoice.account_id.to_string(),
        subscription_id: invoice
            .subscription_id
            .map(|s| s.to_string())
            .unwrap_or_default(),
        amount: money(&invoice.currency, invoice.amount),
        due_at: Some(invoice.due_at.to_timestamp()),
        paid_at: invoice.paid_at.map(Instant::to_timestamp),
        late,
        external_id: invoice.external_id.clone().unwrap_or_default(),
    }
}

/// Renders a renewal decision for the term ending at `term_end`, with the
/// subscription's MRR when it was decided and once the renewal took effect.
pub fn renewal_to_pb(
    s: &Subscription,
    term_end: Instant,
    outcome: RenewalOutcome,
    decided_at: Instant,
) -> pb::Renewal {
    let renewal_at = term_end.max(decided_at);
    pb::Renewal {
        account_id: s.account_id.to_string(),
        subscription_id: s.id.to_string(),
        outcome: outcome as i32,
        decided_at: Some(decided_at.to_timestamp()),
        mrr_before: money(&s.currency, s.mrr_at(decided_at)),
        mrr_after: money(&s.currency, s.mrr_at(renewal_at)),
    }
}

/// Renders a page of the renewal book.
pub fn renewal_book_to_pb(
    entries: &[RenewalEntry],
    page: PageResponse,
) -> pb::ListRenewalsResponse {
    pb::ListRenewalsResponse {
        renewals: entries
            .iter()
            .map(|e| pb::RenewalBookEntry {
                subscription_id: e.subscription_id.to_string(),
                account_id: e.account_id.to_string(),
                renewal_at: Some(e.renewal_at.to_timestamp()),
                days_to_renewal: e.days_to_renewal,
                amount_at_stake: money(&e.currency, e.amount_at_stake),
                likelihood_basis_points: i32::try_from(e.likelihood_bp).unwrap_or(0),
                likelihood_from_scoring: e.likelihood_from_scoring,
                forecast: money(&e.currency, e.forecast),
                outcome: e.outcome as i32,
            })
            .collect(),
        page: Some(page),
    }
}

/// Renders an FX rate as set, with the reporting currency it converts into.
pub fn fx_rate_to_pb(
    currency: String,
    from: Instant,
    rate: Rate,
    reporting: String,
) -> pb::SetFxRateResponse {
    pb::SetFxRateResponse {
        rate: Some(pb::FxRate {
            currency_code: currency,
            effective_at: Some(from.to_timestamp()),
            rate: rate.format(),
        }),
        reporting_currency_code: reporting,
    }
}

/// Renders one period of the MRR waterfall.
pub fn period_to_pb(p: &Period, currency: &str) -> pb::MrrPeriod {
    let m = |v: Minor| money(currency, v);
    pb::MrrPeriod {
        period: p.label.clone(),
        start_mrr: m(p.start_mrr),
        new_mrr: m(p.tally(MovementKind::New).amount),
        expansion_mrr: m(p.tally(MovementKind::Expansion).amount),
        reactivation_mrr: m(p.tally(MovementKind::Reactivation).amount),
        contraction_mrr: m(-p.tally(MovementKind::Contraction).amount),
        churn_mrr: m(-p.tally(MovementKind::Churn).amount),
        end_mrr: m(p.end_mrr),
        end_arr: m(Minor(p.end_mrr.get().saturating_mul(12))),
        paying_accounts_start: p.paying_start,
        paying_accounts_end: p.paying_end,
        new_accounts: p.tally(MovementKind::New).count,
        reactivated_accounts: p.tally(MovementKind::Reactivation).count,
        churned_accounts: p.tally(MovementKind::Churn).count,
        arpa: m(p.arpa()),
        customer_churn_rate: p.customer_churn_rate(),
        revenue_churn_rate: p.revenue_churn_rate(),
        quick_ratio: p.quick_ratio(),
        moved_mrr: m(p.moved.amount),
        moved_accounts: p.moved.count,
    }
}

/// Renders the MRR waterfall.
pub fn mrr_report_to_pb(periods: &[Period], currency: &str) -> pb::GetMrrReportResponse {
    pb::GetMrrReportResponse {
        periods: periods.iter().map(|p| period_to_pb(p, currency)).collect(),
        reporting_currency_code: currency.to_owned(),
        groups: Vec::new(),
    }
}

/// Renders one cohort of the grid: its month, size and cells.
pub fn cohort_to_pb(month: Month, size: i64, cells: &[CohortCell], currency: &str) -> pb::Cohort {
    let base = cells.first().map_or(0, |c| c.mrr.get());
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
                mrr_retention: Retention::ratio(c.mrr.get(), base),
            })
            .collect(),
    }
}

/// Renders the cohort grid.
pub fn cohort_retention_to_pb(grid: &CohortGrid, currency: &str) -> pb::GetCohortRetentionResponse {
    pb::GetCohortRetentionResponse {
        cohorts: grid
            .iter()
            .map(|(month, (size, cells))| cohort_to_pb(*month, *size, cells, currency))
            .collect(),
        reporting_currency_code: currency.to_owned(),
    }
}

/// The retention figures of `$r` as the message `$message`, which carries
/// them under the same field names (the whole and each owner's part), with
/// the message's other fields given after.
macro_rules! retention_message {
    ($message:path, $r:expr, $currency:expr, { $($field:ident: $value:expr),* $(,)? }) => {{
        let r: &Retention = $r;
        $message {
            accounts_start: r.accounts_start,
            accounts_retained: r.accounts_retained,
            logo_retention: r.logo(),
            mrr_start: money($currency, r.mrr_start),
            mrr_retained: money($currency, r.mrr_retained),
            mrr_end: money($currency, r.mrr_end),
            grr: r.grr(),
            nrr: r.nrr(),
            $($field: $value),*
        }
    }};
}

/// Renders retention between two instants, with its splits per owner and
/// per CSM.
pub fn retention_to_pb(report: RetentionReport, currency: &str) -> pb::GetRetentionResponse {
    let by_owner = report
        .by_owner
        .into_iter()
        .map(|(owner, r)| retention_message!(pb::OwnerRetention, &r, currency, { owner: owner }))
        .collect();
    let by_csm = report
        .by_csm
        .into_iter()
        .map(|(csm, r)| retention_message!(pb::CsmRetention, &r, currency, { csm: csm }))
        .collect();
    let groups = report
        .groups
        .into_iter()
        .map(|(value, r)| retention_message!(pb::RetentionGroup, &r, currency, { value: value }))
        .collect();
    retention_message!(pb::GetRetentionResponse, &report.total, currency, {
        by_owner: by_owner,
        by_csm: by_csm,
        groups: groups,
    })
}

/// Renders the renewal book summed per person, in the reporting currency.
pub fn renewal_summaries_to_pb(
    summaries: &[RenewalSummary],
    currency: &str,
) -> pb::GetRenewalSummaryResponse {
    pb::GetRenewalSummaryResponse {
        summaries: summaries
            .iter()
            .map(|s| pb::RenewalSummary {
                person: s.person.clone(),
                renewals: s.renewals,
                amount_at_stake: money(currency, s.amount_at_stake),
                forecast: money(currency, s.forecast),
                decided: s.decided,
                rate: Some(pb::RenewalRate {
                    due: s.rate.due,
                    due_arr: money(currency, s.rate.due_arr),
                    renewed_arr: money(currency, s.rate.renewed_arr),
                    expansion_arr: money(currency, s.rate.expansion_arr),
                    contraction_arr: money(currency, s.rate.contraction_arr),
                    churned_arr: money(currency, s.rate.churned_arr),
                    gross_renewal_rate: s.rate.gross(),
                    net_renewal_rate: s.rate.net(),
                }),
            })
            .collect(),
        reporting_currency_code: currency.to_owned(),
    }
}

/// Renders the trial-to-paid conversion of each period.
pub fn trial_conversion_to_pb(periods: &[TrialPeriod]) -> pb::GetTrialConversionResponse {
    pb::GetTrialConversionResponse {
        periods: periods
            .iter()
            .map(|p| pb::TrialPeriod {
                period: p.label.clone(),
                trials_started: p.started,
                converted: p.converted,
                in_trial: p.in_trial,
                not_converted: p.not_converted(),
                conversion_rate: p.conversion_rate(),
                median_days_to_convert: p.median_days_to_convert,
            })
            .collect(),
    }
}

/// Renders a month's unit economics, in the reporting currency.
pub fn unit_economics_to_pb(u: &UnitEconomics, currency: &str) -> pb::GetUnitEconomicsResponse {
    pb::GetUnitEconomicsResponse {
        sales_and_marketing_spend: money(currency, u.spend),
        new_customers: u.new_customers,
        cac: money(currency, u.cac),
        arpa: money(currency, u.arpa),
        gross_margin: u.gross_margin,
        average_monthly_churn_rate: u.average_monthly_churn_rate,
        ltv: money(currency, u.ltv),
        ltv_to_cac: u.ltv_to_cac,
        cac_payback_months: u.cac_payback_months,
    }
}

/// Longest cut value (as the longest owner, CSM, plan or attribute text).
const CUT_VALUE_MAX: usize = 200;

/// Parses the dimension of a cut or group-by at `field` (`field.dimension`,
/// `field.attribute`); `None` when the message is unset.
fn dimension(
    v: &mut FieldViolations,
    field: &str,
    raw: i32,
    attribute: &str,
) -> Option<Option<Dimension>> {
    use pb::CutDimension as D;
    let dimension = validate::enum_value::<D>(v, &format!("{field}.dimension"), raw, false)?;
    let attribute_field = format!("{field}.attribute");
    if dimension != D::Attribute && !attribute.is_empty() {
        v.add(
            &attribute_field,
            "must be empty unless the dimension is ATTRIBUTE",
        );
        return None;
    }
    Some(Some(match dimension {
        D::Unspecified => return Some(None),
        D::Segment => Dimension::Segment,
        D::Plan => Dimension::Plan,
        D::Owner => Dimension::Owner,
        D::Csm => Dimension::Csm,
        D::Tag => Dimension::Tag,
        D::Attribute => {
            let shaped = attribute.len() <= 50
                && attribute.starts_with(|c: char| c.is_ascii_lowercase())
                && attribute
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !shaped {
                v.add(
                    &attribute_field,
                    "must name a declared attribute (lower snake case, at most 50 characters)",
                );
                return None;
            }
            Dimension::Attribute(attribute.to_owned())
        }
    }))
}

/// Parses a report's `cut` and `group_by` (docs/design.md, "Cuts"): at most
/// one of them, a known dimension, an attribute name only for ATTRIBUTE, a
/// value the dimension can have.
pub fn report_cut(
    v: &mut FieldViolations,
    cut: Option<&pb::Cut>,
    group_by: Option<&pb::GroupBy>,
) -> Option<ReportCut> {
    let filter = match cut {
        None => None,
        Some(c) => match dimension(v, "cut", c.dimension, &c.attribute)? {
            None if !c.value.is_empty() => {
                v.add("cut.dimension", "must be set with a value");
                return None;
            }
            None => None,
            Some(d) => {
                let problem = if c.value.chars().count() > CUT_VALUE_MAX {
                    Some(format!("must be at most {CUT_VALUE_MAX} characters"))
                } else if d == Dimension::Segment && parse_segment_value(&c.value).is_none() {
                    Some("must be smb, mid_market or enterprise".to_owned())
                } else if d.remainder_is_empty_value() && c.value.is_empty() {
                    Some("must not be empty for an attribute".to_owned())
                } else {
                    None
                };
                if let Some(problem) = problem {
                    v.add("cut.value", problem);
                    return None;
                }
                Some((d, c.value.clone()))
            }
        },
    };
    let group = match group_by {
        None => None,
        Some(g) => dimension(v, "group_by", g.dimension, &g.attribute)?,
    };
    match (filter, group) {
        (Some(_), Some(_)) => {
            v.add("group_by", "cannot be combined with cut");
            None
        }
        (Some((d, value)), None) => Some(ReportCut::Filter(d, value)),
        (None, Some(d)) => Some(ReportCut::Group(d)),
        (None, None) => Some(ReportCut::Uncut),
    }
}

/// The GetMrrReport response with its groups.
pub fn cut_mrr_report_to_pb(report: &MrrReport, currency: &str) -> pb::GetMrrReportResponse {
    let mut out = mrr_report_to_pb(&report.periods, currency);
    out.groups = report
        .groups
        .iter()
        .map(|(value, periods)| pb::MrrGroup {
            value: value.clone(),
            periods: periods.iter().map(|p| period_to_pb(p, currency)).collect(),
        })
        .collect();
    out
}
