//! The book of business and the touches report, with revenue's figures
//! asked over gRPC from a real revenue server that follows the same
//! accounts, and success following revenue's feed for each account's MRR
//! and scoring's feed for each account's latest health score.

use std::time::Duration;

use anyhow::Context as _;
use bowtie_proto::accounts::Account;
use bowtie_proto::common::{Period, Segment};
use bowtie_proto::revenue::revenue_service_client::RevenueServiceClient;
use bowtie_proto::revenue::{BillingInterval, CancelSubscriptionRequest, Subscription};
use bowtie_proto::scoring::Band;
use bowtie_proto::success::{
    ActivityKind, Book, BookGrouping, CreateCtaRequest, CtaType, GetBookOfBusinessRequest,
    GetBookOfBusinessResponse, GetTouchesReportRequest, LogActivityRequest, Priority,
};
use bowtie_testkit::assert::invalid_field;
use bowtie_testkit::fixtures::create_account;
use bowtie_testkit::revenue::{REVENUE_SERVICE, cancellation, create, day, minor, monthly};
use bowtie_testkit::scoring::{alerts_of, health_when, logins, record, start_scoring};
use bowtie_testkit::success::{Suite, start_success};
use bowtie_testkit::{TestDatabase, TestServer, WRITE_KEY, backend_test, within};
use prost_types::Timestamp;

backend_test!(
    the_book_of_business_combines_success_s_facts_with_revenue_s_figures,
    the_book_knows_the_health_of_an_account_whose_band_never_changed,
    touches_count_what_people_logged_per_author_and_week,
);

/// Accounts, scoring, revenue and success, each following the others as in
/// production.
async fn start(db: &TestDatabase) -> anyhow::Result<(Suite, TestServer)> {
    let mut settings = db.server_settings()?;
    let accounts = TestServer::start_with(&settings).await?;
    settings.peers.accounts = accounts.uri();
    let scoring = start_scoring(&settings).await?;
    settings.peers.scoring = scoring.uri();
    let revenue =
        TestServer::start_service(REVENUE_SERVICE, &settings, bowtie_revenue::build).await?;
    settings.peers.revenue = revenue.uri();
    let success = start_success(&settings).await?;
    Ok((
        Suite {
            accounts,
            scoring,
            success,
        },
        revenue,
    ))
}

async fn account(suite: &Suite, name: &str, owner: &str, csm: &str) -> anyhow::Result<String> {
    let account = Account {
        name: name.to_owned(),
        segment: Segment::Smb as i32,
        owner: owner.to_owned(),
        csm: csm.to_owned(),
        ..Account::default()
    };
    Ok(create_account(&mut suite.accounts.accounts(), account)
        .await?
        .id)
}

fn now_plus_days(days: i64) -> Timestamp {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    Timestamp {
        seconds: now + days * 86_400,
        nanos: 0,
    }
}

fn book<'a>(books: &'a GetBookOfBusinessResponse, person: &str) -> Option<&'a Book> {
    books.books.iter().find(|b| b.person == person)
}

