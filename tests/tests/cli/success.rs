//! The work and playbooks reports print what the success service holds: a
//! person's open CTAs earliest due first with the account's name, and every
//! playbook with its CTAs and why there is no effect yet. The book and
//! touches reports print the figures of GetBookOfBusiness and
//! GetTouchesReport.

use bowtie::report;
use bowtie_proto::accounts::{Account, CreateAccountRequest};
use bowtie_proto::common::Period;
use bowtie_proto::common::Segment;
use bowtie_proto::success::success_service_client::SuccessServiceClient;
use bowtie_proto::success::{
    ActivityKind, BookGrouping, CreateCtaRequest, CreatePlaybookRequest, CtaType,
    GetBookOfBusinessRequest, GetPlaybookEffectivenessRequest, ListPlaybooksRequest,
    LogActivityRequest, Priority,
};
use bowtie_testkit::stack::Stack;
use bowtie_testkit::success::red_playbook;
use bowtie_testkit::{ADMIN_KEY, READ_KEY, TestDatabase, backend_test, within};

use super::default_demo;

backend_test!(
    the_work_and_playbooks_reports_print_what_success_holds,
    the_book_and_touches_reports_print_each_person_s_figures,
    the_default_demo_s_onboarding_play_shows_an_effect_with_its_interval,
);

/// The table row whose first cell is `first`, split into its cells.
fn cells(text: &str, first: &str) -> anyhow::Result<Vec<String>> {
    text.lines()
        .map(|l| {
            l.split(['│', '┆'])
                .map(|c| c.trim().to_owned())
                .filter(|c| !c.is_empty())
                .collect::<Vec<_>>()
        })
        .find(|c| c.first().map(String::as_str) == Some(first))
        .ok_or_else(|| anyhow::anyhow!("no row {first:?} in\n{text}"))
}

async fn the_work_and_playbooks_reports_print_what_success_holds(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let stack = Stack::start(db).await?;
    let acme =
        bowtie_testkit::scoring::create_account(&stack.accounts, "Acme Logistics", Segment::Smb)
            .await?;
    let mut success = SuccessServiceClient::new(stack.success.with_key(ADMIN_KEY));
    success
        .create_playbook(CreatePlaybookRequest {
            spec: Some(red_playbook("Save red accounts")),
            idempotency_key: String::new(),
        })
        .await?;
    for (days, reason) in [
        (30, "renewal in 60 days"),
        (-3, "champion quiet for a month"),
    ] {
        let now = chrono::Utc::now().timestamp();
        success
            .create_cta(CreateCtaRequest {
                account_id: acme.clone(),
                r#type: CtaType::Renewal as i32,
                reason: reason.into(),
                priority: Priority::High as i32,
                owner: "ana@acme.io".into(),
                due_time: Some(prost_types::Timestamp {
                    seconds: now + days * 86_400,
                    nanos: 0,
                }),
                idempotency_key: String::new(),
            })
            .await?;
    }
    let target = stack.target_with(READ_KEY);

    let work = report::work(&target, None, 10, report::Format::Table).await?;
    assert!(
        work.starts_with(
            "Open calls to action of ana@acme.io, earliest due first: 2 shown, 1 overdue"
        ),
        "{work}"
    );
    let overdue = work.find("champion quiet").unwrap_or(usize::MAX);
    let later = work.find("renewal in 60 days").unwrap_or(0);
    assert!(overdue < later, "overdue first:\n{work}");
    assert!(
        work.contains("Acme Logistics") && work.contains("overdue"),
        "{work}"
    );

    let today = chrono::Utc::now().date_naive();
    let range = report::parse_period(Some("12m"), today)?;
    let playbooks = report::playbooks(&target, range, report::Format::Table).await?;
    assert!(playbooks.contains("Save red accounts"), "{playbooks}");
    assert!(
        playbooks.contains("an effect needs 20 matured triggers in each arm"),
        "{playbooks}"
    );
    Ok(())
}

