//! Hand-worked cases for every movement type, normalisation, discounts,
//! trials, same-instant merges, reactivation and FX, and property tests over
//! random subscription histories.

use super::*;
use proptest::prelude::*;

fn jan_2025() -> Instant {
    month_start(Month::january(2025))
}

fn day(n: i64) -> Instant {
    jan_2025().plus_days(n)
}

fn terms(quantity: i64, unit_price: i64, discount_bp: i64) -> Terms {
    Terms {
        plan: "pro".into(),
        quantity,
        unit_price: Minor(unit_price),
        discount_bp,
    }
}

fn subscription(
    account: AccountId,
    currency: &str,
    interval: Interval,
    start: Instant,
    t: Terms,
) -> Subscription {
    Subscription::create(
        SubscriptionId(Uuid::new_v4()),
        NewSubscription {
            account_id: account,
            currency: currency.into(),
            interval,
            start,
            trial_end: None,
            term_end: None,
            terms: t,
        },
    )
}

fn monthly(account: AccountId, start: Instant, quantity: i64, unit_price: i64) -> Subscription {
    subscription(
        account,
        "USD",
        Interval::Month,
        start,
        terms(quantity, unit_price, 0),
    )
}

fn cancel_at(at: Instant) -> Cancellation {
    Cancellation {
        effective_at: at,
        kind: CancellationKind::Voluntary,
        reason: "price".into(),
    }
}

fn usd() -> FxTable {
    FxTable::new("USD")
}

fn kinds(ms: &[Movement]) -> Vec<(MovementKind, i64)> {
    ms.iter().map(|m| (m.kind, m.amount.get())).collect()
}

#[test]
fn a_monthly_price_is_its_own_mrr() {
    assert_eq!(terms(3, 10_000, 0).mrr(Interval::Month), Minor(30_000));
}

#[test]
fn an_annual_price_is_divided_by_twelve_and_rounded_half_up_once() {
    // 1,000.00 a year = 83.333... a month.
    assert_eq!(terms(1, 100_000, 0).mrr(Interval::Year), Minor(8_333));
    // 1.02 a year = 0.085 a month: exactly half a cent rounds up.
    assert_eq!(terms(1, 102, 0).mrr(Interval::Year), Minor(9));
    // 12 seats at 1.00 a year: the product is normalised, not each seat.
    assert_eq!(terms(12, 100, 0).mrr(Interval::Year), Minor(100));
}

#[test]
fn a_quarterly_price_is_divided_by_three() {
    assert_eq!(terms(1, 10_000, 0).mrr(Interval::Quarter), Minor(3_333));
    assert_eq!(terms(1, 5, 0).mrr(Interval::Quarter), Minor(2));
    assert_eq!(terms(3, 10_000, 0).mrr(Interval::Quarter), Minor(10_000));
}

#[test]
fn a_discount_reduces_the_mrr_before_rounding() {
    // 10 x 50.00 less 15% = 425.00.
    assert_eq!(terms(10, 5_000, 1_500).mrr(Interval::Month), Minor(42_500));
    // 1 x 1,000.00 a year less 10% = 900.00 / 12 = 75.00.
    assert_eq!(terms(1, 100_000, 1_000).mrr(Interval::Year), Minor(7_500));
    assert_eq!(terms(1, 100_000, 10_000).mrr(Interval::Month), Minor(0));
}

#[test]
fn a_first_subscription_is_new_business() -> Result<(), Error> {
    let a = AccountId::new();
    let ms = movements(&[monthly(a, day(3), 2, 5_000)], &usd())?;
    assert_eq!(
        ms,
        vec![Movement {
            at: day(3),
            kind: MovementKind::New,
            amount: Minor(10_000),
            before: Minor(0),
            after: Minor(10_000),
            cause: None,
        }]
    );
    Ok(())
}

#[test]
fn more_seats_expand_and_fewer_seats_contract() -> Result<(), Error> {
    let a = AccountId::new();
    let mut s = monthly(a, day(0), 2, 5_000);
    s.change(day(10), terms(5, 5_000, 0))?;
    s.change(day(20), terms(4, 5_000, 0))?;
    let ms = movements(&[s], &usd())?;
    assert_eq!(
        kinds(&ms),
        vec![
            (MovementKind::New, 10_000),
            (MovementKind::Expansion, 15_000),
            (MovementKind::Contraction, -5_000)
        ]
    );
    assert_eq!(ms[2].before, Minor(25_000));
    assert_eq!(ms[2].after, Minor(20_000));
    Ok(())
}

#[test]
fn cancelling_the_last_subscription_churns_the_whole_mrr() -> Result<(), Error> {
    let a = AccountId::new();
    let mut s = monthly(a, day(0), 3, 1_000);
    s.cancel(cancel_at(day(40)))?;
    let ms = movements(&[s], &usd())?;
    assert_eq!(
        kinds(&ms),
        vec![(MovementKind::New, 3_000), (MovementKind::Churn, -3_000)]
    );
    assert_eq!(ms[1].after, Minor(0));
    Ok(())
}

#[test]
fn paying_again_after_churn_is_a_reactivation_not_new_business() -> Result<(), Error> {
    let a = AccountId::new();
    let mut first = monthly(a, day(0), 1, 1_000);
    first.cancel(cancel_at(day(30)))?;
    let second = monthly(a, day(90), 2, 1_000);
    let ms = movements(&[first, second], &usd())?;
    assert_eq!(
        kinds(&ms),
        vec![
            (MovementKind::New, 1_000),
            (MovementKind::Churn, -1_000),
            (MovementKind::Reactivation, 2_000)
        ]
    );
    Ok(())
}

