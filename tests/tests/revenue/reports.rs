//! The MRR report and retention on a generated data set, checked against an
//! independent SQL computation over the same subscription terms, written
//! here and run on the same engine (SQLite or PostgreSQL).

use bowtie_proto::common::Segment;
use bowtie_proto::revenue::{
    BillingInterval, CancelSubscriptionRequest, GetCohortRetentionRequest, GetRetentionRequest,
    GetRetentionResponse, GetUnitEconomicsRequest, MrrPeriod, RecordSpendRequest, Subscription,
    Terms,
};
use bowtie_runtime::db::Db;
use bowtie_testkit::TestDatabase;
use bowtie_testkit::backend_test;
use bowtie_testkit::revenue::*;
use prost_types::Timestamp;
use sea_orm::{ConnectionTrait, Statement};

backend_test!(
    mrr_report_and_retention_equal_an_independent_sql_computation,
    the_cohort_grid_follows_each_first_payment_month,
    unit_economics_divide_spend_by_new_customers_and_value_them_over_trailing_churn,
    reports_are_identical_whether_history_arrives_in_order_or_shuffled,
);

const DAY: i64 = 86_400;

/// A small deterministic pseudo-random sequence (no seed from the clock, so
/// a failure reproduces).
struct Lcg(u64);

impl Lcg {
    /// Fisher-Yates with this sequence.
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i as i64 + 1) as usize);
        }
    }

    fn below(&mut self, n: i64) -> i64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % n as u64) as i64
    }
}

fn at(seconds: i64) -> Timestamp {
    Timestamp { seconds, nanos: 0 }
}

/// One generated subscription: its account, interval in months, terms over
/// time (effective second, quantity, unit price, discount) and cancellation.
struct Planned {
    account: usize,
    months: i64,
    versions: Vec<(i64, i64, i64, i64)>,
    cancel: Option<i64>,
}

fn plan(rng: &mut Lcg, accounts: usize) -> Vec<Planned> {
    let jan = day(2025, 1, 1).seconds;
    let mut out = Vec::new();
    for account in 0..accounts {
        for _ in 0..1 + rng.below(2) {
            let start = jan + rng.below(330) * DAY + rng.below(3) * 3_600;
            let months = [1, 3, 12][rng.below(3) as usize];
            let mut versions = vec![(start, 1 + rng.below(9), 100 + rng.below(20_000), 0)];
            for _ in 0..rng.below(4) {
                let when = start + (1 + rng.below(300)) * DAY;
                if versions.iter().all(|v| v.0 != when) {
                    versions.push((
                        when,
                        rng.below(10),
                        100 + rng.below(20_000),
                        1_000 * rng.below(3),
                    ));
                }
            }
            versions.sort();
            let cancel = (rng.below(3) == 0).then(|| start + (20 + rng.below(400)) * DAY);
            // Changes after the cancellation are refused; keep those before.
            if let Some(c) = cancel {
                versions.retain(|v| v.0 < c);
            }
            out.push(Planned {
                account,
                months,
                versions,
                cancel,
            });
        }
    }
    out
}

fn wire_terms(q: i64, p: i64, d: i64) -> Terms {
    Terms {
        discount_basis_points: d as i32,
        ..terms(q, p, "USD")
    }
}

fn interval(months: i64) -> BillingInterval {
    match months {
        1 => BillingInterval::Month,
        3 => BillingInterval::Quarter,
        _ => BillingInterval::Year,
    }
}

async fn sql_rows(db: &Db, sql: &str) -> anyhow::Result<Vec<sea_orm::QueryResult>> {
    let backend = db.backend();
    Ok(db
        .reader()
        .query_all(Statement::from_string(backend, sql.to_owned()))
        .await?)
}

/// Per-account MRR at instant `t` (microseconds), straight from the terms:
/// quantity x price x (1 - discount) / months, rounded half up.
fn account_mrr_sql(t: i64, filter: &str) -> String {
    format!(
        "SELECT account_id, SUM((quantity * unit_price * (10000 - discount_bp) * 2 + 10000 * months) \
         / (20000 * months)) AS mrr FROM xcheck_terms \
         WHERE from_at <= {t} AND to_at > {t} {filter} GROUP BY account_id"
    )
}

