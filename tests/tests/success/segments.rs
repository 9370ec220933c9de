//! Playbooks on scoring's value segments: an account whose revenue ranks
//! it into DIAMOND gets one thank-you CTA from a "VIP care" playbook, and
//! when the same DIAMOND account's usage falls it enters quadrant B and a
//! "VIP at risk" playbook opens its CTA. Rescoring an account that stays
//! where it is publishes nothing, so nothing is opened or counted twice.
//! An account whose revenue to date passes a milestone gets one thank-you
//! CTA, however often the sweep runs.

use bowtie_proto::common::Segment;
use bowtie_proto::scoring::scoring_service_client::ScoringServiceClient;
use bowtie_proto::scoring::{Quadrant, RecomputeHealthRequest, Tier};
use bowtie_proto::success::{CtaStatus, CtaType, ListCtasRequest, Trigger, TriggerKind};
use bowtie_testkit::revenue::{create, monthly};
use bowtie_testkit::scoring::{days_ago, health_when, logins, record};
use bowtie_testkit::success::{ValueSuite, ctas_when, vip_playbook};
use bowtie_testkit::{ADMIN_KEY, TestDatabase, backend_test};

backend_test!(
    an_account_entering_diamond_gets_one_thank_you_and_falling_into_b_one_rescue,
    an_account_passing_a_revenue_milestone_gets_one_thank_you,
);

