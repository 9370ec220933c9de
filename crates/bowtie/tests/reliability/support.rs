//! What every reliability test needs: one configuration file for the
//! services a test runs, `bowtie serve <service>` as a child process that can
//! be killed with SIGKILL and restarted on the same database, a network link
//! between services that the test can cut, and a PostgreSQL server of the
//! test's own that it may stop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use bowtie_proto::accounts::accounts_service_client::AccountsServiceClient;
use bowtie_proto::accounts::{Account, CreateAccountRequest};
use bowtie_proto::common::Segment;
use bowtie_runtime::config::DatabaseSettings;
use bowtie_testkit::gateway::FUNNEL_SERVICE;
use bowtie_testkit::revenue::REVENUE_SERVICE;
use bowtie_testkit::scoring::SCORING_SERVICE;
use bowtie_testkit::{
    ACCOUNTS_SERVICE, AccountsClient, Bearer, NO_PEER, READ_KEY, WRITE_KEY, test_keys_toml,
};
use tokio::task::AbortHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The `i`-th account a test writes, with the idempotency key `<key>-<i>`.
pub fn account_request(key: &str, i: usize) -> CreateAccountRequest {
    CreateAccountRequest {
        account: Some(Account {
            name: format!("Crash test customer {i:04}"),
            segment: Segment::Smb as i32,
            owner: "ana".into(),
            ..Account::default()
        }),
        idempotency_key: format!("{key}-{i}"),
    }
}

/// The services `bowtie serve` runs that have a database.
pub const SERVICES: [&str; 4] = ["accounts", "funnel", "revenue", "scoring"];