#[test]
fn a_trial_earns_no_mrr_until_it_ends() -> Result<(), Error> {
    let a = AccountId::new();
    let mut s = monthly(a, day(0), 1, 4_900);
    s.trial_end = Some(day(14));
    let ms = movements(std::slice::from_ref(&s), &usd())?;
    assert_eq!(kinds(&ms), vec![(MovementKind::New, 4_900)]);
    assert_eq!(ms[0].at, day(14));
    assert_eq!(s.mrr_at(day(13)), Minor(0));

    let mut abandoned = s.clone();
    abandoned.cancel(cancel_at(day(10)))?;
    assert!(movements(&[abandoned], &usd())?.is_empty());
    Ok(())
}

#[test]
fn changes_at_the_same_instant_make_one_movement() -> Result<(), Error> {
    let a = AccountId::new();
    // Two subscriptions starting together: one NEW of the sum.
    let both = [monthly(a, day(0), 1, 1_000), monthly(a, day(0), 1, 2_500)];
    assert_eq!(
        kinds(&movements(&both, &usd())?),
        vec![(MovementKind::New, 3_500)]
    );

    // A plan swap: the old one ends as the new one starts, one EXPANSION.
    let mut old = monthly(a, day(0), 1, 1_000);
    old.cancel(cancel_at(day(30)))?;
    let new = monthly(a, day(30), 1, 1_500);
    assert_eq!(
        kinds(&movements(&[old, new], &usd())?),
        vec![(MovementKind::New, 1_000), (MovementKind::Expansion, 500)]
    );

    // Two changes recorded for one instant: the later one wins.
    let mut s = monthly(a, day(0), 1, 1_000);
    s.change(day(5), terms(3, 1_000, 0))?;
    s.change(day(5), terms(2, 1_000, 0))?;
    assert_eq!(
        kinds(&movements(&[s], &usd())?),
        vec![(MovementKind::New, 1_000), (MovementKind::Expansion, 1_000)]
    );
    Ok(())
}

#[test]
fn a_swap_to_an_equal_price_is_no_movement() -> Result<(), Error> {
    let a = AccountId::new();
    let mut old = monthly(a, day(0), 1, 1_000);
    old.cancel(cancel_at(day(30)))?;
    let new = monthly(a, day(30), 2, 500);
    assert_eq!(
        kinds(&movements(&[old, new], &usd())?),
        vec![(MovementKind::New, 1_000)]
    );
    Ok(())
}

#[test]
fn foreign_currencies_convert_at_the_rate_of_each_movement_and_swings_are_not_movements()
-> Result<(), Error> {
    let a = AccountId::new();
    let mut fx = usd();
    fx.insert("EUR", day(0), Rate(1_100_000_000));
    fx.insert("EUR", day(15), Rate(1_200_000_000));
    fx.insert("EUR", day(45), Rate(1_300_000_000));
    let mut s = subscription(a, "EUR", Interval::Month, day(1), terms(1, 10_000, 0));
    s.change(day(20), terms(3, 5_000, 0))?;
    s.cancel(cancel_at(day(60)))?;
    let ms = movements(&[s], &fx)?;
    // 100.00 EUR at 1.1 = 110.00; +50.00 EUR at 1.2 = +60.00; the rate move
    // to 1.3 is no movement, and churn removes exactly the 170.00 held.
    assert_eq!(
        kinds(&ms),
        vec![
            (MovementKind::New, 11_000),
            (MovementKind::Expansion, 6_000),
            (MovementKind::Churn, -17_000)
        ]
    );
    assert_eq!(ms[2].after, Minor(0));
    Ok(())
}

#[test]
fn currencies_without_minor_units_convert_with_their_own_exponent() -> Result<(), Error> {
    let mut fx = usd();
    fx.insert("JPY", Instant::EPOCH, Rate(6_700_000));
    // 10,000 JPY at 0.0067 = 67.00 USD.
    assert_eq!(fx.convert(Minor(10_000), "JPY", day(0))?, Minor(6_700));
    // 1 JPY = 0.0067 USD rounds to 1 cent; -1 JPY to -1 cent.
    assert_eq!(fx.convert(Minor(1), "JPY", day(0))?, Minor(1));
    assert_eq!(fx.convert(Minor(-1), "JPY", day(0))?, Minor(-1));
    Ok(())
}

#[test]
fn a_currency_without_a_rate_is_a_failed_precondition() {
    let a = AccountId::new();
    let s = subscription(a, "GBP", Interval::Month, day(1), terms(1, 100, 0));
    assert!(matches!(
        movements(&[s], &usd()),
        Err(Error::FailedPrecondition(_))
    ));
}

#[test]
fn a_change_before_the_start_is_invalid_and_a_second_cancel_is_refused() -> Result<(), Error> {
    let a = AccountId::new();
    let mut s = monthly(a, day(10), 1, 1_000);
    assert!(matches!(
        s.change(day(9), terms(2, 1_000, 0)),
        Err(Error::InvalidArgument(_))
    ));
    s.cancel(cancel_at(day(20)))?;
    assert!(matches!(
        s.cancel(cancel_at(day(30))),
        Err(Error::FailedPrecondition(_))
    ));
    assert!(matches!(
        s.change(day(25), terms(2, 1_000, 0)),
        Err(Error::FailedPrecondition(_))
    ));
    Ok(())
}

