//! Custom attributes: an admin declares them, accounts carry typed values
//! checked against the declaration (set, cleared, shown on reads and the
//! feed), ListAccounts filters by them, and a bad value or an undeclared
//! name is INVALID_ARGUMENT naming `account.attributes.<name>` with nothing
//! written.

use std::collections::HashMap;

use bowtie_proto::accounts::attribute_value::Kind;
use bowtie_proto::accounts::{
    Account, AttributeDeclaration, AttributeType, AttributeValue, CreateAccountRequest,
    DeclareAttributeRequest, DeleteAttributeDeclarationRequest, ListAccountsRequest,
    ListAttributeDeclarationsRequest, UpdateAccountRequest, UpsertAccountByExternalIdRequest,
};
use bowtie_proto::common::Segment;
use bowtie_testkit::fixtures::{
    account, account_payload, create_account, external_id, get_account, list_all, mask, names,
    next_events, watch,
};
use bowtie_testkit::{AccountsClient, TestDatabase, TestServer, assert, backend_test};
use tonic::Code;

backend_test!(
    an_admin_declares_attributes_and_lists_them_by_name,
    declaring_needs_the_admin_scope,
    a_declaration_is_versioned_and_a_bad_one_is_named,
    typed_values_are_set_read_back_and_shown_on_the_feed,
    an_undeclared_attribute_or_a_wrong_value_is_named_and_nothing_is_written,
    an_empty_value_clears_an_attribute_and_others_are_kept,
    list_accounts_filters_by_attribute_value,
    an_upsert_sets_attributes_and_keeps_the_ones_it_does_not_name,
    a_declaration_cannot_change_type_or_drop_a_used_value_while_accounts_hold_values,
    a_declaration_is_deleted_only_when_no_account_holds_a_value,
);

fn text(t: &str) -> AttributeValue {
    AttributeValue {
        kind: Some(Kind::StringValue(t.to_owned())),
    }
}

fn number(n: f64) -> AttributeValue {
    AttributeValue {
        kind: Some(Kind::NumberValue(n)),
    }
}

fn flag(b: bool) -> AttributeValue {
    AttributeValue {
        kind: Some(Kind::BoolValue(b)),
    }
}

fn clear() -> AttributeValue {
    AttributeValue { kind: None }
}

fn values(pairs: &[(&str, AttributeValue)]) -> HashMap<String, AttributeValue> {
    pairs
        .iter()
        .map(|(n, v)| ((*n).to_owned(), v.clone()))
        .collect()
}

fn declaration(name: &str, kind: AttributeType, allowed: &[&str]) -> AttributeDeclaration {
    AttributeDeclaration {
        name: name.to_owned(),
        r#type: kind as i32,
        allowed_values: allowed.iter().map(|a| (*a).to_owned()).collect(),
        description: format!("the {name}"),
        ..AttributeDeclaration::default()
    }
}

async fn declare(
    admin: &mut AccountsClient,
    d: AttributeDeclaration,
) -> Result<AttributeDeclaration, tonic::Status> {
    Ok(admin
        .declare_attribute(DeclareAttributeRequest {
            declaration: Some(d),
            expected_version: None,
        })
        .await?
        .into_inner()
        .declaration
        .unwrap_or_default())
}

/// Declares plan_family (enum core/plus), seats (number), beta (bool),
/// go_live (date) and region (string).
async fn declare_all(admin: &mut AccountsClient) -> anyhow::Result<()> {
    for d in [
        declaration("plan_family", AttributeType::Enum, &["core", "plus"]),
        declaration("seats", AttributeType::Number, &[]),
        declaration("beta", AttributeType::Bool, &[]),
        declaration("go_live", AttributeType::Date, &[]),
        declaration("region", AttributeType::String, &[]),
    ] {
        declare(admin, d).await?;
    }
    Ok(())
}

fn with_attributes(name: &str, pairs: &[(&str, AttributeValue)]) -> Account {
    Account {
        attributes: values(pairs),
        ..account(name, Segment::Smb)
    }
}

fn set_attributes(account: &Account, pairs: &[(&str, AttributeValue)]) -> UpdateAccountRequest {
    UpdateAccountRequest {
        account: Some(Account {
            attributes: values(pairs),
            ..account.clone()
        }),
        update_mask: Some(mask(&["attributes"])),
        expected_version: None,
        idempotency_key: String::new(),
    }
}

fn by_attributes(pairs: &[(&str, AttributeValue)]) -> ListAccountsRequest {
    ListAccountsRequest {
        attributes: values(pairs),
        ..ListAccountsRequest::default()
    }
}

