//! Account tags: normalised on the way in, shown on every read and on the
//! feed, replaced or cleared by UpdateAccount, kept by a CRM upsert that sends
//! none, filterable in ListAccounts, and refused by name when malformed.

use bowtie_proto::accounts::{
    Account, CreateAccountRequest, ListAccountsRequest, UpdateAccountRequest,
    UpsertAccountByExternalIdRequest,
};
use bowtie_proto::common::Segment;
use bowtie_testkit::fixtures::{
    account, account_payload, create_account, external_id, get_account, list_all, mask, names,
    next_events, watch,
};
use bowtie_testkit::{TestDatabase, TestServer, assert, backend_test};

backend_test!(
    tags_are_trimmed_lower_cased_deduplicated_and_sorted,
    update_account_replaces_the_tags_and_an_empty_list_clears_them,
    list_accounts_filters_by_tag,
    a_malformed_tag_is_invalid_by_index_and_nothing_is_written,
    more_than_twenty_tags_are_invalid,
    an_upsert_without_tags_keeps_them_and_one_with_tags_replaces_them,
    the_feed_event_of_an_account_carries_its_tags,
);

fn tagged(name: &str, tags: &[&str]) -> Account {
    Account {
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        ..account(name, Segment::Smb)
    }
}

fn set_tags(account: &Account, tags: &[&str]) -> UpdateAccountRequest {
    UpdateAccountRequest {
        account: Some(Account {
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            ..account.clone()
        }),
        update_mask: Some(mask(&["tags"])),
        expected_version: None,
        idempotency_key: String::new(),
    }
}

fn by_tag(tag: &str) -> ListAccountsRequest {
    ListAccountsRequest {
        tag: tag.to_owned(),
        ..ListAccountsRequest::default()
    }
}

async fn tags_are_trimmed_lower_cased_deduplicated_and_sorted(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let created = create_account(
        &mut client,
        tagged("Acme", &[" Pilot ", "EU:West", "pilot", "beta.2"]),
    )
    .await?;
    assert_eq!(created.tags, vec!["beta.2", "eu:west", "pilot"]);
    assert_eq!(
        get_account(&mut client, &created.id).await?.tags,
        created.tags
    );
    let listed = list_all(&mut client, ListAccountsRequest::default(), 5).await?;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].tags, created.tags);
    Ok(())
}

async fn update_account_replaces_the_tags_and_an_empty_list_clears_them(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let created = create_account(&mut client, tagged("Acme", &["pilot", "eu"])).await?;
    let replaced = client
        .update_account(set_tags(&created, &["eu", "renewal-risk"]))
        .await?
        .into_inner()
        .account
        .unwrap_or_default();
    assert_eq!(replaced.tags, vec!["eu", "renewal-risk"]);
    assert_eq!(replaced.version, created.version + 1);
    assert_eq!(
        get_account(&mut client, &created.id).await?.tags,
        replaced.tags
    );
    assert!(list_all(&mut client, by_tag("pilot"), 5).await?.is_empty());
    let cleared = client
        .update_account(set_tags(&replaced, &[]))
        .await?
        .into_inner()
        .account
        .unwrap_or_default();
    assert!(cleared.tags.is_empty());
    assert!(get_account(&mut client, &created.id).await?.tags.is_empty());
    assert!(list_all(&mut client, by_tag("eu"), 5).await?.is_empty());
    Ok(())
}

