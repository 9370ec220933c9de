//! The test harness shared by Bowtie's integration tests: it starts the real
//! accounts server on `127.0.0.1:0` over a fresh database per test and hands
//! out generated gRPC clients that already carry an API key.
//!
//! Every scenario runs twice, once on SQLite (a file in a temporary directory)
//! and once on PostgreSQL (a throw-away schema in the database named by
//! `BOWTIE_TEST_DATABASE_URL`), through [`backend_test!`]. Settings are built
//! from [`Settings::defaults`] with fields changed in place, never through
//! environment variables, so tests running in parallel in one process cannot
//! see each other's configuration.
//!
//! PostgreSQL is optional on a developer machine and mandatory in CI: when
//! `BOWTIE_TEST_DATABASE_URL` is unset the PostgreSQL half of each test prints
//! `skipped: BOWTIE_TEST_DATABASE_URL not set` and passes, unless `CI=true`,
//! where it fails, so a misconfigured pipeline cannot go green by silently
//! skipping half of the suite.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bowtie_proto::accounts::accounts_service_client::AccountsServiceClient;
use bowtie_runtime::auth::{ApiKeys, hash_key};
use bowtie_runtime::config::{ApiKeySettings, DatabaseSettings, Settings};
use bowtie_runtime::server::GrpcServer;
use bowtie_runtime::shutdown::Shutdown;
use sea_orm::{ConnectOptions, Database};
use tokio::task::JoinHandle;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;

pub mod assert;
pub mod demo;
pub mod fixtures;
pub mod gateway;
pub mod import;
pub mod oidc;
pub mod people;
pub mod receiver;
pub mod revenue;
pub mod robustness;
pub mod scoring;
pub mod stack;
pub mod storage;
pub mod success;
pub mod tls;

/// A peer address nothing listens on.
pub const NO_PEER: &str = "http://127.0.0.1:1";

/// Environment variable naming the PostgreSQL database the tests may use.
pub const DATABASE_URL_VAR: &str = "BOWTIE_TEST_DATABASE_URL";

/// An API key with the admin scope (and so every other scope).
pub const ADMIN_KEY: &str = "bt_test_admin_0b8f3c1e6d2a4f5b9c7e1d3a5f7b9c1e";
/// An API key with the read and write scopes, the key a CRM integration holds.
pub const WRITE_KEY: &str = "bt_test_writer_4e6a8c0b2d4f6a8c0e2b4d6f8a0c2e4b";
/// An API key with the read scope only, the key a dashboard holds.
pub const READ_KEY: &str = "bt_test_reader_7d9b1f3a5c7e9b1d3f5a7c9e1b3d5f7a";
/// An API key with the write scope that expired at [`EXPIRED_AT`].
pub const EXPIRED_KEY: &str = "bt_test_expired_2c4e6a8b0d2f4a6c8e0b2d4f6a8c0e2d";
/// When [`EXPIRED_KEY`] stopped working.
pub const EXPIRED_AT: &str = "2026-01-01T00:00:00Z";

/// Longest time the harness waits for a server to start or stop before
/// failing the test, so a hung server is a failure rather than a hung suite.
pub const SERVER_TIMEOUT: Duration = Duration::from_secs(15);

/// The database engine a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A fresh SQLite file in a temporary directory.
    Sqlite,
    /// A fresh schema in the PostgreSQL database at `BOWTIE_TEST_DATABASE_URL`.
    Postgres,
}

/// A PostgreSQL schema created for one test.
#[derive(Debug)]
struct PostgresSchema {
    url: String,
    schema: String,
}

/// A database nobody else uses, removed when dropped.
///
/// The PostgreSQL schema is dropped in `Drop` rather than in an async
/// `cleanup` method because a failing assertion panics: a method the test has
/// to reach would be skipped exactly when the schema is interesting, and the
/// database would fill up with leftovers. Dropping is best effort.
#[derive(Debug)]
pub struct TestDatabase {
    backend: Backend,
    settings: DatabaseSettings,
    /// Keeps the SQLite directory alive for the test's duration.
    _dir: Option<tempfile::TempDir>,
    postgres: Option<PostgresSchema>,
    /// Extra per-service schemas created on PostgreSQL, dropped with the database.
    extra_schemas: std::sync::Mutex<Vec<String>>,
}

