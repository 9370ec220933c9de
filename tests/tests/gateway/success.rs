//! The success routes: a person's CTAs, moving one along at the version it
//! was read (a stale version is 409 ABORTED, an illegal change 409
//! FAILED_PRECONDITION, a bad body 400 naming the field), and an account's
//! timeline with the activities people log on it.

use bowtie_proto::success::success_service_client::SuccessServiceClient;
use bowtie_proto::success::{CreateCtaRequest, CtaType, Priority};
use bowtie_testkit::gateway::Stack;
use bowtie_testkit::{READ_KEY, TestDatabase, WRITE_KEY, backend_test};
use reqwest::StatusCode;
use serde_json::json;

backend_test!(
    a_csm_lists_their_ctas_and_moves_one_along_at_the_version_read,
    people_log_activities_on_an_account_timeline_through_the_gateway,
);

async fn a_csm_lists_their_ctas_and_moves_one_along_at_the_version_read(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let stack = Stack::start(db).await?;
    let acme = stack.account(WRITE_KEY, "Acme", "SMB").await?;
    let mut success = SuccessServiceClient::new(stack.success.with_key(WRITE_KEY));
    let cta = success
        .create_cta(CreateCtaRequest {
            account_id: acme.clone(),
            r#type: CtaType::Renewal as i32,
            reason: "renewal in 60 days".into(),
            priority: Priority::High as i32,
            owner: "ana@example.com".into(),
            due_time: Some(prost_types::Timestamp {
                seconds: 1_900_000_000,
                nanos: 0,
            }),
            idempotency_key: String::new(),
        })
        .await?
        .into_inner()
        .cta
        .ok_or_else(|| anyhow::anyhow!("no CTA"))?;

    let (status, page) = stack
        .get("/api/v1/success/ctas?owner=ana@example.com", READ_KEY)
        .await?;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["ctas"][0]["id"], cta.id.as_str());
    assert_eq!(page["ctas"][0]["type"], "RENEWAL");
    assert_eq!(page["ctas"][0]["status"], "OPEN");
    assert_eq!(page["ctas"][0]["due_at"], "2030-03-17T17:46:40Z");

    let path = format!("/api/v1/success/ctas/{}/status", cta.id);
    let start = json!({"status": "IN_PROGRESS", "expected_version": 1, "actor": "ana@example.com"});
    let (status, started) = stack.post(&path, WRITE_KEY, &start).await?;
    assert_eq!(status, StatusCode::OK, "{started}");
    assert_eq!(
        (started["status"].as_str(), started["version"].as_i64()),
        (Some("IN_PROGRESS"), Some(2))
    );
    let (status, stale) = stack.post(&path, WRITE_KEY, &start).await?;
    assert_eq!(status, StatusCode::CONFLICT, "{stale}");
    assert_eq!(stale["error"]["code"], "ABORTED");
    let close = json!({"status": "CLOSED", "outcome": "SAVED", "expected_version": 2});
    let (status, closed) = stack.post(&path, WRITE_KEY, &close).await?;
    assert_eq!(status, StatusCode::OK, "{closed}");
    assert_eq!(closed["outcome"], "SAVED");
    let (status, illegal) = stack
        .post(&path, WRITE_KEY, &json!({"status": "SNOOZED", "snooze_until": "2031-01-01T00:00:00Z", "snooze_reason": "later", "expected_version": 3}))
        .await?;
    assert_eq!(status, StatusCode::CONFLICT, "{illegal}");
    assert_eq!(illegal["error"]["code"], "FAILED_PRECONDITION");
    let (status, bad) = stack
        .post(
            &path,
            WRITE_KEY,
            &json!({"status": "DONE", "expected_version": 3}),
        )
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    let (status, missing) = stack
        .get(
            &format!("/api/v1/success/ctas/{}", uuid::Uuid::now_v7()),
            READ_KEY,
        )
        .await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
    let (status, denied) = stack.post(&path, READ_KEY, &close).await?;
    assert_eq!(status, StatusCode::FORBIDDEN, "{denied}");
    let (status, playbooks) = stack.get("/api/v1/success/playbooks", READ_KEY).await?;
    assert_eq!(status, StatusCode::OK, "{playbooks}");
    assert_eq!(playbooks["playbooks"], json!([]));
    Ok(())
}

async fn people_log_activities_on_an_account_timeline_through_the_gateway(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let stack = Stack::start(db).await?;
    let acme = stack.account(WRITE_KEY, "Acme", "SMB").await?;
    let path = format!("/api/v1/accounts/{acme}/timeline");
    let call = json!({"kind": "CALL", "author": "ana@example.com", "text": "Renewal call, all good",
                      "occurred_at": "2026-11-02T10:00:00Z", "participants": ["cfo@acme.com"]});
    let (status, logged) = stack.post(&path, WRITE_KEY, &call).await?;
    assert_eq!(status, StatusCode::CREATED, "{logged}");
    assert_eq!(logged["kind"], "CALL");
    let note = json!({"kind": "NOTE", "author": "bob@example.com", "text": "Champion is leaving"});
    let (status, _) = stack.post(&path, WRITE_KEY, &note).await?;
    assert_eq!(status, StatusCode::CREATED);
    let (status, page) = stack.get(&path, READ_KEY).await?;
    assert_eq!(status, StatusCode::OK, "{page}");
    let texts: Vec<&str> = page["activities"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["text"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(texts, ["Champion is leaving", "Renewal call, all good"]);
    let (status, calls) = stack.get(&format!("{path}?kind=CALL"), READ_KEY).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(calls["activities"].as_array().map(Vec::len), Some(1));
    let (status, bad) = stack
        .post(
            &path,
            WRITE_KEY,
            &json!({"kind": "ALERT", "author": "ana", "text": "x"}),
        )
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    let nobody = format!("/api/v1/accounts/{}/timeline", uuid::Uuid::now_v7());
    let (status, _) = stack.post(&nobody, WRITE_KEY, &note).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    Ok(())
}
