//! Stripe webhooks (`POST /webhooks/stripe`): customers become accounts,
//! subscription items become revenue subscriptions, invoices become invoices
//! (docs/connectors.md, docs/design.md section 8.1).
//!
//! The `Stripe-Signature` header (`t=...,v1=...`, HMAC-SHA256 of
//! `"<t>.<raw body>"` under the endpoint's signing secret) is checked before
//! the body is parsed, with the scheme the generic CRM webhook shares; a
//! missing, wrong or stale one is 401 and nothing is written.
//!
//! Events are written in sets through the services' import streams
//! ([`batch`]): the account of a customer is found by its external id
//! (source `stripe`), each subscription item is one revenue subscription
//! named `stripe:sub:<sub>/<si>`, started with zero terms at the Stripe
//! subscription's `start_date`, and every event then states, per item, the
//! terms in force from its own instant (inserted by effective time, so
//! events arriving out of order give the same history). The rows are
//! idempotent by their content, so a redelivery changes nothing. Verified
//! deliveries arriving together are collected by a [`Batcher`] and applied
//! as one set; a backfill applies its chunks the same way.
//!
//! MRR rules: an item counts while the subscription is `active` or
//! `past_due`; trialing, incomplete, paused and unpaid items are zero, so a
//! trial that converts is NEW at its first paid period (`trial_end`). An
//! item's MRR is unit amount x quantity normalised to a month by interval and
//! interval count, rounded once, half up; metered and one-off prices are not
//! MRR. Forever coupons reduce MRR (percent as a discount on every item, an
//! amount off the items in order); `once` and `repeating` ones only with
//! `connectors.stripe.discounts = "all"`. The end of a subscription
//! (`customer.subscription.deleted`, at `ended_at`, which is
//! `current_period_end` for a `cancel_at_period_end` cancellation) cancels
//! every item with the kind and reason code of its `cancellation_details`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use bowtie_proto::{accounts as acc, common as com, revenue as rev};
use chrono::Utc;
use prost_types::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

mod batch;

pub use batch::{Batcher, backfill_batch};

use crate::AppState;
use crate::error::ApiError;
use crate::webhooks::{header, parse, signed, verify_timestamped, writer_for};

/// The external id source of Stripe customers.
pub const SOURCE: &str = "stripe";

/// A Stripe event (`evt_...`), as Stripe posts it.
#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    /// `evt_...`; redeliveries carry the same one.
    pub id: String,
    /// e.g. `customer.subscription.updated`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When Stripe created the event (Unix seconds).
    pub created: i64,
    /// The object and, for updates, what changed.
    pub data: EventData,
}

/// `data` of an event.
#[derive(Debug, Clone, Deserialize)]
pub struct EventData {
    /// The object after the event.
    pub object: Value,
    /// The previous values of the attributes that changed (updates).
    #[serde(default)]
    pub previous_attributes: Option<Value>,
}

/// A Stripe customer (`cus_...`).
#[derive(Debug, Clone, Deserialize)]
pub struct Customer {
    /// `cus_...`.
    pub id: String,
    /// The customer's (company's) name.
    #[serde(default)]
    pub name: Option<String>,
    /// Billing email.
    #[serde(default)]
    pub email: Option<String>,
    /// Free-form metadata: the segment key, `industry`, `owner`, `csm`.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// A Stripe subscription (`sub_...`), the fields Bowtie reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Subscription {
    /// `sub_...`.
    pub id: String,
    /// The customer: its id, or the expanded object.
    pub customer: Value,
    /// `active`, `past_due`, `trialing`, `incomplete`, `incomplete_expired`, `unpaid`, `paused`, `canceled`.
    pub status: String,
    /// Three-letter currency code, lower case.
    pub currency: String,
    /// When the subscription started (Unix seconds).
    pub start_date: i64,
    /// End of the trial.
    #[serde(default)]
    pub trial_end: Option<i64>,
    /// When it ended.
    #[serde(default)]
    pub ended_at: Option<i64>,
    /// When it was cancelled (or the cancellation requested).
    #[serde(default)]
    pub canceled_at: Option<i64>,
    /// Why it was cancelled.
    #[serde(default)]
    pub cancellation_details: Option<CancellationDetails>,
    /// The items.
    pub items: List<Item>,
    /// The discount in force (API versions with one discount).
    #[serde(default)]
    pub discount: Option<Discount>,
    /// The discounts in force (expanded objects; ids alone are skipped).
    #[serde(default)]
    pub discounts: Vec<Value>,
}

/// A Stripe list object.
#[derive(Debug, Clone, Deserialize)]
pub struct List<T> {
    /// The entries.
    pub data: Vec<T>,
}