impl TestDatabase {
    /// A fresh database on `backend`, or `None` when the test should be
    /// skipped (PostgreSQL without `BOWTIE_TEST_DATABASE_URL` outside CI).
    ///
    /// # Panics
    ///
    /// With `CI=true` and no `BOWTIE_TEST_DATABASE_URL`, because CI must run
    /// the PostgreSQL half of the suite.
    pub async fn create(backend: Backend) -> anyhow::Result<Option<Self>> {
        bowtie_runtime::telemetry::init_for_tests();
        let defaults = Settings::defaults()?.accounts.database;
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::Builder::new().prefix("bowtie-test-").tempdir()?;
                let path = dir.path().join("accounts.db");
                let url = format!("sqlite://{}", path.display());
                Ok(Some(Self {
                    backend,
                    settings: defaults.with_url(&url, "accounts"),
                    _dir: Some(dir),
                    postgres: None,
                    extra_schemas: std::sync::Mutex::default(),
                }))
            }
            Backend::Postgres => {
                let Some(url) = postgres_url() else {
                    return Ok(None);
                };
                let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
                let conn = connect(&url).await?;
                bowtie_runtime::pg::create_schema(&conn, &schema)
                    .await
                    .with_context(|| format!("creating test schema {schema}"))?;
                let _ = conn.close().await;
                Ok(Some(Self {
                    backend,
                    settings: defaults.with_url(&url, &schema),
                    _dir: None,
                    postgres: Some(PostgresSchema { url, schema }),
                    extra_schemas: std::sync::Mutex::default(),
                }))
            }
        }
    }

    /// The engine this database runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Settings of a service using this database.
    pub fn settings(&self) -> &DatabaseSettings {
        &self.settings
    }

    /// The database of `service` next to this one: another SQLite file in
    /// the same directory, or another schema (`<schema>_<service>`) in the
    /// same PostgreSQL database. Each service owns its own, as in production.
    pub fn service_database(&self, service: &str) -> DatabaseSettings {
        if service == "accounts" {
            return self.settings.clone();
        }
        match (&self.postgres, &self._dir) {
            (Some(pg), _) => {
                let schema = format!("{}_{service}", pg.schema);
                if let Ok(mut extra) = self.extra_schemas.lock()
                    && !extra.contains(&schema)
                {
                    extra.push(schema.clone());
                }
                self.settings.with_url(&pg.url, &schema)
            }
            (None, Some(dir)) => {
                let url = format!(
                    "sqlite://{}",
                    dir.path().join(format!("{service}.db")).display()
                );
                self.settings.with_url(&url, service)
            }
            (None, None) => self.settings.clone(),
        }
    }

    /// Settings for test servers on this database: the built-in defaults
    /// with random ports, each service on its own database, no drain delay,
    /// the test keys, and [`READ_KEY`] as the key services present to peers.
    pub fn server_settings(&self) -> anyhow::Result<Settings> {
        let mut settings = Settings::defaults()?;
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        for (service, name) in [
            (&mut settings.accounts, "accounts"),
            (&mut settings.funnel, "funnel"),
            (&mut settings.revenue, "revenue"),
            (&mut settings.scoring, "scoring"),
            (&mut settings.success, "success"),
        ] {
            service.listen = any_port;
            service.database = self.service_database(name);
            // A handful of connections is plenty for one test, and keeps many
            // tests in parallel under PostgreSQL's connection limit.
            service.database.max_connections = 4;
        }
        settings.server.drain_seconds = 0;
        settings.auth.keys = test_keys();
        settings.peers.api_key = READ_KEY.to_owned().into();
        // Peers a test does not start are unreachable rather than whatever
        // may listen on the default ports of this machine.
        settings.peers.funnel = NO_PEER.to_owned();
        settings.peers.revenue = NO_PEER.to_owned();
        settings.peers.scoring = NO_PEER.to_owned();
        settings.peers.success = NO_PEER.to_owned();
        // Rescore soon after a change, so tests do not wait.
        settings.scoring_policy.recompute_interval_ms = 20;
        settings.peers.connect_timeout_ms = 1000;
        settings.peers.request_timeout_ms = 3000;
        Ok(settings)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(PostgresSchema { url, schema }) = self.postgres.take() else {
            return;
        };
        let mut schemas = vec![schema];
        if let Ok(mut extra) = self.extra_schemas.lock() {
            schemas.append(&mut extra);
        }
        // Drop runs inside the test's Tokio runtime, where blocking on a
        // future is not allowed; a short-lived thread with its own runtime
        // does the async work instead.
        let outcome = std::thread::spawn(move || -> anyhow::Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let conn = connect(&url).await?;
                for schema in schemas {
                    bowtie_runtime::pg::drop_schema(&conn, &schema).await?;
                }
                let _ = conn.close().await;
                Ok(())
            })
        })
        .join();
        if let Ok(Err(e)) = outcome {
            eprintln!("warning: could not drop a test schema: {e:#}");
        }
    }
}

