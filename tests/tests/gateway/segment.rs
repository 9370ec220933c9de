//! Segment-spec tracking: a batch of identify / group / track calls from a
//! recorded user visit lands as an account, a contact and signals; a
//! malformed event is reported and the rest land; a replayed batch adds
//! nothing; an oversized batch is 413; a wrong write key is 401.

use base64::Engine as _;
use bowtie_proto::accounts::ListContactsRequest;
use bowtie_proto::accounts::accounts_service_client::AccountsServiceClient;
use bowtie_testkit::gateway::Stack;
use bowtie_testkit::{READ_KEY, TestDatabase, WRITE_KEY, backend_test};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

backend_test!(
    a_recorded_visit_lands_as_account_contact_and_signals_and_a_replay_adds_nothing,
    an_oversized_batch_is_413_and_a_wrong_write_key_is_401,
    group_traits_set_declared_attributes_and_a_misfit_is_reported_while_the_rest_land,
    a_second_gateway_attributes_a_track_to_the_group_another_one_recorded,
);

const WRITE_KEY_SEGMENT: &str = "wk_test_bowtie_segment";

async fn start(db: &TestDatabase) -> anyhow::Result<Stack> {
    Stack::start_with(db, |s| {
        s.connectors.segment.write_key = WRITE_KEY_SEGMENT.to_owned().into();
        s.connectors.segment.write_key_env = String::new();
        s.gateway.webhook_api_key = WRITE_KEY.to_owned().into();
    })
    .await
}

fn basic(key: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
    )
}

async fn post(
    stack: &Stack,
    path: &str,
    body: String,
    key: Option<&str>,
) -> anyhow::Result<(StatusCode, Value)> {
    let mut request = stack
        .request(Method::POST, path)
        .header("content-type", "application/json");
    if let Some(key) = key {
        request = request.header("authorization", basic(key));
    }
    let response = request.body(body).send().await?;
    Ok((
        response.status(),
        response.json().await.unwrap_or(Value::Null),
    ))
}

/// A visit as analytics.js records it: the user is identified, joins its
/// company's group, signs in, creates a report, clicks a button (not
/// mapped), views a page; one event is malformed.
fn visit() -> Value {
    let context =
        json!({"library": {"name": "analytics.js", "version": "5.2.0"}, "ip": "203.0.113.7"});
    json!({
        "batch": [
            {"type": "group", "messageId": "ajs-1", "userId": "u-42", "groupId": "org_acme",
             "traits": {"name": "Acme Analytics", "plan": "pro", "employees": 350, "industry": "Software"},
             "timestamp": "2026-03-02T09:00:00.000Z", "context": context},
            {"type": "identify", "messageId": "ajs-2", "userId": "u-42",
             "traits": {"email": "ana@acme.example", "name": "Ana Lima", "title": "Head of Data"},
             "timestamp": "2026-03-02T09:00:01.000Z"},
            {"type": "track", "messageId": "ajs-3", "userId": "u-42", "event": "Signed In",
             "context": {"groupId": "org_acme"}, "timestamp": "2026-03-02T09:00:02.000Z"},
            {"type": "track", "messageId": "ajs-4", "userId": "u-42", "event": "Report Created",
             "properties": {"report": "Churn by plan"}, "timestamp": "2026-03-02T09:05:00.000Z"},
            {"type": "track", "messageId": "ajs-5", "userId": "u-42", "event": "Button Clicked",
             "timestamp": "2026-03-02T09:06:00.000Z"},
            {"type": "page", "messageId": "ajs-6", "userId": "u-42", "name": "Reports",
             "timestamp": "2026-03-02T09:06:30.000Z"},
            {"type": "track", "messageId": "ajs-7", "userId": "u-42", "event": "Signed In",
             "timestamp": "not a time"},
        ],
        "sentAt": "2026-03-02T09:07:00.000Z"
    })
}

