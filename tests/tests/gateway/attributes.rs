//! Account attributes over REST: typed JSON values set on create, shown on
//! reads, set and cleared (`null`) by PATCH; an undeclared one is 400 naming
//! it with nothing written.

use bowtie_proto::accounts::{AttributeDeclaration, AttributeType, DeclareAttributeRequest};
use bowtie_testkit::gateway::Stack;
use bowtie_testkit::{READ_KEY, TestDatabase, WRITE_KEY, backend_test};
use reqwest::{Method, StatusCode};
use serde_json::json;

backend_test!(
    attributes_are_set_read_and_cleared_over_rest,
    an_undeclared_attribute_is_400_naming_it_and_nothing_is_written,
);

async fn declare(stack: &Stack) -> anyhow::Result<()> {
    let accounts = stack
        .accounts
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("the accounts server runs"))?;
    let mut admin = accounts.accounts_admin();
    for (name, kind, allowed) in [
        (
            "plan_family",
            AttributeType::Enum,
            vec!["core".to_owned(), "plus".to_owned()],
        ),
        ("seats", AttributeType::Number, Vec::new()),
        ("beta", AttributeType::Bool, Vec::new()),
    ] {
        admin
            .declare_attribute(DeclareAttributeRequest {
                declaration: Some(AttributeDeclaration {
                    name: name.to_owned(),
                    r#type: kind as i32,
                    allowed_values: allowed,
                    ..AttributeDeclaration::default()
                }),
                expected_version: None,
            })
            .await?;
    }
    Ok(())
}

async fn attributes_are_set_read_and_cleared_over_rest(db: &TestDatabase) -> anyhow::Result<()> {
    let stack = Stack::start(db).await?;
    declare(&stack).await?;
    let (status, created) = stack
        .post(
            "/api/v1/accounts",
            WRITE_KEY,
            &json!({"name": "Acme", "segment": "SMB",
                    "attributes": {"plan_family": "plus", "seats": 12, "beta": true}}),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        created["attributes"],
        json!({"plan_family": "plus", "seats": 12.0, "beta": true})
    );
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    let (status, patched) = stack
        .call(
            Method::PATCH,
            &format!("/api/v1/accounts/{id}"),
            Some(WRITE_KEY),
            Some(&json!({"attributes": {"seats": null, "plan_family": "core"}})),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{patched}");
    let (_, got) = stack
        .get(&format!("/api/v1/accounts/{id}"), READ_KEY)
        .await?;
    assert_eq!(
        got["attributes"],
        json!({"plan_family": "core", "beta": true})
    );
    Ok(())
}

async fn an_undeclared_attribute_is_400_naming_it_and_nothing_is_written(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let stack = Stack::start(db).await?;
    declare(&stack).await?;
    let (status, body) = stack
        .post(
            "/api/v1/accounts",
            WRITE_KEY,
            &json!({"name": "Acme", "segment": "SMB", "attributes": {"colour": "red"}}),
        )
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body.to_string().contains("account.attributes.colour"),
        "{body}"
    );
    let (status, body) = stack
        .post(
            "/api/v1/accounts",
            WRITE_KEY,
            &json!({"name": "Acme", "segment": "SMB", "attributes": {"seats": "many"}}),
        )
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body.to_string().contains("account.attributes.seats"),
        "{body}"
    );
    let (_, all) = stack.get("/api/v1/accounts", READ_KEY).await?;
    assert_eq!(all["accounts"], json!([]), "{all}");
    Ok(())
}
