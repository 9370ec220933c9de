//! Health: a falling-usage account turns red and raises one alert, the
//! explanation of each component, scorecard edits, listing and history.

use bowtie_proto::common::Segment;
use bowtie_proto::scoring::{
    AlertKind, Band, Component, ComponentWeight, GetHealthHistoryRequest, GetHealthRequest,
    GetScorecardRequest, ListAtRiskRequest, ListHealthRequest, ListScorecardVersionsRequest,
    RecomputeHealthRequest, Scorecard, SignalType, UpdateScorecardRequest,
};
use bowtie_testkit::scoring::{Scoring, alerts_of, health_when, logins, record, signal};
use bowtie_testkit::{TestDatabase, backend_test};
use tonic::Code;

backend_test!(
    a_falling_usage_account_turns_red_and_raises_exactly_one_alert,
    get_health_explains_each_component_and_names_the_missing_ones,
    a_scorecard_edit_changes_scores_and_a_stale_edit_is_aborted,
    every_version_of_a_scorecard_is_listed_newest_first,
    a_recomputation_that_changes_nothing_keeps_the_stored_health,
    list_health_filters_by_band_and_pages_by_score,
    an_account_without_signals_has_no_health,
);

async fn a_falling_usage_account_turns_red_and_raises_exactly_one_alert(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Scoring::start(db).await?;
    let acme = suite.account("Acme", Segment::Smb).await?;
    let mut client = suite.client();
    // 10 logins a month ago, 8 this month: usage 80, stakeholders 100:
    // (25 x 80 + 5 x 100) / 30 = 83.3 -> 83, GREEN.
    let mut batch = logins("before", &acme, 10, 45);
    batch.extend(logins("now", &acme, 8, 5));
    record(&mut client, batch).await?;
    let h = health_when(&mut client, &acme, "a green score", |h| h.score == 83).await?;
    assert_eq!(h.band, Band::Green as i32);
    assert!(alerts_of(&mut client, &acme).await?.is_empty());

    // The history import shows 40 logins the month before: usage fell from
    // 40 to 8 = 20; (25 x 20 + 5 x 100) / 30 = 33.3 -> 33, RED.
    record(&mut client, logins("import", &acme, 30, 50)).await?;
    let h = health_when(&mut client, &acme, "a red score", |h| h.score == 33).await?;
    assert_eq!(h.band, Band::Red as i32);
    assert_eq!(
        h.components[0].reason,
        "usage fell from 40 to 8 events (30 days vs the 30 before)"
    );
    // More signals recompute the account again; it stays red, no new alert.
    record(&mut client, logins("older", &acme, 1, 55)).await?;
    record(&mut client, logins("recent", &acme, 1, 2)).await?;
    health_when(&mut client, &acme, "the later logins", |h| {
        h.components[0]
            .reason
            .starts_with("usage fell from 41 to 9")
    })
    .await?;
    let alerts = alerts_of(&mut client, &acme).await?;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].kind, AlertKind::EnteredRed as i32);
    assert_eq!(alerts[0].score, 33);
    assert_eq!(alerts[0].message, "health fell into red at 33");
    // It is at risk.
    let at_risk = client
        .list_at_risk(ListAtRiskRequest::default())
        .await?
        .into_inner()
        .accounts;
    let at_risk: Vec<&str> = at_risk.iter().map(|h| h.account_id.as_str()).collect();
    assert_eq!(at_risk, [acme.as_str()]);
    Ok(())
}

