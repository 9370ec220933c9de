//! SIGKILL in the middle of a stream of writes: accounts, signals and
//! subscription changes. After a restart on the same database every
//! acknowledged write is there, and replaying the stream with the same
//! idempotency keys adds exactly the writes that were missing.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use bowtie_proto::accounts::ListAccountsRequest;
use bowtie_proto::common::Segment;
use bowtie_proto::revenue::revenue_service_client::RevenueServiceClient;
use bowtie_proto::revenue::{
    ChangeSubscriptionRequest, GetSubscriptionRequest, MovementType, Subscription,
};
use bowtie_proto::scoring::scoring_service_client::ScoringServiceClient;
use bowtie_proto::scoring::{
    Component, GetHealthRequest, RecomputeHealthRequest, RecordSignalsRequest,
    RecordSignalsResponse, SignalType,
};
use bowtie_testkit::fixtures::page;
use bowtie_testkit::revenue::{
    RevenueClient, all_movements, create, day, minor, monthly, monthly_report, terms,
};
use bowtie_testkit::scoring::{ScoringClient, signal};
use bowtie_testkit::{ADMIN_KEY, AccountsClient, TestDatabase, WRITE_KEY, backend_test};
use tokio::sync::Mutex;

use crate::support::{Node, Process, account_request, free_port, write_config};

backend_test!(
    acknowledged_account_writes_survive_a_kill_and_replays_duplicate_nothing,
    acknowledged_signal_batches_survive_a_kill_and_replays_duplicate_nothing,
    acknowledged_subscription_changes_survive_a_kill_and_replays_duplicate_nothing,
);

/// Accounts created in all; the kill comes after about a third are acknowledged.
const WRITES: usize = 600;
const KILL_AFTER: usize = 200;
const WRITERS: usize = 8;

fn revenue_client(process: &Process) -> anyhow::Result<RevenueClient> {
    Ok(RevenueServiceClient::new(process.channel(WRITE_KEY)?))
}

/// `bowtie serve accounts` and `bowtie serve <service>` (its peer) on the
/// test's database, configured in `dir`.
async fn accounts_and(
    db: &TestDatabase,
    dir: &std::path::Path,
    service: &'static str,
) -> anyhow::Result<(Process, Process)> {
    let (accounts_db, service_db) = (
        db.service_database("accounts"),
        db.service_database(service),
    );
    let (accounts_port, service_port) = (free_port()?, free_port()?);
    let config = write_config(
        dir,
        &[
            Node {
                service: "accounts",
                database: &accounts_db,
                port: accounts_port,
            },
            Node {
                service,
                database: &service_db,
                port: service_port,
            },
        ],
        &[],
    )?;
    let accounts = Process::start(&config, "accounts", accounts_port).await?;
    let other = Process::start(&config, service, service_port).await?;
    Ok((accounts, other))
}

/// Every account, page by page.
async fn all_accounts(
    client: &mut AccountsClient,
) -> anyhow::Result<Vec<bowtie_proto::accounts::Account>> {
    let mut accounts = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_accounts(ListAccountsRequest {
                page: page(500, &token),
                ..ListAccountsRequest::default()
            })
            .await?
            .into_inner();
        accounts.extend(page.accounts);
        token = page.page.map(|p| p.next_page_token).unwrap_or_default();
        if token.is_empty() {
            return Ok(accounts);
        }
    }
}

/// Every account's name.
async fn all_account_names(client: &mut AccountsClient) -> anyhow::Result<Vec<String>> {
    Ok(all_accounts(client)
        .await?
        .into_iter()
        .map(|a| a.name)
        .collect())
}

/// Every account's id.
async fn all_account_ids(client: &mut AccountsClient) -> anyhow::Result<Vec<String>> {
    Ok(all_accounts(client)
        .await?
        .into_iter()
        .map(|a| a.id)
        .collect())
}

