//! The churn model over the API: nothing to report before training, too
//! little history is a clear FAILED_PRECONDITION, only admins train, and a
//! model trained on real churn history (revenue cancellations, usage
//! signals) reports its hold-out metrics, ranks usage first and persists;
//! revenue's renewal forecast then takes its likelihood from that risk.

use bowtie_proto::common::Segment;
use bowtie_proto::revenue::revenue_service_client::RevenueServiceClient;
use bowtie_proto::revenue::{CancelSubscriptionRequest, ListRenewalsRequest};
use bowtie_proto::scoring::scoring_service_client::ScoringServiceClient;
use bowtie_proto::scoring::{
    GetChurnRiskRequest, GetModelRequest, ModelInfo, ReferenceSource, TrainModelRequest,
};
use bowtie_testkit::assert::invalid_field;
use bowtie_testkit::revenue::{self, Revenue, create, monthly};
use bowtie_testkit::scoring::{Scoring, ScoringClient, days_ago, logins, record, start_scoring};
use bowtie_testkit::{ADMIN_KEY, TestDatabase, TestServer, backend_test, within};
use tonic::Code;

backend_test!(without_churn_history_there_is_no_model_to_train_or_ask);

async fn without_churn_history_there_is_no_model_to_train_or_ask(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Scoring::start(db).await?;
    let acme = suite.account("Acme", Segment::Smb).await?;
    record(&mut suite.client(), logins("l", &acme, 3, 3)).await?;
    let model = suite
        .reader()
        .get_model(GetModelRequest {})
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(model, Some(Code::FailedPrecondition));
    let risk = suite
        .reader()
        .get_churn_risk(GetChurnRiskRequest {
            account_id: acme.clone(),
        })
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(risk, Some(Code::FailedPrecondition));
    let train = suite
        .admin()
        .train_model(TrainModelRequest {
            seed: 0,
            ..Default::default()
        })
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("trained without history"))?;
    assert_eq!(train.code(), Code::FailedPrecondition);
    assert!(
        train.message().contains("0 labelled accounts"),
        "{}",
        train.message()
    );
    let denied = suite
        .client()
        .train_model(TrainModelRequest {
            seed: 0,
            ..Default::default()
        })
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(denied, Some(Code::PermissionDenied));
    Ok(())
}

backend_test!(
    a_model_trained_on_the_system_s_own_churn_history_ranks_falling_usage_first_and_survives_a_restart,
    a_history_that_ended_eleven_months_ago_is_labelled_as_of_its_own_end,
);