#[test]
fn rates_parse_exactly_and_print_without_trailing_zeros() {
    assert_eq!(Rate::parse("1.0825"), Some(Rate(1_082_500_000)));
    assert_eq!(Rate::parse("2"), Some(Rate(2_000_000_000)));
    assert_eq!(Rate::parse("0.000000001"), Some(Rate(1)));
    for bad in ["", "0", "-1", "1.0000000001", "1e3", ".5", "abc"] {
        assert_eq!(Rate::parse(bad), None, "{bad}");
    }
    assert_eq!(Rate(1_082_500_000).format(), "1.0825");
    assert_eq!(Rate(2_000_000_000).format(), "2");
}

#[test]
fn months_parse_and_print_as_year_and_month() {
    assert_eq!(
        parse_month("2025-03"),
        Some(Month::from_index(2025 * 12 + 2))
    );
    assert_eq!(month_label(Month::from_index(2025 * 12 + 11)), "2025-12");
    assert_eq!(parse_month("2025-13"), None);
    assert_eq!(parse_month("25-01"), None);
    let may = Month::from_index(2025 * 12 + 4);
    assert_eq!(month_of(month_start(may)), may);
    assert_eq!(month_of(month_start(may).plus_micros(-1)), may - 1);
}

#[test]
fn months_step_across_years_and_round_to_their_quarter() {
    let dec = Month::from_index(2024 * 12 + 11);
    assert_eq!(dec + 1, Month::january(2025));
    assert_eq!(month_label(Month::january(2025) - 1), "2024-12");
    assert_eq!(Month::january(2026) - dec, 13);
    let may = Month::from_index(2025 * 12 + 4);
    assert_eq!(month_label(may.quarter_start()), "2025-04");
    assert_eq!(month_label(may.quarter_end()), "2025-06");
    assert_eq!(dec.quarter_start(), Month::from_index(2024 * 12 + 9));
    assert_eq!(dec.quarter_end(), dec);
}

#[test]
fn the_waterfall_carries_each_period_end_into_the_next_start() {
    let m = Month::january(2025);
    let mut monthly = BTreeMap::new();
    monthly.insert(
        (m, MovementKind::New),
        Tally {
            amount: Minor(1_000),
            count: 2,
        },
    );
    monthly.insert(
        (m + 1, MovementKind::Expansion),
        Tally {
            amount: Minor(300),
            count: 1,
        },
    );
    monthly.insert(
        (m + 1, MovementKind::Churn),
        Tally {
            amount: Minor(-400),
            count: 1,
        },
    );
    let months = waterfall((Minor(5_000), 4), &monthly, m, m + 2, Granularity::Month);
    let ends: Vec<(i64, i64)> = months
        .iter()
        .map(|p| (p.end_mrr.get(), p.paying_end))
        .collect();
    assert_eq!(ends, vec![(6_000, 6), (5_900, 5), (5_900, 5)]);
    let quarters = waterfall((Minor(5_000), 4), &monthly, m, m + 2, Granularity::Quarter);
    assert_eq!(quarters.len(), 1);
    assert_eq!(quarters[0].label, "2025-Q1");
    assert_eq!(
        (quarters[0].start_mrr, quarters[0].end_mrr),
        (Minor(5_000), Minor(5_900))
    );
}

#[test]
fn retention_ignores_new_customers_and_caps_gross_retention() {
    // (MRR at t0, MRR at t1): one expands, one contracts, one churns, one is new.
    let r = Retention::from_pairs(
        [(100, 150), (200, 100), (100, 0), (0, 500)].map(|(s, e)| (Minor(s), Minor(e))),
    );
    assert_eq!(r.accounts_start, 3);
    assert_eq!(r.accounts_retained, 2);
    assert_eq!(r.mrr_start, Minor(400));
    assert_eq!(r.mrr_retained, Minor(200));
    assert_eq!(r.mrr_end, Minor(250));
    assert_eq!(r.grr(), 0.5);
    assert_eq!(r.nrr(), 0.625);
}

#[test]
fn the_cohort_grid_follows_each_first_payment_month_until_the_last_ended_month() {
    let jan = Month::january(2025);
    let cohort_of = BTreeMap::from([("a", jan), ("b", jan), ("c", jan + 1)]);
    let span = |from: Instant, to: Option<Instant>, mrr| PayingSpan {
        from,
        to,
        mrr: Minor(mrr),
    };
    let spans = vec![
        ("a", span(day(3), Some(day(70)), 100)),
        ("b", span(day(5), Some(day(40)), 200)),
        ("b", span(day(40), None, 300)),
        ("c", span(day(35), None, 50)),
    ];
    // Month ends before April 1st 2025 have happened.
    let grid = cohort_grid(&cohort_of, &spans, 12, month_start(jan + 3));
    let cells = |m: Month| {
        grid.get(&m).map(|(n, c)| {
            let cells = c.iter().map(|c| (c.paying, c.mrr.get()));
            (*n, cells.collect::<Vec<_>>())
        })
    };
    assert_eq!(cells(jan), Some((2, vec![(2, 300), (2, 400), (1, 300)])));
    assert_eq!(cells(jan + 1), Some((1, vec![(1, 50), (1, 50)])));
}

