//! CRM webhooks: HubSpot-style (`POST /webhooks/hubspot`) and a generic CRM
//! payload (`POST /webhooks/crm`).
//!
//! A webhook is verified before anything is read from it: an HMAC-SHA256
//! signature over the raw body and a timestamp no further from now than
//! `gateway.webhook_tolerance_seconds` (replays of old deliveries fail).
//! A missing, malformed, wrong or stale signature is 401 and nothing is
//! written. Every event of a delivery is parsed before the first write, so a
//! malformed one is 400 with nothing written either.
//!
//! Each event becomes an upsert of the company's account by its CRM id
//! (`UpsertAccountByExternalId`, source `hubspot` or the payload's `source`)
//! and, when it carries a lifecycle stage or a deal stage, a funnel
//! transition (`RecordTransition`). Both calls carry idempotency keys built
//! from the CRM's event id, so a redelivered event changes nothing.
//!
//! Stage mapping: lifecycle `subscriber` / `lead` -> AWARENESS,
//! `marketingqualifiedlead` -> EDUCATION, `salesqualifiedlead` /
//! `opportunity` -> SELECTION; a deal created or moved to an open stage ->
//! SELECTION, `closedlost` -> LOST (reason from `closed_lost_reason`, else
//! `other`). `customer` and `closedwon` record nothing: COMMIT and the right
//! side of the bowtie follow the revenue service (the first subscription).

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use base64::Engine as _;
use bowtie_proto::{accounts as acc, funnel as fun};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::clients::Caller;
use crate::common::{Segment, Stage, timestamp};
use crate::error::{ApiError, ErrorBody};

type HmacSha256 = Hmac<Sha256>;

/// The webhook routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(hubspot))
        .routes(routes!(generic))
}

/// HMAC-SHA256 of `message` with `secret`.
fn mac(secret: &[u8], message: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut m = match HmacSha256::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return Vec::new(),
    };
    m.update(message);
    m.finalize().into_bytes().to_vec()
}

/// Constant-time comparison of a computed and a presented MAC.
pub(crate) fn same(expected: &[u8], presented: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    !expected.is_empty() && expected.ct_eq(presented).into()
}

pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Checks `X-Bowtie-Signature: t=<unix seconds>,v1=<hex HMAC of "t.body">`.
pub fn verify_generic(
    secret: &str,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
    tolerance: i64,
) -> Result<(), ApiError> {
    verify_timestamped(
        "X-Bowtie-Signature",
        secret,
        signature,
        body,
        now,
        tolerance,
    )
}

/// Checks a `t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">` signature
/// (one or more `v1=`, any may match), the scheme of the generic CRM webhook
/// and of Stripe's `Stripe-Signature`; `header_name` names it in errors.
pub(crate) fn verify_timestamped(
    header_name: &str,
    secret: &str,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
    tolerance: i64,
) -> Result<(), ApiError> {
    let signature = signature
        .ok_or_else(|| ApiError::unauthenticated(format!("missing {header_name} header")))?;
    let mut t = None;
    let mut v1 = Vec::new();
    for part in signature.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1.push(v.to_owned()),
            _ => {}
        }
    }
    let t =
        t.ok_or_else(|| ApiError::unauthenticated("the signature has no valid t= timestamp"))?;
    if (now - t).abs() > tolerance {
        return Err(ApiError::unauthenticated(
            "the signature's timestamp is outside the tolerance",
        ));
    }
    let mut message = format!("{t}.").into_bytes();
    message.extend_from_slice(body);
    let expected = mac(secret.as_bytes(), &message);
    if v1
        .iter()
        .filter_map(|v| hex::decode(v).ok())
        .any(|v| same(&expected, &v))
    {
        Ok(())
    } else {
        Err(ApiError::unauthenticated("the signature does not match"))
    }
}

/// What HubSpot signs, as received.
#[derive(Debug, Clone, Copy)]
pub struct HubSpotRequest<'a> {
    /// `X-HubSpot-Signature-v3`.
    pub signature: Option<&'a str>,
    /// `X-HubSpot-Request-Timestamp` (milliseconds).
    pub timestamp_ms: Option<&'a str>,
    /// The HTTP method.
    pub method: &'a str,
    /// The full URI HubSpot called.
    pub uri: &'a str,
    /// The raw body.
    pub body: &'a [u8],
}

