//! ImportAccounts: a client stream of batches of upserts by external id,
//! each batch answered after its commit with one result per row. A bad row
//! is refused alone with its index and field and writes nothing, a repeat
//! changes nothing, data older than the newest applied is a duplicate, a
//! create-only row leaves a known account as it is, and a batch reaching
//! outside a CSM's book is refused whole, with the refusal audited.

use bowtie_proto::accounts::attribute_value::Kind;
use bowtie_proto::accounts::{
    Account, AttributeValue, ImportAccountsRequest, ImportAccountsResponse, ImportedAccount,
    ListAccountsRequest, ListAuditEventsRequest,
};
use bowtie_proto::common::{AuditFilter, ImportOutcome, Segment};
use bowtie_testkit::fixtures::{account, create_account, external_id, get_account, list_all};
use bowtie_testkit::import::{DUPLICATE, RECORDED, acks, outcomes};
use bowtie_testkit::people::{audited_as, secret, with_people};
use bowtie_testkit::{AccountsClient, Bearer, TestDatabase, TestServer, backend_test};
use prost_types::Timestamp;
use tonic::Code;

backend_test!(
    a_batch_lands_its_good_rows_refuses_bad_ones_alone_and_a_repeat_changes_nothing,
    older_data_and_create_only_rows_leave_a_known_account_as_it_is,
    a_csm_imports_its_own_book_and_a_batch_reaching_outside_it_is_refused_whole_and_audited,
);

fn row(source_id: &str, name: &str, at: Option<i64>) -> ImportedAccount {
    ImportedAccount {
        external_id: Some(external_id("crm", source_id)),
        account: Some(account(name, Segment::Smb)),
        source_updated_at: at.map(|seconds| Timestamp { seconds, nanos: 0 }),
        create_only: false,
    }
}

/// Sends `batches` on one stream and reads every acknowledgement.
async fn import(
    client: &mut AccountsClient,
    batches: Vec<Vec<ImportedAccount>>,
) -> Result<Vec<ImportAccountsResponse>, tonic::Status> {
    let requests = batches
        .into_iter()
        .map(|accounts| ImportAccountsRequest { accounts });
    acks(
        client
            .import_accounts(futures::stream::iter(requests))
            .await,
    )
    .await
}

async fn every_account(client: &mut AccountsClient) -> anyhow::Result<Vec<Account>> {
    list_all(client, ListAccountsRequest::default(), 10).await
}

async fn a_batch_lands_its_good_rows_refuses_bad_ones_alone_and_a_repeat_changes_nothing(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let mut undeclared = row("c3", "Initech", None);
    if let Some(a) = undeclared.account.as_mut() {
        a.attributes.insert(
            "tier".into(),
            AttributeValue {
                kind: Some(Kind::StringValue("gold".into())),
            },
        );
    }
    let batch = vec![
        row("c1", "Acme", Some(100)),
        row("c2", " ", None),
        undeclared,
        row("c1", "Acme Corp", Some(200)),
        row("c4", "Globex", None),
    ];
    let acks = import(&mut client, vec![batch.clone(), batch]).await?;
    assert_eq!(acks.len(), 2);
    assert_eq!((acks[0].batch, acks[1].batch), (0, 1));
    assert_eq!(
        outcomes(&acks[0].results),
        vec![
            RECORDED,
            (
                ImportOutcome::Rejected,
                Code::InvalidArgument,
                "account.name"
            ),
            (
                ImportOutcome::Rejected,
                Code::InvalidArgument,
                "account.attributes.tier"
            ),
            RECORDED,
            RECORDED,
        ]
    );
    assert_eq!(
        (acks[0].recorded, acks[0].duplicates, acks[0].rejected),
        (3, 0, 2)
    );
    // The same rows again change nothing; the bad ones are refused again.
    assert_eq!(
        outcomes(&acks[1].results),
        vec![
            DUPLICATE,
            (
                ImportOutcome::Rejected,
                Code::InvalidArgument,
                "account.name"
            ),
            (
                ImportOutcome::Rejected,
                Code::InvalidArgument,
                "account.attributes.tier"
            ),
            DUPLICATE,
            DUPLICATE,
        ]
    );
    let acme = &acks[0].results[0].id;
    assert_eq!(&acks[0].results[3].id, acme);
    assert_eq!(&acks[1].results[0].id, acme);
    let stored = get_account(&mut client, acme).await?;
    assert_eq!((stored.name.as_str(), stored.version), ("Acme Corp", 2));
    let mut names: Vec<String> = every_account(&mut client)
        .await?
        .into_iter()
        .map(|a| a.name)
        .collect();
    names.sort();
    assert_eq!(names, vec!["Acme Corp", "Globex"]);
    Ok(())
}