async fn the_book_of_business_combines_success_s_facts_with_revenue_s_figures(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let (suite, revenue) = start(db).await?;
    let acme = account(&suite, "Acme", "olga", "cara").await?;
    let beta = account(&suite, "Beta", "olga", "dan").await?;
    let mut billing = RevenueServiceClient::new(revenue.with_key(WRITE_KEY));
    // Acme pays 100.00 a month, and from November 2025 a yearly 6,000.00
    // (500.00 a month) whose term ends in 30 days. Beta paid 300.00 until June.
    billing
        .create_subscription(create(monthly(&acme, day(2025, 1, 1), 1, 10_000)))
        .await?;
    billing
        .create_subscription(create(Subscription {
            billing_interval: BillingInterval::Year as i32,
            term_end_at: Some(now_plus_days(30)),
            ..monthly(&acme, day(2025, 11, 1), 1, 600_000)
        }))
        .await?;
    let b = billing
        .create_subscription(create(monthly(&beta, day(2025, 1, 1), 1, 30_000)))
        .await?
        .into_inner()
        .subscription
        .unwrap_or_default()
        .id;
    billing
        .cancel_subscription(CancelSubscriptionRequest {
            id: b,
            cancellation: cancellation(day(2025, 6, 1)),
            idempotency_key: String::new(),
            expected_version: None,
        })
        .await?;
    let mut client = suite.client();
    client
        .create_cta(CreateCtaRequest {
            account_id: acme.clone(),
            r#type: CtaType::Renewal as i32,
            reason: "Renewal in 30 days".into(),
            priority: Priority::High as i32,
            owner: "cara".into(),
            due_time: Some(now_plus_days(7)),
            idempotency_key: String::new(),
        })
        .await?;

    let request = |group_by: BookGrouping, person: &str| GetBookOfBusinessRequest {
        group_by: group_by as i32,
        person: person.to_owned(),
        period: Some(Period {
            start: Some(day(2025, 2, 1)),
            end: Some(day(2025, 10, 1)),
        }),
        mine: false,
    };
    let mut reader = suite.reader();
    // Success learns Acme's MRR of 600.00 and Beta's churn from revenue's feed.
    let books = within(20, "Acme's MRR in the book", async {
        loop {
            let books = reader
                .get_book_of_business(request(BookGrouping::Csm, ""))
                .await?
                .into_inner();
            let cara = book(&books, "cara").is_some_and(|b| minor(&b.arr) == 720_000);
            if cara && book(&books, "dan").is_some_and(|b| minor(&b.arr) == 0) {
                return anyhow::Ok(books);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await??;
    assert_eq!(books.reporting_currency_code, "USD");
    let cara = book(&books, "cara").context("Cara's book")?;
    // One account, 7,200.00 ARR, one open CTA not yet due; the yearly
    // renewal in 30 days: 6,000.00 at stake, 4,800.00 at the default 80%.
    assert_eq!(
        (
            cara.accounts,
            cara.open_ctas,
            cara.overdue_ctas,
            cara.renewals_90d
        ),
        (1, 1, 0, 1)
    );
    assert_eq!(
        (
            minor(&cara.renewal_amount_at_stake),
            minor(&cara.renewal_forecast)
        ),
        (600_000, 480_000)
    );
    // February to October 2025: Acme kept its 100.00, Beta lost its 300.00.
    assert_eq!(
        (cara.retention_accounts, cara.grr, cara.nrr),
        (1, Some(1.0), Some(1.0))
    );
    let dan = book(&books, "dan").context("Dan's book")?;
    assert_eq!(
        (dan.accounts, minor(&dan.arr), dan.grr, dan.nrr),
        (1, 0, Some(0.0), Some(0.0))
    );
    // Cara's book first: the largest ARR.
    assert_eq!(books.books[0].person, "cara");

    let olga = reader
        .get_book_of_business(request(BookGrouping::Owner, "olga"))
        .await?
        .into_inner();
    assert_eq!(olga.books.len(), 1);
    let olga = &olga.books[0];
    // Both accounts; 100.00 + 300.00 at the start, 100.00 kept.
    assert_eq!(
        (
            olga.person.as_str(),
            olga.accounts,
            olga.retention_accounts,
            olga.grr
        ),
        ("olga", 2, 2, Some(0.25))
    );

    // The mean health is of each account's latest score from scoring's feed:
    // none yet, then Acme's red score, then the one its new logins bring.
    assert_eq!(cara.average_health, None);
    let mut scoring = suite.scoring();
    record(&mut scoring, logins("acme-before", &acme, 10, 40)).await?;
    let red = health_when(&mut scoring, &acme, "a red score", |h| {
        h.band == Band::Red as i32
    })
    .await?;
    let cara_when = |what: &'static str, health: f64, red: i64| {
        let mut reader = suite.reader();
        let request = request(BookGrouping::Csm, "cara");
        within(20, what, async move {
            loop {
                let books = reader
                    .get_book_of_business(request.clone())
                    .await?
                    .into_inner();
                if let Some(cara) = book(&books, "cara")
                    && cara.average_health == Some(health)
                    && cara.red == red
                {
                    return anyhow::Ok(cara.clone());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    cara_when("Acme's red score in the book", f64::from(red.score), 1).await??;
    record(&mut scoring, logins("acme-now", &acme, 40, 1)).await?;
    let back = health_when(&mut scoring, &acme, "a score out of red", |h| {
        h.band != Band::Red as i32
    })
    .await?;
    assert!(back.score > red.score);
    cara_when("Acme's new score in the book", f64::from(back.score), 0).await??;

    let mut bad = request(BookGrouping::Csm, "");
    bad.group_by = 7;
    invalid_field(reader.get_book_of_business(bad).await, "group_by");
    let mut no_period = request(BookGrouping::Csm, "");
    no_period.period = None;
    invalid_field(reader.get_book_of_business(no_period).await, "period");
    Ok(())
}

/// Waits until `person`'s CSM book has `health` as its mean health.
async fn mean_health_when(
    suite: &Suite,
    person: &str,
    what: &str,
    health: f64,
) -> anyhow::Result<Book> {
    let mut reader = suite.reader();
    let request = GetBookOfBusinessRequest {
        group_by: BookGrouping::Csm as i32,
        person: person.to_owned(),
        period: Some(Period {
            start: Some(day(2025, 1, 1)),
            end: Some(day(2025, 2, 1)),
        }),
        mine: false,
    };
    within(20, what, async move {
        loop {
            let books = reader
                .get_book_of_business(request.clone())
                .await?
                .into_inner();
            if let Some(b) = book(&books, person)
                && b.average_health == Some(health)
            {
                return anyhow::Ok(b.clone());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await?
}

async fn the_book_knows_the_health_of_an_account_whose_band_never_changed(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let (suite, _revenue) = start(db).await?;
    let acme = account(&suite, "Acme", "olga", "cara").await?;
    let mut scoring = suite.scoring();
    // Ten logins 40 days ago and nine yesterday: usage fell to 90%, a
    // first score in green, so scoring raises no alert and there is no band
    // it changed from.
    let mut signals = logins("acme-before", &acme, 10, 40);
    signals.extend(logins("acme-recent", &acme, 9, 1));
    record(&mut scoring, signals).await?;
    let first = health_when(&mut scoring, &acme, "a first score", |_| true).await?;
    assert_ne!(first.band, Band::Red as i32);
    let cara = mean_health_when(
        &suite,
        "cara",
        "Acme's first score in the book",
        f64::from(first.score),
    )
    .await?;
    assert_eq!((cara.accounts, cara.red), (1, 0));

    // A tenth login today: usage held, the score moves within green and
    // the book follows.
    record(&mut scoring, logins("acme-today", &acme, 1, 0)).await?;
    let moved = health_when(&mut scoring, &acme, "a new score", |h| {
        h.score != first.score
    })
    .await?;
    assert_eq!(moved.band, first.band);
    mean_health_when(
        &suite,
        "cara",
        "Acme's new score in the book",
        f64::from(moved.score),
    )
    .await?;
    assert!(alerts_of(&mut scoring, &acme).await?.is_empty());
    Ok(())
}

/// Author, week, notes, calls, meetings, emails, total and accounts of a row.
type Counts<'a> = (&'a str, &'a str, i64, i64, i64, i64, i64, i64);

fn log(account: &str, kind: ActivityKind, author: &str, at: Timestamp) -> LogActivityRequest {
    LogActivityRequest {
        account_id: account.to_owned(),
        kind: kind as i32,
        author: author.to_owned(),
        occur_time: Some(at),
        text: "Touch".into(),
        participants: vec![],
        idempotency_key: String::new(),
    }
}

async fn touches_count_what_people_logged_per_author_and_week(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let (suite, _revenue) = start(db).await?;
    let acme = account(&suite, "Acme", "olga", "cara").await?;
    let beta = account(&suite, "Beta", "piet", "cara").await?;
    let mut client = suite.client();
    // Monday 1 December 2025 is in ISO week 49; Monday 8 December in 50.
    for (account, kind, author, at) in [
        (&acme, ActivityKind::Call, "ana", day(2025, 12, 1)),
        (&beta, ActivityKind::Note, "ana", day(2025, 12, 3)),
        (&acme, ActivityKind::Meeting, "ana", day(2025, 12, 8)),
        (&acme, ActivityKind::Email, "bob", day(2025, 12, 7)),
        (&acme, ActivityKind::Call, "ana", day(2026, 1, 5)),
    ] {
        client.log_activity(log(account, kind, author, at)).await?;
    }
    // Success knows each account's owner once the accounts feed told it.
    let mut cta = suite.client();
    within(20, "the owners from the accounts feed", async {
        loop {
            let r = cta
                .get_touches_report(GetTouchesReportRequest {
                    period: Some(Period {
                        start: Some(day(2025, 12, 1)),
                        end: Some(day(2026, 1, 1)),
                    }),
                    owner: "piet".into(),
                    ..GetTouchesReportRequest::default()
                })
                .await?
                .into_inner();
            if !r.touches.is_empty() {
                return anyhow::Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await??;
    let report = |owner: &str, by_owner: bool| GetTouchesReportRequest {
        period: Some(Period {
            start: Some(day(2025, 12, 1)),
            end: Some(day(2026, 1, 1)),
        }),
        owner: owner.to_owned(),
        author: String::new(),
        by_owner,
    };
    let rows = client
        .get_touches_report(report("", false))
        .await?
        .into_inner();
    let counts: Vec<Counts> = rows
        .touches
        .iter()
        .map(|t| {
            (
                t.author.as_str(),
                t.week.as_str(),
                t.notes,
                t.calls,
                t.meetings,
                t.emails,
                t.total,
                t.accounts,
            )
        })
        .collect();
    assert_eq!(
        counts,
        vec![
            ("ana", "2025-W49", 1, 1, 0, 0, 2, 2),
            ("ana", "2025-W50", 0, 0, 1, 0, 1, 1),
            ("bob", "2025-W49", 0, 0, 0, 1, 1, 1),
        ]
    );
    let split = client
        .get_touches_report(report("", true))
        .await?
        .into_inner();
    let owners: Vec<(&str, &str, &str, i64)> = split
        .touches
        .iter()
        .map(|t| {
            (
                t.author.as_str(),
                t.week.as_str(),
                t.owner.as_str(),
                t.total,
            )
        })
        .collect();
    assert_eq!(
        owners,
        vec![
            ("ana", "2025-W49", "olga", 1),
            ("ana", "2025-W49", "piet", 1),
            ("ana", "2025-W50", "olga", 1),
            ("bob", "2025-W49", "olga", 1),
        ]
    );
    let mut long = report("", false);
    long.period = Some(Period {
        start: Some(day(2025, 1, 1)),
        end: Some(day(2026, 6, 1)),
    });
    invalid_field(client.get_touches_report(long).await, "period.end");
    Ok(())
}