/// Checks HubSpot's v3 signature: base64 HMAC-SHA256 of
/// method + full URI + body + `X-HubSpot-Request-Timestamp` (milliseconds).
pub fn verify_hubspot(
    secret: &str,
    request: HubSpotRequest<'_>,
    now_ms: i64,
    tolerance_ms: i64,
) -> Result<(), ApiError> {
    let HubSpotRequest {
        signature,
        timestamp_ms,
        method,
        uri,
        body,
    } = request;
    let signature = signature
        .ok_or_else(|| ApiError::unauthenticated("missing X-HubSpot-Signature-v3 header"))?;
    let stamp = timestamp_ms
        .ok_or_else(|| ApiError::unauthenticated("missing X-HubSpot-Request-Timestamp header"))?;
    let t = stamp
        .parse::<i64>()
        .map_err(|_| ApiError::unauthenticated("X-HubSpot-Request-Timestamp is not a number"))?;
    if (now_ms - t).abs() > tolerance_ms {
        return Err(ApiError::unauthenticated(
            "the request timestamp is outside the tolerance",
        ));
    }
    let mut message = format!("{method}{uri}").into_bytes();
    message.extend_from_slice(body);
    message.extend_from_slice(stamp.as_bytes());
    let expected = mac(secret.as_bytes(), &message);
    let presented = base64::engine::general_purpose::STANDARD
        .decode(signature.trim())
        .map_err(|_| ApiError::unauthenticated("the signature is not base64"))?;
    if same(&expected, &presented) {
        Ok(())
    } else {
        Err(ApiError::unauthenticated("the signature does not match"))
    }
}

/// A company as a CRM describes it.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct CrmCompany {
    /// The CRM's id of the company.
    pub id: String,
    /// Its name.
    pub name: String,
    /// SMB, MID_MARKET or ENTERPRISE (default SMB).
    #[serde(default)]
    pub segment: Option<Segment>,
    /// Owner (sales rep).
    #[serde(default)]
    pub owner: String,
    /// Customer success manager.
    #[serde(default)]
    pub csm: String,
    /// Industry.
    #[serde(default)]
    pub industry: String,
}

/// A deal as a CRM describes it.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct CrmDeal {
    /// The CRM's id of the deal.
    pub id: String,
    /// The deal stage, e.g. `appointmentscheduled`, `closedwon`, `closedlost`.
    pub stage: String,
    /// Why it was lost (with `closedlost`).
    #[serde(default)]
    pub lost_reason: String,
}

/// One event of the generic CRM webhook.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct CrmEvent {
    /// The CRM's unique id of this event; redeliveries carry the same one.
    pub event_id: String,
    /// The CRM's name, used as the external id source (default `crm`).
    #[serde(default)]
    pub source: Option<String>,
    /// What happened, e.g. `company.updated`, `deal.updated`, `lifecycle.changed` (informational).
    #[serde(default, rename = "type")]
    pub kind: String,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// The company, always required (its whole record: name and segment).
    pub company: CrmCompany,
    /// The deal, for deal events.
    #[serde(default)]
    pub deal: Option<CrmDeal>,
    /// The company's lifecycle stage, e.g. `lead`, `marketingqualifiedlead`.
    #[serde(default)]
    pub lifecycle_stage: Option<String>,
}

/// A generic delivery: one event or a list of them.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum CrmDelivery {
    /// Several events.
    Many(Vec<CrmEvent>),
    /// One event.
    One(Box<CrmEvent>),
}