/// The account of every CreateAccount in the audit log.
async fn audited_accounts<T>(
    admin: &mut bowtie_proto::accounts::accounts_service_client::AccountsServiceClient<T>,
) -> anyhow::Result<Vec<String>>
where
    T: tonic::client::GrpcService<tonic::body::Body> + Send,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let page = admin
            .list_audit_events(bowtie_proto::accounts::ListAuditEventsRequest {
                filter: Some(bowtie_proto::common::AuditFilter {
                    rpc: "CreateAccount".to_owned(),
                    ..Default::default()
                }),
                page: page(500, &token),
            })
            .await?
            .into_inner();
        for e in page.events {
            ids.extend(
                e.targets
                    .iter()
                    .filter_map(|t| t.strip_prefix("account:"))
                    .map(str::to_owned),
            );
        }
        token = page.page.map(|p| p.next_page_token).unwrap_or_default();
        if token.is_empty() {
            return Ok(ids);
        }
    }
}

/// Waits (at most 60 s) until `count()` reaches `wanted`.
async fn until_acknowledged(wanted: usize, count: impl AsyncFn() -> usize) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let done = count().await;
        if done >= wanted {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "only {done} writes acknowledged in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn acknowledged_account_writes_survive_a_kill_and_replays_duplicate_nothing(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let database = db.service_database("accounts");
    let mut service = Process::alone(dir.path(), "accounts", &database).await?;

    // WRITERS tasks take the next write number and send it until the
    // service dies; every acknowledged id is remembered.
    let acknowledged: Arc<Mutex<Vec<Option<String>>>> = Arc::new(Mutex::new(vec![None; WRITES]));
    let next = Arc::new(AtomicUsize::new(0));
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..WRITERS {
        let (acknowledged, next) = (acknowledged.clone(), next.clone());
        let mut client = service.accounts()?;
        writers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= WRITES {
                    return;
                }
                match client.create_account(account_request("crash", i)).await {
                    Ok(answer) => {
                        let id = answer.into_inner().account.map(|a| a.id);
                        acknowledged.lock().await[i] = id;
                    }
                    Err(_) => return,
                }
            }
        });
    }
    until_acknowledged(KILL_AFTER, async || {
        acknowledged.lock().await.iter().flatten().count()
    })
    .await?;
    service.kill();
    while writers.join_next().await.is_some() {}
    let acknowledged = acknowledged.lock().await.clone();
    let acked = acknowledged.iter().flatten().count();
    let attempted = next.load(Ordering::SeqCst).min(WRITES);
    assert!(acked >= KILL_AFTER);
    assert!(
        acked < WRITES,
        "the kill must land in the middle of the stream"
    );

    // Restart on the same database: every acknowledged write is there.
    service.restart().await?;
    let mut client = service.accounts()?;
    let names = all_account_names(&mut client).await?;
    for (i, id) in acknowledged.iter().enumerate() {
        if id.is_some() {
            assert!(
                names.contains(&account_request("crash", i).account.unwrap_or_default().name),
                "acknowledged write {i} is missing after the kill"
            );
        }
    }

    // The audit log kept an entry for exactly the writes that were kept:
    // one CreateAccount per account there, none for one the kill lost.
    let mut admin = bowtie_proto::accounts::accounts_service_client::AccountsServiceClient::new(
        service.channel(ADMIN_KEY)?,
    );
    let audited = audited_accounts(&mut admin).await?;
    assert_eq!(audited.len(), names.len(), "one audit entry per kept write");
    let mut ids = all_account_ids(&mut client).await?;
    let mut audited = audited;
    ids.sort();
    audited.sort();
    assert_eq!(audited, ids);

    // Replay everything that was attempted, acknowledged or not, then the
    // rest: the acknowledged ones answer the first result, nothing doubles.
    for (i, id) in acknowledged.iter().enumerate() {
        let answer = client
            .create_account(account_request("crash", i))
            .await?
            .into_inner();
        let replayed = answer.account.map(|a| a.id);
        if id.is_some() {
            assert_eq!(&replayed, id, "replay of acknowledged write {i}");
        }
    }
    let mut names = all_account_names(&mut client).await?;
    assert_eq!(names.len(), WRITES, "{attempted} attempted before the kill");
    names.sort();
    names.dedup();
    assert_eq!(names.len(), WRITES);
    Ok(())
}

