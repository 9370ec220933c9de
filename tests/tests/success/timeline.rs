//! The timeline: people log notes, calls, meetings and emails on an account;
//! it lists newest first, filtered by kind and author, and refuses unknown
//! accounts and oversized text.

use bowtie_proto::common::Segment;
use bowtie_proto::success::{ActivityKind, ListActivitiesRequest, LogActivityRequest};
use bowtie_testkit::assert::{invalid_field, status};
use bowtie_testkit::success::Suite;
use bowtie_testkit::{TestDatabase, backend_test};
use prost_types::Timestamp;
use tonic::Code;

backend_test!(people_log_activities_and_the_timeline_lists_them_newest_first);

fn at(seconds: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos: 0 })
}

fn log(
    account: &str,
    kind: ActivityKind,
    author: &str,
    seconds: i64,
    text: &str,
) -> LogActivityRequest {
    LogActivityRequest {
        account_id: account.to_owned(),
        kind: kind as i32,
        author: author.to_owned(),
        occur_time: at(seconds),
        text: text.to_owned(),
        participants: vec!["cfo@acme.com".into()],
        idempotency_key: String::new(),
    }
}

async fn people_log_activities_and_the_timeline_lists_them_newest_first(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Suite::start(db).await?;
    let acme = suite.account("Acme", Segment::Smb, "ana@acme.io").await?;
    let mut client = suite.client();
    let t = 1_780_000_000;
    client
        .log_activity(log(
            &acme,
            ActivityKind::Call,
            "ana@acme.io",
            t,
            "Renewal call",
        ))
        .await?;
    client
        .log_activity(log(
            &acme,
            ActivityKind::Note,
            "bob@acme.io",
            t + 60,
            "Champion is leaving",
        ))
        .await?;
    client
        .log_activity(log(
            &acme,
            ActivityKind::Meeting,
            "ana@acme.io",
            t - 60,
            "QBR",
        ))
        .await?;
    let list = |kinds: Vec<i32>, author: &str| ListActivitiesRequest {
        account_id: acme.clone(),
        kinds,
        author: author.to_owned(),
        page: None,
    };
    let all = client
        .list_activities(list(vec![], ""))
        .await?
        .into_inner()
        .activities;
    let texts: Vec<&str> = all.iter().map(|a| a.text.as_str()).collect();
    assert_eq!(texts, ["Champion is leaving", "Renewal call", "QBR"]);
    assert_eq!(all[0].participants, ["cfo@acme.com"]);
    let anas = client
        .list_activities(list(vec![], "ana@acme.io"))
        .await?
        .into_inner()
        .activities;
    assert_eq!(anas.len(), 2);
    let calls = client
        .list_activities(list(vec![ActivityKind::Call as i32], ""))
        .await?
        .into_inner()
        .activities;
    assert_eq!(calls.len(), 1);
    // Bad input.
    let nobody = uuid::Uuid::now_v7().to_string();
    status(
        client
            .log_activity(log(&nobody, ActivityKind::Note, "ana", t, "x"))
            .await,
        Code::NotFound,
    );
    invalid_field(
        client
            .log_activity(log(
                &acme,
                ActivityKind::Note,
                "ana",
                t,
                &"x".repeat(10_001),
            ))
            .await,
        "text",
    );
    invalid_field(
        client
            .log_activity(log(&acme, ActivityKind::Alert, "ana", t, "x"))
            .await,
        "kind",
    );
    Ok(())
}
