//! Contacts: the people at an account, their lifecycle (create, update,
//! delete a mistake, mark someone who left) and its validation.

use bowtie_proto::accounts::{
    Contact, ContactRole, ContactStatus, CreateContactRequest, DeleteContactRequest,
    GetContactRequest, ListContactsRequest, MarkContactLeftRequest, UpdateContactRequest,
};
use bowtie_proto::common::Segment;
use bowtie_testkit::fixtures::{contact, create_contact, create_named, mask, page};
use bowtie_testkit::{AccountsClient, TestDatabase, TestServer, assert, backend_test};
use tonic::Code;

backend_test!(
    create_contact_returns_an_active_contact_at_version_one,
    create_contact_for_an_unknown_account_is_not_found,
    create_contact_validates_its_fields,
    create_contact_replayed_with_the_same_idempotency_key_creates_one_contact,
    get_contact_returns_what_was_created_and_unknown_ids_are_not_found,
    update_contact_changes_only_the_masked_fields_and_bumps_the_version,
    update_contact_requires_a_mask_and_a_current_expected_version,
    list_contacts_returns_only_that_accounts_contacts_oldest_first,
    delete_contact_removes_it,
    mark_contact_left_records_the_departure_once,
    mark_contact_left_accepts_a_past_time_and_rejects_a_future_one,
);

async fn get_contact(client: &mut AccountsClient, id: &str) -> anyhow::Result<Contact> {
    client
        .get_contact(GetContactRequest { id: id.into() })
        .await?
        .into_inner()
        .contact
        .ok_or_else(|| anyhow::anyhow!("GetContact answered without a contact"))
}

async fn list_contacts(
    client: &mut AccountsClient,
    account_id: &str,
) -> anyhow::Result<Vec<Contact>> {
    let mut all = Vec::new();
    let mut token = String::new();
    for _ in 0..100 {
        let response = client
            .list_contacts(ListContactsRequest {
                account_id: account_id.into(),
                page: page(2, &token),
            })
            .await?
            .into_inner();
        all.extend(response.contacts);
        token = response.page.map(|p| p.next_page_token).unwrap_or_default();
        if token.is_empty() {
            return Ok(all);
        }
    }
    anyhow::bail!("ListContacts does not end")
}

fn micros(ts: Option<&prost_types::Timestamp>) -> i64 {
    ts.map_or(0, |t| t.seconds * 1_000_000 + i64::from(t.nanos / 1000))
}

async fn create_contact_returns_an_active_contact_at_version_one(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let acme = create_named(&mut client, "Acme", Segment::Smb).await?;
    let input = Contact {
        roles: vec![
            ContactRole::DecisionMaker as i32,
            ContactRole::Champion as i32,
        ],
        ..contact(&acme.id, "Ana Lima")
    };
    let created = create_contact(&mut client, input.clone()).await?;
    assert!(uuid::Uuid::parse_str(&created.id).is_ok());
    assert_eq!(created.account_id, acme.id);
    assert_eq!(created.name, "Ana Lima");
    assert_eq!(created.email, input.email);
    assert_eq!(created.title, input.title);
    let mut roles = created.roles.clone();
    roles.sort_unstable();
    assert_eq!(
        roles,
        vec![
            ContactRole::Champion as i32,
            ContactRole::DecisionMaker as i32
        ]
    );
    assert_eq!(created.status, ContactStatus::Active as i32);
    assert_eq!(created.left_time, None);
    assert_eq!(created.version, 1);
    assert!(micros(created.create_time.as_ref()) > 0);
    // Only the name is required.
    let minimal = create_contact(
        &mut client,
        Contact {
            account_id: acme.id.clone(),
            name: "Bo".into(),
            ..Contact::default()
        },
    )
    .await?;
    assert_eq!((minimal.email.as_str(), minimal.roles.len()), ("", 0));
    Ok(())
}

async fn create_contact_for_an_unknown_account_is_not_found(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let unknown = uuid::Uuid::new_v4().to_string();
    let result = client
        .create_contact(CreateContactRequest {
            contact: Some(contact(&unknown, "Ana Lima")),
            idempotency_key: String::new(),
        })
        .await;
    assert::status(result, Code::NotFound);
    Ok(())
}

