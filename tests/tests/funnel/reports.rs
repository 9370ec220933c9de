//! Funnel and cohort reports: filters, periods, cohorts, and the accounts
//! feed keeping the filters current.

use bowtie_proto::accounts::{Account, UpdateAccountRequest};
use bowtie_proto::common::{Period, Segment, Stage};
use bowtie_proto::funnel::{
    CohortBy, GetCohortReportRequest, GetFunnelReportRequest, GetFunnelReportResponse,
};
use bowtie_testkit::fixtures::mask;
use bowtie_testkit::{TestDatabase, assert, backend_test, within};

use crate::*;

backend_test!(
    the_report_filters_by_segment_and_owner,
    the_report_follows_an_owner_change_from_the_accounts_feed,
    bad_periods_are_refused_with_the_field_named,
    the_cohort_report_shows_who_reached_commit_by_month_since_entry,
    the_cohort_view_follows_attempts_that_started_in_the_period,
    a_second_replica_reports_what_the_first_recorded,
);

fn report(period: Option<Period>, segment: Segment, owner: &str) -> GetFunnelReportRequest {
    GetFunnelReportRequest {
        period,
        segment: segment as i32,
        owner: owner.to_owned(),
        cohort_by: CohortBy::Unspecified as i32,
    }
}

fn volume(r: &GetFunnelReportResponse, stage: Stage) -> i64 {
    r.stages
        .iter()
        .find(|s| s.stage == stage as i32)
        .map_or(-1, |s| s.volume)
}

async fn the_report_filters_by_segment_and_owner(db: &TestDatabase) -> anyhow::Result<()> {
    let suite = Suite::start(db).await?;
    let mut funnel = suite.funnel();
    for (name, segment, owner) in [
        ("A", Segment::Smb, "ana"),
        ("B", Segment::Smb, "bob"),
        ("C", Segment::Enterprise, "ana"),
    ] {
        let id = suite.customer(name, segment, owner).await?;
        record_path(
            &mut funnel,
            &id,
            &[(Stage::Awareness, 1), (Stage::Education, 5)],
        )
        .await?;
    }
    let january = period(0, 31);
    for (segment, owner, expected) in [
        (Segment::Unspecified, "", 3),
        (Segment::Smb, "", 2),
        (Segment::Unspecified, "ana", 2),
        (Segment::Smb, "ana", 1),
        (Segment::MidMarket, "", 0),
        (Segment::Unspecified, "nobody", 0),
    ] {
        let r = funnel
            .get_funnel_report(report(january, segment, owner))
            .await?
            .into_inner();
        assert_eq!(
            volume(&r, Stage::Awareness),
            expected,
            "{segment:?} {owner:?}"
        );
        assert_eq!(
            volume(&r, Stage::Education),
            expected,
            "{segment:?} {owner:?}"
        );
    }
    Ok(())
}

