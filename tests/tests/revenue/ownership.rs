//! The ownership rules on revenue's per-account writes (docs/design.md
//! 9.3): a csm changes the subscriptions, invoices and renewals of the
//! accounts it is CSM or owner of, a manager its team's too; a refused write
//! keeps nothing and is audited; an import batch naming another account is
//! refused whole; company-wide spend is for admins and keys with scopes only.

use bowtie_proto::common::{AuditFilter, ImportOutcome, Segment};
use bowtie_proto::revenue::revenue_service_client::RevenueServiceClient;
use bowtie_proto::revenue::{
    ImportInvoicesRequest, ImportedInvoice, ListAuditEventsRequest, RecordSpendRequest,
};
use bowtie_testkit::people::{secret, with_people};
use bowtie_testkit::revenue::*;
use bowtie_testkit::{TestDatabase, backend_test};
use tonic::Code;

backend_test!(
    a_csm_writes_subscriptions_of_its_own_accounts_and_is_denied_on_another_csms_with_the_denial_audited,
    a_manager_changes_its_teams_subscriptions_and_spend_is_not_for_either,
    an_invoice_import_batch_naming_another_csms_account_is_refused_whole,
);

async fn start(db: &TestDatabase) -> anyhow::Result<Revenue> {
    let people = [
        ("ada@example.com", "csm"),
        ("lead@example.com", "manager"),
        ("root@example.com", "admin"),
    ];
    Revenue::start_with(db, |s| with_people(s, &people)).await
}

fn as_person(suite: &Revenue, name: &str) -> RevenueClient {
    RevenueServiceClient::new(suite.revenue.with_key(&secret(name)))
}

fn code<T>(answer: Result<T, tonic::Status>) -> Option<(Code, String)> {
    answer.err().map(|s| (s.code(), s.message().to_owned()))
}