/// A subscription item (`si_...`).
#[derive(Debug, Clone, Deserialize)]
pub struct Item {
    /// `si_...`.
    pub id: String,
    /// Units; absent means 1.
    #[serde(default)]
    pub quantity: Option<i64>,
    /// The price.
    pub price: Price,
}

/// A price (`price_...`).
#[derive(Debug, Clone, Deserialize)]
pub struct Price {
    /// `price_...`.
    pub id: String,
    /// Its display name.
    #[serde(default)]
    pub nickname: Option<String>,
    /// Minor units per unit per interval.
    #[serde(default)]
    pub unit_amount: Option<i64>,
    /// `recurring` or `one_time`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// The billing interval of a recurring price.
    #[serde(default)]
    pub recurring: Option<Recurring>,
}

/// `price.recurring`.
#[derive(Debug, Clone, Deserialize)]
pub struct Recurring {
    /// `day`, `week`, `month` or `year`.
    pub interval: String,
    /// Intervals between bills (every 3 months: 3).
    #[serde(default = "one")]
    pub interval_count: i64,
    /// `licensed` or `metered`.
    #[serde(default)]
    pub usage_type: Option<String>,
}

fn one() -> i64 {
    1
}

/// A discount and its coupon.
#[derive(Debug, Clone, Deserialize)]
pub struct Discount {
    /// The coupon (older API versions).
    #[serde(default)]
    pub coupon: Option<Coupon>,
    /// Where it comes from (newer API versions: `source.coupon`).
    #[serde(default)]
    pub source: Option<DiscountSource>,
}

/// `discount.source`.
#[derive(Debug, Clone, Deserialize)]
pub struct DiscountSource {
    /// The coupon, when expanded.
    #[serde(default)]
    pub coupon: Option<Value>,
}

/// A coupon.
#[derive(Debug, Clone, Deserialize)]
pub struct Coupon {
    /// Percent off, e.g. 20 or 12.5.
    #[serde(default)]
    pub percent_off: Option<f64>,
    /// Minor units off each invoice.
    #[serde(default)]
    pub amount_off: Option<i64>,
    /// `forever`, `once` or `repeating`.
    pub duration: String,
}

/// `cancellation_details`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CancellationDetails {
    /// `cancellation_requested`, `payment_failed`, `payment_disputed`.
    #[serde(default)]
    pub reason: Option<String>,
    /// The customer's feedback, e.g. `too_expensive`.
    #[serde(default)]
    pub feedback: Option<String>,
}

/// An invoice (`in_...`).
#[derive(Debug, Clone, Deserialize)]
pub struct Invoice {
    /// `in_...`.
    pub id: String,
    /// The customer: its id, or the expanded object.
    pub customer: Value,
    /// Three-letter currency code, lower case.
    pub currency: String,
    /// The amount due, in minor units.
    pub amount_due: i64,
    /// When it was created.
    pub created: i64,
    /// When payment is due (invoices sent for manual payment).
    #[serde(default)]
    pub due_date: Option<i64>,
    /// When it changed state.
    #[serde(default)]
    pub status_transitions: Option<StatusTransitions>,
}

/// `invoice.status_transitions`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StatusTransitions {
    /// When it was paid.
    #[serde(default)]
    pub paid_at: Option<i64>,
}

/// What a delivery did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StripeResult {
    /// The event's id.
    pub event_id: String,
    /// The event's type.
    pub event_type: String,
    /// False for an event type Bowtie does not use (counted, not stored).
    pub handled: bool,
    /// The account the event concerns, when it concerns one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
}

/// The customer id of a `customer` field: a string or an expanded object.
fn customer_id(value: &Value) -> Result<String, ApiError> {
    match value {
        Value::String(id) if !id.is_empty() => Ok(id.clone()),
        Value::Object(o) => o
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ApiError::invalid("data.object.customer.id", "missing")),
        _ => Err(ApiError::invalid(
            "data.object.customer",
            "must be a customer id",
        )),
    }
}

/// `numerator / denominator` rounded half up (both non-negative).
fn half_up(numerator: i128, denominator: i128) -> i64 {
    if denominator <= 0 {
        return 0;
    }
    i64::try_from((2 * numerator + denominator) / (2 * denominator)).unwrap_or(i64::MAX)
}

/// The factor (multiplier, divisor) that turns an amount per `count`
/// `interval`s into an amount per month (design 8.1).
fn per_month(interval: &str, count: i64) -> Option<(i128, i128)> {
    let count = i128::from(count.max(1));
    match interval {
        "month" => Some((1, count)),
        "year" => Some((1, 12 * count)),
        "week" => Some((52, 12 * count)),
        "day" => Some((365, 12 * count)),
        _ => None,
    }
}

