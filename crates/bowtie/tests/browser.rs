//! End-to-end test of the dashboard in headless Chromium against
//! `bowtie dev --demo`.
//!
//! Runs the real binary (`bowtie dev --demo` on SQLite files in a temporary
//! directory, gRPC services on random ports, the gateway on a free port),
//! waits for the demo company to be seeded and for the funnel and scoring to
//! settle, reads the figures the page should show from the REST API, then
//! runs `tests/browser/dashboard.cjs` (playwright-core driving the system's
//! Chromium). The page must open signed in with the pre-filled development
//! key, show those figures with no console error or failed request (and
//! the enterprise MRR once filtered by segment), follow
//! the first at-risk link to that account's page (health components and
//! alerts shown, with its CTAs and timeline), list the playbooks, open the
//! work page, and it saves screenshots under `target/browser/`.
//!
//! Needs Node.js, Chromium (`/usr/bin/chromium` or `BOWTIE_CHROMIUM`) and
//! playwright-core (`make test` installs it into `.tools/`, or point
//! `BOWTIE_PLAYWRIGHT_NODE_PATH` at a `node_modules` holding it). Without
//! them the test prints why it is skipped and passes, except under
//! `CI=true`, where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bowtie_testkit::demo::{DemoProcess, free_port, gateway_only};
use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use serde_json::{Value, json};

/// Accounts of the demo company: enough for every chart, quick to seed in a
/// debug build.
const DEMO_ACCOUNTS: &str = "800";
/// The development read key `bowtie dev` documents.
const DEV_READ_KEY: &str = "bowtie-dev-read";