async fn get_health_explains_each_component_and_names_the_missing_ones(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Scoring::start(db).await?;
    let acme = suite.account("Acme", Segment::MidMarket).await?;
    let mut client = suite.client();
    let mut batch = logins("a", &acme, 10, 40);
    batch.extend(logins("b", &acme, 3, 10));
    batch.push(signal("t1", &acme, SignalType::TicketOpened, 4, 40));
    batch.push(signal("c1", &acme, SignalType::Complaint, 1, 20));
    batch.push(signal("n1", &acme, SignalType::NpsAnswer, 6, 15));
    batch.push(signal("s1", &acme, SignalType::StakeholderLeft, 1, 12));
    record(&mut client, batch).await?;
    // usage 30 (w25), support: quiet 50 - 25 = 25 (w10), sentiment 60
    // (w10), stakeholders 100 - 60 = 40 (w5):
    // (750 + 250 + 600 + 200) / 50 = 36, RED.
    let h = health_when(&mut client, &acme, "the score", |h| h.components.len() == 4).await?;
    let parts: Vec<(i32, i32, i32, &str)> = h
        .components
        .iter()
        .map(|c| {
            (
                c.component,
                c.score,
                c.effective_weight_bp,
                c.reason.as_str(),
            )
        })
        .collect();
    assert_eq!(
        parts,
        [
            (
                Component::UsageTrend as i32,
                30,
                5000,
                "usage fell from 10 to 3 events (30 days vs the 30 before)"
            ),
            (
                Component::SupportEngagement as i32,
                25,
                2000,
                "tickets went quiet: 4 in the 30 days before, none in the last 30; 1 unresolved complaint(s)"
            ),
            (
                Component::Sentiment as i32,
                60,
                2000,
                "mean NPS answer 6.0 over 1 answer(s)"
            ),
            (
                Component::StakeholderStability as i32,
                40,
                1000,
                "1 champion(s) or decision maker(s) left in 180 days"
            ),
        ]
    );
    assert_eq!((h.score, h.band), (36, Band::Red as i32));
    assert_eq!(
        h.missing,
        [
            Component::Breadth as i32,
            Component::PaymentPunctuality as i32,
            Component::PlanChanges as i32,
            Component::Onboarding as i32,
            Component::RenewalProximity as i32,
        ]
    );
    assert_eq!(h.delta_7d, None, "no snapshot a week ago");
    // Today's snapshot is in the history.
    let history = client
        .get_health_history(GetHealthHistoryRequest {
            account_id: acme.clone(),
            days: 7,
        })
        .await?
        .into_inner()
        .snapshots;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].score, 36);
    Ok(())
}

fn weights(pairs: &[(Component, i32)]) -> Vec<ComponentWeight> {
    pairs
        .iter()
        .map(|(c, w)| ComponentWeight {
            component: *c as i32,
            weight: *w,
        })
        .collect()
}

async fn a_scorecard_edit_changes_scores_and_a_stale_edit_is_aborted(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Scoring::start(db).await?;
    let acme = suite.account("Acme", Segment::Smb).await?;
    let mut client = suite.client();
    let mut batch = logins("a", &acme, 10, 40);
    batch.extend(logins("b", &acme, 3, 10));
    record(&mut client, batch).await?;
    // usage 30 (w25) and stakeholders 100 (w5): 1250 / 30 = 41.7 -> 42.
    health_when(&mut client, &acme, "the SMB account to be scored", |h| {
        h.score == 42 && h.segment == Segment::Smb as i32
    })
    .await?;
    let mut admin = suite.admin();
    let current = admin
        .get_scorecard(GetScorecardRequest {
            segment: Segment::Smb as i32,
        })
        .await?
        .into_inner()
        .scorecard
        .ok_or_else(|| anyhow::anyhow!("no scorecard"))?;
    assert_eq!(current.version, 0, "the built-in scorecard");
    assert_eq!(current.yellow_from, 50);
    let edited = Scorecard {
        weights: weights(&[
            (Component::UsageTrend, 1),
            (Component::StakeholderStability, 1),
        ]),
        ..current.clone()
    };
    let stored = admin
        .update_scorecard(UpdateScorecardRequest {
            scorecard: Some(edited.clone()),
            expected_version: 0,
            idempotency_key: String::new(),
        })
        .await?
        .into_inner()
        .scorecard
        .ok_or_else(|| anyhow::anyhow!("no scorecard"))?;
    assert_eq!(stored.version, 1);
    // (30 + 100) / 2 = 65, YELLOW.
    let h = health_when(&mut client, &acme, "the new weights", |h| h.score == 65).await?;
    assert_eq!((h.band, h.scorecard_version), (Band::Yellow as i32, 1));

    let stale = admin
        .update_scorecard(UpdateScorecardRequest {
            scorecard: Some(edited.clone()),
            expected_version: 0,
            idempotency_key: String::new(),
        })
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(stale, Some(Code::Aborted));
    let bad = admin
        .update_scorecard(UpdateScorecardRequest {
            scorecard: Some(Scorecard {
                green_from: 40,
                weights: weights(&[]),
                ..edited
            }),
            expected_version: 1,
            idempotency_key: String::new(),
        })
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("a bad scorecard was accepted"))?;
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("scorecard.weights"));
    assert!(bad.message().contains("scorecard.green_from"));
    // Writers may not edit scorecards.
    let denied = client
        .update_scorecard(UpdateScorecardRequest {
            scorecard: Some(current),
            expected_version: 1,
            idempotency_key: String::new(),
        })
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(denied, Some(Code::PermissionDenied));
    Ok(())
}