async fn the_report_follows_an_owner_change_from_the_accounts_feed(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Suite::start(db).await?;
    let mut funnel = suite.funnel();
    let id = suite.customer("A", Segment::Smb, "ana").await?;
    record(&mut funnel, &id, Stage::Awareness, 1).await?;
    suite
        .accounts()
        .update_account(UpdateAccountRequest {
            account: Some(Account {
                id: id.clone(),
                owner: "carla".into(),
                ..Account::default()
            }),
            update_mask: Some(mask(&["owner"])),
            ..Default::default()
        })
        .await?;
    within(15, "the funnel to learn the new owner", async {
        loop {
            let r = funnel
                .get_funnel_report(report(period(0, 31), Segment::Unspecified, "carla"))
                .await?
                .into_inner();
            if volume(&r, Stage::Awareness) == 1 {
                return anyhow::Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await??;
    let r = funnel
        .get_funnel_report(report(period(0, 31), Segment::Unspecified, "ana"))
        .await?
        .into_inner();
    assert_eq!(volume(&r, Stage::Awareness), 0);
    Ok(())
}

async fn bad_periods_are_refused_with_the_field_named(db: &TestDatabase) -> anyhow::Result<()> {
    let suite = Suite::start(db).await?;
    let mut funnel = suite.funnel();
    assert::invalid_field_with(
        funnel
            .get_funnel_report(report(period(10, 5), Segment::Unspecified, ""))
            .await,
        "period.end",
        "must be after period.start",
    );
    assert::invalid_field_with(
        funnel
            .get_funnel_report(report(period(0, 366 * 11), Segment::Unspecified, ""))
            .await,
        "period.end",
        "a period may span at most 10 years",
    );
    assert::invalid_field(
        funnel
            .get_funnel_report(report(None, Segment::Unspecified, ""))
            .await,
        "period",
    );
    assert::invalid_field(
        funnel
            .get_funnel_report(GetFunnelReportRequest {
                cohort_by: 9,
                ..report(period(0, 5), Segment::Unspecified, "")
            })
            .await,
        "cohort_by",
    );
    assert::invalid_field(
        funnel
            .get_cohort_report(GetCohortReportRequest {
                period: period(0, 5),
                cohort_stage: Stage::Education as i32,
                ..Default::default()
            })
            .await,
        "cohort_stage",
    );
    assert::invalid_field(
        funnel
            .get_cohort_report(GetCohortReportRequest {
                period: period(5, 0),
                ..Default::default()
            })
            .await,
        "period.end",
    );
    Ok(())
}

async fn the_cohort_report_shows_who_reached_commit_by_month_since_entry(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Suite::start(db).await?;
    let mut funnel = suite.funnel();
    let paths: [&[(Stage, i64)]; 3] = [
        &[(Stage::Awareness, 0), (Stage::Commit, 40)],
        &[(Stage::Awareness, 5), (Stage::Lost, 8)],
        &[(Stage::Awareness, 10)],
    ];
    for (i, path) in paths.iter().enumerate() {
        let id = suite
            .customer(&format!("L{i}"), Segment::Smb, "ana")
            .await?;
        record_path(&mut funnel, &id, path).await?;
    }
    let r = funnel
        .get_cohort_report(GetCohortReportRequest {
            period: period(0, 59),
            cohort_stage: Stage::Awareness as i32,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(r.cohorts.len(), 2);
    let jan = &r.cohorts[0];
    assert_eq!((jan.month.as_str(), jan.size), ("2026-01", 3));
    let commit = jan
        .progress
        .iter()
        .find(|p| p.stage == Stage::Commit as i32)
        .ok_or_else(|| anyhow::anyhow!("no COMMIT progress"))?;
    // Nobody committed in January; one of three had by the end of February.
    assert_eq!(&commit.reached[..2], &[0, 1]);
    assert!((commit.share[1] - 1.0 / 3.0).abs() < 1e-12);
    let lost = jan
        .progress
        .iter()
        .find(|p| p.stage == Stage::Lost as i32)
        .ok_or_else(|| anyhow::anyhow!("no LOST progress"))?;
    assert_eq!(lost.reached[0], 1);
    assert_eq!(
        (r.cohorts[1].month.as_str(), r.cohorts[1].size),
        ("2026-02", 0)
    );
    Ok(())
}

async fn the_cohort_view_follows_attempts_that_started_in_the_period(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Suite::start(db).await?;
    let mut funnel = suite.funnel();
    let early = suite.customer("Early", Segment::Smb, "ana").await?;
    record_path(
        &mut funnel,
        &early,
        &[(Stage::Awareness, -40), (Stage::Education, 5)],
    )
    .await?;
    let fresh = suite.customer("Fresh", Segment::Smb, "ana").await?;
    record_path(
        &mut funnel,
        &fresh,
        &[(Stage::Awareness, 3), (Stage::Education, 50)],
    )
    .await?;

    let by = |cohort_by: CohortBy| GetFunnelReportRequest {
        cohort_by: cohort_by as i32,
        ..report(period(0, 31), Segment::Unspecified, "")
    };
    // Period view: January's entries are Fresh's AWARENESS and Early's EDUCATION.
    let entries = funnel
        .get_funnel_report(by(CohortBy::StageEntry))
        .await?
        .into_inner();
    assert_eq!(volume(&entries, Stage::Awareness), 1);
    assert_eq!(volume(&entries, Stage::Education), 1);
    // Cohort view: only Fresh started in January, followed into February.
    let cohort = funnel
        .get_funnel_report(by(CohortBy::AttemptStart))
        .await?
        .into_inner();
    assert_eq!(volume(&cohort, Stage::Awareness), 1);
    assert_eq!(volume(&cohort, Stage::Education), 1);
    assert_eq!(cohort.stages[0].converted, 1);
    assert_eq!(
        cohort.stages[0]
            .median_time_to_next
            .as_ref()
            .map(|d| d.seconds / DAY),
        Some(47)
    );
    Ok(())
}

async fn a_second_replica_reports_what_the_first_recorded(db: &TestDatabase) -> anyhow::Result<()> {
    let suite = Suite::start(db).await?;
    let replica = start_funnel(db, &suite.accounts.uri()).await?;
    let mut on_replica = bowtie_proto::funnel::funnel_service_client::FunnelServiceClient::new(
        replica.with_key(bowtie_testkit::WRITE_KEY),
    );
    let empty = on_replica
        .get_funnel_report(report(period(0, 31), Segment::Unspecified, ""))
        .await?
        .into_inner();
    assert_eq!(volume(&empty, Stage::Awareness), 0);

    let id = suite.customer("A", Segment::Smb, "ana").await?;
    record(&mut suite.funnel(), &id, Stage::Awareness, 1).await?;
    // The replica's report waits for its index to catch up with the shared feed.
    let seen = on_replica
        .get_funnel_report(report(period(0, 31), Segment::Unspecified, ""))
        .await?
        .into_inner();
    assert_eq!(volume(&seen, Stage::Awareness), 1);
    Ok(())
}