async fn an_admin_declares_attributes_and_lists_them_by_name(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut admin = server.accounts_admin();
    declare_all(&mut admin).await?;
    let listed = server
        .accounts_read_only()
        .list_attribute_declarations(ListAttributeDeclarationsRequest {})
        .await?
        .into_inner()
        .declarations;
    let listed_names: Vec<&str> = listed.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        listed_names,
        vec!["beta", "go_live", "plan_family", "region", "seats"]
    );
    let plan = &listed[2];
    assert_eq!(plan.r#type, AttributeType::Enum as i32);
    assert_eq!(plan.allowed_values, vec!["core", "plus"]);
    assert_eq!(plan.description, "the plan_family");
    assert_eq!(plan.version, 1);
    Ok(())
}

async fn declaring_needs_the_admin_scope(db: &TestDatabase) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let refused = declare(
        &mut server.accounts(),
        declaration("seats", AttributeType::Number, &[]),
    )
    .await;
    assert::status(refused, Code::PermissionDenied);
    let listed = server
        .accounts()
        .list_attribute_declarations(ListAttributeDeclarationsRequest {})
        .await?
        .into_inner();
    assert!(listed.declarations.is_empty());
    Ok(())
}

async fn a_declaration_is_versioned_and_a_bad_one_is_named(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut admin = server.accounts_admin();
    let first = declare(
        &mut admin,
        declaration("plan_family", AttributeType::Enum, &["core"]),
    )
    .await?;
    assert_eq!(first.version, 1);
    let again = declare(
        &mut admin,
        declaration("plan_family", AttributeType::Enum, &["core"]),
    )
    .await?;
    assert_eq!(again.version, 1, "an identical declaration changes nothing");
    let widened = admin
        .declare_attribute(DeclareAttributeRequest {
            declaration: Some(declaration(
                "plan_family",
                AttributeType::Enum,
                &["core", "plus"],
            )),
            expected_version: Some(1),
        })
        .await?
        .into_inner()
        .declaration
        .unwrap_or_default();
    assert_eq!(widened.version, 2);
    let stale = admin
        .declare_attribute(DeclareAttributeRequest {
            declaration: Some(declaration("plan_family", AttributeType::Enum, &["x"])),
            expected_version: Some(1),
        })
        .await;
    assert::status(stale, Code::Aborted);
    let exists = admin
        .declare_attribute(DeclareAttributeRequest {
            declaration: Some(declaration("plan_family", AttributeType::Enum, &["x"])),
            expected_version: Some(0),
        })
        .await;
    assert::status(exists, Code::Aborted);
    assert::invalid_field(
        declare(
            &mut admin,
            declaration("PlanFamily", AttributeType::Enum, &["a"]),
        )
        .await,
        "declaration.name",
    );
    assert::invalid_field(
        declare(
            &mut admin,
            declaration("tier", AttributeType::Unspecified, &[]),
        )
        .await,
        "declaration.type",
    );
    assert::invalid_field(
        declare(&mut admin, declaration("tier", AttributeType::Enum, &[])).await,
        "declaration.allowed_values",
    );
    assert::invalid_field(
        declare(
            &mut admin,
            declaration("tier", AttributeType::Enum, &["a", "a"]),
        )
        .await,
        "declaration.allowed_values[1]",
    );
    assert::invalid_field(
        declare(
            &mut admin,
            declaration("seats", AttributeType::Number, &["1"]),
        )
        .await,
        "declaration.allowed_values",
    );
    let listed = admin
        .list_attribute_declarations(ListAttributeDeclarationsRequest {})
        .await?
        .into_inner()
        .declarations;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].allowed_values, vec!["core", "plus"]);
    Ok(())
}

async fn typed_values_are_set_read_back_and_shown_on_the_feed(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    declare_all(&mut server.accounts_admin()).await?;
    let mut client = server.accounts();
    let created = create_account(
        &mut client,
        with_attributes(
            "Acme",
            &[
                ("plan_family", text(" plus ")),
                ("seats", number(12.5)),
                ("beta", flag(true)),
                ("go_live", text("2026-02-28")),
                ("region", text("EMEA North")),
            ],
        ),
    )
    .await?;
    let expected = values(&[
        ("plan_family", text("plus")),
        ("seats", number(12.5)),
        ("beta", flag(true)),
        ("go_live", text("2026-02-28")),
        ("region", text("EMEA North")),
    ]);
    assert_eq!(created.attributes, expected);
    assert_eq!(
        get_account(&mut client, &created.id).await?.attributes,
        expected
    );
    let listed = list_all(&mut client, ListAccountsRequest::default(), 5).await?;
    assert_eq!(listed[0].attributes, expected);
    // Five declarations, then the account.
    let events = next_events(&mut watch(&mut client, 0).await?, 6, 10).await?;
    let declared: Vec<&str> = events[..5].iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(declared, vec!["attribute.declared"; 5]);
    assert_eq!(events[5].event_type, "account.created");
    assert_eq!(account_payload(&events[5])?.attributes, expected);
    Ok(())
}