async fn create_contact_validates_its_fields(db: &TestDatabase) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let acme = create_named(&mut client, "Acme", Segment::Smb).await?;
    let create = |c: Contact| {
        let mut client = client.clone();
        async move {
            client
                .create_contact(CreateContactRequest {
                    contact: Some(c),
                    idempotency_key: String::new(),
                })
                .await
        }
    };
    let base = contact(&acme.id, "Ana Lima");
    assert::invalid_field(
        create(Contact {
            name: "  ".into(),
            ..base.clone()
        })
        .await,
        "contact.name",
    );
    assert::invalid_field(
        create(Contact {
            name: "n".repeat(201),
            ..base.clone()
        })
        .await,
        "contact.name",
    );
    assert::invalid_field_with(
        create(Contact {
            account_id: "acme".into(),
            ..base.clone()
        })
        .await,
        "contact.account_id",
        "must be a UUID",
    );
    assert::invalid_field(
        create(Contact {
            account_id: String::new(),
            ..base.clone()
        })
        .await,
        "contact.account_id",
    );
    assert::invalid_field(
        create(Contact {
            email: "not an email".into(),
            ..base.clone()
        })
        .await,
        "contact.email",
    );
    let status = assert::status(
        create(Contact {
            roles: vec![0],
            ..base.clone()
        })
        .await,
        Code::InvalidArgument,
    );
    assert!(
        assert::violated_fields(&status)
            .iter()
            .any(|f| f.starts_with("contact.roles")),
        "names contact.roles, got {:?}",
        assert::violated_fields(&status)
    );
    let status = assert::status(
        create(Contact {
            roles: vec![17],
            ..base.clone()
        })
        .await,
        Code::InvalidArgument,
    );
    assert!(
        assert::violated_fields(&status)
            .iter()
            .any(|f| f.starts_with("contact.roles"))
    );
    assert::status(
        client
            .create_contact(CreateContactRequest {
                contact: None,
                idempotency_key: String::new(),
            })
            .await,
        Code::InvalidArgument,
    );
    assert!(list_contacts(&mut client, &acme.id).await?.is_empty());
    Ok(())
}

async fn create_contact_replayed_with_the_same_idempotency_key_creates_one_contact(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let acme = create_named(&mut client, "Acme", Segment::Smb).await?;
    let request = CreateContactRequest {
        contact: Some(contact(&acme.id, "Ana Lima")),
        idempotency_key: "contact-import-1".into(),
    };
    let first = client.create_contact(request.clone()).await?.into_inner();
    let second = client.create_contact(request.clone()).await?.into_inner();
    assert_eq!(first, second);
    assert_eq!(list_contacts(&mut client, &acme.id).await?.len(), 1);
    let different = client
        .create_contact(CreateContactRequest {
            contact: Some(contact(&acme.id, "Bo Chen")),
            ..request
        })
        .await;
    assert::invalid_field(different, "idempotency_key");
    assert_eq!(list_contacts(&mut client, &acme.id).await?.len(), 1);
    Ok(())
}

async fn get_contact_returns_what_was_created_and_unknown_ids_are_not_found(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let acme = create_named(&mut client, "Acme", Segment::Smb).await?;
    let created = create_contact(&mut client, contact(&acme.id, "Ana Lima")).await?;
    assert_eq!(get_contact(&mut client, &created.id).await?, created);
    let mut reader = server.accounts_read_only();
    assert_eq!(get_contact(&mut reader, &created.id).await?, created);

    let unknown = client
        .get_contact(GetContactRequest {
            id: uuid::Uuid::new_v4().to_string(),
        })
        .await;
    assert::status(unknown, Code::NotFound);
    // An account id is not a contact id.
    let wrong_kind = client
        .get_contact(GetContactRequest {
            id: acme.id.clone(),
        })
        .await;
    assert::status(wrong_kind, Code::NotFound);
    let malformed = client
        .get_contact(GetContactRequest { id: "ana".into() })
        .await;
    assert::invalid_field_with(malformed, "id", "must be a UUID");
    Ok(())
}

