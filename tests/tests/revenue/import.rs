//! Streaming imports of subscription histories and invoices: each batch is
//! answered after its commit with one result per row, a bad row is refused
//! alone, a repeat changes nothing, a stream cut after some batches is
//! resumed without duplicates, and an imported history reports exactly as
//! the same history written call by call.

use bowtie_proto::common::{ImportOutcome, Segment};
use bowtie_proto::revenue::{
    BillingInterval, CancelSubscriptionRequest, CancellationKind, GetSubscriptionRequest,
    ImportInvoicesRequest, ImportInvoicesResponse, ImportSubscriptionEventsRequest,
    ImportSubscriptionEventsResponse, ImportedInvoice, MovementType, SubscriptionEvent,
    SubscriptionEventType,
};
use bowtie_testkit::TestDatabase;
use bowtie_testkit::backend_test;
use bowtie_testkit::import::{DUPLICATE, RECORDED, acks, outcomes};
use bowtie_testkit::revenue::*;
use prost_types::Timestamp;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

backend_test!(
    a_streamed_batch_lands_its_good_rows_refuses_bad_ones_alone_and_repeats_change_nothing,
    a_stream_cut_after_two_batches_is_resumed_and_nothing_is_recorded_twice,
    the_waterfall_of_a_streamed_history_equals_the_one_written_call_by_call,
    a_batch_over_the_message_limit_ends_the_stream_with_resource_exhausted,
    imported_invoices_are_keyed_by_their_external_id_and_a_late_payment_reactivates,
);

fn start(sub: &str, account: &str, at: Timestamp, quantity: i64, price: i64) -> SubscriptionEvent {
    SubscriptionEvent {
        subscription_id: sub.to_owned(),
        account_id: account.to_owned(),
        r#type: SubscriptionEventType::Start as i32,
        effective_at: Some(at),
        terms: Some(terms(quantity, price, "USD")),
        billing_interval: BillingInterval::Month as i32,
        ..SubscriptionEvent::default()
    }
}

fn change_to(sub: &str, at: Timestamp, quantity: i64, price: i64) -> SubscriptionEvent {
    SubscriptionEvent {
        subscription_id: sub.to_owned(),
        r#type: SubscriptionEventType::Change as i32,
        effective_at: Some(at),
        terms: Some(terms(quantity, price, "USD")),
        ..SubscriptionEvent::default()
    }
}

fn cancel(sub: &str, at: Timestamp) -> SubscriptionEvent {
    SubscriptionEvent {
        subscription_id: sub.to_owned(),
        r#type: SubscriptionEventType::Cancel as i32,
        effective_at: Some(at),
        cancellation_kind: CancellationKind::Voluntary as i32,
        reason_code: "price".to_owned(),
        ..SubscriptionEvent::default()
    }
}

/// Sends `batches` on one stream and reads every acknowledgement.
async fn import(
    client: &mut RevenueClient,
    batches: Vec<Vec<SubscriptionEvent>>,
) -> anyhow::Result<Vec<ImportSubscriptionEventsResponse>> {
    let requests = batches
        .into_iter()
        .map(|events| ImportSubscriptionEventsRequest { events });
    Ok(acks(
        client
            .import_subscription_events(futures::stream::iter(requests))
            .await,
    )
    .await?)
}

