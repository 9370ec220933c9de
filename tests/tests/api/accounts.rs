//! Accounts: create, read, update, upsert by external id, archive, their
//! validation, optimistic concurrency and idempotency keys.

use bowtie_proto::accounts::{
    Account, AccountStatus, ArchiveAccountRequest, CreateAccountRequest, GetAccountRequest,
    ListAccountsRequest, UpdateAccountRequest, UpsertAccountByExternalIdRequest,
};
use bowtie_proto::common::{CoverageModel, Segment};
use bowtie_testkit::fixtures::{
    account, create_account, create_named, external_id, full_account, get_account, list_all, mask,
};
use bowtie_testkit::{TestDatabase, TestServer, assert, backend_test};
use tonic::Code;

backend_test!(
    create_account_returns_the_stored_account_at_version_one,
    create_account_derives_the_coverage_model_from_the_segment,
    create_account_trims_the_name,
    get_account_returns_what_was_created,
    create_account_rejects_a_blank_name,
    create_account_rejects_a_name_over_200_characters,
    create_account_accepts_a_name_of_exactly_200_characters,
    create_account_requires_a_segment,
    create_account_rejects_an_unknown_segment,
    create_account_reports_every_invalid_field_at_once,
    create_account_without_an_account_is_invalid,
    create_account_ignores_output_only_fields,
    get_account_rejects_an_id_that_is_not_a_uuid,
    an_unknown_account_id_is_not_found,
    update_account_changes_only_the_masked_fields_and_bumps_the_version,
    update_account_requires_an_update_mask,
    update_account_rejects_an_unknown_mask_path,
    update_account_validates_the_masked_fields,
    update_account_with_the_current_expected_version_succeeds_and_a_stale_one_is_aborted,
    concurrent_updates_with_the_same_expected_version_let_exactly_one_win,
    create_account_replayed_with_the_same_idempotency_key_creates_one_account,
    an_idempotency_key_reused_for_a_different_request_is_rejected,
    update_account_replayed_with_the_same_idempotency_key_applies_once,
    upsert_by_external_id_creates_then_returns_the_same_account_unchanged,
    upsert_by_external_id_updates_the_account_and_keeps_other_external_ids,
    upsert_by_external_id_requires_the_external_id,
    an_external_id_belongs_to_one_account_only,
    archive_account_marks_it_archived_and_it_stays_readable,
    an_archived_account_cannot_be_updated,
    an_archived_account_cannot_be_changed_by_an_upsert,
    archive_account_with_a_stale_expected_version_is_aborted,
);

fn micros(ts: Option<&prost_types::Timestamp>) -> i64 {
    ts.map_or(0, |t| t.seconds * 1_000_000 + i64::from(t.nanos / 1000))
}

async fn create_account_returns_the_stored_account_at_version_one(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let input = full_account("Acme Corp");
    let created = create_account(&mut client, input.clone()).await?;

    assert!(
        uuid::Uuid::parse_str(&created.id).is_ok(),
        "id {:?} is not a UUID",
        created.id
    );
    assert_eq!(created.version, 1);
    assert_eq!(created.status, AccountStatus::Active as i32);
    assert_eq!(created.name, "Acme Corp");
    assert_eq!(created.segment, Segment::Enterprise as i32);
    assert_eq!(created.industry, input.industry);
    assert_eq!(created.owner, input.owner);
    assert_eq!(created.csm, input.csm);
    assert!(created.strategic);
    assert_eq!(created.external_ids, input.external_ids);
    assert!(
        micros(created.create_time.as_ref()) > 0,
        "create_time is set"
    );
    assert!(
        micros(created.update_time.as_ref()) >= micros(created.create_time.as_ref()),
        "update_time is not before create_time"
    );

    let other = create_named(&mut client, "Globex", Segment::Smb).await?;
    assert_ne!(other.id, created.id, "every account gets its own id");
    Ok(())
}

async fn create_account_derives_the_coverage_model_from_the_segment(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    for (segment, coverage) in [
        (Segment::Smb, CoverageModel::TechTouch),
        (Segment::MidMarket, CoverageModel::PooledCsm),
        (Segment::Enterprise, CoverageModel::NamedCsm),
    ] {
        let created = create_named(&mut client, &format!("{segment:?} Co"), segment).await?;
        assert_eq!(
            created.coverage_model, coverage as i32,
            "coverage of {segment:?}"
        );
    }
    Ok(())
}