#[test]
fn a_subscription_is_stored_as_it_always_was_ids_as_text_instants_and_money_as_numbers()
-> Result<(), serde_json::Error> {
    let s = Subscription::create(
        SubscriptionId(Uuid::from_u128(1)),
        NewSubscription {
            account_id: AccountId(Uuid::from_u128(2)),
            currency: "USD".into(),
            interval: Interval::Month,
            start: Instant::from_micros(1_735_689_600_000_000),
            trial_end: None,
            term_end: Some(Instant::from_micros(1_767_225_600_000_000)),
            terms: terms(2, 1_000, 500),
        },
    );
    let stored = r#"{"id":"00000000-0000-0000-0000-000000000001","account_id":"00000000-0000-0000-0000-000000000002","currency":"USD","interval":"Month","start":1735689600000000,"trial_end":null,"term_end":1767225600000000,"versions":[{"effective_at":1735689600000000,"terms":{"plan":"pro","quantity":2,"unit_price":1000,"discount_bp":500}}],"cancellation":null,"version":1}"#;
    assert_eq!(serde_json::to_string(&s)?, stored);
    assert_eq!(serde_json::from_str::<Subscription>(stored)?, s);
    Ok(())
}

fn cancellation(at: Instant, kind: CancellationKind, reason: &str) -> Cancellation {
    Cancellation {
        effective_at: at,
        kind,
        reason: reason.into(),
    }
}

fn cause(kind: Option<CancellationKind>, reason: &str) -> Option<Cause> {
    Some(Cause {
        kind,
        reason: reason.into(),
    })
}

fn causes(ms: &[Movement]) -> Vec<(MovementKind, i64, Option<Cause>)> {
    ms.iter()
        .map(|m| (m.kind, m.amount.get(), m.cause.clone()))
        .collect()
}

#[test]
fn a_churn_carries_the_kind_and_reason_of_the_cancellation_behind_it() -> Result<(), Error> {
    let a = AccountId::new();
    let mut s = monthly(a, day(0), 3, 1_000);
    s.cancel(cancellation(
        day(40),
        CancellationKind::Involuntary,
        "business_closed",
    ))?;
    assert_eq!(
        causes(&movements(&[s], &usd())?),
        vec![
            (MovementKind::New, 3_000, None),
            (
                MovementKind::Churn,
                -3_000,
                cause(Some(CancellationKind::Involuntary), "business_closed")
            ),
        ]
    );
    Ok(())
}

#[test]
fn cancelling_one_of_two_subscriptions_is_a_contraction_with_its_reason_and_fewer_seats_are_unspecified()
-> Result<(), Error> {
    let a = AccountId::new();
    // 2 x 10.00 + 5.00 = 25.00; 5.00 cancelled for price on day 20 (25.00 -> 20.00),
    // then one seat dropped on day 30 (20.00 -> 10.00).
    let mut big = monthly(a, day(0), 2, 1_000);
    big.change(day(30), terms(1, 1_000, 0))?;
    let mut small = monthly(a, day(0), 1, 500);
    small.cancel(cancel_at(day(20)))?;
    assert_eq!(
        causes(&movements(&[big, small], &usd())?),
        vec![
            (MovementKind::New, 2_500, None),
            (
                MovementKind::Contraction,
                -500,
                cause(Some(CancellationKind::Voluntary), "price")
            ),
            (
                MovementKind::Contraction,
                -1_000,
                cause(None, UNSPECIFIED_REASON)
            ),
        ]
    );
    Ok(())
}

#[test]
fn subscriptions_ending_at_one_instant_churn_once_under_the_largest_of_them() -> Result<(), Error> {
    let a = AccountId::new();
    // 30.00 for competitor and 70.00 for budget end together on day 50: one
    // churn of 100.00, attributed to budget (the 70.00).
    let mut small = monthly(a, day(0), 3, 1_000);
    small.cancel(cancellation(
        day(50),
        CancellationKind::Voluntary,
        "competitor",
    ))?;
    let mut large = monthly(a, day(0), 7, 1_000);
    large.cancel(cancellation(day(50), CancellationKind::Voluntary, "budget"))?;
    let forward = movements(&[small.clone(), large.clone()], &usd())?;
    assert_eq!(
        causes(&forward)[1],
        (
            MovementKind::Churn,
            -10_000,
            cause(Some(CancellationKind::Voluntary), "budget")
        )
    );
    assert_eq!(forward, movements(&[large, small], &usd())?);
    Ok(())
}

#[test]
fn equal_falls_at_one_instant_go_to_the_cancellation_then_involuntary_then_the_first_code()
-> Result<(), Error> {
    let a = AccountId::new();
    // Both 10.00: one cancelled (voluntary, "price"), one cut to zero seats.
    let mut cut = monthly(a, day(0), 1, 1_000);
    cut.change(day(10), terms(0, 1_000, 0))?;
    let mut cancelled = monthly(a, day(0), 1, 1_000);
    cancelled.cancel(cancel_at(day(10)))?;
    assert_eq!(
        movements(&[cut, cancelled], &usd())?[1].cause,
        cause(Some(CancellationKind::Voluntary), "price")
    );
    // Voluntary "budget" against involuntary "price": involuntary wins.
    let mut voluntary = monthly(a, day(0), 1, 1_000);
    voluntary.cancel(cancellation(day(10), CancellationKind::Voluntary, "budget"))?;
    let mut involuntary = monthly(a, day(0), 1, 1_000);
    involuntary.cancel(cancellation(
        day(10),
        CancellationKind::Involuntary,
        "price",
    ))?;
    assert_eq!(
        movements(&[voluntary.clone(), involuntary], &usd())?[1].cause,
        cause(Some(CancellationKind::Involuntary), "price")
    );
    // Two voluntary: "budget" before "price".
    let mut price = monthly(a, day(0), 1, 1_000);
    price.cancel(cancel_at(day(10)))?;
    assert_eq!(
        movements(&[price, voluntary], &usd())?[1].cause,
        cause(Some(CancellationKind::Voluntary), "budget")
    );
    Ok(())
}

