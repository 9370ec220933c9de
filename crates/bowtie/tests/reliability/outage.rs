//! Outages: the PostgreSQL server under a service goes away, or a peer
//! service cannot be reached. Calls fail fast with UNAVAILABLE and write
//! nothing, and everything recovers without a restart once the dependency
//! is back.

use std::time::Duration;

use anyhow::Context as _;
use bowtie_proto::common::Stage;
use bowtie_proto::funnel::funnel_service_client::FunnelServiceClient;
use bowtie_proto::funnel::{GetJourneyRequest, Journey, RecordTransitionRequest};
use bowtie_proto::revenue::revenue_service_client::RevenueServiceClient;
use bowtie_proto::revenue::{CancelSubscriptionRequest, CreateSubscriptionRequest};
use bowtie_proto::scoring::scoring_service_client::ScoringServiceClient;
use bowtie_proto::scoring::{RecordSignalBatchRequest, SignalType};
use bowtie_runtime::config::Settings;
use bowtie_testkit::revenue::{
    RevenueClient, all_movements, cancellation, change, day, monthly, terms,
};
use bowtie_testkit::scoring::{ScoringClient, signal};
use bowtie_testkit::{Bearer, TestDatabase, WRITE_KEY, backend_test};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::support::{
    Link, Node, PrivatePostgres, Process, account_request, eventually, free_port, write_config,
};

backend_test!(
    with_a_peer_unreachable_calls_that_need_it_are_unavailable_and_feeds_catch_up_once_it_returns
);