async fn update_contact_changes_only_the_masked_fields_and_bumps_the_version(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let acme = create_named(&mut client, "Acme", Segment::Smb).await?;
    let created = create_contact(&mut client, contact(&acme.id, "Ana Lima")).await?;
    let updated = client
        .update_contact(UpdateContactRequest {
            contact: Some(Contact {
                title: "CFO".into(),
                roles: vec![ContactRole::DecisionMaker as i32],
                name: "Not In The Mask".into(),
                ..created.clone()
            }),
            update_mask: Some(mask(&["title", "roles"])),
            expected_version: Some(1),
            idempotency_key: String::new(),
        })
        .await?
        .into_inner()
        .contact
        .ok_or_else(|| anyhow::anyhow!("no contact in the response"))?;
    assert_eq!(updated.title, "CFO");
    assert_eq!(updated.roles, vec![ContactRole::DecisionMaker as i32]);
    assert_eq!(updated.name, "Ana Lima");
    assert_eq!(updated.email, created.email);
    assert_eq!(updated.account_id, acme.id);
    assert_eq!(updated.version, 2);
    assert_eq!(get_contact(&mut client, &created.id).await?, updated);

    let cleared = client
        .update_contact(UpdateContactRequest {
            contact: Some(Contact {
                email: String::new(),
                roles: Vec::new(),
                ..updated.clone()
            }),
            update_mask: Some(mask(&["email", "roles"])),
            expected_version: None,
            idempotency_key: String::new(),
        })
        .await?
        .into_inner()
        .contact
        .ok_or_else(|| anyhow::anyhow!("no contact in the response"))?;
    assert_eq!(
        (cleared.email.as_str(), cleared.roles.len(), cleared.version),
        ("", 0, 3)
    );
    Ok(())
}

async fn update_contact_requires_a_mask_and_a_current_expected_version(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let acme = create_named(&mut client, "Acme", Segment::Smb).await?;
    let created = create_contact(&mut client, contact(&acme.id, "Ana Lima")).await?;
    let request = |paths: &[&str], expected_version: Option<i64>| UpdateContactRequest {
        contact: Some(Contact {
            name: "Ana Souza".into(),
            ..created.clone()
        }),
        update_mask: Some(mask(paths)),
        expected_version,
        idempotency_key: String::new(),
    };
    assert::invalid_field(
        client.update_contact(request(&[], None)).await,
        "update_mask",
    );
    assert::invalid_field(
        client.update_contact(request(&["account_id"], None)).await,
        "update_mask",
    );
    assert::invalid_field(
        client
            .update_contact(UpdateContactRequest {
                update_mask: None,
                ..request(&["name"], None)
            })
            .await,
        "update_mask",
    );
    client.update_contact(request(&["name"], Some(1))).await?;
    assert::status(
        client.update_contact(request(&["name"], Some(1))).await,
        Code::Aborted,
    );
    let unknown = client
        .update_contact(UpdateContactRequest {
            contact: Some(Contact {
                id: uuid::Uuid::new_v4().to_string(),
                ..created.clone()
            }),
            ..request(&["name"], None)
        })
        .await;
    assert::status(unknown, Code::NotFound);
    let current = get_contact(&mut client, &created.id).await?;
    assert_eq!((current.name.as_str(), current.version), ("Ana Souza", 2));
    Ok(())
}

async fn list_contacts_returns_only_that_accounts_contacts_oldest_first(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let acme = create_named(&mut client, "Acme", Segment::Smb).await?;
    let globex = create_named(&mut client, "Globex", Segment::Smb).await?;
    let mut expected = Vec::new();
    for name in ["Zoe", "Yann", "Xavier", "Wanda", "Victor"] {
        expected.push(create_contact(&mut client, contact(&acme.id, name)).await?);
        create_contact(
            &mut client,
            contact(&globex.id, &format!("{name} at Globex")),
        )
        .await?;
    }
    // Paged by two, so this also walks three pages.
    assert_eq!(list_contacts(&mut client, &acme.id).await?, expected);
    let mut reader = server.accounts_read_only();
    assert_eq!(list_contacts(&mut reader, &globex.id).await?.len(), 5);

    let empty = create_named(&mut client, "Initech", Segment::Smb).await?;
    assert!(list_contacts(&mut client, &empty.id).await?.is_empty());
    let malformed = client
        .list_contacts(ListContactsRequest {
            account_id: "acme".into(),
            page: None,
        })
        .await;
    assert::invalid_field(malformed, "account_id");
    Ok(())
}

