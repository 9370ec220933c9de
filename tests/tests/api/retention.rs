//! Bounded storage of the runtime's tables, through the accounts service
//! (every service shares the runtime): idempotency keys answer replays
//! inside their window and count as new after it, expired keys and old
//! outbox events are pruned in the background, a registered consumer that
//! lags keeps the events it has not passed, and a reader behind the pruned
//! part of the feed is told the oldest kept sequence. Time is driven with
//! retentions of a second or two instead of days.

use std::time::Duration;

use bowtie_proto::accounts::{CreateAccountRequest, ListAccountsRequest, WatchEventsRequest};
use bowtie_proto::common::Segment;
use bowtie_runtime::config::Settings;
use bowtie_testkit::fixtures::{account, create_named, list_all, next_events};
use bowtie_testkit::storage::count_rows;
use bowtie_testkit::{AccountsClient, TestDatabase, TestServer, backend_test, within};
use tonic::Code;

backend_test!(
    a_replay_inside_the_key_window_answers_the_first_result_and_one_after_it_runs_as_new,
    expired_idempotency_keys_are_pruned_in_the_background,
    old_events_are_pruned_and_a_reader_behind_them_is_told_the_oldest_kept_sequence,
    a_lagging_registered_consumer_keeps_every_event_it_has_not_passed,
    a_consumer_name_that_is_not_a_plain_name_is_rejected,
);

/// One second, in days.
const SECOND: f64 = 1.0 / 86_400.0;

/// The test settings with `tweak` applied.
fn settings(db: &TestDatabase, tweak: impl FnOnce(&mut Settings)) -> anyhow::Result<Settings> {
    let mut settings = db.server_settings()?;
    tweak(&mut settings);
    Ok(settings)
}

fn create(name: &str, key: &str) -> CreateAccountRequest {
    CreateAccountRequest {
        account: Some(account(name, Segment::Smb)),
        idempotency_key: key.to_owned(),
    }
}