async fn create_account_trims_the_name(db: &TestDatabase) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let created = create_named(&mut client, "  Acme Corp \t", Segment::Smb).await?;
    assert_eq!(created.name, "Acme Corp");
    assert_eq!(
        get_account(&mut client, &created.id).await?.name,
        "Acme Corp"
    );
    Ok(())
}

async fn get_account_returns_what_was_created(db: &TestDatabase) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let created = create_account(&mut client, full_account("Initech")).await?;
    let fetched = get_account(&mut client, &created.id).await?;
    assert_eq!(fetched, created);
    // Reading needs only the read scope.
    let mut reader = server.accounts_read_only();
    assert_eq!(get_account(&mut reader, &created.id).await?, created);
    Ok(())
}

async fn create_account_rejects_a_blank_name(db: &TestDatabase) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    for blank in ["", "   ", "\t \n"] {
        let result = client
            .create_account(CreateAccountRequest {
                account: Some(account(blank, Segment::Smb)),
                idempotency_key: String::new(),
            })
            .await;
        assert::invalid_field_with(result, "account.name", "must not be blank");
    }
    assert_no_accounts(&mut client).await
}

async fn create_account_rejects_a_name_over_200_characters(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let result = client
        .create_account(CreateAccountRequest {
            account: Some(account(&"a".repeat(201), Segment::Smb)),
            idempotency_key: String::new(),
        })
        .await;
    assert::invalid_field(result, "account.name");
    // Multi-byte characters count as one character each, not as bytes.
    let result = client
        .create_account(CreateAccountRequest {
            account: Some(account(&"é".repeat(201), Segment::Smb)),
            idempotency_key: String::new(),
        })
        .await;
    assert::invalid_field(result, "account.name");
    assert_no_accounts(&mut client).await
}

async fn create_account_accepts_a_name_of_exactly_200_characters(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let ascii = "a".repeat(200);
    let created = create_named(&mut client, &ascii, Segment::Smb).await?;
    assert_eq!(created.name, ascii);
    // 200 characters of two bytes each: the limit is in characters.
    let accented = "é".repeat(200);
    let created = create_named(&mut client, &accented, Segment::Smb).await?;
    assert_eq!(get_account(&mut client, &created.id).await?.name, accented);
    // Surrounding spaces do not count once trimmed.
    let padded = format!("  {ascii}  ");
    let created = create_named(&mut client, &padded, Segment::Smb).await?;
    assert_eq!(created.name, ascii);
    Ok(())
}

async fn create_account_requires_a_segment(db: &TestDatabase) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let result = client
        .create_account(CreateAccountRequest {
            account: Some(account("Acme", Segment::Unspecified)),
            idempotency_key: String::new(),
        })
        .await;
    assert::invalid_field(result, "account.segment");
    assert_no_accounts(&mut client).await
}

async fn create_account_rejects_an_unknown_segment(db: &TestDatabase) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let mut input = account("Acme", Segment::Smb);
    input.segment = 99;
    let result = client
        .create_account(CreateAccountRequest {
            account: Some(input),
            idempotency_key: String::new(),
        })
        .await;
    assert::invalid_field(result, "account.segment");
    assert_no_accounts(&mut client).await
}

async fn create_account_reports_every_invalid_field_at_once(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let result = client
        .create_account(CreateAccountRequest {
            account: Some(account(" ", Segment::Unspecified)),
            idempotency_key: String::new(),
        })
        .await;
    let status = assert::invalid_field(result, "account.name");
    let fields = assert::violated_fields(&status);
    assert!(
        fields.contains(&"account.segment".to_owned()),
        "both fields are reported, got {fields:?}"
    );
    assert!(status.message().contains("account.segment: "));
    Ok(())
}

async fn create_account_without_an_account_is_invalid(db: &TestDatabase) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let result = client
        .create_account(CreateAccountRequest {
            account: None,
            idempotency_key: String::new(),
        })
        .await;
    assert::status(result, Code::InvalidArgument);
    assert_no_accounts(&mut client).await
}