/// Signal batches streamed in all, signals per batch, and the accounts they
/// go to (round robin, so every batch holds `BATCH / CUSTOMERS` of each).
const BATCHES: usize = 200;
const BATCH: usize = 25;
const CUSTOMERS: usize = 5;
/// Batches acknowledged before the kill.
const KILL_AFTER_BATCHES: usize = 20;

/// Batch `b` of the stream: logins (value 1) of yesterday with keys
/// `crash-signal-<n>`, signal `n` to customer `n % CUSTOMERS`.
fn signal_batch(b: usize, customers: &[String]) -> RecordSignalsRequest {
    RecordSignalsRequest {
        signals: (b * BATCH..(b + 1) * BATCH)
            .map(|n| {
                signal(
                    &format!("crash-signal-{n}"),
                    &customers[n % CUSTOMERS],
                    SignalType::Login,
                    1,
                    1,
                )
            })
            .collect(),
    }
}

/// Streams batches `from..BATCHES` on one RecordSignals stream and returns
/// every acknowledgement received, in order; `on_ack` sees each as it comes.
async fn stream_signals(
    client: &mut ScoringClient,
    customers: &[String],
    mut on_ack: impl FnMut(&RecordSignalsResponse),
) -> Vec<RecordSignalsResponse> {
    let requests: Vec<RecordSignalsRequest> =
        (0..BATCHES).map(|b| signal_batch(b, customers)).collect();
    let mut acks = Vec::new();
    let Ok(answer) = client.record_signals(futures::stream::iter(requests)).await else {
        return acks;
    };
    let mut stream = answer.into_inner();
    while let Ok(Some(ack)) = stream.message().await {
        on_ack(&ack);
        acks.push(ack);
    }
    acks
}

/// The usage events of the last 30 days that scoring counted for
/// `account`, recomputed now: the usage trend component's reason states the
/// number ("N usage events in the last 30 days, none before"), the only
/// place the public API shows how many signals were stored.
async fn usage_events(admin: &mut ScoringClient, accounts: &[String]) -> anyhow::Result<Vec<i64>> {
    admin.recompute_health(RecomputeHealthRequest {}).await?;
    let mut counts = Vec::with_capacity(accounts.len());
    for account in accounts {
        let health = admin
            .get_health(GetHealthRequest {
                account_id: account.clone(),
            })
            .await?
            .into_inner()
            .health
            .context("no health")?;
        let usage = health
            .components
            .iter()
            .find(|c| c.component == Component::UsageTrend as i32)
            .context("no usage trend component")?;
        let count = usage
            .reason
            .strip_suffix(" usage events in the last 30 days, none before")
            .and_then(|n| n.parse::<i64>().ok())
            .with_context(|| format!("unexpected usage reason {:?}", usage.reason))?;
        counts.push(count);
    }
    Ok(counts)
}

