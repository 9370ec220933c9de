//! Signal ingest: per-item results, idempotent replays, the streaming acks.

use bowtie_proto::common::Segment;
use bowtie_proto::scoring::scoring_service_client::ScoringServiceClient;
use bowtie_proto::scoring::{
    RecomputeHealthRequest, RecordSignalBatchRequest, RecordSignalsRequest, SignalOutcome,
    SignalType,
};
use bowtie_testkit::scoring::{
    Scoring, create_account, health_when, logins, record, signal, start_scoring,
};
use bowtie_testkit::{ADMIN_KEY, TestDatabase, TestServer, WRITE_KEY, backend_test, within};
use futures::StreamExt;
use tonic::Code;

backend_test!(
    replaying_a_batch_records_nothing_twice,
    bad_signals_are_rejected_one_by_one_and_the_rest_lands,
    a_signal_stream_is_acknowledged_batch_by_batch_after_commit,
    an_oversized_batch_is_rejected_whole,
    signals_recorded_before_a_restart_still_count_after_it,
    first_value_is_announced_once_per_account_at_its_earliest_time,
);

async fn signals_recorded_before_a_restart_still_count_after_it(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let mut settings = db.server_settings()?;
    let accounts = TestServer::start_with(&settings).await?;
    settings.peers.accounts = accounts.uri();
    let scoring = start_scoring(&settings).await?;
    let acme = create_account(&accounts, "Acme", Segment::Smb).await?;
    let mut client = ScoringServiceClient::new(scoring.with_key(WRITE_KEY));
    // 10 logins a month ago, 8 this month: usage 80, stakeholders 100:
    // (25 x 80 + 5 x 100) / 30 = 83.3 -> 83.
    let mut batch = logins("before", &acme, 10, 45);
    batch.extend(logins("now", &acme, 8, 5));
    record(&mut client, batch.clone()).await?;
    health_when(&mut client, &acme, "a green score", |h| h.score == 83).await?;

    scoring.stop().await?;
    let scoring = start_scoring(&settings).await?;
    let mut client = ScoringServiceClient::new(scoring.with_key(WRITE_KEY));
    // The same batch again is a replay.
    let replay = record(&mut client, batch).await?;
    assert_eq!((replay.recorded, replay.duplicates), (0, 18));
    // Rescoring everyone from what the restarted service knows changes nothing.
    let mut admin = ScoringServiceClient::new(scoring.with_key(ADMIN_KEY));
    admin.recompute_health(RecomputeHealthRequest {}).await?;
    health_when(&mut client, &acme, "the same score", |h| h.score == 83).await?;
    // 30 more logins the month before count with the 10 recorded before the
    // restart: usage fell from 40 to 8 = 20; (25 x 20 + 5 x 100) / 30 = 33.3
    // -> 33 (the new logins alone would give 0 and 17).
    record(&mut client, logins("import", &acme, 30, 50)).await?;
    let h = health_when(&mut client, &acme, "a red score", |h| h.score == 33).await?;
    assert_eq!(
        h.components[0].reason,
        "usage fell from 40 to 8 events (30 days vs the 30 before)"
    );
    scoring.stop().await?;
    Ok(())
}

async fn replaying_a_batch_records_nothing_twice(db: &TestDatabase) -> anyhow::Result<()> {
    let suite = Scoring::start(db).await?;
    let acme = suite.account("Acme", Segment::Smb).await?;
    let mut client = suite.client();
    let first = record(&mut client, logins("acme-login", &acme, 3, 2)).await?;
    assert_eq!((first.recorded, first.duplicates), (3, 0));
    let replay = record(&mut client, logins("acme-login", &acme, 3, 2)).await?;
    assert_eq!((replay.recorded, replay.duplicates), (0, 3));
    assert!(
        replay
            .results
            .iter()
            .all(|r| r.outcome == SignalOutcome::Duplicate as i32)
    );
    // One more login: the usage count is 4, not 7.
    record(&mut client, logins("acme-login-late", &acme, 1, 1)).await?;
    let h = health_when(&mut client, &acme, "four logins to be scored", |h| {
        h.components
            .iter()
            .any(|c| c.reason.starts_with("4 usage events"))
    })
    .await?;
    assert_eq!(h.score, 100);
    Ok(())
}

