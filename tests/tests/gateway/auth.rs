//! The gateway passes the caller's key on and holds no privileges itself:
//! the services decide, and their answer reaches the caller.

use bowtie_runtime::config::RateBudget;
use bowtie_testkit::gateway::Stack;
use bowtie_testkit::{ADMIN_KEY, EXPIRED_KEY, READ_KEY, TestDatabase, WRITE_KEY, backend_test};
use reqwest::{Method, StatusCode};
use serde_json::json;

backend_test!(
    a_call_without_a_key_is_401,
    an_unknown_key_is_401,
    an_expired_key_is_401_naming_it_and_writes_nothing,
    a_key_over_its_rate_limit_is_429_with_retry_after_while_other_keys_pass,
    a_read_key_cannot_write_and_nothing_is_written,
    a_write_key_writes_and_a_read_key_reads,
);

async fn a_call_without_a_key_is_401(db: &TestDatabase) -> anyhow::Result<()> {
    let stack = Stack::start(db).await?;
    for path in [
        "/api/v1/accounts",
        "/api/v1/revenue/mrr?start_month=2026-01&end_month=2026-03",
    ] {
        let (status, body) = stack.call(Method::GET, path, None, None).await?;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
        assert_eq!(body["error"]["code"], "UNAUTHENTICATED");
    }
    Ok(())
}

async fn an_unknown_key_is_401(db: &TestDatabase) -> anyhow::Result<()> {
    let stack = Stack::start(db).await?;
    let (status, body) = stack.get("/api/v1/accounts", "bt_not_a_key").await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    Ok(())
}

async fn an_expired_key_is_401_naming_it_and_writes_nothing(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let stack = Stack::start(db).await?;
    let (status, body) = stack
        .post(
            "/api/v1/accounts",
            EXPIRED_KEY,
            &json!({"name": "Acme", "segment": "SMB"}),
        )
        .await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "UNAUTHENTICATED");
    assert_eq!(
        body["error"]["message"],
        format!(
            "API key \"test-expired\" expired at {}",
            bowtie_testkit::EXPIRED_AT
        )
    );
    let (_, body) = stack.get("/api/v1/accounts", READ_KEY).await?;
    assert_eq!(body["accounts"].as_array().map(Vec::len), Some(0), "{body}");
    Ok(())
}

async fn a_key_over_its_rate_limit_is_429_with_retry_after_while_other_keys_pass(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let mut settings = db.server_settings()?;
    // Write keys: two calls at once, then one every 100 s.
    settings.auth.rate_limits.write = RateBudget {
        per_second: 0.01,
        burst: 2,
    };
    let stack = Stack::start_from(settings, |_| {}).await?;
    for name in ["Acme", "Globex"] {
        stack.account(WRITE_KEY, name, "SMB").await?;
    }
    let refused = stack
        .request(Method::POST, "/api/v1/accounts")
        .bearer_auth(WRITE_KEY)
        .json(&json!({"name": "Initech", "segment": "SMB"}))
        .send()
        .await?;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: Option<u64> = refused
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    assert!(
        retry_after.is_some_and(|s| (1..=100).contains(&s)),
        "{retry_after:?}"
    );
    let body: serde_json::Value = refused.json().await?;
    assert_eq!(body["error"]["code"], "RESOURCE_EXHAUSTED");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("API key \"test-writer\" (scope write)")),
        "{body}"
    );
    // The reader and the admin have budgets of their own (unlimited here).
    let (status, body) = stack.get("/api/v1/accounts", READ_KEY).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accounts"].as_array().map(Vec::len), Some(2), "{body}");
    stack.account(ADMIN_KEY, "Initech", "SMB").await?;
    Ok(())
}

async fn a_read_key_cannot_write_and_nothing_is_written(db: &TestDatabase) -> anyhow::Result<()> {
    let stack = Stack::start(db).await?;
    let (status, body) = stack
        .post(
            "/api/v1/accounts",
            READ_KEY,
            &json!({"name": "Acme", "segment": "SMB"}),
        )
        .await?;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "PERMISSION_DENIED");
    let (status, body) = stack.get("/api/v1/accounts", READ_KEY).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["accounts"].as_array().map(Vec::len), Some(0), "{body}");
    Ok(())
}

async fn a_write_key_writes_and_a_read_key_reads(db: &TestDatabase) -> anyhow::Result<()> {
    let stack = Stack::start(db).await?;
    let id = stack
        .account(WRITE_KEY, "Acme Logistics", "MID_MARKET")
        .await?;
    let (status, body) = stack
        .get(&format!("/api/v1/accounts/{id}"), READ_KEY)
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["name"], "Acme Logistics");
    assert_eq!(body["segment"], "MID_MARKET");
    assert_eq!(body["coverage_model"], "POOLED_CSM");
    Ok(())
}
