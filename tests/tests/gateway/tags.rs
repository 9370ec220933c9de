//! Account tags over REST: set on create, replaced and cleared by PATCH,
//! filtered by `?tag=`, and a malformed one is 400 naming it with nothing
//! written.

use bowtie_testkit::gateway::Stack;
use bowtie_testkit::{READ_KEY, TestDatabase, WRITE_KEY, backend_test};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

backend_test!(
    tags_are_set_read_patched_and_filtered_over_rest,
    a_malformed_tag_is_400_naming_it_and_nothing_is_written,
);

fn names(page: &Value) -> Vec<String> {
    page["accounts"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn tags_are_set_read_patched_and_filtered_over_rest(db: &TestDatabase) -> anyhow::Result<()> {
    let stack = Stack::start(db).await?;
    let (status, acme) = stack
        .post(
            "/api/v1/accounts",
            WRITE_KEY,
            &json!({"name": "Acme", "segment": "SMB", "tags": ["Pilot", " eu "]}),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{acme}");
    assert_eq!(acme["tags"], json!(["eu", "pilot"]));
    stack
        .post(
            "/api/v1/accounts",
            WRITE_KEY,
            &json!({"name": "Bolt", "segment": "SMB", "tags": ["eu"]}),
        )
        .await?;
    let id = acme["id"].as_str().unwrap_or_default().to_owned();
    let (status, got) = stack
        .get(&format!("/api/v1/accounts/{id}"), READ_KEY)
        .await?;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got["tags"], json!(["eu", "pilot"]));
    let (_, pilots) = stack.get("/api/v1/accounts?tag=PILOT", READ_KEY).await?;
    assert_eq!(names(&pilots), vec!["Acme"]);
    let (_, eu) = stack.get("/api/v1/accounts?tag=eu", READ_KEY).await?;
    assert_eq!(names(&eu), vec!["Acme", "Bolt"]);
    let (status, patched) = stack
        .call(
            Method::PATCH,
            &format!("/api/v1/accounts/{id}"),
            Some(WRITE_KEY),
            Some(&json!({"tags": []})),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["tags"], json!([]));
    let (_, eu) = stack.get("/api/v1/accounts?tag=eu", READ_KEY).await?;
    assert_eq!(names(&eu), vec!["Bolt"]);
    Ok(())
}

async fn a_malformed_tag_is_400_naming_it_and_nothing_is_written(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let stack = Stack::start(db).await?;
    let (status, body) = stack
        .post(
            "/api/v1/accounts",
            WRITE_KEY,
            &json!({"name": "Acme", "segment": "SMB", "tags": ["ok", "x".repeat(41)]}),
        )
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("account.tags[1]"), "{body}");
    let (_, all) = stack.get("/api/v1/accounts", READ_KEY).await?;
    assert!(names(&all).is_empty(), "{all}");
    let (status, body) = stack.get("/api/v1/accounts?tag=a%2Cb", READ_KEY).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("tag"), "{body}");
    Ok(())
}
