//! Streaming imports of transitions: each batch is answered after its
//! commit with one result per transition, a bad one is refused alone, a
//! repeat changes nothing, a stream cut after some batches is resumed
//! without duplicates, and imported journeys report exactly as the same
//! transitions recorded call by call.

use bowtie_proto::accounts::ArchiveAccountRequest;
use bowtie_proto::common::{ImportOutcome, Segment, Stage};
use bowtie_proto::funnel::{
    GetFunnelReportRequest, ImportTransitionsRequest, ImportTransitionsResponse, ImportedTransition,
};
use bowtie_testkit::import::{DUPLICATE, RECORDED, acks, outcomes};
use bowtie_testkit::{TestDatabase, backend_test};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use crate::*;

backend_test!(
    a_streamed_batch_lands_its_good_transitions_refuses_bad_ones_alone_and_repeats_change_nothing,
    a_stream_cut_after_two_batches_is_resumed_and_nothing_is_recorded_twice,
    the_funnel_report_of_streamed_journeys_equals_the_one_recorded_call_by_call,
    a_batch_over_the_message_limit_ends_the_stream_with_resource_exhausted,
);

fn row(account_id: &str, stage: Stage, on_day: i64) -> ImportedTransition {
    let t = transition(account_id, stage, on_day);
    ImportedTransition {
        account_id: t.account_id,
        to_stage: t.to_stage,
        occurred_at: t.occurred_at,
        reason: t.reason,
        source: t.source,
    }
}

async fn import(
    funnel: &mut FunnelClient,
    batches: Vec<Vec<ImportedTransition>>,
) -> anyhow::Result<Vec<ImportTransitionsResponse>> {
    let requests = batches
        .into_iter()
        .map(|transitions| ImportTransitionsRequest { transitions });
    Ok(acks(
        funnel
            .import_transitions(futures::stream::iter(requests))
            .await,
    )
    .await?)
}

async fn a_streamed_batch_lands_its_good_transitions_refuses_bad_ones_alone_and_repeats_change_nothing(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Suite::start(db).await?;
    let acme = suite.customer("Acme", Segment::Smb, "ana").await?;
    let gone = suite.customer("Gone", Segment::Smb, "ana").await?;
    suite
        .accounts()
        .archive_account(ArchiveAccountRequest {
            id: gone.clone(),
            ..Default::default()
        })
        .await?;
    let mut funnel = suite.funnel();
    let nobody = uuid::Uuid::now_v7().to_string();
    let mut no_reason = row(&acme, Stage::Lost, 30);
    no_reason.reason = String::new();
    let batch = vec![
        row(&acme, Stage::Selection, 20),
        row(&nobody, Stage::Awareness, 0),
        row(&acme, Stage::Awareness, 0),
        ImportedTransition {
            to_stage: Stage::Unspecified as i32,
            ..row(&acme, Stage::Awareness, 5)
        },
        no_reason,
        row(&gone, Stage::Awareness, 0),
        row(&acme, Stage::Education, 12),
        row(&acme, Stage::Awareness, 0),
    ];
    let acks = import(&mut funnel, vec![batch.clone(), batch]).await?;
    assert_eq!(acks.len(), 2);
    assert_eq!(
        outcomes(&acks[0].results),
        vec![
            RECORDED,
            (ImportOutcome::Rejected, Code::NotFound, "account_id"),
            RECORDED,
            (ImportOutcome::Rejected, Code::InvalidArgument, "to_stage"),
            (ImportOutcome::Rejected, Code::InvalidArgument, "reason"),
            (
                ImportOutcome::Rejected,
                Code::FailedPrecondition,
                "account_id"
            ),
            RECORDED,
            DUPLICATE,
        ]
    );
    assert_eq!(
        (acks[0].recorded, acks[0].duplicates, acks[0].rejected),
        (3, 1, 4)
    );
    assert_eq!((acks[1].recorded, acks[1].duplicates), (0, 4));
    // The repeat names the transition the first one recorded.
    assert_eq!(acks[1].results[0].id, acks[0].results[0].id);

    // The journey is the one of the same transitions recorded one by one.
    let j = journey(&mut funnel, &acme).await?;
    assert_eq!(
        visited(&j),
        [Stage::Awareness, Stage::Education, Stage::Selection]
    );
    assert_eq!(j.transitions.len(), 3);
    assert_eq!(j.current_since, day(20));
    let days_in = |i: usize| j.visits[i].duration.as_ref().map(|d| d.seconds / DAY);
    assert_eq!((days_in(0), days_in(1)), (Some(12), Some(8)));
    Ok(())
}