/// One HubSpot webhook event (HubSpot sends a JSON array of them). Company
/// and deal events carry the company's properties (`properties` of a
/// company event, `associatedCompany` of a deal event), because a Bowtie
/// account needs its name and segment.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HubSpotEvent {
    /// HubSpot's event id.
    pub event_id: i64,
    /// e.g. `company.creation`, `company.propertyChange`, `deal.creation`, `deal.propertyChange`.
    pub subscription_type: String,
    /// The company's or the deal's id.
    pub object_id: i64,
    /// Milliseconds since the epoch.
    pub occurred_at: i64,
    /// The changed property (property changes).
    #[serde(default)]
    pub property_name: Option<String>,
    /// Its new value.
    #[serde(default)]
    pub property_value: Option<String>,
    /// The object's properties (`name`, `bowtie_segment`, `numberofemployees`,
    /// `hubspot_owner_id`, `industry`, `lifecyclestage`, `dealstage`, `closed_lost_reason`).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// The company a deal belongs to.
    #[serde(default)]
    pub associated_company_id: Option<i64>,
    /// That company's properties.
    #[serde(default)]
    pub associated_company: BTreeMap<String, String>,
}

/// What a delivery did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WebhookResult {
    /// Events processed.
    pub events: usize,
    /// The accounts the events touched, in event order.
    pub account_ids: Vec<String>,
    /// Transitions these events recorded (a redelivery reports what the
    /// first delivery recorded; it records nothing again).
    pub transitions_applied: usize,
}

/// An event reduced to what Bowtie records.
#[derive(Debug, Clone)]
struct Change {
    source: String,
    event_id: String,
    occurred_at: DateTime<Utc>,
    company: CrmCompany,
    stage: Option<(Stage, String)>,
}

fn lifecycle_stage(value: &str) -> Option<Stage> {
    match value.trim().to_ascii_lowercase().as_str() {
        "subscriber" | "lead" => Some(Stage::Awareness),
        "marketingqualifiedlead" | "mql" => Some(Stage::Education),
        "salesqualifiedlead" | "sql" | "opportunity" => Some(Stage::Selection),
        _ => None,
    }
}

fn deal_stage(value: &str, lost_reason: &str) -> Option<(Stage, String)> {
    match value.trim().to_ascii_lowercase().as_str() {
        "closedwon" => None,
        "closedlost" => Some((Stage::Lost, reason_code(lost_reason))),
        _ => Some((Stage::Selection, String::new())),
    }
}

/// A reason code the funnel accepts: lower-case letters, digits, underscores.
fn reason_code(text: &str) -> String {
    let code: String = text
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let code = code.trim_matches('_').to_owned();
    if code.is_empty() {
        "other".into()
    } else {
        code
    }
}

fn segment_of(props: &BTreeMap<String, String>) -> Option<Segment> {
    if let Some(s) = props.get("bowtie_segment") {
        return serde_json::from_value(serde_json::Value::String(s.to_ascii_uppercase())).ok();
    }
    let employees = props.get("numberofemployees")?.trim().parse::<i64>().ok()?;
    Some(segment_for_employees(employees))
}

/// The segment of a company of `employees` people: SMB below 200,
/// MID_MARKET below 1,000, else ENTERPRISE (CRM head counts and Segment
/// `group` traits alike).
pub(crate) fn segment_for_employees(employees: i64) -> Segment {
    match employees {
        ..200 => Segment::Smb,
        200..1000 => Segment::MidMarket,
        _ => Segment::Enterprise,
    }
}

fn company_from(id: i64, props: &BTreeMap<String, String>) -> CrmCompany {
    let get = |k: &str| props.get(k).cloned().unwrap_or_default();
    CrmCompany {
        id: id.to_string(),
        name: get("name"),
        segment: segment_of(props),
        owner: get("hubspot_owner_id"),
        csm: get("csm"),
        industry: get("industry"),
    }
}

