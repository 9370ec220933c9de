//! CSV import: bad rows are reported with their line numbers and the
//! server's message, valid rows land, and a re-import adds nothing.

use bowtie::import::{ImportReport, Kind, import};
use std::collections::HashMap;

use anyhow::Context as _;
use bowtie_proto::accounts::attribute_value::Kind as ValueKind;
use bowtie_proto::accounts::{
    AttributeDeclaration, AttributeType, AttributeValue, DeclareAttributeRequest,
    ListAccountsRequest,
};
use bowtie_proto::common::PageRequest;
use bowtie_proto::funnel::GetJourneyRequest;
use bowtie_proto::revenue::{GetMrrReportRequest, ListMovementsRequest};
use bowtie_testkit::stack::Stack;
use bowtie_testkit::{TestDatabase, backend_test};
use indicatif::ProgressBar;

backend_test!(
    importing_accounts_reports_bad_rows_by_line_and_lands_the_rest,
    importing_subscriptions_and_transitions_twice_duplicates_nothing,
    importing_subscription_events_and_invoices_lands_a_history_and_twice_duplicates_nothing,
    importing_accounts_with_a_tags_column_tags_them_and_reports_a_bad_tag,
    importing_accounts_with_attribute_columns_sets_typed_values_and_reports_bad_ones,
    an_attribute_column_that_is_not_declared_refuses_the_file,
);

const ACCOUNTS: &str = "\
external_id,name,segment,industry,owner,strategic
1001,Acme Logistics,mid_market,Logistics,ana@example.com,false
1002,,smb,Retail,bo@example.com,
1003,Vandelay Industries,gold,Import,ana@example.com,
1004,Soylent,mid_market
1005,Wonka Industries,smb,Food,bo@example.com,maybe
1006,Globex,enterprise,Manufacturing,bo@example.com,true
";

async fn run(stack: &Stack, kind: Kind, csv: &str) -> anyhow::Result<ImportReport> {
    import(
        &stack.target(),
        kind,
        csv.as_bytes(),
        &ProgressBar::hidden(),
    )
    .await
}

async fn account_names(stack: &Stack) -> anyhow::Result<Vec<String>> {
    let page = stack
        .target()
        .accounts()?
        .list_accounts(ListAccountsRequest {
            page: Some(PageRequest {
                page_size: 100,
                page_token: String::new(),
            }),
            ..ListAccountsRequest::default()
        })
        .await?
        .into_inner();
    let mut names: Vec<String> = page.accounts.into_iter().map(|a| a.name).collect();
    // Rows are sent concurrently, so creation order is not file order.
    names.sort();
    Ok(names)
}

async fn importing_accounts_reports_bad_rows_by_line_and_lands_the_rest(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let stack = Stack::start(db).await?;
    let report = run(&stack, Kind::Accounts, ACCOUNTS).await?;
    assert_eq!(report.rows, 6);
    assert_eq!((report.created, report.unchanged), (2, 0));
    let lines: Vec<u64> = report.errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![3, 4, 5, 6], "{report:?}");
    // Line 3 is refused by the server, which names the field.
    assert!(
        report.errors[0].message.contains("InvalidArgument"),
        "{report:?}"
    );
    assert!(
        report.errors[0].message.contains("account.name"),
        "{report:?}"
    );
    assert!(
        report.errors[1].message.starts_with("segment:"),
        "{report:?}"
    );
    assert!(
        report.errors[2].message.contains("expected 6 fields"),
        "{report:?}"
    );
    assert!(
        report.errors[3].message.starts_with("strategic:"),
        "{report:?}"
    );
    assert_eq!(
        account_names(&stack).await?,
        vec!["Acme Logistics".to_owned(), "Globex".to_owned()]
    );

    let again = run(&stack, Kind::Accounts, ACCOUNTS).await?;
    assert_eq!((again.created, again.unchanged), (0, 2));
    assert_eq!(again.errors.len(), 4);
    assert_eq!(account_names(&stack).await?.len(), 2);
    Ok(())
}

const TAGGED: &str = "\
external_id,name,segment,tags
t1,Acme,smb,Pilot;eu
t2,Bolt,smb,eu
t3,Crane,smb,ok;two words
t4,Dune,smb,
";

async fn names_tagged(stack: &Stack, tag: &str) -> anyhow::Result<Vec<String>> {
    let page = stack
        .target()
        .accounts()?
        .list_accounts(ListAccountsRequest {
            tag: tag.to_owned(),
            ..ListAccountsRequest::default()
        })
        .await?
        .into_inner();
    let mut names: Vec<String> = page.accounts.into_iter().map(|a| a.name).collect();
    names.sort();
    Ok(names)
}

