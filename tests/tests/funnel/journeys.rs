//! Recording transitions and reading journeys.

use bowtie_proto::accounts::ArchiveAccountRequest;
use bowtie_proto::common::{PageRequest, Segment, Stage};
use bowtie_proto::funnel::{
    GetJourneyRequest, ListAccountsInStageRequest, RecordTransitionRequest, Transition,
    WatchEventsRequest,
};
use bowtie_testkit::{READ_KEY, TestDatabase, assert, backend_test, within};
use futures::StreamExt;
use prost::Message as _;
use tonic::Code;

use crate::*;

backend_test!(
    a_back_dated_import_yields_the_journey_in_business_time,
    repeating_a_transition_changes_nothing,
    an_idempotency_key_replays_the_first_answer_and_refuses_another_request,
    an_unknown_account_is_not_found_and_nothing_is_written,
    with_accounts_down_a_transition_is_unavailable_and_nothing_is_written,
    bad_transitions_are_refused_with_the_field_named,
    a_lost_lead_that_returns_starts_a_second_attempt,
    an_archived_account_can_no_longer_move,
    accounts_in_a_stage_are_listed_longest_waiting_first_page_by_page,
    every_transition_is_published_on_the_funnel_feed,
    a_read_only_key_cannot_record_transitions,
    concurrent_transitions_of_one_journey_all_land_in_order,
);

async fn a_back_dated_import_yields_the_journey_in_business_time(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Suite::start(db).await?;
    let acme = suite.customer("Acme", Segment::Smb, "ana").await?;
    let mut funnel = suite.funnel();

    // The CRM sends the newest first, then back-fills the history.
    record(&mut funnel, &acme, Stage::Selection, 20).await?;
    record(&mut funnel, &acme, Stage::Awareness, 0).await?;
    let last = record(&mut funnel, &acme, Stage::Education, 12).await?;
    assert_eq!(last.current_stage, Stage::Selection as i32);

    let j = journey(&mut funnel, &acme).await?;
    assert_eq!(
        visited(&j),
        [Stage::Awareness, Stage::Education, Stage::Selection]
    );
    assert_eq!(j.current_stage, Stage::Selection as i32);
    assert_eq!(j.current_since, day(20));
    let days_in = |i: usize| j.visits[i].duration.as_ref().map(|d| d.seconds / DAY);
    assert_eq!((days_in(0), days_in(1)), (Some(12), Some(8)));
    assert_eq!(j.visits[1].exit_time, day(20));
    assert_eq!(j.visits[2].exit_time, None);
    assert_eq!(j.attempts, 1);
    Ok(())
}

async fn repeating_a_transition_changes_nothing(db: &TestDatabase) -> anyhow::Result<()> {
    let suite = Suite::start(db).await?;
    let acme = suite.customer("Acme", Segment::Smb, "ana").await?;
    let mut funnel = suite.funnel();
    let first = record(&mut funnel, &acme, Stage::Awareness, 0).await?;
    let again = record(&mut funnel, &acme, Stage::Awareness, 0).await?;
    assert!(first.applied);
    assert!(!again.applied);
    assert_eq!(again.transition, first.transition);
    assert_eq!(journey(&mut funnel, &acme).await?.transitions.len(), 1);
    Ok(())
}

async fn an_idempotency_key_replays_the_first_answer_and_refuses_another_request(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Suite::start(db).await?;
    let acme = suite.customer("Acme", Segment::Smb, "ana").await?;
    let mut funnel = suite.funnel();
    let request = RecordTransitionRequest {
        idempotency_key: "crm-event-42".into(),
        ..transition(&acme, Stage::Awareness, 0)
    };
    let first = funnel
        .record_transition(request.clone())
        .await?
        .into_inner();
    let replay = funnel
        .record_transition(request.clone())
        .await?
        .into_inner();
    assert_eq!(replay, first);
    assert!(
        replay.applied,
        "a replay answers exactly what the first call did"
    );

    let other = RecordTransitionRequest {
        to_stage: Stage::Education as i32,
        ..request
    };
    assert::invalid_field(funnel.record_transition(other).await, "idempotency_key");
    assert_eq!(journey(&mut funnel, &acme).await?.transitions.len(), 1);
    Ok(())
}

async fn an_unknown_account_is_not_found_and_nothing_is_written(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Suite::start(db).await?;
    let mut funnel = suite.funnel();
    let nobody = uuid::Uuid::now_v7().to_string();
    let status = assert::status(
        funnel
            .record_transition(transition(&nobody, Stage::Awareness, 0))
            .await,
        Code::NotFound,
    );
    assert!(status.message().contains(&nobody));
    assert::status(
        funnel
            .get_journey(GetJourneyRequest { account_id: nobody })
            .await,
        Code::NotFound,
    );
    Ok(())
}

