//! The success routes: a person's CTAs, moving one along at the version it
//! was read (a stale version is 409 ABORTED, an illegal change 409
//! FAILED_PRECONDITION, a bad body 400 naming the field), and an account's
//! timeline with the activities people log on it; each CSM's book of
//! business and the touches report, a bad parameter 400 naming it.

use bowtie_proto::scoring::Tier;
use bowtie_proto::success::success_service_client::SuccessServiceClient;
use bowtie_proto::success::{
    CreateCtaRequest, CreatePlaybookRequest, CtaType, Priority, Trigger, TriggerKind,
};
use bowtie_testkit::gateway::Stack;
use bowtie_testkit::success::vip_playbook;
use bowtie_testkit::{ADMIN_KEY, READ_KEY, TestDatabase, WRITE_KEY, backend_test, within};
use reqwest::StatusCode;
use serde_json::json;

backend_test!(
    a_csm_lists_their_ctas_and_moves_one_along_at_the_version_read,
    people_log_activities_on_an_account_timeline_through_the_gateway,
    the_book_of_business_and_the_touches_report_are_read_over_rest,
    a_segment_trigger_reads_back_by_its_name_over_rest,
);

async fn a_segment_trigger_reads_back_by_its_name_over_rest(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let stack = Stack::start(db).await?;
    let mut success = SuccessServiceClient::new(stack.success.with_key(ADMIN_KEY));
    let trigger = Trigger {
        kind: TriggerKind::TierEntered as i32,
        tiers: vec![Tier::Diamond as i32],
        ..Trigger::default()
    };
    success
        .create_playbook(CreatePlaybookRequest {
            spec: Some(vip_playbook("VIP care", trigger)),
            idempotency_key: String::new(),
        })
        .await?;
    let (status, body) = stack.get("/api/v1/success/playbooks", READ_KEY).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["playbooks"][0]["trigger"], "TIER_ENTERED", "{body}");
    Ok(())
}

/// The field the first violation of a 400 names.
fn violated(body: &serde_json::Value) -> Option<&str> {
    body["error"]["field_violations"][0]["field"].as_str()
}

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

async fn the_book_of_business_and_the_touches_report_are_read_over_rest(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let stack = Stack::start(db).await?;
    let account = json!({"name": "Acme", "segment": "SMB", "owner": "olga@example.com",
                         "csm": "cara@example.com"});
    let (status, acme) = stack.post("/api/v1/accounts", WRITE_KEY, &account).await?;
    assert_eq!(status, StatusCode::CREATED, "{acme}");
    let acme = acme["id"].as_str().unwrap_or_default().to_owned();
    let mut success = SuccessServiceClient::new(stack.success.with_key(WRITE_KEY));
    success
        .create_cta(CreateCtaRequest {
            account_id: acme.clone(),
            r#type: CtaType::Risk as i32,
            reason: "champion quiet for a month".into(),
            priority: Priority::High as i32,
            owner: "cara@example.com".into(),
            due_time: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            idempotency_key: String::new(),
        })
        .await?;
    let path = format!("/api/v1/accounts/{acme}/timeline");
    for (kind, at) in [
        ("CALL", "2026-11-02T10:00:00Z"),
        ("EMAIL", "2026-11-04T10:00:00Z"),
    ] {
        let call = json!({"kind": kind, "author": "ana@example.com", "text": "Touch",
                          "occurred_at": at});
        let (status, logged) = stack.post(&path, WRITE_KEY, &call).await?;
        assert_eq!(status, StatusCode::CREATED, "{logged}");
    }

    // Success knows Cara's account once the accounts feed told it.
    let book = "/api/v1/success/book?start=2026-01-01T00:00:00Z&end=2026-12-01T00:00:00Z";
    let books = within(20, "Cara's book", async {
        loop {
            let (status, books) = stack.get(book, READ_KEY).await?;
            anyhow::ensure!(status == StatusCode::OK, "{books}");
            if books["books"][0]["person"] == "cara@example.com" {
                return anyhow::Ok(books);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await??;
    let cara = &books["books"][0];
    assert_eq!(books["currency"], "USD", "{books}");
    assert_eq!(cara["accounts"], 1, "{books}");
    assert_eq!(
        (&cara["open_ctas"], &cara["overdue_ctas"]),
        (&json!(1), &json!(1))
    );
    assert_eq!(cara["arr"]["minor_units"], 0, "{books}");
    assert_eq!(
        cara["grr"],
        serde_json::Value::Null,
        "no account paying at the start"
    );
    let (status, olga) = stack
        .get(
            &format!("{book}&by=OWNER&person=olga@example.com"),
            READ_KEY,
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{olga}");
    assert_eq!(olga["books"].as_array().map(Vec::len), Some(1), "{olga}");
    assert_eq!(olga["books"][0]["person"], "olga@example.com");

    let touches = "/api/v1/success/touches?start=2026-11-01T00:00:00Z&end=2026-12-01T00:00:00Z";
    let (status, report) = stack.get(touches, READ_KEY).await?;
    assert_eq!(status, StatusCode::OK, "{report}");
    // Monday 2 November 2026 starts ISO week 45.
    assert_eq!(
        report["touches"],
        json!([{"author": "ana@example.com", "week": "2026-W45", "owner": "", "notes": 0,
                "calls": 1, "meetings": 0, "emails": 1, "total": 2, "accounts": 1}])
    );
    let (status, by_owner) = stack
        .get(
            &format!("{touches}&owner=olga@example.com&by_owner=true"),
            READ_KEY,
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{by_owner}");
    assert_eq!(
        by_owner["touches"][0]["owner"], "olga@example.com",
        "{by_owner}"
    );

    for (path, field) in [
        (format!("{book}&by=TEAM"), "by"),
        (format!("{touches}&by_owner=maybe"), "by_owner"),
        (
            "/api/v1/success/touches?start=2025-01-01T00:00:00Z&end=2026-12-01T00:00:00Z"
                .to_owned(),
            "period.end",
        ),
    ] {
        let (status, bad) = stack.get(&path, READ_KEY).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {bad}");
        assert_eq!(violated(&bad), Some(field), "{path}: {bad}");
    }
    let (status, missing) = stack
        .get("/api/v1/success/book?end=2026-12-01T00:00:00Z", READ_KEY)
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{missing}");
    assert_eq!(violated(&missing), Some("start"), "{missing}");
    Ok(())
}