async fn create_account_ignores_output_only_fields(db: &TestDatabase) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let chosen_id = uuid::Uuid::new_v4().to_string();
    let input = Account {
        id: chosen_id.clone(),
        coverage_model: CoverageModel::NamedCsm as i32,
        status: AccountStatus::Archived as i32,
        version: 42,
        ..account("Acme", Segment::Smb)
    };
    let created = create_account(&mut client, input).await?;
    assert_ne!(created.id, chosen_id, "the service assigns the id");
    assert_eq!(created.coverage_model, CoverageModel::TechTouch as i32);
    assert_eq!(created.status, AccountStatus::Active as i32);
    assert_eq!(created.version, 1);
    Ok(())
}

async fn get_account_rejects_an_id_that_is_not_a_uuid(db: &TestDatabase) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    for id in ["not-a-uuid", "42", "' OR 1=1 --"] {
        let result = client
            .get_account(GetAccountRequest { id: id.into() })
            .await;
        assert::invalid_field_with(result, "id", "must be a UUID");
    }
    let result = client
        .get_account(GetAccountRequest { id: String::new() })
        .await;
    assert::invalid_field(result, "id");
    Ok(())
}

async fn an_unknown_account_id_is_not_found(db: &TestDatabase) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    create_named(&mut client, "Acme", Segment::Smb).await?;
    let unknown = uuid::Uuid::new_v4().to_string();

    let status = assert::status(
        client
            .get_account(GetAccountRequest {
                id: unknown.clone(),
            })
            .await,
        Code::NotFound,
    );
    assert::no_internals(&status);
    let update = client
        .update_account(UpdateAccountRequest {
            account: Some(Account {
                id: unknown.clone(),
                ..account("Renamed", Segment::Smb)
            }),
            update_mask: Some(mask(&["name"])),
            expected_version: None,
            idempotency_key: String::new(),
        })
        .await;
    assert::status(update, Code::NotFound);
    let archive = client
        .archive_account(ArchiveAccountRequest {
            id: unknown,
            expected_version: None,
            idempotency_key: String::new(),
        })
        .await;
    assert::status(archive, Code::NotFound);
    Ok(())
}

async fn update_account_changes_only_the_masked_fields_and_bumps_the_version(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let created = create_account(&mut client, full_account("Acme")).await?;

    let change = Account {
        id: created.id.clone(),
        name: "Acme Holdings".into(),
        industry: "Retail".into(),
        // Not in the mask: must be ignored.
        owner: "someone-else@example.com".into(),
        segment: Segment::Smb as i32,
        ..Account::default()
    };
    let updated = client
        .update_account(UpdateAccountRequest {
            account: Some(change),
            update_mask: Some(mask(&["name", "industry"])),
            expected_version: None,
            idempotency_key: String::new(),
        })
        .await?
        .into_inner()
        .account
        .ok_or_else(|| anyhow::anyhow!("no account in the response"))?;
    assert_eq!(updated.id, created.id);
    assert_eq!(updated.name, "Acme Holdings");
    assert_eq!(updated.industry, "Retail");
    assert_eq!(updated.owner, created.owner, "owner was not in the mask");
    assert_eq!(
        updated.segment, created.segment,
        "segment was not in the mask"
    );
    assert_eq!(updated.csm, created.csm);
    assert_eq!(updated.strategic, created.strategic);
    assert_eq!(updated.external_ids, created.external_ids);
    assert_eq!(updated.version, 2);
    assert_eq!(updated.create_time, created.create_time);
    assert!(micros(updated.update_time.as_ref()) >= micros(created.update_time.as_ref()));
    assert_eq!(get_account(&mut client, &created.id).await?, updated);

    // Every field of the mask, including clearing and false values.
    let change = Account {
        id: created.id.clone(),
        name: "Acme".into(),
        segment: Segment::MidMarket as i32,
        industry: String::new(),
        owner: "carla@example.com".into(),
        csm: String::new(),
        strategic: false,
        external_ids: vec![external_id("hubspot", "77"), external_id("salesforce", "9")],
        ..Account::default()
    };
    let updated = client
        .update_account(UpdateAccountRequest {
            account: Some(change),
            update_mask: Some(mask(&[
                "name",
                "segment",
                "industry",
                "owner",
                "csm",
                "strategic",
                "external_ids",
            ])),
            expected_version: Some(2),
            idempotency_key: String::new(),
        })
        .await?
        .into_inner()
        .account
        .ok_or_else(|| anyhow::anyhow!("no account in the response"))?;
    assert_eq!(updated.version, 3);
    assert_eq!(updated.segment, Segment::MidMarket as i32);
    assert_eq!(updated.coverage_model, CoverageModel::PooledCsm as i32);
    assert_eq!(updated.industry, "");
    assert_eq!(updated.owner, "carla@example.com");
    assert_eq!(updated.csm, "");
    assert!(!updated.strategic);
    let mut sources: Vec<&str> = updated
        .external_ids
        .iter()
        .map(|e| e.source.as_str())
        .collect();
    sources.sort_unstable();
    assert_eq!(sources, vec!["hubspot", "salesforce"]);
    assert_eq!(get_account(&mut client, &created.id).await?, updated);
    Ok(())
}