async fn the_book_and_touches_reports_print_each_person_s_figures(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let stack = Stack::start(db).await?;
    let acme = stack
        .accounts
        .accounts()
        .create_account(CreateAccountRequest {
            account: Some(Account {
                name: "Acme Logistics".into(),
                segment: Segment::Smb as i32,
                owner: "olga".into(),
                csm: "cara".into(),
                ..Account::default()
            }),
            idempotency_key: String::new(),
        })
        .await?
        .into_inner()
        .account
        .map(|a| a.id)
        .ok_or_else(|| anyhow::anyhow!("CreateAccount returned no account"))?;
    let mut success = SuccessServiceClient::new(stack.success.with_key(ADMIN_KEY));
    let now = chrono::Utc::now().timestamp();
    success
        .create_cta(CreateCtaRequest {
            account_id: acme.clone(),
            r#type: CtaType::Risk as i32,
            reason: "champion quiet for a month".into(),
            priority: Priority::High as i32,
            owner: "cara".into(),
            due_time: Some(prost_types::Timestamp {
                seconds: now - 3 * 86_400,
                nanos: 0,
            }),
            idempotency_key: String::new(),
        })
        .await?;
    for kind in [ActivityKind::Call, ActivityKind::Email] {
        success
            .log_activity(LogActivityRequest {
                account_id: acme.clone(),
                kind: kind as i32,
                author: "ana".into(),
                occur_time: Some(prost_types::Timestamp {
                    seconds: now,
                    nanos: 0,
                }),
                text: "Touch".into(),
                participants: vec![],
                idempotency_key: String::new(),
            })
            .await?;
    }
    let today = chrono::Utc::now().date_naive();
    let range = report::parse_period(Some("1m"), today)?;
    let period = Some(Period {
        start: Some(prost_types::Timestamp {
            seconds: range.start(),
            nanos: 0,
        }),
        end: Some(prost_types::Timestamp {
            seconds: range.end(),
            nanos: 0,
        }),
    });
    // Success knows Cara's account once the accounts feed told it.
    let books = within(20, "Cara's book", async {
        loop {
            let books = success
                .get_book_of_business(GetBookOfBusinessRequest {
                    group_by: BookGrouping::Csm as i32,
                    person: "cara".into(),
                    period,
                    mine: false,
                })
                .await?
                .into_inner();
            if books
                .books
                .iter()
                .any(|b| b.person == "cara" && b.accounts == 1)
            {
                return anyhow::Ok(books);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await??;
    let cara = books
        .books
        .iter()
        .find(|b| b.person == "cara")
        .ok_or_else(|| anyhow::anyhow!("no book of cara"))?;
    let target = stack.target_with(READ_KEY);

    let book = report::book(
        &target,
        false,
        Some("cara"),
        false,
        range,
        report::Format::Table,
    )
    .await?;
    assert!(book.starts_with("Book of business by CSM"), "{book}");
    let row = cells(&book, "cara")?;
    assert_eq!(row[1], report::group_thousands(cara.accounts), "{book}");
    assert_eq!(
        row[2],
        report::money(cara.arr.as_ref().map_or(0, |m| m.minor_units)),
        "{book}"
    );
    assert_eq!((row[6].as_str(), row[7].as_str()), ("1", "1"), "{book}");
    let by_owner = report::book(&target, true, None, false, range, report::Format::Table).await?;
    assert!(
        by_owner.starts_with("Book of business by owner"),
        "{by_owner}"
    );
    assert_eq!(cells(&by_owner, "olga")?[1], "1", "{by_owner}");

    let touches = report::touches(&target, range, None, false, report::Format::Table).await?;
    let week = chrono::Utc::now().format("%G-W%V").to_string();
    let ana = cells(&touches, "ana")?;
    // author, week, notes, calls, meetings, emails, total, accounts
    assert_eq!(
        ana,
        ["ana", week.as_str(), "0", "1", "0", "1", "2", "1"],
        "{touches}"
    );
    let of_olga =
        report::touches(&target, range, Some("olga"), true, report::Format::Table).await?;
    let ana = cells(&of_olga, "ana")?;
    assert_eq!(ana[2], "olga", "{of_olga}");
    assert_eq!(ana[7], "2", "{of_olga}");
    Ok(())
}

async fn the_default_demo_s_onboarding_play_shows_an_effect_with_its_interval(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let stack = Stack::start(db).await?;
    let options = default_demo();
    bowtie::demo::seed(&stack.target(), options).await?;
    let anchor = chrono::DateTime::from_timestamp(options.anchor, 0)
        .map(|t| t.date_naive())
        .ok_or_else(|| anyhow::anyhow!("no anchor date"))?;
    let range = report::parse_period(Some("12m"), anchor)?;
    let target = stack.target_with(READ_KEY);

    // The onboarding play holds a third of its triggers out: the year's
    // onboardings give both arms at least 20 matured triggers.
    let mut success = target.success()?;
    let playbook = success
        .list_playbooks(ListPlaybooksRequest::default())
        .await?
        .into_inner()
        .playbooks
        .into_iter()
        .find(|p| {
            p.spec
                .as_ref()
                .is_some_and(|s| s.name == "Onboarding kick-off")
        })
        .ok_or_else(|| anyhow::anyhow!("no onboarding playbook"))?;
    let report = success
        .get_playbook_effectiveness(GetPlaybookEffectivenessRequest {
            playbook_id: playbook.id.clone(),
            period: Some(Period {
                start: Some(prost_types::Timestamp {
                    seconds: range.start(),
                    nanos: 0,
                }),
                end: Some(prost_types::Timestamp {
                    seconds: range.end(),
                    nanos: 0,
                }),
            }),
        })
        .await?
        .into_inner();
    let (treated, comparison) = (
        report.treated.unwrap_or_default(),
        report.comparison.unwrap_or_default(),
    );
    assert!(
        treated.matured >= 20 && comparison.matured >= 20,
        "{treated:?} {comparison:?}"
    );
    assert!(!report.observational);
    let (Some(d), Some(low), Some(high)) = (report.effect, report.effect_low, report.effect_high)
    else {
        anyhow::bail!("no effect: {}", report.note);
    };
    assert!(low < d && d < high, "{low} {d} {high}");
    assert!(
        (d - (treated.churn_rate.unwrap_or(0.0) - comparison.churn_rate.unwrap_or(0.0))).abs()
            < 1e-9
    );

    // The terminal report prints it: the difference and its interval.
    let playbooks = report::playbooks(&target, range, report::Format::Table).await?;
    let row = cells(&playbooks, "Onboarding kick-off")?;
    let effect = row.last().map(String::as_str).unwrap_or_default();
    assert_eq!(
        effect,
        format!(
            "{:+.1} pts ({:+.1} to {:+.1})",
            d * 100.0,
            low * 100.0,
            high * 100.0
        ),
        "{playbooks}"
    );
    Ok(())
}
