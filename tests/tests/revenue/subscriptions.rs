//! Subscriptions through their life (create, change, cancel), the movements
//! they produce, and every way a write is refused with nothing written.

use bowtie_proto::common::Segment;
use bowtie_proto::revenue::{
    BillingInterval, CancelSubscriptionRequest, FxRate, MovementType, RecordInvoiceRequest,
    SetFxRateRequest, Subscription,
};
use bowtie_testkit::TestDatabase;
use bowtie_testkit::assert::{invalid_field, status};
use bowtie_testkit::backend_test;
use bowtie_testkit::revenue::*;
use tonic::Code;

backend_test!(
    a_subscription_lifecycle_records_each_movement_type,
    an_annual_discounted_subscription_counts_a_twelfth_of_its_net_price,
    a_foreign_currency_subscription_converts_at_the_configured_rate,
    an_unknown_account_is_not_found_and_nothing_is_written,
    when_accounts_is_down_writes_are_unavailable_and_nothing_is_written,
    a_replayed_idempotency_key_returns_the_first_result_and_another_payload_is_refused,
    bad_subscription_input_is_refused_naming_the_field,
    a_change_before_the_start_is_invalid_and_a_second_cancel_is_a_failed_precondition,
    an_invoice_unpaid_thirty_days_past_due_churns_until_its_payment_reactivates_it,
);