async fn bad_signals_are_rejected_one_by_one_and_the_rest_lands(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Scoring::start(db).await?;
    let acme = suite.account("Acme", Segment::Smb).await?;
    let stranger = uuid::Uuid::now_v7().to_string();
    let mut unknown_type = signal("k-type", &acme, SignalType::Login, 1, 1);
    unknown_type.r#type = 99;
    let batch = vec![
        signal("k-ok", &acme, SignalType::NpsAnswer, 9, 1),
        unknown_type,
        signal("k-nps", &acme, SignalType::NpsAnswer, 11, 1),
        signal("k-future", &acme, SignalType::Login, 1, -1),
        signal("k-stranger", &stranger, SignalType::Login, 1, 1),
        signal("k-bad-id", "not-a-uuid", SignalType::Login, 1, 1),
        signal("", &acme, SignalType::Login, 1, 1),
        signal("k-csat", &acme, SignalType::CsatAnswer, 0, 1),
    ];
    let r = record(&mut suite.client(), batch).await?;
    let got: Vec<(i32, i32, String)> = r
        .results
        .iter()
        .map(|x| (x.outcome, x.code, x.field.clone()))
        .collect();
    let rejected = |code: Code, field: &str| {
        (
            SignalOutcome::Rejected as i32,
            code as i32,
            field.to_owned(),
        )
    };
    assert_eq!(
        got,
        [
            (SignalOutcome::Recorded as i32, 0, String::new()),
            rejected(Code::InvalidArgument, "type"),
            rejected(Code::InvalidArgument, "value"),
            rejected(Code::InvalidArgument, "occurred_at"),
            rejected(Code::NotFound, "account_id"),
            rejected(Code::InvalidArgument, "account_id"),
            rejected(Code::InvalidArgument, "idempotency_key"),
            rejected(Code::InvalidArgument, "value"),
        ]
    );
    assert_eq!((r.recorded, r.rejected), (1, 7));
    assert!(r.results[2].message.contains("0..=10"));
    // The good one landed: sentiment 90 from the NPS answer of 9.
    let h = health_when(
        &mut suite.client(),
        &acme,
        "the NPS answer to be scored",
        |h| !h.components.is_empty(),
    )
    .await?;
    // Sentiment 90 (w10) and stakeholders 100 (w5): 1400 / 15 = 93.3.
    assert_eq!(h.score, 93);
    Ok(())
}

async fn a_signal_stream_is_acknowledged_batch_by_batch_after_commit(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Scoring::start(db).await?;
    let acme = suite.account("Acme", Segment::Smb).await?;
    let batches = vec![
        RecordSignalsRequest {
            signals: logins("s0", &acme, 5, 40),
        },
        RecordSignalsRequest {
            signals: logins("s1", &acme, 2, 3),
        },
        RecordSignalsRequest {
            signals: logins("s0", &acme, 5, 40),
        },
    ];
    let mut acks = suite
        .client()
        .record_signals(futures::stream::iter(batches))
        .await?
        .into_inner();
    let mut got = Vec::new();
    within(10, "three acknowledgements", async {
        while let Some(ack) = acks.next().await {
            let ack = ack?;
            got.push((ack.batch, ack.recorded, ack.duplicates, ack.results.len()));
        }
        anyhow::Ok(())
    })
    .await??;
    assert_eq!(got, [(0, 5, 0, 0), (1, 2, 0, 0), (2, 0, 5, 5)]);
    // Acknowledged means committed: usage 2 vs 5 = 40.
    let h = health_when(&mut suite.client(), &acme, "the streamed logins", |h| {
        h.components.first().is_some_and(|c| c.score == 40)
    })
    .await?;
    assert_eq!(
        h.components[0].reason,
        "usage fell from 5 to 2 events (30 days vs the 30 before)"
    );
    Ok(())
}

async fn an_oversized_batch_is_rejected_whole(db: &TestDatabase) -> anyhow::Result<()> {
    let suite = Scoring::start(db).await?;
    let acme = suite.account("Acme", Segment::Smb).await?;
    let err = suite
        .client()
        .record_signal_batch(RecordSignalBatchRequest {
            signals: logins("big", &acme, 10_001, 1),
        })
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(err, Some(Code::InvalidArgument));
    Ok(())
}

async fn first_value_is_announced_once_per_account_at_its_earliest_time(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    use bowtie_proto::scoring::{FirstValueReached, WatchEventsRequest};

    let suite = Scoring::start(db).await?;
    let acme = suite.account("Acme", Segment::Smb).await?;
    let globex = suite.account("Globex", Segment::Smb).await?;
    let mut client = suite.client();
    let acme_first = signal("acme-fv-1", &acme, SignalType::FirstValueReached, 1, 5);
    let globex_first = signal("globex-fv", &globex, SignalType::FirstValueReached, 1, 2);
    // One batch reaches first value for two accounts, Acme twice.
    record(
        &mut client,
        vec![
            signal("acme-fv-2", &acme, SignalType::FirstValueReached, 1, 3),
            acme_first.clone(),
            globex_first.clone(),
            signal("acme-login", &acme, SignalType::Login, 1, 1),
        ],
    )
    .await?;
    // Later signals of value already reached announce nothing new.
    record(
        &mut client,
        vec![
            signal("acme-fv-3", &acme, SignalType::FirstValueReached, 1, 1),
            signal("globex-fv-2", &globex, SignalType::FirstValueReached, 1, 1),
        ],
    )
    .await?;
    let mut feed = client
        .watch_events(WatchEventsRequest::default())
        .await?
        .into_inner();
    let mut announced = Vec::new();
    // The feed stays open: read until it has been quiet for a second.
    while let Ok(Some(message)) =
        tokio::time::timeout(std::time::Duration::from_secs(1), feed.message())
            .await
            .map_err(anyhow::Error::from)
            .and_then(|m| Ok(m?))
    {
        let Some(event) = message.event else { continue };
        if event.event_type == "first_value.reached" {
            let reached: FirstValueReached = bowtie_testkit::revenue::payload(&event)?;
            announced.push((
                event.aggregate_id,
                reached.account_id,
                reached.reached_at.map(|t| t.seconds),
            ));
        }
    }
    announced.sort();
    let mut expected = vec![
        (
            acme.clone(),
            acme.clone(),
            acme_first.occurred_at.map(|t| t.seconds),
        ),
        (
            globex.clone(),
            globex.clone(),
            globex_first.occurred_at.map(|t| t.seconds),
        ),
    ];
    expected.sort();
    assert_eq!(announced, expected);
    Ok(())
}
