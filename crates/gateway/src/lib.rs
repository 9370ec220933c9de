//! The HTTP/JSON gateway: a REST API over the gRPC services, the OpenAPI
//! document generated from its handlers (`/openapi.json`), Kubernetes probes
//! (`/healthz`, `/readyz`), the dashboard (`/`), the CRM and Stripe webhooks
//! (`/webhooks/...`) and Segment-spec tracking (`/v1/...`).
//!
//! The gateway owns no data and holds no privileges of its own: it forwards
//! each caller's `Authorization` header to the services, which check the key
//! or token and its scope (docs/design.md section 9.2). A bearer JWT is
//! verified here too, so a bad one is 401 before any service is called and
//! a good one is rate-limited by its subject. The one exception is a verified CRM webhook, which carries
//! no Bowtie key: it writes with the configured `gateway.webhook_api_key`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bowtie_runtime::auth::ApiKeys;
use bowtie_runtime::config::{ConnectorSettings, GatewaySettings, Settings};
use bowtie_runtime::shutdown::Shutdown;
use opentelemetry::global;
use opentelemetry_http::HeaderExtractor;
use serde::Serialize;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

mod accounts;
mod audit;
mod clients;
mod common;
mod connectors;
mod dashboard;
mod error;
mod export;
mod funnel;
mod rest;
mod revenue;
mod schema;
mod scoring;
mod session;
mod success;
mod warehouse;
mod webhooks;

pub use error::http_status;

/// The REST representation of the reports: `bowtie report --format
/// csv|json` prints the same documents and CSV columns as the gateway.
pub mod representation {
    pub use crate::export::to_csv;
    pub use crate::funnel::{FunnelReport, StageSensitivityReport};
    pub use crate::revenue::{ChurnAnalysis, CohortRetention, MrrReport, Retention};
    pub use crate::scoring::{AtRiskAccount, AtRiskPage, at_risk_account};
    pub use crate::success::{BookOfBusiness, Cta, CtaPage, Effectiveness, Touches, TouchesReport};
    pub use crate::warehouse::{
        ExportedAccount, ExportedMovement, ExportedSubscription, ExportedTransition, account_lines,
        movement_lines, subscription_lines, transition_lines,
    };
}

/// What every handler shares.
#[derive(Clone)]
struct AppState {
    services: clients::Services,
    settings: Arc<GatewaySettings>,
    /// The Stripe and Segment connectors' settings.
    connectors: Arc<ConnectorSettings>,
    /// The reason codes the revenue service accepts on a cancellation.
    churn_reasons: Arc<Vec<String>>,
    /// The accounts of the external ids the connectors resolved.
    known_accounts: Arc<connectors::Memo>,
    /// The Stripe webhook's batcher, started by the first delivery.
    stripe_batches: Arc<std::sync::OnceLock<connectors::stripe::Batcher>>,
    /// Set on shutdown: /readyz answers 503 while the gateway drains.
    draining: Arc<AtomicBool>,
    /// The dashboard's sign-in with the issuer, when configured.
    sign_in: Option<Arc<session::SignIn>>,
}

/// Time /readyz waits for each service's health answer (below the probe's
/// own timeout, so a slow service reads as not ready rather than a timeout).
const READY_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Bowtie API",
        description = "REST/JSON API over the Bowtie services: accounts, the bowtie funnel, revenue, scoring and success. \
Send `Authorization: Bearer <API key>` or a bearer JWT of the configured OpenID Connect issuer; reads need the read scope (role viewer), writes the write scope (csm, manager). \
Errors have the body `{\"error\": {\"code\", \"message\", \"field_violations\"}}` where `code` is the gRPC code name."
    ),
    modifiers(&BearerAuth),
    // Enums used only as query or path parameters are not collected from the
    // handlers' responses and bodies; list them so their references resolve.
    components(schemas(
        common::Stage,
        common::Segment,
        accounts::AccountStatus,
        funnel::CohortBy,
        revenue::Granularity,
        revenue::MovementType,
        scoring::AlertState,
        scoring::AlertKind,
        success::CtaStatus,
        success::ActivityKind,
        success::BookGrouping,
        error::ErrorBody,
    )),
    security(("bearer" = [])),
    tags(
        (name = "accounts", description = "Accounts and their CRM ids"),
        (name = "funnel", description = "Journeys through the bowtie and its conversion"),
        (name = "revenue", description = "MRR, retention, renewals and unit economics"),
        (name = "scoring", description = "Health scores, churn risk, alerts and value segments"),
        (name = "success", description = "Playbooks and their effectiveness, calls to action, account timelines, books of business and touches"),
        (name = "export", description = "Streaming exports for a warehouse load: JSON lines, resumable by cursor"),
        (name = "operations", description = "Probes"),
        (name = "webhooks", description = "CRM and Stripe webhooks, verified by HMAC signature"),
        (name = "tracking", description = "Segment-spec identify, group, track and batch calls, authenticated by the write key"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A Bowtie API key (`bowtie keys generate`) or a JWT of the configured OpenID Connect issuer (`auth.oidc`)"))
                    .build(),
            ),
        );
    }
}