/// Journeys of `accounts`: every one reaches awareness, education and
/// selection; every other one commits and onboards, every third is lost
/// and comes back.
fn journeys(accounts: &[String]) -> Vec<ImportedTransition> {
    let mut rows = Vec::new();
    for (i, account) in accounts.iter().enumerate() {
        let d = i as i64;
        rows.push(row(account, Stage::Awareness, d));
        rows.push(row(account, Stage::Education, d + 5));
        rows.push(row(account, Stage::Selection, d + 9));
        if i % 2 == 0 {
            rows.push(row(account, Stage::Commit, d + 20));
            rows.push(row(account, Stage::Onboarding, d + 25));
        } else if i % 3 == 0 {
            rows.push(row(account, Stage::Lost, d + 15));
            rows.push(row(account, Stage::Awareness, d + 40));
        }
    }
    rows
}

async fn a_stream_cut_after_two_batches_is_resumed_and_nothing_is_recorded_twice(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Suite::start(db).await?;
    let mut funnel = suite.funnel();
    let mut accounts = Vec::new();
    for i in 0..6 {
        accounts.push(
            suite
                .customer(&format!("Lead {i}"), Segment::Smb, "ana")
                .await?,
        );
    }
    let rows = journeys(&accounts);
    let batches: Vec<Vec<ImportedTransition>> = rows.chunks(4).map(<[_]>::to_vec).collect();

    let (tx, rx) = mpsc::channel(8);
    let mut stream = funnel
        .import_transitions(ReceiverStream::new(rx))
        .await?
        .into_inner();
    for transitions in &batches[..2] {
        tx.send(ImportTransitionsRequest {
            transitions: transitions.clone(),
        })
        .await?;
        assert!(stream.message().await?.is_some_and(|a| a.rejected == 0));
    }
    tx.send(ImportTransitionsRequest {
        transitions: batches[2].clone(),
    })
    .await?;
    drop(stream);
    drop(tx);

    let acks = import(&mut funnel, batches.clone()).await?;
    assert_eq!(acks.len(), batches.len());
    assert!(acks[..2].iter().all(|a| a.recorded == 0 && a.rejected == 0));
    let landed: i32 = acks.iter().map(|a| a.recorded + a.duplicates).sum();
    assert_eq!(landed, rows.len() as i32);
    let mut total = 0;
    for account in &accounts {
        total += journey(&mut funnel, account).await?.transitions.len();
    }
    assert_eq!(total, rows.len());
    Ok(())
}

async fn report(
    funnel: &mut FunnelClient,
    segment: Segment,
) -> anyhow::Result<bowtie_proto::funnel::GetFunnelReportResponse> {
    Ok(funnel
        .get_funnel_report(GetFunnelReportRequest {
            period: period(-10, 100),
            segment: segment as i32,
            ..GetFunnelReportRequest::default()
        })
        .await?
        .into_inner())
}

async fn the_funnel_report_of_streamed_journeys_equals_the_one_recorded_call_by_call(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Suite::start(db).await?;
    let mut funnel = suite.funnel();
    let (mut by_call, mut streamed) = (Vec::new(), Vec::new());
    for i in 0..9 {
        by_call.push(
            suite
                .customer(&format!("Call {i}"), Segment::Smb, "ana")
                .await?,
        );
        streamed.push(
            suite
                .customer(&format!("Stream {i}"), Segment::Enterprise, "ana")
                .await?,
        );
    }
    for r in journeys(&by_call) {
        funnel
            .record_transition(bowtie_proto::funnel::RecordTransitionRequest {
                account_id: r.account_id,
                to_stage: r.to_stage,
                occurred_at: r.occurred_at,
                reason: r.reason,
                source: r.source,
                idempotency_key: String::new(),
            })
            .await?;
    }
    let batches = journeys(&streamed).chunks(5).map(<[_]>::to_vec).collect();
    let acks = import(&mut funnel, batches).await?;
    assert!(acks.iter().all(|a| a.rejected == 0 && a.duplicates == 0));
    let smb = report(&mut funnel, Segment::Smb).await?;
    assert!(!smb.stages.is_empty());
    assert_eq!(report(&mut funnel, Segment::Enterprise).await?, smb);
    Ok(())
}

async fn a_batch_over_the_message_limit_ends_the_stream_with_resource_exhausted(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Suite::start(db).await?;
    let acme = suite.customer("Acme", Segment::Smb, "ana").await?;
    let mut funnel = suite.funnel();
    let mut huge = row(&acme, Stage::Education, 5);
    huge.reason = "x".repeat(5 << 20);
    let outcome = import(
        &mut funnel,
        vec![vec![row(&acme, Stage::Awareness, 0)], vec![huge]],
    )
    .await;
    let status = outcome
        .err()
        .and_then(|e| e.downcast::<tonic::Status>().ok())
        .map(|s| (s.code(), s.message().contains("4194304")));
    assert_eq!(status, Some((Code::ResourceExhausted, true)));
    assert_eq!(journey(&mut funnel, &acme).await?.transitions.len(), 1);
    Ok(())
}