async fn sql_end_of_month(db: &Db, t: i64, filter: &str) -> anyhow::Result<(i64, i64)> {
    let sql = format!(
        "SELECT CAST(COALESCE(SUM(mrr), 0) AS BIGINT) AS total, CAST(COUNT(*) AS BIGINT) AS paying \
         FROM ({}) x WHERE mrr > 0",
        account_mrr_sql(t, filter)
    );
    let rows = sql_rows(db, &sql).await?;
    let row = rows.first().ok_or_else(|| anyhow::anyhow!("no row"))?;
    Ok((row.try_get("", "total")?, row.try_get("", "paying")?))
}

async fn sql_retention(db: &Db, t0: i64, t1: i64, filter: &str) -> anyhow::Result<[i64; 5]> {
    let sql = format!(
        "SELECT CAST(COUNT(*) AS BIGINT) AS n0, \
         CAST(COALESCE(SUM(CASE WHEN a1.mrr > 0 THEN 1 ELSE 0 END), 0) AS BIGINT) AS n1, \
         CAST(COALESCE(SUM(a0.mrr), 0) AS BIGINT) AS m0, \
         CAST(COALESCE(SUM(CASE WHEN a1.mrr IS NULL THEN 0 WHEN a1.mrr < a0.mrr THEN a1.mrr ELSE a0.mrr END), 0) AS BIGINT) AS kept, \
         CAST(COALESCE(SUM(COALESCE(a1.mrr, 0)), 0) AS BIGINT) AS m1 \
         FROM ({}) a0 LEFT JOIN ({}) a1 ON a0.account_id = a1.account_id WHERE a0.mrr > 0",
        account_mrr_sql(t0, filter),
        account_mrr_sql(t1, filter)
    );
    let rows = sql_rows(db, &sql).await?;
    let row = rows.first().ok_or_else(|| anyhow::anyhow!("no row"))?;
    Ok([
        row.try_get("", "n0")?,
        row.try_get("", "n1")?,
        row.try_get("", "m0")?,
        row.try_get("", "kept")?,
        row.try_get("", "m1")?,
    ])
}

fn retention_figures(r: &GetRetentionResponse) -> [i64; 5] {
    [
        r.accounts_start,
        r.accounts_retained,
        minor(&r.mrr_start),
        minor(&r.mrr_retained),
        minor(&r.mrr_end),
    ]
}

fn assert_waterfall_adds_up(periods: &[MrrPeriod]) {
    for p in periods {
        let end = minor(&p.start_mrr)
            + minor(&p.new_mrr)
            + minor(&p.reactivation_mrr)
            + minor(&p.expansion_mrr)
            - minor(&p.contraction_mrr)
            - minor(&p.churn_mrr);
        assert_eq!(end, minor(&p.end_mrr), "waterfall of {}", p.period);
    }
    for pair in periods.windows(2) {
        assert_eq!(minor(&pair[0].end_mrr), minor(&pair[1].start_mrr));
    }
}