/// An amount per billing interval normalised to a month, rounded once, half up.
pub fn monthly(amount: i64, interval: &str, count: i64) -> i64 {
    per_month(interval, count).map_or(0, |(m, d)| half_up(i128::from(amount) * m, d))
}

/// An item's normalised MRR before discounts; 0 for metered and one-off prices.
pub fn item_mrr(item: &Item) -> i64 {
    let Some(recurring) = &item.price.recurring else {
        return 0;
    };
    if item.price.kind.as_deref() == Some("one_time")
        || recurring.usage_type.as_deref() == Some("metered")
    {
        return 0;
    }
    let quantity = item.quantity.unwrap_or(1).max(0);
    let amount = item.price.unit_amount.unwrap_or(0).max(0);
    monthly(
        amount.saturating_mul(quantity),
        &recurring.interval,
        recurring.interval_count,
    )
}

/// The coupons of a subscription that reduce MRR under `policy`.
fn coupons(s: &Subscription, policy: &str) -> Vec<Coupon> {
    let mut found = Vec::new();
    let mut push = |d: &Discount| {
        let coupon = d.coupon.clone().or_else(|| {
            d.source
                .as_ref()
                .and_then(|s| s.coupon.clone())
                .and_then(|c| serde_json::from_value(c).ok())
        });
        if let Some(c) = coupon
            && (c.duration == "forever" || policy == "all")
        {
            found.push(c);
        }
    };
    if let Some(d) = &s.discount {
        push(d);
    }
    for d in &s.discounts {
        if let Ok(d) = serde_json::from_value::<Discount>(d.clone()) {
            push(&d);
        }
    }
    found
}

/// The terms of each item of `s` in force while it has `status`.
pub fn item_terms(s: &Subscription, policy: &str) -> Vec<(String, rev::Terms)> {
    let counts = matches!(s.status.as_str(), "active" | "past_due");
    let currency = s.currency.to_ascii_uppercase();
    let coupons = coupons(s, policy);
    let percent_bp: i64 = coupons
        .iter()
        .filter_map(|c| c.percent_off)
        .map(|p| (p * 100.0).round() as i64)
        .sum::<i64>()
        .clamp(0, 10_000);
    // An amount off applies to each invoice: normalise it by the billing
    // interval of the first recurring item.
    let interval = s.items.data.iter().find_map(|i| i.price.recurring.as_ref());
    let mut amount_off: i64 = coupons
        .iter()
        .filter_map(|c| c.amount_off)
        .map(|a| interval.map_or(0, |r| monthly(a, &r.interval, r.interval_count)))
        .sum();
    s.items
        .data
        .iter()
        .map(|item| {
            let plan = item
                .price
                .nickname
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| item.price.id.clone());
            let mut mrr = if counts { item_mrr(item) } else { 0 };
            let off = amount_off.min(mrr);
            mrr -= off;
            amount_off -= off;
            let terms = rev::Terms {
                plan,
                quantity: i64::from(mrr > 0),
                unit_price: Some(com::Money {
                    currency_code: currency.clone(),
                    minor_units: mrr,
                }),
                discount_basis_points: if mrr > 0 {
                    i32::try_from(percent_bp).unwrap_or(0)
                } else {
                    0
                },
            };
            (item.id.clone(), terms)
        })
        .collect()
}

/// Voluntary or involuntary, and the reason code, of a cancellation.
pub fn cancellation(
    details: Option<&CancellationDetails>,
    reasons: &BTreeMap<String, String>,
    taxonomy: &[String],
) -> (rev::CancellationKind, String) {
    let details = details.cloned().unwrap_or_default();
    let involuntary = matches!(
        details.reason.as_deref(),
        Some("payment_failed" | "payment_disputed")
    );
    let known = |code: &str| taxonomy.iter().any(|t| t == code);
    let code = if involuntary && known("payment_failure") {
        "payment_failure".to_owned()
    } else {
        details
            .feedback
            .as_deref()
            .and_then(|f| reasons.get(f))
            .filter(|c| known(c))
            .cloned()
            .unwrap_or_else(|| "other".into())
    };
    let kind = if involuntary {
        rev::CancellationKind::Involuntary
    } else {
        rev::CancellationKind::Voluntary
    };
    (kind, code)
}

/// The previous status of an update, when it changed.
fn previous_status(previous: Option<&Value>) -> Option<&str> {
    previous?.get("status")?.as_str()
}

