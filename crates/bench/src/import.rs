//! The import case: a company's history loaded end to end through the
//! public API, as a new user would, with the `bowtie import` code path
//! (CSV parsing, the account directory, batches over the import streams,
//! the acknowledgements). Accounts, revenue and funnel run as real servers
//! on temporary SQLite files; the figures are rows of the CSV files per
//! second of wall time, from reading the file to the last acknowledgement.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use bowtie::client::{Service, Target};
use bowtie::import::{Kind, import};
use bowtie_runtime::auth::{ApiKeys, hash_key};
use bowtie_runtime::config::{ApiKeySettings, Settings};
use bowtie_runtime::shutdown::Shutdown;
use indicatif::ProgressBar;

use crate::measure::Report;

/// Accounts in the data set.
pub const ACCOUNTS: usize = 10_000;
const KEY: &str = "bt_bench_importer_2d4f6a8c0e1b3d5f7a9c2e4b6d8f0a1c";

/// A small deterministic generator (the data set is the same on every run).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// A date `days` after 2023-01-01.
fn date(days: u64) -> String {
    let d = chrono::NaiveDate::from_ymd_opt(2023, 1, 1)
        .and_then(|d| d.checked_add_days(chrono::Days::new(days)))
        .unwrap_or_default();
    d.format("%Y-%m-%d").to_string()
}

/// The three files: accounts, subscription events (a start, two to five
/// changes and, for a third of the subscriptions, a cancellation) and
/// transitions (a journey of four to seven stages).
fn files() -> (String, String, String, usize, usize) {
    let mut rng = Lcg(20);
    let mut accounts = String::from("external_id,name,segment,owner\n");
    let mut events = String::from(
        "subscription_id,account_external_id,event,effective_date,plan,quantity,unit_price,billing_interval,cancel_reason\n",
    );
    let mut transitions = String::from("account_external_id,stage,occurred_at,reason\n");
    let (mut n_events, mut n_transitions) = (0, 0);
    let stages = [
        "awareness",
        "education",
        "selection",
        "commit",
        "onboarding",
        "impact",
        "growth",
    ];
    for a in 0..ACCOUNTS {
        let segment = ["smb", "mid_market", "enterprise"][a % 3];
        let _ = writeln!(accounts, "a{a},Company {a},{segment},rep{}", a % 40);
        let mut day = rng.below(600);
        let mut seats = 1 + rng.below(40);
        let price = ["29.00", "49.00", "99.00"][a % 3];
        let _ = writeln!(
            events,
            "s{a},a{a},start,{},pro,{seats},{price},month,",
            date(day)
        );
        n_events += 1;
        for _ in 0..2 + rng.below(4) {
            day += 1 + rng.below(90);
            seats = (seats + rng.below(10)).saturating_sub(rng.below(8)).max(1);
            let _ = writeln!(events, "s{a},,change,{},pro,{seats},{price},,", date(day));
            n_events += 1;
        }
        if a % 3 == 0 {
            day += 1 + rng.below(120);
            let _ = writeln!(events, "s{a},,cancel,{},,,,,price", date(day));
            n_events += 1;
        }
        let mut day = rng.below(300);
        for stage in stages.iter().take(4 + rng.below(4) as usize) {
            day += 1 + rng.below(20);
            let _ = writeln!(transitions, "a{a},{stage},{},", date(day));
            n_transitions += 1;
        }
    }
    (accounts, events, transitions, n_events, n_transitions)
}

/// Runs the case and adds its figures to `report`: the imports with the
/// audit log as configured by default, then once more without it, and the
/// ratio of the two (docs/design.md, "Audit log").
pub async fn run(report: &mut Report) -> anyhow::Result<()> {
    let audited = run_once(report, true).await?;
    let unaudited = run_once(report, false).await?;
    for (what, with, without) in [
        ("subscription events", audited.0, unaudited.0),
        ("transitions", audited.1, unaudited.1),
    ] {
        let ratio = if without > 0.0 { with / without } else { 0.0 };
        println!(
            "import: {what} with / without the audit log = {ratio:.3} (the log costs {:.1}%)",
            (1.0 - ratio) * 100.0
        );
        report.add_at_least(
            "import",
            &format!("ratio {what} audited / not audited"),
            ratio,
            "x",
            0.85,
        );
    }
    Ok(())
}