fn from_hubspot(e: HubSpotEvent, index: usize) -> Result<Change, ApiError> {
    let field = |f: &str| format!("[{index}].{f}");
    let occurred_at = DateTime::from_timestamp_millis(e.occurred_at)
        .ok_or_else(|| ApiError::invalid(field("occurredAt"), "not a time in milliseconds"))?;
    let changed = |name: &str| {
        (e.property_name.as_deref() == Some(name))
            .then(|| e.property_value.clone().unwrap_or_default())
    };
    let (company, stage) = match e.subscription_type.as_str() {
        "company.creation" | "company.propertyChange" => {
            let lifecycle =
                changed("lifecyclestage").or_else(|| e.properties.get("lifecyclestage").cloned());
            (
                company_from(e.object_id, &e.properties),
                lifecycle
                    .and_then(|l| lifecycle_stage(&l))
                    .map(|s| (s, String::new())),
            )
        }
        "deal.creation" | "deal.propertyChange" => {
            let company_id = e.associated_company_id.ok_or_else(|| {
                ApiError::invalid(
                    field("associatedCompanyId"),
                    "a deal event needs its company",
                )
            })?;
            let stage = changed("dealstage")
                .or_else(|| e.properties.get("dealstage").cloned())
                .unwrap_or_default();
            let reason = e
                .properties
                .get("closed_lost_reason")
                .cloned()
                .unwrap_or_default();
            (
                company_from(company_id, &e.associated_company),
                deal_stage(&stage, &reason),
            )
        }
        other => {
            return Err(ApiError::invalid(
                field("subscriptionType"),
                format!("{other:?} is not a company or deal event"),
            ));
        }
    };
    Ok(Change {
        source: "hubspot".into(),
        event_id: e.event_id.to_string(),
        occurred_at,
        company,
        stage,
    })
}

fn from_generic(e: CrmEvent) -> Change {
    tracing::debug!(
        event_id = %e.event_id,
        event_type = %e.kind,
        deal = e.deal.as_ref().map(|d| d.id.as_str()),
        "crm webhook event"
    );
    let stage = match (&e.deal, &e.lifecycle_stage) {
        (Some(deal), _) => deal_stage(&deal.stage, &deal.lost_reason),
        (None, Some(l)) => lifecycle_stage(l).map(|s| (s, String::new())),
        (None, None) => None,
    };
    Change {
        source: e
            .source
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "crm".into()),
        event_id: e.event_id,
        occurred_at: e.occurred_at,
        company: e.company,
        stage,
    }
}

/// A delivery without its signature headers is 401, whether or not the
/// webhook is on: the document declares them required.
pub(crate) fn signed(headers: &HeaderMap, names: &[&str]) -> Result<(), ApiError> {
    match names.iter().find(|n| !headers.contains_key(**n)) {
        Some(name) => Err(ApiError::unauthenticated(format!(
            "missing the {name} header"
        ))),
        None => Ok(()),
    }
}

/// The key the gateway writes webhooks with, or 404 when a webhook is off.
fn writer(
    state: &AppState,
    secret: &secrecy::SecretString,
    name: &str,
) -> Result<(String, Caller), ApiError> {
    writer_for(state, secret, name, &format!("gateway.{name}_secret"))
}

/// The key the gateway writes what `name` (a webhook or a connector) sends
/// with, or 404 while `secret` (the setting `setting`) or the key is empty.
pub(crate) fn writer_for(
    state: &AppState,
    secret: &secrecy::SecretString,
    name: &str,
    setting: &str,
) -> Result<(String, Caller), ApiError> {
    let secret = secret.expose_secret();
    let key = state.settings.webhook_api_key.expose_secret();
    if secret.is_empty() || key.is_empty() {
        return Err(ApiError::not_found(format!(
            "the {name} webhook is not configured ({setting} and gateway.webhook_api_key)"
        )));
    }
    Ok((secret.to_owned(), Caller::bearer(key)?))
}

