//! What the other services' feeds tell scoring: the revenue feed's seats,
//! late payments and downgrades reach the health components.

use bowtie_proto::common::Segment;
use bowtie_proto::revenue::{Invoice, RecordInvoiceRequest};
use bowtie_proto::scoring::{Component, SignalType};
use bowtie_testkit::revenue::{self, Revenue, change, create, monthly, terms};
use bowtie_testkit::scoring::{
    ScoringClient, days_ago, health_when, record, signal, start_scoring,
};
use bowtie_testkit::{TestDatabase, WRITE_KEY, backend_test};

backend_test!(seats_late_payments_and_downgrades_from_revenue_shape_the_score);

fn component(h: &bowtie_proto::scoring::AccountHealth, c: Component) -> Option<(i32, String)> {
    h.components
        .iter()
        .find(|x| x.component == c as i32)
        .map(|x| (x.score, x.reason.clone()))
}

async fn seats_late_payments_and_downgrades_from_revenue_shape_the_score(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Revenue::start(db).await?;
    let mut settings = db.server_settings()?;
    settings.peers.accounts = suite.accounts.uri();
    settings.peers.revenue = suite.revenue.uri();
    let scoring = start_scoring(&settings).await?;
    let mut client: ScoringClient =
        bowtie_proto::scoring::scoring_service_client::ScoringServiceClient::new(
            scoring.with_key(WRITE_KEY),
        );
    let acme = suite.account("Acme", Segment::Smb, "ana").await?;
    let mut billing = suite.client();
    let subscription = billing
        .create_subscription(create(monthly(
            &acme,
            days_ago(100).unwrap_or_default(),
            20,
            5_000,
        )))
        .await?
        .into_inner()
        .subscription
        .ok_or_else(|| anyhow::anyhow!("no subscription"))?;
    billing
        .record_invoice(RecordInvoiceRequest {
            invoice: Some(Invoice {
                account_id: acme.clone(),
                amount: revenue::money("USD", 100_000),
                due_at: days_ago(20),
                paid_at: days_ago(10),
                ..Invoice::default()
            }),
            idempotency_key: String::new(),
        })
        .await?;
    record(
        &mut client,
        vec![signal("au-1", &acme, SignalType::ActiveUsers, 7, 1)],
    )
    .await?;
    // 7 active users on 20 seats = 35; one late payment: 100 - 40 = 60.
    // Health follows each feed event as it commits; the profile and the day
    // cells are read side by side, so wait for the state after every event.
    let h = health_when(&mut client, &acme, "seats and the late payment", |h| {
        component(h, Component::Breadth).is_some_and(|c| c.0 == 35)
            && component(h, Component::PaymentPunctuality).is_some_and(|c| c.0 == 60)
            && h.mrr_minor_units == 100_000
    })
    .await?;
    assert_eq!(
        component(&h, Component::PaymentPunctuality).map(|c| c.1),
        Some("1 late payment in 180 days".to_owned())
    );
    assert_eq!(
        component(&h, Component::PlanChanges),
        Some((100, "no downgrade in 180 days".to_owned()))
    );
    assert_eq!(h.mrr_minor_units, 100_000, "20 seats at 50.00");

    // A downgrade to 10 seats: plan changes 100 - 50 = 50, breadth 7 / 10 = 70.
    billing
        .change_subscription(change(
            &subscription.id,
            days_ago(5).unwrap_or_default(),
            terms(10, 5_000, "USD"),
        ))
        .await?;
    let h = health_when(&mut client, &acme, "the downgrade", |h| {
        component(h, Component::PlanChanges).is_some_and(|c| c.0 == 50)
            && component(h, Component::Breadth).is_some_and(|c| c.0 == 70)
            && h.mrr_minor_units == 50_000
    })
    .await?;
    assert_eq!(h.mrr_minor_units, 50_000);
    Ok(())
}