async fn delete_contact_removes_it(db: &TestDatabase) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let acme = create_named(&mut client, "Acme", Segment::Smb).await?;
    let ana = create_contact(&mut client, contact(&acme.id, "Ana Lima")).await?;
    let bo = create_contact(&mut client, contact(&acme.id, "Bo Chen")).await?;
    client
        .delete_contact(DeleteContactRequest {
            id: ana.id.clone(),
            idempotency_key: String::new(),
        })
        .await?;
    assert::status(
        client
            .get_contact(GetContactRequest { id: ana.id.clone() })
            .await,
        Code::NotFound,
    );
    assert_eq!(list_contacts(&mut client, &acme.id).await?, vec![bo]);
    assert::status(
        client
            .delete_contact(DeleteContactRequest {
                id: ana.id.clone(),
                idempotency_key: String::new(),
            })
            .await,
        Code::NotFound,
    );
    assert::invalid_field(
        client
            .delete_contact(DeleteContactRequest {
                id: "ana".into(),
                idempotency_key: String::new(),
            })
            .await,
        "id",
    );
    Ok(())
}

async fn mark_contact_left_records_the_departure_once(db: &TestDatabase) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let acme = create_named(&mut client, "Acme", Segment::Smb).await?;
    let ana = create_contact(&mut client, contact(&acme.id, "Ana Lima")).await?;
    let before = bowtie_runtime::validate::now_micros();
    let left = client
        .mark_contact_left(MarkContactLeftRequest {
            id: ana.id.clone(),
            left_time: None,
            idempotency_key: String::new(),
        })
        .await?
        .into_inner()
        .contact
        .ok_or_else(|| anyhow::anyhow!("no contact in the response"))?;
    assert_eq!(left.status, ContactStatus::Left as i32);
    assert_eq!(left.version, 2);
    let left_at = micros(left.left_time.as_ref());
    assert!(
        left_at >= before - 1_000_000
            && left_at <= bowtie_runtime::validate::now_micros() + 1_000_000,
        "left_time defaults to now"
    );
    assert_eq!(get_contact(&mut client, &ana.id).await?, left);
    // Still listed: the person existed, they just left.
    assert_eq!(
        list_contacts(&mut client, &acme.id).await?,
        vec![left.clone()]
    );

    let again = client
        .mark_contact_left(MarkContactLeftRequest {
            id: ana.id.clone(),
            left_time: None,
            idempotency_key: String::new(),
        })
        .await;
    assert::status(again, Code::FailedPrecondition);
    assert_eq!(get_contact(&mut client, &ana.id).await?, left);
    let unknown = client
        .mark_contact_left(MarkContactLeftRequest {
            id: uuid::Uuid::new_v4().to_string(),
            left_time: None,
            idempotency_key: String::new(),
        })
        .await;
    assert::status(unknown, Code::NotFound);
    Ok(())
}

async fn mark_contact_left_accepts_a_past_time_and_rejects_a_future_one(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let acme = create_named(&mut client, "Acme", Segment::Smb).await?;
    let ana = create_contact(&mut client, contact(&acme.id, "Ana Lima")).await?;
    let in_a_day = prost_types::Timestamp {
        seconds: bowtie_runtime::validate::now_micros() / 1_000_000 + 86_400,
        nanos: 0,
    };
    let future = client
        .mark_contact_left(MarkContactLeftRequest {
            id: ana.id.clone(),
            left_time: Some(in_a_day),
            idempotency_key: String::new(),
        })
        .await;
    assert::invalid_field(future, "left_time");
    assert_eq!(
        get_contact(&mut client, &ana.id).await?.status,
        ContactStatus::Active as i32
    );

    let last_year = prost_types::Timestamp {
        seconds: 1_700_000_000,
        nanos: 123_456_000,
    };
    let left = client
        .mark_contact_left(MarkContactLeftRequest {
            id: ana.id.clone(),
            left_time: Some(last_year),
            idempotency_key: String::new(),
        })
        .await?
        .into_inner()
        .contact
        .ok_or_else(|| anyhow::anyhow!("no contact in the response"))?;
    assert_eq!(
        left.left_time,
        Some(last_year),
        "a back-dated departure is kept as given"
    );
    Ok(())
}
