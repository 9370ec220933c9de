//! The change feed (`WatchEvents`): history then live events, in sequence
//! order, resumable from a cursor — also across a server restart — with
//! exactly one event per committed change.

use std::collections::HashSet;
use std::time::Duration;

use bowtie_proto::accounts::{
    Account, ArchiveAccountRequest, CreateAccountRequest, DeleteContactRequest,
    MarkContactLeftRequest, UpdateAccountRequest, UpdateContactRequest,
    UpsertAccountByExternalIdRequest, WatchEventsResponse,
};
use bowtie_proto::common::{Event, Segment};
use bowtie_testkit::fixtures::{
    account, account_payload, contact, create_contact, create_named, external_id, mask,
    next_events, watch,
};
use bowtie_testkit::{TestDatabase, TestServer, backend_test, within};
use tonic::Streaming;

backend_test!(
    watch_events_streams_the_history_then_new_events_as_they_commit,
    watch_events_resumes_after_a_cursor_with_only_later_events,
    every_change_publishes_one_event_and_rejected_or_repeated_writes_publish_none,
    concurrent_writes_all_reach_the_feed_once_in_sequence_order,
    watch_events_resumes_after_a_restart_with_nothing_missed_or_repeated,
);

/// Fails when the stream delivers anything within `millis`.
async fn assert_quiet(
    stream: &mut Streaming<WatchEventsResponse>,
    millis: u64,
) -> anyhow::Result<()> {
    match tokio::time::timeout(Duration::from_millis(millis), stream.message()).await {
        Err(_) => Ok(()),
        Ok(Ok(Some(message))) => anyhow::bail!("unexpected event {:?}", message.event),
        Ok(Ok(None)) => anyhow::bail!("the stream ended instead of waiting for new events"),
        Ok(Err(status)) => anyhow::bail!("the stream failed: {status}"),
    }
}

#[track_caller]
fn assert_increasing(events: &[Event]) {
    for pair in events.windows(2) {
        assert!(
            pair[0].sequence < pair[1].sequence,
            "sequences must strictly increase: {} then {}",
            pair[0].sequence,
            pair[1].sequence
        );
    }
}

fn kinds(events: &[Event]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| (e.event_type.clone(), e.aggregate_id.clone()))
        .collect()
}

async fn watch_events_streams_the_history_then_new_events_as_they_commit(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let acme = create_named(&mut client, "Acme", Segment::Smb).await?;
    client
        .update_account(UpdateAccountRequest {
            account: Some(Account {
                name: "Acme Holdings".into(),
                ..acme.clone()
            }),
            update_mask: Some(mask(&["name"])),
            expected_version: None,
            idempotency_key: String::new(),
        })
        .await?;

    // Watching needs only the read scope.
    let mut reader = server.accounts_read_only();
    let mut stream = watch(&mut reader, 0).await?;
    let history = next_events(&mut stream, 2, 10).await?;
    assert_eq!(history[0].sequence, 1, "the feed starts at 1");
    assert_increasing(&history);

    let created = &history[0];
    assert_eq!(created.event_type, "account.created");
    assert_eq!(created.aggregate_type, "account");
    assert_eq!(created.aggregate_id, acme.id);
    assert!(uuid::Uuid::parse_str(&created.event_id).is_ok());
    assert!(created.occurred_at.is_some());
    assert_eq!(
        account_payload(created)?,
        acme,
        "the payload is the account after the change"
    );

    let updated = &history[1];
    assert_eq!(updated.aggregate_id, acme.id);
    assert!(
        updated.event_type.starts_with("account.") && updated.event_type != "account.created",
        "an update is its own event type, got {:?}",
        updated.event_type
    );
    assert_ne!(updated.event_id, created.event_id);
    let payload = account_payload(updated)?;
    assert_eq!(
        (payload.name.as_str(), payload.version),
        ("Acme Holdings", 2)
    );

    assert_quiet(&mut stream, 700).await?;
    // A change committed while watching arrives on the open stream.
    let globex = create_named(&mut client, "Globex", Segment::Enterprise).await?;
    let live = next_events(&mut stream, 1, 10).await?;
    assert_eq!(live[0].event_type, "account.created");
    assert_eq!(live[0].aggregate_id, globex.id);
    assert!(live[0].sequence > history[1].sequence);
    assert_eq!(account_payload(&live[0])?, globex);
    Ok(())
}

