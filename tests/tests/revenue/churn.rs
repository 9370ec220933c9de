//! The churn analysis through the public API: accounts that churn for
//! different reasons and kinds, one that contracts with a reason, one that
//! lapses through the past-due policy and one that drops seats. Each
//! period's split is checked against an independent computation from the
//! subscriptions created here, and its totals against GetMrrReport's churn
//! and contraction to the minor unit.

use std::collections::BTreeMap;

use bowtie_proto::common::Segment;
use bowtie_proto::revenue::{
    CancelSubscriptionRequest, Cancellation, CancellationKind, GetChurnAnalysisRequest,
    GetMrrReportRequest, Granularity, RecordInvoiceRequest,
};
use bowtie_testkit::TestDatabase;
use bowtie_testkit::backend_test;
use bowtie_testkit::revenue::*;
use prost_types::Timestamp;

backend_test!(
    churn_by_reason_and_kind_adds_up_to_the_waterfall_s_churn_and_contraction,
    the_churn_analysis_validates_its_range_as_the_mrr_report_does,
);

/// How a planned subscription's MRR ends: at an instant, for a kind and a
/// reason code.
type End = (Timestamp, CancellationKind, &'static str);

/// One subscription of the scenario: its account, seats at 10.00 and how it
/// ends (cancelled, lapsed or seats cut).
struct Planned {
    account: usize,
    seats: i64,
    end: Option<End>,
    /// Seats cut to this many at an instant (no cancellation: unspecified).
    cut: Option<(Timestamp, i64)>,
    /// An invoice due then and never paid: the past-due policy lapses it 30
    /// days later.
    unpaid_due: Option<Timestamp>,
}

fn planned() -> Vec<Planned> {
    use CancellationKind::{Involuntary, Voluntary};
    let sub = |account, seats, end| Planned {
        account,
        seats,
        end,
        cut: None,
        unpaid_due: None,
    };
    vec![
        // Acme leaves for price in February.
        sub(0, 10, Some((day(2025, 2, 15), Voluntary, "price"))),
        // Globex ends both subscriptions at once: one churn, under the larger (budget).
        sub(1, 3, Some((day(2025, 2, 20), Voluntary, "competitor"))),
        sub(1, 7, Some((day(2025, 2, 20), Voluntary, "budget"))),
        // Initech closes its business in March.
        sub(
            2,
            5,
            Some((day(2025, 3, 10), Involuntary, "business_closed")),
        ),
        // Umbrella cancels its add-on for product fit: a contraction.
        sub(3, 4, None),
        sub(3, 2, Some((day(2025, 2, 10), Voluntary, "product_fit"))),
        // Hooli never pays February's invoice: lapsed on 3 March.
        Planned {
            unpaid_due: Some(day(2025, 2, 1)),
            ..sub(4, 6, None)
        },
        // Stark drops from 5 seats to 3 in March: contraction without a reason.
        Planned {
            cut: Some((day(2025, 3, 1), 3)),
            ..sub(5, 5, None)
        },
        // Wayne stays.
        sub(6, 8, None),
    ]
}

/// Per (month "YYYY-MM", churn?, kind, reason): (lost minor units, movements),
/// computed from the plan alone: every instant at which an account's
/// subscriptions end or shrink is one movement, churn when nothing remains,
/// attributed to the largest subscription falling then.
fn expected(plan: &[Planned]) -> BTreeMap<(String, bool, i32, String), (i64, i64)> {
    let unit = 1_000;
    let mut out = BTreeMap::new();
    let accounts: std::collections::BTreeSet<usize> = plan.iter().map(|p| p.account).collect();
    for account in accounts {
        let subs: Vec<&Planned> = plan.iter().filter(|p| p.account == account).collect();
        // (instant, fall, kind, reason) of each subscription.
        let mut falls: Vec<(i64, i64, i32, String)> = Vec::new();
        for s in &subs {
            if let Some((at, kind, reason)) = &s.end {
                falls.push((
                    at.seconds,
                    s.seats * unit,
                    *kind as i32,
                    (*reason).to_owned(),
                ));
            }
            if let Some(due) = &s.unpaid_due {
                let lapse = due.seconds + 30 * 86_400;
                falls.push((
                    lapse,
                    s.seats * unit,
                    CancellationKind::Involuntary as i32,
                    "payment_failure".to_owned(),
                ));
            }
            if let Some((at, seats)) = &s.cut {
                falls.push((
                    at.seconds,
                    (s.seats - seats) * unit,
                    CancellationKind::Unspecified as i32,
                    "unspecified".to_owned(),
                ));
            }
        }
        let mut mrr: i64 = subs.iter().map(|s| s.seats * unit).sum();
        let mut instants: Vec<i64> = falls.iter().map(|f| f.0).collect();
        instants.sort();
        instants.dedup();
        for t in instants {
            let now: Vec<&(i64, i64, i32, String)> = falls.iter().filter(|f| f.0 == t).collect();
            let lost: i64 = now.iter().map(|f| f.1).sum();
            let largest = now
                .iter()
                .max_by_key(|f| f.1)
                .map_or((0, String::new()), |f| (f.2, f.3.clone()));
            mrr -= lost;
            let month = chrono::DateTime::from_timestamp(t, 0)
                .map(|d| d.format("%Y-%m").to_string())
                .unwrap_or_default();
            let e = out
                .entry((month, mrr == 0, largest.0, largest.1))
                .or_insert((0, 0));
            e.0 += lost;
            e.1 += 1;
        }
    }
    out
}

async fn churn_by_reason_and_kind_adds_up_to_the_waterfall_s_churn_and_contraction(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Revenue::start(db).await?;
    let mut client = suite.client();
    let plan = planned();
    let names = [
        "Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne",
    ];
    let mut ids = Vec::new();
    for name in names {
        ids.push(suite.account(name, Segment::Smb, "ana").await?);
    }
    for (i, p) in plan.iter().enumerate() {
        let account = &ids[p.account];
        let sub = client
            .create_subscription(create(monthly(account, day(2025, 1, 1), p.seats, 1_000)))
            .await?
            .into_inner()
            .subscription
            .ok_or_else(|| anyhow::anyhow!("no subscription"))?;
        if let Some((at, kind, reason)) = &p.end {
            client
                .cancel_subscription(CancelSubscriptionRequest {
                    id: sub.id.clone(),
                    cancellation: Some(Cancellation {
                        effective_at: Some(*at),
                        kind: *kind as i32,
                        reason_code: (*reason).to_owned(),
                    }),
                    ..Default::default()
                })
                .await?;
        }
        if let Some((at, seats)) = &p.cut {
            client
                .change_subscription(change(&sub.id, *at, terms(*seats, 1_000, "USD")))
                .await?;
        }
        if let Some(due) = &p.unpaid_due {
            client
                .record_invoice(RecordInvoiceRequest {
                    invoice: Some(bowtie_proto::revenue::Invoice {
                        account_id: account.clone(),
                        subscription_id: sub.id.clone(),
                        amount: money("USD", p.seats * 1_000),
                        due_at: Some(*due),
                        external_id: format!("in_{i}"),
                        ..Default::default()
                    }),
                    idempotency_key: String::new(),
                })
                .await?;
        }
    }

    let analysis = client
        .get_churn_analysis(GetChurnAnalysisRequest {
            start_month: "2025-01".into(),
            end_month: "2025-04".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let waterfall = monthly_report(&mut client, "2025-01", "2025-04", Segment::Unspecified).await?;
    assert_eq!(analysis.periods.len(), waterfall.len());
    let mut seen = BTreeMap::new();
    for (churn, mrr) in analysis.periods.iter().zip(&waterfall) {
        assert_eq!(churn.period, mrr.period);
        // The totals are the waterfall's, to the minor unit.
        assert_eq!(minor(&churn.churn_mrr), minor(&mrr.churn_mrr));
        assert_eq!(churn.churned_accounts, mrr.churned_accounts);
        assert_eq!(minor(&churn.contraction_mrr), minor(&mrr.contraction_mrr));
        // Each split adds up to its total.
        for (lines, total) in [
            (&churn.churn_by_reason, &churn.churn_mrr),
            (&churn.contraction_by_reason, &churn.contraction_mrr),
        ] {
            assert_eq!(
                lines.iter().map(|l| minor(&l.lost_mrr)).sum::<i64>(),
                minor(total)
            );
        }
        for (lines, total) in [
            (&churn.churn_by_kind, &churn.churn_mrr),
            (&churn.contraction_by_kind, &churn.contraction_mrr),
        ] {
            assert_eq!(
                lines.iter().map(|l| minor(&l.lost_mrr)).sum::<i64>(),
                minor(total)
            );
        }
        assert_eq!(
            churn
                .churn_by_reason
                .iter()
                .map(|l| l.movements)
                .sum::<i64>(),
            churn.churned_accounts
        );
        // Per reason, from the plan.
        for (is_churn, lines) in [
            (true, &churn.churn_by_reason),
            (false, &churn.contraction_by_reason),
        ] {
            for l in lines {
                let e = seen
                    .entry((churn.period.clone(), is_churn, l.reason_code.clone()))
                    .or_insert((0, 0));
                e.0 += minor(&l.lost_mrr);
                e.1 += l.movements;
            }
        }
        // Per kind, from the plan.
        for (is_churn, lines) in [
            (true, &churn.churn_by_kind),
            (false, &churn.contraction_by_kind),
        ] {
            for l in lines {
                let want: i64 = expected(&plan)
                    .iter()
                    .filter(|((m, c, k, _), _)| {
                        *m == churn.period && *c == is_churn && *k == l.kind
                    })
                    .map(|(_, v)| v.0)
                    .sum();
                assert_eq!(minor(&l.lost_mrr), want, "{} kind {}", churn.period, l.kind);
            }
        }
    }
    let mut want = BTreeMap::new();
    for ((month, is_churn, _, reason), (lost, count)) in expected(&plan) {
        let e = want.entry((month, is_churn, reason)).or_insert((0, 0));
        e.0 += lost;
        e.1 += count;
    }
    assert_eq!(seen, want);
    // February: price 100.00 and budget 100.00 (Globex's 30.00 + 70.00), a
    // share of a half each; March: the lapse 60.00 and business_closed 50.00.
    let feb = &analysis.periods[1];
    assert_eq!(minor(&feb.churn_mrr), 20_000);
    assert!(
        feb.churn_by_reason
            .iter()
            .all(|l| (l.share - 0.5).abs() < 1e-12)
    );
    let mar = &analysis.periods[2];
    assert_eq!(mar.churn_by_reason[0].reason_code, "payment_failure");
    assert_eq!(
        mar.churn_by_kind[0].kind,
        CancellationKind::Involuntary as i32
    );
    assert_eq!(minor(&mar.churn_by_kind[0].lost_mrr), 11_000);

    // Quarters sum the same movements.
    let quarter = client
        .get_churn_analysis(GetChurnAnalysisRequest {
            start_month: "2025-01".into(),
            end_month: "2025-03".into(),
            granularity: Granularity::Quarter as i32,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(quarter.periods.len(), 1);
    assert_eq!(
        minor(&quarter.periods[0].churn_mrr),
        waterfall
            .iter()
            .take(3)
            .map(|p| minor(&p.churn_mrr))
            .sum::<i64>()
    );

    // The quick ratio: January gained 470.00 and lost nothing (undefined);
    // February gained nothing and lost (quick ratio 0).
    assert_eq!(waterfall[0].quick_ratio, None);
    assert_eq!(waterfall[1].quick_ratio, Some(0.0));
    Ok(())
}

async fn the_churn_analysis_validates_its_range_as_the_mrr_report_does(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Revenue::start(db).await?;
    let mut client = suite.reader();
    for (start, end, field) in [
        ("2025-13", "2025-12", "start_month"),
        ("2025-05", "2025-04", "end_month"),
        ("2000-01", "2025-01", "end_month"),
    ] {
        let churn = client
            .get_churn_analysis(GetChurnAnalysisRequest {
                start_month: start.into(),
                end_month: end.into(),
                ..Default::default()
            })
            .await
            .err()
            .ok_or_else(|| anyhow::anyhow!("{start}..{end} accepted"))?;
        let mrr = client
            .get_mrr_report(GetMrrReportRequest {
                start_month: start.into(),
                end_month: end.into(),
                ..Default::default()
            })
            .await
            .err()
            .ok_or_else(|| anyhow::anyhow!("{start}..{end} accepted"))?;
        assert_eq!(churn.code(), tonic::Code::InvalidArgument);
        assert!(churn.message().contains(field), "{}", churn.message());
        assert_eq!(churn.message(), mrr.message());
    }
    Ok(())
}
