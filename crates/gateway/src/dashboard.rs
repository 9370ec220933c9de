//! The dashboard: one HTML page, a stylesheet and a script, embedded in the
//! binary so it works with no network and no build step. The script calls
//! the REST API with the session of the identity provider's sign-in
//! (`crate::session`) when one is configured, else with the API key the user
//! enters (kept in the browser's localStorage), and draws its charts as SVG
//! itself.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use secrecy::ExposeSecret;
use serde::Serialize;

use crate::AppState;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_CSS: &str = include_str!("../assets/app.css");
const APP_JS: &str = include_str!("../assets/app.js");
const FAVICON_SVG: &str = include_str!("../assets/favicon.svg");

/// The page and its assets.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { html(INDEX_HTML) }))
        .route("/accounts/{id}", get(|| async { html(INDEX_HTML) }))
        .route(
            "/assets/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route(
            "/assets/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/favicon.svg",
            get(|| async { asset("image/svg+xml", FAVICON_SVG) }),
        )
        .route("/dashboard/config.json", get(config))
}

fn html(body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// What the page needs before the user signs in.
#[derive(Debug, Serialize)]
struct DashboardConfig {
    /// A key to pre-fill the sign-in with (development only; empty otherwise).
    prefill_key: String,
    /// True when the gateway signs people in with the identity provider
    /// (`/auth/login`): the page offers "Sign in" instead of the key prompt.
    sign_in: bool,
}

async fn config(State(state): State<AppState>) -> Json<DashboardConfig> {
    Json(DashboardConfig {
        prefill_key: state.settings.dashboard_key.expose_secret().to_owned(),
        sign_in: state.sign_in.is_some(),
    })
}
