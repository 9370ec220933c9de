//! Playbooks acting on scoring's alerts: an account turning red opens one
//! CTA for its CSM with the playbook's tasks, a second red trigger updates
//! that CTA instead of opening another, leaving red closes it by itself, and
//! a held-out account gets no CTA but is recorded for the comparison.

use bowtie_proto::common::Segment;
use bowtie_proto::scoring::ResolveAlertRequest;
use bowtie_proto::success::{
    ActivityKind, CtaStatus, GetPlaybookEffectivenessRequest, ListActivitiesRequest,
    ListCtasRequest, Outcome, PlaybookMode, TaskStatus,
};
use bowtie_testkit::scoring::{alerts_of, health_when, logins, record};
use bowtie_testkit::success::{Suite, ctas_of, ctas_when, red_playbook};
use bowtie_testkit::{TestDatabase, backend_test};

backend_test!(
    an_account_turning_red_opens_one_cta_for_its_csm_and_leaving_red_closes_it,
    a_second_red_trigger_updates_the_open_cta_instead_of_opening_another,
    a_held_out_account_gets_no_cta_but_counts_in_the_comparison_group,
);

const DAY: i64 = 86_400;

/// Ten logins 40 days ago and none since: usage fell to 0, score 17, RED.
async fn turn_red(suite: &Suite, account: &str, key: &str) -> anyhow::Result<()> {
    let mut scoring = suite.scoring();
    record(
        &mut scoring,
        logins(&format!("{key}-before"), account, 10, 40),
    )
    .await?;
    health_when(&mut scoring, account, "a red score", |h| h.score == 17).await?;
    Ok(())
}

/// Ten logins 5 days ago as well: usage 10 of 10, score 100, GREEN.
async fn turn_green(suite: &Suite, account: &str, key: &str) -> anyhow::Result<()> {
    let mut scoring = suite.scoring();
    record(&mut scoring, logins(&format!("{key}-now"), account, 10, 5)).await?;
    health_when(&mut scoring, account, "a green score", |h| h.score == 100).await?;
    Ok(())
}

async fn an_account_turning_red_opens_one_cta_for_its_csm_and_leaving_red_closes_it(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Suite::start(db).await?;
    let playbook = suite.playbook(red_playbook("Save red accounts")).await?;
    let acme = suite
        .account("Acme", Segment::MidMarket, "ana@acme.io")
        .await?;
    turn_red(&suite, &acme, "acme").await?;

    let mut client = suite.client();
    let mine = ListCtasRequest {
        owner: "ana@acme.io".into(),
        ..ListCtasRequest::default()
    };
    let ctas = ctas_when(&mut client, mine.clone(), "ana's CTA", |c| !c.is_empty()).await?;
    assert_eq!(ctas.len(), 1);
    let cta = &ctas[0];
    assert_eq!(cta.account_id, acme);
    assert_eq!(cta.playbook_id, playbook.id);
    assert_eq!((cta.status, cta.trigger_count), (CtaStatus::Open as i32, 1));
    assert_eq!(cta.reason, "health fell into red at 17");
    let opened = cta.create_time.map_or(0, |t| t.seconds);
    assert_eq!(cta.due_time.map(|t| t.seconds - opened), Some(7 * DAY));
    let tasks: Vec<(&str, i64, i32)> = cta
        .tasks
        .iter()
        .map(|t| {
            (
                t.title.as_str(),
                t.due_time.map_or(0, |d| d.seconds - opened),
                t.status,
            )
        })
        .collect();
    assert_eq!(
        tasks,
        [
            ("Call the champion", DAY, TaskStatus::Open as i32),
            ("Agree a save plan", 3 * DAY, TaskStatus::Open as i32),
        ]
    );
    // The alert and the CTA are on the account's timeline, newest first.
    let timeline = client
        .list_activities(ListActivitiesRequest {
            account_id: acme.clone(),
            ..ListActivitiesRequest::default()
        })
        .await?
        .into_inner()
        .activities;
    let kinds: Vec<i32> = timeline.iter().map(|a| a.kind).collect();
    assert!(
        kinds.contains(&(ActivityKind::Alert as i32)),
        "{timeline:?}"
    );
    assert!(kinds.contains(&(ActivityKind::Cta as i32)), "{timeline:?}");

    // Health recovers: the playbook's condition closes the CTA.
    turn_green(&suite, &acme, "acme").await?;
    let closed = ctas_when(
        &mut client,
        ListCtasRequest {
            account_id: acme.clone(),
            status: CtaStatus::Closed as i32,
            ..ListCtasRequest::default()
        },
        "the CTA closed by itself",
        |c| c.len() == 1,
    )
    .await?;
    assert_eq!(closed[0].id, cta.id);
    assert_eq!(closed[0].outcome, Outcome::AutoClosed as i32);
    assert!(ctas_of(&mut client, &acme).await?.is_empty());
    Ok(())
}

