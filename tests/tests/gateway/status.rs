//! Every gRPC status the services answer arrives as its documented HTTP
//! status with the JSON error body.

use bowtie_testkit::gateway::Stack;
use bowtie_testkit::{ADMIN_KEY, READ_KEY, TestDatabase, WRITE_KEY, backend_test};
use reqwest::{Method, StatusCode};
use serde_json::json;

backend_test!(
    invalid_argument_is_400_with_the_field_violations,
    a_malformed_query_is_400_naming_the_parameter,
    not_found_is_404,
    already_exists_is_409_with_its_code,
    a_stale_version_is_409_aborted,
    failed_precondition_is_409_with_its_code,
    a_service_that_is_down_is_503_and_readyz_says_so,
    a_service_slower_than_the_deadline_is_504,
    a_stopping_gateway_turns_unready_first_and_keeps_serving_while_it_drains,
);

async fn invalid_argument_is_400_with_the_field_violations(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let stack = Stack::start(db).await?;
    let (status, body) = stack
        .post(
            "/api/v1/accounts",
            WRITE_KEY,
            &json!({"name": "  ", "segment": "SMB"}),
        )
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "INVALID_ARGUMENT");
    let fields: Vec<&str> = body["error"]["field_violations"]
        .as_array()
        .map(|v| v.iter().filter_map(|f| f["field"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(fields, vec!["account.name"], "{body}");
    Ok(())
}

async fn a_malformed_query_is_400_naming_the_parameter(db: &TestDatabase) -> anyhow::Result<()> {
    let stack = Stack::start(db).await?;
    let (status, body) = stack
        .get(
            "/api/v1/funnel?start=yesterday&end=2026-02-01T00:00:00Z",
            READ_KEY,
        )
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field_violations"][0]["field"], "start");
    let (status, body) = stack
        .post(
            "/api/v1/accounts",
            WRITE_KEY,
            &json!({"name": "Acme", "segment": "HUGE"}),
        )
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field_violations"][0]["field"], "segment");
    Ok(())
}

async fn not_found_is_404(db: &TestDatabase) -> anyhow::Result<()> {
    let stack = Stack::start(db).await?;
    let (status, body) = stack
        .get(
            "/api/v1/accounts/0191d6a4-0000-7000-8000-000000000000",
            READ_KEY,
        )
        .await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "NOT_FOUND");
    Ok(())
}

async fn already_exists_is_409_with_its_code(db: &TestDatabase) -> anyhow::Result<()> {
    let stack = Stack::start(db).await?;
    let account = json!({"name": "Acme", "segment": "SMB",
        "external_ids": [{"source": "hubspot", "external_id": "1001"}]});
    let (status, _) = stack.post("/api/v1/accounts", WRITE_KEY, &account).await?;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = stack.post("/api/v1/accounts", WRITE_KEY, &account).await?;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "ALREADY_EXISTS");
    Ok(())
}

async fn a_stale_version_is_409_aborted(db: &TestDatabase) -> anyhow::Result<()> {
    let stack = Stack::start(db).await?;
    let id = stack.account(WRITE_KEY, "Acme", "SMB").await?;
    let path = format!("/api/v1/accounts/{id}");
    let (status, body) = stack
        .call(
            Method::PATCH,
            &path,
            Some(WRITE_KEY),
            Some(&json!({"owner": "bo@example.com", "expected_version": 1})),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["owner"], "bo@example.com");
    assert_eq!(body["version"], 2);
    let (status, body) = stack
        .call(
            Method::PATCH,
            &path,
            Some(WRITE_KEY),
            Some(&json!({"owner": "cy@example.com", "expected_version": 1})),
        )
        .await?;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "ABORTED");
    let (_, after) = stack.get(&path, READ_KEY).await?;
    assert_eq!(after["owner"], "bo@example.com");
    Ok(())
}

async fn failed_precondition_is_409_with_its_code(db: &TestDatabase) -> anyhow::Result<()> {
    let stack = Stack::start(db).await?;
    let (status, body) = stack
        .get("/api/v1/revenue/unit-economics?month=2026-01", ADMIN_KEY)
        .await?;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "FAILED_PRECONDITION");
    Ok(())
}

async fn a_service_that_is_down_is_503_and_readyz_says_so(db: &TestDatabase) -> anyhow::Result<()> {
    let mut stack = Stack::start(db).await?;
    let (status, body) = stack.call(Method::GET, "/readyz", None, None).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["services"]["accounts"], "SERVING");
    stack.stop_accounts().await?;
    let (status, body) = stack.get("/api/v1/accounts", READ_KEY).await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "UNAVAILABLE");
    let (status, body) = stack.call(Method::GET, "/readyz", None, None).await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["services"]["accounts"], "UNREACHABLE");
    assert_eq!(body["services"]["revenue"], "SERVING");
    let (status, _) = stack.call(Method::GET, "/healthz", None, None).await?;
    assert_eq!(status, StatusCode::OK);
    Ok(())
}

async fn a_service_slower_than_the_deadline_is_504(db: &TestDatabase) -> anyhow::Result<()> {
    // An accounts address that takes the connection and never answers: the
    // call outlives the gateway's deadline whatever the machine's speed.
    let silent = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let silent_uri = format!("http://{}", silent.local_addr()?);
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            sockets.push(socket);
        }
    });
    let stack = Stack::start_with(db, |s| {
        s.peers.accounts = silent_uri;
        s.peers.request_timeout_ms = 300;
    })
    .await?;
    let (status, body) = stack.get("/api/v1/accounts", READ_KEY).await?;
    held.abort();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(body["error"]["code"], "DEADLINE_EXCEEDED");
    Ok(())
}

async fn a_stopping_gateway_turns_unready_first_and_keeps_serving_while_it_drains(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let mut stack = Stack::start_with(db, |s| s.server.drain_seconds = 3).await?;
    let (status, _) = stack.call(Method::GET, "/readyz", None, None).await?;
    assert_eq!(status, StatusCode::OK);
    stack.begin_shutdown();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let (status, body) = stack.call(Method::GET, "/readyz", None, None).await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "draining");
    let (status, body) = stack.get("/api/v1/accounts", READ_KEY).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    Ok(())
}
