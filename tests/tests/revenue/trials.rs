//! Trial-to-paid conversion through the public API: trials that pay at
//! their end, one whose free terms are priced later, one cancelled in its
//! trial, one still running and a subscription without a trial; each
//! period's figures worked out by hand from the subscriptions written here.

use bowtie_proto::accounts::Account;
use bowtie_proto::common::Segment;
use bowtie_proto::revenue::{
    CancelSubscriptionRequest, Cut, CutDimension, GetTrialConversionRequest, Granularity,
    Subscription, TrialPeriod,
};
use bowtie_testkit::TestDatabase;
use bowtie_testkit::assert::invalid_field;
use bowtie_testkit::backend_test;
use bowtie_testkit::fixtures::create_account;
use bowtie_testkit::revenue::*;
use prost_types::Timestamp;

backend_test!(trials_convert_in_the_month_they_started_with_the_median_days_to_the_first_payment,);

/// (started, converted, in trial, not converted, rate, median days) of a period.
type Figures = (i64, i64, i64, i64, Option<f64>, Option<f64>);

fn figures(p: &TrialPeriod) -> (String, Figures) {
    (
        p.period.clone(),
        (
            p.trials_started,
            p.converted,
            p.in_trial,
            p.not_converted,
            p.conversion_rate,
            p.median_days_to_convert,
        ),
    )
}

fn request(start: &str, end: &str) -> GetTrialConversionRequest {
    GetTrialConversionRequest {
        start_month: start.to_owned(),
        end_month: end.to_owned(),
        ..GetTrialConversionRequest::default()
    }
}

async fn trials_convert_in_the_month_they_started_with_the_median_days_to_the_first_payment(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Revenue::start(db).await?;
    let mut client = suite.client();
    let account = async |name: &str, segment: Segment| {
        let a = Account {
            name: name.to_owned(),
            segment: segment as i32,
            ..Account::default()
        };
        anyhow::Ok(create_account(&mut suite.accounts.accounts(), a).await?.id)
    };
    let acme = account("Acme", Segment::Enterprise).await?;
    let beta = account("Beta", Segment::Smb).await?;
    let gamma = account("Gamma", Segment::Smb).await?;
    let delta = account("Delta", Segment::Smb).await?;
    let omega = account("Omega", Segment::Smb).await?;
    let trial = |account: &str, start: Timestamp, trial_end: Timestamp, price| Subscription {
        trial_end_at: Some(trial_end),
        ..monthly(account, start, 1, price)
    };
    let id = |s: tonic::Response<bowtie_proto::revenue::CreateSubscriptionResponse>| {
        s.into_inner().subscription.unwrap_or_default().id
    };
    // Acme (enterprise): a 14-day trial from 5 January that pays at its end.
    client
        .create_subscription(create(trial(
            &acme,
            day(2025, 1, 5),
            day(2025, 1, 19),
            5_000,
        )))
        .await?;
    // Beta: a trial from 10 January cancelled on the 20th, before it ended.
    let b = id(client
        .create_subscription(create(trial(
            &beta,
            day(2025, 1, 10),
            day(2025, 1, 24),
            5_000,
        )))
        .await?);
    client
        .cancel_subscription(CancelSubscriptionRequest {
            id: b,
            cancellation: cancellation(day(2025, 1, 20)),
            idempotency_key: String::new(),
            expected_version: None,
        })
        .await?;
    // Gamma: a trial from 20 January to 19 February on free terms, priced
    // on 26 February: its first payment comes 37 days after its start.
    let g = id(client
        .create_subscription(create(trial(&gamma, day(2025, 1, 20), day(2025, 2, 19), 0)))
        .await?);
    client
        .change_subscription(change(&g, day(2025, 2, 26), terms(1, 5_000, "USD")))
        .await?;
    // Delta: a 7-day trial from 3 February that pays.
    client
        .create_subscription(create(trial(
            &delta,
            day(2025, 2, 3),
            day(2025, 2, 10),
            5_000,
        )))
        .await?;
    // Omega: no trial, so no trial to count.
    client
        .create_subscription(create(monthly(&omega, day(2025, 1, 8), 1, 5_000)))
        .await?;

    let months = client
        .get_trial_conversion(request("2025-01", "2025-03"))
        .await?
        .into_inner();
    // January: Acme (14 days) and Gamma (37 days) paid, Beta did not: 2 of
    // 3, median (14 + 37) / 2 = 25.5. February: Delta paid after 7 days.
    assert_eq!(
        months.periods.iter().map(figures).collect::<Vec<_>>(),
        vec![
            (
                "2025-01".to_owned(),
                (3, 2, 0, 1, Some(2.0 / 3.0), Some(25.5))
            ),
            ("2025-02".to_owned(), (1, 1, 0, 0, Some(1.0), Some(7.0))),
            ("2025-03".to_owned(), (0, 0, 0, 0, None, None)),
        ]
    );
    // The quarter: 3 of 4, median of 7, 14 and 37 days.
    let quarter = client
        .get_trial_conversion(GetTrialConversionRequest {
            granularity: Granularity::Quarter as i32,
            ..request("2025-02", "2025-02")
        })
        .await?
        .into_inner();
    assert_eq!(
        quarter.periods.iter().map(figures).collect::<Vec<_>>(),
        vec![("2025-Q1".to_owned(), (4, 3, 0, 1, Some(0.75), Some(14.0)))]
    );
    // Only the enterprise accounts: Acme's trial.
    let enterprise = client
        .get_trial_conversion(GetTrialConversionRequest {
            cut: Some(Cut {
                dimension: CutDimension::Segment as i32,
                value: "enterprise".to_owned(),
                attribute: String::new(),
            }),
            ..request("2025-01", "2025-01")
        })
        .await?
        .into_inner();
    assert_eq!(
        enterprise.periods.iter().map(figures).collect::<Vec<_>>(),
        vec![("2025-01".to_owned(), (1, 1, 0, 0, Some(1.0), Some(14.0)))]
    );

    // A trial started a minute ago is still in its trial this month.
    let now = chrono::Utc::now();
    let minute_ago = Timestamp {
        seconds: now.timestamp() - 60,
        nanos: 0,
    };
    let in_ten_days = Timestamp {
        seconds: now.timestamp() + 10 * 86_400,
        nanos: 0,
    };
    client
        .create_subscription(create(trial(&omega, minute_ago, in_ten_days, 5_000)))
        .await?;
    let this_month = now.format("%Y-%m").to_string();
    let current = client
        .get_trial_conversion(request(&this_month, &this_month))
        .await?
        .into_inner();
    assert_eq!(
        current.periods.iter().map(figures).collect::<Vec<_>>(),
        vec![(this_month, (1, 0, 1, 0, Some(0.0), None))]
    );

    // Bad input names its field.
    invalid_field(
        client
            .get_trial_conversion(request("2025-03", "2025-01"))
            .await,
        "end_month",
    );
    invalid_field(
        client
            .get_trial_conversion(request("2025-13", "2025-01"))
            .await,
        "start_month",
    );
    let mut unknown_cut = request("2025-01", "2025-03");
    unknown_cut.cut = Some(Cut {
        dimension: 99,
        value: "x".to_owned(),
        attribute: String::new(),
    });
    invalid_field(
        client.get_trial_conversion(unknown_cut).await,
        "cut.dimension",
    );
    Ok(())
}