/// Opens the feed after `after_sequence` as `consumer`: the stream, or the
/// status the call was refused with.
async fn watch_as(
    client: &mut AccountsClient,
    after_sequence: i64,
    consumer: &str,
) -> Result<tonic::Streaming<bowtie_proto::accounts::WatchEventsResponse>, tonic::Status> {
    client
        .watch_events(WatchEventsRequest {
            after_sequence,
            consumer: consumer.to_owned(),
            include_audit: false,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// The sequences of the first `n` events of the feed.
async fn sequences(client: &mut AccountsClient, n: usize) -> anyhow::Result<Vec<i64>> {
    let mut stream = watch_as(client, 0, "").await?;
    Ok(next_events(&mut stream, n, 10)
        .await?
        .iter()
        .map(|e| e.sequence)
        .collect())
}

/// Waits until a reader from the start of the feed is refused because
/// every event before `oldest_kept` was pruned (events age one after the
/// other, so the first refusals may name an earlier one), and returns the
/// refusal.
async fn refused_from_the_start(
    client: &mut AccountsClient,
    oldest_kept: i64,
) -> anyhow::Result<tonic::Status> {
    let expected = format!("the oldest kept sequence is {oldest_kept};");
    within(20, "the outbox to be pruned", async {
        loop {
            if let Err(status) = watch_as(client, 0, "").await
                && status.message().contains(&expected)
            {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

async fn a_replay_inside_the_key_window_answers_the_first_result_and_one_after_it_runs_as_new(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    // Keys live two seconds; the pruner never runs during the test, so the
    // expiry is the replay's own doing.
    let server = TestServer::start_with(&settings(db, |s| {
        s.idempotency.retention_days = 2.0 * SECOND;
        s.pruning.interval_ms = 3_600_000;
    })?)
    .await?;
    let mut client = server.accounts();
    let first = client
        .create_account(create("Acme", "crm-7f3a"))
        .await?
        .into_inner();
    let replay = client
        .create_account(create("Acme", "crm-7f3a"))
        .await?
        .into_inner();
    assert_eq!(
        replay, first,
        "a replay inside the window answers the first result"
    );

    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let after_expiry = client
        .create_account(create("Acme", "crm-7f3a"))
        .await?
        .into_inner();
    let (first_id, new_id) = (
        first.account.map(|a| a.id),
        after_expiry.account.clone().map(|a| a.id),
    );
    assert_ne!(new_id, first_id, "a replay after the window runs as new");
    let listed = list_all(&mut client, ListAccountsRequest::default(), 10).await?;
    assert_eq!(
        listed.len(),
        2,
        "the expired replay created a second account"
    );

    // The new execution took the key over: its replay answers it.
    let again = client
        .create_account(create("Acme", "crm-7f3a"))
        .await?
        .into_inner();
    assert_eq!(again, after_expiry);
    // A different request with the expired key is new too, not a conflict.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let other = client
        .create_account(create("Globex", "crm-7f3a"))
        .await?
        .into_inner();
    assert_eq!(other.account.map(|a| a.name), Some("Globex".to_owned()));
    Ok(())
}

async fn expired_idempotency_keys_are_pruned_in_the_background(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start_with(&settings(db, |s| {
        s.idempotency.retention_days = SECOND;
        s.pruning.interval_ms = 100;
        s.pruning.batch_size = 2;
    })?)
    .await?;
    let mut client = server.accounts();
    for (name, key) in [("Acme", "k1"), ("Globex", "k2"), ("Initech", "k3")] {
        client.create_account(create(name, key)).await?;
    }
    let database = db.service_database("accounts");
    // Batches of two: the pass takes more than one.
    within(20, "every expired key to be pruned", async {
        loop {
            if count_rows(&database, "idempotency_keys", None).await? == 0 {
                return anyhow::Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await??;
    // What the keys wrote stays.
    let listed = list_all(&mut client, ListAccountsRequest::default(), 10).await?;
    assert_eq!(listed.len(), 3);
    Ok(())
}

async fn old_events_are_pruned_and_a_reader_behind_them_is_told_the_oldest_kept_sequence(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    // Three seconds: time to read the events (and register) first.
    let server = TestServer::start_with(&settings(db, |s| {
        s.feed.retention_days = 3.0 * SECOND;
        s.pruning.interval_ms = 100;
    })?)
    .await?;
    let mut client = server.accounts();
    for name in ["Acme", "Globex", "Initech"] {
        create_named(&mut client, name, Segment::Smb).await?;
    }
    let seen = sequences(&mut client, 3).await?;

    // Every event grows old; the newest is kept so the sequence never
    // restarts: the audit entry (docs/design.md 9.4) right after the last write.
    let newest = seen[2] + 1;
    let refused = refused_from_the_start(&mut client, newest).await?;
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert_eq!(
        count_rows(&db.service_database("accounts"), "outbox_events", None).await?,
        1
    );
    // A reader that has what was pruned follows on.
    let mut stream = watch_as(&mut client, seen[2], "").await?;
    let later = create_named(&mut client, "Umbrella", Segment::Smb).await?;
    let next = next_events(&mut stream, 1, 10).await?;
    assert_eq!(next[0].aggregate_id, later.id);
    Ok(())
}

async fn a_lagging_registered_consumer_keeps_every_event_it_has_not_passed(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    // Three seconds: time to read the events (and register) first.
    let server = TestServer::start_with(&settings(db, |s| {
        s.feed.retention_days = 3.0 * SECOND;
        s.pruning.interval_ms = 100;
    })?)
    .await?;
    let mut client = server.accounts();
    for name in ["Acme", "Globex", "Initech", "Umbrella", "Hooli"] {
        create_named(&mut client, name, Segment::Smb).await?;
    }
    let seen = sequences(&mut client, 5).await?;
    // The CRM sync applied the first two events and went away.
    drop(watch_as(&mut client, seen[1], "crm-sync").await?);

    // Every event grows old; only those it passed go: the oldest kept is
    // the audit entry of its last write (docs/design.md 9.4).
    let refused = refused_from_the_start(&mut client, seen[1] + 1).await?;
    assert_eq!(refused.code(), Code::FailedPrecondition);
    // Well past every event's retention, still nothing else went.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let still = refused_from_the_start(&mut client, seen[1] + 1).await?;
    assert_eq!(still.code(), Code::FailedPrecondition);
    let mut stream = watch_as(&mut client, seen[1], "crm-sync").await?;
    let resumed = next_events(&mut stream, 3, 10).await?;
    assert_eq!(
        resumed.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        seen[2..].to_vec(),
        "the lagging consumer finds every event it has not passed"
    );
    drop(stream);

    // Once it reports the newest, the rest goes too (but the newest).
    drop(watch_as(&mut client, seen[4], "crm-sync").await?);
    within(20, "the passed events to be pruned", async {
        loop {
            if let Err(status) = watch_as(&mut client, seen[2], "").await {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await?;
    assert_eq!(
        count_rows(&db.service_database("accounts"), "outbox_events", None).await?,
        1
    );
    Ok(())
}

async fn a_consumer_name_that_is_not_a_plain_name_is_rejected(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts_read_only();
    for name in ["crm sync", "crm/sync", &"x".repeat(201)] {
        let refused = watch_as(&mut client, 0, name).await.err();
        let status = refused.ok_or_else(|| anyhow::anyhow!("{name:?} was accepted"))?;
        assert_eq!(status.code(), Code::InvalidArgument, "{name:?}");
        assert!(
            status.message().contains("consumer"),
            "{}",
            status.message()
        );
    }
    assert!(watch_as(&mut client, 0, "crm-sync.v2:eu_1").await.is_ok());
    Ok(())
}
