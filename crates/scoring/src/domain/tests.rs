//! Hand-worked health, alert and segment numbers.

use super::*;

const NOW: Instant = Instant::from_micros(1_767_225_600_000_000); // 2026-01-01T00:00:00Z

#[test]
fn usage_falling_from_10_to_3_scores_30() -> Result<(), String> {
    // 100 x 3 / 10 = 30.
    let s = usage_trend(3, 10).ok_or("usage missing")?;
    assert_eq!(s.score, 30);
    assert_eq!(
        s.reason,
        "usage fell from 10 to 3 events (30 days vs the 30 before)"
    );
    // 100 x 2 / 3 = 66.67 -> 67 (half up).
    assert_eq!(usage_trend(2, 3).map(|s| s.score), Some(67));
    assert_eq!(usage_trend(12, 10).map(|s| s.score), Some(100));
    assert_eq!(usage_trend(5, 0).map(|s| s.score), Some(100));
    assert_eq!(usage_trend(0, 4).map(|s| s.score), Some(0));
    assert_eq!(usage_trend(0, 0), None);
    Ok(())
}

#[test]
fn breadth_is_active_users_over_seats_capped_at_100() {
    // 100 x 7 / 20 = 35.
    assert_eq!(breadth(Some(7), Some(20)).map(|s| s.score), Some(35));
    assert_eq!(breadth(Some(30), Some(20)).map(|s| s.score), Some(100));
    assert_eq!(breadth(Some(7), None), None);
    assert_eq!(breadth(None, Some(20)), None);
    assert_eq!(breadth(Some(7), Some(0)), None);
}

#[test]
fn late_payments_and_downgrades_cost_their_penalty_each() {
    // 100 - 2 x 40 = 20; 100 - 3 x 40 = -20 -> 0.
    assert_eq!(payment_punctuality(true, 2, 40).map(|s| s.score), Some(20));
    assert_eq!(payment_punctuality(true, 3, 40).map(|s| s.score), Some(0));
    assert_eq!(payment_punctuality(true, 0, 40).map(|s| s.score), Some(100));
    assert_eq!(payment_punctuality(false, 0, 40), None);
    // 100 - 1 x 50 = 50.
    assert_eq!(plan_changes(true, 1, 50).map(|s| s.score), Some(50));
    assert_eq!(plan_changes(false, 0, 50), None);
}

#[test]
fn tickets_going_quiet_and_unresolved_complaints_lower_support_engagement() -> Result<(), String> {
    // Quiet: 50; one complaint open: 50 - 25 = 25.
    let s = support_engagement(0, 4, 1, 25).ok_or("support missing")?;
    assert_eq!(s.score, 25);
    assert!(s.reason.starts_with("tickets went quiet"));
    // Active tickets, two complaints: 100 - 2 x 25 = 50.
    assert_eq!(support_engagement(3, 2, 2, 25).map(|s| s.score), Some(50));
    assert_eq!(support_engagement(0, 0, 0, 25), None);
    Ok(())
}

#[test]
fn sentiment_maps_nps_and_csat_to_0_to_100_and_averages_both() {
    // NPS answers 9 and 6: mean 7.5 -> 75.
    assert_eq!(sentiment((15, 2), (0, 0)).map(|s| s.score), Some(75));
    // CSAT 4 and 5: (9 - 2) x 25 / 2 = 87.5 -> 88.
    assert_eq!(sentiment((0, 0), (9, 2)).map(|s| s.score), Some(88));
    // Both: (75 + 88) / 2 = 81.5 -> 82.
    assert_eq!(sentiment((15, 2), (9, 2)).map(|s| s.score), Some(82));
    assert_eq!(sentiment((0, 0), (0, 0)), None);
}

#[test]
fn onboarding_rewards_fast_first_value_and_penalises_overdue_onboarding() {
    let start = NOW.plus_days(-100);
    // Reached after 20 days (target 30): 100; after 45: 75; after 90: 50.
    assert_eq!(
        onboarding(Some(start), Some(start.plus_days(20)), NOW, 30).map(|s| s.score),
        Some(100)
    );
    assert_eq!(
        onboarding(Some(start), Some(start.plus_days(45)), NOW, 30).map(|s| s.score),
        Some(75)
    );
    assert_eq!(
        onboarding(Some(start), Some(start.plus_days(90)), NOW, 30).map(|s| s.score),
        Some(50)
    );
    // Not reached, 40 days in: 70 - 2 x (40 - 30) = 50.
    assert_eq!(
        onboarding(Some(NOW.plus_days(-40)), None, NOW, 30).map(|s| s.score),
        Some(50)
    );
    // Not reached, 10 days in: 70.
    assert_eq!(
        onboarding(Some(NOW.plus_days(-10)), None, NOW, 30).map(|s| s.score),
        Some(70)
    );
    assert_eq!(onboarding(None, None, NOW, 30), None);
}

