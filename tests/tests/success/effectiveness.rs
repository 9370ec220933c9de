//! The effectiveness report's figures about a playbook's own CTAs, counted
//! by the database over the period: CTAs opened, the share of the due ones
//! closed by their due time, the median time to the first action and the
//! outcome counts. The CTAs are opened in the past the way production opens
//! them from a dated event: a champion who left some days ago.

use bowtie_proto::accounts::MarkContactLeftRequest;
use bowtie_proto::common::{Period, Segment};
use bowtie_proto::success::{
    Cta, CtaStatus, GetPlaybookEffectivenessRequest, Outcome, Trigger, TriggerKind,
    UpdateCtaStatusRequest,
};
use bowtie_testkit::fixtures::{contact, create_contact};
use bowtie_testkit::success::{SuccessClient, Suite, ctas_of, red_playbook};
use bowtie_testkit::{TestDatabase, backend_test, within};

backend_test!(the_report_counts_the_playbook_s_ctas_in_sla_time_to_first_action_and_outcomes);

const DAY: i64 = 86_400;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// An account whose champion left `days_ago`; returns it and its CTA.
async fn champion_left(suite: &Suite, name: &str, days_ago: i64) -> anyhow::Result<(i64, Cta)> {
    let account = suite.account(name, Segment::Smb, "ana@acme.io").await?;
    let mut accounts = suite.accounts.accounts();
    let champion = create_contact(&mut accounts, contact(&account, "Jo Park")).await?;
    let left = now() - days_ago * DAY;
    accounts
        .mark_contact_left(MarkContactLeftRequest {
            id: champion.id,
            left_time: Some(prost_types::Timestamp {
                seconds: left,
                nanos: 0,
            }),
            idempotency_key: String::new(),
        })
        .await?;
    let mut client = suite.client();
    let cta = within(20, "the CTA", async {
        loop {
            if let Some(cta) = ctas_of(&mut client, &account).await?.into_iter().next() {
                return anyhow::Ok(cta);
            }
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        }
    })
    .await??;
    Ok((left, cta))
}

async fn close(client: &mut SuccessClient, cta: &Cta, outcome: Outcome) -> anyhow::Result<i64> {
    client
        .update_cta_status(UpdateCtaStatusRequest {
            id: cta.id.clone(),
            status: CtaStatus::Closed as i32,
            outcome: outcome as i32,
            expected_version: cta.version,
            actor: "ana@acme.io".into(),
            ..UpdateCtaStatusRequest::default()
        })
        .await?;
    Ok(now())
}

async fn the_report_counts_the_playbook_s_ctas_in_sla_time_to_first_action_and_outcomes(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Suite::start(db).await?;
    // A CTA due a week after the champion left.
    let mut spec = red_playbook("Replace the champion");
    spec.trigger = Some(Trigger {
        kind: TriggerKind::ChampionLeft as i32,
        ..Trigger::default()
    });
    spec.auto_close = 0;
    spec.sla_days = 7;
    let playbook = suite.playbook(spec).await?;
    // Acme's and Globex's champions left 10 days ago (their CTAs are
    // overdue), Initech's 2 days ago (due in 5 days).
    let (acme_at, acme) = champion_left(&suite, "Acme", 10).await?;
    let (_, globex) = champion_left(&suite, "Globex", 10).await?;
    let (initech_at, initech) = champion_left(&suite, "Initech", 2).await?;
    // Acme is closed SAVED after its due time, Initech LOST before; Globex
    // is not acted on.
    let mut client = suite.client();
    let acme_closed = close(&mut client, &acme, Outcome::Saved).await?;
    let initech_closed = close(&mut client, &initech, Outcome::Lost).await?;
    assert_eq!(globex.status, CtaStatus::Open as i32);

    let report = client
        .get_playbook_effectiveness(GetPlaybookEffectivenessRequest {
            playbook_id: playbook.id.clone(),
            period: Some(Period {
                start: Some(prost_types::Timestamp {
                    seconds: now() - 30 * DAY,
                    nanos: 0,
                }),
                end: Some(prost_types::Timestamp {
                    seconds: now() + DAY,
                    nanos: 0,
                }),
            }),
        })
        .await?
        .into_inner();
    assert_eq!(report.ctas_opened, 3);
    // Two CTAs are due (Acme's and Globex's), neither closed by then.
    assert_eq!(report.closed_within_sla, Some(0.0));
    // The first actions: Acme's about 240 hours after opening, Initech's
    // about 48; the median of the two is their mean.
    let hours = |opened: i64, acted: i64| (acted - opened) as f64 / 3600.0;
    let expected = (hours(acme_at, acme_closed) + hours(initech_at, initech_closed)) / 2.0;
    let median = report.median_hours_to_first_action.unwrap_or_default();
    assert!((median - expected).abs() < 0.01, "{median} vs {expected}");
    // Outcomes by number: one SAVED, one LOST.
    let mut outcomes = vec![0; 6];
    outcomes[Outcome::Saved as usize] = 1;
    outcomes[Outcome::Lost as usize] = 1;
    assert_eq!(report.outcomes, outcomes);
    Ok(())
}