#[test]
fn a_lapse_of_the_past_due_policy_churns_involuntarily_for_payment_failure() -> Result<(), Error> {
    let a = AccountId(Uuid::new_v4());
    let mut s = monthly(a, day(0), 1, 10_000);
    let late = invoice_of(&s, day(31), None);
    s.lapses = lapses(&[&late], 30);
    assert_eq!(
        causes(&movements(&[s], &usd())?)[1],
        (
            MovementKind::Churn,
            -10_000,
            cause(Some(CancellationKind::Involuntary), LAPSE_REASON)
        )
    );
    Ok(())
}

fn cause_row(
    month: Month,
    kind: MovementKind,
    c: Option<Cause>,
    amount: i64,
    count: i64,
) -> CauseRow {
    (
        month,
        kind,
        c.unwrap_or_else(Cause::unspecified),
        Tally {
            amount: Minor(amount),
            count,
        },
    )
}

#[test]
fn the_churn_analysis_splits_each_period_by_reason_and_by_kind_largest_first() {
    let m = Month::january(2025);
    let vol = Some(CancellationKind::Voluntary);
    let inv = Some(CancellationKind::Involuntary);
    let rows = vec![
        cause_row(m, MovementKind::Churn, cause(vol, "price"), -3_000, 1),
        cause_row(
            m,
            MovementKind::Churn,
            cause(inv, "payment_failure"),
            -5_000,
            2,
        ),
        cause_row(m, MovementKind::Churn, cause(inv, "price"), -1_000, 1),
        cause_row(m, MovementKind::Contraction, None, -200, 1),
        cause_row(m, MovementKind::Contraction, cause(vol, "budget"), -700, 1),
        cause_row(
            m + 1,
            MovementKind::Churn,
            cause(vol, "competitor"),
            -400,
            1,
        ),
        cause_row(
            m + 5,
            MovementKind::Churn,
            cause(vol, "competitor"),
            -999,
            1,
        ),
    ];
    let months = churn_analysis(&rows, m, m + 2, Granularity::Month);
    assert_eq!(months.len(), 3);
    let jan = &months[0];
    assert_eq!((jan.churn.lost, jan.churn.count), (Minor(9_000), 4));
    let by_reason: Vec<(&str, i64, i64)> = jan
        .churn
        .by_reason
        .iter()
        .map(|l| (l.key.as_str(), l.lost.get(), l.count))
        .collect();
    // price: 3,000 voluntary + 1,000 involuntary.
    assert_eq!(
        by_reason,
        vec![("payment_failure", 5_000, 2), ("price", 4_000, 2)]
    );
    let by_kind: Vec<(Option<CancellationKind>, i64, i64)> = jan
        .churn
        .by_kind
        .iter()
        .map(|l| (l.key, l.lost.get(), l.count))
        .collect();
    assert_eq!(by_kind, vec![(inv, 6_000, 3), (vol, 3_000, 1)]);
    let contraction: Vec<(&str, i64)> = jan
        .contraction
        .by_reason
        .iter()
        .map(|l| (l.key.as_str(), l.lost.get()))
        .collect();
    assert_eq!(
        contraction,
        vec![("budget", 700), (UNSPECIFIED_REASON, 200)]
    );
    assert_eq!(jan.contraction.lost, Minor(900));
    assert_eq!(months[1].churn.lost, Minor(400));
    assert_eq!(months[2].churn, LossBreakdown::default());
    let quarter = churn_analysis(&rows, m, m + 2, Granularity::Quarter);
    assert_eq!(quarter.len(), 1);
    assert_eq!(quarter[0].label, "2025-Q1");
    assert_eq!(
        (quarter[0].churn.lost, quarter[0].churn.count),
        (Minor(9_400), 5)
    );
}

#[test]
fn the_quick_ratio_is_gains_over_losses_and_undefined_without_losses() {
    let m = Month::january(2025);
    let tally = |amount, count| Tally {
        amount: Minor(amount),
        count,
    };
    let mut monthly = BTreeMap::new();
    monthly.insert((m, MovementKind::New), tally(3_000, 1));
    monthly.insert((m, MovementKind::Expansion), tally(1_000, 1));
    monthly.insert((m, MovementKind::Reactivation), tally(500, 1));
    monthly.insert((m, MovementKind::Contraction), tally(-500, 1));
    monthly.insert((m, MovementKind::Churn), tally(-1_000, 1));
    monthly.insert((m + 1, MovementKind::New), tally(2_000, 1));
    let periods = waterfall((Minor(10_000), 3), &monthly, m, m + 1, Granularity::Month);
    // (3,000 + 1,000 + 500) / (500 + 1,000) = 3.
    assert_eq!(periods[0].quick_ratio(), Some(3.0));
    assert_eq!(periods[1].quick_ratio(), None);
}

