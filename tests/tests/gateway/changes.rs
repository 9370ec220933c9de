//! The account page's "who changed what": every service's audit entries
//! for the account, merged newest first, for an admin key only.

use bowtie_testkit::gateway::Stack;
use bowtie_testkit::{ADMIN_KEY, READ_KEY, TestDatabase, WRITE_KEY, backend_test};
use reqwest::StatusCode;
use serde_json::json;

backend_test!(an_accounts_changes_name_who_made_each_write_in_every_service,);

async fn an_accounts_changes_name_who_made_each_write_in_every_service(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let stack = Stack::start(db).await?;
    let acme = stack.account(WRITE_KEY, "Acme", "SMB").await?;
    let other = stack.account(WRITE_KEY, "Globex", "SMB").await?;
    let (status, body) = stack
        .post(
            &format!("/api/v1/accounts/{acme}/transitions"),
            ADMIN_KEY,
            &json!({"stage": "AWARENESS", "occurred_at": "2026-01-02T00:00:00Z"}),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = stack
        .post(
            "/api/v1/subscriptions",
            WRITE_KEY,
            &json!({"account_id": acme, "billing_interval": "MONTH",
                    "start_at": "2026-01-15T00:00:00Z",
                    "terms": {"plan": "pro", "quantity": 2,
                              "unit_price": {"currency": "USD", "minor_units": 5_000}}}),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let (status, answer) = stack
        .get(&format!("/api/v1/accounts/{acme}/changes"), ADMIN_KEY)
        .await?;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let changes = answer["changes"].as_array().cloned().unwrap_or_default();
    let seen: Vec<(String, String, String)> = changes
        .iter()
        .map(|c| {
            let text = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
            (text("service"), text("method"), text("principal"))
        })
        .collect();
    // Newest first; the other account's creation is not among them.
    assert_eq!(
        seen,
        vec![
            (
                "revenue".into(),
                "CreateSubscription".into(),
                "test-writer".into()
            ),
            (
                "funnel".into(),
                "RecordTransition".into(),
                "test-admin".into()
            ),
            (
                "accounts".into(),
                "CreateAccount".into(),
                "test-writer".into()
            ),
        ],
        "{answer}"
    );
    assert!(changes.iter().all(|c| {
        c["targets"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == &json!(format!("account:{acme}"))))
    }));
    assert_eq!(answer["unavailable"], json!([]));
    assert!(!answer.to_string().contains(&other));

    // Only admins read audit logs; a malformed id is named.
    let (status, _) = stack
        .get(&format!("/api/v1/accounts/{acme}/changes"), READ_KEY)
        .await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, bad) = stack
        .get("/api/v1/accounts/acme/changes", ADMIN_KEY)
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    assert_eq!(bad["error"]["field_violations"][0]["field"], "id", "{bad}");
    Ok(())
}