async fn a_subscription_lifecycle_records_each_movement_type(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Revenue::start(db).await?;
    let mut client = suite.client();
    let account = suite.account("Acme", Segment::Smb, "ana").await?;
    let created = client
        .create_subscription(create(monthly(&account, day(2025, 1, 10), 2, 5_000)))
        .await?
        .into_inner()
        .subscription
        .unwrap_or_default();
    client
        .change_subscription(change(&created.id, day(2025, 2, 1), terms(5, 5_000, "USD")))
        .await?;
    client
        .change_subscription(change(&created.id, day(2025, 3, 1), terms(4, 5_000, "USD")))
        .await?;
    client
        .cancel_subscription(CancelSubscriptionRequest {
            id: created.id.clone(),
            cancellation: cancellation(day(2025, 4, 1)),
            idempotency_key: String::new(),
            expected_version: None,
        })
        .await?;
    client
        .create_subscription(create(monthly(&account, day(2025, 6, 1), 1, 7_000)))
        .await?;

    let movements = all_movements(&mut client, &account).await?;
    let seen: Vec<(i32, i64)> = movements
        .iter()
        .map(|m| (m.r#type, minor(&m.amount)))
        .collect();
    assert_eq!(
        seen,
        vec![
            (MovementType::New as i32, 10_000),
            (MovementType::Expansion as i32, 15_000),
            (MovementType::Contraction as i32, -5_000),
            (MovementType::Churn as i32, -20_000),
            (MovementType::Reactivation as i32, 7_000),
        ]
    );
    let months = monthly_report(&mut client, "2025-01", "2025-06", Segment::Unspecified).await?;
    let ends: Vec<i64> = months.iter().map(|p| minor(&p.end_mrr)).collect();
    assert_eq!(ends, vec![10_000, 25_000, 20_000, 0, 0, 7_000]);
    assert_eq!(minor(&months[3].churn_mrr), 20_000);
    assert_eq!(months[3].churned_accounts, 1);
    assert_eq!(months[3].customer_churn_rate, 1.0);
    assert_eq!(minor(&months[5].end_arr), 84_000);
    Ok(())
}

async fn an_annual_discounted_subscription_counts_a_twelfth_of_its_net_price(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Revenue::start(db).await?;
    let mut client = suite.client();
    let account = suite.account("Annual", Segment::MidMarket, "bo").await?;
    let mut yearly = monthly(&account, day(2025, 1, 1), 1, 120_000);
    yearly.billing_interval = BillingInterval::Year as i32;
    if let Some(t) = yearly.terms.as_mut() {
        t.discount_basis_points = 2_500;
    }
    let created = client
        .create_subscription(create(yearly))
        .await?
        .into_inner();
    // 1,200.00 a year less 25% = 900.00 a year = 75.00 a month.
    let movements = all_movements(&mut client, &account).await?;
    assert_eq!(movements.len(), 1);
    assert_eq!(minor(&movements[0].amount), 7_500);
    assert_eq!(minor(&created.subscription.unwrap_or_default().mrr), 7_500);
    Ok(())
}

async fn a_foreign_currency_subscription_converts_at_the_configured_rate(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Revenue::start(db).await?;
    let account = suite.account("Euro", Segment::Enterprise, "cy").await?;
    let rate = |at, rate: &str| SetFxRateRequest {
        rate: Some(FxRate {
            currency_code: "EUR".into(),
            effective_at: Some(at),
            rate: rate.into(),
        }),
        idempotency_key: String::new(),
    };
    status(
        suite
            .client()
            .set_fx_rate(rate(day(2025, 1, 1), "1.1"))
            .await,
        Code::PermissionDenied,
    );
    let mut admin = suite.admin();
    admin.set_fx_rate(rate(day(2025, 1, 1), "1.1")).await?;
    admin.set_fx_rate(rate(day(2025, 3, 1), "1.25")).await?;
    let mut client = suite.client();
    let mut euro = monthly(&account, day(2025, 1, 15), 1, 10_000);
    euro.terms = Some(terms(1, 10_000, "EUR"));
    let id = client
        .create_subscription(create(euro))
        .await?
        .into_inner()
        .subscription
        .unwrap_or_default()
        .id;
    client
        .change_subscription(change(&id, day(2025, 4, 1), terms(2, 10_000, "EUR")))
        .await?;
    let movements = all_movements(&mut client, &account).await?;
    let amounts: Vec<i64> = movements.iter().map(|m| minor(&m.amount)).collect();
    // 100.00 EUR at 1.1, then +100.00 EUR at 1.25; the rate change in March
    // alone moves nothing.
    assert_eq!(amounts, vec![11_000, 12_500]);
    assert!(
        movements
            .iter()
            .all(|m| m.amount.as_ref().is_some_and(|a| a.currency_code == "USD"))
    );

    // A corrected January rate re-values what was recorded at that rate:
    // the first movement becomes 100.00 EUR at 1.2, the April one keeps 1.25.
    admin.set_fx_rate(rate(day(2025, 1, 1), "1.2")).await?;
    let revised: Vec<i64> = all_movements(&mut client, &account)
        .await?
        .iter()
        .map(|m| minor(&m.amount))
        .collect();
    assert_eq!(revised, vec![12_000, 12_500]);
    let report = monthly_report(&mut client, "2025-01", "2025-04", Segment::Unspecified).await?;
    assert_eq!(minor(&report[0].new_mrr), 12_000);
    assert_eq!(minor(&report[3].end_mrr), 24_500);

    let without_rate = client
        .create_subscription(create(Subscription {
            terms: Some(terms(1, 100, "GBP")),
            ..monthly(&account, day(2025, 1, 1), 1, 100)
        }))
        .await;
    status(without_rate, Code::FailedPrecondition);
    Ok(())
}

async fn an_unknown_account_is_not_found_and_nothing_is_written(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Revenue::start(db).await?;
    let mut client = suite.client();
    let stranger = uuid::Uuid::now_v7().to_string();
    let result = client
        .create_subscription(create(monthly(&stranger, day(2025, 1, 1), 1, 1_000)))
        .await;
    status(result, Code::NotFound);
    assert!(all_movements(&mut client, "").await?.is_empty());
    Ok(())
}

async fn when_accounts_is_down_writes_are_unavailable_and_nothing_is_written(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Revenue::start(db).await?;
    let mut client = suite.client();
    let account = suite.account("Acme", Segment::Smb, "ana").await?;
    let Revenue { accounts, revenue } = suite;
    let _accounts_port = accounts.stop_and_keep_port().await?;
    let result = client
        .create_subscription(create(monthly(&account, day(2025, 1, 1), 1, 1_000)))
        .await;
    status(result, Code::Unavailable);
    let result = client
        .record_invoice(RecordInvoiceRequest {
            invoice: Some(bowtie_proto::revenue::Invoice {
                account_id: account.clone(),
                amount: money("USD", 1_000),
                due_at: Some(day(2025, 1, 1)),
                ..Default::default()
            }),
            idempotency_key: String::new(),
        })
        .await;
    status(result, Code::Unavailable);
    assert!(all_movements(&mut client, "").await?.is_empty());
    let mut feed = watch(&mut client, 0).await?;
    let nothing = bowtie_testkit::within(1, "an event", feed.message()).await;
    assert!(nothing.is_err(), "the feed has an event: {nothing:?}");
    drop(revenue);
    Ok(())
}

async fn a_replayed_idempotency_key_returns_the_first_result_and_another_payload_is_refused(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Revenue::start(db).await?;
    let mut client = suite.client();
    let account = suite.account("Acme", Segment::Smb, "ana").await?;
    let mut request = create(monthly(&account, day(2025, 1, 1), 3, 1_000));
    request.idempotency_key = "import-42".into();
    let first = client
        .create_subscription(request.clone())
        .await?
        .into_inner();
    let again = client
        .create_subscription(request.clone())
        .await?
        .into_inner();
    assert_eq!(first, again);
    let mut other = request.clone();
    other.subscription = Some(monthly(&account, day(2025, 1, 1), 4, 1_000));
    invalid_field(client.create_subscription(other).await, "idempotency_key");
    let movements = all_movements(&mut client, &account).await?;
    assert_eq!(movements.len(), 1);
    assert_eq!(minor(&movements[0].amount), 3_000);
    Ok(())
}

async fn bad_subscription_input_is_refused_naming_the_field(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Revenue::start(db).await?;
    let mut client = suite.client();
    let account = suite.account("Acme", Segment::Smb, "ana").await?;
    let good = || monthly(&account, day(2025, 1, 1), 1, 1_000);
    let cases: Vec<(Subscription, &str)> = vec![
        (
            Subscription {
                terms: Some(terms(-1, 1_000, "USD")),
                ..good()
            },
            "subscription.terms.quantity",
        ),
        (
            Subscription {
                terms: Some(terms(1, -1, "USD")),
                ..good()
            },
            "subscription.terms.unit_price.minor_units",
        ),
        (
            Subscription {
                terms: Some(terms(1, 1_000, "XYZ")),
                ..good()
            },
            "subscription.terms.unit_price.currency_code",
        ),
        (
            Subscription {
                term_end_at: Some(day(2024, 12, 1)),
                ..good()
            },
            "subscription.term_end_at",
        ),
        (
            Subscription {
                billing_interval: 0,
                ..good()
            },
            "subscription.billing_interval",
        ),
        (
            Subscription {
                account_id: "not-a-uuid".into(),
                ..good()
            },
            "subscription.account_id",
        ),
    ];
    for (subscription, field) in cases {
        invalid_field(
            client.create_subscription(create(subscription)).await,
            field,
        );
    }
    assert!(all_movements(&mut client, "").await?.is_empty());
    Ok(())
}

async fn a_change_before_the_start_is_invalid_and_a_second_cancel_is_a_failed_precondition(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Revenue::start(db).await?;
    let mut client = suite.client();
    let account = suite.account("Acme", Segment::Smb, "ana").await?;
    let id = client
        .create_subscription(create(monthly(&account, day(2025, 3, 1), 1, 1_000)))
        .await?
        .into_inner()
        .subscription
        .unwrap_or_default()
        .id;
    invalid_field(
        client
            .change_subscription(change(&id, day(2025, 2, 1), terms(2, 1_000, "USD")))
            .await,
        "effective_at",
    );
    invalid_field(
        client
            .change_subscription(change(&id, day(2025, 4, 1), terms(2, 1_000, "EUR")))
            .await,
        "terms.unit_price.currency_code",
    );
    let cancel = |reason: &str| CancelSubscriptionRequest {
        id: id.clone(),
        cancellation: cancellation(day(2025, 5, 1)).map(|mut c| {
            c.reason_code = reason.to_owned();
            c
        }),
        idempotency_key: String::new(),
        expected_version: None,
    };
    invalid_field(
        client.cancel_subscription(cancel("astrology")).await,
        "cancellation.reason_code",
    );
    client.cancel_subscription(cancel("budget")).await?;
    status(
        client.cancel_subscription(cancel("budget")).await,
        Code::FailedPrecondition,
    );
    let kinds: Vec<i32> = all_movements(&mut client, &account)
        .await?
        .iter()
        .map(|m| m.r#type)
        .collect();
    assert_eq!(
        kinds,
        vec![MovementType::New as i32, MovementType::Churn as i32]
    );
    Ok(())
}

async fn an_invoice_unpaid_thirty_days_past_due_churns_until_its_payment_reactivates_it(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Revenue::start(db).await?;
    let mut client = suite.client();
    let account = suite.account("Acme", Segment::Smb, "ana").await?;
    let sub = client
        .create_subscription(create(monthly(&account, day(2025, 1, 1), 2, 5_000)))
        .await?
        .into_inner()
        .subscription
        .unwrap_or_default();
    let record =
        |due: (i32, u32, u32), paid: Option<(i32, u32, u32)>, ext: &str| RecordInvoiceRequest {
            invoice: Some(bowtie_proto::revenue::Invoice {
                account_id: account.clone(),
                subscription_id: sub.id.clone(),
                amount: money("USD", 10_000),
                due_at: Some(day(due.0, due.1, due.2)),
                paid_at: paid.map(|p| day(p.0, p.1, p.2)),
                external_id: ext.to_owned(),
                ..Default::default()
            }),
            idempotency_key: String::new(),
        };
    // February's invoice is paid 10 days late: within the policy, no movement.
    client
        .record_invoice(record((2025, 2, 1), Some((2025, 2, 11)), "in_feb"))
        .await?;
    // March's fails: unpaid 30 days after 1 March, the subscription churns on 31 March.
    client
        .record_invoice(record((2025, 3, 1), None, "in_mar"))
        .await?;
    let seen = |ms: &[bowtie_proto::revenue::Movement]| -> Vec<(i32, i64, Option<prost_types::Timestamp>)> {
        ms.iter()
            .map(|m| (m.r#type, minor(&m.amount), m.occurred_at))
            .collect()
    };
    assert_eq!(
        seen(&all_movements(&mut client, &account).await?),
        vec![
            (MovementType::New as i32, 10_000, Some(day(2025, 1, 1))),
            (MovementType::Churn as i32, -10_000, Some(day(2025, 3, 31))),
        ]
    );
    // Paid on 15 April (the same invoice, by its external id): reactivated then.
    let paid = client
        .record_invoice(record((2025, 3, 1), Some((2025, 4, 15)), "in_mar"))
        .await?
        .into_inner()
        .invoice
        .unwrap_or_default();
    assert_eq!(paid.paid_at, Some(day(2025, 4, 15)));
    assert!(paid.late);
    assert_eq!(
        seen(&all_movements(&mut client, &account).await?),
        vec![
            (MovementType::New as i32, 10_000, Some(day(2025, 1, 1))),
            (MovementType::Churn as i32, -10_000, Some(day(2025, 3, 31))),
            (
                MovementType::Reactivation as i32,
                10_000,
                Some(day(2025, 4, 15))
            ),
        ]
    );
    let months = monthly_report(&mut client, "2025-01", "2025-04", Segment::Unspecified).await?;
    let ends: Vec<i64> = months.iter().map(|p| minor(&p.end_mrr)).collect();
    assert_eq!(ends, vec![10_000, 10_000, 0, 10_000]);
    // Recording the paid invoice again changes nothing.
    client
        .record_invoice(record((2025, 3, 1), Some((2025, 4, 20)), "in_mar"))
        .await?;
    assert_eq!(all_movements(&mut client, &account).await?.len(), 3);
    Ok(())
}
