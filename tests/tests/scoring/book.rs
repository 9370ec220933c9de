//! "My book" on scoring's health lists (docs/design.md 9.3): `mine=true`
//! on ListHealth and ListAtRisk lists only the accounts whose CSM or owner
//! is in the caller's book, paged like any other list; a key with scopes
//! only has no book. An account whose people scoring never recorded (a
//! database from before it kept them) is found after the backfill at start.

use bowtie_proto::common::PageRequest;
use bowtie_proto::scoring::{ListAtRiskRequest, ListHealthRequest};
use bowtie_testkit::assert::invalid_field;
use bowtie_testkit::scoring::{Scoring, ScoringClient, health_when, logins, record};
use bowtie_testkit::storage::delete_rows;
use bowtie_testkit::{TestDatabase, backend_test, within};

backend_test!(
    a_csm_lists_the_health_of_its_own_accounts_and_a_manager_its_teams,
    mine_needs_a_caller_with_a_book,
    an_account_whose_people_were_never_recorded_is_in_the_book_after_the_backfill,
);

/// The ids ListHealth answers the caller of `client`, a row per page, so
/// the paging is part of what is checked.
async fn health_ids(client: &mut ScoringClient, mine: bool) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_health(ListHealthRequest {
                mine,
                page: Some(PageRequest {
                    page_size: 1,
                    page_token: token,
                }),
                ..ListHealthRequest::default()
            })
            .await?
            .into_inner();
        ids.extend(page.accounts.into_iter().map(|h| h.account_id));
        token = page.page.map(|p| p.next_page_token).unwrap_or_default();
        if token.is_empty() {
            return Ok(ids);
        }
    }
}

/// The ids ListAtRisk answers the caller of `client`, a row per page.
async fn at_risk_ids(client: &mut ScoringClient, mine: bool) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_at_risk(ListAtRiskRequest {
                mine,
                page: Some(PageRequest {
                    page_size: 1,
                    page_token: token,
                }),
                ..ListAtRiskRequest::default()
            })
            .await?
            .into_inner();
        ids.extend(page.accounts.into_iter().map(|h| h.account_id));
        token = page.page.map(|p| p.next_page_token).unwrap_or_default();
        if token.is_empty() {
            return Ok(ids);
        }
    }
}

/// Scores `accounts` red (17: no usage of 10 logins, stakeholders 100).
async fn red(suite: &Scoring, accounts: &[&String]) -> anyhow::Result<()> {
    let mut client = suite.client();
    for (i, id) in accounts.iter().enumerate() {
        record(&mut client, logins(&format!("red-{i}"), id, 10, 40)).await?;
        health_when(&mut client, id, "a red score", |h| h.score == 17).await?;
    }
    Ok(())
}

/// Waits until ListHealth with `mine` lists `expected` for `client`.
async fn book_when(
    client: &mut ScoringClient,
    what: &str,
    expected: &[&String],
) -> anyhow::Result<()> {
    within(20, what, async {
        loop {
            let ids = health_ids(client, true).await?;
            if ids.iter().collect::<Vec<_>>() == expected {
                return anyhow::Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        }
    })
    .await?
}

fn sorted<'a>(ids: &[&'a String]) -> Vec<&'a String> {
    let mut ids = ids.to_vec();
    ids.sort();
    ids
}

async fn a_csm_lists_the_health_of_its_own_accounts_and_a_manager_its_teams(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Scoring::start_with_people(db).await?;
    let ada_s = suite.account_of("Acme", "Ada@Example.com", "").await?;
    let lin_s = suite.account_of("Umbrella", "lin@example.com", "").await?;
    let grace_s = suite.account_of("Globex", "grace@example.com", "").await?;
    let lead_s = suite
        .account_of("Initech", "lin@example.com", "LEAD@example.com")
        .await?;
    red(&suite, &[&ada_s, &lin_s, &grace_s, &lead_s]).await?;
    // Scoring learns each account's people from the accounts feed, in the
    // order they were created: once the last is in lead's book, all are.
    let mut lead = suite.as_person("lead@example.com");
    let team = sorted(&[&grace_s, &lead_s]);
    book_when(&mut lead, "lead's book", &team).await?;

    // Every account scores 17: each list runs in account id order.
    let mut ada = suite.as_person("ada@example.com");
    assert_eq!(health_ids(&mut ada, true).await?, vec![ada_s.clone()]);
    assert_eq!(at_risk_ids(&mut ada, true).await?, vec![ada_s.clone()]);
    let owned: Vec<String> = team.iter().map(|id| (*id).clone()).collect();
    assert_eq!(at_risk_ids(&mut lead, true).await?, owned);
    let everyone: Vec<String> = sorted(&[&ada_s, &lin_s, &grace_s, &lead_s])
        .into_iter()
        .cloned()
        .collect();
    assert_eq!(health_ids(&mut ada, false).await?, everyone);
    assert_eq!(at_risk_ids(&mut lead, false).await?, everyone);
    Ok(())
}

async fn mine_needs_a_caller_with_a_book(db: &TestDatabase) -> anyhow::Result<()> {
    let suite = Scoring::start_with_people(db).await?;
    let mut client = suite.client();
    let health = client
        .list_health(ListHealthRequest {
            mine: true,
            ..ListHealthRequest::default()
        })
        .await;
    invalid_field(health, "mine");
    let at_risk = client
        .list_at_risk(ListAtRiskRequest {
            mine: true,
            ..ListAtRiskRequest::default()
        })
        .await;
    invalid_field(at_risk, "mine");
    Ok(())
}

async fn an_account_whose_people_were_never_recorded_is_in_the_book_after_the_backfill(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Scoring::start_with_people(db).await?;
    let acme = suite.account_of("Acme", "ada@example.com", "").await?;
    red(&suite, &[&acme]).await?;
    let mut ada = suite.as_person("ada@example.com");
    book_when(&mut ada, "ada's book", &[&acme]).await?;

    // A database from before scoring kept each account's people: the feed
    // has long been read, so nothing brings the row back by itself.
    assert_eq!(delete_rows(suite.database(), "account_people").await?, 1);
    assert_eq!(health_ids(&mut ada, true).await?, Vec::<String>::new());

    let suite = suite.restart().await?;
    let mut ada = suite.as_person("ada@example.com");
    book_when(&mut ada, "ada's book after the backfill", &[&acme]).await?;
    assert_eq!(at_risk_ids(&mut ada, true).await?, vec![acme]);
    Ok(())
}