async fn acknowledged_signal_batches_survive_a_kill_and_replays_duplicate_nothing(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (accounts, mut scoring) = accounts_and(db, dir.path(), "scoring").await?;
    let mut customers = Vec::with_capacity(CUSTOMERS);
    for c in 0..CUSTOMERS {
        let account = accounts
            .accounts()?
            .create_account(account_request("crash", c))
            .await?
            .into_inner()
            .account
            .context("no account")?;
        customers.push(account.id);
    }

    // One stream of BATCHES batches; SIGKILL right after the
    // KILL_AFTER_BATCHES-th acknowledgement. Acknowledgements the client
    // still reads after that were sent before the kill: they count too.
    let mut client = ScoringServiceClient::new(scoring.channel(WRITE_KEY)?);
    let mut killed = false;
    let acks = stream_signals(&mut client, &customers, |ack| {
        if ack.batch as usize + 1 >= KILL_AFTER_BATCHES && !killed {
            scoring.kill();
            killed = true;
        }
    })
    .await;
    assert!(killed, "only {} batches acknowledged", acks.len());
    let acked = acks.len();
    assert!(
        acked < BATCHES,
        "the kill must land in the middle of the stream"
    );
    for (b, ack) in acks.iter().enumerate() {
        assert_eq!(ack.batch, b as i64, "acknowledgements come in order");
        assert_eq!(ack.recorded, BATCH as i32, "batch {b}: {ack:?}");
    }

    // Restart on the same database: every acknowledged batch is counted,
    // and batches landed whole (a transaction each): every customer has the
    // same count, a whole number of batches, at least the acknowledged ones.
    scoring.restart().await?;
    let mut admin = ScoringServiceClient::new(scoring.channel(ADMIN_KEY)?);
    let per_batch = (BATCH / CUSTOMERS) as i64;
    let counts = usage_events(&mut admin, &customers).await?;
    let committed = counts[0] / per_batch;
    assert!(
        counts.iter().all(|&n| n == committed * per_batch),
        "a batch landed in part: {counts:?}"
    );
    assert!(
        committed as usize >= acked && committed as usize <= BATCHES,
        "{acked} batches acknowledged, {committed} found"
    );

    // Replay the whole stream with the same keys: acknowledged batches are
    // duplicates through and through; the others land now.
    let mut client = ScoringServiceClient::new(scoring.channel(WRITE_KEY)?);
    let replay = stream_signals(&mut client, &customers, |_| {}).await;
    assert_eq!(replay.len(), BATCHES, "the replay was acknowledged in full");
    let mut recorded = 0;
    for (b, ack) in replay.iter().enumerate() {
        assert_eq!(ack.recorded + ack.duplicates, BATCH as i32, "{ack:?}");
        if b < committed as usize {
            assert_eq!(ack.duplicates, BATCH as i32, "batch {b} was committed");
        }
        recorded += ack.recorded as usize;
    }
    assert_eq!(recorded, (BATCHES - committed as usize) * BATCH);
    let counts = usage_events(&mut admin, &customers).await?;
    let every = (BATCHES * BATCH / CUSTOMERS) as i64;
    assert_eq!(counts, vec![every; CUSTOMERS], "each signal counted once");

    // And once more: nothing left to record.
    let again = stream_signals(&mut client, &customers, |_| {}).await;
    assert_eq!(again.len(), BATCHES);
    assert!(again.iter().all(|a| a.duplicates == BATCH as i32));
    Ok(())
}

/// Subscriptions (one writer each) and the changes streamed to each: change
/// `k` raises the quantity to `k + 2` seats of 10.00 USD from day `k + 1`
/// of 2025 on.
const SUBSCRIPTIONS: usize = 8;
const CHANGES: usize = 40;
const SEAT: i64 = 1_000;
/// Changes acknowledged (over all subscriptions) before the kill.
const KILL_AFTER_CHANGES: usize = 60;

/// Change `k` of `subscription`, based on version `first_version + k`.
fn subscription_change(
    subscription: &Subscription,
    k: usize,
    first_version: i64,
) -> ChangeSubscriptionRequest {
    let mut at = day(2025, 1, 1);
    at.seconds += (k as i64 + 1) * 86_400;
    ChangeSubscriptionRequest {
        id: subscription.id.clone(),
        terms: Some(terms(k as i64 + 2, SEAT, "USD")),
        effective_at: Some(at),
        idempotency_key: format!("crash-change-{}-{k}", subscription.id),
        expected_version: Some(first_version + k as i64),
    }
}

