//! Connectors: revenue from Stripe (`POST /webhooks/stripe`) and product
//! usage from Segment-spec tracking (`POST /v1/identify`, `/v1/group`,
//! `/v1/track`, `/v1/batch`), so a SaaS company feeds Bowtie with no code
//! of its own (docs/connectors.md).
//!
//! Both are off until their secret is configured (`connectors.*`) and write
//! with `gateway.webhook_api_key`, like the CRM webhooks whose signature
//! check, body parsing and error mapping they share (`crate::webhooks`).

use opentelemetry::KeyValue;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;

pub mod stripe;

/// The connector routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stripe_webhook))
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