/// Ids of the items an update removed (in `previous_attributes.items`, not now).
fn removed_items(previous: Option<&Value>, now: &Subscription) -> Vec<String> {
    let current: BTreeSet<&str> = now.items.data.iter().map(|i| i.id.as_str()).collect();
    previous
        .and_then(|p| p.get("items"))
        .and_then(|i| i.get("data"))
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.get("id").and_then(Value::as_str))
                .filter(|id| !current.contains(id))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn at(seconds: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos: 0 })
}

fn object<T: serde::de::DeserializeOwned>(event: &Event) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(event.data.object.clone())
        .map_err(|e| ApiError::invalid(format!("data.object.{}", e.path()), e.inner().to_string()))
}

/// The account a customer event describes.
fn account_of(c: &Customer, segment_key: &str) -> acc::Account {
    let meta = |k: &str| c.metadata.get(k).cloned().unwrap_or_default();
    let segment = c
        .metadata
        .get(segment_key)
        .and_then(|s| {
            com::Segment::from_str_name(&format!("SEGMENT_{}", s.trim().to_ascii_uppercase()))
        })
        .filter(|s| *s != com::Segment::Unspecified)
        .unwrap_or(com::Segment::Smb);
    let name = c
        .name
        .clone()
        .filter(|n| !n.trim().is_empty())
        .or_else(|| c.email.clone().filter(|e| !e.trim().is_empty()))
        .unwrap_or_else(|| c.id.clone());
    acc::Account {
        name,
        segment: segment as i32,
        industry: meta("industry"),
        owner: meta("owner"),
        csm: meta("csm"),
        ..acc::Account::default()
    }
}

/// Stripe webhook: one event per delivery, signed with `Stripe-Signature`.
pub async fn webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<StripeResult>, ApiError> {
    signed(&headers, &["stripe-signature"])?;
    let settings = &state.connectors.stripe;
    let (secret, caller) = writer_for(
        &state,
        &settings.secret(),
        "stripe",
        "connectors.stripe.webhook_secret",
    )?;
    let tolerance = i64::try_from(settings.tolerance_seconds).unwrap_or(i64::MAX);
    verify_timestamped(
        "Stripe-Signature",
        &secret,
        header(&headers, "stripe-signature"),
        &body,
        Utc::now().timestamp(),
        tolerance,
    )?;
    let event: Event = parse(&body)?;
    // Verified deliveries arriving together are applied as one batch; each
    // is answered with its own outcome once its batch is written.
    let batcher = state.stripe_batches.get_or_init(|| {
        Batcher::start(
            Duration::from_millis(settings.batch_window_ms),
            settings.batch_max_events,
        )
    });
    Ok(Json(batcher.apply(&state, caller, event).await?))
}

/// A short digest of an object, so a changed object re-imported is a new
/// synthetic event and the same one imported again is a repeat.
fn digest(object: &Value) -> String {
    use sha2::Digest as _;
    hex::encode(&sha2::Sha256::digest(object.to_string().as_bytes())[..8])
}