#[test]
fn stakeholder_departures_and_renewal_proximity() {
    // One departure: 100 - 60 = 40.
    assert_eq!(
        stakeholder_stability(true, 1, 60).map(|s| s.score),
        Some(40)
    );
    assert_eq!(stakeholder_stability(false, 0, 60), None);
    // Renewal in 45 of 90 days: 50 + 50 x 45 / 90 = 75.
    assert_eq!(
        renewal_proximity(Some(NOW.plus_days(45)), NOW, 90).map(|s| s.score),
        Some(75)
    );
    assert_eq!(
        renewal_proximity(Some(NOW.plus_days(200)), NOW, 90).map(|s| s.score),
        Some(100)
    );
    assert_eq!(
        renewal_proximity(Some(NOW.plus_days(-3)), NOW, 90).map(|s| s.score),
        Some(50)
    );
    assert_eq!(renewal_proximity(None, NOW, 90), None);
}

fn inputs() -> Inputs {
    Inputs {
        now: NOW,
        usage_recent: 3,
        usage_prior: 10,
        active_users: Some(7),
        seats: Some(20),
        paying: true,
        late_payments: 1,
        downgrades: 0,
        tickets_recent: 2,
        tickets_prior: 2,
        complaints_open: 0,
        nps: (15, 2),
        csat: (0, 0),
        onboarding_started_at: Some(NOW.plus_days(-100)),
        first_value_at: Some(NOW.plus_days(-80)),
        stakeholders_left: 0,
        listening: true,
        renewal_at: Some(NOW.plus_days(45)),
    }
}

#[test]
fn the_total_is_the_weighted_mean_of_every_component() -> Result<(), String> {
    // usage 30 (w25), breadth 35 (w10), payment 60 (w15), plan 100 (w10),
    // support 100 (w10), sentiment 75 (w10), onboarding 100 (w10),
    // stakeholders 100 (w5), renewal 75 (w5):
    // 750 + 350 + 900 + 1000 + 1000 + 750 + 1000 + 500 + 375 = 6625 / 100
    // = 66.25 -> 66, YELLOW.
    let h = health(&inputs(), &Scorecard::default()).ok_or("no health")?;
    let scores: Vec<i32> = h.components.iter().map(|(s, _, _)| s.score).collect();
    assert_eq!(scores, [30, 35, 60, 100, 100, 75, 100, 100, 75]);
    assert_eq!(h.score, 66);
    assert_eq!(h.band, Band::Yellow);
    assert!(h.missing.is_empty());
    assert_eq!(h.components[0].2, 2500, "usage weighs 25 of 100");
    Ok(())
}

#[test]
fn missing_components_are_dropped_and_the_weights_renormalised() -> Result<(), String> {
    // Without sentiment (w10) and breadth (w10): 6625 - 750 - 350 = 5525
    // over 80 = 69.06 -> 69; usage now weighs 25/80 = 3125 bp.
    let i = Inputs {
        nps: (0, 0),
        active_users: None,
        ..inputs()
    };
    let h = health(&i, &Scorecard::default()).ok_or("no health")?;
    assert_eq!(h.score, 69);
    assert_eq!(h.missing, [Component::Breadth, Component::Sentiment]);
    assert_eq!(h.components[0].2, 3125);
    let total_bp: i32 = h.components.iter().map(|(_, _, bp)| *bp).sum();
    assert_eq!(total_bp, 10_000);
    Ok(())
}

#[test]
fn nothing_known_means_no_score() {
    assert_eq!(
        health(
            &Inputs {
                now: NOW,
                ..Inputs::default()
            },
            &Scorecard::default()
        ),
        None
    );
}

#[test]
fn band_edges_are_49_50_and_75_76() {
    let card = Scorecard::default();
    assert_eq!(band(0, &card), Band::Red);
    assert_eq!(band(49, &card), Band::Red);
    assert_eq!(band(50, &card), Band::Yellow);
    assert_eq!(band(75, &card), Band::Yellow);
    assert_eq!(band(76, &card), Band::Green);
    assert_eq!(band(100, &card), Band::Green);
}

#[test]
fn a_rounded_total_lands_on_the_band_edge_it_rounds_to() -> Result<(), String> {
    // Two components of equal weight: (49 + 50) / 2 = 49.5 -> 50, YELLOW;
    // (98 + 53) / 2 = 75.5 -> 76, GREEN.
    let card = Scorecard {
        weights: [1, 1, 0, 0, 0, 0, 0, 0, 0],
        ..Scorecard::default()
    };
    let two = |a: i32, b: i32| {
        vec![
            Scored {
                component: Component::UsageTrend,
                score: a,
                reason: String::new(),
            },
            Scored {
                component: Component::Breadth,
                score: b,
                reason: String::new(),
            },
        ]
    };
    let h = total(two(49, 50), &card).ok_or("no health")?;
    assert_eq!((h.score, h.band), (50, Band::Yellow));
    let h = total(two(49, 48), &card).ok_or("no health")?;
    assert_eq!((h.score, h.band), (49, Band::Red));
    let h = total(two(98, 53), &card).ok_or("no health")?;
    assert_eq!((h.score, h.band), (76, Band::Green));
    let h = total(two(98, 52), &card).ok_or("no health")?;
    assert_eq!((h.score, h.band), (75, Band::Yellow));
    Ok(())
}

