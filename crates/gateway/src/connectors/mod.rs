//! Connectors: revenue from Stripe (`POST /webhooks/stripe`) and product
//! usage from Segment-spec tracking (`POST /v1/identify`, `/v1/group`,
//! `/v1/track`, `/v1/batch`), so a SaaS company feeds Bowtie with no code
//! of its own (docs/connectors.md).
//!
//! Both are off until their secret is configured (`connectors.*`) and write
//! with `gateway.webhook_api_key`, like the CRM webhooks whose signature
//! check, body parsing and error mapping they share (`crate::webhooks`).

use std::collections::HashMap;
use std::sync::Mutex;

use bowtie_proto::{accounts as acc, common as com};
use opentelemetry::KeyValue;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::clients::Caller;
use crate::error::ApiError;

pub mod attributes;
pub mod segment;
pub mod stripe;

/// Most entries a [`Memo`] holds before it starts again empty.
const MEMO_ENTRIES: usize = 100_000;

/// A bounded in-memory map of facts that do not change once learnt (the
/// account of an external id). When full it
/// empties and fills again from the next calls, which only costs lookups.
#[derive(Debug, Default)]
pub struct Memo(Mutex<HashMap<String, String>>);

impl Memo {
    /// The value of `key`, if remembered.
    pub fn get(&self, key: &str) -> Option<String> {
        self.0.lock().ok()?.get(key).cloned()
    }

    /// Remembers `value` for `key`.
    pub fn set(&self, key: &str, value: &str) {
        if let Ok(mut map) = self.0.lock() {
            if map.len() >= MEMO_ENTRIES && !map.contains_key(key) {
                map.clear();
            }
            map.insert(key.to_owned(), value.to_owned());
        }
    }
}

/// The connector routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(stripe_webhook))
        .routes(routes!(segment_identify))
        .routes(routes!(segment_group))
        .routes(routes!(segment_track))
        .routes(routes!(segment_batch))
}

/// The account of `external_id` in `source` (a Stripe customer, a Segment
/// group), created with the external id as its name when it is not known
/// yet. The key and the payload never change, so after the first call this
/// reads the account without writing (the accounts API has no lookup by
/// external id). A connector calls it before each upsert of real data, so
/// this placeholder never lands after a real name.
pub async fn resolve_account(
    state: &AppState,
    caller: &Caller,
    source: &str,
    external_id: &str,
) -> Result<String, ApiError> {
    let placeholder = acc::Account {
        name: external_id.to_owned(),
        segment: com::Segment::Smb as i32,
        ..acc::Account::default()
    };
    let key = format!("{source}:account:{external_id}");
    // An external id names one account for good: once resolved, the
    // gateway answers from memory instead of asking accounts again.
    if let Some(id) = state.known_accounts.get(&key) {
        return Ok(id);
    }
    let id = upsert_account(
        state,
        caller,
        source,
        external_id,
        placeholder,
        None,
        key.clone(),
    )
    .await?;
    state.known_accounts.set(&key, &id);
    Ok(id)
}

/// Upserts the account of `external_id` in `source` with `account`'s data
/// under the idempotency key `key`; its id. `source_time` is the instant of
/// the data at the source: data older than the newest applied changes
/// nothing (the accounts service orders them).
pub async fn upsert_account(
    state: &AppState,
    caller: &Caller,
    source: &str,
    external_id: &str,
    account: acc::Account,
    source_time: Option<prost_types::Timestamp>,
    key: String,
) -> Result<String, ApiError> {
    let answer = state
        .services
        .accounts
        .clone()
        .upsert_account_by_external_id(caller.request(acc::UpsertAccountByExternalIdRequest {
            external_id: Some(acc::ExternalId {
                source: source.to_owned(),
                external_id: external_id.to_owned(),
            }),
            account: Some(account),
            idempotency_key: key,
            source_updated_at: source_time,
        }))
        .await
        .map_err(|s| ApiError::from_status("accounts", &s))?
        .into_inner();
    answer
        .account
        .map(|a| a.id)
        .ok_or_else(|| ApiError::internal(&"UpsertAccountByExternalId returned no account"))
}

/// Counts an event a connector received and does not use
/// (`bowtie.connector.events_ignored`, by connector and event type): it is
/// answered 200 so the sender does not retry it, and not stored.
pub fn count_ignored(connector: &'static str, event_type: &str) {
    tracing::info!(connector, event_type, "connector event ignored");
    opentelemetry::global::meter("bowtie")
        .u64_counter("bowtie.connector.events_ignored")
        .with_description("Events a connector received and does not use")
        .build()
        .add(
            1,
            &[
                KeyValue::new("connector", connector),
                KeyValue::new("event_type", event_type.to_owned()),
            ],
        );
}

