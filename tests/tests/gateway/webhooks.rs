//! CRM webhooks: a verified delivery lands as an account and a funnel
//! transition; a bad, missing or stale signature is 401 with nothing
//! written; a redelivered event changes nothing.

use base64::Engine as _;
use bowtie_testkit::gateway::Stack;
use bowtie_testkit::{READ_KEY, TestDatabase, WRITE_KEY, backend_test};
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Sha256;

backend_test!(
    a_signed_crm_event_creates_the_account_and_its_transition,
    a_bad_missing_or_stale_crm_signature_is_401_and_writes_nothing,
    the_same_crm_event_twice_records_one_transition,
    a_signed_hubspot_delivery_lands_and_a_bad_or_stale_one_is_401,
);

const CRM_SECRET: &str = "crm-webhook-secret";
const HUBSPOT_SECRET: &str = "hubspot-client-secret";

async fn start(db: &TestDatabase) -> anyhow::Result<Stack> {
    Stack::start_with(db, |s| {
        s.gateway.crm_secret = CRM_SECRET.to_owned().into();
        s.gateway.hubspot_secret = HUBSPOT_SECRET.to_owned().into();
        s.gateway.webhook_api_key = WRITE_KEY.to_owned().into();
    })
    .await
}

fn mac(secret: &str, message: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes())?;
    m.update(message);
    Ok(m.finalize().into_bytes().to_vec())
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Posts `body` to /webhooks/crm signed at `t` with `secret`.
async fn post_crm(
    stack: &Stack,
    body: &Value,
    t: i64,
    secret: &str,
) -> anyhow::Result<(StatusCode, Value)> {
    let raw = body.to_string();
    let sig = hex::encode(mac(secret, format!("{t}.{raw}").as_bytes())?);
    let response = stack
        .request(Method::POST, "/webhooks/crm")
        .header("content-type", "application/json")
        .header("X-Bowtie-Signature", format!("t={t},v1={sig}"))
        .body(raw)
        .send()
        .await?;
    Ok((
        response.status(),
        response.json().await.unwrap_or(Value::Null),
    ))
}

fn deal_event(event_id: &str) -> Value {
    json!({
        "event_id": event_id, "source": "pipedrive", "type": "deal.updated",
        "occurred_at": "2026-03-02T09:00:00Z",
        "company": {"id": "c-1001", "name": "Acme Logistics", "segment": "MID_MARKET", "owner": "ana@example.com"},
        "deal": {"id": "d-77", "stage": "presentationscheduled"}
    })
}

async fn accounts(stack: &Stack) -> anyhow::Result<Vec<Value>> {
    let (_, list) = stack.get("/api/v1/accounts", READ_KEY).await?;
    Ok(list["accounts"].as_array().cloned().unwrap_or_default())
}

async fn journey(stack: &Stack, id: &str) -> anyhow::Result<Value> {
    let (status, journey) = stack
        .get(&format!("/api/v1/accounts/{id}/journey"), READ_KEY)
        .await?;
    anyhow::ensure!(status == StatusCode::OK, "journey: {status} {journey}");
    Ok(journey)
}

async fn a_signed_crm_event_creates_the_account_and_its_transition(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let stack = start(db).await?;
    let (status, body) = post_crm(&stack, &deal_event("evt-1"), now(), CRM_SECRET).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["transitions_applied"], 1);
    let all = accounts(&stack).await?;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["name"], "Acme Logistics");
    assert_eq!(all[0]["segment"], "MID_MARKET");
    assert_eq!(all[0]["external_ids"][0]["source"], "pipedrive");
    assert_eq!(all[0]["external_ids"][0]["external_id"], "c-1001");
    let id = all[0]["id"].as_str().unwrap_or_default();
    let journey = journey(&stack, id).await?;
    assert_eq!(journey["current_stage"], "SELECTION");
    assert_eq!(journey["transitions"][0]["source"], "crm:pipedrive");

    // A later lifecycle change of the same company: same account, and LOST with its reason.
    let lost = json!({
        "event_id": "evt-2", "source": "pipedrive", "occurred_at": "2026-03-20T09:00:00Z",
        "company": {"id": "c-1001", "name": "Acme Logistics", "segment": "MID_MARKET"},
        "deal": {"id": "d-77", "stage": "closedlost", "lost_reason": "Competitor"}
    });
    let (status, body) = post_crm(&stack, &lost, now(), CRM_SECRET).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(accounts(&stack).await?.len(), 1);
    let journey = self::journey(&stack, id).await?;
    assert_eq!(journey["current_stage"], "LOST");
    assert_eq!(journey["transitions"][1]["reason"], "competitor");
    Ok(())
}

