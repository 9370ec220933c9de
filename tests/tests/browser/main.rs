//! End-to-end test of the dashboard in headless Chromium.
//!
//! Starts the services and the gateway (SQLite, random ports), seeds a small
//! company through the REST API (accounts, stage transitions, subscriptions
//! with expansions, contractions and churn), reads the figures the page
//! should show from the same API, then runs `tests/browser/dashboard.cjs`
//! (playwright-core driving the system's Chromium), which loads the page,
//! checks it shows those figures with no console error, follows the first
//! at-risk link to the account page and saves screenshots under
//! `target/browser/`.
//!
//! Needs Node.js, Chromium (`/usr/bin/chromium` or `BOWTIE_CHROMIUM`) and
//! playwright-core (`make test` installs it into `.tools/`, or point
//! `BOWTIE_PLAYWRIGHT_NODE_PATH` at a `node_modules` holding it). Without
//! them the test prints why it is skipped and passes, except under
//! `CI=true`, where it fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use bowtie_testkit::gateway::Stack;
use bowtie_testkit::{Backend, READ_KEY, TestDatabase, WRITE_KEY};
use chrono::{DateTime, Datelike, Duration, Months, NaiveDate, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// What the browser needs, or why the test cannot run here.
struct Browser {
    chromium: PathBuf,
    node_path: PathBuf,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn find_browser() -> Result<Browser, String> {
    let chromium = std::env::var_os("BOWTIE_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !chromium.exists() {
        return Err(format!(
            "no Chromium at {} (apt-get install chromium chromium-driver, or set BOWTIE_CHROMIUM)",
            chromium.display()
        ));
    }
    let node = std::process::Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        return Err("node is not on PATH".into());
    }
    let node_path = match std::env::var_os("BOWTIE_PLAYWRIGHT_NODE_PATH") {
        Some(p) => PathBuf::from(p),
        None => std::fs::read_dir(workspace().join(".tools"))
            .ok()
            .and_then(|dirs| {
                dirs.filter_map(Result::ok)
                    .map(|d| d.path())
                    .filter(|p| {
                        p.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with("playwright-core-"))
                    })
                    .max()
            })
            .map(|p| p.join("node_modules"))
            .unwrap_or_default(),
    };
    if !node_path.join("playwright-core").exists() {
        return Err(
            "playwright-core is not installed (`make browser-tools`, or set BOWTIE_PLAYWRIGHT_NODE_PATH)"
                .into(),
        );
    }
    Ok(Browser {
        chromium,
        node_path,
    })
}

fn first_of_month(now: DateTime<Utc>, months_ago: u32) -> NaiveDate {
    let this = now
        .date_naive()
        .with_day(1)
        .unwrap_or_else(|| now.date_naive());
    this.checked_sub_months(Months::new(months_ago))
        .unwrap_or(this)
}