/// What the browser needs, or why the test cannot run here.
struct Browser {
    chromium: PathBuf,
    node_path: PathBuf,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
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
    let node = Command::new("node").arg("--version").output();
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

/// `bowtie dev --demo` and its gateway's URL.
struct Dev {
    _process: DemoProcess,
    url: String,
}

/// Starts `bowtie dev --demo` and returns once the demo company is seeded.
fn start_demo() -> anyhow::Result<Dev> {
    let port = free_port()?;
    let bin = Path::new(env!("CARGO_BIN_EXE_bowtie"));
    Ok(Dev {
        _process: DemoProcess::start(bin, DEMO_ACCOUNTS, &gateway_only(port), "warn")?,
        url: format!("http://127.0.0.1:{port}"),
    })
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn first_of_month(now: DateTime<Utc>, months_ago: u32) -> NaiveDate {
    let this = now
        .date_naive()
        .with_day(1)
        .unwrap_or_else(|| now.date_naive());
    this.checked_sub_months(Months::new(months_ago))
        .unwrap_or(this)
}

fn midnight(d: NaiveDate) -> String {
    rfc3339(d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
}

fn month(d: NaiveDate) -> String {
    format!("{:04}-{:02}", d.year(), d.month())
}

fn get(http: &reqwest::blocking::Client, url: &str) -> anyhow::Result<Value> {
    let response = http.get(url).bearer_auth(DEV_READ_KEY).send()?;
    let status = response.status();
    let body: Value = response.json()?;
    anyhow::ensure!(status.is_success(), "GET {url}: {status} {body}");
    Ok(body)
}

/// `GET url` once its answer satisfies `ready` and has stopped changing
/// (the same for half a second): the funnel and scoring follow the other
/// services' feeds, so their figures settle a moment after the writes.
fn settled(
    http: &reqwest::blocking::Client,
    url: &str,
    ready: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = Value::Null;
    let mut same = 0;
    while Instant::now() < deadline {
        let body = get(http, url)?;
        if ready(&body) && body == last {
            same += 1;
            if same >= 5 {
                return Ok(body);
            }
        } else {
            same = 0;
        }
        last = body;
        std::thread::sleep(Duration::from_millis(100));
    }
    anyhow::bail!("{url} did not settle: {last}")
}

#[test]
fn the_dashboard_shows_the_demo_figures_and_links_to_an_at_risk_account() -> anyhow::Result<()> {
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
    let dev = start_demo()?;
    let http = reqwest::blocking::Client::new();

    // What the page shows by default: the last 12 months, all segments.
    let now = Utc::now();
    let start = first_of_month(now, 11);
    let this_month = first_of_month(now, 0);
    let next = this_month
        .checked_add_months(Months::new(1))
        .context("next month")?;
    let at_risk = settled(
        &http,
        &format!("{}/api/v1/scoring/at-risk?page_size=10", dev.url),
        |page| {
            page["accounts"]
                .as_array()
                .is_some_and(|rows| !rows.is_empty())
        },
    )?;
    let funnel = settled(
        &http,
        &format!(
            "{}/api/v1/funnel?start={}&end={}",
            dev.url,
            midnight(start),
            midnight(next)
        ),
        |_| true,
    )?;
    let mrr = get(
        &http,
        &format!(
            "{}/api/v1/revenue/mrr?start_month={}&end_month={}",
            dev.url,
            month(start),
            month(this_month)
        ),
    )?;
    let retention = get(
        &http,
        &format!(
            "{}/api/v1/revenue/retention?start={}&end={}",
            dev.url,
            midnight(start),
            rfc3339(Utc::now())
        ),
    )?;
    let enterprise = get(
        &http,
        &format!(
            "{}/api/v1/revenue/mrr?start_month={}&end_month={}&segment=ENTERPRISE",
            dev.url,
            month(start),
            month(this_month)
        ),
    )?;
    let enterprise_mrr = enterprise["periods"]
        .as_array()
        .and_then(|p| p.last())
        .and_then(|p| p["end_mrr"].as_i64())
        .context("MRR report without periods")?;
    let end_mrr = mrr["periods"]
        .as_array()
        .and_then(|p| p.last())
        .and_then(|p| p["end_mrr"].as_i64())
        .context("MRR report without periods")?;
    anyhow::ensure!(end_mrr > 0, "the demo company has MRR");
    let playbooks = get(&http, &format!("{}/api/v1/success/playbooks", dev.url))?;
    let playbooks: Vec<&str> = playbooks["playbooks"]
        .as_array()
        .map(|p| p.iter().filter_map(|p| p["name"].as_str()).collect())
        .unwrap_or_default();
    anyhow::ensure!(!playbooks.is_empty(), "the demo company ships playbooks");
    let expect = json!({
        "playbooks": playbooks,
        "mrr": end_mrr,
        "awareness": funnel["stages"][0]["volume"].as_i64().context("AWARENESS volume")?,
        "nrr": retention["nrr"].as_f64().context("NRR")?,
        "at_risk_name": at_risk["accounts"][0]["name"].as_str().unwrap_or_default(),
        "scoring": true,
        "enterprise_mrr": enterprise_mrr,
    });
    anyhow::ensure!(
        0 < enterprise_mrr && enterprise_mrr < end_mrr,
        "enterprise is part of the MRR"
    );

    let artifacts = workspace().join("target").join("browser");
    std::fs::create_dir_all(&artifacts)?;
    let output = Command::new("node")
        .arg(
            workspace()
                .join("tests")
                .join("browser")
                .join("dashboard.cjs"),
        )
        .env("NODE_PATH", &browser.node_path)
        .env("BOWTIE_URL", &dev.url)
        // No key: `bowtie dev` pre-fills the read key.
        .env("BOWTIE_KEY", "")
        .env("BOWTIE_EXPECT", expect.to_string())
        .env("BOWTIE_ARTIFACTS", &artifacts)
        .env("BOWTIE_CHROMIUM", &browser.chromium)
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "{stdout}\n{stderr}");
    Ok(())
}

bowtie_testkit::backend_test!(
    a_person_signs_in_at_the_identity_provider_sees_their_book_and_signs_out
);

/// The dashboard with sign-in on (the services and the gateway of the
/// testkit, and the test identity provider): Ada signs in at the provider's
/// login page, the header shows her name, the page her book (the accounts
/// where she is the CSM or the owner, not Grace's), the at-risk and health
/// lists only her accounts until she picks "Everyone", she logs a note on one
/// of them (a write with the session cookie and its CSRF token), and she
/// signs out at the provider. `tests/browser/sign_in.cjs` drives Chromium.
async fn a_person_signs_in_at_the_identity_provider_sees_their_book_and_signs_out(
    db: &bowtie_testkit::TestDatabase,
) -> anyhow::Result<()> {
    use bowtie_proto::scoring::ListAtRiskRequest;
    use bowtie_proto::scoring::scoring_service_client::ScoringServiceClient;
    use bowtie_testkit::gateway::Stack;
    use bowtie_testkit::oidc::{OidcProvider, PEOPLE};
    use bowtie_testkit::scoring::{health_when, logins, record};

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
    let Some(provider) = OidcProvider::start()? else {
        return Ok(());
    };
    let (login, name, email, _) = PEOPLE[0];
    let (_, _, other, _) = PEOPLE[1];
    let mut settings = db.server_settings()?;
    settings.auth.oidc = provider.settings(5, 60);
    settings.gateway.sign_in = provider.sign_in_settings();
    // A key of Ada's too, to wait for scoring to know her book.
    bowtie_testkit::people::with_people(&mut settings, &[(email, "csm")]);
    let stack = Stack::start_from(settings, |_| {}).await?;
    let mut scoring = ScoringServiceClient::new(stack.scoring.with_key(bowtie_testkit::WRITE_KEY));
    for (account, owner, csm) in [
        ("Zephyr Labs", "sales@example.com", email),
        ("Acme", email, ""),
        ("Globex", "sales@example.com", other),
    ] {
        let (status, body) = stack
            .post(
                "/api/v1/accounts",
                bowtie_testkit::WRITE_KEY,
                &json!({"name": account, "segment": "SMB", "owner": owner, "csm": csm}),
            )
            .await?;
        anyhow::ensure!(status.is_success(), "create {account}: {status} {body}");
        // No usage of 10 logins: red, so at risk.
        let id = body["id"]
            .as_str()
            .context("created account without an id")?;
        record(&mut scoring, logins(id, id, 10, 40)).await?;
        health_when(&mut scoring, id, "a red score", |h| h.band == 1).await?;
    }
    let mut ada = ScoringServiceClient::new(
        stack
            .scoring
            .with_key(&bowtie_testkit::people::secret(email)),
    );
    bowtie_testkit::within(20, "Ada's book in scoring", async {
        loop {
            let mine = ada
                .list_at_risk(ListAtRiskRequest {
                    mine: true,
                    ..ListAtRiskRequest::default()
                })
                .await?
                .into_inner();
            if mine.accounts.len() == 2 {
                return anyhow::Ok(());
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    })
    .await??;
    let expect = json!({
        "name": name,
        "email": email,
        "book": ["Acme", "Zephyr Labs"],
        "at_risk_mine": ["Acme", "Zephyr Labs"],
        "at_risk_all": ["Acme", "Globex", "Zephyr Labs"],
    });

    let artifacts = workspace().join("target").join("browser");
    std::fs::create_dir_all(&artifacts)?;
    let mut command = Command::new("node");
    command
        .arg(
            workspace()
                .join("tests")
                .join("browser")
                .join("sign_in.cjs"),
        )
        .env("NODE_PATH", &browser.node_path)
        .env("BOWTIE_URL", stack.url())
        .env("BOWTIE_ISSUER", provider.issuer())
        .env("BOWTIE_LOGIN", login)
        .env("BOWTIE_EXPECT", expect.to_string())
        .env("BOWTIE_ARTIFACTS", &artifacts)
        .env("BOWTIE_CHROMIUM", &browser.chromium);
    // The servers run on this runtime: wait for the browser off it.
    let output = tokio::task::spawn_blocking(move || command.output()).await??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "{stdout}\n{stderr}");
    Ok(())
}