/// Stripe webhook: one event per delivery (`customer.*`,
/// `customer.subscription.*`, `invoice.paid`, `invoice.payment_failed`,
/// `invoice.marked_uncollectible`), signed with
/// `Stripe-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`.
/// Other event types answer 200 with `handled: false`.
#[utoipa::path(post, path = "/webhooks/stripe", tag = "webhooks", security(()),
    request_body(content = serde_json::Value, description = "A Stripe event object"),
    params(("Stripe-Signature" = String, Header, description = "t=<unix seconds>,v1=<hex HMAC-SHA256 of \"t.body\"> under the endpoint's signing secret")),
    responses((status = 200, body = stripe::StripeResult), (status = 401, body = crate::error::ErrorBody),
              (status = "4XX", body = crate::error::ErrorBody), (status = "5XX", body = crate::error::ErrorBody)))]
async fn stripe_webhook(
    state: axum::extract::State<AppState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<axum::Json<stripe::StripeResult>, crate::error::ApiError> {
    stripe::webhook(state, headers, body).await
}

/// Segment `identify`: records the user as a contact of its account
/// (`context.groupId`, `traits.groupId` or the user's last group). At most
/// 32 KB; the write key as HTTP Basic user name or `writeKey`.
#[utoipa::path(post, path = "/v1/identify", tag = "tracking", security(()),
    request_body(content = serde_json::Value, description = "A Segment identify call"),
    responses((status = 200, body = segment::TrackingResult), (status = 401, body = crate::error::ErrorBody),
              (status = 413, body = crate::error::ErrorBody),
              (status = "4XX", body = crate::error::ErrorBody), (status = "5XX", body = crate::error::ErrorBody)))]
async fn segment_identify(
    axum::extract::State(state): axum::extract::State<AppState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<axum::Json<segment::TrackingResult>, ApiError> {
    segment::single(&state, &headers, &body, "identify").await
}

/// Segment `group`: upserts the account of `groupId` (source `segment`;
/// traits name, industry, employees) and remembers it as the user's group.
#[utoipa::path(post, path = "/v1/group", tag = "tracking", security(()),
    request_body(content = serde_json::Value, description = "A Segment group call"),
    responses((status = 200, body = segment::TrackingResult), (status = 401, body = crate::error::ErrorBody),
              (status = 413, body = crate::error::ErrorBody),
              (status = "4XX", body = crate::error::ErrorBody), (status = "5XX", body = crate::error::ErrorBody)))]
async fn segment_group(
    axum::extract::State(state): axum::extract::State<AppState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<axum::Json<segment::TrackingResult>, ApiError> {
    segment::single(&state, &headers, &body, "group").await
}

/// Segment `track`: a scoring signal through `connectors.segment.events`, on
/// `context.groupId` or the user's last group; `messageId` is its key.
#[utoipa::path(post, path = "/v1/track", tag = "tracking", security(()),
    request_body(content = serde_json::Value, description = "A Segment track call"),
    responses((status = 200, body = segment::TrackingResult), (status = 401, body = crate::error::ErrorBody),
              (status = 413, body = crate::error::ErrorBody),
              (status = "4XX", body = crate::error::ErrorBody), (status = "5XX", body = crate::error::ErrorBody)))]
async fn segment_track(
    axum::extract::State(state): axum::extract::State<AppState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<axum::Json<segment::TrackingResult>, ApiError> {
    segment::single(&state, &headers, &body, "track").await
}

/// Segment `batch`: identify, group and track calls in order, at most 500 KB
/// and 2,500 events; an event that cannot be used is reported by index in
/// `rejected` and the rest land.
#[utoipa::path(post, path = "/v1/batch", tag = "tracking", security(()),
    request_body(content = serde_json::Value, description = "{\"batch\": [calls], \"writeKey\"?, \"context\"?}"),
    responses((status = 200, body = segment::TrackingResult), (status = 401, body = crate::error::ErrorBody),
              (status = 413, body = crate::error::ErrorBody),
              (status = "4XX", body = crate::error::ErrorBody), (status = "5XX", body = crate::error::ErrorBody)))]
async fn segment_batch(
    state: axum::extract::State<AppState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<axum::Json<segment::TrackingResult>, ApiError> {
    segment::batch(state, headers, body).await
}