/// Marks every path parameter required, as OpenAPI demands (a parameter
/// whose schema comes from `schema_with` is otherwise left optional).
struct PathParamsRequired;

impl Modify for PathParamsRequired {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::Required;
        use utoipa::openapi::path::ParameterIn;
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                for parameter in operation.parameters.iter_mut().flatten() {
                    if parameter.parameter_in == ParameterIn::Path {
                        parameter.required = Required::True;
                    }
                }
            }
        }
    }
}

/// The OpenAPI document and the router serving it, built from the same handlers.
///
/// `churn_reasons` are the reason codes the revenue service accepts on a
/// cancellation (configuration, so the document states them from it).
fn app(state: AppState, churn_reasons: &[String], keys: Arc<ApiKeys>) -> axum::Router {
    let sign_in = state.sign_in.clone();
    let (router, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(accounts::router())
        .merge(audit::router())
        .merge(funnel::router())
        .merge(revenue::router())
        .merge(scoring::router())
        .merge(success::router())
        .merge(warehouse::router())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .merge(webhooks::router())
        .merge(connectors::router())
        .split_for_parts();
    PathParamsRequired.modify(&mut openapi);
    let openapi = Arc::new(revenue::with_churn_reasons(openapi, churn_reasons));
    router
        .route(
            "/openapi.json",
            get(move || {
                let openapi = openapi.clone();
                async move { Json(openapi.as_ref().clone()) }
            }),
        )
        .merge(dashboard::router())
        .merge(session::router())
        // An unknown route (an empty id leaves a path that matches none)
        // answers in the error shape too.
        .fallback(|| async { error::ApiError::not_found("no such route") })
        // A method a route does not serve is 405 with `Allow` (axum sets it
        // from the methods the route has), in the error shape.
        .method_not_allowed_fallback(|| async { error::ApiError::method_not_allowed() })
        .layer(axum::middleware::from_fn(move |request, next| {
            throttle(keys.clone(), request, next)
        }))
        // Before the throttle: the session cookie becomes the request's
        // bearer token (after the CSRF check of a write).
        .layer(axum::middleware::from_fn(move |request, next| {
            session::authenticate(sign_in.clone(), request, next)
        }))
        .layer(axum::middleware::from_fn(trace))
        .with_state(state)
}

/// The caller's rate limit (`auth.rate_limits`), applied here as well as in
/// each service: 429 with `Retry-After` once its key's budget is spent.
async fn throttle(keys: Arc<ApiKeys>, request: Request, next: Next) -> Response {
    let authorization = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match keys.throttle(authorization).await {
        Ok(()) => next.run(request).await,
        Err(status) => error::ApiError::from_status("gateway", &status).into_response(),
    }
}

/// One span per HTTP request, child of the caller's W3C trace context; the
/// gRPC clients pass it on to the services.
async fn trace(request: Request, next: Next) -> Response {
    let parent = global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(request.headers()))
    });
    let span = tracing::info_span!(
        "http",
        otel.name = %format!("{} {}", request.method(), request.uri().path()),
        otel.kind = "server",
        http.request.method = %request.method(),
        url.path = %request.uri().path(),
        http.response.status_code = tracing::field::Empty,
    );
    let _ = span.set_parent(parent);
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    response
}

/// Liveness.
#[derive(Debug, Serialize, ToSchema)]
struct Alive {
    /// Always `ok`.
    status: String,
}

/// Liveness: the gateway process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, body = Alive)))]
async fn healthz() -> Json<Alive> {
    Json(Alive {
        status: "ok".into(),
    })
}

/// Readiness and what each service reported.
#[derive(Debug, Serialize, ToSchema)]
struct Readiness {
    /// `ready` when every service is SERVING, `draining` while shutting down, else `not_ready`.
    status: String,
    /// Service name -> SERVING, NOT_SERVING or UNREACHABLE.
    services: std::collections::BTreeMap<String, String>,
}

/// Readiness: 200 when every service answers its health check SERVING, else 503.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
async fn readyz(State(state): State<AppState>) -> Response {
    let checks = state.services.health.iter().map(|(name, service, client)| {
        let mut client = client.clone();
        async move {
            let answer = tokio::time::timeout(
                READY_TIMEOUT,
                client.check(HealthCheckRequest {
                    service: (*service).to_owned(),
                }),
            )
            .await;
            let status = match answer {
                Ok(Ok(r)) if r.get_ref().status == ServingStatus::Serving as i32 => "SERVING",
                Ok(Ok(_)) => "NOT_SERVING",
                Ok(Err(_)) | Err(_) => "UNREACHABLE",
            };
            ((*name).to_owned(), status.to_owned())
        }
    });
    let services: std::collections::BTreeMap<String, String> = futures::future::join_all(checks)
        .await
        .into_iter()
        .collect();
    let draining = state.draining.load(Ordering::SeqCst);
    let ready = !draining && services.values().all(|s| s == "SERVING");
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let status = match (ready, draining) {
        (true, _) => "ready",
        (false, true) => "draining",
        (false, false) => "not_ready",
    };
    (
        code,
        Json(Readiness {
            status: status.into(),
            services,
        }),
    )
        .into_response()
}