/// Revenue's audit entries naming `account`, newest first: (principal,
/// method, result).
async fn audited(suite: &Revenue, account: &str) -> anyhow::Result<Vec<[String; 3]>> {
    let events = suite
        .admin()
        .list_audit_events(ListAuditEventsRequest {
            filter: Some(AuditFilter {
                account_id: account.to_owned(),
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

async fn a_csm_writes_subscriptions_of_its_own_accounts_and_is_denied_on_another_csms_with_the_denial_audited(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = start(db).await?;
    let own = suite
        .account("Acme", Segment::Smb, "Ada@Example.com")
        .await?;
    let other = suite
        .account("Globex", Segment::Smb, "grace@example.com")
        .await?;
    let mut ada = as_person(&suite, "ada@example.com");

    assert_eq!(
        code(
            ada.create_subscription(create(monthly(&own, day(2026, 1, 1), 2, 5_000)))
                .await
        ),
        None
    );
    assert_eq!(
        code(
            ada.create_subscription(create(monthly(&other, day(2026, 1, 1), 2, 5_000)))
                .await
        ),
        Some((
            Code::PermissionDenied,
            format!(
                "account {other} is not in the book of \"ada@example.com\" (role csm): only its CSM or owner may change it"
            )
        ))
    );
    assert!(all_movements(&mut suite.client(), &other).await?.is_empty());
    assert_eq!(
        audited(&suite, &other).await?,
        vec![[
            "ada@example.com".to_owned(),
            "CreateSubscription".to_owned(),
            "PERMISSION_DENIED".to_owned()
        ]]
    );

    // A subscription the write key created on Grace's account is out of
    // Ada's reach too.
    let theirs = suite
        .client()
        .create_subscription(create(monthly(&other, day(2026, 1, 1), 2, 5_000)))
        .await?
        .into_inner()
        .subscription
        .ok_or_else(|| anyhow::anyhow!("no subscription"))?;
    let changed = ada
        .change_subscription(change(&theirs.id, day(2026, 2, 1), terms(5, 5_000, "USD")))
        .await;
    assert_eq!(
        code(changed).map(|(c, m)| (c, m.contains(&other))),
        Some((Code::PermissionDenied, true))
    );
    assert_eq!(all_movements(&mut suite.client(), &other).await?.len(), 1);
    Ok(())
}

async fn a_manager_changes_its_teams_subscriptions_and_spend_is_not_for_either(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = start(db).await?;
    let team = suite
        .account("Acme", Segment::Smb, "grace@example.com")
        .await?;
    let other = suite
        .account("Globex", Segment::Smb, "lin@example.com")
        .await?;
    let mut lead = as_person(&suite, "lead@example.com");

    let sub = lead
        .create_subscription(create(monthly(&team, day(2026, 1, 1), 2, 5_000)))
        .await?
        .into_inner()
        .subscription
        .ok_or_else(|| anyhow::anyhow!("no subscription"))?;
    assert_eq!(
        code(
            lead.change_subscription(change(&sub.id, day(2026, 2, 1), terms(4, 5_000, "USD")))
                .await
        ),
        None
    );
    assert_eq!(
        code(
            lead.create_subscription(create(monthly(&other, day(2026, 1, 1), 2, 5_000)))
                .await
        )
        .map(|(c, m)| (c, m.contains("(role manager)"))),
        Some((Code::PermissionDenied, true))
    );
    let spend = || RecordSpendRequest {
        month: "2026-01".into(),
        sales_and_marketing_spend: money("USD", 1_000_000),
        gross_margin_basis_points: 8_000,
        idempotency_key: String::new(),
    };
    let mut codes = Vec::new();
    for person in ["ada@example.com", "lead@example.com", "root@example.com"] {
        let answer = as_person(&suite, person).record_spend(spend()).await;
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
    assert_eq!(code(suite.client().record_spend(spend()).await), None);
    Ok(())
}

async fn an_invoice_import_batch_naming_another_csms_account_is_refused_whole(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = start(db).await?;
    let own = suite
        .account("Acme", Segment::Smb, "ada@example.com")
        .await?;
    let other = suite
        .account("Globex", Segment::Smb, "grace@example.com")
        .await?;
    let invoice = |ext: &str, account: &str| ImportedInvoice {
        external_id: ext.to_owned(),
        account_id: account.to_owned(),
        subscription_id: String::new(),
        amount: money("USD", 10_000),
        due_at: Some(day(2026, 2, 1)),
        // Paid ten days late: announced as `invoice.late`, naming the account.
        paid_at: Some(day(2026, 2, 11)),
    };
    let batches = vec![
        ImportInvoicesRequest {
            invoices: vec![invoice("in_own", &own)],
        },
        ImportInvoicesRequest {
            invoices: vec![invoice("in_own_2", &own), invoice("in_other", &other)],
        },
    ];
    let mut answers = as_person(&suite, "ada@example.com")
        .import_invoices(futures::stream::iter(batches))
        .await?
        .into_inner();
    let first = answers.message().await?.map(|a| a.recorded);
    assert_eq!(first, Some(1));
    let second = answers
        .message()
        .await
        .err()
        .map(|s| (s.code(), s.message().contains(&other)));
    assert_eq!(second, Some((Code::PermissionDenied, true)));

    // Nothing of the refused batch was kept: the write key records both.
    let mut again = suite
        .client()
        .import_invoices(futures::stream::iter([ImportInvoicesRequest {
            invoices: vec![
                invoice("in_own", &own),
                invoice("in_own_2", &own),
                invoice("in_other", &other),
            ],
        }]))
        .await?
        .into_inner();
    let ack = again
        .message()
        .await?
        .ok_or_else(|| anyhow::anyhow!("no acknowledgement"))?;
    let outcomes: Vec<i32> = ack.results.iter().map(|r| r.outcome).collect();
    assert_eq!(
        outcomes,
        vec![
            ImportOutcome::Duplicate as i32,
            ImportOutcome::Recorded as i32,
            ImportOutcome::Recorded as i32
        ]
    );
    assert_eq!(
        audited(&suite, &other).await?,
        vec![
            [
                "test-writer".to_owned(),
                "ImportInvoices".to_owned(),
                "OK".to_owned()
            ],
            [
                "ada@example.com".to_owned(),
                "ImportInvoices".to_owned(),
                "PERMISSION_DENIED".to_owned()
            ],
        ]
    );
    Ok(())
}