async fn update_account_requires_an_update_mask(db: &TestDatabase) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let created = create_named(&mut client, "Acme", Segment::Smb).await?;
    for update_mask in [None, Some(mask(&[]))] {
        let result = client
            .update_account(UpdateAccountRequest {
                account: Some(Account {
                    name: "Renamed".into(),
                    ..created.clone()
                }),
                update_mask,
                expected_version: None,
                idempotency_key: String::new(),
            })
            .await;
        assert::invalid_field(result, "update_mask");
    }
    assert_eq!(get_account(&mut client, &created.id).await?, created);
    Ok(())
}

async fn update_account_rejects_an_unknown_mask_path(db: &TestDatabase) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let created = create_named(&mut client, "Acme", Segment::Smb).await?;
    for path in ["nickname", "version", "status", "id"] {
        let result = client
            .update_account(UpdateAccountRequest {
                account: Some(Account {
                    version: 9,
                    status: AccountStatus::Archived as i32,
                    ..created.clone()
                }),
                update_mask: Some(mask(&["name", path])),
                expected_version: None,
                idempotency_key: String::new(),
            })
            .await;
        assert::invalid_field(result, "update_mask");
    }
    assert_eq!(get_account(&mut client, &created.id).await?, created);
    Ok(())
}

async fn update_account_validates_the_masked_fields(db: &TestDatabase) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let created = create_named(&mut client, "Acme", Segment::Smb).await?;
    let update = |account: Account, paths: &[&str]| UpdateAccountRequest {
        account: Some(account),
        update_mask: Some(mask(paths)),
        expected_version: None,
        idempotency_key: String::new(),
    };
    let blank = Account {
        name: "  ".into(),
        ..created.clone()
    };
    assert::invalid_field(
        client.update_account(update(blank, &["name"])).await,
        "account.name",
    );
    let long = Account {
        name: "x".repeat(201),
        ..created.clone()
    };
    assert::invalid_field(
        client.update_account(update(long, &["name"])).await,
        "account.name",
    );
    let unspecified = Account {
        segment: 0,
        ..created.clone()
    };
    assert::invalid_field(
        client
            .update_account(update(unspecified, &["segment"]))
            .await,
        "account.segment",
    );
    let bad_id = Account {
        id: "nope".into(),
        ..created.clone()
    };
    assert::invalid_field(
        client.update_account(update(bad_id, &["name"])).await,
        "account.id",
    );
    assert_eq!(get_account(&mut client, &created.id).await?, created);
    Ok(())
}

