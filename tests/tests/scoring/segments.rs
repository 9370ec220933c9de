//! Value segments: tiers by MRR rank, quadrants by value and loyalty, and
//! the share of revenue the top 20% carry.

use bowtie_proto::common::Segment;
use bowtie_proto::scoring::{GetSegmentsRequest, Quadrant, RecomputeHealthRequest, Tier};
use bowtie_testkit::revenue::{Revenue, create, monthly};
use bowtie_testkit::scoring::{
    ScoringClient, days_ago, health_when, logins, record, start_scoring,
};
use bowtie_testkit::{ADMIN_KEY, TestDatabase, backend_test, within};

backend_test!(the_top_20_percent_carry_80_percent_and_tiers_follow_mrr_rank);

async fn the_top_20_percent_carry_80_percent_and_tiers_follow_mrr_rank(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Revenue::start(db).await?;
    let mut settings = db.server_settings()?;
    settings.peers.accounts = suite.accounts.uri();
    settings.peers.revenue = suite.revenue.uri();
    let scoring = start_scoring(&settings).await?;
    let mut admin: ScoringClient =
        bowtie_proto::scoring::scoring_service_client::ScoringServiceClient::new(
            scoring.with_key(ADMIN_KEY),
        );
    let mut billing = suite.client();
    // Two customers pay 4,000.00 a month, eight pay 250.00: total 10,000.00.
    // The big two use the product as before (usage 100), the small eight
    // fell from 10 logins to 1 (usage 10).
    let mut ids = Vec::new();
    for i in 0..10 {
        let id = suite
            .account(&format!("Customer {i}"), Segment::Smb, "ana")
            .await?;
        let seats = if i < 2 { 400 } else { 25 };
        billing
            .create_subscription(create(monthly(
                &id,
                days_ago(60).unwrap_or_default(),
                seats,
                1_000,
            )))
            .await?;
        let mut batch = logins(&format!("p{i}"), &id, 10, 40);
        batch.extend(logins(&format!("r{i}"), &id, if i < 2 { 10 } else { 1 }, 5));
        record(&mut admin, batch).await?;
        ids.push(id);
    }
    for (i, id) in ids.iter().enumerate() {
        let mrr = if i < 2 { 400_000 } else { 25_000 };
        health_when(&mut admin, id, "the MRR from the revenue feed", |h| {
            h.mrr_minor_units == mrr
        })
        .await?;
    }
    // Tiers rank against every account's MRR: a full recompute refreshes them.
    admin.recompute_health(RecomputeHealthRequest {}).await?;
    let segments = within(10, "the segments", async {
        loop {
            let s = admin
                .get_segments(GetSegmentsRequest::default())
                .await?
                .into_inner();
            if s.tiers
                .iter()
                .any(|t| t.tier == Tier::Diamond as i32 && t.accounts == 2)
            {
                return anyhow::Ok(s);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await??;
    assert_eq!(segments.accounts, 10);
    assert_eq!(segments.mrr_minor_units, 1_000_000);
    assert_eq!(segments.top_20_percent_share_bp, 8000);
    let tiers: Vec<(i32, i64, i32)> = segments
        .tiers
        .iter()
        .map(|t| (t.tier, t.accounts, t.revenue_share_bp))
        .collect();
    // DIAMOND is the top 5% (one account, at least): both tie at 4,000.00.
    // Small accounts: usage 10 (w25), payment 100 (w15), plan changes 100
    // (w10), stakeholders 100 (w5) = 3250 / 55 = 59.1 -> 59: yellow, GENERAL.
    assert_eq!(
        tiers,
        [
            (Tier::Diamond as i32, 2, 8000),
            (Tier::Gold as i32, 0, 0),
            (Tier::Strategic as i32, 0, 0),
            (Tier::Potential as i32, 0, 0),
            (Tier::General as i32, 8, 2000),
            (Tier::Problem as i32, 0, 0),
        ]
    );
    // High value is the 50th percentile (the 5th largest MRR, 250.00): all
    // ten; loyalty needs 60: the big two (100) are A, the small eight (59) B.
    let quadrants: Vec<(i32, i64)> = segments
        .quadrants
        .iter()
        .map(|q| (q.quadrant, q.accounts))
        .collect();
    assert_eq!(
        quadrants,
        [
            (Quadrant::A as i32, 2),
            (Quadrant::B as i32, 8),
            (Quadrant::C as i32, 0),
            (Quadrant::D as i32, 0),
            (Quadrant::E as i32, 0),
        ]
    );
    Ok(())
}