fn invoice_of(s: &Subscription, due: Instant, paid: Option<Instant>) -> Invoice {
    Invoice {
        id: Uuid::new_v4(),
        account_id: s.account_id,
        subscription_id: Some(s.id),
        currency: "USD".into(),
        amount: Minor(10_000),
        due_at: due,
        paid_at: paid,
        external_id: None,
    }
}

#[test]
fn an_invoice_unpaid_past_the_policy_churns_its_subscription_until_it_is_paid() -> Result<(), Error>
{
    let a = AccountId(Uuid::new_v4());
    let mut s = monthly(a, day(0), 1, 10_000);
    // Due on day 31, unpaid for 30 days: churn on day 61; paid on day 75.
    let late = invoice_of(&s, day(31), Some(day(75)));
    s.lapses = lapses(&[&late], 30);
    assert_eq!(
        s.lapses,
        vec![Lapse {
            from: day(61),
            to: Some(day(75))
        }]
    );
    let ms = movements(&[s], &usd())?;
    assert_eq!(
        kinds(&ms),
        vec![
            (MovementKind::New, 10_000),
            (MovementKind::Churn, -10_000),
            (MovementKind::Reactivation, 10_000)
        ]
    );
    assert_eq!((ms[1].at, ms[2].at), (day(61), day(75)));
    Ok(())
}

#[test]
fn an_invoice_paid_within_the_policy_or_with_the_policy_off_changes_nothing() {
    let a = AccountId(Uuid::new_v4());
    let s = monthly(a, day(0), 1, 10_000);
    let on_the_last_day = invoice_of(&s, day(31), Some(day(61)));
    let unpaid = invoice_of(&s, day(31), None);
    assert_eq!(lapses(&[&on_the_last_day], 30), vec![]);
    assert_eq!(lapses(&[&unpaid], 0), vec![]);
    assert_eq!(
        lapses(&[&unpaid], 30),
        vec![Lapse {
            from: day(61),
            to: None
        }]
    );
}

#[test]
fn overlapping_lapses_merge_and_an_unpaid_one_keeps_the_span_open() {
    let a = AccountId(Uuid::new_v4());
    let s = monthly(a, day(0), 1, 10_000);
    // Lapses [40, 80) and [70, 90) merge into [40, 90); [100, open) stays.
    let first = invoice_of(&s, day(10), Some(day(80)));
    let second = invoice_of(&s, day(40), Some(day(90)));
    let third = invoice_of(&s, day(70), None);
    assert_eq!(
        lapses(&[&third, &first, &second], 30),
        vec![
            Lapse {
                from: day(40),
                to: Some(day(90))
            },
            Lapse {
                from: day(100),
                to: None
            }
        ]
    );
    let fourth = invoice_of(&s, day(45), None);
    assert_eq!(
        lapses(&[&first, &fourth], 30),
        vec![Lapse {
            from: day(40),
            to: None
        }]
    );
}

// ---- property tests -------------------------------------------------------

/// A generated subscription: start day, interval, terms, trial length,
/// changes (day offset, terms) and an optional cancel day offset.
type Plan = (
    i64,
    u8,
    (i64, i64, i64),
    Option<i64>,
    Vec<(i64, (i64, i64, i64))>,
    Option<i64>,
);

fn plan() -> impl Strategy<Value = Plan> {
    let t = (0i64..20, 0i64..50_000, prop_oneof![Just(0i64), 0i64..5_000]);
    (
        0i64..700,
        0u8..3,
        t.clone(),
        proptest::option::of(1i64..40),
        proptest::collection::vec((0i64..400, t), 0..4),
        proptest::option::of(0i64..500),
    )
}

fn history() -> impl Strategy<Value = Vec<(usize, Plan)>> {
    proptest::collection::vec((0usize..6, plan()), 1..25)
}

fn accounts() -> Vec<AccountId> {
    (0..6u128).map(|n| AccountId(Uuid::from_u128(n))).collect()
}

/// Builds the subscriptions, applying each one's changes in `order`
/// (a permutation seed) to show that recording order does not matter.
fn build(history: &[(usize, Plan)], reverse: bool) -> Vec<Subscription> {
    let ids = accounts();
    history
        .iter()
        .enumerate()
        .map(
            |(i, (account, (start, interval, (q, p, d), trial, changes, cancel)))| {
                let interval =
                    [Interval::Month, Interval::Quarter, Interval::Year][usize::from(*interval)];
                let mut s = Subscription::create(
                    SubscriptionId(Uuid::from_u128(1_000 + i as u128)),
                    NewSubscription {
                        account_id: ids[*account],
                        currency: "USD".into(),
                        interval,
                        start: day(*start),
                        trial_end: trial.map(|t| day(start + t)),
                        term_end: None,
                        terms: terms(*q, *p, *d),
                    },
                );
                // A later-recorded change at the same instant wins, so keep one
                // change per instant for the order of recording not to matter.
                let mut changes: Vec<(i64, (i64, i64, i64))> = changes
                    .iter()
                    .filter(|(offset, _)| *offset > 0)
                    .fold(Vec::new(), |mut kept, c| {
                        if kept.iter().all(|k: &(i64, (i64, i64, i64))| k.0 != c.0) {
                            kept.push(*c);
                        }
                        kept
                    });
                if reverse {
                    changes.reverse();
                }
                for (offset, (q, p, d)) in changes {
                    let _ = s.change(day(start + offset), terms(q, p, d));
                }
                if let Some(c) = cancel {
                    let _ = s.cancel(cancel_at(day(start + c)));
                }
                s
            },
        )
        .collect()
}