async fn update_account_with_the_current_expected_version_succeeds_and_a_stale_one_is_aborted(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let created = create_named(&mut client, "Acme", Segment::Smb).await?;
    let rename = |name: &str, expected_version: Option<i64>| UpdateAccountRequest {
        account: Some(Account {
            name: name.into(),
            ..created.clone()
        }),
        update_mask: Some(mask(&["name"])),
        expected_version,
        idempotency_key: String::new(),
    };
    let first = client
        .update_account(rename("First", Some(1)))
        .await?
        .into_inner()
        .account
        .ok_or_else(|| anyhow::anyhow!("no account in the response"))?;
    assert_eq!(first.version, 2);

    let stale = client.update_account(rename("Second", Some(1))).await;
    let status = assert::status(stale, Code::Aborted);
    assert::no_internals(&status);
    let current = get_account(&mut client, &created.id).await?;
    assert_eq!(current.name, "First", "a stale update changes nothing");
    assert_eq!(current.version, 2);

    // A version from the future is just as stale.
    assert::status(
        client.update_account(rename("Third", Some(7))).await,
        Code::Aborted,
    );
    // Without expected_version the last writer wins.
    let last = client
        .update_account(rename("Fourth", None))
        .await?
        .into_inner()
        .account
        .ok_or_else(|| anyhow::anyhow!("no account in the response"))?;
    assert_eq!((last.name.as_str(), last.version), ("Fourth", 3));
    Ok(())
}

/// 32 writers race with the version they read: per version exactly one
/// wins and the others are ABORTED; each loser re-reads and retries, so in
/// the end every writer landed exactly once and no update was lost.
async fn concurrent_updates_with_the_same_expected_version_let_exactly_one_win(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    const WRITERS: i64 = 32;
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let created = create_named(&mut client, "Acme", Segment::Smb).await?;
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(WRITERS as usize));
    let mut tasks = Vec::new();
    for i in 0..WRITERS {
        let mut client = server.accounts();
        let (id, start) = (created.id.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            let mut version = 1;
            let mut first_attempt = None;
            start.wait().await;
            loop {
                let request = UpdateAccountRequest {
                    account: Some(Account {
                        id: id.clone(),
                        name: format!("Writer {i}"),
                        ..Account::default()
                    }),
                    update_mask: Some(mask(&["name"])),
                    expected_version: Some(version),
                    idempotency_key: String::new(),
                };
                match client.update_account(request).await {
                    Ok(response) => {
                        let won = response.into_inner().account.map(|a| a.version);
                        return anyhow::Ok((first_attempt.unwrap_or(true), won));
                    }
                    Err(status) if status.code() == Code::Aborted => {
                        first_attempt.get_or_insert(false);
                        version = get_account(&mut client, &id).await?.version;
                    }
                    Err(status) => anyhow::bail!("a losing writer must be ABORTED: {status:?}"),
                }
            }
        }));
    }
    let mut won_first_round = 0;
    let mut versions = Vec::new();
    for task in tasks {
        let (first, version) = task.await??;
        won_first_round += i64::from(first);
        versions.push(version.unwrap_or_default());
    }
    assert_eq!(won_first_round, 1, "exactly one writer wins version 1");
    versions.sort_unstable();
    assert_eq!(
        versions,
        (2..=WRITERS + 1).collect::<Vec<_>>(),
        "each version was won by exactly one writer"
    );
    let current = get_account(&mut client, &created.id).await?;
    assert_eq!(current.version, WRITERS + 1, "no update was lost");
    Ok(())
}

async fn create_account_replayed_with_the_same_idempotency_key_creates_one_account(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let request = CreateAccountRequest {
        account: Some(full_account("Acme")),
        idempotency_key: "crm-import-7f3a".into(),
    };
    let first = client.create_account(request.clone()).await?.into_inner();
    let second = client.create_account(request.clone()).await?.into_inner();
    assert_eq!(first, second, "a replay returns the first result");
    let listed = list_all(&mut client, ListAccountsRequest::default(), 10).await?;
    assert_eq!(listed.len(), 1, "only one account was created");
    // Another key is another request. (The same data again would collide
    // on the external id, which belongs to one account only.)
    let third = client
        .create_account(CreateAccountRequest {
            account: Some(account("Acme", Segment::Enterprise)),
            idempotency_key: "crm-import-7f3b".into(),
        })
        .await?
        .into_inner();
    assert_ne!(third.account.map(|a| a.id), first.account.map(|a| a.id));
    Ok(())
}