/// A port nothing listens on yet, for a child process to bind.
///
/// Taken below Linux's ephemeral range (32768 and up by default), from a
/// base that differs per test process: a port-0 bind (another test's
/// server, a [`Link`], an outgoing connection) is never given one of these,
/// so none can take the port between this check and the child's bind.
pub fn free_port() -> anyhow::Result<u16> {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000
        + (std::process::id()
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos()))
            % 10_000;
    let _ = NEXT.compare_exchange(0, base as u16, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..1_000 {
        let port = NEXT.fetch_add(1, Ordering::SeqCst);
        if !(20_000..32_000).contains(&port) {
            NEXT.store(20_000, Ordering::SeqCst);
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no free port between 20000 and 32000")
}

/// One service of a test: its database and the port it listens on.
pub struct Node<'a> {
    /// `accounts`, `funnel`, `revenue` or `scoring`.
    pub service: &'static str,
    /// Its own database.
    pub database: &'a DatabaseSettings,
    /// Its port.
    pub port: u16,
}

/// Writes `bowtie.toml` into `dir` for `nodes`: each listens on its port
/// over its database, reaches the others at their ports (or at the address
/// `peers` names instead, e.g. a [`Link`]), and every peer the test does not
/// run is unreachable.
pub fn write_config(
    dir: &Path,
    nodes: &[Node<'_>],
    peers: &[(&str, String)],
) -> anyhow::Result<PathBuf> {
    let mut toml = format!(
        "[telemetry]\nlog_filter = \"warn\"\n\n[server]\ndrain_seconds = 0\n\n\
         [auth]\nkeys = {}\n\n[scoring_policy]\nrecompute_interval_ms = 20\n\n\
         [peers]\napi_key = {READ_KEY:?}\nconnect_timeout_ms = 1000\nrequest_timeout_ms = 3000\n",
        test_keys_toml(),
    );
    for service in SERVICES {
        let peer = peers
            .iter()
            .find(|(name, _)| *name == service)
            .map(|(_, uri)| uri.clone())
            .or_else(|| {
                nodes
                    .iter()
                    .find(|n| n.service == service)
                    .map(|n| format!("http://127.0.0.1:{}", n.port))
            })
            .unwrap_or_else(|| NO_PEER.to_owned());
        toml.push_str(&format!("{service} = {peer:?}\n"));
    }
    for node in nodes {
        let db = node.database;
        toml.push_str(&format!(
            "\n[{service}]\nlisten = \"127.0.0.1:{port}\"\n\n[{service}.database]\n\
             url = {url:?}\nschema = {schema:?}\nmax_connections = 4\n\
             connect_timeout_ms = {connect}\nacquire_timeout_ms = {acquire}\n",
            service = node.service,
            port = node.port,
            url = db.url(),
            schema = db.schema,
            connect = db.connect_timeout_ms,
            acquire = db.acquire_timeout_ms,
        ));
    }
    let path = dir.join("bowtie.toml");
    std::fs::write(&path, toml)?;
    Ok(path)
}

/// The full gRPC name `service` reports its health under.
fn health_name(service: &str) -> anyhow::Result<&'static str> {
    Ok(match service {
        "accounts" => ACCOUNTS_SERVICE,
        "funnel" => FUNNEL_SERVICE,
        "revenue" => REVENUE_SERVICE,
        "scoring" => SCORING_SERVICE,
        other => anyhow::bail!("no service {other}"),
    })
}

/// `bowtie serve <service>` as a child process, killed with SIGKILL when
/// dropped. Its log goes to `<service>.log` beside the configuration and is
/// quoted when it fails to start.
pub struct Process {
    child: Option<Child>,
    service: &'static str,
    port: u16,
    config: PathBuf,
}

impl Process {
    /// Starts `bowtie --config <config> serve <service>` and waits until its
    /// health reports SERVING.
    pub async fn start(config: &Path, service: &'static str, port: u16) -> anyhow::Result<Self> {
        let mut process = Self {
            child: None,
            service,
            port,
            config: config.to_owned(),
        };
        process.restart().await?;
        Ok(process)
    }

    /// Starts `service` alone on `database`, on a free port, with its
    /// configuration written into `dir` (every peer unreachable).
    pub async fn alone(
        dir: &Path,
        service: &'static str,
        database: &DatabaseSettings,
    ) -> anyhow::Result<Self> {
        let port = free_port()?;
        let config = write_config(
            dir,
            &[Node {
                service,
                database,
                port,
            }],
            &[],
        )?;
        Self::start(&config, service, port).await
    }

    fn log(&self) -> PathBuf {
        self.config.with_file_name(format!("{}.log", self.service))
    }

    /// Kills the process if it runs, starts it again on the same
    /// configuration (and so the same database and port) and waits until it
    /// serves.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())?;
        let child = Command::new(env!("CARGO_BIN_EXE_bowtie"))
            .arg("--config")
            .arg(&self.config)
            .args(["serve", self.service])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting bowtie serve {}", self.service))?;
        self.child = Some(child);
        self.wait_for_health(ServingStatus::Serving)
            .await
            .map(|_| ())
            .with_context(|| {
                let log = std::fs::read_to_string(self.log()).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                format!(
                    "bowtie serve {} did not start; its log ends with:\n{}",
                    self.service,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
    }

    /// SIGKILL (what `Child::kill` sends): no drain, no shutdown hook runs.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn uri(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A channel to the process with `key` on every call, for any client.
    /// It connects on first use, and again after a restart.
    pub fn channel(&self, key: &str) -> anyhow::Result<InterceptedService<Channel, Bearer>> {
        let channel = Endpoint::from_shared(self.uri())?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .connect_lazy();
        Ok(InterceptedService::new(channel, Bearer::new(key)))
    }

    /// An accounts client with the write key.
    pub fn accounts(&self) -> anyhow::Result<AccountsClient> {
        Ok(AccountsServiceClient::new(self.channel(WRITE_KEY)?))
    }

    /// The health status the process reports, `None` when it does not answer.
    pub async fn health(&self) -> Option<i32> {
        let channel = Endpoint::from_shared(self.uri())
            .ok()?
            .timeout(Duration::from_secs(2))
            .connect()
            .await
            .ok()?;
        HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: health_name(self.service).ok()?.to_owned(),
            })
            .await
            .ok()
            .map(|r| r.into_inner().status)
    }

    /// Waits (at most 30 s) until health reports `wanted`; returns how long it took.
    pub async fn wait_for_health(&mut self, wanted: ServingStatus) -> anyhow::Result<Duration> {
        let start = tokio::time::Instant::now();
        loop {
            if self.health().await == Some(wanted as i32) {
                return Ok(start.elapsed());
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                anyhow::bail!("bowtie serve {} exited: {status}", self.service);
            }
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(30),
                "{} never reported {wanted:?}",
                self.service
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP link from one service to another (a proxy on its own port) that
/// the test can cut, as a network partition would: while cut, every
/// connection through it is closed and new ones are dropped on arrival; the
/// services at both ends keep running.
pub struct Link {
    port: u16,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl Link {
    /// A link to `127.0.0.1:<target>`.
    pub async fn open(target: u16) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let cut = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let accept = {
            let (cut, open) = (cut.clone(), open.clone());
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if cut.load(Ordering::SeqCst) {
                        continue;
                    }
                    let relay = tokio::spawn(async move {
                        if let Ok(mut outbound) =
                            tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                        {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    if let Ok(mut open) = open.lock() {
                        open.retain(|r| !r.is_finished());
                        open.push(relay.abort_handle());
                    }
                }
            })
            .abort_handle()
        };
        Ok(Self {
            port,
            cut,
            open,
            accept,
        })
    }

    /// The address services use to reach the target through the link.
    pub fn uri(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Closes every connection through the link and drops new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        if let Ok(mut open) = self.open.lock() {
            for relay in open.drain(..) {
                relay.abort();
            }
        }
    }

    /// Lets connections through again.
    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// A PostgreSQL server of the test's own (initdb in a temporary directory,
/// a free port), so that stopping it disturbs no other test. Run as the
/// `postgres` user when the test runs as root, as initdb requires. The
/// superuser is `bowtie`; over the Unix socket it needs no password.
pub struct PrivatePostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
}

impl PrivatePostgres {
    /// A server whose TCP connections authenticate with `host_auth`
    /// (`trust`, or `scram-sha-256` to check passwords); `None` (the test is
    /// skipped) when no PostgreSQL server is installed, except under
    /// `CI=true`, where `.ci/run` installs one.
    pub fn create(host_auth: &str) -> anyhow::Result<Option<Self>> {
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
            .args(["--auth-local=trust", "--auth-host", host_auth])
            .args(["-U", "bowtie", "--no-sync"])
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

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser's URL of database `postgres` over TCP (host
    /// authentication `trust` only).
    pub fn url(&self) -> String {
        format!("postgres://bowtie@127.0.0.1:{}/postgres", self.port)
    }

    /// `psql` of this server's version, with nothing set.
    pub fn psql_program(&self) -> PathBuf {
        self.bin.join("psql")
    }

    /// The environment that points `psql` at this server as the superuser
    /// over the Unix socket.
    pub fn admin_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("PGHOST", self.dir.path().display().to_string()),
            ("PGPORT", self.port.to_string()),
            ("PGUSER", "bowtie".to_owned()),
        ]
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&self) -> anyhow::Result<()> {
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
    pub fn stop(&self) -> anyhow::Result<()> {
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

/// Runs `command`, failing unless it succeeds.
pub fn run(command: &mut Command) -> anyhow::Result<()> {
    let status = command.stdout(Stdio::null()).status()?;
    anyhow::ensure!(status.success(), "{command:?} failed: {status}");
    Ok(())
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `seconds`.
pub async fn eventually<T>(
    seconds: u64,
    what: &str,
    mut check: impl AsyncFnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(found) = check().await? {
            return Ok(found);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "timed out after {seconds}s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