async fn an_undeclared_attribute_or_a_wrong_value_is_named_and_nothing_is_written(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    declare_all(&mut server.accounts_admin()).await?;
    let mut client = server.accounts();
    let create = |a: Account| CreateAccountRequest {
        account: Some(a),
        idempotency_key: String::new(),
    };
    assert::invalid_field_with(
        client
            .create_account(create(with_attributes(
                "Acme",
                &[("seats", number(3.0)), ("colour", text("red"))],
            )))
            .await,
        "account.attributes.colour",
        "is not a declared attribute",
    );
    assert::invalid_field_with(
        client
            .create_account(create(with_attributes(
                "Acme",
                &[("plan_family", text("gold"))],
            )))
            .await,
        "account.attributes.plan_family",
        "\"gold\" is not one of core, plus",
    );
    assert!(
        list_all(&mut client, ListAccountsRequest::default(), 5)
            .await?
            .is_empty()
    );
    let created = create_account(
        &mut client,
        with_attributes("Acme", &[("seats", number(3.0))]),
    )
    .await?;
    for (name, bad) in [
        ("seats", text("three")),
        ("seats", number(f64::NAN)),
        ("beta", text("yes")),
        ("go_live", text("2026-02-30")),
        ("region", number(1.0)),
        ("region", text("   ")),
    ] {
        assert::invalid_field(
            client
                .update_account(set_attributes(
                    &created,
                    &[("seats", number(4.0)), (name, bad)],
                ))
                .await,
            &format!("account.attributes.{name}"),
        );
    }
    let after = get_account(&mut client, &created.id).await?;
    assert_eq!(after.attributes, values(&[("seats", number(3.0))]));
    assert_eq!(after.version, created.version);
    Ok(())
}

async fn an_empty_value_clears_an_attribute_and_others_are_kept(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    declare_all(&mut server.accounts_admin()).await?;
    let mut client = server.accounts();
    let created = create_account(
        &mut client,
        with_attributes("Acme", &[("seats", number(3.0)), ("beta", flag(false))]),
    )
    .await?;
    let updated = client
        .update_account(set_attributes(
            &created,
            &[("seats", clear()), ("region", text("APAC"))],
        ))
        .await?
        .into_inner()
        .account
        .unwrap_or_default();
    let expected = values(&[("beta", flag(false)), ("region", text("APAC"))]);
    assert_eq!(updated.attributes, expected);
    assert_eq!(updated.version, created.version + 1);
    assert_eq!(
        get_account(&mut client, &created.id).await?.attributes,
        expected
    );
    assert!(
        list_all(&mut client, by_attributes(&[("seats", number(3.0))]), 5)
            .await?
            .is_empty()
    );
    Ok(())
}

async fn list_accounts_filters_by_attribute_value(db: &TestDatabase) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    declare_all(&mut server.accounts_admin()).await?;
    let mut client = server.accounts();
    create_account(
        &mut client,
        with_attributes(
            "Acme",
            &[("plan_family", text("plus")), ("beta", flag(true))],
        ),
    )
    .await?;
    create_account(
        &mut client,
        with_attributes(
            "Bolt",
            &[("plan_family", text("plus")), ("seats", number(40.0))],
        ),
    )
    .await?;
    create_account(
        &mut client,
        with_attributes(
            "Crane",
            &[("plan_family", text("core")), ("beta", flag(true))],
        ),
    )
    .await?;
    assert_eq!(
        names(
            &list_all(
                &mut client,
                by_attributes(&[("plan_family", text("plus"))]),
                5
            )
            .await?
        ),
        vec!["Acme", "Bolt"]
    );
    assert_eq!(
        names(
            &list_all(
                &mut client,
                by_attributes(&[("plan_family", text("plus")), ("beta", flag(true))]),
                5
            )
            .await?
        ),
        vec!["Acme"]
    );
    assert_eq!(
        names(&list_all(&mut client, by_attributes(&[("seats", number(40.0))]), 5).await?),
        vec!["Bolt"]
    );
    assert::invalid_field(
        client
            .list_accounts(by_attributes(&[("colour", text("red"))]))
            .await,
        "attributes.colour",
    );
    assert::invalid_field(
        client
            .list_accounts(by_attributes(&[("plan_family", text("gold"))]))
            .await,
        "attributes.plan_family",
    );
    assert::invalid_field(
        client
            .list_accounts(by_attributes(&[("seats", clear())]))
            .await,
        "attributes.seats",
    );
    Ok(())
}