async fn a_recorded_visit_lands_as_account_contact_and_signals_and_a_replay_adds_nothing(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let stack = start(db).await?;
    let (status, first) = post(
        &stack,
        "/v1/batch",
        visit().to_string(),
        Some(WRITE_KEY_SEGMENT),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["success"], true);
    assert_eq!(first["received"], 7);
    assert_eq!(first["accounts"], 1);
    assert_eq!(first["contacts"], 1);
    assert_eq!(first["signals"], 2, "{first}");
    assert_eq!(first["ignored"], 2);
    assert_eq!(
        first["rejected"].as_array().map(Vec::len),
        Some(1),
        "{first}"
    );
    assert_eq!(first["rejected"][0]["index"], 6);
    assert_eq!(first["rejected"][0]["message_id"], "ajs-7");

    let (_, list) = stack.get("/api/v1/accounts", READ_KEY).await?;
    let accounts = list["accounts"].as_array().cloned().unwrap_or_default();
    assert_eq!(accounts.len(), 1, "{list}");
    assert_eq!(accounts[0]["name"], "Acme Analytics");
    assert_eq!(accounts[0]["segment"], "MID_MARKET");
    assert_eq!(accounts[0]["industry"], "Software");
    assert_eq!(accounts[0]["external_ids"][0]["source"], "segment");
    assert_eq!(accounts[0]["external_ids"][0]["external_id"], "org_acme");
    let id = accounts[0]["id"].as_str().unwrap_or_default().to_owned();

    let contacts = || async {
        let server = stack
            .accounts
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no accounts server"))?;
        let mut client = AccountsServiceClient::new(server.with_key(READ_KEY));
        let list = client
            .list_contacts(ListContactsRequest {
                account_id: id.clone(),
                page: None,
            })
            .await?
            .into_inner();
        anyhow::Ok(list.contacts)
    };
    let found = contacts().await?;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].name, "Ana Lima");
    assert_eq!(found[0].email, "ana@acme.example");
    assert_eq!(found[0].title, "Head of Data");

    // The same batch again (a retry): everything is known, nothing is added.
    let (status, replay) = post(
        &stack,
        "/v1/batch",
        visit().to_string(),
        Some(WRITE_KEY_SEGMENT),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{replay}");
    assert_eq!(replay["signals"], 0, "{replay}");
    assert_eq!(replay["duplicates"], 2);
    let (_, list) = stack.get("/api/v1/accounts", READ_KEY).await?;
    assert_eq!(list["accounts"].as_array().map(Vec::len), Some(1));
    assert_eq!(list["accounts"][0]["name"], "Acme Analytics");
    assert_eq!(contacts().await?.len(), 1);

    // A single track call with writeKey in the body lands the same way.
    let track = json!({"writeKey": WRITE_KEY_SEGMENT, "messageId": "ajs-8", "userId": "u-42",
                       "event": "Ticket Opened", "context": {"groupId": "org_acme"},
                       "timestamp": "2026-03-02T10:00:00Z"});
    let (status, one) = post(&stack, "/v1/track", track.to_string(), None).await?;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(one["signals"], 1);

    // One event posted to /v1/batch as it is (a webhook destination) is a batch of one.
    let forwarded = json!({"type": "track", "messageId": "ajs-9", "userId": "u-42",
                           "event": "Signed In", "timestamp": "2026-03-02T11:00:00Z"});
    let (status, one) = post(
        &stack,
        "/v1/batch",
        forwarded.to_string(),
        Some(WRITE_KEY_SEGMENT),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(one["signals"], 1, "{one}");
    Ok(())
}

async fn an_oversized_batch_is_413_and_a_wrong_write_key_is_401(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let stack = start(db).await?;
    let (status, body) = post(&stack, "/v1/batch", visit().to_string(), Some("wk_wrong")).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _) = post(&stack, "/v1/batch", visit().to_string(), None).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // 2,501 events, and one of more than 500 KB.
    let many: Vec<Value> = (0..2501)
        .map(|i| json!({"type": "track", "messageId": format!("m-{i}"), "userId": "u", "event": "Signed In"}))
        .collect();
    let (status, body) = post(
        &stack,
        "/v1/batch",
        json!({"batch": many}).to_string(),
        Some(WRITE_KEY_SEGMENT),
    )
    .await?;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    let padding = "x".repeat(600 * 1024);
    let big = json!({"batch": [{"type": "track", "userId": "u", "event": "Signed In", "properties": {"p": padding}}]});
    let (status, _) = post(
        &stack,
        "/v1/batch",
        big.to_string(),
        Some(WRITE_KEY_SEGMENT),
    )
    .await?;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // A single call of more than 32 KB.
    let call =
        json!({"userId": "u", "event": "Signed In", "properties": {"p": "x".repeat(33 * 1024)}});
    let (status, _) = post(
        &stack,
        "/v1/track",
        call.to_string(),
        Some(WRITE_KEY_SEGMENT),
    )
    .await?;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    let (_, list) = stack.get("/api/v1/accounts", READ_KEY).await?;
    assert_eq!(list["accounts"].as_array().map(Vec::len), Some(0));
    Ok(())
}