#[test]
fn a_scorecard_with_other_weights_gives_another_score() -> Result<(), String> {
    // Only usage counts: the score is usage's 30, RED.
    let card = Scorecard {
        weights: [1, 0, 0, 0, 0, 0, 0, 0, 0],
        ..Scorecard::default()
    };
    let h = health(&inputs(), &card).ok_or("no health")?;
    assert_eq!((h.score, h.band), (30, Band::Red));
    Ok(())
}

fn t(score: i32, band: Band, risk: Option<i32>) -> Trigger {
    Trigger {
        score,
        band,
        risk_bp: risk,
    }
}

#[test]
fn entering_red_raises_one_alert_and_staying_red_raises_none() {
    let yellow = t(60, Band::Yellow, None);
    let red = t(40, Band::Red, None);
    assert_eq!(
        alerts(Some(yellow), red, None, 15, 6000),
        [AlertKind::EnteredRed]
    );
    assert!(alerts(Some(red), t(35, Band::Red, None), None, 15, 6000).is_empty());
    assert_eq!(alerts(None, red, None, 15, 6000), [AlertKind::EnteredRed]);
}

#[test]
fn a_drop_below_the_30_day_baseline_and_a_risk_crossing_raise_once() {
    // Baseline 80; 66 is a drop of 14 (< 15): nothing; 65 is 15: SCORE_DROP.
    let before = t(66, Band::Yellow, Some(5000));
    let after = t(65, Band::Yellow, Some(6000));
    assert_eq!(
        alerts(Some(before), after, Some(80), 15, 6000),
        [AlertKind::ScoreDrop, AlertKind::HighRisk]
    );
    assert!(
        alerts(
            Some(after),
            t(60, Band::Yellow, Some(7000)),
            Some(80),
            15,
            6000
        )
        .is_empty()
    );
}

#[test]
fn tiers_follow_mrr_rank_then_flags() {
    // 20 paying accounts with MRR 100, 200, ..., 2000: the top 5% is one
    // account (2000), the next 15% three (1900, 1800, 1700).
    let mrrs: Vec<Minor> = (1..=20)
        .map(|i| Minor(i * 100))
        .chain([Minor::ZERO; 2])
        .collect();
    let c = cutoffs(mrrs, 5, 15, 50);
    assert_eq!(c.diamond_min, Some(Minor(2000)));
    assert_eq!(c.gold_min, Some(Minor(1700)));
    // The 50th percentile: the top 10 of 20 are high value, from 1100 up.
    assert_eq!(c.value_min, Some(Minor(1100)));
    let f = |mrr: i64| ValueFacts {
        mrr: Minor(mrr),
        strategic: false,
        band: Band::Green,
        score: 80,
        late_recently: false,
        expanded_recently: false,
        dormant: false,
    };
    assert_eq!(tier(&f(2000), &c), Tier::Diamond);
    assert_eq!(tier(&f(1700), &c), Tier::Gold);
    assert_eq!(tier(&f(1600), &c), Tier::General);
    assert_eq!(
        tier(
            &ValueFacts {
                strategic: true,
                ..f(100)
            },
            &c
        ),
        Tier::Strategic
    );
    assert_eq!(
        tier(
            &ValueFacts {
                band: Band::Red,
                ..f(100)
            },
            &c
        ),
        Tier::Problem
    );
    assert_eq!(
        tier(
            &ValueFacts {
                late_recently: true,
                expanded_recently: true,
                ..f(100)
            },
            &c
        ),
        Tier::Problem
    );
    assert_eq!(
        tier(
            &ValueFacts {
                expanded_recently: true,
                ..f(100)
            },
            &c
        ),
        Tier::Potential
    );
    assert_eq!(quadrant(&f(1100), &c, 60), Quadrant::A);
    assert_eq!(
        quadrant(
            &ValueFacts {
                score: 59,
                ..f(1100)
            },
            &c,
            60
        ),
        Quadrant::B
    );
    assert_eq!(quadrant(&f(1000), &c, 60), Quadrant::C);
    assert_eq!(
        quadrant(&ValueFacts { score: 10, ..f(0) }, &c, 60),
        Quadrant::D
    );
    assert_eq!(
        quadrant(
            &ValueFacts {
                dormant: true,
                ..f(2000)
            },
            &c,
            60
        ),
        Quadrant::E
    );
}

#[test]
fn the_top_20_percent_share_is_measured_in_basis_points() {
    // 10 accounts: two with 4000, eight with 250: total 10000, top 2 carry 8000.
    let mut mrrs = vec![Minor(4000), Minor(4000)];
    mrrs.extend([Minor(250); 8]);
    assert_eq!(top_20_share_bp(mrrs), 8000);
    assert_eq!(top_20_share_bp(vec![]), 0);
    assert_eq!(share_bp(Minor(1), Minor(3)), 3333);
}