async fn watch_events_resumes_after_a_cursor_with_only_later_events(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    for i in 0..5 {
        create_named(&mut client, &format!("Account {i}"), Segment::Smb).await?;
    }
    let all = next_events(&mut watch(&mut client, 0).await?, 5, 10).await?;
    assert_increasing(&all);

    let cursor = all[2].sequence;
    let mut resumed = watch(&mut client, cursor).await?;
    let rest = next_events(&mut resumed, 2, 10).await?;
    assert_eq!(
        rest,
        all[3..].to_vec(),
        "exactly the events after the cursor"
    );
    assert_quiet(&mut resumed, 700).await?;

    // A cursor at the end waits for the next event only.
    let mut at_end = watch(&mut client, all[4].sequence).await?;
    assert_quiet(&mut at_end, 700).await?;
    let late = create_named(&mut client, "Late", Segment::Smb).await?;
    let next = next_events(&mut at_end, 1, 10).await?;
    assert_eq!(next[0].aggregate_id, late.id);
    Ok(())
}

async fn every_change_publishes_one_event_and_rejected_or_repeated_writes_publish_none(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let mut expected: Vec<(&str, String)> = Vec::new();

    let request = CreateAccountRequest {
        account: Some(account("Acme", Segment::Smb)),
        idempotency_key: "feed-create-1".into(),
    };
    let acme = client
        .create_account(request.clone())
        .await?
        .into_inner()
        .account
        .ok_or_else(|| anyhow::anyhow!("no account"))?;
    expected.push(("account.", acme.id.clone()));
    // An idempotent replay writes nothing.
    client.create_account(request).await?;

    let rename = |name: &str, version: Option<i64>| UpdateAccountRequest {
        account: Some(Account {
            name: name.into(),
            ..acme.clone()
        }),
        update_mask: Some(mask(&["name"])),
        expected_version: version,
        idempotency_key: String::new(),
    };
    client.update_account(rename("Acme 2", Some(1))).await?;
    expected.push(("account.", acme.id.clone()));
    // A stale update and an invalid one write nothing.
    assert!(
        client
            .update_account(rename("Acme 3", Some(1)))
            .await
            .is_err()
    );
    assert!(client.update_account(rename(" ", None)).await.is_err());

    let ana = create_contact(&mut client, contact(&acme.id, "Ana Lima")).await?;
    expected.push(("contact.", ana.id.clone()));
    client
        .update_contact(UpdateContactRequest {
            contact: Some(bowtie_proto::accounts::Contact {
                title: "CEO".into(),
                ..ana.clone()
            }),
            update_mask: Some(mask(&["title"])),
            expected_version: None,
            idempotency_key: String::new(),
        })
        .await?;
    expected.push(("contact.", ana.id.clone()));
    client
        .mark_contact_left(MarkContactLeftRequest {
            id: ana.id.clone(),
            left_time: None,
            idempotency_key: String::new(),
        })
        .await?;
    expected.push(("contact.", ana.id.clone()));
    let bo = create_contact(&mut client, contact(&acme.id, "Bo Chen")).await?;
    expected.push(("contact.", bo.id.clone()));
    client
        .delete_contact(DeleteContactRequest {
            id: bo.id.clone(),
            idempotency_key: String::new(),
        })
        .await?;
    expected.push(("contact.", bo.id.clone()));

    let upsert = UpsertAccountByExternalIdRequest {
        external_id: Some(external_id("hubspot", "42")),
        account: Some(account("Globex", Segment::MidMarket)),
        idempotency_key: String::new(),
        source_updated_at: None,
    };
    let globex = client
        .upsert_account_by_external_id(upsert.clone())
        .await?
        .into_inner()
        .account
        .ok_or_else(|| anyhow::anyhow!("no account"))?;
    expected.push(("account.", globex.id.clone()));
    // An upsert with identical data changes nothing and publishes nothing.
    client.upsert_account_by_external_id(upsert).await?;
    client
        .archive_account(ArchiveAccountRequest {
            id: globex.id.clone(),
            expected_version: None,
            idempotency_key: String::new(),
        })
        .await?;
    expected.push(("account.", globex.id.clone()));

    let mut stream = watch(&mut client, 0).await?;
    let events = next_events(&mut stream, expected.len(), 10).await?;
    assert_increasing(&events);
    for (event, (prefix, id)) in events.iter().zip(&expected) {
        assert!(
            event.event_type.starts_with(prefix) && &event.aggregate_id == id,
            "expected a {prefix}* event of {id}, got {:?} of {}",
            event.event_type,
            event.aggregate_id
        );
        assert_eq!(event.aggregate_type, prefix.trim_end_matches('.'));
    }
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let distinct: HashSet<&str> = types.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        7,
        "each kind of change has its own event type (created, updated, archived; contact created, updated, left, deleted): {types:?}"
    );
    assert_quiet(&mut stream, 1000).await?;
    Ok(())
}

