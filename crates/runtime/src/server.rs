//! Server bootstrap shared by every service: binds (port 0 in tests), exposes
//! the bound address, serves `grpc.health.v1` and reflection (v1 and v1alpha,
//! so grpcurl of any age works with no proto files) beside the service,
//! applies the tracing and auth layers, and shuts down gracefully: health turns
//! NOT_SERVING first, the server keeps answering for `drain_seconds` so load
//! balancers move away, then open streams end and in-flight calls finish.
//!
//! With `server.tls` configured the listener speaks TLS only (mutual TLS with
//! `client_ca`), health and reflection included: one port, one policy. For
//! probes that cannot speak TLS (Kubernetes' native gRPC probes) a service
//! may also serve `grpc.health.v1` alone, in plaintext, on a second address
//! (`<service>.health_listen`): health says nothing a probe should not know.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tonic::server::NamedService;
use tonic::service::{Routes, RoutesBuilder};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Server, ServerTlsConfig};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::auth::{ApiKeys, AuthLayer};
use crate::config::ServerSettings;
use crate::db::Db;
use crate::limits::LimitsLayer;
use crate::shutdown::Shutdown;
use crate::telemetry::RpcTraceLayer;

/// How often health follows the database.
const DB_HEALTH_INTERVAL: Duration = Duration::from_secs(5);

/// A bound gRPC server, ready to run.
pub struct GrpcServer {
    listener: tokio::net::TcpListener,
    local_addr: SocketAddr,
    routes: RoutesBuilder,
    names: Vec<&'static str>,
    health: HealthReporter,
    settings: ServerSettings,
    auth: AuthLayer,
    shutdown: Shutdown,
    db: Option<Db>,
    tls: Option<ServerTlsConfig>,
    /// Health alone, for the plaintext probe listener.
    health_routes: RoutesBuilder,
    health_listener: Option<std::net::TcpListener>,
}

impl GrpcServer {
    /// Binds `addr`; `shutdown` stops the server and the streams it serves.
    pub async fn bind(
        addr: SocketAddr,
        settings: &ServerSettings,
        keys: Arc<ApiKeys>,
        admin_methods: &'static [&'static str],
        shutdown: Shutdown,
    ) -> anyhow::Result<Self> {
        let tls = crate::tls::server_config(&settings.tls)?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::Error::new(e).context(format!("binding {addr}")))?;
        let local_addr = listener.local_addr()?;
        let (health, health_service) = tonic_health::server::health_reporter();
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(bowtie_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(bowtie_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;
        let mut health_routes = Routes::builder();
        health_routes.add_service(health_service.clone());
        let mut routes = Routes::builder();
        routes
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);
        Ok(Self {
            listener,
            local_addr,
            routes,
            names: Vec::new(),
            health,
            settings: settings.clone(),
            auth: AuthLayer::new(keys, admin_methods),
            shutdown,
            db: None,
            tls,
            health_routes,
            health_listener: None,
        })
    }

    /// Adds a service; health reports it under its full name.
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: tower::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = Infallible,
            > + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes.add_service(service);
        self
    }

    /// Makes health follow the database: NOT_SERVING while it cannot be reached.
    pub fn watch_database(mut self, db: Db) -> Self {
        self.db = Some(db);
        self
    }

    /// Also serves `grpc.health.v1` alone, in plaintext, on `addr` (none:
    /// nothing more), for probes that cannot present a client certificate.
    pub fn serve_health_on(mut self, addr: Option<SocketAddr>) -> anyhow::Result<Self> {
        if let Some(addr) = addr {
            let listener = std::net::TcpListener::bind(addr).map_err(|e| {
                anyhow::Error::new(e).context(format!("binding the health listener {addr}"))
            })?;
            listener.set_nonblocking(true)?;
            self.health_listener = Some(listener);
        }
        Ok(self)
    }

    /// The address of the plaintext health listener, when there is one.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address to call the server at: `https://` when it serves TLS.
    pub fn uri(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.local_addr)
    }

    /// How the listener is secured: `plaintext`, `tls` or `mutual-tls`.
    pub fn security(&self) -> &'static str {
        match (&self.tls, self.settings.tls.client_ca.is_empty()) {
            (None, _) => "plaintext",
            (Some(_), true) => "tls",
            (Some(_), false) => "mutual-tls",
        }
    }

    /// The signal that stops this server.
    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    async fn set_status(health: &HealthReporter, names: &[&'static str], status: ServingStatus) {
        health.set_service_status("", status).await;
        for name in names {
            health.set_service_status(*name, status).await;
        }
    }

    /// Serves until `signal` resolves (then drains) or the shutdown fires.
    pub async fn run_until_stopped(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            listener,
            local_addr,
            routes,
            names,
            health,
            settings,
            auth,
            shutdown,
            db,
            tls,
            health_routes,
            health_listener,
        } = self;
        Self::set_status(&health, &names, ServingStatus::Serving).await;

        let drain = Duration::from_secs(settings.drain_seconds);
        {
            let (health, names, shutdown) = (health.clone(), names.clone(), shutdown.clone());
            tokio::spawn(async move {
                tokio::select! {
                    () = signal => {
                        tracing::info!(%local_addr, drain_seconds = drain.as_secs(), "shutting down: reporting NOT_SERVING, then draining");
                        Self::set_status(&health, &names, ServingStatus::NotServing).await;
                        tokio::time::sleep(drain).await;
                        shutdown.trigger();
                    }
                    () = shutdown.wait() => {
                        Self::set_status(&health, &names, ServingStatus::NotServing).await;
                    }
                }
            });
        }
        if let Some(db) = db {
            let (health, names, shutdown) = (health.clone(), names.clone(), shutdown.clone());
            tokio::spawn(async move {
                let mut serving = true;
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(DB_HEALTH_INTERVAL) => {}
                        () = shutdown.wait() => return,
                    }
                    let ok = db.ping().await.is_ok();
                    if ok != serving && !shutdown.is_triggered() {
                        serving = ok;
                        tracing::warn!(database_reachable = ok, "database health changed");
                        let status = if ok {
                            ServingStatus::Serving
                        } else {
                            ServingStatus::NotServing
                        };
                        Self::set_status(&health, &names, status).await;
                    }
                }
            });
        }

        if let Some(listener) = health_listener {
            let incoming = TcpIncoming::from(tokio::net::TcpListener::from_std(listener)?);
            let stop = shutdown.clone();
            tokio::spawn(async move {
                let served = Server::builder()
                    .add_routes(health_routes.routes())
                    .serve_with_incoming_shutdown(incoming, async move { stop.wait().await })
                    .await;
                if let Err(e) = served {
                    tracing::error!(error.cause_chain = ?e, "the health listener failed");
                }
            });
        }
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let stop = shutdown.clone();
        let mut server = Server::builder();
        if let Some(tls) = tls {
            server = server.tls_config(tls)?;
        }
        server
            .layer(RpcTraceLayer::default())
            .layer(LimitsLayer::new(Duration::from_millis(
                settings.request_timeout_ms,
            )))
            .layer(auth)
            .add_routes(routes.routes())
            .serve_with_incoming_shutdown(incoming, async move { stop.wait().await })
            .await?;
        tracing::info!(%local_addr, "server stopped");
        Ok(())
    }
}