/// The PostgreSQL URL, `None` to skip; panics in CI without one.
fn postgres_url() -> Option<String> {
    match std::env::var(DATABASE_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => panic!(
            "{DATABASE_URL_VAR} is not set, but CI=true requires the PostgreSQL tests to run; \
             point it at a database, e.g. postgres://bowtie:bowtie@127.0.0.1:5432/bowtie_test \
             (`bash .ci/run postgres` starts one)"
        ),
        _ => {
            eprintln!("skipped: {DATABASE_URL_VAR} not set");
            None
        }
    }
}

async fn connect(url: &str) -> anyhow::Result<sea_orm::DatabaseConnection> {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(1)
        .connect_timeout(Duration::from_secs(5))
        .sqlx_logging(false);
    Database::connect(options)
        .await
        .with_context(|| format!("connecting to the test database ({DATABASE_URL_VAR})"))
}

/// The configured test keys: [`ADMIN_KEY`], [`WRITE_KEY`] and [`READ_KEY`].
pub fn test_keys() -> Vec<ApiKeySettings> {
    let key = |name: &str, key: &str, scopes: &[&str]| ApiKeySettings {
        name: name.to_owned(),
        hash: hash_key(key),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        expires_at: None,
        rate_limit: None,
        role: None,
    };
    vec![
        key("test-admin", ADMIN_KEY, &["admin"]),
        key("test-writer", WRITE_KEY, &["read", "write"]),
        key("test-reader", READ_KEY, &["read"]),
        ApiKeySettings {
            expires_at: Some(EXPIRED_AT.to_owned()),
            ..key("test-expired", EXPIRED_KEY, &["write"])
        },
    ]
}

/// [`test_keys`] as the TOML array of a configuration file's `auth.keys`,
/// for tests that start `bowtie` as a process.
pub fn test_keys_toml() -> String {
    let keys: Vec<String> = test_keys()
        .iter()
        .map(|k| {
            let expires = k
                .expires_at
                .as_ref()
                .map(|at| format!(", expires_at = {at:?}"))
                .unwrap_or_default();
            format!(
                "{{ name = {:?}, hash = {:?}, scopes = {:?}{expires} }}",
                k.name, k.hash, k.scopes
            )
        })
        .collect();
    format!("[{}]", keys.join(", "))
}

/// Client interceptor adding `authorization: Bearer <key>` to every call
/// (or nothing, to test what happens without a key).
#[derive(Debug, Clone)]
pub struct Bearer(Option<String>);

impl Bearer {
    /// Sends `key` on every call.
    pub fn new(key: &str) -> Self {
        Self(Some(key.to_owned()))
    }