async fn mrr_report_and_retention_equal_an_independent_sql_computation(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Revenue::start(db).await?;
    let mut client = suite.client();
    let mut rng = Lcg(20_250_101);
    let segments = [Segment::Smb, Segment::MidMarket, Segment::Enterprise];
    let owners = ["ana", "bo"];
    let accounts = 14;
    let mut ids = Vec::new();
    for i in 0..accounts {
        ids.push(
            suite
                .account(&format!("Customer {i}"), segments[i % 3], owners[i % 2])
                .await?,
        );
    }
    let planned = plan(&mut rng, accounts);

    // Write: every subscription, then every change newest first (so most
    // are back-dated relative to what is stored), then the cancellations.
    let mut subscription_ids = Vec::new();
    for p in &planned {
        let (start, q, price, d) = p.versions[0];
        let created = client
            .create_subscription(create(Subscription {
                billing_interval: interval(p.months) as i32,
                terms: Some(wire_terms(q, price, d)),
                ..monthly(&ids[p.account], at(start), q, price)
            }))
            .await?
            .into_inner();
        subscription_ids.push(created.subscription.unwrap_or_default().id);
    }
    let mut changes: Vec<(i64, usize, (i64, i64, i64))> = planned
        .iter()
        .enumerate()
        .flat_map(|(i, p)| {
            p.versions[1..]
                .iter()
                .map(move |v| (v.0, i, (v.1, v.2, v.3)))
        })
        .collect();
    changes.sort();
    for (when, i, (q, price, d)) in changes.into_iter().rev() {
        client
            .change_subscription(change(
                &subscription_ids[i],
                at(when),
                wire_terms(q, price, d),
            ))
            .await?;
    }
    for (i, p) in planned.iter().enumerate() {
        if let Some(c) = p.cancel {
            client
                .cancel_subscription(CancelSubscriptionRequest {
                    id: subscription_ids[i].clone(),
                    cancellation: cancellation(at(c)),
                    idempotency_key: String::new(),
                    expected_version: None,
                })
                .await?;
        }
    }

    // The same terms as plain rows for the independent computation.
    let xcheck = Db::connect(&db.service_database("xcheck")).await?;
    xcheck
        .writer()
        .execute_unprepared(
            "CREATE TABLE xcheck_terms (account_id VARCHAR(36) NOT NULL, segment INTEGER NOT NULL, \
             owner VARCHAR(20) NOT NULL, from_at BIGINT NOT NULL, to_at BIGINT NOT NULL, \
             quantity BIGINT NOT NULL, unit_price BIGINT NOT NULL, discount_bp BIGINT NOT NULL, \
             months BIGINT NOT NULL)",
        )
        .await?;
    let mut values = Vec::new();
    for p in &planned {
        for (k, v) in p.versions.iter().enumerate() {
            let next = p.versions.get(k + 1).map(|n| n.0);
            let to = match (next, p.cancel) {
                (Some(n), Some(c)) => n.min(c),
                (Some(n), None) => n,
                (None, Some(c)) => c,
                (None, None) => i64::MAX / 1_000_000,
            };
            values.push(format!(
                "('{}', {}, '{}', {}, {}, {}, {}, {}, {})",
                ids[p.account],
                segments[p.account % 3] as i32,
                owners[p.account % 2],
                v.0 * 1_000_000,
                to * 1_000_000,
                v.1,
                v.2,
                v.3,
                p.months
            ));
        }
    }
    xcheck
        .writer()
        .execute_unprepared(&format!(
            "INSERT INTO xcheck_terms VALUES {}",
            values.join(", ")
        ))
        .await?;

    let month_end = |year: i32, month: u32| {
        let (y, m) = if month == 12 {
            (year + 1, 1)
        } else {
            (year, month + 1)
        };
        day(y, m, 1).seconds * 1_000_000 - 1
    };
    for (segment, filter) in [
        (Segment::Unspecified, String::new()),
        (
            Segment::MidMarket,
            format!("AND segment = {}", Segment::MidMarket as i32),
        ),
    ] {
        let periods = monthly_report(&mut client, "2025-01", "2026-12", segment).await?;
        assert_eq!(periods.len(), 24);
        assert_waterfall_adds_up(&periods);
        for (i, p) in periods.iter().enumerate() {
            let (year, month) = (2025 + (i / 12) as i32, (i % 12) as u32 + 1);
            let (mrr, paying) = sql_end_of_month(&xcheck, month_end(year, month), &filter).await?;
            assert_eq!(minor(&p.end_mrr), mrr, "end MRR of {}", p.period);
            assert_eq!(
                p.paying_accounts_end, paying,
                "paying accounts of {}",
                p.period
            );
        }
        assert!(periods.iter().any(|p| minor(&p.end_mrr) > 0));
    }

    for (t0, t1, segment, owner) in [
        (day(2025, 4, 1), day(2026, 4, 1), Segment::Unspecified, ""),
        (
            day(2025, 7, 15),
            day(2025, 12, 31),
            Segment::Unspecified,
            "",
        ),
        (day(2025, 6, 1), day(2026, 6, 1), Segment::Enterprise, ""),
        (day(2025, 6, 1), day(2026, 6, 1), Segment::Unspecified, "bo"),
    ] {
        let served = client
            .get_retention(GetRetentionRequest {
                start_at: Some(t0),
                end_at: Some(t1),
                segment: segment as i32,
                owner: owner.to_owned(),
                by_owner: true,
                ..GetRetentionRequest::default()
            })
            .await?
            .into_inner();
        // Each owner's book equals the SQL figures restricted to the owner,
        // and the books add up to the total.
        assert_eq!(served.by_owner.is_empty(), served.accounts_start == 0);
        let mut summed = [0i64; 5];
        for book in &served.by_owner {
            let mut filter = format!("AND owner = '{}'", book.owner);
            if segment != Segment::Unspecified {
                filter.push_str(&format!(" AND segment = {}", segment as i32));
            }
            let expected = sql_retention(
                &xcheck,
                t0.seconds * 1_000_000,
                t1.seconds * 1_000_000,
                &filter,
            )
            .await?;
            let figures = [
                book.accounts_start,
                book.accounts_retained,
                minor(&book.mrr_start),
                minor(&book.mrr_retained),
                minor(&book.mrr_end),
            ];
            assert_eq!(figures, expected, "book of {}", book.owner);
            for (total, part) in summed.iter_mut().zip(figures) {
                *total += part;
            }
        }
        assert_eq!(summed, retention_figures(&served));
        assert!(
            served
                .by_owner
                .windows(2)
                .all(|w| minor(&w[0].mrr_start) >= minor(&w[1].mrr_start))
        );
        let mut filter = String::new();
        if segment != Segment::Unspecified {
            filter.push_str(&format!("AND segment = {}", segment as i32));
        }
        if !owner.is_empty() {
            filter.push_str(&format!("AND owner = '{owner}'"));
        }
        let expected = sql_retention(
            &xcheck,
            t0.seconds * 1_000_000,
            t1.seconds * 1_000_000,
            &filter,
        )
        .await?;
        assert_eq!(
            retention_figures(&served),
            expected,
            "retention {t0:?}..{t1:?}"
        );
        assert!(served.grr <= 1.0 && served.nrr >= served.grr);
        if expected[2] > 0 {
            assert_eq!(served.grr, expected[3] as f64 / expected[2] as f64);
            assert_eq!(served.nrr, expected[4] as f64 / expected[2] as f64);
        }
    }
    xcheck.close().await;
    Ok(())
}

