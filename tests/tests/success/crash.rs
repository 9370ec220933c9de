//! The success service killed while a burst arrives on the scoring feed: it
//! runs as its own `bowtie serve success` process (the binary the workspace
//! built: `BOWTIE_BIN`, or `target/debug/bowtie`), scoring raises an
//! ENTERED_RED alert for every account at once, and the process is killed
//! with SIGKILL as soon as the first CTAs exist. Restarted on the same
//! database it resumes from its stored cursor: every account ends with
//! exactly one CTA with its tasks, counted from one trigger, and one alert
//! and one CTA entry on its timeline.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use bowtie_proto::accounts::{Account, CreateAccountRequest};
use bowtie_proto::common::{PageRequest, Segment};
use bowtie_proto::scoring::RecomputeHealthRequest;
use bowtie_proto::scoring::scoring_service_client::ScoringServiceClient;
use bowtie_proto::success::success_service_client::SuccessServiceClient;
use bowtie_proto::success::{
    ActivityKind, CreatePlaybookRequest, Cta, CtaStatus, ListActivitiesRequest, ListCtasRequest,
};
use bowtie_runtime::config::Settings;
use bowtie_runtime::db::Db;
use bowtie_testkit::demo::free_port;
use bowtie_testkit::scoring::{logins, record, start_scoring};
use bowtie_testkit::success::{SUCCESS_SERVICE, SuccessClient, red_playbook};
use bowtie_testkit::{
    ADMIN_KEY, Bearer, READ_KEY, TestDatabase, TestServer, WRITE_KEY, backend_test, test_keys_toml,
    within,
};
use secrecy::ExposeSecret;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Endpoint;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

backend_test!(a_success_service_killed_during_a_burst_loses_and_repeats_no_cta);

/// Accounts turning red at once.
const ACCOUNTS: usize = 400;
const CSMS: [&str; 4] = ["ana", "ben", "chloe", "dev"];

/// The `bowtie` binary the workspace built.
fn bowtie_binary() -> anyhow::Result<PathBuf> {
    let bin = std::env::var_os("BOWTIE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/debug/bowtie")
                .to_path_buf()
        });
    anyhow::ensure!(
        bin.exists(),
        "no bowtie binary at {} (cargo build -p bowtie, or set BOWTIE_BIN)",
        bin.display()
    );
    Ok(bin)
}

/// `bowtie serve success` with `settings`' success database, keys and
/// peers, written to a configuration file; killed with SIGKILL.
struct SuccessProcess {
    bin: PathBuf,
    config: PathBuf,
    log: PathBuf,
    addr: SocketAddr,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl SuccessProcess {
    fn configure(settings: &Settings) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let database = &settings.success.database;
        let toml = format!(
            "[telemetry]\nlog_filter = \"warn\"\n\n[server]\ndrain_seconds = 0\n\n\
             [auth]\nkeys = {}\n\n\
             [peers]\napi_key = {:?}\naccounts = {:?}\nscoring = {:?}\n\
             revenue = {:?}\nfunnel = {:?}\nsuccess = {:?}\n\n\
             [success]\nlisten = \"{addr}\"\n\n\
             [success.database]\nurl = {:?}\nschema = {:?}\nmax_connections = 4\n",
            test_keys_toml(),
            READ_KEY,
            settings.peers.accounts,
            settings.peers.scoring,
            settings.peers.revenue,
            settings.peers.funnel,
            bowtie_testkit::NO_PEER,
            database.url.expose_secret(),
            database.schema,
        );
        let config = dir.path().join("bowtie.toml");
        std::fs::write(&config, toml)?;
        Ok(Self {
            bin: bowtie_binary()?,
            config,
            log: dir.path().join("success.log"),
            addr,
            child: None,
            _dir: dir,
        })
    }

