//! Bounded storage of scoring: raw signals that occurred and were recorded
//! more than `scoring.raw_signal_days` ago are pruned once their day cells
//! hold them, so health still counts them, across a restart too; day cells
//! older than anything reads (the 180-day health window back from one churn
//! horizon ago) are pruned as well. A window of seconds stands in for days.

use std::time::Duration;

use bowtie_proto::common::Segment;
use bowtie_proto::scoring::{AccountHealth, GetHealthRequest, RecomputeHealthRequest};
use bowtie_testkit::scoring::{
    Scoring, ScoringClient, create_account, health_when, logins, record, start_scoring,
};
use bowtie_testkit::storage::count_rows;
use bowtie_testkit::{ADMIN_KEY, TestDatabase, TestServer, WRITE_KEY, backend_test, within};

backend_test!(
    raw_signals_past_their_window_are_pruned_and_health_still_counts_them,
    a_service_following_a_feed_is_registered_with_its_producer,
);

const DAY_SECONDS: i64 = 86_400;

fn today() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
        / DAY_SECONDS
}

fn client(server: &TestServer, key: &str) -> ScoringClient {
    bowtie_proto::scoring::scoring_service_client::ScoringServiceClient::new(server.with_key(key))
}

/// The account's health right after a full recomputation.
async fn recomputed(server: &TestServer, account: &str) -> anyhow::Result<AccountHealth> {
    client(server, ADMIN_KEY)
        .recompute_health(RecomputeHealthRequest {})
        .await?;
    client(server, WRITE_KEY)
        .get_health(GetHealthRequest {
            account_id: account.to_owned(),
        })
        .await?
        .into_inner()
        .health
        .ok_or_else(|| anyhow::anyhow!("no health"))
}

async fn raw_signals_past_their_window_are_pruned_and_health_still_counts_them(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let mut settings = db.server_settings()?;
    let accounts = TestServer::start_with(&settings).await?;
    settings.peers.accounts = accounts.uri();
    // First nothing is pruned.
    settings.scoring.raw_signal_days = 0.0;
    settings.pruning.interval_ms = 100;
    let scoring = start_scoring(&settings).await?;
    let acme = create_account(&accounts, "Acme", Segment::Smb).await?;
    let mut writer = client(&scoring, WRITE_KEY);
    // Ten logins 40 days ago, three 10 days ago, one 400 days ago.
    let mut batch = logins("a", &acme, 10, 40);
    batch.extend(logins("b", &acme, 3, 10));
    batch.extend(logins("c", &acme, 1, 400));
    record(&mut writer, batch).await?;
    // usage 30 (w25) and stakeholders 100 (w5): 1250 / 30 = 41.7 -> 42.
    health_when(&mut writer, &acme, "the score", |h| h.score == 42).await?;
    let before = recomputed(&scoring, &acme).await?;
    assert_eq!(before.score, 42);
    scoring.stop().await?;

    // Then raw signals are kept ten seconds (from when they occurred and
    // from when they were recorded), standing in for 35 days.
    let window = 10;
    settings.scoring.raw_signal_days = window as f64 / DAY_SECONDS as f64;
    let scoring = start_scoring(&settings).await?;
    let database = db.service_database("scoring");
    // 180 days of health window back from 90 days (the churn horizon) ago.
    let first_kept_day = today() - 180 - 90;
    within(30, "the old signals and cells to be pruned", async {
        loop {
            let signals = count_rows(&database, "signals", None).await?;
            let old_cells =
                count_rows(&database, "signal_days", Some(("day", first_kept_day))).await?;
            if signals == 0 && old_cells == 0 {
                return anyhow::Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await??;
    assert!(
        count_rows(&database, "signal_days", None).await? > 0,
        "the pruned signals' day cells stay"
    );
    assert_eq!(recomputed(&scoring, &acme).await?.score, 42);
    scoring.stop().await?;

    // After a restart (SQLite reads its cells back into memory) health
    // still counts the pruned signals: usage fell from 10 to 3.
    let scoring = start_scoring(&settings).await?;
    let after = recomputed(&scoring, &acme).await?;
    assert_eq!(after.score, before.score);
    assert_eq!(after.components, before.components);

    // Signals of the window stay: the table holds only them.
    record(&mut client(&scoring, WRITE_KEY), logins("d", &acme, 2, 0)).await?;
    let now_micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    let cutoff = now_micros - window * 1_000_000;
    assert_eq!(count_rows(&database, "signals", None).await?, 2);
    assert_eq!(
        count_rows(&database, "signals", Some(("occurred_at", cutoff))).await?,
        0
    );
    Ok(())
}

async fn a_service_following_a_feed_is_registered_with_its_producer(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    // Scoring follows the accounts feed as `scoring.accounts`: accounts
    // keeps what it has not applied, however old.
    let suite = Scoring::start(db).await?;
    suite.account("Acme", Segment::Smb).await?;
    let accounts = db.service_database("accounts");
    within(20, "scoring to register with accounts", async {
        while count_rows(&accounts, "feed_consumers", None).await? != 1 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::Ok(())
    })
    .await??;
    Ok(())
}