async fn an_account_entering_diamond_gets_one_thank_you_and_falling_into_b_one_rescue(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let value = ValueSuite::start(db).await?;
    let suite = &value.suite;
    let thank_you = suite
        .playbook(vip_playbook(
            "VIP care",
            Trigger {
                kind: TriggerKind::TierEntered as i32,
                tiers: vec![Tier::Diamond as i32],
                ..Trigger::default()
            },
        ))
        .await?;
    let mut rescue_spec = vip_playbook(
        "VIP at risk",
        Trigger {
            kind: TriggerKind::QuadrantEntered as i32,
            tiers: vec![Tier::Diamond as i32, Tier::Gold as i32],
            quadrants: vec![Quadrant::B as i32, Quadrant::E as i32],
            ..Trigger::default()
        },
    );
    rescue_spec.cta_type = CtaType::Risk as i32;
    let rescue = suite.playbook(rescue_spec).await?;
    let acme = suite
        .account("Acme", Segment::Enterprise, "ana@acme.io")
        .await?;

    // Acme uses the product as before (usage 10 of 10, score 100), then
    // pays 10,000 a month: the only payer, the top 5%.
    let mut scoring = suite.scoring();
    let mut admin = ScoringServiceClient::new(suite.scoring.with_key(ADMIN_KEY));
    let mut batch = logins("acme-before", &acme, 10, 40);
    batch.extend(logins("acme-now", &acme, 10, 5));
    record(&mut scoring, batch).await?;
    health_when(&mut scoring, &acme, "a score from usage", |h| {
        h.score == 100
    })
    .await?;
    value
        .billing()
        .create_subscription(create(monthly(
            &acme,
            days_ago(60).unwrap_or_default(),
            10,
            1_000,
        )))
        .await?;
    health_when(&mut scoring, &acme, "the MRR from the revenue feed", |h| {
        h.mrr_minor_units == 10_000
    })
    .await?;
    // Tiers rank against every account's MRR: a full recompute refreshes them.
    admin.recompute_health(RecomputeHealthRequest {}).await?;
    health_when(&mut scoring, &acme, "DIAMOND in quadrant A", |h| {
        (h.tier, h.quadrant) == (Tier::Diamond as i32, Quadrant::A as i32)
    })
    .await?;

    let mut client = suite.client();
    let of = |playbook: &str| ListCtasRequest {
        account_id: acme.clone(),
        playbook_id: playbook.to_owned(),
        ..ListCtasRequest::default()
    };
    let thanks = ctas_when(&mut client, of(&thank_you.id), "the thank-you CTA", |c| {
        !c.is_empty()
    })
    .await?;
    assert_eq!(thanks.len(), 1, "{thanks:?}");
    assert_eq!(thanks[0].owner, "ana@acme.io");
    assert_eq!(thanks[0].r#type, CtaType::Lifecycle as i32);
    assert_eq!(
        (thanks[0].status, thanks[0].trigger_count),
        (CtaStatus::Open as i32, 1)
    );
    assert!(
        thanks[0].reason.starts_with("entered tier DIAMOND"),
        "{}",
        thanks[0].reason
    );

    // Rescoring an account that stays DIAMOND in A changes nothing.
    admin.recompute_health(RecomputeHealthRequest {}).await?;
    admin.recompute_health(RecomputeHealthRequest {}).await?;

    // 90 more logins the month before: usage fell from 100 to 10 of 100;
    // usage 10 (w25), payment 100 (w15), plan changes 100 (w10),
    // stakeholders 100 (w5) = 3250 / 55 = 59, below the loyalty line (60)
    // while still DIAMOND: quadrant B.
    record(&mut scoring, logins("acme-earlier", &acme, 90, 45)).await?;
    health_when(&mut scoring, &acme, "DIAMOND in quadrant B", |h| {
        (h.score, h.tier, h.quadrant) == (59, Tier::Diamond as i32, Quadrant::B as i32)
    })
    .await?;
    let rescues = ctas_when(&mut client, of(&rescue.id), "the rescue CTA", |c| {
        !c.is_empty()
    })
    .await?;
    assert_eq!(rescues.len(), 1, "{rescues:?}");
    assert_eq!(rescues[0].reason, "entered quadrant B (was A) as DIAMOND");
    assert_eq!(rescues[0].trigger_count, 1);

    // The feed is applied in order: everything before the quadrant change
    // has been, and the thank-you CTA was neither opened again nor counted.
    let thanks_now = ctas_when(&mut client, of(&thank_you.id), "the thank-you CTA", |c| {
        !c.is_empty()
    })
    .await?;
    assert_eq!(thanks_now.len(), 1, "{thanks_now:?}");
    assert_eq!(thanks_now[0].id, thanks[0].id);
    assert_eq!(thanks_now[0].trigger_count, 1);
    assert_eq!(thanks_now[0].version, thanks[0].version);
    Ok(())
}

async fn an_account_passing_a_revenue_milestone_gets_one_thank_you(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let value = ValueSuite::start_with(db, |s| s.success_policy.sweep_interval_seconds = 1).await?;
    let suite = &value.suite;
    let milestone = |amount: i64| Trigger {
        kind: TriggerKind::RevenueMilestone as i32,
        milestone_minor_units: amount,
        ..Trigger::default()
    };
    let passed = suite
        .playbook(vip_playbook("VIP care: 150 earned", milestone(15_000)))
        .await?;
    let ahead = suite
        .playbook(vip_playbook(
            "VIP care: 100,000 earned",
            milestone(10_000_000),
        ))
        .await?;
    let acme = suite.account("Acme", Segment::Smb, "ana@acme.io").await?;
    // 100.00 a month for the last 60 days: 10,000 x 60 / 30.4375 = 19,712
    // earned by now (and a little more each second).
    value
        .billing()
        .create_subscription(create(monthly(
            &acme,
            days_ago(60).unwrap_or_default(),
            10,
            1_000,
        )))
        .await?;
    let mut client = suite.client();
    let of = |playbook: &str| ListCtasRequest {
        account_id: acme.clone(),
        playbook_id: playbook.to_owned(),
        ..ListCtasRequest::default()
    };
    let thanks = ctas_when(&mut client, of(&passed.id), "the milestone CTA", |c| {
        !c.is_empty()
    })
    .await?;
    assert_eq!(thanks.len(), 1, "{thanks:?}");
    assert_eq!(thanks[0].owner, "ana@acme.io");
    assert!(
        thanks[0].reason.starts_with("revenue to date 197.1")
            && thanks[0]
                .reason
                .ends_with(" USD passed the 150.00 USD milestone"),
        "{}",
        thanks[0].reason
    );
    // Three more sweeps: the milestone was passed once.
    tokio::time::sleep(std::time::Duration::from_millis(3_200)).await;
    let after = ctas_when(&mut client, of(&passed.id), "the milestone CTA", |c| {
        !c.is_empty()
    })
    .await?;
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(
        (after[0].id.as_str(), after[0].trigger_count),
        (thanks[0].id.as_str(), 1)
    );
    let none = client.list_ctas(of(&ahead.id)).await?.into_inner().ctas;
    assert!(none.is_empty(), "{none:?}");
    Ok(())
}