async fn a_streamed_batch_lands_its_good_rows_refuses_bad_ones_alone_and_repeats_change_nothing(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Revenue::start(db).await?;
    let mut client = suite.client();
    let acme = suite.account("Acme", Segment::Smb, "ana").await?;
    let nobody = uuid::Uuid::now_v7().to_string();
    let negative = start("sub_3", &acme, day(2025, 1, 1), -1, 5_000);
    let batch = vec![
        start("sub_1", &acme, day(2025, 1, 10), 2, 5_000),
        change_to("sub_1", day(2025, 2, 1), 5, 5_000),
        start("sub_2", &nobody, day(2025, 1, 10), 1, 5_000),
        change_to("sub_9", day(2025, 2, 1), 1, 5_000),
        negative,
        cancel("sub_1", day(2025, 4, 1)),
        start("sub_1", &acme, day(2025, 1, 10), 2, 5_000),
    ];
    let acks = import(&mut client, vec![batch.clone(), batch]).await?;
    assert_eq!(acks.len(), 2);
    assert_eq!((acks[0].batch, acks[1].batch), (0, 1));
    assert_eq!(
        outcomes(&acks[0].results),
        vec![
            RECORDED,
            RECORDED,
            (ImportOutcome::Rejected, Code::NotFound, "account_id"),
            (ImportOutcome::Rejected, Code::NotFound, "subscription_id"),
            (
                ImportOutcome::Rejected,
                Code::InvalidArgument,
                "terms.quantity"
            ),
            RECORDED,
            DUPLICATE,
        ]
    );
    assert_eq!(
        (acks[0].recorded, acks[0].duplicates, acks[0].rejected),
        (3, 1, 3)
    );
    // The same batch again: every good row is already there.
    assert_eq!(
        outcomes(&acks[1].results),
        vec![
            DUPLICATE,
            DUPLICATE,
            (ImportOutcome::Rejected, Code::NotFound, "account_id"),
            (ImportOutcome::Rejected, Code::NotFound, "subscription_id"),
            (
                ImportOutcome::Rejected,
                Code::InvalidArgument,
                "terms.quantity"
            ),
            DUPLICATE,
            DUPLICATE,
        ]
    );
    // The rows name the subscription by the revenue id it got, every time.
    let id = acks[0].results[0].id.clone();
    assert!(acks[1].results.iter().take(2).all(|r| r.id == id));
    let sub = client
        .get_subscription(GetSubscriptionRequest { id })
        .await?
        .into_inner()
        .subscription
        .unwrap_or_default();
    assert_eq!(sub.account_id, acme);
    assert_eq!(sub.changes.len(), 2);
    assert!(sub.cancellation.is_some());

    let seen: Vec<(i32, i64)> = all_movements(&mut client, &acme)
        .await?
        .iter()
        .map(|m| (m.r#type, minor(&m.amount)))
        .collect();
    assert_eq!(
        seen,
        vec![
            (MovementType::New as i32, 10_000),
            (MovementType::Expansion as i32, 15_000),
            (MovementType::Churn as i32, -25_000),
        ]
    );
    // The feed carries what the unary writes publish.
    let events = next_events(&mut watch(&mut client, 0).await?, 6, 10).await?;
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        vec![
            "subscription.created",
            "subscription.changed",
            "subscription.cancelled",
            "movement.recorded",
            "movement.recorded",
            "movement.recorded",
        ]
    );
    Ok(())
}

/// A history of `accounts`: for each, a start, an upgrade, and for every
/// other one a cancellation and a second subscription later (a
/// reactivation); the events of the accounts interleaved in time order.
fn history(accounts: &[String], prefix: &str) -> Vec<SubscriptionEvent> {
    let mut events = Vec::new();
    for (i, account) in accounts.iter().enumerate() {
        let n = i as u32;
        let main = format!("{prefix}-{i}-a");
        events.push(start(
            &main,
            account,
            day(2024, 1 + n % 12, 1 + n),
            1 + i as i64,
            4_900,
        ));
        events.push(change_to(
            &main,
            day(2025, 1 + n % 6, 3),
            3 + i as i64,
            4_900,
        ));
        if i % 2 == 1 {
            events.push(cancel(&main, day(2025, 7 + n % 5, 15)));
            let again = format!("{prefix}-{i}-b");
            events.push(start(&again, account, day(2025, 12, 1), 2, 9_900));
        }
    }
    events
}

async fn a_stream_cut_after_two_batches_is_resumed_and_nothing_is_recorded_twice(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Revenue::start(db).await?;
    let mut client = suite.client();
    let mut accounts = Vec::new();
    for i in 0..8 {
        accounts.push(
            suite
                .account(&format!("Co {i}"), Segment::Smb, "ana")
                .await?,
        );
    }
    let events = history(&accounts, "cut");
    let batches: Vec<Vec<SubscriptionEvent>> = events.chunks(5).map(<[_]>::to_vec).collect();
    assert!(batches.len() > 3);

    // Two batches acknowledged, the third sent, then the client goes away.
    let (tx, rx) = mpsc::channel(8);
    let mut stream = client
        .import_subscription_events(ReceiverStream::new(rx))
        .await?
        .into_inner();
    for events in &batches[..2] {
        tx.send(ImportSubscriptionEventsRequest {
            events: events.clone(),
        })
        .await?;
        let ack = stream.message().await?;
        assert!(ack.is_some_and(|a| a.rejected == 0));
    }
    tx.send(ImportSubscriptionEventsRequest {
        events: batches[2].clone(),
    })
    .await?;
    drop(stream);
    drop(tx);

    // The whole file again: what landed is already there, the rest lands.
    let acks = import(&mut client, batches.clone()).await?;
    assert_eq!(acks.len(), batches.len());
    for ack in &acks[..2] {
        assert_eq!((ack.recorded, ack.rejected), (0, 0), "{ack:?}");
    }
    let recorded: i32 = acks.iter().map(|a| a.recorded).sum();
    let duplicates: i32 = acks.iter().map(|a| a.duplicates).sum();
    assert_eq!(recorded + duplicates, events.len() as i32);
    assert!(acks.iter().all(|a| a.rejected == 0));

    // Once more: everything is a duplicate and nothing moves.
    let before = all_movements(&mut client, "").await?;
    let again = import(&mut client, batches).await?;
    assert!(again.iter().all(|a| a.recorded == 0 && a.rejected == 0));
    assert_eq!(all_movements(&mut client, "").await?, before);
    // One NEW per account and one REACTIVATION per cancelled one.
    let count = |t: MovementType| before.iter().filter(|m| m.r#type == t as i32).count();
    assert_eq!(count(MovementType::New), 8);
    assert_eq!(count(MovementType::Churn), 4);
    assert_eq!(count(MovementType::Reactivation), 4);
    Ok(())
}

/// Writes `events` with CreateSubscription, ChangeSubscription and
/// CancelSubscription, one call each.
async fn write_call_by_call(
    client: &mut RevenueClient,
    events: &[SubscriptionEvent],
) -> anyhow::Result<()> {
    let mut ids = std::collections::HashMap::new();
    for e in events {
        let id = ids.get(&e.subscription_id).cloned().unwrap_or_default();
        match SubscriptionEventType::try_from(e.r#type)? {
            SubscriptionEventType::Start => {
                let mut s = monthly(&e.account_id, e.effective_at.unwrap_or_default(), 0, 0);
                s.terms = e.terms.clone();
                let created = client.create_subscription(create(s)).await?.into_inner();
                let created = created.subscription.unwrap_or_default();
                ids.insert(e.subscription_id.clone(), created.id);
            }
            SubscriptionEventType::Change => {
                let t = e.terms.clone().unwrap_or_default();
                client
                    .change_subscription(change(&id, e.effective_at.unwrap_or_default(), t))
                    .await?;
            }
            _ => {
                client
                    .cancel_subscription(CancelSubscriptionRequest {
                        id,
                        cancellation: cancellation(e.effective_at.unwrap_or_default()),
                        idempotency_key: String::new(),
                        expected_version: None,
                    })
                    .await?;
            }
        }
    }
    Ok(())
}

async fn the_waterfall_of_a_streamed_history_equals_the_one_written_call_by_call(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Revenue::start(db).await?;
    let mut client = suite.client();
    // The same history twice: once for SMB accounts call by call, once for
    // enterprise accounts over the stream.
    let mut by_call = Vec::new();
    let mut streamed = Vec::new();
    for i in 0..10 {
        by_call.push(
            suite
                .account(&format!("Call {i}"), Segment::Smb, "ana")
                .await?,
        );
        streamed.push(
            suite
                .account(&format!("Stream {i}"), Segment::Enterprise, "ana")
                .await?,
        );
    }
    write_call_by_call(&mut client, &history(&by_call, "call")).await?;
    let events = history(&streamed, "stream");
    let batches = events.chunks(7).map(<[_]>::to_vec).collect();
    let acks = import(&mut client, batches).await?;
    assert!(acks.iter().all(|a| a.rejected == 0 && a.duplicates == 0));

    let smb = monthly_report(&mut client, "2024-01", "2026-03", Segment::Smb).await?;
    let enterprise = monthly_report(&mut client, "2024-01", "2026-03", Segment::Enterprise).await?;
    assert!(smb.iter().any(|p| minor(&p.churn_mrr) > 0));
    assert!(smb.iter().any(|p| p.reactivated_accounts > 0));
    assert_eq!(enterprise, smb);
    Ok(())
}

async fn a_batch_over_the_message_limit_ends_the_stream_with_resource_exhausted(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Revenue::start(db).await?;
    let mut client = suite.client();
    let acme = suite.account("Acme", Segment::Smb, "ana").await?;
    let small = vec![start("sub_1", &acme, day(2025, 1, 1), 1, 100)];
    let mut huge = start("sub_2", &acme, day(2025, 1, 1), 1, 100);
    huge.reason_code = "x".repeat(5 << 20);
    let outcome = import(&mut client, vec![small, vec![huge]]).await;
    let status = outcome
        .err()
        .and_then(|e| e.downcast::<tonic::Status>().ok())
        .map(|s| (s.code(), s.message().contains("4194304")));
    assert_eq!(status, Some((Code::ResourceExhausted, true)));
    // The first batch was committed before the stream ended.
    assert_eq!(all_movements(&mut client, &acme).await?.len(), 1);

    // More rows than a batch may hold: INVALID_ARGUMENT naming the limit.
    let many = vec![start("sub_3", &acme, day(2025, 1, 1), 1, 100); 5_001];
    let status = import(&mut client, vec![many])
        .await
        .err()
        .and_then(|e| e.downcast::<tonic::Status>().ok());
    assert_eq!(
        status.as_ref().map(tonic::Status::code),
        Some(Code::InvalidArgument)
    );
    assert!(status.is_some_and(|s| s.message().contains("5000")));
    Ok(())
}

async fn import_invoices(
    client: &mut RevenueClient,
    invoices: Vec<ImportedInvoice>,
) -> anyhow::Result<ImportInvoicesResponse> {
    let mut stream = client
        .import_invoices(futures::stream::iter([ImportInvoicesRequest { invoices }]))
        .await?
        .into_inner();
    let ack = stream.message().await?;
    anyhow::ensure!(stream.message().await?.is_none(), "one batch, one answer");
    ack.ok_or_else(|| anyhow::anyhow!("no acknowledgement"))
}

async fn imported_invoices_are_keyed_by_their_external_id_and_a_late_payment_reactivates(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Revenue::start(db).await?;
    let mut client = suite.client();
    let acme = suite.account("Acme", Segment::Smb, "ana").await?;
    import(
        &mut client,
        vec![vec![start("sub_1", &acme, day(2025, 1, 1), 2, 5_000)]],
    )
    .await?;
    let invoice = |ext: &str, due: Timestamp, paid: Option<Timestamp>| ImportedInvoice {
        external_id: ext.to_owned(),
        account_id: acme.clone(),
        subscription_id: "sub_1".to_owned(),
        amount: money("USD", 10_000),
        due_at: Some(due),
        paid_at: paid,
    };
    let nobody = ImportedInvoice {
        account_id: uuid::Uuid::now_v7().to_string(),
        ..invoice("in_x", day(2025, 2, 1), None)
    };
    let keyless = invoice("", day(2025, 2, 1), None);
    let ack = import_invoices(
        &mut client,
        vec![
            invoice("in_feb", day(2025, 2, 1), Some(day(2025, 2, 11))),
            invoice("in_mar", day(2025, 3, 1), None),
            nobody,
            keyless,
            invoice("in_feb", day(2025, 2, 1), Some(day(2025, 2, 11))),
        ],
    )
    .await?;
    assert_eq!(
        outcomes(&ack.results),
        vec![
            RECORDED,
            RECORDED,
            (ImportOutcome::Rejected, Code::NotFound, "account_id"),
            (
                ImportOutcome::Rejected,
                Code::InvalidArgument,
                "external_id"
            ),
            DUPLICATE,
        ]
    );
    let seen = |ms: &[bowtie_proto::revenue::Movement]| -> Vec<(i32, Option<Timestamp>)> {
        ms.iter().map(|m| (m.r#type, m.occurred_at)).collect()
    };
    // March's invoice unpaid 30 days past due: churned on 31 March.
    assert_eq!(
        seen(&all_movements(&mut client, &acme).await?),
        vec![
            (MovementType::New as i32, Some(day(2025, 1, 1))),
            (MovementType::Churn as i32, Some(day(2025, 3, 31))),
        ]
    );
    // Its payment, imported later under the same external id, reactivates.
    let ack = import_invoices(
        &mut client,
        vec![invoice("in_mar", day(2025, 3, 1), Some(day(2025, 4, 15)))],
    )
    .await?;
    assert_eq!(outcomes(&ack.results), vec![RECORDED]);
    assert_eq!(
        seen(&all_movements(&mut client, &acme).await?),
        vec![
            (MovementType::New as i32, Some(day(2025, 1, 1))),
            (MovementType::Churn as i32, Some(day(2025, 3, 31))),
            (MovementType::Reactivation as i32, Some(day(2025, 4, 15))),
        ]
    );
    Ok(())
}