async fn an_idempotency_key_reused_for_a_different_request_is_rejected(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let key = "import-42";
    client
        .create_account(CreateAccountRequest {
            account: Some(account("Acme", Segment::Smb)),
            idempotency_key: key.into(),
        })
        .await?;
    let result = client
        .create_account(CreateAccountRequest {
            account: Some(account("Globex", Segment::Smb)),
            idempotency_key: key.into(),
        })
        .await;
    assert::invalid_field(result, "idempotency_key");
    let listed = list_all(&mut client, ListAccountsRequest::default(), 10).await?;
    assert_eq!(bowtie_testkit::fixtures::names(&listed), vec!["Acme"]);
    Ok(())
}

async fn update_account_replayed_with_the_same_idempotency_key_applies_once(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let created = create_named(&mut client, "Acme", Segment::Smb).await?;
    let request = UpdateAccountRequest {
        account: Some(Account {
            owner: "ana@example.com".into(),
            ..created.clone()
        }),
        update_mask: Some(mask(&["owner"])),
        expected_version: Some(1),
        idempotency_key: "owner-change-1".into(),
    };
    let first = client.update_account(request.clone()).await?.into_inner();
    // Replaying the same request, even though version 1 is now stale, returns
    // the first answer rather than ABORTED: the client only retried.
    let second = client.update_account(request.clone()).await?.into_inner();
    assert_eq!(first, second);
    assert_eq!(get_account(&mut client, &created.id).await?.version, 2);

    let different = client
        .update_account(UpdateAccountRequest {
            account: Some(Account {
                owner: "bo@example.com".into(),
                ..created.clone()
            }),
            ..request
        })
        .await;
    assert::invalid_field(different, "idempotency_key");
    assert_eq!(
        get_account(&mut client, &created.id).await?.owner,
        "ana@example.com"
    );
    Ok(())
}

async fn upsert_by_external_id_creates_then_returns_the_same_account_unchanged(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let request = UpsertAccountByExternalIdRequest {
        external_id: Some(external_id("hubspot", "42")),
        account: Some(Account {
            industry: "Logistics".into(),
            ..account("Globex", Segment::MidMarket)
        }),
        idempotency_key: String::new(),
        source_updated_at: None,
    };
    let first = client
        .upsert_account_by_external_id(request.clone())
        .await?
        .into_inner();
    assert!(first.created, "the first upsert creates the account");
    let created = first
        .account
        .ok_or_else(|| anyhow::anyhow!("no account in the response"))?;
    assert_eq!(created.version, 1);
    assert_eq!(created.name, "Globex");
    assert_eq!(created.industry, "Logistics");
    assert!(
        created.external_ids.contains(&external_id("hubspot", "42")),
        "the account records the CRM id, got {:?}",
        created.external_ids
    );

    let second = client
        .upsert_account_by_external_id(request)
        .await?
        .into_inner();
    assert!(!second.created, "the repeat finds the existing account");
    let again = second
        .account
        .ok_or_else(|| anyhow::anyhow!("no account in the response"))?;
    assert_eq!(again.id, created.id);
    assert_eq!(again.version, 1, "identical data changes nothing");
    assert_eq!(again, created);
    assert_eq!(get_account(&mut client, &created.id).await?, created);
    let listed = list_all(&mut client, ListAccountsRequest::default(), 10).await?;
    assert_eq!(listed.len(), 1);
    Ok(())
}