async fn importing_accounts_with_a_tags_column_tags_them_and_reports_a_bad_tag(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let stack = Stack::start(db).await?;
    let report = run(&stack, Kind::Accounts, TAGGED).await?;
    assert_eq!(report.created, 3, "{report:?}");
    let lines: Vec<u64> = report.errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![4], "{report:?}");
    assert!(
        report.errors[0].message.contains("account.tags[1]"),
        "{report:?}"
    );
    assert_eq!(names_tagged(&stack, "pilot").await?, vec!["Acme"]);
    assert_eq!(names_tagged(&stack, "eu").await?, vec!["Acme", "Bolt"]);
    assert_eq!(
        account_names(&stack).await?,
        vec!["Acme".to_owned(), "Bolt".to_owned(), "Dune".to_owned()]
    );
    Ok(())
}

async fn declare_plan_and_seats(stack: &Stack) -> anyhow::Result<()> {
    let mut admin = stack.target_with(bowtie_testkit::ADMIN_KEY).accounts()?;
    for (name, kind, allowed) in [
        (
            "plan_family",
            AttributeType::Enum,
            vec!["core".to_owned(), "plus".to_owned()],
        ),
        ("seats", AttributeType::Number, Vec::new()),
        ("beta", AttributeType::Bool, Vec::new()),
    ] {
        admin
            .declare_attribute(DeclareAttributeRequest {
                declaration: Some(AttributeDeclaration {
                    name: name.to_owned(),
                    r#type: kind as i32,
                    allowed_values: allowed,
                    ..AttributeDeclaration::default()
                }),
                expected_version: None,
            })
            .await?;
    }
    Ok(())
}

const WITH_ATTRIBUTES: &str = "\
external_id,name,segment,attr.plan_family,Attr.Seats,attr.beta
a1,Acme,smb,plus,12,true
a2,Bolt,smb,core,,
a3,Crane,smb,gold,3,false
a4,Dune,smb,core,many,
";

async fn importing_accounts_with_attribute_columns_sets_typed_values_and_reports_bad_ones(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let stack = Stack::start(db).await?;
    declare_plan_and_seats(&stack).await?;
    let report = run(&stack, Kind::Accounts, WITH_ATTRIBUTES).await?;
    assert_eq!(report.created, 2, "{report:?}");
    let lines: Vec<u64> = report.errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![4, 5], "{report:?}");
    assert!(
        report.errors[0]
            .message
            .contains("account.attributes.plan_family"),
        "{report:?}"
    );
    assert!(
        report.errors[1].message.starts_with("attr.seats:"),
        "{report:?}"
    );
    let page = stack
        .target()
        .accounts()?
        .list_accounts(ListAccountsRequest::default())
        .await?
        .into_inner();
    let acme = page
        .accounts
        .iter()
        .find(|a| a.name == "Acme")
        .context("Acme was imported")?;
    let value = |kind: ValueKind| AttributeValue { kind: Some(kind) };
    let expected: HashMap<String, AttributeValue> = [
        (
            "plan_family".to_owned(),
            value(ValueKind::StringValue("plus".into())),
        ),
        ("seats".to_owned(), value(ValueKind::NumberValue(12.0))),
        ("beta".to_owned(), value(ValueKind::BoolValue(true))),
    ]
    .into();
    assert_eq!(acme.attributes, expected);
    let bolt = page
        .accounts
        .iter()
        .find(|a| a.name == "Bolt")
        .context("Bolt was imported")?;
    assert_eq!(bolt.attributes.len(), 1, "empty cells set nothing");
    Ok(())
}

async fn an_attribute_column_that_is_not_declared_refuses_the_file(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let stack = Stack::start(db).await?;
    declare_plan_and_seats(&stack).await?;
    let csv = "external_id,name,segment,attr.colour\nx1,Acme,smb,red\n";
    let refused = run(&stack, Kind::Accounts, csv).await;
    let message = format!("{:#}", refused.err().context("the file was refused")?);
    assert!(message.contains("attr.colour"), "{message}");
    assert!(account_names(&stack).await?.is_empty());
    Ok(())
}

const CUSTOMERS: &str = "\
external_id,name,segment
c1,Initech,smb
c2,Hooli,enterprise
";