/// The events a listed object (a backfill: what `GET /v1/customers`,
/// `/v1/subscriptions?status=all` and `/v1/invoices` return) stands for,
/// applied by the same rules as the webhook. A subscription is its creation
/// at `start_date` (trialing first when it had a trial), its conversion at
/// `trial_end` and its end at `ended_at`, with the terms it has now; invoices
/// share the webhook's keys (per invoice and outcome), customers and items
/// the same accounts and revenue subscriptions, so a backfill after live
/// events, or the reverse, does not duplicate anything.
pub fn backfill_events(object: &Value) -> Result<Vec<Event>, ApiError> {
    let kind = object
        .get("object")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let id = object.get("id").and_then(Value::as_str).unwrap_or_default();
    let created = object.get("created").and_then(Value::as_i64).unwrap_or(0);
    let hash = digest(object);
    let event =
        |suffix: &str, kind: &str, created: i64, object: Value, previous: Option<Value>| Event {
            id: format!("import_{id}_{hash}_{suffix}"),
            kind: kind.to_owned(),
            created,
            data: EventData {
                object,
                previous_attributes: previous,
            },
        };
    match kind {
        // A listed customer is its state now: it wins over older live
        // events still in flight, and loses to any later one.
        // (Each import is then its own event: the same data again changes nothing.)
        "customer" => {
            let now = Utc::now().timestamp();
            Ok(vec![event(
                &format!("customer_{now}"),
                "customer.created",
                now,
                object.clone(),
                None,
            )])
        }
        "subscription" => {
            let s: Subscription = serde_path_to_error::deserialize(object.clone())
                .map_err(|e| ApiError::invalid(e.path().to_string(), e.inner().to_string()))?;
            let mut events = Vec::new();
            let trial = s.trial_end.filter(|end| *end > s.start_date);
            let status_now = s.status.as_str();
            let with_status = |status: &str| {
                let mut o = object.clone();
                o["status"] = Value::String(status.to_owned());
                o
            };
            let paid_status = if status_now == "past_due" {
                "past_due"
            } else {
                "active"
            };
            let ended = s
                .ended_at
                .or(s.canceled_at.filter(|_| status_now == "canceled"));
            // Whether it was ever paid: it is now, or it ended after its trial.
            let converted = matches!(status_now, "active" | "past_due")
                || (status_now == "canceled" && trial.zip(ended).is_none_or(|(t, e)| e > t));
            match trial {
                Some(trial_end) => {
                    events.push(event(
                        "created",
                        "customer.subscription.created",
                        s.start_date,
                        with_status("trialing"),
                        None,
                    ));
                    if converted {
                        events.push(event(
                            "converted",
                            "customer.subscription.updated",
                            trial_end,
                            with_status(paid_status),
                            Some(serde_json::json!({"status": "trialing"})),
                        ));
                    }
                }
                None => {
                    let status = if status_now == "canceled" {
                        paid_status
                    } else {
                        status_now
                    };
                    events.push(event(
                        "created",
                        "customer.subscription.created",
                        s.start_date,
                        with_status(status),
                        None,
                    ));
                }
            }
            if status_now == "canceled" {
                let end = ended.unwrap_or(created);
                events.push(event(
                    "deleted",
                    "customer.subscription.deleted",
                    end,
                    object.clone(),
                    None,
                ));
            }
            Ok(events)
        }
        "invoice" => {
            let status = object
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let attempts = object
                .get("attempt_count")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let kind = match status {
                "paid" => "invoice.paid",
                "uncollectible" => "invoice.marked_uncollectible",
                "open" if attempts > 0 => "invoice.payment_failed",
                // Drafts, voided and not yet attempted invoices say nothing.
                _ => return Ok(Vec::new()),
            };
            Ok(vec![event("invoice", kind, created, object.clone(), None)])
        }
        other => Err(ApiError::invalid(
            "object",
            format!("{other:?} is not a customer, subscription or invoice"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, amount: i64, quantity: i64, interval: &str, count: i64) -> Item {
        serde_json::from_value(serde_json::json!({
            "id": id, "quantity": quantity,
            "price": {"id": "price_1", "unit_amount": amount, "type": "recurring",
                      "recurring": {"interval": interval, "interval_count": count, "usage_type": "licensed"}}
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn intervals_normalise_to_a_month_rounded_once_half_up() {
        assert_eq!(item_mrr(&item("si", 4900, 3, "month", 1)), 14_700);
        assert_eq!(item_mrr(&item("si", 30_000, 1, "month", 3)), 10_000);
        assert_eq!(item_mrr(&item("si", 120_000, 1, "year", 1)), 10_000);
        assert_eq!(item_mrr(&item("si", 240_000, 1, "year", 2)), 10_000);
        // 1000 x 52 / 12 = 4333.33
        assert_eq!(item_mrr(&item("si", 1000, 1, "week", 1)), 4333);
        // 100 x 365 / 12 = 3041.67
        assert_eq!(item_mrr(&item("si", 100, 1, "day", 1)), 3042);
        // 1 x 1 / 2 = 0.5 rounds up.
        assert_eq!(item_mrr(&item("si", 1, 1, "month", 2)), 1);
    }

    #[test]
    fn feedback_maps_to_the_taxonomy_and_payment_failures_are_involuntary() {
        let reasons = BTreeMap::from([("too_expensive".to_owned(), "price".to_owned())]);
        let taxonomy = vec!["price".to_owned(), "payment_failure".into(), "other".into()];
        let d = |reason: &str, feedback: &str| CancellationDetails {
            reason: Some(reason.into()),
            feedback: Some(feedback.into()),
        };
        assert_eq!(
            cancellation(
                Some(&d("cancellation_requested", "too_expensive")),
                &reasons,
                &taxonomy
            ),
            (rev::CancellationKind::Voluntary, "price".into())
        );
        assert_eq!(
            cancellation(Some(&d("payment_failed", "")), &reasons, &taxonomy),
            (rev::CancellationKind::Involuntary, "payment_failure".into())
        );
        assert_eq!(
            cancellation(None, &reasons, &taxonomy),
            (rev::CancellationKind::Voluntary, "other".into())
        );
    }
}