async fn upsert_by_external_id_updates_the_account_and_keeps_other_external_ids(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let upsert = |name: &str, segment: Segment| UpsertAccountByExternalIdRequest {
        external_id: Some(external_id("hubspot", "42")),
        account: Some(account(name, segment)),
        idempotency_key: String::new(),
        source_updated_at: None,
    };
    let created = client
        .upsert_account_by_external_id(upsert("Globex", Segment::Smb))
        .await?
        .into_inner()
        .account
        .ok_or_else(|| anyhow::anyhow!("no account in the response"))?;
    // Another system records its own id on the account.
    client
        .update_account(UpdateAccountRequest {
            account: Some(Account {
                external_ids: vec![
                    external_id("hubspot", "42"),
                    external_id("salesforce", "001"),
                ],
                ..created.clone()
            }),
            update_mask: Some(mask(&["external_ids"])),
            expected_version: None,
            idempotency_key: String::new(),
        })
        .await?;

    let response = client
        .upsert_account_by_external_id(upsert("Globex Inc", Segment::Enterprise))
        .await?
        .into_inner();
    assert!(!response.created);
    let updated = response
        .account
        .ok_or_else(|| anyhow::anyhow!("no account in the response"))?;
    assert_eq!(updated.id, created.id);
    assert_eq!(updated.name, "Globex Inc");
    assert_eq!(updated.segment, Segment::Enterprise as i32);
    assert_eq!(updated.version, 3);
    for id in [
        external_id("hubspot", "42"),
        external_id("salesforce", "001"),
    ] {
        assert!(
            updated.external_ids.contains(&id),
            "{id:?} is kept, got {:?}",
            updated.external_ids
        );
    }
    // The id of another source finds another (new) account.
    let other = client
        .upsert_account_by_external_id(UpsertAccountByExternalIdRequest {
            external_id: Some(external_id("pipedrive", "42")),
            ..upsert("Globex", Segment::Smb)
        })
        .await?
        .into_inner();
    assert!(other.created);
    assert_ne!(other.account.map(|a| a.id), Some(created.id));
    Ok(())
}

async fn upsert_by_external_id_requires_the_external_id(db: &TestDatabase) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let missing = client
        .upsert_account_by_external_id(UpsertAccountByExternalIdRequest {
            external_id: None,
            account: Some(account("Globex", Segment::Smb)),
            idempotency_key: String::new(),
            source_updated_at: None,
        })
        .await;
    let status = assert::status(missing, Code::InvalidArgument);
    let fields = assert::violated_fields(&status);
    assert!(
        fields.iter().any(|f| f.starts_with("external_id")),
        "names the external_id field, got {fields:?}"
    );
    let bad_source = client
        .upsert_account_by_external_id(UpsertAccountByExternalIdRequest {
            external_id: Some(external_id("Hub Spot!", "42")),
            account: Some(account("Globex", Segment::Smb)),
            idempotency_key: String::new(),
            source_updated_at: None,
        })
        .await;
    assert::invalid_field(bad_source, "external_id.source");
    let no_name = client
        .upsert_account_by_external_id(UpsertAccountByExternalIdRequest {
            external_id: Some(external_id("hubspot", "42")),
            account: Some(account("", Segment::Smb)),
            idempotency_key: String::new(),
            source_updated_at: None,
        })
        .await;
    assert::invalid_field(no_name, "account.name");
    assert_no_accounts(&mut client).await
}

async fn an_external_id_belongs_to_one_account_only(db: &TestDatabase) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let acme = create_account(&mut client, full_account("Acme")).await?;
    let duplicate = client
        .create_account(CreateAccountRequest {
            account: Some(full_account("Acme Clone")),
            idempotency_key: String::new(),
        })
        .await;
    let status = assert::status(duplicate, Code::AlreadyExists);
    assert::no_internals(&status);
    let globex = create_named(&mut client, "Globex", Segment::Smb).await?;
    let steal = client
        .update_account(UpdateAccountRequest {
            account: Some(Account {
                external_ids: acme.external_ids.clone(),
                ..globex.clone()
            }),
            update_mask: Some(mask(&["external_ids"])),
            expected_version: None,
            idempotency_key: String::new(),
        })
        .await;
    assert::status(steal, Code::AlreadyExists);
    // Two ids from one source on one account are a malformed request.
    let two = client
        .update_account(UpdateAccountRequest {
            account: Some(Account {
                external_ids: vec![external_id("hubspot", "1"), external_id("hubspot", "2")],
                ..globex.clone()
            }),
            update_mask: Some(mask(&["external_ids"])),
            expected_version: None,
            idempotency_key: String::new(),
        })
        .await;
    assert::invalid_field(two, "account.external_ids");
    assert_eq!(get_account(&mut client, &globex.id).await?, globex);
    Ok(())
}