async fn concurrent_writes_all_reach_the_feed_once_in_sequence_order(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut watcher = server.accounts_read_only();
    let mut stream = watch(&mut watcher, 0).await?;
    let mut tasks = Vec::new();
    for i in 0..24 {
        let mut client = server.accounts();
        tasks.push(tokio::spawn(async move {
            create_named(&mut client, &format!("Concurrent {i}"), Segment::Smb).await
        }));
    }
    let mut created = HashSet::new();
    for task in tasks {
        created.insert(task.await??.id);
    }
    let events = next_events(&mut stream, created.len(), 20).await?;
    assert_increasing(&events);
    let seen: HashSet<String> = events.iter().map(|e| e.aggregate_id.clone()).collect();
    assert_eq!(
        seen, created,
        "every write reached the live stream exactly once"
    );
    assert_quiet(&mut stream, 700).await?;
    // A reader starting from scratch sees the same feed.
    let replay = next_events(&mut watch(&mut watcher, 0).await?, created.len(), 10).await?;
    assert_eq!(replay, events);
    Ok(())
}

async fn watch_events_resumes_after_a_restart_with_nothing_missed_or_repeated(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let mut before = Vec::new();
    for i in 0..3 {
        before.push(
            create_named(&mut client, &format!("Before {i}"), Segment::Smb)
                .await?
                .id,
        );
    }
    let mut stream = watch(&mut client, 0).await?;
    let seen = next_events(&mut stream, 3, 10).await?;
    assert_eq!(
        seen.iter()
            .map(|e| e.aggregate_id.clone())
            .collect::<Vec<_>>(),
        before
    );
    let cursor = seen[2].sequence;

    // Stopping must end the open stream rather than wait for it forever.
    server.stop().await?;
    let ended = within(10, "the open stream to end", stream.message()).await?;
    assert!(
        !matches!(ended, Ok(Some(_))),
        "no event after shutdown, got {ended:?}"
    );

    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let mut after = Vec::new();
    for i in 0..2 {
        after.push(
            create_named(&mut client, &format!("After {i}"), Segment::Smb)
                .await?
                .id,
        );
    }
    let mut resumed = watch(&mut client, cursor).await?;
    let rest = next_events(&mut resumed, 2, 10).await?;
    assert_eq!(
        rest.iter()
            .map(|e| e.aggregate_id.clone())
            .collect::<Vec<_>>(),
        after,
        "exactly the events committed after the cursor"
    );
    assert!(rest[0].sequence > cursor);
    assert_increasing(&rest);
    assert_quiet(&mut resumed, 700).await?;

    // The whole feed is the same history plus the new events.
    let whole = next_events(&mut watch(&mut client, 0).await?, 5, 10).await?;
    assert_eq!(
        whole[..3].to_vec(),
        seen,
        "history is unchanged by a restart"
    );
    assert_eq!(whole[3..].to_vec(), rest);
    assert_eq!(
        kinds(&whole)
            .iter()
            .filter(|(t, _)| t == "account.created")
            .count(),
        5
    );
    Ok(())
}
