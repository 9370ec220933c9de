//! A customer success manager's book in revenue: retention cut by the
//! account's CSM (docs/design.md section 6.4) and the renewal book summed
//! per CSM or per owner, with figures worked out by hand.

use bowtie_proto::accounts::Account;
use bowtie_proto::common::Segment;
use bowtie_proto::revenue::{
    BillingInterval, CancelSubscriptionRequest, CsmRetention, GetRenewalSummaryRequest,
    GetRetentionRequest, RecordRenewalOutcomeRequest, RenewalGrouping, RenewalOutcome, RenewalRate,
    RenewalSummary, Subscription,
};
use bowtie_testkit::TestDatabase;
use bowtie_testkit::assert::invalid_field;
use bowtie_testkit::backend_test;
use bowtie_testkit::fixtures::create_account;
use bowtie_testkit::revenue::*;

backend_test!(
    retention_breaks_down_by_the_csm_of_each_account,
    the_renewal_book_sums_per_csm_and_per_owner,
    the_renewal_rate_splits_what_passed_renewals_kept_from_what_they_added,
);

/// Creates an account with an owner and a CSM; returns its id.
async fn account(suite: &Revenue, name: &str, owner: &str, csm: &str) -> anyhow::Result<String> {
    let account = Account {
        name: name.to_owned(),
        segment: Segment::Smb as i32,
        owner: owner.to_owned(),
        csm: csm.to_owned(),
        ..Account::default()
    };
    Ok(create_account(&mut suite.accounts.accounts(), account)
        .await?
        .id)
}

/// (accounts at t0, retained, MRR at t0, retained MRR, MRR at t1) of a book.
type Figures = (i64, i64, i64, i64, i64);

fn figures(r: &CsmRetention) -> Figures {
    (
        r.accounts_start,
        r.accounts_retained,
        minor(&r.mrr_start),
        minor(&r.mrr_retained),
        minor(&r.mrr_end),
    )
}

async fn retention_breaks_down_by_the_csm_of_each_account(db: &TestDatabase) -> anyhow::Result<()> {
    let suite = Revenue::start(db).await?;
    let mut client = suite.client();
    let acme = account(&suite, "Acme", "olga", "cara").await?;
    let beta = account(&suite, "Beta", "olga", "dan").await?;
    let gamma = account(&suite, "Gamma", "piet", "cara").await?;
    let delta = account(&suite, "Delta", "piet", "").await?;
    let jan = day(2025, 1, 1);
    let id = |s: tonic::Response<bowtie_proto::revenue::CreateSubscriptionResponse>| {
        s.into_inner().subscription.unwrap_or_default().id
    };
    // Acme pays 100.00 and doubles to 200.00 in July.
    let a = id(client
        .create_subscription(create(monthly(&acme, jan, 1, 10_000)))
        .await?);
    client
        .change_subscription(change(&a, day(2025, 7, 1), terms(2, 10_000, "USD")))
        .await?;
    // Beta pays 300.00 and leaves in June.
    let b = id(client
        .create_subscription(create(monthly(&beta, jan, 1, 30_000)))
        .await?);
    client
        .cancel_subscription(CancelSubscriptionRequest {
            id: b,
            cancellation: cancellation(day(2025, 6, 1)),
            idempotency_key: String::new(),
            expected_version: None,
        })
        .await?;
    // Gamma pays 50.00 and shrinks to 40.00 in August.
    let g = id(client
        .create_subscription(create(monthly(&gamma, jan, 1, 5_000)))
        .await?);
    client
        .change_subscription(change(&g, day(2025, 8, 1), terms(1, 4_000, "USD")))
        .await?;
    // Delta, without a CSM, pays 70.00 throughout.
    client
        .create_subscription(create(monthly(&delta, day(2025, 1, 15), 1, 7_000)))
        .await?;

    let request = |csm: &str| GetRetentionRequest {
        start_at: Some(day(2025, 2, 1)),
        end_at: Some(day(2025, 10, 1)),
        csm: csm.to_owned(),
        by_csm: true,
        ..GetRetentionRequest::default()
    };
    let all = client.get_retention(request("")).await?.into_inner();
    let books: Vec<(&str, Figures)> = all
        .by_csm
        .iter()
        .map(|r| (r.csm.as_str(), figures(r)))
        .collect();
    // Dan: Beta's 300.00 is lost. Cara: Acme 100 -> 200 and Gamma 50 -> 40,
    // so 150.00 at t0, min(200, 100) + min(40, 50) = 140.00 kept, 240.00 at t1.
    // The book without a CSM: Delta's 70.00 throughout. Largest book first.
    assert_eq!(
        books,
        vec![
            ("dan", (1, 0, 30_000, 0, 0)),
            ("cara", (2, 2, 15_000, 14_000, 24_000)),
            ("", (1, 1, 7_000, 7_000, 7_000)),
        ]
    );
    let cara = &all.by_csm[1];
    assert!((cara.grr - 14_000.0 / 15_000.0).abs() < 1e-12);
    assert!((cara.nrr - 1.6).abs() < 1e-12);
    // The books add up to the whole: 520.00 at t0, 210.00 kept, 310.00 at t1.
    assert_eq!(
        (
            minor(&all.mrr_start),
            minor(&all.mrr_retained),
            minor(&all.mrr_end)
        ),
        (52_000, 21_000, 31_000)
    );

    let only_cara = client.get_retention(request("cara")).await?.into_inner();
    assert_eq!(
        (
            only_cara.accounts_start,
            minor(&only_cara.mrr_start),
            minor(&only_cara.mrr_end)
        ),
        (2, 15_000, 24_000)
    );
    assert_eq!(only_cara.by_csm.len(), 1);
    let too_long = "x".repeat(201);
    invalid_field(client.get_retention(request(&too_long)).await, "csm");
    Ok(())
}

