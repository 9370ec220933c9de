//! API keys: calls without a valid key are UNAUTHENTICATED, a read-only key
//! can read but not write (PERMISSION_DENIED), health and reflection are open.

use bowtie_proto::accounts::{
    Account, ArchiveAccountRequest, Contact, CreateAccountRequest, CreateContactRequest,
    DeleteContactRequest, GetAccountRequest, GetContactRequest, ListAccountsRequest,
    ListContactsRequest, MarkContactLeftRequest, UpdateAccountRequest, UpdateContactRequest,
    UpsertAccountByExternalIdRequest, WatchEventsRequest,
};
use bowtie_proto::accounts::{
    AttributeDeclaration, AttributeType, DeclareAttributeRequest, ListAuditEventsRequest,
};
use bowtie_proto::common::AuditFilter;
use bowtie_proto::common::Segment;
use bowtie_runtime::auth::hash_key;
use bowtie_runtime::config::{ApiKeySettings, Settings, TeamSettings};
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
    a_csm_writes_its_own_account_and_is_denied_on_another_csms_with_the_denial_audited,
    a_manager_writes_for_its_teams_accounts_and_no_others,
    configuration_is_for_admins_and_not_for_csms_or_managers,
    mine_lists_the_callers_book_and_needs_a_caller_with_one,
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

/// The secret of the test key named `name`.
fn secret(name: &str) -> String {
    format!("bt_test_person_{}", name.replace(['@', '.'], "_"))
}

/// The test settings with a key given `role` for each (name, role) pair, and
/// the team "emea" that `lead@example.com` leads and Grace is a member of.
fn people(db: &TestDatabase, keys: &[(&str, &str)]) -> anyhow::Result<Settings> {
    let mut settings = db.server_settings()?;
    for (name, role) in keys {
        settings.auth.keys.push(ApiKeySettings {
            name: (*name).to_owned(),
            hash: hash_key(&secret(name)),
            scopes: Vec::new(),
            expires_at: None,
            rate_limit: None,
            role: Some((*role).to_owned()),
        });
    }
    settings.auth.teams = vec![TeamSettings {
        name: "emea".into(),
        managers: vec!["lead@example.com".into()],
        members: vec!["grace@example.com".into()],
    }];
    Ok(settings)
}

/// An accounts client presenting the key named `name`.
fn as_person(server: &TestServer, name: &str) -> AccountsClient {
    server.accounts_with(Bearer::new(&secret(name)))
}

/// An account whose CSM is `csm`, created with the write key.
async fn account_of(server: &TestServer, name: &str, csm: &str) -> anyhow::Result<Account> {
    let mut account = bowtie_testkit::fixtures::account(name, Segment::Smb);
    account.csm = csm.to_owned();
    bowtie_testkit::fixtures::create_account(&mut server.accounts(), account).await
}

/// Renames `account` as the caller of `client`: the status code and message.
async fn rename(
    client: &mut AccountsClient,
    account: &Account,
    name: &str,
) -> Option<(Code, String)> {
    client
        .update_account(UpdateAccountRequest {
            account: Some(Account {
                id: account.id.clone(),
                name: name.to_owned(),
                ..Account::default()
            }),
            update_mask: Some(mask(&["name"])),
            ..Default::default()
        })
        .await
        .err()
        .map(|s| (s.code(), s.message().to_owned()))
}

/// The audit entries naming `account`, newest first: (principal, rpc, result).
async fn audited(server: &TestServer, account: &Account) -> anyhow::Result<Vec<[String; 3]>> {
    let events = server
        .accounts_admin()
        .list_audit_events(ListAuditEventsRequest {
            filter: Some(AuditFilter {
                account_id: account.id.clone(),
                ..AuditFilter::default()
            }),
            page: None,
        })
        .await?
        .into_inner()
        .events;
    Ok(events
        .into_iter()
        .map(bowtie_testkit::people::audited_as)
        .collect())
}

