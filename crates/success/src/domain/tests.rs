//! The success rules with hand-worked expectations.

use super::*;

fn playbook(mode: PlaybookMode) -> Playbook {
    Playbook {
        id: PlaybookId(Uuid::from_u128(7)),
        version: 1,
        spec: PlaybookSpec {
            name: "Save red accounts".into(),
            description: String::new(),
            trigger: Trigger {
                kind: TriggerKind::EnteredRed,
                percent: 0,
                stage: Stage::Unspecified,
                days: 0,
                ..Trigger::default()
            },
            filter: Filter::default(),
            cta_type: CtaType::Risk,
            priority: Priority::High,
            owner_pool: vec![],
            sla_days: 7,
            steps: vec![],
            auto_close: AutoClose::HealthOutOfRed,
            risk_threshold_bp: 0,
            enrollment_limit_days: 30,
            mode,
            holdout_percent: 50,
        },
        created_at: Instant::EPOCH,
        updated_at: Instant::EPOCH,
    }
}

fn facts(n: u128) -> AccountFacts {
    AccountFacts {
        account_id: AccountId(Uuid::from_u128(n)),
        segment: Segment::MidMarket,
        mrr: Minor(50_000),
        red: true,
        ..AccountFacts::default()
    }
}

fn event(kind: TriggerKind) -> Event {
    Event {
        kind,
        account_id: AccountId(Uuid::from_u128(1)),
        at: Instant::EPOCH.plus_days(100),
        reason: "entered red".into(),
        percent: 0,
        stage: Stage::Unspecified,
        segment: None,
    }
}

#[test]
fn a_trigger_fires_on_its_kind_and_a_contraction_only_past_its_percent() {
    let red = Trigger {
        kind: TriggerKind::EnteredRed,
        percent: 0,
        stage: Stage::Unspecified,
        days: 0,
        ..Trigger::default()
    };
    assert!(red.fires_on(&event(TriggerKind::EnteredRed)));
    assert!(!red.fires_on(&event(TriggerKind::HighRisk)));
    let contraction = Trigger {
        kind: TriggerKind::Contraction,
        percent: 20,
        stage: Stage::Unspecified,
        days: 0,
        ..Trigger::default()
    };
    let mut small = event(TriggerKind::Contraction);
    small.percent = 19;
    assert!(!contraction.fires_on(&small));
    small.percent = 20;
    assert!(contraction.fires_on(&small));
    let onboarding = Trigger {
        kind: TriggerKind::StageEntered,
        percent: 0,
        stage: Stage::Onboarding,
        days: 0,
        ..Trigger::default()
    };
    let mut entered = event(TriggerKind::StageEntered);
    entered.stage = Stage::Impact;
    assert!(!onboarding.fires_on(&entered));
    entered.stage = Stage::Onboarding;
    assert!(onboarding.fires_on(&entered));
}

fn moved(tier: (Tier, Tier), quadrant: (Quadrant, Quadrant)) -> SegmentMove {
    SegmentMove {
        tier_before: tier.0,
        tier_after: tier.1,
        quadrant_before: quadrant.0,
        quadrant_after: quadrant.1,
    }
}

fn segment_event(kind: TriggerKind, m: SegmentMove) -> Event {
    let mut e = event(kind);
    e.segment = Some(m);
    e
}

#[test]
fn a_segment_move_is_a_tier_event_a_quadrant_event_or_both() {
    use Quadrant::{A, B};
    use Tier::{Diamond, Gold};
    assert_eq!(
        moved((Gold, Diamond), (A, A)).kinds(),
        [TriggerKind::TierEntered]
    );
    assert_eq!(
        moved((Gold, Gold), (A, B)).kinds(),
        [TriggerKind::QuadrantEntered]
    );
    assert_eq!(
        moved((Gold, Diamond), (A, B)).kinds(),
        [TriggerKind::TierEntered, TriggerKind::QuadrantEntered]
    );
    assert!(moved((Gold, Gold), (B, B)).kinds().is_empty());
}