async fn a_model_trained_on_the_system_s_own_churn_history_ranks_falling_usage_first_and_survives_a_restart(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Revenue::start(db).await?;
    let mut settings = db.server_settings()?;
    settings.peers.accounts = suite.accounts.uri();
    settings.peers.revenue = suite.revenue.uri();
    let scoring = start_scoring(&settings).await?;
    let client = |s: &TestServer| ScoringServiceClient::new(s.with_key(ADMIN_KEY));
    let mut admin = client(&scoring);
    let stayer = churn_history(&suite, &mut admin, 0).await?;
    let model = trained(&mut admin, None).await?;
    // 30% of each label held out, rounded up: 4 of 12 churners, 6 of 18 stayers.
    assert_eq!((model.training_examples, model.holdout_examples), (20, 10));
    assert!(
        model.holdout_auc > 0.8,
        "hold-out AUC {}",
        model.holdout_auc
    );
    assert!(
        model.holdout_log_loss < 0.5,
        "log loss {}",
        model.holdout_log_loss
    );
    assert!(!model.calibration.is_empty());
    assert_eq!(
        model.calibration.iter().map(|b| b.count).sum::<i32>(),
        model.holdout_examples
    );
    assert_eq!(model.coefficients[0].feature, "usage_trend");
    assert!(
        model.coefficients[0].coefficient < 0.0,
        "more usage, less risk"
    );

    let risk = admin
        .get_churn_risk(GetChurnRiskRequest {
            account_id: stayer.clone(),
        })
        .await?
        .into_inner();
    assert!((0.0..=1.0).contains(&risk.probability));
    assert_eq!(
        (risk.model_id.as_str(), risk.horizon_days),
        (model.id.as_str(), 90)
    );

    // An annual contract up for renewal in 60 days: a revenue replica that
    // knows where scoring is forecasts it at 1 - churn risk; the first
    // replica, pointed at no scoring, falls back to the configured default.
    let mut billing = suite.client();
    let renewing = suite.account("Renewing", Segment::Smb, "ana").await?;
    record(&mut admin, logins("renewing", &renewing, 10, 20)).await?;
    let mut annual = monthly(&renewing, days_ago(305).unwrap_or_default(), 10, 12_000);
    annual.billing_interval = bowtie_proto::revenue::BillingInterval::Year as i32;
    annual.term_end_at = days_ago(-60);
    billing.create_subscription(create(annual)).await?;
    let mut with_scoring = settings.clone();
    with_scoring.peers.scoring = scoring.uri();
    let replica = TestServer::start_service(
        revenue::REVENUE_SERVICE,
        &with_scoring,
        bowtie_revenue::build,
    )
    .await?;
    let book = ListRenewalsRequest {
        start_at: days_ago(0),
        end_at: days_ago(-90),
        account_id: renewing.clone(),
        page: None,
    };
    // The risk moves while scoring takes in the new contract from the
    // revenue feed: compare once it holds still around the renewal query.
    let mut renewals = RevenueServiceClient::new(replica.with_key(ADMIN_KEY));
    let (scored, probability) = within(20, "the churn risk to settle", async {
        loop {
            let ask = GetChurnRiskRequest {
                account_id: renewing.clone(),
            };
            let before = admin.get_churn_risk(ask.clone()).await?.into_inner();
            let scored = renewals.list_renewals(book.clone()).await?.into_inner();
            let after = admin.get_churn_risk(ask).await?.into_inner();
            if before.probability == after.probability {
                return anyhow::Ok((scored.renewals, after.probability));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await??;
    assert_eq!(scored.len(), 1);
    let expected = ((1.0 - probability) * 10_000.0).round() as i32;
    assert_eq!(
        (
            scored[0].likelihood_basis_points,
            scored[0].likelihood_from_scoring
        ),
        (expected, true)
    );
    let amount = revenue::minor(&scored[0].amount_at_stake);
    assert_eq!(
        revenue::minor(&scored[0].forecast),
        (amount * i64::from(expected) * 2 + 10_000) / 20_000
    );
    let default = billing.list_renewals(book).await?.into_inner().renewals;
    assert_eq!(
        (
            default[0].likelihood_basis_points,
            default[0].likelihood_from_scoring
        ),
        (8_000, false)
    );

    scoring.stop().await?;
    let scoring = start_scoring(&settings).await?;
    let again = client(&scoring)
        .get_model(GetModelRequest {})
        .await?
        .into_inner()
        .model
        .ok_or_else(|| anyhow::anyhow!("no model"))?;
    assert_eq!(again, model, "the model and its metrics persist");
    Ok(())
}

/// Trains (seed 7) as of `reference` until all 30 customers are labelled.
async fn trained(
    scoring: &mut ScoringClient,
    reference: Option<prost_types::Timestamp>,
) -> anyhow::Result<ModelInfo> {
    within(30, "the revenue feed to label every customer", async {
        loop {
            if let Ok(r) = scoring
                .train_model(TrainModelRequest {
                    seed: 7,
                    reference_time: reference,
                })
                .await
                && let Some(m) = r.into_inner().model
                && m.training_examples + m.holdout_examples == 30
                && (m.churn_rate - 0.4).abs() < 1e-9
            {
                return anyhow::Ok(m);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await?
}

async fn a_history_that_ended_eleven_months_ago_is_labelled_as_of_its_own_end(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Revenue::start(db).await?;
    let mut settings = db.server_settings()?;
    settings.peers.accounts = suite.accounts.uri();
    settings.peers.revenue = suite.revenue.uri();
    let scoring = start_scoring(&settings).await?;
    let mut admin = ScoringServiceClient::new(scoring.with_key(ADMIN_KEY));
    let before = days_ago(330).unwrap_or_default().seconds;
    churn_history(&suite, &mut admin, 330).await?;
    let after = days_ago(330).unwrap_or_default().seconds;

    // By default the history is seen as of its last event, the stayers'
    // logins 330 days ago: it learns what the same history ending today
    // teaches, falling usage first.
    let model = trained(&mut admin, None).await?;
    assert_eq!(
        model.reference_source(),
        ReferenceSource::LastEvent,
        "{model:?}"
    );
    let reference = model.reference_time.unwrap_or_default().seconds;
    assert!(
        (before..=after).contains(&reference),
        "reference {reference} not the last login ({before}..={after})"
    );
    assert!(
        model.holdout_auc > 0.8,
        "hold-out AUC {}",
        model.holdout_auc
    );
    assert_eq!(model.coefficients[0].feature, "usage_trend");
    assert!(model.coefficients[0].coefficient < 0.0);

    // As of today, which the caller may ask for, the stayers are seen when
    // none of them did anything any more: that model learns when accounts
    // were observed (tenure), not how they behaved, and says what it used.
    let today = days_ago(0);
    let as_of_today = trained(&mut admin, today).await?;
    assert_eq!(
        (as_of_today.reference_source(), as_of_today.reference_time),
        (ReferenceSource::Requested, today)
    );
    assert_eq!(as_of_today.coefficients[0].feature, "tenure_days");

    // The future is not history.
    invalid_field(
        admin
            .train_model(TrainModelRequest {
                seed: 7,
                reference_time: days_ago(-1),
            })
            .await,
        "reference_time",
    );
    Ok(())
}

/// The churn history the model tests train on, `ago` days before today:
/// 30 customers who started paying 300..503 days before that; 12 of them
/// churned 30 days before it. Seen as of their features' instants
/// (churners 75 days before, stayers 90 days before), churners' usage fell
/// from 10 to 1 logins, stayers' held at 10. When `ago` is not 0 every
/// stayer logs in once `ago` days ago, the history's last event. Answers a
/// stayer.
async fn churn_history(
    suite: &Revenue,
    scoring: &mut ScoringClient,
    ago: i64,
) -> anyhow::Result<String> {
    let mut billing = suite.client();
    let mut stayer = String::new();
    for i in 0..30i64 {
        let id = suite
            .account(&format!("Customer {i}"), Segment::Smb, "ana")
            .await?;
        let churner = i % 5 < 2;
        let sub = billing
            .create_subscription(create(monthly(
                &id,
                days_ago(ago + 300 + 7 * i).unwrap_or_default(),
                5,
                2_000,
            )))
            .await?
            .into_inner()
            .subscription
            .ok_or_else(|| anyhow::anyhow!("no subscription"))?;
        let mut batch = logins(&format!("p{i}"), &id, 10, ago + 125);
        batch.extend(logins(
            &format!("r{i}"),
            &id,
            if churner { 1 } else { 10 },
            ago + 95,
        ));
        if !churner && ago != 0 {
            batch.extend(logins(&format!("t{i}"), &id, 1, ago));
        }
        record(scoring, batch).await?;
        if churner {
            billing
                .cancel_subscription(CancelSubscriptionRequest {
                    id: sub.id,
                    cancellation: revenue::cancellation(days_ago(ago + 30).unwrap_or_default()),
                    ..Default::default()
                })
                .await?;
        } else {
            stayer = id;
        }
    }
    Ok(stayer)
}