async fn a_csm_writes_its_own_account_and_is_denied_on_another_csms_with_the_denial_audited(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start_with(&people(db, &[("ada@example.com", "csm")])?).await?;
    let own = account_of(&server, "Acme", "Ada@Example.com").await?;
    let other = account_of(&server, "Globex", "grace@example.com").await?;
    let mut ada = as_person(&server, "ada@example.com");

    assert_eq!(rename(&mut ada, &own, "Acme Corp").await, None);
    assert_eq!(
        rename(&mut ada, &other, "Mine now").await,
        Some((
            Code::PermissionDenied,
            format!(
                "account {} is not in the book of \"ada@example.com\" (role csm): only its CSM or owner may change it",
                other.id
            )
        ))
    );
    // Nothing of the refused write is there, and the refusal is audited.
    let unchanged =
        bowtie_testkit::fixtures::get_account(&mut server.accounts(), &other.id).await?;
    assert_eq!((unchanged.name.as_str(), unchanged.version), ("Globex", 1));
    assert_eq!(
        audited(&server, &other).await?,
        vec![
            [
                "ada@example.com".to_owned(),
                "UpdateAccount".to_owned(),
                "PERMISSION_DENIED".to_owned()
            ],
            [
                "test-writer".to_owned(),
                "CreateAccount".to_owned(),
                "OK".to_owned()
            ],
        ]
    );
    // Its contacts are out of reach too; a new account must be its own.
    let denied = ada
        .create_contact(CreateContactRequest {
            contact: Some(contact(&other.id, "Hank")),
            ..Default::default()
        })
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(denied, Some(Code::PermissionDenied));
    let mut stranger = bowtie_testkit::fixtures::account("Initech", Segment::Smb);
    stranger.csm = "grace@example.com".into();
    let created = ada
        .create_account(CreateAccountRequest {
            account: Some(stranger.clone()),
            ..Default::default()
        })
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(created, Some(Code::PermissionDenied));
    stranger.owner = "ada@example.com".into();
    let created = ada
        .create_account(CreateAccountRequest {
            account: Some(stranger),
            ..Default::default()
        })
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(created, None);
    Ok(())
}

async fn a_manager_writes_for_its_teams_accounts_and_no_others(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start_with(&people(db, &[("lead@example.com", "manager")])?).await?;
    let team = account_of(&server, "Acme", "grace@example.com").await?;
    let own = account_of(&server, "Hooli", "lead@example.com").await?;
    let other = account_of(&server, "Globex", "lin@example.com").await?;
    let mut lead = as_person(&server, "lead@example.com");
    assert_eq!(rename(&mut lead, &team, "Acme Corp").await, None);
    assert_eq!(rename(&mut lead, &own, "Hooli XYZ").await, None);
    assert_eq!(
        rename(&mut lead, &other, "Globex Corp")
            .await
            .map(|(c, m)| (c, m.contains("(role manager)"))),
        Some((Code::PermissionDenied, true))
    );
    // A key with the write scope only writes everything, as it always did.
    assert_eq!(
        rename(&mut server.accounts(), &other, "Globex Corp").await,
        None
    );
    Ok(())
}

async fn configuration_is_for_admins_and_not_for_csms_or_managers(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let settings = people(
        db,
        &[
            ("ada@example.com", "csm"),
            ("lead@example.com", "manager"),
            ("root@example.com", "admin"),
        ],
    )?;
    let server = TestServer::start_with(&settings).await?;
    let declare = |name: &str| DeclareAttributeRequest {
        declaration: Some(AttributeDeclaration {
            name: name.to_owned(),
            r#type: AttributeType::Number as i32,
            ..AttributeDeclaration::default()
        }),
        expected_version: None,
    };
    let mut codes = Vec::new();
    for person in ["ada@example.com", "lead@example.com", "root@example.com"] {
        let answer = as_person(&server, person)
            .declare_attribute(declare("seats"))
            .await;
        codes.push((person, answer.err().map_or(Code::Ok, |s| s.code())));
    }
    assert_eq!(
        codes,
        vec![
            ("ada@example.com", Code::PermissionDenied),
            ("lead@example.com", Code::PermissionDenied),
            ("root@example.com", Code::Ok),
        ]
    );
    // An admin writes every account, whoever its CSM.
    let other = account_of(&server, "Globex", "lin@example.com").await?;
    assert_eq!(
        rename(
            &mut as_person(&server, "root@example.com"),
            &other,
            "Globex Corp"
        )
        .await,
        None
    );
    Ok(())
}

async fn mine_lists_the_callers_book_and_needs_a_caller_with_one(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let settings = people(
        db,
        &[
            ("grace@example.com", "csm"),
            ("lead@example.com", "manager"),
        ],
    )?;
    let server = TestServer::start_with(&settings).await?;
    account_of(&server, "Acme", "GRACE@example.com").await?;
    let mut owned = bowtie_testkit::fixtures::account("Hooli", Segment::Smb);
    owned.owner = "grace@example.com".into();
    bowtie_testkit::fixtures::create_account(&mut server.accounts(), owned).await?;
    account_of(&server, "Globex", "lin@example.com").await?;
    account_of(&server, "Initech", "lead@example.com").await?;
    let mine = ListAccountsRequest {
        mine: true,
        ..ListAccountsRequest::default()
    };
    let book = async |name: &str| -> anyhow::Result<Vec<String>> {
        let listed = list_all(&mut as_person(&server, name), mine.clone(), 10).await?;
        Ok(bowtie_testkit::fixtures::names(&listed))
    };
    assert_eq!(book("grace@example.com").await?, vec!["Acme", "Hooli"]);
    assert_eq!(
        book("lead@example.com").await?,
        vec!["Acme", "Hooli", "Initech"]
    );
    assert::invalid_field(server.accounts().list_accounts(mine.clone()).await, "mine");
    Ok(())
}