/// Applies the changes in order: the account upsert, then the transition.
async fn apply(
    state: &AppState,
    caller: &Caller,
    changes: Vec<Change>,
) -> Result<WebhookResult, ApiError> {
    let mut result = WebhookResult {
        events: changes.len(),
        account_ids: Vec::new(),
        transitions_applied: 0,
    };
    for c in changes {
        let key = |what: &str| format!("webhook:{}:{}:{what}", c.source, c.event_id);
        let account = acc::Account {
            name: c.company.name.clone(),
            segment: c.company.segment.unwrap_or(Segment::Smb).into(),
            owner: c.company.owner.clone(),
            csm: c.company.csm.clone(),
            industry: c.company.industry.clone(),
            ..acc::Account::default()
        };
        let upserted = state
            .services
            .accounts
            .clone()
            .upsert_account_by_external_id(caller.request(acc::UpsertAccountByExternalIdRequest {
                external_id: Some(acc::ExternalId {
                    source: c.source.clone(),
                    external_id: c.company.id.clone(),
                }),
                account: Some(account),
                idempotency_key: key("account"),
                source_updated_at: None,
            }))
            .await
            .map_err(|s| ApiError::from_status("accounts", &s))?
            .into_inner();
        let id = upserted
            .account
            .map(|a| a.id)
            .ok_or_else(|| ApiError::internal(&"UpsertAccountByExternalId returned no account"))?;
        if let Some((stage, reason)) = c.stage {
            let recorded = state
                .services
                .funnel
                .clone()
                .record_transition(caller.request(fun::RecordTransitionRequest {
                    account_id: id.clone(),
                    to_stage: stage.into(),
                    occurred_at: Some(timestamp(c.occurred_at)),
                    reason,
                    source: format!("crm:{}", c.source),
                    idempotency_key: key("transition"),
                }))
                .await
                .map_err(|s| ApiError::from_status("funnel", &s))?
                .into_inner();
            if recorded.applied {
                result.transitions_applied += 1;
            }
        }
        result.account_ids.push(id);
    }
    Ok(result)
}

pub(crate) fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        ApiError::invalid(
            if path == "." { "body".into() } else { path },
            e.inner().to_string(),
        )
    })
}