fn at(date: NaiveDate, day_offset: i64) -> String {
    let t = date.and_hms_opt(9, 0, 0).unwrap_or_default().and_utc() + Duration::days(day_offset);
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn expect_ok(
    stack: &Stack,
    path: &str,
    body: &Value,
    status: StatusCode,
) -> anyhow::Result<Value> {
    let (got, answer) = stack.post(path, WRITE_KEY, body).await?;
    anyhow::ensure!(got == status, "POST {path}: {got} {answer}");
    Ok(answer)
}

/// A small company: 24 accounts over the last 14 months, 16 of them paying,
/// some expanding, one contracting and two churning in the last 90 days.
async fn seed(stack: &Stack, now: DateTime<Utc>) -> anyhow::Result<()> {
    let segments = ["SMB", "MID_MARKET", "ENTERPRISE"];
    for i in 0..24u32 {
        let segment = segments[(i % 3) as usize];
        let id = stack
            .account(WRITE_KEY, &format!("Company {i:02}"), segment)
            .await?;
        let lead = first_of_month(now, 14 - i % 9);
        let mut stages = vec![("AWARENESS", 0)];
        if i % 4 != 3 {
            stages.push(("EDUCATION", 6));
        }
        if i % 3 != 2 {
            stages.push(("SELECTION", 14));
        }
        for (stage, offset) in stages {
            expect_ok(
                stack,
                &format!("/api/v1/accounts/{id}/transitions"),
                &json!({"stage": stage, "occurred_at": at(lead, offset), "source": "test"}),
                StatusCode::OK,
            )
            .await?;
        }
        if i >= 16 {
            continue;
        }
        let quantity = 5 + i64::from(i);
        let mut subscription = json!({
            "account_id": id, "billing_interval": "MONTH", "start_at": at(lead, 20),
            "terms": {"plan": "pro", "quantity": quantity,
                      "unit_price": {"currency": "USD", "minor_units": 4_000}}});
        if i % 4 == 0 {
            subscription["term_end_at"] = json!(rfc3339(now + Duration::days(20 + i64::from(i))));
        }
        let sub = expect_ok(
            stack,
            "/api/v1/subscriptions",
            &subscription,
            StatusCode::CREATED,
        )
        .await?;
        let sub_id = sub["id"].as_str().context("subscription id")?;
        let terms = |q: i64| json!({"plan": "pro", "quantity": q, "unit_price": {"currency": "USD", "minor_units": 4_000}});
        match i {
            0 | 5 | 10 | 15 => {
                expect_ok(
                    stack,
                    &format!("/api/v1/subscriptions/{sub_id}/changes"),
                    &json!({"terms": terms(quantity + 6), "effective_at": rfc3339(now - Duration::days(50))}),
                    StatusCode::OK,
                )
                .await?;
            }
            11 => {
                expect_ok(
                    stack,
                    &format!("/api/v1/subscriptions/{sub_id}/changes"),
                    &json!({"terms": terms(3), "effective_at": rfc3339(now - Duration::days(12))}),
                    StatusCode::OK,
                )
                .await?;
            }
            3 | 14 => {
                expect_ok(
                    stack,
                    &format!("/api/v1/subscriptions/{sub_id}/cancellation"),
                    &json!({"effective_at": rfc3339(now - Duration::days(25)),
                            "kind": "VOLUNTARY", "reason_code": "competitor"}),
                    StatusCode::OK,
                )
                .await?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// The account that lost the most MRR to churn and contraction in the last
/// 90 days, read from the movements the API returns.
async fn most_at_risk(stack: &Stack, now: DateTime<Utc>) -> anyhow::Result<String> {
    let since = rfc3339(now - Duration::days(90));
    let (_, page) = stack
        .get(
            &format!(
                "/api/v1/revenue/movements?start={since}&end={}&page_size=1000",
                rfc3339(now + Duration::minutes(5))
            ),
            READ_KEY,
        )
        .await?;
    let mut lost: BTreeMap<String, i64> = BTreeMap::new();
    for m in page["movements"].as_array().cloned().unwrap_or_default() {
        if m["type"] == "CHURN" || m["type"] == "CONTRACTION" {
            let account = m["account_id"].as_str().unwrap_or_default().to_owned();
            *lost.entry(account).or_default() -= m["amount"]["minor_units"].as_i64().unwrap_or(0);
        }
    }
    let (id, _) = lost
        .into_iter()
        .max_by_key(|(_, amount)| *amount)
        .context("no churn or contraction was recorded")?;
    let (_, account) = stack
        .get(&format!("/api/v1/accounts/{id}"), READ_KEY)
        .await?;
    Ok(account["name"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_api_figures_and_links_to_an_at_risk_account() -> anyhow::Result<()>
{
    let browser = match find_browser() {
        Ok(b) => b,
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            anyhow::bail!("the browser test cannot run under CI=true: {why}")
        }
        Err(why) => {
            eprintln!("skipped: {why}");
            return Ok(());
        }
    };
    let db = TestDatabase::create(Backend::Sqlite)
        .await?
        .context("SQLite is always available")?;
    let stack = Stack::start(&db).await?;
    let now = Utc::now();
    seed(&stack, now).await?;

    // What the page shows by default: the last 12 months, all segments.
    let start = first_of_month(now, 11);
    let next = first_of_month(now, 0)
        .checked_add_months(Months::new(1))
        .context("next month")?;
    let month = |d: NaiveDate| format!("{:04}-{:02}", d.year(), d.month());
    let (_, mrr) = stack
        .get(
            &format!(
                "/api/v1/revenue/mrr?start_month={}&end_month={}",
                month(start),
                month(first_of_month(now, 0))
            ),
            READ_KEY,
        )
        .await?;
    let periods = mrr["periods"].as_array().cloned().unwrap_or_default();
    let end_mrr = periods
        .last()
        .and_then(|p| p["end_mrr"].as_i64())
        .context("MRR report without periods")?;
    anyhow::ensure!(end_mrr > 0, "the seeded company has MRR");
    let (_, funnel) = stack
        .get(
            &format!(
                "/api/v1/funnel?start={}&end={}",
                at(start, 0).replace("09:00", "00:00"),
                at(next, 0).replace("09:00", "00:00")
            ),
            READ_KEY,
        )
        .await?;
    let awareness = funnel["stages"][0]["volume"]
        .as_i64()
        .context("AWARENESS volume")?;
    let (_, retention) = stack
        .get(
            &format!(
                "/api/v1/revenue/retention?start={}&end={}",
                at(start, 0).replace("09:00", "00:00"),
                rfc3339(Utc::now())
            ),
            READ_KEY,
        )
        .await?;
    let nrr = retention["nrr"].as_f64().context("NRR")?;
    let at_risk_name = most_at_risk(&stack, now).await?;

    let artifacts = workspace().join("target").join("browser");
    std::fs::create_dir_all(&artifacts)?;
    let script = workspace()
        .join("tests")
        .join("browser")
        .join("dashboard.cjs");
    let expect =
        json!({"mrr": end_mrr, "awareness": awareness, "nrr": nrr, "at_risk_name": at_risk_name});
    let url = stack.url();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg(script)
            .env("NODE_PATH", &browser.node_path)
            .env("BOWTIE_URL", url)
            .env("BOWTIE_KEY", READ_KEY)
            .env("BOWTIE_EXPECT", expect.to_string())
            .env("BOWTIE_ARTIFACTS", &artifacts)
            .env("BOWTIE_CHROMIUM", &browser.chromium)
            .output()
    })
    .await??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "{stdout}\n{stderr}");
    Ok(())
}