    /// Starts the process and waits until it reports SERVING.
    async fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.bin)
            .arg("--config")
            .arg(&self.config)
            .args(["serve", "success"])
            .env_remove("BOWTIE_CONFIG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} serve success", self.bin.display()))?;
        self.child = Some(child);
        let serving = within(30, "success to report SERVING", async {
            loop {
                if let Ok(channel) = Endpoint::from_shared(format!("http://{}", self.addr))?
                    .connect()
                    .await
                    && let Ok(status) = HealthClient::new(channel)
                        .check(HealthCheckRequest {
                            service: SUCCESS_SERVICE.to_owned(),
                        })
                        .await
                    && status.into_inner().status == ServingStatus::Serving as i32
                {
                    return anyhow::Ok(());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        match serving {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(e.context(std::fs::read_to_string(&self.log).unwrap_or_default())),
        }
    }

    /// SIGKILL: no shutdown, no drain, whatever transaction was open is lost.
    fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    async fn client(&self, key: &str) -> anyhow::Result<SuccessClient> {
        let channel = Endpoint::from_shared(format!("http://{}", self.addr))?
            .connect()
            .await?;
        Ok(SuccessServiceClient::new(InterceptedService::new(
            channel,
            Bearer::new(key),
        )))
    }
}

impl Drop for SuccessProcess {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// Every CTA that is not closed, all pages.
async fn open_ctas(client: &mut SuccessClient) -> anyhow::Result<Vec<Cta>> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_ctas(ListCtasRequest {
                page: Some(PageRequest {
                    page_size: 1000,
                    page_token: token,
                }),
                ..ListCtasRequest::default()
            })
            .await?
            .into_inner();
        out.extend(page.ctas);
        token = page.page.map(|p| p.next_page_token).unwrap_or_default();
        if token.is_empty() {
            return Ok(out);
        }
    }
}

/// Waits until success's scoring consumer has applied scoring's whole feed.
async fn caught_up(settings: &Settings) -> anyhow::Result<()> {
    let scoring = Db::connect(&settings.scoring.database).await?;
    let success = Db::connect(&settings.success.database).await?;
    let last = bowtie_runtime::feed::last_change_sequence(scoring.reader()).await?;
    within(60, "success to apply the whole scoring feed", async {
        loop {
            let cursor = bowtie_runtime::feed::load_cursor(
                success.reader(),
                bowtie_success::feeds::SCORING_CONSUMER,
            )
            .await?;
            if cursor >= last {
                return anyhow::Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await??;
    scoring.close().await;
    success.close().await;
    Ok(())
}

async fn a_success_service_killed_during_a_burst_loses_and_repeats_no_cta(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let mut settings = db.server_settings()?;
    // Nothing is scored until the burst: every account at once.
    settings.scoring_policy.recompute_interval_ms = 3_600_000;
    let accounts = TestServer::start_with(&settings).await?;
    settings.peers.accounts = accounts.uri();
    let scoring = start_scoring(&settings).await?;
    settings.peers.scoring = scoring.uri();

    let mut directory = accounts.accounts();
    let mut ids = Vec::with_capacity(ACCOUNTS);
    for i in 0..ACCOUNTS {
        let account = directory
            .create_account(CreateAccountRequest {
                account: Some(Account {
                    name: format!("Customer {i}"),
                    segment: Segment::MidMarket as i32,
                    csm: CSMS[i % CSMS.len()].to_owned(),
                    ..Account::default()
                }),
                idempotency_key: String::new(),
            })
            .await?
            .into_inner()
            .account
            .context("CreateAccount returned no account")?;
        ids.push(account.id);
    }
    // One login 40 days ago and none since: each account scores red.
    let mut signals = ScoringServiceClient::new(scoring.with_key(WRITE_KEY));
    let batch = ids
        .iter()
        .enumerate()
        .flat_map(|(i, id)| logins(&format!("crash-{i}"), id, 1, 40))
        .collect();
    record(&mut signals, batch).await?;

    let mut success = SuccessProcess::configure(&settings)?;
    success.start().await?;
    let playbook = success
        .client(ADMIN_KEY)
        .await?
        .create_playbook(CreatePlaybookRequest {
            spec: Some(red_playbook("Save red accounts")),
            idempotency_key: String::new(),
        })
        .await?
        .into_inner()
        .playbook
        .context("CreatePlaybook returned no playbook")?;

    // The burst, and SIGKILL as soon as the first CTAs exist.
    ScoringServiceClient::new(scoring.with_key(ADMIN_KEY))
        .recompute_health(RecomputeHealthRequest {})
        .await?;
    let mut client = success.client(WRITE_KEY).await?;
    let before_kill = within(60, "the first CTAs", async {
        loop {
            let n = open_ctas(&mut client).await?.len();
            if n > 0 {
                return anyhow::Ok(n);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await??;
    success.kill()?;
    assert!(
        before_kill < ACCOUNTS,
        "every CTA existed before the kill ({before_kill}); the burst was not interrupted"
    );

    // Restarted on the same database, it finishes the burst.
    success.start().await?;
    caught_up(&settings).await?;
    let mut client = success.client(WRITE_KEY).await?;
    let ctas = open_ctas(&mut client).await?;
    let mut per_account: HashMap<&str, usize> = HashMap::new();
    for cta in &ctas {
        *per_account.entry(cta.account_id.as_str()).or_default() += 1;
        assert_eq!(cta.playbook_id, playbook.id);
        assert_eq!(cta.status, CtaStatus::Open as i32);
        assert_eq!(
            cta.trigger_count, 1,
            "CTA {} counted a trigger twice",
            cta.id
        );
        let tasks: Vec<&str> = cta.tasks.iter().map(|t| t.title.as_str()).collect();
        assert_eq!(tasks, ["Call the champion", "Agree a save plan"]);
    }
    assert_eq!(ctas.len(), ACCOUNTS);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(per_account.get(id.as_str()), Some(&1), "account {id}");
        let owner = ctas
            .iter()
            .find(|c| &c.account_id == id)
            .map(|c| c.owner.as_str());
        assert_eq!(owner, Some(CSMS[i % CSMS.len()]));
        let timeline = client
            .list_activities(ListActivitiesRequest {
                account_id: id.clone(),
                ..ListActivitiesRequest::default()
            })
            .await?
            .into_inner()
            .activities;
        let count = |kind: ActivityKind| timeline.iter().filter(|a| a.kind == kind as i32).count();
        assert_eq!(
            (count(ActivityKind::Alert), count(ActivityKind::Cta)),
            (1, 1),
            "timeline of {id}: {timeline:?}"
        );
    }
    Ok(())
}