async fn list_health_filters_by_band_and_pages_by_score(db: &TestDatabase) -> anyhow::Result<()> {
    let suite = Scoring::start(db).await?;
    let mut client = suite.client();
    let mut ids = Vec::new();
    // Usage falling to 0%, 20%, ..., 100% of the month before.
    for (i, recent) in [0usize, 2, 4, 6, 8, 10].iter().enumerate() {
        let id = suite.account(&format!("Acct {i}"), Segment::Smb).await?;
        let mut batch = logins(&format!("p{i}"), &id, 10, 40);
        batch.extend(logins(&format!("r{i}"), &id, *recent, 5));
        record(&mut client, batch).await?;
        ids.push(id);
    }
    for id in &ids {
        health_when(&mut client, id, "every account to be scored", |_| true).await?;
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_health(ListHealthRequest {
                page: Some(bowtie_proto::common::PageRequest {
                    page_size: 4,
                    page_token: token.clone(),
                }),
                ..ListHealthRequest::default()
            })
            .await?
            .into_inner();
        seen.extend(page.accounts.iter().map(|h| h.score));
        token = page.page.map(|p| p.next_page_token).unwrap_or_default();
        if token.is_empty() {
            break;
        }
    }
    // (25 x u + 500) / 30 for u = 0, 20, ..., 100.
    assert_eq!(seen, [17, 33, 50, 67, 83, 100]);
    let red = client
        .list_health(ListHealthRequest {
            band: Band::Red as i32,
            ..ListHealthRequest::default()
        })
        .await?
        .into_inner()
        .accounts;
    assert_eq!(red.iter().map(|h| h.score).collect::<Vec<_>>(), [17, 33]);
    let top = client
        .list_health(ListHealthRequest {
            order: bowtie_proto::scoring::HealthOrder::ScoreDescending as i32,
            min_score: 60,
            ..ListHealthRequest::default()
        })
        .await?
        .into_inner()
        .accounts;
    assert_eq!(
        top.iter().map(|h| h.score).collect::<Vec<_>>(),
        [100, 83, 67]
    );
    let bad = client
        .list_health(ListHealthRequest {
            min_score: 101,
            ..ListHealthRequest::default()
        })
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(bad, Some(Code::InvalidArgument));
    Ok(())
}

async fn an_account_without_signals_has_no_health(db: &TestDatabase) -> anyhow::Result<()> {
    let suite = Scoring::start(db).await?;
    let acme = suite.account("Acme", Segment::Smb).await?;
    let missing = suite
        .reader()
        .get_health(GetHealthRequest {
            account_id: acme.clone(),
        })
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(missing, Some(Code::NotFound));
    let bad = suite
        .reader()
        .get_health(GetHealthRequest {
            account_id: "nope".into(),
        })
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(bad, Some(Code::InvalidArgument));
    Ok(())
}