fn per_account(subs: &[Subscription]) -> Result<BTreeMap<AccountId, Vec<Movement>>, Error> {
    let mut out = BTreeMap::new();
    for id in accounts() {
        let mine: Vec<Subscription> = subs
            .iter()
            .filter(|s| s.account_id == id)
            .cloned()
            .collect();
        out.insert(id, movements(&mine, &usd())?);
    }
    Ok(out)
}

/// Account MRR straight from the subscriptions, without movements.
fn direct_mrr(subs: &[Subscription], t: Instant) -> Minor {
    subs.iter().map(|s| s.mrr_at(t)).sum()
}

proptest! {
    #[test]
    fn every_waterfall_period_adds_up_and_matches_the_subscriptions(h in history()) {
        let subs = build(&h, false);
        let by_account = per_account(&subs)?;
        let mut deltas = BTreeMap::new();
        for ms in by_account.values() {
            add_to_rollup(&mut deltas, Segment::Smb, ms, 1);
        }
        let monthly: BTreeMap<(Month, MovementKind), Tally> =
            deltas.into_iter().map(|((m, _, k), t)| ((m, k), t)).collect();
        let first = Month::january(2025);
        let last = first + 26;
        let periods = waterfall((Minor(0), 0), &monthly, first, last, Granularity::Month);
        for (month, p) in (0..).map(|k| first + k).zip(periods.iter()) {
            let moved: Minor = p.sums.values().map(|t| t.amount).sum();
            prop_assert_eq!(p.start_mrr + moved, p.end_mrr);
            let gained = p.tally(MovementKind::New).amount
                + p.tally(MovementKind::Reactivation).amount
                + p.tally(MovementKind::Expansion).amount;
            let lost = p.tally(MovementKind::Contraction).amount + p.tally(MovementKind::Churn).amount;
            prop_assert_eq!(p.start_mrr + gained + lost, p.end_mrr);
            let end = month_start(month + 1).plus_micros(-1);
            prop_assert_eq!(p.end_mrr, direct_mrr(&subs, end));
            let paying = accounts()
                .iter()
                .filter(|a| subs.iter().filter(|s| s.account_id == **a).map(|s| s.mrr_at(end)).sum::<Minor>() > Minor(0))
                .count() as i64;
            prop_assert_eq!(p.paying_end, paying);
        }
        for pair in periods.windows(2) {
            prop_assert_eq!(pair[0].end_mrr, pair[1].start_mrr);
        }
    }

    #[test]
    fn the_sum_of_an_accounts_movements_is_its_mrr_change(h in history(), t0 in 0i64..800, len in 1i64..400) {
        let subs = build(&h, false);
        for (id, ms) in per_account(&subs)? {
            let mine: Vec<Subscription> = subs.iter().filter(|s| s.account_id == id).cloned().collect();
            let (a, b) = (day(t0), day(t0 + len));
            let moved: Minor = ms.iter().filter(|m| m.at > a && m.at <= b).map(|m| m.amount).sum();
            prop_assert_eq!(moved, direct_mrr(&mine, b) - direct_mrr(&mine, a));
            prop_assert_eq!(mrr_at(&ms, b), direct_mrr(&mine, b));
            for m in &ms {
                prop_assert_eq!(m.after - m.before, m.amount);
                prop_assert_eq!(Some(m.kind), MovementKind::classify(m.before, m.after, ms.iter().any(|x| x.at < m.at && x.after > Minor(0))));
            }
        }
    }

    #[test]
    fn gross_retention_never_exceeds_one_and_net_retention_is_at_least_gross(h in history(), t0 in 0i64..800, len in 1i64..400) {
        let subs = build(&h, false);
        let by_account = per_account(&subs)?;
        let r = Retention::from_pairs(
            by_account.values().map(|ms| (mrr_at(ms, day(t0)), mrr_at(ms, day(t0 + len)))),
        );
        prop_assert!(r.grr() <= 1.0);
        prop_assert!(r.nrr() >= r.grr());
        prop_assert!(r.logo() <= 1.0);
    }

    #[test]
    fn recording_order_does_not_change_the_movements(h in history()) {
        let in_order = per_account(&build(&h, false))?;
        let mut shuffled_history = h.clone();
        shuffled_history.reverse();
        let mut shuffled = build(&shuffled_history, true);
        shuffled.reverse();
        prop_assert_eq!(in_order, per_account(&shuffled)?);
    }
}

fn renewal(account: AccountId, currency: &str, at_stake: i64, forecast: i64) -> RenewalEntry {
    RenewalEntry {
        subscription_id: SubscriptionId::new(),
        account_id: account,
        currency: currency.into(),
        renewal_at: day(40),
        days_to_renewal: 30,
        amount_at_stake: Minor(at_stake),
        likelihood_bp: 8_000,
        likelihood_from_scoring: false,
        forecast: Minor(forecast),
        outcome: RenewalOutcome::Unspecified,
        arr_after: Minor(at_stake),
        passed: false,
    }
}

fn people(owner: &str, csm: &str) -> BookPeople {
    BookPeople {
        owner: owner.into(),
        csm: csm.into(),
    }
}

