//! Stages that money decides: the funnel follows a real revenue server's
//! feed and moves journeys on its own, exactly once, across restarts.

use bowtie_proto::common::{Segment, Stage};
use bowtie_proto::funnel::Journey;
use bowtie_proto::funnel::funnel_service_client::FunnelServiceClient;
use bowtie_proto::revenue::CancelSubscriptionRequest;
use bowtie_testkit::revenue::{self, Revenue, change, create, monthly, terms};
use bowtie_testkit::{TestDatabase, TestServer, WRITE_KEY, backend_test, within};

use crate::*;

backend_test!(
    subscriptions_move_the_journey_to_commit_growth_and_churned_with_the_cancellation_reason,
    after_a_restart_the_funnel_catches_up_without_repeating_a_stage,
    first_value_reached_in_scoring_moves_the_journey_to_impact_once,
);

fn client(funnel: &TestServer) -> FunnelClient {
    FunnelServiceClient::new(funnel.with_key(WRITE_KEY))
}

fn stages(j: &Journey) -> Vec<(Stage, String)> {
    j.transitions
        .iter()
        .map(|t| {
            (
                Stage::try_from(t.to_stage).unwrap_or(Stage::Unspecified),
                t.source.clone(),
            )
        })
        .collect()
}

/// Waits until the journey of `account` has `count` transitions.
async fn journey_with(funnel: &TestServer, account: &str, count: usize) -> anyhow::Result<Journey> {
    let mut client = client(funnel);
    within(20, "the funnel to follow the revenue feed", async {
        loop {
            if let Ok(j) = journey(&mut client, account).await
                && j.transitions.len() >= count
            {
                return anyhow::Ok(j);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await?
}

async fn subscriptions_move_the_journey_to_commit_growth_and_churned_with_the_cancellation_reason(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let revenue_suite = Revenue::start(db).await?;
    let funnel = start_funnel_with(
        db,
        &revenue_suite.accounts.uri(),
        &revenue_suite.revenue.uri(),
    )
    .await?;
    let acme = revenue_suite.account("Acme", Segment::Smb, "ana").await?;
    record(&mut client(&funnel), &acme, Stage::Selection, 0).await?;

    let mut billing = revenue_suite.client();
    let subscription = billing
        .create_subscription(create(monthly(&acme, revenue::day(2026, 2, 1), 10, 5_000)))
        .await?
        .into_inner()
        .subscription
        .ok_or_else(|| anyhow::anyhow!("no subscription"))?;
    let j = journey_with(&funnel, &acme, 3).await?;
    assert_eq!(
        stages(&j),
        [
            (Stage::Selection, "test".to_owned()),
            (Stage::Commit, "revenue".to_owned()),
            (Stage::Onboarding, "revenue".to_owned()),
        ]
    );
    assert_eq!(j.transitions[1].occurred_at, Some(revenue::day(2026, 2, 1)));

    billing
        .change_subscription(change(
            &subscription.id,
            revenue::day(2026, 4, 1),
            terms(15, 5_000, "USD"),
        ))
        .await?;
    let j = journey_with(&funnel, &acme, 4).await?;
    assert_eq!(j.current_stage, Stage::Growth as i32);

    billing
        .cancel_subscription(CancelSubscriptionRequest {
            id: subscription.id,
            cancellation: revenue::cancellation(revenue::day(2026, 6, 1)),
            ..Default::default()
        })
        .await?;
    let j = journey_with(&funnel, &acme, 5).await?;
    assert_eq!(j.current_stage, Stage::Churned as i32);
    // The cancellation was voluntary, for price: CHURNED records both.
    assert_eq!(j.transitions[4].reason, "voluntary:price");
    assert_eq!(j.current_since, Some(revenue::day(2026, 6, 1)));
    Ok(())
}

async fn after_a_restart_the_funnel_catches_up_without_repeating_a_stage(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let revenue_suite = Revenue::start(db).await?;
    let (accounts_uri, revenue_uri) = (revenue_suite.accounts.uri(), revenue_suite.revenue.uri());
    let funnel = start_funnel_with(db, &accounts_uri, &revenue_uri).await?;
    let acme = revenue_suite.account("Acme", Segment::Smb, "ana").await?;
    let mut billing = revenue_suite.client();
    let first = billing
        .create_subscription(create(monthly(&acme, revenue::day(2026, 1, 1), 1, 1_000)))
        .await?
        .into_inner()
        .subscription
        .ok_or_else(|| anyhow::anyhow!("no subscription"))?;
    journey_with(&funnel, &acme, 2).await?;
    funnel.stop().await?;

    // While the funnel is down the customer churns and comes back.
    billing
        .cancel_subscription(CancelSubscriptionRequest {
            id: first.id,
            cancellation: revenue::cancellation(revenue::day(2026, 3, 1)),
            ..Default::default()
        })
        .await?;
    billing
        .create_subscription(create(monthly(&acme, revenue::day(2026, 5, 1), 1, 1_000)))
        .await?;

    let funnel = start_funnel_with(db, &accounts_uri, &revenue_uri).await?;
    let j = journey_with(&funnel, &acme, 5).await?;
    let expected: Vec<Stage> = vec![
        Stage::Commit,
        Stage::Onboarding,
        Stage::Churned,
        Stage::Commit,
        Stage::Onboarding,
    ];
    assert_eq!(
        stages(&j).into_iter().map(|(s, _)| s).collect::<Vec<_>>(),
        expected
    );
    assert_eq!(j.attempts, 2, "the reactivation starts a second attempt");
    // Nothing more arrives: every event was applied exactly once.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        journey(&mut client(&funnel), &acme)
            .await?
            .transitions
            .len(),
        5
    );
    Ok(())
}

async fn first_value_reached_in_scoring_moves_the_journey_to_impact_once(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    use bowtie_proto::scoring::SignalType;
    use bowtie_testkit::scoring::{self as scoring, days_ago};

    let mut settings = db.server_settings()?;
    let accounts = TestServer::start_with(&settings).await?;
    settings.peers.accounts = accounts.uri();
    let scoring_server = scoring::start_scoring(&settings).await?;
    settings.peers.scoring = scoring_server.uri();
    let funnel = TestServer::start_service(FUNNEL_SERVICE, &settings, bowtie_funnel::build).await?;
    let acme = scoring::create_account(&accounts, "Acme", Segment::Smb).await?;
    let mut transitions = client(&funnel);
    transitions
        .record_transition(bowtie_proto::funnel::RecordTransitionRequest {
            account_id: acme.clone(),
            to_stage: Stage::Onboarding as i32,
            occurred_at: days_ago(20),
            source: "test".into(),
            ..Default::default()
        })
        .await?;
    let mut signals = bowtie_proto::scoring::scoring_service_client::ScoringServiceClient::new(
        scoring_server.with_key(WRITE_KEY),
    );
    let reached = scoring::signal("fv-1", &acme, SignalType::FirstValueReached, 1, 2);
    scoring::record(&mut signals, vec![reached.clone()]).await?;
    // A second first-value signal later announces nothing new.
    scoring::record(
        &mut signals,
        vec![scoring::signal(
            "fv-2",
            &acme,
            SignalType::FirstValueReached,
            1,
            1,
        )],
    )
    .await?;
    let j = journey_with(&funnel, &acme, 2).await?;
    assert_eq!(
        stages(&j),
        [
            (Stage::Onboarding, "test".to_owned()),
            (Stage::Impact, "scoring".to_owned()),
        ]
    );
    assert_eq!(j.transitions[1].occurred_at, reached.occurred_at);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let after = journey(&mut transitions, &acme).await?;
    assert_eq!(
        after
            .transitions
            .iter()
            .map(|t| (t.to_stage, t.occurred_at, t.source.clone()))
            .collect::<Vec<_>>(),
        j.transitions
            .iter()
            .map(|t| (t.to_stage, t.occurred_at, t.source.clone()))
            .collect::<Vec<_>>()
    );
    Ok(())
}