async fn acknowledged_subscription_changes_survive_a_kill_and_replays_duplicate_nothing(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (accounts, mut revenue) = accounts_and(db, dir.path(), "revenue").await?;
    let mut subscriptions = Vec::with_capacity(SUBSCRIPTIONS);
    for s in 0..SUBSCRIPTIONS {
        let account = accounts
            .accounts()?
            .create_account(account_request("crash", s))
            .await?
            .into_inner()
            .account
            .context("no account")?;
        let subscription = revenue_client(&revenue)?
            .create_subscription(create(monthly(&account.id, day(2025, 1, 1), 1, SEAT)))
            .await?
            .into_inner()
            .subscription
            .context("no subscription")?;
        subscriptions.push(subscription);
    }

    // One writer per subscription sends its changes in order until the
    // service dies; the version each acknowledged change answered is kept.
    let acknowledged: Arc<Mutex<HashMap<(usize, usize), i64>>> = Arc::default();
    let mut writers = tokio::task::JoinSet::new();
    for (s, subscription) in subscriptions.iter().enumerate() {
        let (acknowledged, subscription) = (acknowledged.clone(), subscription.clone());
        let mut client = revenue_client(&revenue)?;
        writers.spawn(async move {
            for k in 0..CHANGES {
                let request = subscription_change(&subscription, k, subscription.version);
                match client.change_subscription(request).await {
                    Ok(answer) => {
                        let version = answer.into_inner().subscription.map_or(0, |s| s.version);
                        acknowledged.lock().await.insert((s, k), version);
                    }
                    Err(_) => return,
                }
            }
        });
    }
    until_acknowledged(KILL_AFTER_CHANGES, async || acknowledged.lock().await.len()).await?;
    revenue.kill();
    while writers.join_next().await.is_some() {}
    let acknowledged = acknowledged.lock().await.clone();
    assert!(
        acknowledged.len() < SUBSCRIPTIONS * CHANGES,
        "the kill must land in the middle of the stream"
    );

    // Restart on the same database: every acknowledged change is in its
    // subscription's history with its terms.
    revenue.restart().await?;
    let mut client = revenue_client(&revenue)?;
    for (&(s, k), version) in &acknowledged {
        assert_eq!(*version, subscriptions[s].version + k as i64 + 1);
        let stored = client
            .get_subscription(GetSubscriptionRequest {
                id: subscriptions[s].id.clone(),
            })
            .await?
            .into_inner()
            .subscription
            .context("no subscription")?;
        let wanted = subscription_change(&subscriptions[s], k, subscriptions[s].version);
        assert!(
            stored
                .changes
                .iter()
                .any(|c| c.effective_at == wanted.effective_at
                    && c.terms.as_ref().map(|t| t.quantity) == Some(k as i64 + 2)),
            "acknowledged change {k} of subscription {s} is missing after the kill"
        );
    }

    // Replay every change with the same keys and expected versions: an
    // acknowledged one answers its first result; none is applied twice.
    for (s, subscription) in subscriptions.iter().enumerate() {
        for k in 0..CHANGES {
            let answer = client
                .change_subscription(subscription_change(subscription, k, subscription.version))
                .await
                .with_context(|| format!("replaying change {k} of subscription {s}"))?
                .into_inner()
                .subscription
                .context("no subscription")?;
            assert_eq!(answer.version, subscription.version + k as i64 + 1);
            if let Some(version) = acknowledged.get(&(s, k)) {
                assert_eq!(answer.version, *version);
            }
        }
    }

    // Each subscription: the start and CHANGES changes, now at CHANGES + 1
    // seats; its account's movements: NEW 10.00 and CHANGES expansions of
    // 10.00 each; the waterfall ends at the sum over every subscription.
    let seats = CHANGES as i64 + 1;
    for subscription in &subscriptions {
        let stored = client
            .get_subscription(GetSubscriptionRequest {
                id: subscription.id.clone(),
            })
            .await?
            .into_inner()
            .subscription
            .context("no subscription")?;
        assert_eq!(stored.changes.len(), CHANGES + 1);
        assert_eq!(stored.version, subscription.version + CHANGES as i64);
        assert_eq!(minor(&stored.mrr), seats * SEAT);
        let movements = all_movements(&mut client, &subscription.account_id).await?;
        assert_eq!(movements.len(), CHANGES + 1);
        assert_eq!(movements[0].r#type, MovementType::New as i32);
        assert!(
            movements[1..]
                .iter()
                .all(|m| m.r#type == MovementType::Expansion as i32 && minor(&m.amount) == SEAT),
            "{movements:?}"
        );
    }
    let report = monthly_report(&mut client, "2025-01", "2025-03", Segment::Unspecified).await?;
    let last = report.last().context("an empty report")?;
    assert_eq!(
        minor(&last.end_mrr),
        SUBSCRIPTIONS as i64 * seats * SEAT,
        "{report:?}"
    );
    Ok(())
}