async fn the_renewal_book_sums_per_csm_and_per_owner(db: &TestDatabase) -> anyhow::Result<()> {
    let suite = Revenue::start(db).await?;
    let mut client = suite.client();
    let acme = account(&suite, "Acme", "olga", "cara").await?;
    let beta = account(&suite, "Beta", "olga", "dan").await?;
    let gamma = account(&suite, "Gamma", "piet", "cara").await?;
    let delta = account(&suite, "Delta", "piet", "").await?;
    // Annual prices: units x price a year, renewing at the term's end.
    let annual = |account: &str, units, price, term_end| Subscription {
        billing_interval: BillingInterval::Year as i32,
        term_end_at: Some(term_end),
        ..monthly(account, day(2025, 1, 1), units, price)
    };
    client
        .create_subscription(create(annual(&acme, 2, 600_000, day(2026, 1, 1))))
        .await?;
    let gamma_sub = client
        .create_subscription(create(annual(&gamma, 1, 600_000, day(2026, 2, 1))))
        .await?
        .into_inner()
        .subscription
        .unwrap_or_default()
        .id;
    client
        .create_subscription(create(annual(&beta, 1, 1_200_000, day(2026, 2, 15))))
        .await?;
    client
        .create_subscription(create(annual(&delta, 1, 600_000, day(2026, 9, 1))))
        .await?;
    client
        .record_renewal_outcome(RecordRenewalOutcomeRequest {
            subscription_id: gamma_sub,
            outcome: RenewalOutcome::Renewed as i32,
            decided_at: Some(day(2025, 12, 20)),
            idempotency_key: String::new(),
        })
        .await?;

    let request = |group_by: RenewalGrouping, person: &str| GetRenewalSummaryRequest {
        start_at: Some(day(2025, 12, 1)),
        end_at: Some(day(2026, 3, 1)),
        group_by: group_by as i32,
        person: person.to_owned(),
    };
    let summary = |s: &RenewalSummary| {
        (
            s.person.clone(),
            s.renewals,
            minor(&s.amount_at_stake),
            minor(&s.forecast),
            s.decided,
        )
    };
    let by_csm = client
        .get_renewal_summary(request(RenewalGrouping::Csm, ""))
        .await?
        .into_inner();
    assert_eq!(by_csm.reporting_currency_code, "USD");
    // Cara: Acme's 12,000.00 and Gamma's 6,000.00 at stake, forecast at the
    // default 80%: 9,600.00 + 4,800.00; Gamma is decided. Dan: Beta's
    // 12,000.00, forecast 9,600.00. Delta renews in September, outside.
    assert_eq!(
        by_csm.summaries.iter().map(summary).collect::<Vec<_>>(),
        vec![
            ("cara".to_owned(), 2, 1_800_000, 1_440_000, 1),
            ("dan".to_owned(), 1, 1_200_000, 960_000, 0),
        ]
    );
    let olga = client
        .get_renewal_summary(request(RenewalGrouping::Owner, "olga"))
        .await?
        .into_inner();
    assert_eq!(
        olga.summaries.iter().map(summary).collect::<Vec<_>>(),
        vec![("olga".to_owned(), 2, 2_400_000, 1_920_000, 0)]
    );

    let mut bad_grouping = request(RenewalGrouping::Csm, "");
    bad_grouping.group_by = 9;
    invalid_field(client.get_renewal_summary(bad_grouping).await, "group_by");
    let mut too_long = request(RenewalGrouping::Csm, "");
    too_long.end_at = Some(day(2027, 3, 1));
    invalid_field(client.get_renewal_summary(too_long).await, "end_at");
    Ok(())
}