/// A cohort as (month, accounts, [(paying accounts, MRR) per month since]).
type CohortRow = (String, i64, Vec<(i64, i64)>);

async fn the_cohort_grid_follows_each_first_payment_month(db: &TestDatabase) -> anyhow::Result<()> {
    let suite = Revenue::start(db).await?;
    let mut client = suite.client();
    let a = suite.account("A", Segment::Smb, "ana").await?;
    let b = suite.account("B", Segment::Smb, "ana").await?;
    let c = suite.account("C", Segment::Smb, "bo").await?;
    let id = |r: tonic::Response<bowtie_proto::revenue::CreateSubscriptionResponse>| {
        r.into_inner().subscription.unwrap_or_default().id
    };
    let sa = id(client
        .create_subscription(create(monthly(&a, day(2025, 1, 10), 1, 10_000)))
        .await?);
    let sb = id(client
        .create_subscription(create(monthly(&b, day(2025, 1, 20), 2, 10_000)))
        .await?);
    client
        .create_subscription(create(monthly(&c, day(2025, 2, 5), 1, 5_000)))
        .await?;
    client
        .change_subscription(change(&sb, day(2025, 2, 10), terms(3, 10_000, "USD")))
        .await?;
    client
        .cancel_subscription(CancelSubscriptionRequest {
            id: sa,
            cancellation: cancellation(day(2025, 3, 15)),
            idempotency_key: String::new(),
            expected_version: None,
        })
        .await?;
    let grid = client
        .get_cohort_retention(GetCohortRetentionRequest {
            start_month: "2025-01".into(),
            end_month: "2025-02".into(),
            months: 3,
            segment: 0,
            ..GetCohortRetentionRequest::default()
        })
        .await?
        .into_inner()
        .cohorts;
    let rows: Vec<CohortRow> = grid
        .iter()
        .map(|c| {
            (
                c.cohort.clone(),
                c.accounts,
                c.cells
                    .iter()
                    .map(|x| (x.paying_accounts, minor(&x.mrr)))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (
                "2025-01".to_owned(),
                2,
                vec![(2, 30_000), (2, 40_000), (1, 30_000), (1, 30_000)]
            ),
            (
                "2025-02".to_owned(),
                1,
                vec![(1, 5_000), (1, 5_000), (1, 5_000), (1, 5_000)]
            ),
        ]
    );
    assert_eq!(grid[0].cells[2].logo_retention, 0.5);
    assert_eq!(grid[0].cells[2].mrr_retention, 1.0);
    Ok(())
}

async fn unit_economics_divide_spend_by_new_customers_and_value_them_over_trailing_churn(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Revenue::start(db).await?;
    let mut client = suite.client();
    let mut first = None;
    for name in ["A", "B", "C", "D"] {
        let account = suite.account(name, Segment::Smb, "ana").await?;
        let created = client
            .create_subscription(create(monthly(&account, day(2025, 1, 1), 1, 10_000)))
            .await?;
        first.get_or_insert(created.into_inner().subscription.unwrap_or_default().id);
    }
    client
        .cancel_subscription(CancelSubscriptionRequest {
            id: first.unwrap_or_default(),
            cancellation: cancellation(day(2025, 2, 10)),
            idempotency_key: String::new(),
            expected_version: None,
        })
        .await?;
    for name in ["E", "F"] {
        let account = suite.account(name, Segment::Smb, "bo").await?;
        client
            .create_subscription(create(monthly(&account, day(2025, 3, 5), 1, 5_000)))
            .await?;
    }
    let ask = || GetUnitEconomicsRequest {
        month: "2025-03".into(),
    };
    bowtie_testkit::assert::status(
        client.get_unit_economics(ask()).await,
        tonic::Code::FailedPrecondition,
    );
    let spend = |currency: &str| RecordSpendRequest {
        month: "2025-03".into(),
        sales_and_marketing_spend: money(currency, 100_000),
        gross_margin_basis_points: 8_000,
        idempotency_key: String::new(),
    };
    bowtie_testkit::assert::invalid_field(
        client.record_spend(spend("EUR")).await,
        "sales_and_marketing_spend.currency_code",
    );
    client.record_spend(spend("USD")).await?;
    let economics = client.get_unit_economics(ask()).await?.into_inner();
    // March: 2 new customers for 1,000.00 of spend, CAC 500.00. End MRR
    // 400.00 over 5 accounts, ARPA 80.00, 64.00 of margin a month. Churn:
    // February lost 1 of 4, March none of 3 (January started empty): 12.5%
    // on average, so LTV = 64.00 / 0.125 = 512.00.
    assert_eq!(economics.new_customers, 2);
    assert_eq!(minor(&economics.cac), 50_000);
    assert_eq!(minor(&economics.arpa), 8_000);
    assert_eq!(economics.average_monthly_churn_rate, 0.125);
    assert_eq!(minor(&economics.ltv), 51_200);
    assert!((economics.ltv_to_cac - 1.024).abs() < 1e-9);
    assert!((economics.cac_payback_months - 7.8125).abs() < 1e-9);
    Ok(())
}

/// One write of a generated history: a change of subscription `i` to new
/// terms, or its cancellation.
#[derive(Debug, Clone, Copy)]
enum Write {
    Change(usize, (i64, i64, i64, i64)),
    Cancel(usize, i64),
}

/// Creates the planned subscriptions for `ids`, then applies `writes` in
/// the order given.
async fn record_history(
    client: &mut RevenueClient,
    ids: &[String],
    planned: &[Planned],
    creation_order: &[usize],
    writes: &[Write],
) -> anyhow::Result<()> {
    let mut subscription_ids = vec![String::new(); planned.len()];
    for &i in creation_order {
        let p = &planned[i];
        let (start, q, price, d) = p.versions[0];
        let created = client
            .create_subscription(create(Subscription {
                billing_interval: interval(p.months) as i32,
                terms: Some(wire_terms(q, price, d)),
                ..monthly(&ids[p.account], at(start), q, price)
            }))
            .await?
            .into_inner();
        subscription_ids[i] = created.subscription.unwrap_or_default().id;
    }
    for write in writes {
        match *write {
            Write::Change(i, (when, q, price, d)) => {
                client
                    .change_subscription(change(
                        &subscription_ids[i],
                        at(when),
                        wire_terms(q, price, d),
                    ))
                    .await?;
            }
            Write::Cancel(i, when) => {
                client
                    .cancel_subscription(CancelSubscriptionRequest {
                        id: subscription_ids[i].clone(),
                        cancellation: cancellation(at(when)),
                        idempotency_key: String::new(),
                        expected_version: None,
                    })
                    .await?;
            }
        }
    }
    Ok(())
}

/// Two identical books of business, one recorded in business-time order
/// (SMB), the other with its subscriptions, changes and cancellations in a
/// random order (enterprise): every report of the one equals the other's.
async fn reports_are_identical_whether_history_arrives_in_order_or_shuffled(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Revenue::start(db).await?;
    let mut client = suite.client();
    let accounts = 10;
    let planned = plan(&mut Lcg(7_000_001), accounts);
    let mut in_order_ids = Vec::new();
    let mut shuffled_ids = Vec::new();
    for i in 0..accounts {
        in_order_ids.push(
            suite
                .account(&format!("Ordered {i}"), Segment::Smb, "ana")
                .await?,
        );
        shuffled_ids.push(
            suite
                .account(&format!("Shuffled {i}"), Segment::Enterprise, "bo")
                .await?,
        );
    }

    let mut writes: Vec<Write> = planned
        .iter()
        .enumerate()
        .flat_map(|(i, p)| {
            p.versions[1..]
                .iter()
                .map(move |v| Write::Change(i, *v))
                .chain(p.cancel.map(|c| Write::Cancel(i, c)))
        })
        .collect();
    let business_time = |w: &Write| match *w {
        Write::Change(_, v) => v.0,
        Write::Cancel(_, c) => c,
    };
    writes.sort_by_key(business_time);
    let mut by_start: Vec<usize> = (0..planned.len()).collect();
    by_start.sort_by_key(|&i| planned[i].versions[0].0);
    record_history(&mut client, &in_order_ids, &planned, &by_start, &writes).await?;

    let mut rng = Lcg(99);
    rng.shuffle(&mut by_start);
    rng.shuffle(&mut writes);
    assert!(
        writes
            .windows(2)
            .any(|w| business_time(&w[0]) > business_time(&w[1])),
        "the shuffled history must really be out of order"
    );
    record_history(&mut client, &shuffled_ids, &planned, &by_start, &writes).await?;

    let ordered = monthly_report(&mut client, "2025-01", "2026-12", Segment::Smb).await?;
    let shuffled = monthly_report(&mut client, "2025-01", "2026-12", Segment::Enterprise).await?;
    assert!(ordered.iter().any(|p| minor(&p.churn_mrr) > 0));
    assert!(ordered.iter().any(|p| minor(&p.expansion_mrr) > 0));
    assert_eq!(ordered, shuffled);

    for (t0, t1) in [
        (day(2025, 3, 1), day(2026, 3, 1)),
        (day(2025, 8, 10), day(2025, 11, 20)),
    ] {
        let retention = |segment: Segment| GetRetentionRequest {
            start_at: Some(t0),
            end_at: Some(t1),
            segment: segment as i32,
            owner: String::new(),
            by_owner: false,
            ..GetRetentionRequest::default()
        };
        let a = client
            .get_retention(retention(Segment::Smb))
            .await?
            .into_inner();
        let b = client
            .get_retention(retention(Segment::Enterprise))
            .await?
            .into_inner();
        assert!(a.accounts_start > 0);
        assert_eq!(a, b);
    }

    for (a, b) in in_order_ids.iter().zip(&shuffled_ids) {
        let strip = |ms: Vec<bowtie_proto::revenue::Movement>| {
            ms.into_iter()
                .map(|m| (m.occurred_at, m.r#type, m.amount, m.mrr_before, m.mrr_after))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            strip(all_movements(&mut client, a).await?),
            strip(all_movements(&mut client, b).await?),
        );
    }
    Ok(())
}
