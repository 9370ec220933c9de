//! API keys: calls without a valid key are UNAUTHENTICATED, a read-only key
//! can read but not write (PERMISSION_DENIED), health and reflection are open.

use bowtie_proto::accounts::{
    Account, ArchiveAccountRequest, Contact, CreateAccountRequest, CreateContactRequest,
    DeleteContactRequest, GetAccountRequest, GetContactRequest, ListAccountsRequest,
    ListContactsRequest, MarkContactLeftRequest, UpdateAccountRequest, UpdateContactRequest,
    UpsertAccountByExternalIdRequest, WatchEventsRequest,
};
use bowtie_proto::common::Segment;
use bowtie_testkit::fixtures::{
    contact, create_contact, create_named, external_id, list_all, mask,
};
use bowtie_testkit::{AccountsClient, Bearer, TestDatabase, TestServer, assert, backend_test};
use tonic::Code;

backend_test!(
    calls_without_a_key_are_unauthenticated,
    calls_with_an_unknown_key_are_unauthenticated,
    a_read_only_key_can_read_but_every_write_is_permission_denied,
    write_and_admin_keys_can_write,
    a_key_over_its_rate_limit_is_resource_exhausted_with_retry_after_and_writes_nothing,
);

/// One call of every method, with valid arguments, each answering only its
/// status code (streams are opened, not read).
async fn call_every_method(
    client: &mut AccountsClient,
    account: &Account,
    contact: &Contact,
) -> Vec<(&'static str, Code)> {
    fn code<T>(result: Result<T, tonic::Status>) -> Code {
        result.err().map_or(Code::Ok, |s| s.code())
    }
    let mut codes = Vec::new();
    codes.push((
        "GetAccount",
        code(
            client
                .get_account(GetAccountRequest {
                    id: account.id.clone(),
                })
                .await,
        ),
    ));
    codes.push((
        "ListAccounts",
        code(client.list_accounts(ListAccountsRequest::default()).await),
    ));
    codes.push((
        "GetContact",
        code(
            client
                .get_contact(GetContactRequest {
                    id: contact.id.clone(),
                })
                .await,
        ),
    ));
    codes.push((
        "ListContacts",
        code(
            client
                .list_contacts(ListContactsRequest {
                    account_id: account.id.clone(),
                    page: None,
                })
                .await,
        ),
    ));
    codes.push((
        "WatchEvents",
        code(client.watch_events(WatchEventsRequest::default()).await),
    ));
    codes.push((
        "CreateAccount",
        code(
            client
                .create_account(CreateAccountRequest {
                    account: Some(bowtie_testkit::fixtures::account("Denied", Segment::Smb)),
                    idempotency_key: String::new(),
                })
                .await,
        ),
    ));
    codes.push((
        "UpdateAccount",
        code(
            client
                .update_account(UpdateAccountRequest {
                    account: Some(Account {
                        name: "Denied".into(),
                        ..account.clone()
                    }),
                    update_mask: Some(mask(&["name"])),
                    expected_version: None,
                    idempotency_key: String::new(),
                })
                .await,
        ),
    ));
    codes.push((
        "UpsertAccountByExternalId",
        code(
            client
                .upsert_account_by_external_id(UpsertAccountByExternalIdRequest {
                    external_id: Some(external_id("hubspot", "denied")),
                    account: Some(bowtie_testkit::fixtures::account("Denied", Segment::Smb)),
                    idempotency_key: String::new(),
                    source_updated_at: None,
                })
                .await,
        ),
    ));
    codes.push((
        "CreateContact",
        code(
            client
                .create_contact(CreateContactRequest {
                    contact: Some(bowtie_testkit::fixtures::contact(&account.id, "Denied")),
                    idempotency_key: String::new(),
                })
                .await,
        ),
    ));
    codes.push((
        "UpdateContact",
        code(
            client
                .update_contact(UpdateContactRequest {
                    contact: Some(Contact {
                        name: "Denied".into(),
                        ..contact.clone()
                    }),
                    update_mask: Some(mask(&["name"])),
                    expected_version: None,
                    idempotency_key: String::new(),
                })
                .await,
        ),
    ));
    codes.push((
        "MarkContactLeft",
        code(
            client
                .mark_contact_left(MarkContactLeftRequest {
                    id: contact.id.clone(),
                    left_time: None,
                    idempotency_key: String::new(),
                })
                .await,
        ),
    ));
    codes.push((
        "DeleteContact",
        code(
            client
                .delete_contact(DeleteContactRequest {
                    id: contact.id.clone(),
                    idempotency_key: String::new(),
                })
                .await,
        ),
    ));
    codes.push((
        "ArchiveAccount",
        code(
            client
                .archive_account(ArchiveAccountRequest {
                    id: account.id.clone(),
                    expected_version: None,
                    idempotency_key: String::new(),
                })
                .await,
        ),
    ));
    codes
}

