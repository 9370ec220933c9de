//! Helpers for the gateway's integration tests: the accounts, revenue,
//! funnel and scoring servers and the gateway in front of them, each on a random port,
//! and a small JSON-over-HTTP client.

use std::net::SocketAddr;

use anyhow::Context as _;
use bowtie_runtime::config::Settings;
use bowtie_runtime::shutdown::Shutdown;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::revenue::REVENUE_SERVICE;
use crate::{TestDatabase, TestServer};

/// The funnel's full gRPC name.
pub const FUNNEL_SERVICE: &str = "bowtie.funnel.v1.FunnelService";

/// Every service and the gateway of one test.
pub struct Stack {
    /// The accounts server (stop it to make accounts unreachable).
    pub accounts: Option<TestServer>,
    /// Holds the stopped accounts server's port, see [`Stack::stop_accounts`].
    accounts_port: Option<crate::HeldPort>,
    /// The revenue server.
    pub revenue: TestServer,
    /// The funnel server.
    pub funnel: TestServer,
    /// The scoring server.
    pub scoring: TestServer,
    /// The success server.
    pub success: TestServer,
    /// Where the gateway listens.
    pub addr: SocketAddr,
    /// The settings the gateway was built with.
    pub settings: Settings,
    shutdown: Shutdown,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    http: reqwest::Client,
}

impl Stack {
    /// Starts accounts, revenue, funnel, scoring, success and the gateway on `db`.
    pub async fn start(db: &TestDatabase) -> anyhow::Result<Self> {
        Self::start_with(db, |_| {}).await
    }

    /// Like [`Stack::start`], with the gateway settings adjusted by `configure`.
    pub async fn start_with(
        db: &TestDatabase,
        configure: impl FnOnce(&mut Settings),
    ) -> anyhow::Result<Self> {
        Self::start_from(db.server_settings()?, configure).await
    }

    /// Like [`Stack::start_with`], the services too started from `settings`
    /// (e.g. [`TestDatabase::server_settings`] with TLS turned on).
    pub async fn start_from(
        mut settings: Settings,
        configure: impl FnOnce(&mut Settings),
    ) -> anyhow::Result<Self> {
        let accounts = TestServer::start_with(&settings).await?;
        settings.peers.accounts = accounts.uri();
        let revenue =
            TestServer::start_service(REVENUE_SERVICE, &settings, bowtie_revenue::build).await?;
        settings.peers.revenue = revenue.uri();
        let funnel =
            TestServer::start_service(FUNNEL_SERVICE, &settings, bowtie_funnel::build).await?;
        settings.peers.funnel = funnel.uri();
        let scoring = crate::scoring::start_scoring(&settings).await?;
        settings.peers.scoring = scoring.uri();
        let success = crate::success::start_success(&settings).await?;
        settings.peers.success = success.uri();
        settings.gateway.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        configure(&mut settings);
        let shutdown = Shutdown::new();
        let gateway = bowtie_gateway::build(&settings, shutdown.clone()).await?;
        let addr = gateway.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(gateway.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        Ok(Self {
            accounts: Some(accounts),
            accounts_port: None,
            revenue,
            funnel,
            scoring,
            success,
            addr,
            settings,
            shutdown,
            stop: Some(stop),
            task: Some(task),
            http: reqwest::Client::new(),
        })
    }

    /// The gateway's base URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sends the gateway its stop signal (as SIGTERM does): it drains for
    /// `server.drain_seconds`, then stops.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Stops the accounts server (and waits until it is gone); its port stays
    /// reserved for the rest of the test (see [`TestServer::stop_and_keep_port`]).
    pub async fn stop_accounts(&mut self) -> anyhow::Result<()> {
        if let Some(accounts) = self.accounts.take() {
            self.accounts_port = Some(accounts.stop_and_keep_port().await?);
        }
        Ok(())
    }

    /// Sends `method path` with `key` (none when `None`) and an optional
    /// JSON body; returns the status and the JSON answer (`null` when the
    /// body is not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut request = self.http.request(method, format!("{}{path}", self.url()));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.context("calling the gateway")?;
        let status = response.status();
        let text = response.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// `GET path` with `key`.
    pub async fn get(&self, path: &str, key: &str) -> anyhow::Result<(StatusCode, Value)> {
        self.call(Method::GET, path, Some(key), None).await
    }

    /// `POST path` with `key` and a JSON body.
    pub async fn post(
        &self,
        path: &str,
        key: &str,
        body: &Value,
    ) -> anyhow::Result<(StatusCode, Value)> {
        self.call(Method::POST, path, Some(key), Some(body)).await
    }

    /// A raw request builder on the gateway (webhooks set their own headers).
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.url()))
    }

    /// Creates an account through the gateway and returns its id.
    pub async fn account(&self, key: &str, name: &str, segment: &str) -> anyhow::Result<String> {
        let (status, body) = self
            .post(
                "/api/v1/accounts",
                key,
                &serde_json::json!({"name": name, "segment": segment, "owner": "ana@example.com"}),
            )
            .await?;
        anyhow::ensure!(
            status == StatusCode::CREATED,
            "create account: {status} {body}"
        );
        body["id"]
            .as_str()
            .map(str::to_owned)
            .context("created account without an id")
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