async fn list_accounts_filters_by_tag(db: &TestDatabase) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    create_account(&mut client, tagged("Acme", &["pilot", "eu"])).await?;
    create_account(&mut client, tagged("Bolt", &["eu"])).await?;
    create_account(
        &mut client,
        Account {
            tags: vec!["pilot".into()],
            ..account("Crane", Segment::Enterprise)
        },
    )
    .await?;
    create_account(&mut client, tagged("Dune", &[])).await?;
    let paged = |tag: &str| ListAccountsRequest {
        page: bowtie_testkit::fixtures::page(1, ""),
        ..by_tag(tag)
    };
    assert_eq!(
        names(&list_all(&mut client, paged("pilot"), 10).await?),
        vec!["Acme", "Crane"]
    );
    assert_eq!(
        names(&list_all(&mut client, by_tag(" EU "), 5).await?),
        vec!["Acme", "Bolt"]
    );
    let enterprise_pilots = ListAccountsRequest {
        segment: Segment::Enterprise as i32,
        ..by_tag("pilot")
    };
    assert_eq!(
        names(&list_all(&mut client, enterprise_pilots, 5).await?),
        vec!["Crane"]
    );
    assert!(list_all(&mut client, by_tag("nobody"), 5).await?.is_empty());
    assert::invalid_field(client.list_accounts(by_tag("two words")).await, "tag");
    Ok(())
}

async fn a_malformed_tag_is_invalid_by_index_and_nothing_is_written(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let too_long = "x".repeat(41);
    assert::invalid_field_with(
        client
            .create_account(CreateAccountRequest {
                account: Some(tagged("Acme", &["pilot", &too_long])),
                idempotency_key: String::new(),
            })
            .await,
        "account.tags[1]",
        "must be at most 40 characters",
    );
    assert!(
        list_all(&mut client, ListAccountsRequest::default(), 5)
            .await?
            .is_empty()
    );
    let created = create_account(&mut client, tagged("Acme", &["pilot"])).await?;
    assert::invalid_field(
        client
            .update_account(set_tags(&created, &["eu", "a,b"]))
            .await,
        "account.tags[1]",
    );
    assert::invalid_field(
        client.update_account(set_tags(&created, &["  "])).await,
        "account.tags[0]",
    );
    let after = get_account(&mut client, &created.id).await?;
    assert_eq!(after.tags, vec!["pilot"]);
    assert_eq!(after.version, created.version);
    Ok(())
}

async fn more_than_twenty_tags_are_invalid(db: &TestDatabase) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let twenty: Vec<String> = (1..=20).map(|i| format!("t{i}")).collect();
    let twenty_refs: Vec<&str> = twenty.iter().map(String::as_str).collect();
    let created = create_account(&mut client, tagged("Acme", &twenty_refs)).await?;
    assert_eq!(created.tags.len(), 20);
    let mut twenty_one = twenty_refs.clone();
    twenty_one.push("t21");
    assert::invalid_field(
        client.update_account(set_tags(&created, &twenty_one)).await,
        "account.tags",
    );
    assert_eq!(get_account(&mut client, &created.id).await?.tags.len(), 20);
    Ok(())
}

async fn an_upsert_without_tags_keeps_them_and_one_with_tags_replaces_them(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let upsert = |a: Account| UpsertAccountByExternalIdRequest {
        external_id: Some(external_id("hubspot", "42")),
        account: Some(a),
        idempotency_key: String::new(),
        source_updated_at: None,
    };
    let first = client
        .upsert_account_by_external_id(upsert(tagged("Acme", &["Pilot"])))
        .await?
        .into_inner();
    assert!(first.created);
    let id = first.account.unwrap_or_default().id;
    client
        .upsert_account_by_external_id(upsert(tagged("Acme Inc", &[])))
        .await?;
    let kept = get_account(&mut client, &id).await?;
    assert_eq!(kept.name, "Acme Inc");
    assert_eq!(kept.tags, vec!["pilot"]);
    client
        .upsert_account_by_external_id(upsert(tagged("Acme Inc", &["churned"])))
        .await?;
    assert_eq!(get_account(&mut client, &id).await?.tags, vec!["churned"]);
    Ok(())
}

async fn the_feed_event_of_an_account_carries_its_tags(db: &TestDatabase) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let created = create_account(&mut client, tagged("Acme", &["pilot"])).await?;
    client.update_account(set_tags(&created, &["eu"])).await?;
    let events = next_events(&mut watch(&mut client, 0).await?, 2, 10).await?;
    assert_eq!(account_payload(&events[0])?.tags, vec!["pilot"]);
    assert_eq!(account_payload(&events[1])?.tags, vec!["eu"]);
    Ok(())
}
