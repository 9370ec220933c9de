//! The renewal book, renewal outcomes and optimistic concurrency on
//! subscription writes.

use bowtie_proto::common::Segment;
use bowtie_proto::revenue::{
    BillingInterval, CancelSubscriptionRequest, ListRenewalsRequest, RecordRenewalOutcomeRequest,
    RenewalOutcome, Subscription,
};
use bowtie_testkit::TestDatabase;
use bowtie_testkit::assert::status;
use bowtie_testkit::backend_test;
use bowtie_testkit::revenue::*;
use tonic::Code;

backend_test!(
    the_renewal_book_lists_terms_ending_in_the_window_with_forecast_and_outcome,
    a_write_based_on_a_stale_version_is_aborted,
);

async fn the_renewal_book_lists_terms_ending_in_the_window_with_forecast_and_outcome(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Revenue::start(db).await?;
    let mut client = suite.client();
    let account = suite.account("Acme", Segment::Enterprise, "ana").await?;
    let annual = |term_end| Subscription {
        billing_interval: BillingInterval::Year as i32,
        term_end_at: Some(term_end),
        ..monthly(&account, day(2025, 1, 1), 2, 600_000)
    };
    let mut ids = Vec::new();
    for term_end in [day(2026, 1, 1), day(2026, 2, 1), day(2026, 9, 1)] {
        let created = client.create_subscription(create(annual(term_end))).await?;
        ids.push(created.into_inner().subscription.unwrap_or_default().id);
    }
    client
        .cancel_subscription(CancelSubscriptionRequest {
            id: ids[1].clone(),
            cancellation: cancellation(day(2025, 12, 1)),
            idempotency_key: String::new(),
            expected_version: None,
        })
        .await?;
    client
        .record_renewal_outcome(RecordRenewalOutcomeRequest {
            subscription_id: ids[0].clone(),
            outcome: RenewalOutcome::RenewedWithExpansion as i32,
            decided_at: Some(day(2025, 12, 15)),
            idempotency_key: String::new(),
        })
        .await?;

    let book = client
        .list_renewals(ListRenewalsRequest {
            start_at: Some(day(2025, 12, 1)),
            end_at: Some(day(2026, 3, 1)),
            account_id: String::new(),
            page: None,
        })
        .await?
        .into_inner()
        .renewals;
    let listed: Vec<&str> = book.iter().map(|r| r.subscription_id.as_str()).collect();
    assert_eq!(listed, vec![ids[0].as_str(), ids[1].as_str()]);
    // 2 x 6,000.00 a year = 1,000.00 a month; 12,000.00 at stake, and the
    // default likelihood of 80% forecasts 9,600.00.
    assert_eq!(minor(&book[0].amount_at_stake), 1_200_000);
    assert_eq!(book[0].likelihood_basis_points, 8_000);
    assert_eq!(minor(&book[0].forecast), 960_000);
    assert_eq!(book[0].outcome, RenewalOutcome::RenewedWithExpansion as i32);
    assert_eq!(minor(&book[1].amount_at_stake), 0);
    assert_eq!(book[1].outcome, RenewalOutcome::Churned as i32);

    let without_term = client
        .create_subscription(create(monthly(&account, day(2025, 1, 1), 1, 100)))
        .await?
        .into_inner()
        .subscription
        .unwrap_or_default()
        .id;
    let refused = client
        .record_renewal_outcome(RecordRenewalOutcomeRequest {
            subscription_id: without_term,
            outcome: RenewalOutcome::Renewed as i32,
            decided_at: Some(day(2025, 12, 15)),
            idempotency_key: String::new(),
        })
        .await;
    status(refused, Code::FailedPrecondition);
    Ok(())
}

async fn a_write_based_on_a_stale_version_is_aborted(db: &TestDatabase) -> anyhow::Result<()> {
    let suite = Revenue::start(db).await?;
    let mut client = suite.client();
    let account = suite.account("Acme", Segment::Smb, "ana").await?;
    let created = client
        .create_subscription(create(monthly(&account, day(2025, 1, 1), 1, 1_000)))
        .await?
        .into_inner()
        .subscription
        .unwrap_or_default();
    let mut first = change(&created.id, day(2025, 2, 1), terms(2, 1_000, "USD"));
    first.expected_version = Some(created.version);
    let changed = client.change_subscription(first).await?.into_inner();
    assert_eq!(
        changed.subscription.map(|s| s.version),
        Some(created.version + 1)
    );
    let mut stale = change(&created.id, day(2025, 3, 1), terms(3, 1_000, "USD"));
    stale.expected_version = Some(created.version);
    status(client.change_subscription(stale).await, Code::Aborted);
    let movements = all_movements(&mut client, &account).await?;
    assert_eq!(movements.len(), 2);
    Ok(())
}