/// 40 x 780.00 a year less 10% is 2,340.00 a month; 250 x 1,080.00 a year
/// less 15% is 19,125.00; 8 x 45.00 a month is 360.00 (until cancelled).
const SUBSCRIPTIONS: &str = "\
subscription_id,account_external_id,plan,quantity,unit_price,billing_interval,discount_percent,start_date,cancelled_at,cancel_reason
s1,c1,growth,40,780.00,year,10,2025-03-01,,
s2,c2,enterprise,250,1080.00,year,15,2025-01-15,,
s3,c1,starter,8,45.00,month,,2025-06-01,2025-09-10,price
s4,nobody,starter,8,45.00,month,,2025-06-01,,
s5,c2,starter,8,45.001,month,,2025-06-01,,
s6,c2,starter,-3,45.00,month,,2025-06-01,,
";

const TRANSITIONS: &str = "\
account_external_id,stage,occurred_at,reason
c1,awareness,2024-11-02,
c1,selection,2024-12-20T10:00:00Z,
c1,won,2025-01-05,
c2,lost,2024-12-01,
c2,awareness,2024-10-01,
";

async fn mrr_and_movements(stack: &Stack) -> anyhow::Result<(Vec<i64>, usize)> {
    let mut revenue = stack.target().revenue()?;
    let report = revenue
        .get_mrr_report(GetMrrReportRequest {
            start_month: "2025-01".into(),
            end_month: "2025-12".into(),
            ..GetMrrReportRequest::default()
        })
        .await?
        .into_inner();
    let movements = revenue
        .list_movements(ListMovementsRequest {
            start_at: Some(prost_types::Timestamp {
                seconds: 1_735_689_600,
                nanos: 0,
            }),
            end_at: Some(prost_types::Timestamp {
                seconds: 1_767_225_600,
                nanos: 0,
            }),
            page: Some(PageRequest {
                page_size: 100,
                page_token: String::new(),
            }),
            ..ListMovementsRequest::default()
        })
        .await?
        .into_inner()
        .movements
        .len();
    let ends = report
        .periods
        .iter()
        .map(|p| p.end_mrr.as_ref().map_or(0, |m| m.minor_units))
        .collect();
    Ok((ends, movements))
}

async fn importing_subscriptions_and_transitions_twice_duplicates_nothing(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let stack = Stack::start(db).await?;
    assert!(
        run(&stack, Kind::Accounts, CUSTOMERS)
            .await?
            .errors
            .is_empty()
    );

    let report = run(&stack, Kind::Subscriptions, SUBSCRIPTIONS).await?;
    assert_eq!(report.recorded, 3, "{report:?}");
    let lines: Vec<u64> = report.errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![5, 6, 7], "{report:?}");
    assert!(report.errors[0].message.contains("nobody"), "{report:?}");
    assert!(
        report.errors[1].message.starts_with("unit_price:"),
        "{report:?}"
    );
    // The server refuses the negative quantity and names the field.
    assert!(report.errors[2].message.contains("quantity"), "{report:?}");
    assert!(
        report.errors[2].message.contains("InvalidArgument"),
        "{report:?}"
    );

    let (ends, movements) = mrr_and_movements(&stack).await?;
    // January: s2 (19,125.00). March: + s1 (2,340.00). June: + s3 (360.00).
    // 10 September: s3 cancelled.
    assert_eq!(ends[0], 1_912_500);
    assert_eq!(ends[2], 1_912_500 + 234_000);
    assert_eq!(ends[5], 1_912_500 + 234_000 + 36_000);
    assert_eq!(ends[8], 1_912_500 + 234_000);
    assert_eq!(ends[11], 1_912_500 + 234_000);

    let again = run(&stack, Kind::Subscriptions, SUBSCRIPTIONS).await?;
    assert_eq!(again.recorded, 3);
    assert_eq!(again.errors.len(), 3);
    assert_eq!(mrr_and_movements(&stack).await?, (ends, movements));

    let transitions = run(&stack, Kind::Transitions, TRANSITIONS).await?;
    let lines: Vec<u64> = transitions.errors.iter().map(|e| e.line).collect();
    // Line 4: no such stage. Line 5: LOST needs a reason (the server says so).
    assert_eq!(lines, vec![4, 5], "{transitions:?}");
    assert!(transitions.errors[0].message.starts_with("stage:"));
    assert!(
        transitions.errors[1].message.contains("reason"),
        "{transitions:?}"
    );
    assert_eq!(transitions.created, 3);

    let again = run(&stack, Kind::Transitions, TRANSITIONS).await?;
    assert_eq!((again.created, again.unchanged), (0, 3), "{again:?}");
    let id = stack
        .target()
        .accounts()?
        .list_accounts(ListAccountsRequest {
            text: "Initech".into(),
            ..ListAccountsRequest::default()
        })
        .await?
        .into_inner()
        .accounts
        .first()
        .map(|a| a.id.clone())
        .unwrap_or_default();
    let journey = stack
        .target()
        .funnel()?
        .get_journey(GetJourneyRequest { account_id: id })
        .await?
        .into_inner()
        .journey
        .map(|j| j.transitions)
        .unwrap_or_default();
    // Initech's two imported transitions are there once each, beside what
    // revenue moved on its own (source "revenue").
    let imported: Vec<i32> = journey
        .iter()
        .filter(|t| t.source == "csv")
        .map(|t| t.to_stage)
        .collect();
    assert_eq!(
        imported,
        vec![
            bowtie_proto::common::Stage::Awareness as i32,
            bowtie_proto::common::Stage::Selection as i32
        ]
    );
    Ok(())
}