async fn older_data_and_create_only_rows_leave_a_known_account_as_it_is(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let first = import(&mut client, vec![vec![row("c1", "Acme Corp", Some(200))]]).await?;
    let acme = first[0].results[0].id.clone();
    let placeholder = ImportedAccount {
        create_only: true,
        ..row("c1", "c1", None)
    };
    let new_placeholder = ImportedAccount {
        create_only: true,
        ..row("c9", "c9", None)
    };
    let acks = import(
        &mut client,
        vec![vec![
            row("c1", "Acme (stale)", Some(100)),
            placeholder,
            new_placeholder,
        ]],
    )
    .await?;
    assert_eq!(
        outcomes(&acks[0].results),
        vec![DUPLICATE, DUPLICATE, RECORDED]
    );
    assert_eq!(acks[0].results[0].id, acme);
    assert_eq!(acks[0].results[1].id, acme);
    let stored = get_account(&mut client, &acme).await?;
    assert_eq!((stored.name.as_str(), stored.version), ("Acme Corp", 1));
    let created = get_account(&mut client, &acks[0].results[2].id).await?;
    assert_eq!(created.name, "c9");
    Ok(())
}

/// The audit entries naming `account_id`, newest first.
async fn audited(server: &TestServer, account_id: &str) -> anyhow::Result<Vec<[String; 3]>> {
    let events = server
        .accounts_admin()
        .list_audit_events(ListAuditEventsRequest {
            filter: Some(AuditFilter {
                account_id: account_id.to_owned(),
                ..AuditFilter::default()
            }),
            page: None,
        })
        .await?
        .into_inner()
        .events;
    Ok(events.into_iter().map(audited_as).collect())
}

fn entry(principal: &str, method: &str, result: &str) -> [String; 3] {
    [principal.to_owned(), method.to_owned(), result.to_owned()]
}

async fn a_csm_imports_its_own_book_and_a_batch_reaching_outside_it_is_refused_whole_and_audited(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let mut settings = db.server_settings()?;
    with_people(&mut settings, &[("ada@example.com", "csm")]);
    let server = TestServer::start_with(&settings).await?;
    let mut ada = server.accounts_with(Bearer::new(&secret("ada@example.com")));
    let own = |id: &str, name: &str| {
        let mut r = row(id, name, None);
        if let Some(a) = r.account.as_mut() {
            a.csm = "ada@example.com".into();
        }
        r
    };
    let acks = import(&mut ada, vec![vec![own("c1", "Acme")]]).await?;
    assert_eq!(outcomes(&acks[0].results), vec![RECORDED]);
    let acme = acks[0].results[0].id.clone();
    assert_eq!(
        audited(&server, &acme).await?,
        vec![entry("ada@example.com", "ImportAccounts", "OK")]
    );

    let mut globex = account("Globex", Segment::Smb);
    globex.csm = "grace@example.com".into();
    globex.external_ids = vec![external_id("crm", "c2")];
    let globex = create_account(&mut server.accounts(), globex).await?;
    let refused = import(
        &mut ada,
        vec![vec![own("c1", "Acme Corp"), row("c2", "Mine now", None)]],
    )
    .await
    .err()
    .map(|s| s.code());
    assert_eq!(refused, Some(Code::PermissionDenied));
    // Nothing of the refused batch is there, and the refusal is audited.
    let unchanged = get_account(&mut server.accounts(), &acme).await?;
    assert_eq!((unchanged.name.as_str(), unchanged.version), ("Acme", 1));
    let untouched = get_account(&mut server.accounts(), &globex.id).await?;
    assert_eq!(untouched.name, "Globex");
    assert_eq!(
        audited(&server, &globex.id).await?.first(),
        Some(&entry(
            "ada@example.com",
            "ImportAccounts",
            "PERMISSION_DENIED"
        ))
    );
    Ok(())
}