#[test]
fn a_tier_trigger_fires_on_entering_a_listed_tier_only() {
    use Quadrant::A;
    use Tier::{Diamond, General, Gold, Unspecified};
    let diamond = Trigger {
        kind: TriggerKind::TierEntered,
        tiers: vec![Diamond],
        ..Trigger::default()
    };
    let entered = |from, to| segment_event(TriggerKind::TierEntered, moved((from, to), (A, A)));
    assert!(diamond.fires_on(&entered(Gold, Diamond)));
    // An account's first score enters its tier.
    assert!(diamond.fires_on(&entered(Unspecified, Diamond)));
    assert!(!diamond.fires_on(&entered(Diamond, Gold)));
    assert!(!diamond.fires_on(&entered(General, Gold)));
    // Staying DIAMOND is not entering it.
    assert!(!diamond.fires_on(&entered(Diamond, Diamond)));
    // A quadrant event of a DIAMOND account is not a tier event.
    assert!(!diamond.fires_on(&segment_event(
        TriggerKind::QuadrantEntered,
        moved((Gold, Diamond), (A, A))
    )));
}

#[test]
fn a_quadrant_trigger_fires_on_a_listed_tier_entering_a_listed_quadrant() {
    use Quadrant::{A, B, C, E};
    use Tier::{Diamond, General, Gold};
    let vip_at_risk = Trigger {
        kind: TriggerKind::QuadrantEntered,
        tiers: vec![Diamond, Gold],
        quadrants: vec![B, E],
        ..Trigger::default()
    };
    let entered = |tier, from, to| {
        segment_event(
            TriggerKind::QuadrantEntered,
            moved((tier, tier), (from, to)),
        )
    };
    assert!(vip_at_risk.fires_on(&entered(Gold, A, B)));
    assert!(vip_at_risk.fires_on(&entered(Diamond, A, E)));
    assert!(!vip_at_risk.fires_on(&entered(General, C, E)));
    assert!(!vip_at_risk.fires_on(&entered(Gold, B, A)));
    assert!(!vip_at_risk.fires_on(&entered(Gold, B, B)));
    // The tier the account is in now counts: GOLD entering DIAMOND while
    // falling into B fires.
    assert!(vip_at_risk.fires_on(&segment_event(
        TriggerKind::QuadrantEntered,
        moved((Tier::Potential, Gold), (A, B))
    )));
    // No tiers listed: any tier.
    let any_tier = Trigger {
        tiers: vec![],
        ..vip_at_risk.clone()
    };
    assert!(any_tier.fires_on(&entered(General, C, E)));
}

#[test]
fn a_filter_admits_by_segment_and_mrr_range() {
    let filter = Filter {
        segments: vec![Segment::Enterprise, Segment::MidMarket],
        min_mrr: Minor(10_000),
        max_mrr: Some(Minor(50_000)),
    };
    assert!(filter.admits(&facts(1)));
    let mut smb = facts(1);
    smb.segment = Segment::Smb;
    assert!(!filter.admits(&smb));
    let mut big = facts(1);
    big.mrr = Minor(50_001);
    assert!(!filter.admits(&big));
    let mut small = facts(1);
    small.mrr = Minor(9_999);
    assert!(!filter.admits(&small));
}

#[test]
fn a_repeated_trigger_updates_the_open_cta_instead_of_opening_another() {
    let open = OpenCta {
        id: CtaId(Uuid::from_u128(9)),
        status: CtaStatus::InProgress,
        snooze_until: None,
    };
    let at = Instant::EPOCH.plus_days(100);
    let p = playbook(PlaybookMode::On);
    assert_eq!(decide(&p, &facts(1), None, None, at, "s"), Decision::Open);
    assert_eq!(
        decide(&p, &facts(1), Some(open), Some(at), at, "s"),
        Decision::Update(open.id)
    );
}

#[test]
fn a_snoozed_cta_suppresses_its_trigger_until_the_snooze_ends() {
    let until = Instant::EPOCH.plus_days(110);
    let open = OpenCta {
        id: CtaId(Uuid::from_u128(9)),
        status: CtaStatus::Snoozed,
        snooze_until: Some(until),
    };
    let p = playbook(PlaybookMode::On);
    let before = until.plus_micros(-1);
    assert_eq!(
        decide(&p, &facts(1), Some(open), None, before, "s"),
        Decision::Skip(Skip::Snoozed)
    );
    assert_eq!(
        decide(&p, &facts(1), Some(open), None, until, "s"),
        Decision::Update(open.id)
    );
}