type FunnelClient = FunnelServiceClient<InterceptedService<Channel, Bearer>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_fails_calls_fast_with_unavailable_and_the_service_recovers_without_a_restart()
-> anyhow::Result<()> {
    let Some(pg) = PrivatePostgres::create("trust")? else {
        return Ok(());
    };
    pg.start()?;
    let dir = tempfile::tempdir()?;
    let mut database = Settings::defaults()?
        .accounts
        .database
        .with_url(&pg.url(), "accounts");
    database.connect_timeout_ms = 1_000;
    database.acquire_timeout_ms = 1_000;
    let mut service = Process::alone(dir.path(), "accounts", &database).await?;
    let mut client = service.accounts()?;
    let before = client
        .create_account(account_request("outage", 1))
        .await?
        .into_inner()
        .account;
    let before = before.context("no account")?;

    // Load while the database disappears.
    let load = {
        let mut client = service.accounts()?;
        tokio::spawn(async move {
            let mut codes = Vec::new();
            let until = tokio::time::Instant::now() + Duration::from_secs(4);
            for i in 1_000.. {
                if tokio::time::Instant::now() > until {
                    break;
                }
                let started = tokio::time::Instant::now();
                let code = match client.create_account(account_request("outage", i)).await {
                    Ok(_) => tonic::Code::Ok,
                    Err(status) => status.code(),
                };
                codes.push((code, started.elapsed()));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            codes
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    pg.stop()?;

    // Every call now fails fast and says why.
    for i in 2..6 {
        let started = tokio::time::Instant::now();
        let outcome = client.create_account(account_request("outage", i)).await;
        let took = started.elapsed();
        let status = outcome
            .err()
            .context("a write without a database succeeded")?;
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(took < Duration::from_secs(3), "failing took {took:?}");
    }
    let read = client
        .get_account(bowtie_proto::accounts::GetAccountRequest {
            id: before.id.clone(),
        })
        .await;
    assert_eq!(read.err().map(|s| s.code()), Some(tonic::Code::Unavailable));
    service.wait_for_health(ServingStatus::NotServing).await?;
    let codes = load.await?;
    assert!(
        codes.iter().all(
            |(code, took)| matches!(code, tonic::Code::Ok | tonic::Code::Unavailable)
                && *took < Duration::from_secs(3)
        ),
        "under load every call either succeeded or failed fast with UNAVAILABLE: {codes:?}"
    );
    assert!(
        codes
            .iter()
            .any(|(code, _)| *code == tonic::Code::Unavailable)
    );

    // The database returns; the same process serves again.
    pg.start()?;
    service.wait_for_health(ServingStatus::Serving).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let after = loop {
        match client.create_account(account_request("outage", 7)).await {
            Ok(answer) => break answer.into_inner().account.context("no account")?,
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable);
                anyhow::ensure!(
                    tokio::time::Instant::now() < deadline,
                    "no recovery: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_ne!(after.id, before.id);
    let again = client
        .get_account(bowtie_proto::accounts::GetAccountRequest { id: before.id })
        .await?
        .into_inner()
        .account
        .context("no account")?;
    assert_eq!(again.name, "Crash test customer 0001");
    Ok(())
}

/// The stages of a journey's transitions, in order.
fn stages(journey: &Journey) -> Vec<Stage> {
    journey
        .transitions
        .iter()
        .map(|t| Stage::try_from(t.to_stage).unwrap_or(Stage::Unspecified))
        .collect()
}

/// The journey of `account`, `None` while the funnel has none.
async fn journey(funnel: &mut FunnelClient, account: &str) -> anyhow::Result<Option<Journey>> {
    match funnel
        .get_journey(GetJourneyRequest {
            account_id: account.to_owned(),
        })
        .await
    {
        Ok(answer) => Ok(answer.into_inner().journey),
        Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
        Err(status) => Err(status.into()),
    }
}

/// Waits until the journey of `account` has `stages`, and fails at once if
/// it gets more.
async fn journey_reaches(
    funnel: &mut FunnelClient,
    account: &str,
    wanted: &[Stage],
) -> anyhow::Result<()> {
    eventually(30, "the funnel to follow the revenue feed", async || {
        let found = journey(funnel, account).await?.map(|j| stages(&j));
        let found = found.unwrap_or_default();
        anyhow::ensure!(
            found.len() <= wanted.len(),
            "{found:?} has more than {wanted:?}"
        );
        Ok((found == wanted).then_some(()))
    })
    .await
}

/// The subscription request of this test, always with the same key.
fn subscribe(account: &str, start: prost_types::Timestamp) -> CreateSubscriptionRequest {
    CreateSubscriptionRequest {
        subscription: Some(monthly(account, start, 10, 1_000)),
        idempotency_key: format!("outage-subscribe-{account}"),
    }
}

async fn with_a_peer_unreachable_calls_that_need_it_are_unavailable_and_feeds_catch_up_once_it_returns(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let services = ["accounts", "revenue", "funnel", "scoring"];
    let databases = services.map(|s| db.service_database(s));
    let ports = [free_port()?, free_port()?, free_port()?, free_port()?];
    let nodes: Vec<Node<'_>> = services
        .into_iter()
        .zip(&databases)
        .zip(ports)
        .map(|((service, database), port)| Node {
            service,
            database,
            port,
        })
        .collect();
    // Revenue, the funnel and scoring reach accounts, and the funnel and
    // scoring reach revenue, through links the test can cut; the test itself talks to
    // each service directly.
    let to_accounts = Link::open(ports[0]).await?;
    let to_revenue = Link::open(ports[1]).await?;
    let config = write_config(
        dir.path(),
        &nodes,
        &[
            ("accounts", to_accounts.uri()),
            ("revenue", to_revenue.uri()),
        ],
    )?;
    let accounts_process = Process::start(&config, "accounts", ports[0]).await?;
    let revenue_process = Process::start(&config, "revenue", ports[1]).await?;
    let funnel_process = Process::start(&config, "funnel", ports[2]).await?;
    let scoring_process = Process::start(&config, "scoring", ports[3]).await?;
    let mut scoring: ScoringClient = ScoringServiceClient::new(scoring_process.channel(WRITE_KEY)?);
    let mut accounts = accounts_process.accounts()?;
    let mut revenue: RevenueClient = RevenueServiceClient::new(revenue_process.channel(WRITE_KEY)?);
    let mut funnel: FunnelClient = FunnelServiceClient::new(funnel_process.channel(WRITE_KEY)?);
    let mut customer = Vec::new();
    for i in 0..2 {
        let account = accounts
            .create_account(account_request("outage", i))
            .await?
            .into_inner()
            .account
            .context("no account")?;
        customer.push(account.id);
    }
    let (acme, globex) = (&customer[0], &customer[1]);
    let acme_subscription = revenue
        .create_subscription(subscribe(acme, day(2025, 1, 1)))
        .await?
        .into_inner()
        .subscription
        .context("no subscription")?;
    journey_reaches(&mut funnel, acme, &[Stage::Commit, Stage::Onboarding]).await?;

    // Accounts unreachable: revenue and the funnel cannot check an account
    // they have not seen, so they answer UNAVAILABLE, soon, and keep nothing.
    to_accounts.cut();
    let started = tokio::time::Instant::now();
    let refused = revenue
        .create_subscription(subscribe(globex, day(2025, 2, 1)))
        .await
        .err()
        .context("a subscription for an unchecked account was created")?;
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    let refused = funnel
        .record_transition(RecordTransitionRequest {
            account_id: globex.clone(),
            to_stage: Stage::Awareness as i32,
            occurred_at: Some(day(2025, 1, 15)),
            idempotency_key: "outage-lead".into(),
            ..Default::default()
        })
        .await
        .err()
        .context("a transition for an unchecked account was recorded")?;
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    // Scoring learns accounts from the accounts feed too; one created
    // during the cut is news to it, so its signals are refused whole.
    let initech = accounts
        .create_account(account_request("outage", 2))
        .await?
        .into_inner()
        .account
        .context("no account")?
        .id;
    let signals = || RecordSignalBatchRequest {
        signals: vec![signal("outage-login", &initech, SignalType::Login, 1, 1)],
    };
    let refused = scoring
        .record_signal_batch(signals())
        .await
        .err()
        .context("a signal for an unchecked account was recorded")?;
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(12), "refusing took {took:?}");
    assert!(all_movements(&mut revenue, globex).await?.is_empty());
    assert!(journey(&mut funnel, globex).await?.is_none());
    to_accounts.heal();
    let recorded = eventually(15, "scoring to reach accounts again", async || {
        Ok(scoring.record_signal_batch(signals()).await.ok())
    })
    .await?
    .into_inner();
    assert_eq!(
        recorded.recorded, 1,
        "nothing was kept from the refused batch: {recorded:?}"
    );

    // Revenue unreachable from the funnel: revenue keeps working, and its
    // feed grows by Globex's first subscription (retried with the key the
    // refused call used, which left nothing behind), Acme's expansion and
    // Acme's churn; the funnel cannot see them yet.
    to_revenue.cut();
    let globex_subscription = revenue
        .create_subscription(subscribe(globex, day(2025, 2, 1)))
        .await?
        .into_inner()
        .subscription
        .context("no subscription")?;
    assert_eq!(globex_subscription.version, acme_subscription.version);
    revenue
        .change_subscription(change(
            &acme_subscription.id,
            day(2025, 3, 1),
            terms(15, 1_000, "USD"),
        ))
        .await?;
    revenue
        .cancel_subscription(CancelSubscriptionRequest {
            id: acme_subscription.id.clone(),
            cancellation: cancellation(day(2025, 6, 1)),
            ..Default::default()
        })
        .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen = journey(&mut funnel, acme).await?.map(|j| stages(&j));
    assert_eq!(seen, Some(vec![Stage::Commit, Stage::Onboarding]));
    assert!(journey(&mut funnel, globex).await?.is_none());

    // The link returns: the funnel's consumer resumes from its stored
    // cursor and applies each of those events once.
    to_revenue.heal();
    journey_reaches(
        &mut funnel,
        acme,
        &[
            Stage::Commit,
            Stage::Onboarding,
            Stage::Growth,
            Stage::Churned,
        ],
    )
    .await?;
    journey_reaches(&mut funnel, globex, &[Stage::Commit, Stage::Onboarding]).await?;
    assert_eq!(all_movements(&mut revenue, globex).await?.len(), 1);
    // A moment later nothing more has arrived: no event was applied twice.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        journey(&mut funnel, acme)
            .await?
            .map(|j| j.transitions.len()),
        Some(4)
    );
    assert_eq!(
        journey(&mut funnel, globex)
            .await?
            .map(|j| j.transitions.len()),
        Some(2)
    );
    Ok(())
}
