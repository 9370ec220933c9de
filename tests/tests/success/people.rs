//! What is a person's own on the success service (docs/design.md 9.3):
//! `mine=true` on the book of business shows only the books of the caller's
//! people, and a csm or manager sets only its own notification settings,
//! a refusal writing nothing and audited; admins and keys with scopes only
//! set anyone's.

use bowtie_proto::common::{AuditFilter, Period, Segment};
use bowtie_proto::success::{
    BookGrouping, GetBookOfBusinessRequest, ListAuditEventsRequest, NotificationSettings,
    SetNotificationSettingsRequest,
};
use bowtie_testkit::assert::invalid_field;
use bowtie_testkit::people::{PEOPLE, audited_as, with_people};
use bowtie_testkit::revenue::day;
use bowtie_testkit::success::{SuccessClient, Suite, ValueSuite};
use bowtie_testkit::{TestDatabase, backend_test, within};
use tonic::Code;

backend_test!(
    mine_shows_only_the_books_of_the_callers_people,
    a_person_sets_only_its_own_notification_settings_and_a_refusal_is_audited,
);

/// The book of business by CSM, of 2025, as the caller of `client` asks it.
async fn books(client: &mut SuccessClient, mine: bool) -> Result<Vec<String>, tonic::Status> {
    let book = client
        .get_book_of_business(GetBookOfBusinessRequest {
            group_by: BookGrouping::Csm as i32,
            person: String::new(),
            period: Some(Period {
                start: Some(day(2025, 1, 1)),
                end: Some(day(2026, 1, 1)),
            }),
            mine,
        })
        .await?
        .into_inner();
    let mut people: Vec<String> = book.books.into_iter().map(|b| b.person).collect();
    people.sort();
    Ok(people)
}

async fn mine_shows_only_the_books_of_the_callers_people(db: &TestDatabase) -> anyhow::Result<()> {
    let value = ValueSuite::start_with(db, |s| with_people(s, &PEOPLE)).await?;
    let suite = &value.suite;
    for (name, csm) in [
        ("Acme", "Ada@Example.com"),
        ("Globex", "grace@example.com"),
        ("Initech", "lin@example.com"),
    ] {
        suite.account(name, Segment::Smb, csm).await?;
    }
    let mut reader = suite.reader();
    let everyone = within(20, "every book", async {
        loop {
            let people = books(&mut reader, false).await?;
            if people.len() == 3 {
                return anyhow::Ok(people);
            }
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        }
    })
    .await??;
    assert_eq!(
        everyone,
        ["Ada@Example.com", "grace@example.com", "lin@example.com"]
    );

    let mut ada = suite.as_person("ada@example.com");
    assert_eq!(books(&mut ada, true).await?, ["Ada@Example.com"]);
    assert_eq!(books(&mut ada, false).await?, everyone);
    let mut lead = suite.as_person("lead@example.com");
    assert_eq!(books(&mut lead, true).await?, ["grace@example.com"]);
    invalid_field(books(&mut suite.client(), true).await, "mine");
    Ok(())
}

fn settings_of(person: &str) -> SetNotificationSettingsRequest {
    SetNotificationSettingsRequest {
        settings: Some(NotificationSettings {
            person: person.to_owned(),
            daily_digest: true,
            digest_hour_utc: 8,
            ..NotificationSettings::default()
        }),
    }
}

/// Success's audit entries of `principal`, newest first.
async fn audited(suite: &Suite, principal: &str) -> anyhow::Result<Vec<[String; 3]>> {
    let events = suite
        .admin()
        .list_audit_events(ListAuditEventsRequest {
            filter: Some(AuditFilter {
                principal: principal.to_owned(),
                ..AuditFilter::default()
            }),
            page: None,
        })
        .await?
        .into_inner()
        .events;
    Ok(events.into_iter().map(audited_as).collect())
}

fn entry(principal: &str, result: &str) -> [String; 3] {
    [
        principal.to_owned(),
        "SetNotificationSettings".to_owned(),
        result.to_owned(),
    ]
}

async fn a_person_sets_only_its_own_notification_settings_and_a_refusal_is_audited(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Suite::start_with(db, |s| with_people(s, &PEOPLE)).await?;
    let mut ada = suite.as_person("ada@example.com");
    let own = ada
        .set_notification_settings(settings_of("ADA@example.com"))
        .await?
        .into_inner()
        .settings
        .map(|s| (s.person, s.daily_digest));
    assert_eq!(own, Some(("ADA@example.com".to_owned(), true)));

    let refused = ada
        .set_notification_settings(settings_of("grace@example.com"))
        .await
        .err()
        .map(|s| (s.code(), s.message().to_owned()));
    assert_eq!(
        refused,
        Some((
            Code::PermissionDenied,
            "the notification settings of \"grace@example.com\" are not \"ada@example.com\"'s \
             (role csm): a csm or manager changes only its own"
                .to_owned()
        ))
    );
    // A manager's team is its book of accounts, not of settings.
    let mut lead = suite.as_person("lead@example.com");
    let code = lead
        .set_notification_settings(settings_of("grace@example.com"))
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(code, Some(Code::PermissionDenied));
    // An admin and a key with scopes only set anyone's.
    let mut root = suite.as_person("root@example.com");
    root.set_notification_settings(settings_of("grace@example.com"))
        .await?;
    suite
        .client()
        .set_notification_settings(settings_of("lin@example.com"))
        .await?;

    // The refusal kept nothing: the log has an entry for each kept write,
    // and ada's refused one is a denial only.
    assert_eq!(
        audited(&suite, "ada@example.com").await?,
        [
            entry("ada@example.com", "PERMISSION_DENIED"),
            entry("ada@example.com", "OK")
        ]
    );
    assert_eq!(
        audited(&suite, "lead@example.com").await?,
        [entry("lead@example.com", "PERMISSION_DENIED")]
    );
    assert_eq!(
        audited(&suite, "root@example.com").await?,
        [entry("root@example.com", "OK")]
    );
    Ok(())
}