async fn archive_account_marks_it_archived_and_it_stays_readable(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let created = create_named(&mut client, "Acme", Segment::Smb).await?;
    let archived = client
        .archive_account(ArchiveAccountRequest {
            id: created.id.clone(),
            expected_version: Some(1),
            idempotency_key: String::new(),
        })
        .await?
        .into_inner()
        .account
        .ok_or_else(|| anyhow::anyhow!("no account in the response"))?;
    assert_eq!(archived.status, AccountStatus::Archived as i32);
    assert_eq!(archived.version, 2);
    assert_eq!(archived.name, created.name);
    assert_eq!(get_account(&mut client, &created.id).await?, archived);
    Ok(())
}

async fn an_archived_account_cannot_be_updated(db: &TestDatabase) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let created = create_named(&mut client, "Acme", Segment::Smb).await?;
    let archived = client
        .archive_account(ArchiveAccountRequest {
            id: created.id.clone(),
            expected_version: None,
            idempotency_key: String::new(),
        })
        .await?
        .into_inner()
        .account
        .ok_or_else(|| anyhow::anyhow!("no account in the response"))?;
    let result = client
        .update_account(UpdateAccountRequest {
            account: Some(Account {
                name: "Renamed".into(),
                ..archived.clone()
            }),
            update_mask: Some(mask(&["name"])),
            expected_version: None,
            idempotency_key: String::new(),
        })
        .await;
    assert::status(result, Code::FailedPrecondition);
    // Nor can any other field.
    let result = client
        .update_account(UpdateAccountRequest {
            account: Some(Account {
                external_ids: vec![external_id("salesforce", "1")],
                ..archived.clone()
            }),
            update_mask: Some(mask(&["external_ids"])),
            expected_version: None,
            idempotency_key: String::new(),
        })
        .await;
    assert::status(result, Code::FailedPrecondition);
    assert_eq!(get_account(&mut client, &created.id).await?, archived);
    Ok(())
}

async fn an_archived_account_cannot_be_changed_by_an_upsert(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let upsert = |name: &str| UpsertAccountByExternalIdRequest {
        external_id: Some(external_id("hubspot", "1")),
        account: Some(account(name, Segment::Smb)),
        idempotency_key: String::new(),
        source_updated_at: None,
    };
    let created = client
        .upsert_account_by_external_id(upsert("Acme"))
        .await?
        .into_inner()
        .account
        .ok_or_else(|| anyhow::anyhow!("no account in the response"))?;
    let archived = client
        .archive_account(ArchiveAccountRequest {
            id: created.id.clone(),
            expected_version: None,
            idempotency_key: String::new(),
        })
        .await?
        .into_inner()
        .account
        .ok_or_else(|| anyhow::anyhow!("no account in the response"))?;
    let result = client
        .upsert_account_by_external_id(upsert("Acme Renamed"))
        .await;
    assert::status(result, Code::FailedPrecondition);
    assert_eq!(get_account(&mut client, &created.id).await?, archived);
    Ok(())
}

async fn archive_account_with_a_stale_expected_version_is_aborted(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let created = create_named(&mut client, "Acme", Segment::Smb).await?;
    client
        .update_account(UpdateAccountRequest {
            account: Some(Account {
                name: "Acme 2".into(),
                ..created.clone()
            }),
            update_mask: Some(mask(&["name"])),
            expected_version: None,
            idempotency_key: String::new(),
        })
        .await?;
    let result = client
        .archive_account(ArchiveAccountRequest {
            id: created.id.clone(),
            expected_version: Some(1),
            idempotency_key: String::new(),
        })
        .await;
    assert::status(result, Code::Aborted);
    let current = get_account(&mut client, &created.id).await?;
    assert_eq!(current.status, AccountStatus::Active as i32);
    assert_eq!(current.version, 2);
    let bad = client
        .archive_account(ArchiveAccountRequest {
            id: "x".into(),
            expected_version: None,
            idempotency_key: String::new(),
        })
        .await;
    assert::invalid_field(bad, "id");
    Ok(())
}

async fn assert_no_accounts(client: &mut bowtie_testkit::AccountsClient) -> anyhow::Result<()> {
    let listed = list_all(client, ListAccountsRequest::default(), 10).await?;
    assert!(
        listed.is_empty(),
        "a rejected request stored nothing, found {listed:?}"
    );
    Ok(())
}