async fn with_accounts_down_a_transition_is_unavailable_and_nothing_is_written(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Suite::start(db).await?;
    let acme = suite.customer("Acme", Segment::Smb, "ana").await?;
    let Suite { accounts, funnel } = suite;
    let _accounts_port = accounts.stop_and_keep_port().await?;
    let mut client = bowtie_proto::funnel::funnel_service_client::FunnelServiceClient::new(
        funnel.with_key(bowtie_testkit::WRITE_KEY),
    );
    let status = assert::status(
        within(
            10,
            "the funnel to give up on accounts",
            client.record_transition(transition(&acme, Stage::Awareness, 0)),
        )
        .await?,
        Code::Unavailable,
    );
    assert!(
        status.message().contains("accounts"),
        "{}",
        status.message()
    );
    assert::status(
        client
            .get_journey(GetJourneyRequest { account_id: acme })
            .await,
        Code::NotFound,
    );
    Ok(())
}

async fn bad_transitions_are_refused_with_the_field_named(db: &TestDatabase) -> anyhow::Result<()> {
    let suite = Suite::start(db).await?;
    let acme = suite.customer("Acme", Segment::Smb, "ana").await?;
    let mut funnel = suite.funnel();
    let ok = transition(&acme, Stage::Awareness, 0);
    let cases = [
        (
            "account_id",
            RecordTransitionRequest {
                account_id: "acme".into(),
                ..ok.clone()
            },
        ),
        (
            "to_stage",
            RecordTransitionRequest {
                to_stage: 0,
                ..ok.clone()
            },
        ),
        (
            "to_stage",
            RecordTransitionRequest {
                to_stage: 42,
                ..ok.clone()
            },
        ),
        (
            "occurred_at",
            RecordTransitionRequest {
                occurred_at: None,
                ..ok.clone()
            },
        ),
        (
            "occurred_at",
            RecordTransitionRequest {
                occurred_at: day(365 * 30),
                ..ok.clone()
            },
        ),
        (
            "reason",
            RecordTransitionRequest {
                reason: "Price; DROP TABLE".into(),
                ..ok.clone()
            },
        ),
        (
            "reason",
            transition(&acme, Stage::Lost, 3).tap(|r| r.reason.clear()),
        ),
        (
            "source",
            RecordTransitionRequest {
                source: "x".repeat(65),
                ..ok.clone()
            },
        ),
        (
            "idempotency_key",
            RecordTransitionRequest {
                idempotency_key: "has space".into(),
                ..ok
            },
        ),
    ];
    for (field, request) in cases {
        assert::invalid_field(funnel.record_transition(request).await, field);
    }
    assert::status(
        funnel
            .get_journey(GetJourneyRequest { account_id: acme })
            .await,
        Code::NotFound,
    );
    Ok(())
}

/// Lets a test change one field of a built value in an expression.
trait Tap: Sized {
    fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }
}
impl Tap for RecordTransitionRequest {}

async fn a_lost_lead_that_returns_starts_a_second_attempt(db: &TestDatabase) -> anyhow::Result<()> {
    let suite = Suite::start(db).await?;
    let acme = suite.customer("Acme", Segment::Smb, "ana").await?;
    let mut funnel = suite.funnel();
    record_path(
        &mut funnel,
        &acme,
        &[
            (Stage::Awareness, 0),
            (Stage::Lost, 10),
            (Stage::Awareness, 100),
            (Stage::Commit, 120),
        ],
    )
    .await?;
    let j = journey(&mut funnel, &acme).await?;
    assert_eq!(j.attempts, 2);
    assert_eq!(
        j.visits.iter().map(|v| v.attempt).collect::<Vec<_>>(),
        [1, 1, 2, 2]
    );
    assert_eq!(j.transitions[1].reason, "price");
    let awareness = &j.time_in_stage[0];
    assert_eq!(awareness.stage, Stage::Awareness as i32);
    assert_eq!(awareness.visits, 2);
    assert_eq!(awareness.total.as_ref().map(|d| d.seconds / DAY), Some(30));
    Ok(())
}

async fn an_archived_account_can_no_longer_move(db: &TestDatabase) -> anyhow::Result<()> {
    let suite = Suite::start(db).await?;
    let acme = suite.customer("Acme", Segment::Smb, "ana").await?;
    suite
        .accounts()
        .archive_account(ArchiveAccountRequest {
            id: acme.clone(),
            ..Default::default()
        })
        .await?;
    assert::status(
        suite
            .funnel()
            .record_transition(transition(&acme, Stage::Awareness, 0))
            .await,
        Code::FailedPrecondition,
    );
    Ok(())
}