#[test]
fn the_enrollment_limit_skips_a_trigger_inside_its_window_only() {
    let p = playbook(PlaybookMode::On);
    let last = Instant::EPOCH.plus_days(100);
    let inside = last.plus_days(30).plus_micros(-1);
    assert_eq!(
        decide(&p, &facts(1), None, Some(last), inside, "s"),
        Decision::Skip(Skip::Enrolled)
    );
    assert_eq!(
        decide(&p, &facts(1), None, Some(last), last.plus_days(30), "s"),
        Decision::Open
    );
}

#[test]
fn an_off_playbook_only_observes_and_a_filtered_account_opens_nothing() {
    let at = Instant::EPOCH.plus_days(100);
    let open = OpenCta {
        id: CtaId(Uuid::from_u128(9)),
        status: CtaStatus::Open,
        snooze_until: None,
    };
    assert_eq!(
        decide(
            &playbook(PlaybookMode::Off),
            &facts(1),
            Some(open),
            None,
            at,
            "s"
        ),
        Decision::Observe
    );
    let mut p = playbook(PlaybookMode::On);
    p.spec.filter.segments = vec![Segment::Enterprise];
    assert_eq!(
        decide(&p, &facts(1), None, None, at, "s"),
        Decision::Skip(Skip::Filtered)
    );
}

#[test]
fn the_holdout_draw_is_stable_and_holds_out_about_its_share() {
    let p = playbook(PlaybookMode::Holdout);
    let at = Instant::EPOCH.plus_days(100);
    let held = (0..2_000u128)
        .filter(|n| decide(&p, &facts(*n), None, None, at, "seed") == Decision::HoldOut)
        .count();
    // 50% of 2,000 with a binomial standard deviation of about 22.
    assert!((900..=1100).contains(&held), "{held} held out");
    // The same account, playbook and seed always land in the same arm.
    for n in 0..50u128 {
        let a = held_out(p.id, facts(n).account_id, "seed", 50);
        assert_eq!(a, held_out(p.id, facts(n).account_id, "seed", 50));
    }
    assert!(!held_out(p.id, facts(1).account_id, "seed", 0));
    assert!(held_out(p.id, facts(1).account_id, "seed", 100));
}

#[test]
fn the_owner_is_the_csm_else_the_owner_else_the_least_loaded_pool_member() {
    let pool = vec![
        "zoe@x.io".to_owned(),
        "amy@x.io".to_owned(),
        "bob@x.io".to_owned(),
    ];
    let load = |m: &str| match m {
        "zoe@x.io" => 1,
        "amy@x.io" => 3,
        _ => 1,
    };
    let mut f = facts(1);
    f.csm = "csm@x.io".into();
    f.owner = "ae@x.io".into();
    assert_eq!(assign_owner(&f, &pool, load).as_deref(), Some("csm@x.io"));
    f.csm.clear();
    assert_eq!(assign_owner(&f, &pool, load).as_deref(), Some("ae@x.io"));
    f.owner.clear();
    // zoe and bob both have 1 open CTA: the tie goes to the first name.
    assert_eq!(assign_owner(&f, &pool, load).as_deref(), Some("bob@x.io"));
    assert_eq!(assign_owner(&f, &[], load), None);
}