async fn an_upsert_sets_attributes_and_keeps_the_ones_it_does_not_name(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    declare_all(&mut server.accounts_admin()).await?;
    let mut client = server.accounts();
    let upsert = |a: Account| UpsertAccountByExternalIdRequest {
        external_id: Some(external_id("hubspot", "42")),
        account: Some(a),
        idempotency_key: String::new(),
        source_updated_at: None,
    };
    let first = client
        .upsert_account_by_external_id(upsert(with_attributes(
            "Acme",
            &[("seats", number(10.0)), ("region", text("EMEA"))],
        )))
        .await?
        .into_inner()
        .account
        .unwrap_or_default();
    let second = client
        .upsert_account_by_external_id(upsert(with_attributes("Acme", &[("seats", number(12.0))])))
        .await?
        .into_inner()
        .account
        .unwrap_or_default();
    assert_eq!(second.id, first.id);
    assert_eq!(
        second.attributes,
        values(&[("seats", number(12.0)), ("region", text("EMEA"))])
    );
    let refused = client
        .upsert_account_by_external_id(upsert(with_attributes(
            "Acme Inc",
            &[("beta", text("maybe"))],
        )))
        .await;
    assert::invalid_field(refused, "account.attributes.beta");
    assert_eq!(get_account(&mut client, &first.id).await?.name, "Acme");
    Ok(())
}

async fn a_declaration_cannot_change_type_or_drop_a_used_value_while_accounts_hold_values(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut admin = server.accounts_admin();
    declare_all(&mut admin).await?;
    let mut client = server.accounts();
    let created = create_account(
        &mut client,
        with_attributes(
            "Acme",
            &[("plan_family", text("plus")), ("seats", number(5.0))],
        ),
    )
    .await?;
    assert::status(
        declare(&mut admin, declaration("seats", AttributeType::String, &[])).await,
        Code::FailedPrecondition,
    );
    assert::status(
        declare(
            &mut admin,
            declaration("plan_family", AttributeType::Enum, &["core"]),
        )
        .await,
        Code::FailedPrecondition,
    );
    let widened = declare(
        &mut admin,
        declaration("plan_family", AttributeType::Enum, &["core", "plus", "max"]),
    )
    .await?;
    assert_eq!(widened.version, 2);
    // go_live holds no value, so its type may change.
    let changed = declare(
        &mut admin,
        declaration("go_live", AttributeType::String, &[]),
    )
    .await?;
    assert_eq!(changed.r#type, AttributeType::String as i32);
    client
        .update_account(set_attributes(&created, &[("seats", clear())]))
        .await?;
    let retyped = declare(&mut admin, declaration("seats", AttributeType::String, &[])).await?;
    assert_eq!(retyped.version, 2);
    Ok(())
}

async fn a_declaration_is_deleted_only_when_no_account_holds_a_value(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut admin = server.accounts_admin();
    declare_all(&mut admin).await?;
    let mut client = server.accounts();
    let created = create_account(
        &mut client,
        with_attributes("Acme", &[("seats", number(5.0))]),
    )
    .await?;
    let delete = |name: &str| DeleteAttributeDeclarationRequest {
        name: name.to_owned(),
        expected_version: None,
    };
    assert::status(
        client.delete_attribute_declaration(delete("beta")).await,
        Code::PermissionDenied,
    );
    assert::status(
        admin.delete_attribute_declaration(delete("seats")).await,
        Code::FailedPrecondition,
    );
    assert::status(
        admin.delete_attribute_declaration(delete("colour")).await,
        Code::NotFound,
    );
    admin.delete_attribute_declaration(delete("beta")).await?;
    client
        .update_account(set_attributes(&created, &[("seats", clear())]))
        .await?;
    admin.delete_attribute_declaration(delete("seats")).await?;
    let left: Vec<String> = admin
        .list_attribute_declarations(ListAttributeDeclarationsRequest {})
        .await?
        .into_inner()
        .declarations
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(left, vec!["go_live", "plan_family", "region"]);
    assert::invalid_field(
        client
            .update_account(set_attributes(&created, &[("seats", number(1.0))]))
            .await,
        "account.attributes.seats",
    );
    Ok(())
}