async fn accounts_in_a_stage_are_listed_longest_waiting_first_page_by_page(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Suite::start(db).await?;
    let mut funnel = suite.funnel();
    let mut expected = Vec::new();
    for i in 0..5 {
        let id = suite
            .customer(&format!("Lead {i}"), Segment::Smb, "ana")
            .await?;
        // Entered SELECTION on days 50, 40, ... : the last created waits longest.
        record(&mut funnel, &id, Stage::Selection, 50 - 10 * i).await?;
        expected.insert(0, id);
    }
    let other = suite.customer("Mid", Segment::MidMarket, "ana").await?;
    record(&mut funnel, &other, Stage::Selection, 1).await?;
    let committed = suite.customer("Done", Segment::Smb, "ana").await?;
    record(&mut funnel, &committed, Stage::Commit, 1).await?;

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = funnel
            .list_accounts_in_stage(ListAccountsInStageRequest {
                stage: Stage::Selection as i32,
                segment: Segment::Smb as i32,
                owner: String::new(),
                page: Some(PageRequest {
                    page_size: 2,
                    page_token: token.clone(),
                }),
            })
            .await?
            .into_inner();
        assert!(page.accounts.len() <= 2);
        seen.extend(page.accounts.iter().map(|a| a.account_id.clone()));
        token = page.page.map(|p| p.next_page_token).unwrap_or_default();
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen, expected);
    Ok(())
}

async fn every_transition_is_published_on_the_funnel_feed(db: &TestDatabase) -> anyhow::Result<()> {
    let suite = Suite::start(db).await?;
    let acme = suite.customer("Acme", Segment::Smb, "ana").await?;
    let mut funnel = suite.funnel();
    record_path(
        &mut funnel,
        &acme,
        &[(Stage::Awareness, 0), (Stage::Education, 3)],
    )
    .await?;
    let mut stream = funnel
        .watch_events(WatchEventsRequest::default())
        .await?
        .into_inner();
    let mut stages = Vec::new();
    for _ in 0..2 {
        let event = within(10, "a funnel event", stream.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the feed ended"))??
            .event
            .ok_or_else(|| anyhow::anyhow!("no event"))?;
        assert_eq!(event.event_type, "transition.recorded");
        assert_eq!(event.aggregate_id, acme);
        let payload = event.payload.ok_or_else(|| anyhow::anyhow!("no payload"))?;
        stages.push(Transition::decode(payload.value.as_slice())?.to_stage);
    }
    assert_eq!(stages, [Stage::Awareness as i32, Stage::Education as i32]);
    Ok(())
}

async fn a_read_only_key_cannot_record_transitions(db: &TestDatabase) -> anyhow::Result<()> {
    let suite = Suite::start(db).await?;
    let acme = suite.customer("Acme", Segment::Smb, "ana").await?;
    let mut reader = suite.funnel_with(READ_KEY);
    assert::status(
        reader
            .record_transition(transition(&acme, Stage::Awareness, 0))
            .await,
        Code::PermissionDenied,
    );
    assert::status(
        reader
            .get_journey(GetJourneyRequest { account_id: acme })
            .await,
        Code::NotFound,
    );
    Ok(())
}

async fn concurrent_transitions_of_one_journey_all_land_in_order(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Suite::start(db).await?;
    let acme = suite.customer("Acme", Segment::Smb, "ana").await?;
    // Sixteen transitions at once: AWARENESS..GROWTH cycling, a day apart.
    let calls = (0..16).map(|i| {
        let mut funnel = suite.funnel();
        let stage = Stage::try_from(1 + (i % 7)).unwrap_or(Stage::Awareness);
        let acme = acme.clone();
        async move { record(&mut funnel, &acme, stage, i64::from(i)).await }
    });
    for outcome in futures::future::join_all(calls).await {
        assert!(outcome?.applied);
    }
    let j = journey(&mut suite.funnel(), &acme).await?;
    assert_eq!(j.transitions.len(), 16);
    let days: Vec<i64> = j
        .transitions
        .iter()
        .filter_map(|t| {
            t.occurred_at
                .as_ref()
                .map(|at| (at.seconds - JAN_2026) / DAY)
        })
        .collect();
    assert_eq!(days, (0..16).collect::<Vec<_>>());
    // Every transition changes the stage, so every one is a visit of its own,
    // derived from the complete journey rather than from a racing partial view.
    assert_eq!(j.visits.len(), 16);
    assert_eq!(j.current_stage, Stage::Awareness as i32 + 1);
    Ok(())
}