/// HubSpot webhook: a JSON array of company and deal events, signed with
/// `X-HubSpot-Signature-v3` and `X-HubSpot-Request-Timestamp`.
#[utoipa::path(post, path = "/webhooks/hubspot", tag = "webhooks", security(()),
    request_body = Vec<HubSpotEvent>,
    params(("X-HubSpot-Signature-v3" = String, Header, description = "base64 HMAC-SHA256 of method + URI + body + timestamp"),
           ("X-HubSpot-Request-Timestamp" = String, Header, description = "milliseconds since the epoch")),
    responses((status = 200, body = WebhookResult), (status = 401, body = ErrorBody),
              (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn hubspot(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<WebhookResult>, ApiError> {
    signed(
        &headers,
        &["x-hubspot-signature-v3", "x-hubspot-request-timestamp"],
    )?;
    let (secret, caller) = writer(&state, &state.settings.hubspot_secret, "hubspot")?;
    let path = uri
        .path_and_query()
        .map_or("/webhooks/hubspot", |p| p.as_str());
    let full_uri = if state.settings.public_url.is_empty() {
        format!(
            "http://{}{path}",
            header(&headers, "host").unwrap_or_default()
        )
    } else {
        format!("{}{path}", state.settings.public_url.trim_end_matches('/'))
    };
    let tolerance =
        i64::try_from(state.settings.webhook_tolerance_seconds).unwrap_or(i64::MAX / 1000);
    verify_hubspot(
        &secret,
        HubSpotRequest {
            signature: header(&headers, "x-hubspot-signature-v3"),
            timestamp_ms: header(&headers, "x-hubspot-request-timestamp"),
            method: method.as_str(),
            uri: &full_uri,
            body: &body,
        },
        Utc::now().timestamp_millis(),
        tolerance.saturating_mul(1000),
    )?;
    let events: Vec<HubSpotEvent> = parse(&body)?;
    let changes = events
        .into_iter()
        .enumerate()
        .map(|(i, e)| from_hubspot(e, i))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(apply(&state, &caller, changes).await?))
}

/// Generic CRM webhook: one event or an array, signed with
/// `X-Bowtie-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`.
#[utoipa::path(post, path = "/webhooks/crm", tag = "webhooks", security(()),
    request_body = CrmDelivery,
    params(("X-Bowtie-Signature" = String, Header, description = "t=<unix seconds>,v1=<hex HMAC-SHA256 of \"t.body\">")),
    responses((status = 200, body = WebhookResult), (status = 401, body = ErrorBody),
              (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn generic(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<WebhookResult>, ApiError> {
    signed(&headers, &["x-bowtie-signature"])?;
    let (secret, caller) = writer(&state, &state.settings.crm_secret, "crm")?;
    let tolerance = i64::try_from(state.settings.webhook_tolerance_seconds).unwrap_or(i64::MAX);
    verify_generic(
        &secret,
        header(&headers, "x-bowtie-signature"),
        &body,
        Utc::now().timestamp(),
        tolerance,
    )?;
    let events = match parse::<CrmDelivery>(&body)? {
        CrmDelivery::Many(events) => events,
        CrmDelivery::One(event) => vec![*event],
    };
    let changes = events.into_iter().map(from_generic).collect();
    Ok(Json(apply(&state, &caller, changes).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mac_matches_rfc_4231_test_case_2() {
        // RFC 4231, 4.3: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            hex::encode(mac(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_generic_signature_is_accepted_fresh_and_refused_stale_or_altered() {
        let body = br#"{"event_id":"e1"}"#;
        let sig = hex::encode(mac(b"s3cret", b"1000.{\"event_id\":\"e1\"}"));
        let header = format!("t=1000,v1={sig}");
        assert!(verify_generic("s3cret", Some(&header), body, 1200, 300).is_ok());
        // 301 s late with a 300 s tolerance.
        assert!(verify_generic("s3cret", Some(&header), body, 1301, 300).is_err());
        assert!(verify_generic("s3cret", Some(&header), b"{}", 1000, 300).is_err());
        assert!(verify_generic("other", Some(&header), body, 1000, 300).is_err());
        assert!(verify_generic("s3cret", None, body, 1000, 300).is_err());
    }

    #[test]
    fn a_hubspot_signature_covers_method_uri_body_and_timestamp() {
        let message = b"POSThttp://h/webhooks/hubspot[]1700000000000";
        let sig = base64::engine::general_purpose::STANDARD.encode(mac(b"k", message));
        let check = |uri: &str, now: i64| {
            let request = HubSpotRequest {
                signature: Some(&sig),
                timestamp_ms: Some("1700000000000"),
                method: "POST",
                uri,
                body: b"[]",
            };
            verify_hubspot("k", request, now, 300_000)
        };
        assert!(check("http://h/webhooks/hubspot", 1_700_000_100_000).is_ok());
        assert!(check("http://h/webhooks/other", 1_700_000_100_000).is_err());
        assert!(check("http://h/webhooks/hubspot", 1_700_000_300_001).is_err());
    }

    #[test]
    fn crm_stages_map_to_the_bowtie() {
        assert_eq!(lifecycle_stage("lead"), Some(Stage::Awareness));
        assert_eq!(
            lifecycle_stage("marketingqualifiedlead"),
            Some(Stage::Education)
        );
        assert_eq!(lifecycle_stage("opportunity"), Some(Stage::Selection));
        assert_eq!(lifecycle_stage("customer"), None);
        assert_eq!(
            deal_stage("appointmentscheduled", ""),
            Some((Stage::Selection, String::new()))
        );
        assert_eq!(deal_stage("closedwon", ""), None);
        assert_eq!(
            deal_stage("closedlost", "Went with a Competitor"),
            Some((Stage::Lost, "went_with_a_competitor".into()))
        );
        assert_eq!(reason_code("  "), "other");
    }

    #[test]
    fn the_segment_comes_from_the_property_or_the_head_count() {
        let props = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), v.to_owned())]);
        assert_eq!(
            segment_of(&props("bowtie_segment", "mid_market")),
            Some(Segment::MidMarket)
        );
        assert_eq!(
            segment_of(&props("numberofemployees", "199")),
            Some(Segment::Smb)
        );
        assert_eq!(
            segment_of(&props("numberofemployees", "200")),
            Some(Segment::MidMarket)
        );
        assert_eq!(
            segment_of(&props("numberofemployees", "1000")),
            Some(Segment::Enterprise)
        );
        assert_eq!(segment_of(&BTreeMap::new()), None);
    }
}