/// One run on fresh databases: the subscription events' and transitions'
/// rows per second. The figures of the audited run carry the targets.
async fn run_once(report: &mut Report, audited: bool) -> anyhow::Result<(f64, f64)> {
    let dir = tempfile::Builder::new().prefix("bowtie-bench-").tempdir()?;
    let (accounts, events, transitions, n_events, n_transitions) = files();
    let suffix = if audited { "" } else { ", audit log off" };
    let mut settings = Settings::defaults()?;
    let url = |name: &str| format!("sqlite://{}", dir.path().join(name).display());
    settings.accounts.database = settings
        .accounts
        .database
        .with_url(&url("accounts.db"), "accounts");
    settings.revenue.database = settings
        .revenue
        .database
        .with_url(&url("revenue.db"), "revenue");
    settings.funnel.database = settings
        .funnel
        .database
        .with_url(&url("funnel.db"), "funnel");
    for listen in [
        &mut settings.accounts.listen,
        &mut settings.revenue.listen,
        &mut settings.funnel.listen,
    ] {
        *listen = ([127, 0, 0, 1], 0).into();
    }
    settings.server.drain_seconds = 0;
    settings.auth.keys = vec![ApiKeySettings {
        name: "bench".into(),
        hash: hash_key(KEY),
        scopes: vec!["write".into()],
        expires_at: None,
        rate_limit: None,
        role: None,
    }];
    settings.peers.api_key = KEY.to_owned().into();
    for peer in [&mut settings.peers.revenue, &mut settings.peers.scoring] {
        *peer = "http://127.0.0.1:1".into();
    }
    let keys = Arc::new(ApiKeys::from_settings(&settings.auth)?.audited(audited));
    let shutdown = Shutdown::new();
    let accounts_server = bowtie_accounts::build(&settings, keys.clone(), shutdown.clone()).await?;
    settings.peers.accounts = format!("http://{}", accounts_server.local_addr());
    let accounts_task = tokio::spawn(accounts_server.run_until_stopped(std::future::pending()));
    let revenue = bowtie_revenue::build(&settings, keys.clone(), shutdown.clone()).await?;
    let revenue_addr = revenue.local_addr().to_string();
    let revenue_task = tokio::spawn(revenue.run_until_stopped(std::future::pending()));
    let funnel = bowtie_funnel::build(&settings, keys, shutdown.clone()).await?;
    let funnel_addr = funnel.local_addr().to_string();
    let funnel_task = tokio::spawn(funnel.run_until_stopped(std::future::pending()));
    let target = Target::new(&settings.peers, KEY)
        .with_address(Service::Revenue, &revenue_addr)
        .with_address(Service::Funnel, &funnel_addr);
    let quiet = ProgressBar::hidden();

    println!("import: {ACCOUNTS} accounts through the CLI import");
    let loaded = import(&target, Kind::Accounts, accounts.as_bytes(), &quiet).await?;
    anyhow::ensure!(
        loaded.errors.is_empty(),
        "accounts: {:?}",
        loaded.errors.first()
    );

    println!("import: {n_events} subscription events over ImportSubscriptionEvents");
    let started = Instant::now();
    let loaded = import(&target, Kind::SubscriptionEvents, events.as_bytes(), &quiet).await?;
    let took = started.elapsed();
    anyhow::ensure!(
        loaded.errors.is_empty() && loaded.created == n_events,
        "subscription events: {} recorded, first error {:?}",
        loaded.created,
        loaded.errors.first()
    );
    let events_rate = n_events as f64 / took.as_secs_f64();
    let label = format!("subscription events via the CLI over gRPC (SQLite{suffix})");
    if audited {
        report.add_at_least("import", &label, events_rate, "rows/s", 40_000.0);
    } else {
        report.add("import", &label, events_rate, "rows/s", None);
    }

    println!("import: {n_transitions} transitions over ImportTransitions");
    let started = Instant::now();
    let loaded = import(&target, Kind::Transitions, transitions.as_bytes(), &quiet).await?;
    let took = started.elapsed();
    anyhow::ensure!(
        loaded.errors.is_empty() && loaded.created == n_transitions,
        "transitions: {} recorded, first error {:?}",
        loaded.created,
        loaded.errors.first()
    );
    let transitions_rate = n_transitions as f64 / took.as_secs_f64();
    let label = format!("transitions via the CLI over gRPC (SQLite{suffix})");
    if audited {
        report.add_at_least("import", &label, transitions_rate, "rows/s", 40_000.0);
    } else {
        report.add("import", &label, transitions_rate, "rows/s", None);
    }
    if !audited {
        shutdown.trigger();
        for task in [accounts_task, revenue_task, funnel_task] {
            task.abort();
        }
        return Ok((events_rate, transitions_rate));
    }

    // The same files again: every row is already there.
    let started = Instant::now();
    let again = import(&target, Kind::SubscriptionEvents, events.as_bytes(), &quiet).await?;
    anyhow::ensure!(
        again.created == 0 && again.unchanged == n_events,
        "a re-import recorded {} rows",
        again.created
    );
    report.add(
        "import",
        "re-sending the subscription events (all duplicates)",
        n_events as f64 / started.elapsed().as_secs_f64(),
        "rows/s",
        None,
    );

    shutdown.trigger();
    for task in [accounts_task, revenue_task, funnel_task] {
        task.abort();
    }
    Ok((events_rate, transitions_rate))
}