async fn a_second_red_trigger_updates_the_open_cta_instead_of_opening_another(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Suite::start(db).await?;
    let mut spec = red_playbook("Save red accounts");
    spec.auto_close = 0;
    suite.playbook(spec).await?;
    let acme = suite.account("Acme", Segment::Smb, "ana@acme.io").await?;
    turn_red(&suite, &acme, "acme").await?;
    let mut client = suite.client();
    let all = ListCtasRequest {
        account_id: acme.clone(),
        ..ListCtasRequest::default()
    };
    let first = ctas_when(&mut client, all.clone(), "the CTA", |c| c.len() == 1).await?;
    // Green again, the alert resolved, then red again: 50 logins in the
    // month before the last one, 10 in the last: usage 20, score 33, a
    // second ENTERED_RED alert.
    turn_green(&suite, &acme, "acme").await?;
    let mut scoring = suite.scoring();
    for alert in alerts_of(&mut scoring, &acme).await? {
        scoring
            .resolve_alert(ResolveAlertRequest {
                id: alert.id,
                expected_version: alert.version,
                note: "recovered".into(),
            })
            .await?;
    }
    record(&mut scoring, logins("acme-earlier", &acme, 40, 45)).await?;
    health_when(&mut scoring, &acme, "red again", |h| h.score == 33).await?;
    let ctas = ctas_when(&mut client, all, "the second trigger counted", |c| {
        c.first().is_some_and(|c| c.trigger_count == 2)
    })
    .await?;
    assert_eq!(ctas.len(), 1, "{ctas:?}");
    assert_eq!(ctas[0].id, first[0].id);
    assert_eq!(ctas[0].version, first[0].version + 1);
    Ok(())
}

async fn a_held_out_account_gets_no_cta_but_counts_in_the_comparison_group(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Suite::start(db).await?;
    let mut spec = red_playbook("Save red accounts");
    spec.mode = PlaybookMode::Holdout as i32;
    spec.holdout_percent = 50;
    let playbook = suite.playbook(spec).await?;
    // Six accounts turn red; the seeded draw holds some of them out.
    let mut accounts = Vec::new();
    for name in ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark"] {
        let id = suite.account(name, Segment::Smb, "ana@acme.io").await?;
        turn_red(&suite, &id, name).await?;
        accounts.push(id);
    }
    let mut client = suite.client();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let period = bowtie_proto::common::Period {
        start: Some(prost_types::Timestamp {
            seconds: now - 400 * DAY,
            nanos: 0,
        }),
        end: Some(prost_types::Timestamp {
            seconds: now + DAY,
            nanos: 0,
        }),
    };
    let report = bowtie_testkit::within(20, "every trigger recorded", async {
        loop {
            let r = client
                .get_playbook_effectiveness(GetPlaybookEffectivenessRequest {
                    playbook_id: playbook.id.clone(),
                    period: Some(period),
                })
                .await?
                .into_inner();
            let arms = (r.treated, r.comparison);
            if let (Some(t), Some(c)) = &arms
                && t.triggers + c.triggers == 6
            {
                return anyhow::Ok(r);
            }
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        }
    })
    .await??;
    let (treated, held) = (
        report.treated.unwrap_or_default(),
        report.comparison.unwrap_or_default(),
    );
    // Held-out triggers make the comparison a randomised one (six accounts
    // at 50% may, rarely, all land in one arm).
    assert_eq!(report.observational, held.triggers == 0);
    // Exactly the treated accounts have a CTA.
    let mut with_cta = 0;
    for id in &accounts {
        with_cta += ctas_of(&mut client, id).await?.len() as i64;
    }
    assert_eq!(with_cta, treated.triggers);
    assert_eq!(report.ctas_opened, treated.triggers);
    // Nothing has matured within the 90-day horizon yet: no effect, a note.
    assert_eq!((treated.matured, held.matured), (0, 0));
    assert_eq!(report.effect, None);
    assert!(
        report.note.contains("20 matured triggers"),
        "{}",
        report.note
    );
    Ok(())
}
