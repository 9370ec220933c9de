//! Every RPC of every service, randomised: each request gets a clear status
//! and the service keeps serving afterwards.

use bowtie_proto::accounts::GetAccountRequest;
use bowtie_proto::common::Segment;
use bowtie_proto::funnel::GetJourneyRequest;
use bowtie_proto::funnel::funnel_service_client::FunnelServiceClient;
use bowtie_proto::revenue::GetSubscriptionRequest;
use bowtie_proto::revenue::revenue_service_client::RevenueServiceClient;
use bowtie_proto::scoring::GetScorecardRequest;
use bowtie_proto::scoring::scoring_service_client::ScoringServiceClient;
use bowtie_testkit::fixtures::{account, contact, create_account, create_contact};
use bowtie_testkit::revenue::{create, day, monthly};
use bowtie_testkit::robustness::{self, Schema};
use bowtie_testkit::scoring::{logins, record};
use bowtie_testkit::stack::Stack;
use bowtie_testkit::{ADMIN_KEY, TestDatabase, TestServer, backend_test};

backend_test!(
    accounts_answers_random_bad_requests_to_every_rpc_with_a_clear_status,
    funnel_answers_random_bad_requests_to_every_rpc_with_a_clear_status,
    revenue_answers_random_bad_requests_to_every_rpc_with_a_clear_status,
    scoring_answers_random_bad_requests_to_every_rpc_with_a_clear_status,
    the_gateway_answers_random_bad_requests_to_every_route_with_a_clear_status,
);

/// The whole suite with one customer that has a contact, a subscription
/// and signals; returns the stack, the ids to mix into requests, and the
/// account id.
async fn seeded(db: &TestDatabase) -> anyhow::Result<(Stack, Vec<String>, String)> {
    let stack = Stack::start(db).await?;
    let mut accounts = stack.accounts.accounts();
    let acme = create_account(&mut accounts, account("Acme", Segment::Smb)).await?;
    let champion = create_contact(&mut accounts, contact(&acme.id, "Ada Lovelace")).await?;
    let mut revenue = RevenueServiceClient::new(stack.revenue.with_key(ADMIN_KEY));
    let subscription = revenue
        .create_subscription(create(monthly(&acme.id, day(2026, 1, 1), 3, 10_000)))
        .await?
        .into_inner()
        .subscription
        .map(|s| s.id)
        .unwrap_or_default();
    let mut scoring = ScoringServiceClient::new(stack.scoring.with_key(ADMIN_KEY));
    record(&mut scoring, logins("seed", &acme.id, 3, 1)).await?;
    let pool = vec![
        acme.id.clone(),
        champion.id,
        subscription,
        "USD".to_owned(),
        "hubspot".to_owned(),
    ];
    Ok((stack, pool, acme.id))
}

/// Runs the random requests against `server` (`service` is its full name)
/// and fails with the seed and the unclear answers if there are any.
async fn hammer(server: &TestServer, service: &str, pool: &[String]) -> anyhow::Result<()> {
    let schema = Schema::load()?;
    let (requests, seed) = (robustness::requests_per_service(), robustness::seed());
    let summary = robustness::run(
        &schema,
        service,
        server.channel(),
        ADMIN_KEY,
        pool,
        requests,
        seed,
    )
    .await?;
    let never_ok: Vec<&str> = schema
        .methods(service)?
        .iter()
        .map(|m| m.path.as_str())
        .filter(|p| !summary.reached.contains(*p))
        .collect();
    eprintln!(
        "{service}: {} requests, seed {seed}, statuses {:?}, RPCs never answering OK: {never_ok:?}",
        summary.requests, summary.codes,
    );
    summary.assert_clear(service, seed)?;
    anyhow::ensure!(
        !summary.reached.is_empty(),
        "no request to {service} got past validation: the run tested nothing but it"
    );
    Ok(())
}

async fn accounts_answers_random_bad_requests_to_every_rpc_with_a_clear_status(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let (stack, pool, acme) = seeded(db).await?;
    hammer(&stack.accounts, "bowtie.accounts.v1.AccountsService", &pool).await?;
    // Still serving.
    stack
        .accounts
        .accounts()
        .get_account(GetAccountRequest { id: acme })
        .await?;
    Ok(())
}

async fn funnel_answers_random_bad_requests_to_every_rpc_with_a_clear_status(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let (stack, pool, acme) = seeded(db).await?;
    hammer(&stack.funnel, "bowtie.funnel.v1.FunnelService", &pool).await?;
    FunnelServiceClient::new(stack.funnel.with_key(ADMIN_KEY))
        .get_journey(GetJourneyRequest { account_id: acme })
        .await?;
    Ok(())
}

async fn revenue_answers_random_bad_requests_to_every_rpc_with_a_clear_status(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let (stack, pool, _) = seeded(db).await?;
    hammer(&stack.revenue, "bowtie.revenue.v1.RevenueService", &pool).await?;
    RevenueServiceClient::new(stack.revenue.with_key(ADMIN_KEY))
        .get_subscription(GetSubscriptionRequest {
            id: pool[2].clone(),
        })
        .await?;
    Ok(())
}

async fn scoring_answers_random_bad_requests_to_every_rpc_with_a_clear_status(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let (stack, pool, _) = seeded(db).await?;
    hammer(&stack.scoring, "bowtie.scoring.v1.ScoringService", &pool).await?;
    ScoringServiceClient::new(stack.scoring.with_key(ADMIN_KEY))
        .get_scorecard(GetScorecardRequest::default())
        .await?;
    Ok(())
}

async fn the_gateway_answers_random_bad_requests_to_every_route_with_a_clear_status(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let stack = bowtie_testkit::gateway::Stack::start(db).await?;
    let acme = stack.account(ADMIN_KEY, "Acme", "SMB").await?;
    let (status, doc) = stack.get("/openapi.json", ADMIN_KEY).await?;
    anyhow::ensure!(status.is_success(), "GET /openapi.json: {status}");
    let pool = vec![acme.clone(), "USD".to_owned(), "hubspot".to_owned()];
    let (requests, seed) = (robustness::requests_per_service(), robustness::seed());
    let summary =
        robustness::rest::run(&doc, &stack.url(), ADMIN_KEY, &pool, requests, seed).await?;
    let routes: Vec<String> = robustness::rest::operations(&doc)
        .iter()
        .map(|op| op.name())
        .filter(|name| !summary.reached.contains(name))
        .collect();
    eprintln!(
        "gateway: {} requests, seed {seed}, statuses {:?}, routes never answering 2xx: {routes:?}",
        summary.requests, summary.codes,
    );
    summary.assert_clear("the gateway", seed)?;
    anyhow::ensure!(
        !summary.reached.is_empty(),
        "no request got past validation"
    );
    // Still serving.
    let (status, _) = stack
        .get(&format!("/api/v1/accounts/{acme}"), ADMIN_KEY)
        .await?;
    assert_eq!(status.as_u16(), 200);
    Ok(())
}