/// Four renewals: two in Cara's book (one in EUR at 1.1, already renewed),
/// one in Dan's, one of an account revenue has no people for.
fn renewal_book() -> (
    Vec<RenewalEntry>,
    std::collections::HashMap<AccountId, BookPeople>,
    FxTable,
) {
    let [a, b, c, d] = [1u128, 2, 3, 4].map(|n| AccountId(Uuid::from_u128(n)));
    let mut renewed = renewal(b, "EUR", 10_000, 5_000);
    renewed.outcome = RenewalOutcome::Renewed;
    let entries = vec![
        renewal(a, "USD", 12_000, 9_600),
        renewed,
        renewal(c, "USD", 30_000, 24_000),
        renewal(d, "USD", 500, 400),
    ];
    let people = [
        (a, people("olga", "cara")),
        (b, people("piet", "cara")),
        (c, people("olga", "dan")),
    ]
    .into_iter()
    .collect();
    let mut fx = FxTable::new("USD");
    fx.insert("EUR", day(0), Rate(1_100_000_000));
    (entries, people, fx)
}

#[test]
fn renewals_sum_per_csm_in_the_reporting_currency_largest_book_first() -> Result<(), Error> {
    let (entries, people, fx) = renewal_book();
    let books = summarize_renewals(&entries, &people, BookGrouping::Csm, None, &fx)?;
    let summary = |person: &str, renewals, at_stake, forecast, decided| RenewalSummary {
        person: person.into(),
        renewals,
        amount_at_stake: Minor(at_stake),
        forecast: Minor(forecast),
        decided,
        rate: RenewalRate::default(),
    };
    // Cara: 12,000 + 10,000 x 1.1 = 23,000 at stake; 9,600 + 5,000 x 1.1 = 15,100 forecast.
    assert_eq!(
        books,
        vec![
            summary("dan", 1, 30_000, 24_000, 0),
            summary("cara", 2, 23_000, 15_100, 1),
            summary("", 1, 500, 400, 0),
        ]
    );
    Ok(())
}

#[test]
fn one_owner_s_renewals_are_summed_alone() -> Result<(), Error> {
    let (entries, people, fx) = renewal_book();
    let books = summarize_renewals(&entries, &people, BookGrouping::Owner, Some("olga"), &fx)?;
    assert_eq!(
        books,
        vec![RenewalSummary {
            person: "olga".into(),
            renewals: 2,
            amount_at_stake: Minor(42_000),
            forecast: Minor(33_600),
            decided: 0,
            rate: RenewalRate::default(),
        }]
    );
    Ok(())
}

#[test]
fn passed_renewals_split_their_stake_into_renewed_contraction_and_churned_with_expansion_apart()
-> Result<(), Error> {
    let (mut entries, people, fx) = renewal_book();
    for e in &mut entries {
        e.passed = true;
    }
    // Cara: 12,000 kept at 12,000; 10,000 EUR (11,000 USD) kept at 13,000 EUR
    // (14,300 USD): 23,000 due and renewed, 3,300 expansion.
    entries[1].arr_after = Minor(13_000);
    // Dan: 30,000 at stake, nothing paid from the renewal date on.
    entries[2].arr_after = Minor(0);
    // No one's: 500 at stake kept at 200: 200 renewed, 300 contraction.
    entries[3].arr_after = Minor(200);
    // A renewal of Dan's still to come counts in the book, not in the rate.
    let mut coming = renewal(entries[2].account_id, "USD", 1_000, 800);
    coming.arr_after = Minor(0);
    entries.push(coming);
    // One cancelled before its date had nothing at stake: no renewal.
    let mut gone = renewal(entries[2].account_id, "USD", 0, 0);
    (gone.passed, gone.arr_after) = (true, Minor(0));
    entries.push(gone);
    let books = summarize_renewals(&entries, &people, BookGrouping::Csm, None, &fx)?;
    let rates: Vec<(&str, RenewalRate)> =
        books.iter().map(|b| (b.person.as_str(), b.rate)).collect();
    let rate = |due, due_arr, renewed, expansion, contraction, churned| RenewalRate {
        due,
        due_arr: Minor(due_arr),
        renewed_arr: Minor(renewed),
        expansion_arr: Minor(expansion),
        contraction_arr: Minor(contraction),
        churned_arr: Minor(churned),
    };
    assert_eq!(
        rates,
        vec![
            ("dan", rate(1, 30_000, 0, 0, 0, 30_000)),
            ("cara", rate(2, 23_000, 23_000, 3_300, 0, 0)),
            ("", rate(1, 500, 200, 0, 300, 0)),
        ]
    );
    assert_eq!(books[0].renewals, 3, "Dan's coming renewal is in his book");
    assert_eq!(books[0].rate.gross(), Some(0.0));
    assert_eq!(books[1].rate.gross(), Some(1.0));
    assert_eq!(books[1].rate.net(), Some(26_300.0 / 23_000.0));
    assert_eq!(books[2].rate.gross(), Some(0.4));
    assert_eq!(RenewalRate::default().gross(), None, "nothing due, no rate");
    Ok(())
}

#[test]
fn a_renewal_in_a_currency_without_a_rate_is_a_failed_precondition() {
    let (mut entries, people, fx) = renewal_book();
    entries[0].currency = "GBP".into();
    let result = summarize_renewals(&entries, &people, BookGrouping::Csm, None, &fx);
    assert!(matches!(result, Err(Error::FailedPrecondition(m)) if m.contains("GBP")));
}