async fn every_version_of_a_scorecard_is_listed_newest_first(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Scoring::start(db).await?;
    let mut admin = suite.admin();
    let mut client = suite.client();
    let versions = |segment: Segment, size: i32, token: &str| ListScorecardVersionsRequest {
        segment: segment as i32,
        page: Some(bowtie_proto::common::PageRequest {
            page_size: size,
            page_token: token.to_owned(),
        }),
    };
    let none = client
        .list_scorecard_versions(versions(Segment::Smb, 10, ""))
        .await?
        .into_inner();
    assert!(none.scorecards.is_empty(), "never edited: {none:?}");
    let built_in = admin
        .get_scorecard(GetScorecardRequest {
            segment: Segment::Smb as i32,
        })
        .await?
        .into_inner()
        .scorecard
        .ok_or_else(|| anyhow::anyhow!("no scorecard"))?;
    // Three edits: the usage weight goes 1, 2, 3 next to stakeholders at 1.
    for usage in 1..=3 {
        admin
            .update_scorecard(UpdateScorecardRequest {
                scorecard: Some(Scorecard {
                    weights: weights(&[
                        (Component::UsageTrend, usage),
                        (Component::StakeholderStability, 1),
                    ]),
                    ..built_in.clone()
                }),
                expected_version: i64::from(usage - 1),
                idempotency_key: String::new(),
            })
            .await?;
    }
    let usage_weight = |c: &Scorecard| {
        c.weights
            .iter()
            .find(|w| w.component == Component::UsageTrend as i32)
            .map(|w| w.weight)
    };
    let first = client
        .list_scorecard_versions(versions(Segment::Smb, 2, ""))
        .await?
        .into_inner();
    let got: Vec<(i64, Option<i32>)> = first
        .scorecards
        .iter()
        .map(|c| (c.version, usage_weight(c)))
        .collect();
    assert_eq!(got, [(3, Some(3)), (2, Some(2))]);
    assert!(
        first
            .scorecards
            .iter()
            .all(|c| c.segment == Segment::Smb as i32 && c.update_time.is_some())
    );
    let token = first.page.map(|p| p.next_page_token).unwrap_or_default();
    assert!(!token.is_empty(), "a second page");
    let second = client
        .list_scorecard_versions(versions(Segment::Smb, 2, &token))
        .await?
        .into_inner();
    let got: Vec<(i64, Option<i32>)> = second
        .scorecards
        .iter()
        .map(|c| (c.version, usage_weight(c)))
        .collect();
    assert_eq!(got, [(1, Some(1))]);
    assert_eq!(
        second.page.map(|p| p.next_page_token).unwrap_or_default(),
        ""
    );
    // Another segment's history is its own.
    let other = client
        .list_scorecard_versions(versions(Segment::Enterprise, 10, ""))
        .await?
        .into_inner();
    assert!(other.scorecards.is_empty(), "{other:?}");
    // A token of one segment is refused for another, and a bad segment names its field.
    let foreign = client
        .list_scorecard_versions(versions(Segment::Enterprise, 2, &token))
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("a foreign page token was accepted"))?;
    assert_eq!(foreign.code(), Code::InvalidArgument);
    let bad = client
        .list_scorecard_versions(ListScorecardVersionsRequest {
            segment: 99,
            page: None,
        })
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("segment 99 was accepted"))?;
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("segment"), "{}", bad.message());
    Ok(())
}

async fn a_recomputation_that_changes_nothing_keeps_the_stored_health(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Scoring::start(db).await?;
    let acme = suite.account("Acme", Segment::Smb).await?;
    let mut client = suite.client();
    let mut batch = logins("a", &acme, 10, 40);
    batch.extend(logins("b", &acme, 3, 10));
    record(&mut client, batch).await?;
    // usage 30 (w25) and stakeholders 100 (w5): 1250 / 30 = 41.7 -> 42.
    // Steady state: the score, and the segment the accounts feed brings.
    let before = health_when(&mut client, &acme, "the score", |h| {
        h.score == 42 && h.segment == Segment::Smb as i32
    })
    .await?;
    let rescored = suite
        .admin()
        .recompute_health(RecomputeHealthRequest {})
        .await?
        .into_inner()
        .accounts;
    assert_eq!(rescored, 1);
    let after = client
        .get_health(GetHealthRequest {
            account_id: acme.clone(),
        })
        .await?
        .into_inner()
        .health
        .ok_or_else(|| anyhow::anyhow!("no health"))?;
    assert_eq!(after, before, "the same health, computed at the same time");
    let snapshots = client
        .get_health_history(GetHealthHistoryRequest {
            account_id: acme.clone(),
            days: 1,
        })
        .await?
        .into_inner()
        .snapshots;
    let scores: Vec<i32> = snapshots.iter().map(|s| s.score).collect();
    assert_eq!(scores, [42], "one snapshot for today");

    // One more login the month before changes the score: it is written.
    // usage 3 vs 11 = 27: (25 x 27 + 5 x 100) / 30 = 39.2 -> 39.
    record(&mut client, logins("c", &acme, 1, 41)).await?;
    let changed = health_when(&mut client, &acme, "the new score", |h| h.score == 39).await?;
    let micros = |h: &bowtie_proto::scoring::AccountHealth| {
        h.compute_time
            .as_ref()
            .map(|t| t.seconds * 1_000_000 + i64::from(t.nanos / 1_000))
    };
    assert!(micros(&changed) > micros(&before), "computed again");
    let snapshots = client
        .get_health_history(GetHealthHistoryRequest {
            account_id: acme,
            days: 1,
        })
        .await?
        .into_inner()
        .snapshots;
    let scores: Vec<i32> = snapshots.iter().map(|s| s.score).collect();
    assert_eq!(scores, [39], "today's snapshot follows the score");
    Ok(())
}