    /// Sends no key at all.
    pub fn none() -> Self {
        Self(None)
    }
}

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(key) = &self.0 {
            let value = MetadataValue::try_from(format!("Bearer {key}"))
                .map_err(|_| tonic::Status::internal("test API key is not printable ASCII"))?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

/// An accounts client that sends an API key.
pub type AccountsClient = AccountsServiceClient<InterceptedService<Channel, Bearer>>;

/// The full name of the accounts service, as health and reflection report it.
pub const ACCOUNTS_SERVICE: &str = "bowtie.accounts.v1.AccountsService";

/// A running accounts server on a random port.
///
/// Dropping it fires the shutdown and aborts the server task; call
/// [`TestServer::stop`] to stop it gracefully and learn how it ended (a
/// restart test must, so that the next server finds the database released).
#[derive(Debug)]
pub struct TestServer {
    service: &'static str,
    addr: SocketAddr,
    uri: String,
    channel: Channel,
    shutdown: Shutdown,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Starts the accounts service on `db` with [`TestDatabase::server_settings`].
    pub async fn start(db: &TestDatabase) -> anyhow::Result<Self> {
        Self::start_with(&db.server_settings()?).await
    }

    /// Starts the accounts service with the given settings.
    pub async fn start_with(settings: &Settings) -> anyhow::Result<Self> {
        Self::start_service(ACCOUNTS_SERVICE, settings, bowtie_accounts::build).await
    }

    /// Starts any service: `build` is the service crate's `build` function
    /// and `service` the full gRPC name its health status is reported under.
    pub async fn start_service<F>(
        service: &'static str,
        settings: &Settings,
        build: F,
    ) -> anyhow::Result<Self>
    where
        F: AsyncFnOnce(&Settings, Arc<ApiKeys>, Shutdown) -> anyhow::Result<GrpcServer>,
    {
        bowtie_runtime::telemetry::init_for_tests();
        let keys =
            Arc::new(ApiKeys::from_settings(&settings.auth)?.audited(settings.audit.enabled));
        let shutdown = Shutdown::new();
        let server = build(settings, keys, shutdown.clone())
            .await
            .with_context(|| format!("building the {service} server"))?;
        let addr = server.local_addr();
        let uri = server.uri();
        let task = tokio::spawn(server.run_until_stopped(std::future::pending()));
        // A TLS server is reached as its peers reach it: with `peers.tls`.
        let mut endpoint =
            Endpoint::from_shared(uri.clone())?.connect_timeout(Duration::from_secs(5));
        if uri.starts_with("https://") {
            endpoint = endpoint.tls_config(bowtie_runtime::tls::client_config(
                &uri,
                &settings.peers.tls,
            )?)?;
        }
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("connecting to the test server at {addr}"))?;
        let server = Self {
            service,
            addr,
            uri,
            channel,
            shutdown,
            task: Some(task),
        };
        server.wait_until_serving().await?;
        Ok(server)
    }

    /// Waits until health reports the service SERVING: the server
    /// marks itself serving from its own task, a moment after `start`.
    async fn wait_until_serving(&self) -> anyhow::Result<()> {
        let mut health = self.health();
        let deadline = tokio::time::Instant::now() + SERVER_TIMEOUT;
        loop {
            let status = health
                .check(HealthCheckRequest {
                    service: self.service.to_owned(),
                })
                .await
                .map(|r| r.into_inner().status);
            if status
                .as_ref()
                .is_ok_and(|s| *s == ServingStatus::Serving as i32)
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!(
                    "{} did not report SERVING in time: {status:?}",
                    self.service
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A channel to the server, shared by every client it hands out.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The server's channel with `key` on every call, for any service's client.
    pub fn with_key(&self, key: &str) -> InterceptedService<Channel, Bearer> {
        InterceptedService::new(self.channel(), Bearer::new(key))
    }

    /// The address peers use to reach this server (`https://` when it
    /// serves TLS).
    pub fn uri(&self) -> String {
        self.uri.clone()
    }

    /// An accounts client using [`WRITE_KEY`].
    pub fn accounts(&self) -> AccountsClient {
        self.accounts_with(Bearer::new(WRITE_KEY))
    }

    /// An accounts client using [`READ_KEY`].
    pub fn accounts_read_only(&self) -> AccountsClient {
        self.accounts_with(Bearer::new(READ_KEY))
    }

    /// An accounts client using [`ADMIN_KEY`].
    pub fn accounts_admin(&self) -> AccountsClient {
        self.accounts_with(Bearer::new(ADMIN_KEY))
    }

    /// An accounts client with the given credentials (see [`Bearer`]).
    pub fn accounts_with(&self, bearer: Bearer) -> AccountsClient {
        AccountsServiceClient::with_interceptor(self.channel(), bearer)
    }

    /// A health client; health needs no key.
    pub fn health(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel())
    }

    /// A reflection (v1) client; reflection needs no key.
    pub fn reflection(&self) -> ServerReflectionClient<Channel> {
        ServerReflectionClient::new(self.channel())
    }

    /// Fires the shutdown and waits for the server to finish, failing when it
    /// returns an error or takes longer than [`SERVER_TIMEOUT`].
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.trigger();
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        match tokio::time::timeout(SERVER_TIMEOUT, task).await {
            Ok(joined) => joined.context("the server task panicked")?,
            Err(_) => anyhow::bail!("the server did not stop within {SERVER_TIMEOUT:?}"),
        }
    }

    /// Stops the server like [`TestServer::stop`], then keeps its port bound
    /// (not listening) while the returned guard lives, so that peers still
    /// pointed at it are refused. Tests run in parallel: without the guard a
    /// server of another test could be given the freed port and answer in
    /// the stopped one's place.
    pub async fn stop_and_keep_port(self) -> anyhow::Result<HeldPort> {
        let addr = self.addr;
        self.stop().await?;
        let socket = tokio::net::TcpSocket::new_v4()?;
        // The stopped server's connections may linger in TIME_WAIT on this
        // port; address reuse allows a bind beside them. A port-0 bind never
        // picks a port that is bound, so no other test is given this one.
        socket.set_reuseaddr(true)?;
        socket
            .bind(addr)
            .with_context(|| format!("keeping the stopped server's port {addr}"))?;
        Ok(HeldPort { _socket: socket })
    }
}

/// The port of a stopped server, bound and not listening: connecting to it is
/// refused until this is dropped.
#[derive(Debug)]
pub struct HeldPort {
    _socket: tokio::net::TcpSocket,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Awaits `future` for at most `seconds`, failing with `what` when it takes
/// longer: a stream that never delivers must fail the test, not hang it.
pub async fn within<T>(
    seconds: u64,
    what: &str,
    future: impl Future<Output = T>,
) -> anyhow::Result<T> {
    tokio::time::timeout(Duration::from_secs(seconds), future)
        .await
        .map_err(|_| anyhow::anyhow!("timed out after {seconds}s waiting for {what}"))
}

/// Defines each named scenario as two tests, `<name>::sqlite` and
/// `<name>::postgres`.
///
/// A scenario is `async fn <name>(db: &TestDatabase) -> anyhow::Result<()>`
/// in the calling module. `backend_test!(a, b)` generates
///
/// ```ignore
/// mod a {
///     #[tokio::test] async fn sqlite() -> anyhow::Result<()> { /* super::a(&db) on SQLite */ }
///     #[tokio::test] async fn postgres() -> anyhow::Result<()> { /* ... on PostgreSQL */ }
/// }
/// ```
///
/// so `cargo test a::` runs one scenario on both engines and
/// `cargo test postgres` the whole PostgreSQL half. Tests use the
/// multi-threaded runtime so that the server and the client make progress
/// independently, as they do in production. The calling crate needs `tokio`
/// and `anyhow` as dependencies (the `#[tokio::test]` expansion names them).
#[macro_export]
macro_rules! backend_test {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() -> anyhow::Result<()> {
                    $crate::run_scenario($crate::Backend::Sqlite, super::$name).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() -> anyhow::Result<()> {
                    $crate::run_scenario($crate::Backend::Postgres, super::$name).await
                }
            }
        )+
    };
}

/// Runs one scenario on a fresh database of `backend` (used by [`backend_test!`]).
pub async fn run_scenario<F>(backend: Backend, scenario: F) -> anyhow::Result<()>
where
    F: AsyncFnOnce(&TestDatabase) -> anyhow::Result<()>,
{
    let Some(db) = TestDatabase::create(backend).await? else {
        return Ok(());
    };
    scenario(&db).await
}