const READS: [&str; 5] = [
    "GetAccount",
    "ListAccounts",
    "GetContact",
    "ListContacts",
    "WatchEvents",
];

/// An account with a contact, created with the write key.
async fn seed(server: &TestServer) -> anyhow::Result<(Account, Contact)> {
    let mut client = server.accounts();
    let acme = create_named(&mut client, "Acme", Segment::Smb).await?;
    let ana = create_contact(&mut client, contact(&acme.id, "Ana Lima")).await?;
    Ok((acme, ana))
}

/// Checks that nothing but the seed was written.
async fn assert_unchanged(server: &TestServer, acme: &Account) -> anyhow::Result<()> {
    let mut client = server.accounts();
    let listed = list_all(&mut client, ListAccountsRequest::default(), 10).await?;
    assert_eq!(listed, vec![acme.clone()], "a refused call changed nothing");
    Ok(())
}

async fn calls_without_a_key_are_unauthenticated(db: &TestDatabase) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let (acme, ana) = seed(&server).await?;
    let mut anonymous = server.accounts_with(Bearer::none());
    for (method, code) in call_every_method(&mut anonymous, &acme, &ana).await {
        assert_eq!(code, Code::Unauthenticated, "{method} without a key");
    }
    assert_unchanged(&server, &acme).await
}

async fn calls_with_an_unknown_key_are_unauthenticated(db: &TestDatabase) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let (acme, ana) = seed(&server).await?;
    let near_miss = format!("{}x", bowtie_testkit::WRITE_KEY);
    for key in ["bt_not_a_real_key", near_miss.as_str()] {
        let mut stranger = server.accounts_with(Bearer::new(key));
        for (method, code) in call_every_method(&mut stranger, &acme, &ana).await {
            assert_eq!(code, Code::Unauthenticated, "{method} with key {key:?}");
        }
    }
    // A key hash is not a key.
    let hash = bowtie_runtime::auth::hash_key(bowtie_testkit::WRITE_KEY);
    let mut hashed = server.accounts_with(Bearer::new(&hash));
    let status = assert::status(
        hashed
            .get_account(GetAccountRequest {
                id: acme.id.clone(),
            })
            .await,
        Code::Unauthenticated,
    );
    assert!(
        !status.message().contains(bowtie_testkit::WRITE_KEY),
        "the error does not echo keys"
    );
    assert_unchanged(&server, &acme).await
}

async fn a_read_only_key_can_read_but_every_write_is_permission_denied(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let (acme, ana) = seed(&server).await?;
    let mut reader = server.accounts_read_only();
    for (method, code) in call_every_method(&mut reader, &acme, &ana).await {
        if READS.contains(&method) {
            assert_eq!(code, Code::Ok, "{method} with the read key");
        } else {
            assert_eq!(code, Code::PermissionDenied, "{method} with the read key");
        }
    }
    assert_unchanged(&server, &acme).await
}

async fn write_and_admin_keys_can_write(db: &TestDatabase) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    for mut client in [server.accounts(), server.accounts_admin()] {
        let (acme, ana) = seed(&server).await?;
        for (method, code) in call_every_method(&mut client, &acme, &ana).await {
            assert_eq!(code, Code::Ok, "{method}");
        }
    }
    Ok(())
}

async fn a_key_over_its_rate_limit_is_resource_exhausted_with_retry_after_and_writes_nothing(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let mut settings = db.server_settings()?;
    // Write keys: three calls at once, then one every 100 s.
    settings.auth.rate_limits.write = bowtie_runtime::config::RateBudget {
        per_second: 0.01,
        burst: 3,
    };
    let server = TestServer::start_with(&settings).await?;
    let mut writer = server.accounts();
    for name in ["Acme", "Globex", "Initech"] {
        create_named(&mut writer, name, Segment::Smb).await?;
    }
    let refused = writer
        .create_account(CreateAccountRequest {
            account: Some(bowtie_testkit::fixtures::account("Umbrella", Segment::Smb)),
            ..Default::default()
        })
        .await
        .err();
    assert_eq!(
        refused.as_ref().map(tonic::Status::code),
        Some(Code::ResourceExhausted)
    );
    let retry_after: Option<u64> = refused
        .as_ref()
        .and_then(|s| s.metadata().get("retry-after"))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    assert!(
        retry_after.is_some_and(|s| (1..=100).contains(&s)),
        "{retry_after:?}"
    );
    // Another principal is not held back, and the refused call wrote nothing.
    let mut admin = server.accounts_admin();
    create_named(&mut admin, "Hooli", Segment::Smb).await?;
    let names: Vec<String> = list_all(
        &mut server.accounts_read_only(),
        ListAccountsRequest::default(),
        10,
    )
    .await?
    .into_iter()
    .map(|a| a.name)
    .collect();
    assert!(!names.contains(&"Umbrella".to_owned()), "{names:?}");
    assert_eq!(names.len(), 4, "{names:?}");
    Ok(())
}