#[test]
fn illegal_status_changes_name_both_states() {
    assert!(check_transition(CtaStatus::Open, CtaStatus::InProgress, Outcome::Unspecified).is_ok());
    assert!(check_transition(CtaStatus::Snoozed, CtaStatus::Open, Outcome::Unspecified).is_ok());
    assert!(check_transition(CtaStatus::InProgress, CtaStatus::Closed, Outcome::Saved).is_ok());
    assert!(check_transition(CtaStatus::Closed, CtaStatus::Open, Outcome::Unspecified).is_ok());
    let Err(Error::FailedPrecondition(message)) = check_transition(
        CtaStatus::Closed,
        CtaStatus::InProgress,
        Outcome::Unspecified,
    ) else {
        panic!("expected FAILED_PRECONDITION");
    };
    assert_eq!(
        message,
        "a CTA cannot go from CTA_STATUS_CLOSED to CTA_STATUS_IN_PROGRESS"
    );
    assert!(matches!(
        check_transition(CtaStatus::Open, CtaStatus::Closed, Outcome::AutoClosed),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn auto_close_follows_the_playbooks_condition() {
    let mut f = facts(1);
    assert!(!auto_closes(AutoClose::HealthOutOfRed, 0, &f));
    f.red = false;
    assert!(auto_closes(AutoClose::HealthOutOfRed, 0, &f));
    f.churn_risk_bp = Some(2_999);
    assert!(auto_closes(AutoClose::RiskBelowThreshold, 3_000, &f));
    f.churn_risk_bp = Some(3_000);
    assert!(!auto_closes(AutoClose::RiskBelowThreshold, 3_000, &f));
    assert!(!auto_closes(AutoClose::FirstValue, 0, &f));
    assert!(!auto_closes(AutoClose::Unspecified, 0, &f));
}

#[test]
fn the_effect_and_its_interval_match_the_hand_worked_figures() -> Result<(), String> {
    // Treated: 8 of 40 churned (0.2); held out: 10 of 25 (0.4).
    // Variance 0.2*0.8/40 + 0.4*0.6/25 = 0.004 + 0.0096 = 0.0136,
    // half width 1.96 * sqrt(0.0136) = 0.2285733...
    let e = effect(
        ArmCounts {
            triggers: 45,
            matured: 40,
            churned: 8,
            ..ArmCounts::default()
        },
        ArmCounts {
            triggers: 30,
            matured: 25,
            churned: 10,
            ..ArmCounts::default()
        },
    )?;
    assert!((e.difference - -0.2).abs() < 1e-12);
    assert!((e.low - -0.428_573_314_277_935_8).abs() < 1e-12);
    assert!((e.high - 0.028_573_314_277_935_8).abs() < 1e-12);
    Ok(())
}

#[test]
fn an_arm_below_twenty_matured_triggers_gives_counts_not_an_effect() {
    let enough = ArmCounts {
        triggers: 20,
        matured: 20,
        churned: 2,
        ..ArmCounts::default()
    };
    let few = ArmCounts {
        triggers: 30,
        matured: 19,
        churned: 5,
        ..ArmCounts::default()
    };
    assert_eq!(
        effect(enough, few).err().as_deref(),
        Some(
            "an effect needs 20 matured triggers in each arm; there are 20 treated and 19 in the comparison group"
        )
    );
    assert_eq!(few.churn_rate(), Some(5.0 / 19.0));
    assert_eq!(ArmCounts::default().churn_rate(), None);
}

#[test]
fn a_churn_counts_within_the_horizon_inclusive() {
    let at = Instant::EPOCH.plus_days(10);
    assert!(churned_within(at, 90, &[at.plus_days(90)]));
    assert!(!churned_within(at, 90, &[at.plus_days(90).plus_micros(1)]));
    assert!(!churned_within(at, 90, &[at.plus_micros(-1)]));
    assert_eq!(median(&mut [5.0, 1.0, 3.0, 2.0]), Some(2.5));
    assert_eq!(median(&mut []), None);
}

#[test]
fn a_spec_round_trips_through_its_stored_form() -> Result<(), serde_json::Error> {
    let mut spec = playbook(PlaybookMode::Holdout).spec;
    spec.filter.segments = vec![Segment::Smb];
    spec.steps = vec![Step {
        title: "Call the champion".into(),
        due_offset_days: 2,
        action: Some(Action::Webhook {
            url: "https://crm.example/hooks".into(),
            secret: "s3cret".into(),
        }),
    }];
    let stored = serde_json::to_string(&spec)?;
    assert!(stored.contains("\"mode\":3"), "{stored}");
    assert_eq!(serde_json::from_str::<PlaybookSpec>(&stored)?, spec);
    Ok(())
}

#[test]
fn a_trigger_whose_auto_close_condition_already_holds_opens_nothing() {
    let mut p = playbook(PlaybookMode::On);
    p.spec.auto_close = AutoClose::FirstValue;
    let mut f = facts(1);
    let at = Instant::EPOCH.plus_days(100);
    assert_eq!(decide(&p, &f, None, None, at, "s"), Decision::Open);
    f.first_value = true;
    assert_eq!(
        decide(&p, &f, None, None, at, "s"),
        Decision::Skip(Skip::Resolved)
    );
}

#[test]
fn a_ctas_owner_is_emailed_by_their_settings_or_when_the_owner_is_an_address() {
    let (risk, high) = (CtaType::Risk, Priority::High);
    assert_eq!(
        email_recipient("ana@acme.io", None, risk, high).as_deref(),
        Some("ana@acme.io")
    );
    assert_eq!(email_recipient("Ana Lima", None, risk, high), None);
    let mut ana = Person {
        person: "Ana Lima".into(),
        email: "ana.lima@acme.io".into(),
        cta_types: vec![CtaType::Risk, CtaType::Renewal],
        min_priority: Priority::Medium,
        muted: false,
        daily_digest: false,
        digest_hour_utc: 0,
    };
    assert_eq!(
        email_recipient("Ana Lima", Some(&ana), risk, high).as_deref(),
        Some("ana.lima@acme.io")
    );
    assert_eq!(
        email_recipient("Ana Lima", Some(&ana), risk, Priority::Low),
        None
    );
    assert_eq!(
        email_recipient("Ana Lima", Some(&ana), CtaType::WinBack, high),
        None
    );
    ana.muted = true;
    assert_eq!(email_recipient("Ana Lima", Some(&ana), risk, high), None);
    for bad in [
        "",
        "ana",
        "ana@",
        "@acme.io",
        "ana@acme",
        "a b@acme.io",
        "ana@x@acme.io",
        "<ana@acme.io>",
    ] {
        assert!(!is_address(bad), "{bad:?}");
    }
}

#[test]
fn a_win_back_counts_as_lost_unless_the_account_came_back_within_the_horizon() {
    let at = Instant::EPOCH.plus_days(10);
    let back = [at.plus_days(30)];
    assert!(!lost_within(TriggerKind::Churn, at, 90, &[at], &back));
    assert!(lost_within(TriggerKind::Churn, at, 20, &[at], &back));
    assert!(lost_within(TriggerKind::Churn, at, 90, &[at], &[]));
    // Other triggers: lost when the MRR reached zero within the horizon,
    // whatever came after.
    assert!(lost_within(
        TriggerKind::EnteredRed,
        at,
        90,
        &[at.plus_days(5)],
        &back
    ));
    assert!(!lost_within(TriggerKind::EnteredRed, at, 90, &[], &back));
}

fn day(n: i64) -> Instant {
    Instant::from_micros(n * MICROS_PER_DAY)
}

#[test]
fn the_score_at_an_instant_is_the_latest_at_or_before_it() {
    let scores = [(day(10), 70), (day(2), 55), (day(20), 40)];
    assert_eq!(score_at(&scores, day(1)), None, "before the first score");
    assert_eq!(score_at(&scores, day(2)), Some(55), "at it");
    assert_eq!(score_at(&scores, day(9)), Some(55));
    assert_eq!(score_at(&scores, day(15)), Some(70));
    assert_eq!(score_at(&scores, day(400)), Some(40));
}

#[test]
fn the_health_change_is_the_score_30_days_on_minus_the_score_at_the_trigger() {
    let scores = [(day(0), 30), (day(12), 45), (day(35), 62)];
    // Trigger on day 5: 30 at the trigger, 62 on day 35 (the day-35 score is at or before it).
    assert_eq!(health_change(&scores, day(5), day(100)), Some(32));
    // Trigger on day 1: 30 then, 45 on day 31.
    assert_eq!(health_change(&scores, day(1), day(100)), Some(15));
    // Not yet 30 days old.
    assert_eq!(health_change(&scores, day(5), day(34)), None);
    // No score at the trigger.
    let later = [(day(10), 50)];
    assert_eq!(health_change(&later, day(5), day(100)), None);
}

#[test]
fn an_arm_averages_the_health_changes_it_has() {
    let mut arm = ArmCounts::default();
    assert_eq!(arm.health_change_30d(), None);
    for change in [Some(32), Some(15), None, Some(-8)] {
        arm.add_health_change(change);
    }
    // (32 + 15 - 8) / 3 = 13
    assert_eq!(arm.health_measured, 3);
    assert_eq!(arm.health_change_total, 39);
    assert_eq!(arm.health_change_30d(), Some(13.0));
}

#[test]
fn a_template_fills_known_names_and_leaves_the_rest() {
    let values = [
        ("account", "Acme"),
        ("step", "Call {owner}"),
        ("owner", "ana"),
    ];
    assert_eq!(
        fill("{step} at {account} ({owner}) {", &values),
        "Call {owner} at Acme (ana) {",
        "values are not expanded again"
    );
    assert_eq!(unknown_placeholder("{account}: {reason} {link}"), None);
    assert_eq!(unknown_placeholder("Hi {name}"), Some("name".into()));
    assert_eq!(unknown_placeholder("Hi {account"), Some("account".into()));
}

#[test]
fn only_http_and_https_urls_with_a_host_are_web_urls() {
    assert!(is_web_url("https://hooks.example/services/T0/B0"));
    assert!(is_web_url("http://127.0.0.1:8080/hook?x=1"));
    assert!(!is_web_url("ftp://hooks.example/x"));
    assert!(!is_web_url("https:///nohost"));
    assert!(!is_web_url("hooks.example/x"));
    assert!(!is_web_url("https://hooks.example/a b"));
    assert_eq!(
        url_host("https://hooks.example:8443/x?y"),
        "hooks.example:8443"
    );
}

fn hook(url: &str, secret: &str) -> Step {
    Step {
        title: format!("Call {url}"),
        due_offset_days: 0,
        action: Some(Action::Webhook {
            url: url.into(),
            secret: secret.into(),
        }),
    }
}

#[test]
fn an_empty_webhook_secret_keeps_the_one_stored_for_the_same_url_and_is_refused_otherwise() {
    let current = [
        hook("https://a.example/x", "alpha"),
        hook("https://b.example/y", "beta"),
    ];
    // Sent back reordered and without secrets: each keeps its URL's secret;
    // a secret sent replaces the stored one.
    let mut steps = vec![
        hook("https://b.example/y", ""),
        hook("https://a.example/x", "gamma"),
        hook("https://a.example/x", ""),
    ];
    assert_eq!(keep_secrets(&mut steps, Some(&current)), Ok(()));
    assert_eq!(
        steps,
        [
            hook("https://b.example/y", "beta"),
            hook("https://a.example/x", "gamma"),
            hook("https://a.example/x", "alpha"),
        ]
    );
    // A new URL without a secret names its step; so does any on create.
    let mut moved = vec![
        hook("https://a.example/x", ""),
        hook("https://c.example/z", ""),
    ];
    assert_eq!(keep_secrets(&mut moved, Some(&current)), Err(1));
    let mut created = vec![hook("https://a.example/x", "")];
    assert_eq!(keep_secrets(&mut created, None), Err(0));
    let mut given = vec![hook("https://a.example/x", "delta")];
    assert_eq!(keep_secrets(&mut given, None), Ok(()));
    assert_eq!(given, [hook("https://a.example/x", "delta")]);
}

#[test]
fn a_digest_is_due_from_its_hour_of_the_day() {
    let start = day(100);
    let hour = MICROS_PER_DAY / 24;
    assert!(digest_due(start, 0, start));
    assert!(!digest_due(
        start,
        8,
        Instant::from_micros(start.micros() + 8 * hour - 1)
    ));
    assert!(digest_due(
        start,
        8,
        Instant::from_micros(start.micros() + 8 * hour)
    ));
}

fn renewal(account: u128, subscription: &str, at: Instant) -> RenewalDate {
    RenewalDate {
        account_id: AccountId(Uuid::from_u128(account)),
        subscription_id: subscription.into(),
        renews_at: at,
    }
}

#[test]
fn a_renewal_is_due_once_its_date_is_within_the_days_and_each_account_counts_its_earliest() {
    let now = Instant::EPOCH.plus_days(100);
    let renewals = [
        // Account 1: day 130 (30 days away) and day 110 (10 days away).
        renewal(1, "s-late", now.plus_days(30)),
        renewal(1, "s-soon", now.plus_days(10)),
        // Account 2: exactly 30 days away, the window's last instant.
        renewal(2, "s-edge", now.plus_days(30)),
        // Account 3: one microsecond past the window.
        renewal(3, "s-out", now.plus_days(30).plus_micros(1)),
        // Account 4: the date passed at this instant; nothing to fire.
        renewal(4, "s-past", now),
    ];
    assert_eq!(
        due_renewals(&renewals, now, 30),
        [
            renewal(1, "s-soon", now.plus_days(10)),
            renewal(2, "s-edge", now.plus_days(30)),
        ]
    );
    assert_eq!(
        due_renewals(&renewals, now, 10),
        [renewal(1, "s-soon", now.plus_days(10))]
    );
    assert!(due_renewals(&renewals, now, 9).is_empty());
}

#[test]
fn two_subscriptions_renewing_the_same_day_fire_once_with_the_first_subscription() {
    let now = Instant::EPOCH;
    let day = now.plus_days(5);
    let renewals = [renewal(1, "b", day), renewal(1, "a", day)];
    assert_eq!(due_renewals(&renewals, now, 7), [renewal(1, "a", day)]);
}

#[test]
fn something_is_overdue_only_once_more_than_its_days_have_passed() {
    let since = Instant::EPOCH.plus_days(10);
    // 14 days later exactly: not yet "more than 14 days".
    assert!(!overdue(since, since.plus_days(14), 14));
    assert!(overdue(since, since.plus_days(14).plus_micros(1), 14));
    assert!(!overdue(since, since.plus_days(3), 14));
}

#[test]
fn days_until_counts_a_part_day_as_a_day_and_dates_read_as_the_calendar_day() {
    let now = Instant::EPOCH;
    assert_eq!(days_until(now, now.plus_days(13)), 13);
    assert_eq!(
        days_until(now, now.plus_days(13).plus_micros(3_600_000_000)),
        14
    );
    assert_eq!(days_until(now, now), 0);
    // 1 769 851 800 s after the epoch is 2026-01-31 09:30 UTC.
    assert_eq!(
        date(Instant::from_micros(1_769_851_800_000_000)),
        "2026-01-31"
    );
}

#[test]
fn a_renewal_recorded_playbook_does_not_close_on_facts_alone() {
    let f = AccountFacts {
        first_value: true,
        ..facts(1)
    };
    assert!(!auto_closes(AutoClose::RenewalRecorded, 0, &f));
    assert!(auto_closes(AutoClose::FirstValue, 0, &f));
}

#[test]
fn revenue_to_date_earns_the_mrr_month_by_month_from_each_movement() {
    let month = |n: i64| Instant::from_micros(n * MICROS_PER_MONTH);
    let none = RevenueToDate::default();
    assert_eq!(none.at(month(12)), Minor(0));
    // New business at 100.00 a month in month 0.
    let new = none.moved(month(0), Minor(10_000), "USD");
    assert_eq!(new.at(month(0)), Minor(0));
    assert_eq!(new.at(month(1)), Minor(10_000));
    // Half a month: 5,000; a third: 3,333 (rounded down).
    assert_eq!(
        new.at(Instant::from_micros(MICROS_PER_MONTH / 2)),
        Minor(5_000)
    );
    assert_eq!(
        new.at(Instant::from_micros(MICROS_PER_MONTH / 3)),
        Minor(3_333)
    );
    // Expansion to 200.00 after a month: 10,000 + 2 x 20,000 two months on.
    let expanded = new.moved(month(1), Minor(20_000), "USD");
    assert_eq!(expanded.earned, Minor(10_000));
    assert_eq!(expanded.at(month(3)), Minor(50_000));
    // A churn in month 3 keeps what was earned and earns nothing more.
    let churned = expanded.moved(month(3), Minor(0), "");
    assert_eq!(churned.at(month(24)), Minor(50_000));
    assert_eq!(churned.currency, "USD");
    // A movement dated before the last one changes the MRR from the last
    // one's time on.
    let late = expanded.moved(month(0), Minor(30_000), "USD");
    assert_eq!(late.since, Some(month(1)));
    assert_eq!(late.at(month(2)), Minor(40_000));
}
