//! Reliability of the real `bowtie` binary: a service killed with SIGKILL in
//! the middle of a stream of writes loses none it acknowledged and, when the
//! client replays the unacknowledged tail with the same idempotency keys,
//! duplicates none. On SQLite and PostgreSQL. And a PostgreSQL that goes
//! away under load: calls fail fast with UNAVAILABLE, health turns
//! NOT_SERVING, and the service recovers by itself when the database returns.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bowtie_proto::accounts::accounts_service_client::AccountsServiceClient;
use bowtie_proto::accounts::{Account, CreateAccountRequest, ListAccountsRequest};
use bowtie_proto::common::Segment;
use bowtie_runtime::config::{DatabaseSettings, Settings};
use bowtie_testkit::fixtures::page;
use bowtie_testkit::{
    ACCOUNTS_SERVICE, AccountsClient, Bearer, TestDatabase, WRITE_KEY, backend_test, test_keys,
};
use tokio::sync::Mutex;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Endpoint;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

backend_test!(acknowledged_account_writes_survive_a_kill_and_replays_duplicate_nothing);

/// Writes attempted in all; the kill comes after about a third are acknowledged.
const WRITES: usize = 600;
const KILL_AFTER: usize = 200;
const WRITERS: usize = 8;

/// `bowtie serve accounts` as a child process, killed with SIGKILL when dropped.
struct Service {
    child: Child,
    port: u16,
}

