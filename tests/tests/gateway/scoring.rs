//! Scoring through the gateway: an account whose usage fell is at risk,
//! with its name, band and the reason, and its health, components and alert
//! read over HTTP equal what the scoring service says over gRPC; with
//! `?mine=true` the health and at-risk lists hold only the caller's book.

use bowtie_proto::accounts::{Account, CreateAccountRequest};
use bowtie_proto::scoring::GetHealthRequest;
use bowtie_proto::scoring::scoring_service_client::ScoringServiceClient;
use bowtie_testkit::gateway::Stack;
use bowtie_testkit::people::{PEOPLE, secret, with_people};
use bowtie_testkit::scoring::{health_when, logins, record};
use bowtie_testkit::{READ_KEY, TestDatabase, WRITE_KEY, backend_test, within};
use reqwest::StatusCode;
use serde_json::Value;

backend_test!(
    an_account_with_falling_usage_is_at_risk_with_its_reason_over_http,
    mine_lists_only_the_callers_accounts_at_risk_and_in_the_health_list,
);

async fn an_account_with_falling_usage_is_at_risk_with_its_reason_over_http(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let stack = Stack::start(db).await?;
    let acme = stack.account(WRITE_KEY, "Acme", "SMB").await?;
    let _steady = stack.account(WRITE_KEY, "Steady", "SMB").await?;
    let mut client = ScoringServiceClient::new(stack.scoring.with_key(WRITE_KEY));
    // 40 logins the month before, 8 this month: usage fell to 20, RED.
    let mut batch = logins("before", &acme, 40, 45);
    batch.extend(logins("now", &acme, 8, 5));
    record(&mut client, batch).await?;
    let grpc = health_when(&mut client, &acme, "a red score", |h| h.band == 1).await?;

    let (status, health) = stack
        .get(&format!("/api/v1/accounts/{acme}/health"), READ_KEY)
        .await?;
    assert_eq!(status, StatusCode::OK, "{health}");
    assert_eq!(health["score"], grpc.score);
    assert_eq!(health["band"], "RED");
    assert_eq!(health["components"][0]["component"], "USAGE_TREND");
    assert_eq!(
        health["components"][0]["reason"],
        "usage fell from 40 to 8 events (30 days vs the 30 before)"
    );
    let grpc_again = client
        .get_health(GetHealthRequest {
            account_id: acme.clone(),
        })
        .await?
        .into_inner()
        .health
        .map(|h| h.components.len());
    assert_eq!(health["components"].as_array().map(Vec::len), grpc_again);

    let (status, at_risk) = stack.get("/api/v1/scoring/at-risk", READ_KEY).await?;
    assert_eq!(status, StatusCode::OK, "{at_risk}");
    let rows = at_risk["accounts"].as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), 1, "{at_risk}");
    assert_eq!(rows[0]["account_id"], acme.as_str());
    assert_eq!(rows[0]["name"], "Acme");
    assert_eq!(rows[0]["band"], "RED");
    assert_eq!(
        rows[0]["reason"],
        "usage fell from 40 to 8 events (30 days vs the 30 before)"
    );

    let (status, alerts) = stack
        .get(
            &format!("/api/v1/scoring/alerts?account_id={acme}"),
            READ_KEY,
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{alerts}");
    assert_eq!(alerts["alerts"][0]["kind"], "ENTERED_RED");
    assert_eq!(alerts["alerts"][0]["state"], "OPEN");

    let (status, segments) = stack.get("/api/v1/scoring/segments", READ_KEY).await?;
    assert_eq!(status, StatusCode::OK, "{segments}");
    assert!(segments["tiers"].as_array().is_some_and(|t| !t.is_empty()));

    // Unknown account: the scoring service's NOT_FOUND is a 404.
    let (status, _) = stack
        .get(
            "/api/v1/accounts/0191d6a4-0000-7000-8000-000000000000/health",
            READ_KEY,
        )
        .await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    Ok(())
}

/// The names of the accounts of a health or at-risk page.
fn names(page: &Value) -> Vec<String> {
    page["accounts"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter_map(|r| r["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn mine_lists_only_the_callers_accounts_at_risk_and_in_the_health_list(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let mut settings = db.server_settings()?;
    with_people(&mut settings, &PEOPLE);
    let stack = Stack::start_from(settings, |_| {}).await?;
    let accounts = stack
        .accounts
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("accounts is running"))?;
    let mut client = ScoringServiceClient::new(stack.scoring.with_key(WRITE_KEY));
    for (name, csm) in [("Acme", "ada@example.com"), ("Globex", "grace@example.com")] {
        let id = accounts
            .accounts()
            .create_account(CreateAccountRequest {
                account: Some(Account {
                    name: name.to_owned(),
                    segment: bowtie_proto::common::Segment::Smb as i32,
                    csm: csm.to_owned(),
                    ..Account::default()
                }),
                idempotency_key: String::new(),
            })
            .await?
            .into_inner()
            .account
            .map(|a| a.id)
            .unwrap_or_default();
        // No usage of 10 logins: red.
        record(&mut client, logins(name, &id, 10, 40)).await?;
        health_when(&mut client, &id, "a red score", |h| h.band == 1).await?;
    }
    let (_, everyone) = stack.get("/api/v1/scoring/at-risk", READ_KEY).await?;
    assert_eq!(names(&everyone), ["Acme", "Globex"], "{everyone}");

    let ada = secret("ada@example.com");
    let at_risk = within(20, "ada's book at risk", async {
        loop {
            let (status, page) = stack.get("/api/v1/scoring/at-risk?mine=true", &ada).await?;
            anyhow::ensure!(status == StatusCode::OK, "{status} {page}");
            if !names(&page).is_empty() {
                return anyhow::Ok(page);
            }
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        }
    })
    .await??;
    assert_eq!(names(&at_risk), ["Acme"], "{at_risk}");
    let (status, health) = stack
        .get("/api/v1/scoring/health?mine=true&highest_first=true", &ada)
        .await?;
    assert_eq!(status, StatusCode::OK, "{health}");
    assert_eq!(names(&health), ["Acme"], "{health}");
    assert_eq!(health["accounts"][0]["csm"], "ada@example.com");

    let (status, body) = stack
        .get("/api/v1/scoring/health?mine=true", WRITE_KEY)
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.to_string().contains("mine"), "{body}");
    Ok(())
}