/// s1: 10 x 50.00 a month from January, 20 seats from March, cancelled on
/// 1 June; s2: 100.00 a month from February. The March change repeats (a
/// duplicate), line 6 names an account nobody has, line 7 changes a
/// subscription that never started, line 8 has no event.
const EVENTS: &str = "\
subscription_id,account_external_id,event,effective_date,plan,quantity,unit_price,billing_interval,cancel_reason
s1,c1,start,2025-01-01,pro,10,50.00,month,
s1,,change,2025-03-01,pro,20,50.00,,
s1,,change,2025-03-01,pro,20,50.00,,
s2,c2,start,2025-02-01,basic,1,100.00,month,
s3,nobody,start,2025-02-01,basic,1,100.00,month,
s9,,change,2025-03-01,pro,1,1.00,,
s1,,,2025-04-01,pro,1,1.00,,
s1,,cancel,2025-06-01,,,,,price
";

/// s2's February invoice unpaid for 30 days churns it on 3 March; line 3
/// refers to an account nobody has.
const INVOICES: &str = "\
invoice_id,account_external_id,subscription_id,amount,due_date,paid_date
in_1,c2,s2,100.00,2025-02-01,
in_2,nobody,,100.00,2025-02-01,
";

async fn importing_subscription_events_and_invoices_lands_a_history_and_twice_duplicates_nothing(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let stack = Stack::start(db).await?;
    assert!(
        run(&stack, Kind::Accounts, CUSTOMERS)
            .await?
            .errors
            .is_empty()
    );
    let report = run(&stack, Kind::SubscriptionEvents, EVENTS).await?;
    let lines: Vec<u64> = report.errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![6, 7, 8], "{report:?}");
    assert!(report.errors[0].message.contains("nobody"), "{report:?}");
    assert!(
        report.errors[1].message.starts_with("NotFound"),
        "{report:?}"
    );
    assert!(report.errors[2].message.starts_with("event:"), "{report:?}");
    assert_eq!((report.created, report.unchanged), (4, 1), "{report:?}");
    let (ends, movements) = mrr_and_movements(&stack).await?;
    // January 500.00; February + 100.00; March 1,000.00 + 100.00; June 100.00.
    assert_eq!(
        ends[..6],
        [50_000, 60_000, 110_000, 110_000, 110_000, 10_000]
    );

    let invoices = run(&stack, Kind::Invoices, INVOICES).await?;
    let lines: Vec<u64> = invoices.errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![3], "{invoices:?}");
    assert_eq!(invoices.created, 1, "{invoices:?}");
    let (after, _) = mrr_and_movements(&stack).await?;
    // s2 lapses on 3 March: March ends at s1's 1,000.00 alone.
    assert_eq!(after[..6], [50_000, 60_000, 100_000, 100_000, 100_000, 0]);

    // The same files again: everything is already there.
    let again = run(&stack, Kind::SubscriptionEvents, EVENTS).await?;
    assert_eq!((again.created, again.unchanged), (0, 5), "{again:?}");
    let again = run(&stack, Kind::Invoices, INVOICES).await?;
    assert_eq!((again.created, again.unchanged), (0, 1), "{again:?}");
    assert_eq!(mrr_and_movements(&stack).await?.0, after);
    assert!(mrr_and_movements(&stack).await?.1 > movements);
    Ok(())
}