async fn a_bad_missing_or_stale_crm_signature_is_401_and_writes_nothing(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let stack = start(db).await?;
    let event = deal_event("evt-1");
    let (status, body) = post_crm(&stack, &event, now(), "not-the-secret").await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "UNAUTHENTICATED");
    // Ten minutes old with a five-minute tolerance.
    let (status, _) = post_crm(&stack, &event, now() - 600, CRM_SECRET).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let response = stack
        .request(Method::POST, "/webhooks/crm")
        .header("content-type", "application/json")
        .body(event.to_string())
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // A signature for another body does not carry over.
    let t = now();
    let sig = hex::encode(mac(CRM_SECRET, format!("{t}.{{}}").as_bytes())?);
    let response = stack
        .request(Method::POST, "/webhooks/crm")
        .header("X-Bowtie-Signature", format!("t={t},v1={sig}"))
        .body(event.to_string())
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(accounts(&stack).await?.is_empty());
    Ok(())
}

async fn the_same_crm_event_twice_records_one_transition(db: &TestDatabase) -> anyhow::Result<()> {
    let stack = start(db).await?;
    let event = deal_event("evt-42");
    let (status, first) = post_crm(&stack, &event, now(), CRM_SECRET).await?;
    assert_eq!(status, StatusCode::OK, "{first}");
    let (status, second) = post_crm(&stack, &event, now(), CRM_SECRET).await?;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(first["account_ids"], second["account_ids"]);
    assert_eq!(first["transitions_applied"], 1);
    let all = accounts(&stack).await?;
    assert_eq!(all.len(), 1);
    let journey = journey(&stack, all[0]["id"].as_str().unwrap_or_default()).await?;
    assert_eq!(
        journey["transitions"].as_array().map(Vec::len),
        Some(1),
        "{journey}"
    );
    Ok(())
}

async fn post_hubspot(
    stack: &Stack,
    body: &Value,
    t_ms: i64,
    secret: &str,
) -> anyhow::Result<(StatusCode, Value)> {
    let raw = body.to_string();
    let uri = format!("{}/webhooks/hubspot", stack.url());
    let message = format!("POST{uri}{raw}{t_ms}");
    let sig = base64::engine::general_purpose::STANDARD.encode(mac(secret, message.as_bytes())?);
    let response = stack
        .request(Method::POST, "/webhooks/hubspot")
        .header("content-type", "application/json")
        .header("X-HubSpot-Signature-v3", sig)
        .header("X-HubSpot-Request-Timestamp", t_ms.to_string())
        .body(raw)
        .send()
        .await?;
    Ok((
        response.status(),
        response.json().await.unwrap_or(Value::Null),
    ))
}

async fn a_signed_hubspot_delivery_lands_and_a_bad_or_stale_one_is_401(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let stack = start(db).await?;
    let delivery = json!([
        {"eventId": 901, "subscriptionType": "company.propertyChange", "objectId": 5001,
         "occurredAt": 1_772_000_000_000_i64, "propertyName": "lifecyclestage",
         "propertyValue": "marketingqualifiedlead",
         "properties": {"name": "Globex", "numberofemployees": "4200", "industry": "Energy"}},
        {"eventId": 902, "subscriptionType": "deal.creation", "objectId": 7001,
         "occurredAt": 1_772_100_000_000_i64, "properties": {"dealstage": "appointmentscheduled"},
         "associatedCompanyId": 5001,
         "associatedCompany": {"name": "Globex", "numberofemployees": "4200", "industry": "Energy"}}
    ]);
    let now_ms = now() * 1000;
    let (status, body) = post_hubspot(&stack, &delivery, now_ms, "wrong").await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _) = post_hubspot(&stack, &delivery, now_ms - 301_000, HUBSPOT_SECRET).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(accounts(&stack).await?.is_empty());

    let (status, body) = post_hubspot(&stack, &delivery, now_ms, HUBSPOT_SECRET).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["events"], 2);
    assert_eq!(body["transitions_applied"], 2);
    let all = accounts(&stack).await?;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["segment"], "ENTERPRISE");
    assert_eq!(all[0]["external_ids"][0]["source"], "hubspot");
    let journey = journey(&stack, all[0]["id"].as_str().unwrap_or_default()).await?;
    let stages: Vec<&str> = journey["transitions"]
        .as_array()
        .map(|t| t.iter().filter_map(|x| x["stage"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(stages, vec!["EDUCATION", "SELECTION"]);
    Ok(())
}
