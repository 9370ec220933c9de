//! The change feed the funnel and scoring services consume: event types,
//! aggregate, payloads, and retraction of movements revised by a back-dated
//! change.

use bowtie_proto::common::Segment;
use bowtie_proto::revenue::{
    CancelSubscriptionRequest, Invoice, Movement, MovementType, RecordInvoiceRequest,
    RecordRenewalOutcomeRequest, Renewal, RenewalOutcome, Subscription,
};
use bowtie_testkit::TestDatabase;
use bowtie_testkit::backend_test;
use bowtie_testkit::revenue::*;

backend_test!(the_feed_announces_subscriptions_movements_renewals_and_late_invoices);

async fn the_feed_announces_subscriptions_movements_renewals_and_late_invoices(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Revenue::start(db).await?;
    let mut client = suite.client();
    let account = suite.account("Acme", Segment::Smb, "ana").await?;
    let id = client
        .create_subscription(create(Subscription {
            term_end_at: Some(day(2026, 1, 1)),
            ..monthly(&account, day(2025, 1, 1), 2, 5_000)
        }))
        .await?
        .into_inner()
        .subscription
        .unwrap_or_default()
        .id;
    client
        .change_subscription(change(&id, day(2025, 3, 1), terms(5, 5_000, "USD")))
        .await?;
    // Back-dated: seats went to 3 in February, before the March change.
    client
        .change_subscription(change(&id, day(2025, 2, 1), terms(3, 5_000, "USD")))
        .await?;
    client
        .cancel_subscription(CancelSubscriptionRequest {
            id: id.clone(),
            cancellation: cancellation(day(2025, 6, 1)),
            idempotency_key: String::new(),
            expected_version: None,
        })
        .await?;
    let invoice = |paid: bowtie_proto::revenue::Invoice| RecordInvoiceRequest {
        invoice: Some(paid),
        idempotency_key: String::new(),
    };
    let on_time = Invoice {
        account_id: account.clone(),
        subscription_id: id.clone(),
        amount: money("USD", 10_000),
        due_at: Some(day(2025, 2, 1)),
        paid_at: Some(day(2025, 1, 30)),
        ..Invoice::default()
    };
    let recorded = client
        .record_invoice(invoice(on_time.clone()))
        .await?
        .into_inner();
    assert!(!recorded.invoice.unwrap_or_default().late);
    // Late, but paid within the past-due policy's 30 days.
    let late = Invoice {
        paid_at: Some(day(2025, 2, 20)),
        ..on_time
    };
    client.record_invoice(invoice(late)).await?;
    client
        .record_renewal_outcome(RecordRenewalOutcomeRequest {
            subscription_id: id.clone(),
            outcome: RenewalOutcome::Churned as i32,
            decided_at: Some(day(2025, 5, 20)),
            idempotency_key: String::new(),
        })
        .await?;

    let mut feed = watch(&mut client, 0).await?;
    let events = next_events(&mut feed, 12, 10).await?;
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        vec![
            "subscription.created",
            "movement.recorded",
            "subscription.changed",
            "movement.recorded",
            "subscription.changed",
            "movement.retracted",
            "movement.recorded",
            "movement.recorded",
            "subscription.cancelled",
            "movement.recorded",
            "invoice.late",
            "renewal.recorded",
        ]
    );
    assert!(
        events
            .iter()
            .all(|e| e.aggregate_type == "account" && e.aggregate_id == account)
    );
    let movement = |i: usize| payload::<Movement>(&events[i]);
    let first = movement(1)?;
    assert_eq!(first.r#type, MovementType::New as i32);
    assert_eq!(
        (minor(&first.mrr_before), minor(&first.mrr_after)),
        (0, 10_000)
    );
    assert_eq!(first.occurred_at, Some(day(2025, 1, 1)));
    assert_eq!(first.account_id, account);
    let retracted = movement(5)?;
    assert_eq!(retracted.occurred_at, Some(day(2025, 3, 1)));
    assert_eq!(minor(&retracted.amount), 15_000);
    let revised: Vec<(Option<prost_types::Timestamp>, i64)> = [movement(6)?, movement(7)?]
        .into_iter()
        .map(|m| (m.occurred_at, minor(&m.amount)))
        .collect();
    assert_eq!(
        revised,
        vec![
            (Some(day(2025, 2, 1)), 5_000),
            (Some(day(2025, 3, 1)), 10_000)
        ]
    );
    let churn = movement(9)?;
    assert_eq!(churn.r#type, MovementType::Churn as i32);
    assert_eq!(minor(&churn.amount), -25_000);
    let changed = payload::<Subscription>(&events[2])?;
    assert_eq!(changed.id, id);
    let late = payload::<Invoice>(&events[10])?;
    assert!(late.late);
    assert_eq!(late.paid_at, Some(day(2025, 2, 20)));
    let renewal = payload::<Renewal>(&events[11])?;
    assert_eq!(renewal.outcome, RenewalOutcome::Churned as i32);
    assert_eq!(renewal.subscription_id, id);
    Ok(())
}