async fn group_traits_set_declared_attributes_and_a_misfit_is_reported_while_the_rest_land(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    use bowtie_proto::accounts::{AttributeDeclaration, AttributeType, DeclareAttributeRequest};
    let stack = Stack::start_with(db, |s| {
        s.connectors.segment.write_key = WRITE_KEY_SEGMENT.to_owned().into();
        s.connectors.segment.write_key_env = String::new();
        s.gateway.webhook_api_key = WRITE_KEY.to_owned().into();
        s.connectors.segment.attributes = [("plan", "plan_family"), ("trial", "on_trial")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
    })
    .await?;
    let accounts = stack
        .accounts
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("the accounts server runs"))?;
    let mut admin = accounts.accounts_admin();
    for (name, kind, allowed) in [
        ("plan_family", AttributeType::Enum, vec!["core", "pro"]),
        ("on_trial", AttributeType::Bool, Vec::new()),
    ] {
        admin
            .declare_attribute(DeclareAttributeRequest {
                declaration: Some(AttributeDeclaration {
                    name: name.to_owned(),
                    r#type: kind as i32,
                    allowed_values: allowed.into_iter().map(str::to_owned).collect(),
                    ..AttributeDeclaration::default()
                }),
                expected_version: None,
            })
            .await?;
    }
    let batch = json!({"batch": [
        {"type": "group", "messageId": "g-1", "userId": "u-1", "groupId": "org_fit",
         "traits": {"name": "Fits Inc", "plan": "pro", "trial": "false"}},
        {"type": "group", "messageId": "g-2", "userId": "u-2", "groupId": "org_misfit",
         "traits": {"name": "Misfit Inc", "plan": "enterprise", "trial": true}},
        {"type": "track", "messageId": "t-1", "userId": "u-1", "event": "Signed In",
         "timestamp": "2026-03-02T09:00:00Z"},
    ]});
    let (status, answer) = post(
        &stack,
        "/v1/batch",
        batch.to_string(),
        Some(WRITE_KEY_SEGMENT),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["accounts"], 1, "{answer}");
    assert_eq!(answer["signals"], 1, "{answer}");
    assert_eq!(answer["rejected"].as_array().map(Vec::len), Some(1));
    assert_eq!(answer["rejected"][0]["index"], 1);
    assert_eq!(answer["rejected"][0]["message_id"], "g-2");
    let error = answer["rejected"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("traits.plan"), "{error}");

    // The misfit group wrote nothing: only the group that fits is an account.
    let (_, list) = stack.get("/api/v1/accounts", READ_KEY).await?;
    let found = list["accounts"].as_array().cloned().unwrap_or_default();
    assert_eq!(found.len(), 1, "{list}");
    assert_eq!(found[0]["name"], "Fits Inc");
    assert_eq!(
        found[0]["attributes"],
        json!({"plan_family": "pro", "on_trial": false})
    );
    Ok(())
}

async fn a_second_gateway_attributes_a_track_to_the_group_another_one_recorded(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    use bowtie_proto::accounts::GetSourceUsersRequest;
    let stack = start(db).await?;
    let group = |id: &str, group: &str, at: &str| {
        json!({"type": "group", "messageId": id, "userId": "u-7", "groupId": group,
               "traits": {"name": group}, "timestamp": at})
    };
    let batch = json!({"batch": [
        group("g-1", "org_one", "2026-03-02T09:00:00Z"),
        group("g-2", "org_two", "2026-03-02T08:00:00Z"),
    ]});
    let (status, answer) = post(
        &stack,
        "/v1/batch",
        batch.to_string(),
        Some(WRITE_KEY_SEGMENT),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["accounts"], 2, "{answer}");

    // A second gateway in front of the same services (a replica, or this
    // one restarted) knows nothing but what the accounts service keeps.
    let second =
        bowtie_gateway::build(&stack.settings, bowtie_runtime::shutdown::Shutdown::new()).await?;
    let url = format!("http://{}", second.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(second.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let track = json!({"type": "track", "messageId": "t-7", "userId": "u-7",
                       "event": "Signed In", "timestamp": "2026-03-02T09:30:00Z"});
    let response = reqwest::Client::new()
        .post(format!("{url}/v1/batch"))
        .header("authorization", basic(WRITE_KEY_SEGMENT))
        .header("content-type", "application/json")
        .body(json!({"batch": [track]}).to_string())
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = response.json().await?;
    assert_eq!(answer["signals"], 1, "{answer}");
    assert_eq!(answer["rejected"], json!([]), "{answer}");
    let _ = stop.send(());
    let _ = task.await;

    // The user's last group is org_one: the later call, not the later arrival.
    let (_, list) = stack.get("/api/v1/accounts", READ_KEY).await?;
    let one = list["accounts"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["name"] == "org_one"))
        .and_then(|a| a["id"].as_str())
        .unwrap_or_default()
        .to_owned();
    let server = stack
        .accounts
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no accounts server"))?;
    let links = AccountsServiceClient::new(server.with_key(READ_KEY))
        .get_source_users(GetSourceUsersRequest {
            source: "segment".to_owned(),
            user_ids: vec!["u-7".to_owned(), "u-unknown".to_owned()],
        })
        .await?
        .into_inner()
        .links;
    assert_eq!(links.len(), 1);
    assert_eq!(links[0].account_id, one);
    Ok(())
}