impl Service {
    fn start(config: &Path, port: u16) -> anyhow::Result<Self> {
        let child = Command::new(env!("CARGO_BIN_EXE_bowtie"))
            .arg("--config")
            .arg(config)
            .args(["serve", "accounts"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting bowtie serve accounts")?;
        Ok(Self { child, port })
    }

    fn kill(&mut self) {
        // Child::kill sends SIGKILL: no drain, no shutdown hook runs.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    async fn client(&self) -> anyhow::Result<AccountsClient> {
        let channel = Endpoint::from_shared(format!("http://127.0.0.1:{}", self.port))?
            .timeout(Duration::from_secs(10))
            .connect()
            .await?;
        Ok(AccountsServiceClient::new(InterceptedService::new(
            channel,
            Bearer::new(WRITE_KEY),
        )))
    }

    async fn wait_until_serving(&self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(channel) = Endpoint::from_shared(format!("http://127.0.0.1:{}", self.port))?
                .connect()
                .await
            {
                let status = HealthClient::new(channel)
                    .check(HealthCheckRequest {
                        service: ACCOUNTS_SERVICE.to_owned(),
                    })
                    .await
                    .map(|r| r.into_inner().status);
                if status.is_ok_and(|s| s == ServingStatus::Serving as i32) {
                    return Ok(());
                }
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "bowtie serve accounts did not become SERVING"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Service {
    async fn health(&self) -> Option<i32> {
        let channel = Endpoint::from_shared(format!("http://127.0.0.1:{}", self.port))
            .ok()?
            .timeout(Duration::from_secs(2))
            .connect()
            .await
            .ok()?;
        HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: ACCOUNTS_SERVICE.to_owned(),
            })
            .await
            .ok()
            .map(|r| r.into_inner().status)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A configuration file for the accounts service on `database`.
fn write_config(dir: &Path, database: &DatabaseSettings, port: u16) -> anyhow::Result<PathBuf> {
    let keys: Vec<String> = test_keys()
        .iter()
        .map(|k| {
            format!(
                "{{ name = {:?}, hash = {:?}, scopes = {:?} }}",
                k.name, k.hash, k.scopes
            )
        })
        .collect();
    let toml = format!(
        "[telemetry]\nlog_filter = \"warn\"\n\n[server]\ndrain_seconds = 0\n\n\
         [auth]\nkeys = [{}]\n\n[accounts]\nlisten = \"127.0.0.1:{port}\"\n\n\
         [accounts.database]\nurl = {:?}\nschema = {:?}\nmax_connections = 4\n\
         connect_timeout_ms = {}\nacquire_timeout_ms = {}\n",
        keys.join(", "),
        database.url(),
        database.schema,
        database.connect_timeout_ms,
        database.acquire_timeout_ms,
    );
    let path = dir.join("bowtie.toml");
    std::fs::write(&path, toml)?;
    Ok(path)
}

fn request(i: usize) -> CreateAccountRequest {
    CreateAccountRequest {
        account: Some(Account {
            name: format!("Crash test customer {i:04}"),
            segment: Segment::Smb as i32,
            owner: "ana".into(),
            ..Account::default()
        }),
        idempotency_key: format!("crash-{i}"),
    }
}

async fn all_account_names(client: &mut AccountsClient) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_accounts(ListAccountsRequest {
                page: page(500, &token),
                ..ListAccountsRequest::default()
            })
            .await?
            .into_inner();
        names.extend(page.accounts.into_iter().map(|a| a.name));
        token = page.page.map(|p| p.next_page_token).unwrap_or_default();
        if token.is_empty() {
            return Ok(names);
        }
    }
}

async fn acknowledged_account_writes_survive_a_kill_and_replays_duplicate_nothing(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let config = write_config(dir.path(), db.settings(), port)?;
    let mut service = Service::start(&config, port)?;
    service.wait_until_serving().await?;

    // WRITERS tasks take the next write number and send it until the
    // service dies; every acknowledged id is remembered.
    let acknowledged: Arc<Mutex<Vec<Option<String>>>> = Arc::new(Mutex::new(vec![None; WRITES]));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..WRITERS {
        let (acknowledged, next) = (acknowledged.clone(), next.clone());
        let mut client = service.client().await?;
        writers.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= WRITES {
                    return;
                }
                match client.create_account(request(i)).await {
                    Ok(answer) => {
                        let id = answer.into_inner().account.map(|a| a.id);
                        acknowledged.lock().await[i] = id;
                    }
                    Err(_) => return,
                }
            }
        });
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let done = acknowledged.lock().await.iter().flatten().count();
        if done >= KILL_AFTER {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "only {done} writes acknowledged in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    service.kill();
    while writers.join_next().await.is_some() {}
    let acknowledged = acknowledged.lock().await.clone();
    let acked = acknowledged.iter().flatten().count();
    let attempted = next.load(std::sync::atomic::Ordering::SeqCst).min(WRITES);
    assert!(acked >= KILL_AFTER);
    assert!(
        acked < WRITES,
        "the kill must land in the middle of the stream"
    );

    // Restart on the same database: every acknowledged write is there.
    let service = Service::start(&config, port)?;
    service.wait_until_serving().await?;
    let mut client = service.client().await?;
    let names = all_account_names(&mut client).await?;
    for (i, id) in acknowledged.iter().enumerate() {
        if id.is_some() {
            assert!(
                names.contains(&request(i).account.unwrap_or_default().name),
                "acknowledged write {i} is missing after the kill"
            );
        }
    }

    // Replay everything that was attempted, acknowledged or not, then the
    // rest: the acknowledged ones answer the first result, nothing doubles.
    for (i, id) in acknowledged.iter().enumerate() {
        let answer = client.create_account(request(i)).await?.into_inner();
        let replayed = answer.account.map(|a| a.id);
        if id.is_some() {
            assert_eq!(&replayed, id, "replay of acknowledged write {i}");
        }
    }
    let mut names = all_account_names(&mut client).await?;
    assert_eq!(names.len(), WRITES, "{attempted} attempted before the kill");
    names.sort();
    names.dedup();
    assert_eq!(names.len(), WRITES);
    Ok(())
}

/// A PostgreSQL server of this test's own (initdb in a temporary
/// directory, a free port), so that stopping it disturbs no other test.
/// Run as the `postgres` user when the test runs as root, as initdb requires.
struct PrivatePostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
}

impl PrivatePostgres {
    /// `None` (the test is skipped) when no PostgreSQL server is installed,
    /// except under `CI=true`, where `.ci/run` installs one.
    fn create() -> anyhow::Result<Option<Self>> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|b| b.join("pg_ctl").exists())
            .max();
        let Some(bin) = bin else {
            anyhow::ensure!(
                std::env::var("CI").map_or(true, |v| v != "true"),
                "CI=true but no PostgreSQL server under /usr/lib/postgresql"
            );
            eprintln!("skipped: no PostgreSQL server installed");
            return Ok(None);
        };
        let uid = Command::new("id").arg("-u").output()?;
        let as_postgres = String::from_utf8_lossy(&uid.stdout).trim() == "0";
        let dir = tempfile::Builder::new().prefix("bowtie-pg-").tempdir()?;
        if as_postgres {
            run(Command::new("chown")
                .arg("-R")
                .arg("postgres:postgres")
                .arg(dir.path()))?;
        }
        let pg = Self {
            bin,
            dir,
            port: free_port()?,
            as_postgres,
        };
        pg.tool("initdb")
            .arg("-D")
            .arg(pg.data())
            .args(["-A", "trust", "-U", "bowtie", "--no-sync"])
            .stdout(Stdio::null())
            .status()
            .context("initdb")?
            .success()
            .then_some(())
            .context("initdb failed")?;
        Ok(Some(pg))
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn tool(&self, name: &str) -> Command {
        let program = self.bin.join(name);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    fn url(&self) -> String {
        format!("postgres://bowtie@127.0.0.1:{}/postgres", self.port)
    }

    fn start(&self) -> anyhow::Result<()> {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        run(self
            .tool("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("log"))
            .args(["-w", "-o", &options, "start"]))
    }

    /// Stops at once, as a crash or a network cut would: no checkpoint, and
    /// every open connection broken.
    fn stop(&self) -> anyhow::Result<()> {
        run(self
            .tool("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-w", "-m", "immediate", "stop"]))
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .tool("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let status = command.stdout(Stdio::null()).status()?;
    anyhow::ensure!(status.success(), "{command:?} failed: {status}");
    Ok(())
}

async fn wait_for_health(service: &Service, wanted: ServingStatus) -> anyhow::Result<Duration> {
    let start = tokio::time::Instant::now();
    loop {
        if service.health().await == Some(wanted as i32) {
            return Ok(start.elapsed());
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(30),
            "health never became {wanted:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_fails_calls_fast_with_unavailable_and_the_service_recovers_without_a_restart()
-> anyhow::Result<()> {
    let Some(pg) = PrivatePostgres::create()? else {
        return Ok(());
    };
    pg.start()?;
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let mut database = Settings::defaults()?
        .accounts
        .database
        .with_url(&pg.url(), "accounts");
    database.connect_timeout_ms = 1_000;
    database.acquire_timeout_ms = 1_000;
    let config = write_config(dir.path(), &database, port)?;
    let service = Service::start(&config, port)?;
    service.wait_until_serving().await?;
    let mut client = service.client().await?;
    let before = client
        .create_account(request(1))
        .await?
        .into_inner()
        .account;
    let before = before.context("no account")?;

    // Load while the database disappears.
    let load = {
        let mut client = service.client().await?;
        tokio::spawn(async move {
            let mut codes = Vec::new();
            let until = tokio::time::Instant::now() + Duration::from_secs(4);
            for i in 1_000.. {
                if tokio::time::Instant::now() > until {
                    break;
                }
                let started = tokio::time::Instant::now();
                let code = match client.create_account(request(i)).await {
                    Ok(_) => tonic::Code::Ok,
                    Err(status) => status.code(),
                };
                codes.push((code, started.elapsed()));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            codes
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    pg.stop()?;

    // Every call now fails fast and says why.
    for i in 2..6 {
        let started = tokio::time::Instant::now();
        let outcome = client.create_account(request(i)).await;
        let took = started.elapsed();
        let status = outcome
            .err()
            .context("a write without a database succeeded")?;
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(took < Duration::from_secs(3), "failing took {took:?}");
    }
    let read = client
        .get_account(bowtie_proto::accounts::GetAccountRequest {
            id: before.id.clone(),
        })
        .await;
    assert_eq!(read.err().map(|s| s.code()), Some(tonic::Code::Unavailable));
    wait_for_health(&service, ServingStatus::NotServing).await?;
    let codes = load.await?;
    assert!(
        codes.iter().all(
            |(code, took)| matches!(code, tonic::Code::Ok | tonic::Code::Unavailable)
                && *took < Duration::from_secs(3)
        ),
        "under load every call either succeeded or failed fast with UNAVAILABLE: {codes:?}"
    );
    assert!(
        codes
            .iter()
            .any(|(code, _)| *code == tonic::Code::Unavailable)
    );

    // The database returns; the same process serves again.
    pg.start()?;
    wait_for_health(&service, ServingStatus::Serving).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let after = loop {
        match client.create_account(request(7)).await {
            Ok(answer) => break answer.into_inner().account.context("no account")?,
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable);
                anyhow::ensure!(
                    tokio::time::Instant::now() < deadline,
                    "no recovery: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_ne!(after.id, before.id);
    let again = client
        .get_account(bowtie_proto::accounts::GetAccountRequest { id: before.id })
        .await?
        .into_inner()
        .account
        .context("no account")?;
    assert_eq!(again.name, "Crash test customer 0001");
    Ok(())
}