/// A Stripe backfill (`bowtie import stripe`): listed Stripe objects
/// applied to the services by the webhook's own rules and keys, so a
/// backfill and the live events give one history.
pub struct StripeBackfill {
    state: AppState,
    caller: clients::Caller,
}

impl std::fmt::Debug for StripeBackfill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeBackfill").finish_non_exhaustive()
    }
}

impl StripeBackfill {
    /// Clients of the services at `settings.peers`, writing with `key`.
    pub fn connect(settings: &Settings, key: &str) -> anyhow::Result<Self> {
        let caller = clients::Caller::bearer(key)
            .map_err(|_| anyhow::anyhow!("the API key is not ASCII"))?;
        Ok(Self {
            state: AppState {
                services: clients::Services::connect(&settings.peers)?,
                settings: Arc::new(settings.gateway.clone()),
                connectors: Arc::new(settings.connectors.clone()),
                churn_reasons: Arc::new(settings.revenue_policy.churn_reasons.clone()),
                known_accounts: Arc::default(),
                stripe_batches: Arc::default(),
                draining: Arc::new(AtomicBool::new(false)),
                sign_in: None,
            },
            caller,
        })
    }

    /// Applies objects of list responses (customers, subscriptions with
    /// their items, invoices) together, a customer's objects in the order
    /// given: per object, `Ok` or what was wrong with it.
    pub async fn apply(&self, objects: &[serde_json::Value]) -> Vec<Result<(), String>> {
        connectors::stripe::backfill_batch(&self.state, &self.caller, objects)
            .await
            .into_iter()
            .map(|outcome| {
                outcome.map_err(|e| {
                    let detail = e.detail();
                    let fields: Vec<String> = detail
                        .field_violations
                        .iter()
                        .map(|v| format!("{}: {}", v.field, v.description))
                        .collect();
                    if fields.is_empty() {
                        detail.message.clone()
                    } else {
                        format!("{} ({})", detail.message, fields.join("; "))
                    }
                })
            })
            .collect()
    }
}

/// A bound gateway, ready to run.
pub struct Gateway {
    listener: tokio::net::TcpListener,
    local_addr: SocketAddr,
    app: axum::Router,
    shutdown: Shutdown,
    draining: Arc<AtomicBool>,
    drain: Duration,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

/// Binds `gateway.listen` with clients of the services at `peers`.
pub async fn build(settings: &Settings, shutdown: Shutdown) -> anyhow::Result<Gateway> {
    let services = clients::Services::connect(&settings.peers)?;
    let draining = Arc::new(AtomicBool::new(false));
    let keys = Arc::new(ApiKeys::from_settings(&settings.auth)?);
    let sign_in = session::SignIn::from_settings(settings, keys.clone())?.map(Arc::new);
    let state = AppState {
        services,
        settings: Arc::new(settings.gateway.clone()),
        connectors: Arc::new(settings.connectors.clone()),
        churn_reasons: Arc::new(settings.revenue_policy.churn_reasons.clone()),
        known_accounts: Arc::default(),
        stripe_batches: Arc::default(),
        draining: draining.clone(),
        sign_in,
    };
    let listener = tokio::net::TcpListener::bind(settings.gateway.listen)
        .await
        .map_err(|e| {
            anyhow::Error::new(e).context(format!("binding {}", settings.gateway.listen))
        })?;
    let local_addr = listener.local_addr()?;
    Ok(Gateway {
        listener,
        local_addr,
        app: app(state, &settings.revenue_policy.churn_reasons, keys),
        shutdown,
        draining,
        drain: Duration::from_secs(settings.server.drain_seconds),
    })
}

impl Gateway {
    /// The address the gateway listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `signal` resolves or the shutdown fires. On `signal`,
    /// /readyz turns 503 first and the gateway keeps serving for
    /// `server.drain_seconds`, so load balancers stop routing to it; then
    /// it stops accepting and lets in-flight requests finish.
    pub async fn run_until_stopped(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            listener,
            local_addr,
            app,
            shutdown,
            draining,
            drain,
        } = self;
        let stop = async move {
            tokio::select! {
                () = signal => {
                    draining.store(true, Ordering::SeqCst);
                    tracing::info!(%local_addr, drain_seconds = drain.as_secs(), "shutting down: /readyz reports draining");
                    tokio::select! {
                        () = tokio::time::sleep(drain) => {}
                        () = shutdown.wait() => {}
                    }
                }
                () = shutdown.wait() => {}
            }
        };
        axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await?;
        tracing::info!(%local_addr, "gateway stopped");
        Ok(())
    }
}