async fn the_renewal_rate_splits_what_passed_renewals_kept_from_what_they_added(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Revenue::start(db).await?;
    let mut client = suite.client();
    let acme = account(&suite, "Acme", "olga", "cara").await?;
    let beta = account(&suite, "Beta", "olga", "dan").await?;
    let gamma = account(&suite, "Gamma", "piet", "cara").await?;
    let delta = account(&suite, "Delta", "piet", "").await?;
    // Dates around today, whole days, so the renewals that passed stay passed.
    let today = chrono::Utc::now().timestamp() / 86_400 * 86_400;
    let at = |days: i64| prost_types::Timestamp {
        seconds: today + days * 86_400,
        nanos: 0,
    };
    // A yearly subscription started a year before its renewal date.
    let mut annual = async |account: &str, units, price, renewal: i64| {
        let s = Subscription {
            billing_interval: BillingInterval::Year as i32,
            term_end_at: Some(at(renewal)),
            ..monthly(account, at(renewal - 365), units, price)
        };
        let created = client.create_subscription(create(s)).await?.into_inner();
        anyhow::Ok(created.subscription.unwrap_or_default().id)
    };
    // Acme: 12,000.00 a year, renewed 200 days ago at two seats (24,000.00).
    let a = annual(&acme, 1, 1_200_000, -200).await?;
    // Gamma: 6,000.00 a year, renewed 150 days ago at 4,800.00.
    let g = annual(&gamma, 1, 600_000, -150).await?;
    // Beta: 12,000.00 a year, cancelled on its renewal date 100 days ago.
    let b = annual(&beta, 1, 1_200_000, -100).await?;
    // Delta: 6,000.00 a year, renewing in 30 days.
    annual(&delta, 1, 600_000, 30).await?;
    client
        .change_subscription(change(&a, at(-200), terms(2, 1_200_000, "USD")))
        .await?;
    client
        .change_subscription(change(&g, at(-150), terms(1, 480_000, "USD")))
        .await?;
    client
        .cancel_subscription(CancelSubscriptionRequest {
            id: b,
            cancellation: cancellation(at(-100)),
            idempotency_key: String::new(),
            expected_version: None,
        })
        .await?;

    let summaries = client
        .get_renewal_summary(GetRenewalSummaryRequest {
            start_at: Some(at(-300)),
            end_at: Some(at(60)),
            group_by: RenewalGrouping::Csm as i32,
            person: String::new(),
        })
        .await?
        .into_inner()
        .summaries;
    let rate = |s: &RenewalSummary| {
        let r = s.rate.clone().unwrap_or_default();
        (
            s.person.clone(),
            r.due,
            [
                minor(&r.due_arr),
                minor(&r.renewed_arr),
                minor(&r.expansion_arr),
                minor(&r.contraction_arr),
                minor(&r.churned_arr),
            ],
        )
    };
    // Cara: 12,000.00 + 6,000.00 due; Acme kept its 12,000.00 and added
    // 12,000.00, Gamma kept 4,800.00 and gave up 1,200.00. Dan: Beta's
    // 12,000.00 churned. Delta's renewal is still to come: in the book, not
    // in the rate.
    assert_eq!(
        summaries.iter().map(rate).collect::<Vec<_>>(),
        vec![
            (
                "cara".to_owned(),
                2,
                [1_800_000, 1_680_000, 1_200_000, 120_000, 0]
            ),
            ("dan".to_owned(), 1, [1_200_000, 0, 0, 0, 1_200_000]),
            ("".to_owned(), 0, [0, 0, 0, 0, 0]),
        ]
    );
    let cara = summaries[0].rate.clone().unwrap_or_default();
    assert_eq!(cara.gross_renewal_rate, Some(1_680_000.0 / 1_800_000.0));
    assert_eq!(cara.net_renewal_rate, Some(2_880_000.0 / 1_800_000.0));
    let dan = summaries[1].rate.clone().unwrap_or_default();
    assert_eq!(
        (dan.gross_renewal_rate, dan.net_renewal_rate),
        (Some(0.0), Some(0.0))
    );
    let nobody: RenewalRate = summaries[2].rate.clone().unwrap_or_default();
    assert_eq!(summaries[2].renewals, 1);
    assert_eq!(nobody.gross_renewal_rate, None, "nothing due yet, no rate");
    Ok(())
}
