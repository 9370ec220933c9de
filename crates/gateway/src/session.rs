//! The dashboard's sign-in with the configured OpenID Connect issuer
//! (`gateway.sign_in`, docs/design.md section 9.5): the authorization code
//! flow with PKCE (S256), a stateless session in cookies, and CSRF
//! protection of every state-changing request the session cookie carries.
//!
//! - `GET /auth/login` remembers a fresh `state`, `nonce` and PKCE verifier
//!   in a signed, HttpOnly cookie (`bowtie_login`, ten minutes, path
//!   `/auth`) and redirects to the issuer's authorization endpoint.
//! - `GET /auth/callback` checks `state` against that cookie (400 and no
//!   session otherwise), redeems the code with the verifier and the client
//!   secret, verifies the ID token (issuer, audience = the client id, nonce)
//!   with the runtime's verifier, and sets the session.
//! - The session is the access token itself in `bowtie_session` (HttpOnly,
//!   SameSite=Lax, `Secure` when the gateway's URL is https, living as long
//!   as the token), verified on every request exactly as a bearer token is:
//!   nothing is stored on the gateway, so any replica serves any request.
//!   The display name rides beside it in `bowtie_profile`, signed.
//! - `bowtie_csrf` (readable by the page) holds an HMAC of the session
//!   token; a POST, PUT, PATCH or DELETE carrying the session cookie must
//!   echo it in `X-CSRF-Token` or is 403. Requests with an `Authorization`
//!   header (keys, bearer tokens) and the webhook and tracking routes are
//!   left alone.
//! - `POST /auth/logout` clears the cookies and names the issuer's
//!   `end_session_endpoint`, when it has one, for the page to go to.
//! - `GET /auth/me` says who the session is: name, e-mail, roles.
//!
//! The cookies are signed with a key derived from the client secret, which
//! every replica shares.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bowtie_runtime::auth::{ApiKeys, Role};
use bowtie_runtime::config::Settings;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::error::ApiError;

/// The session: the access (or ID) token.
pub const SESSION_COOKIE: &str = "bowtie_session";
/// The signed display name of the session's subject.
pub const PROFILE_COOKIE: &str = "bowtie_profile";
/// The CSRF token the page echoes in [`CSRF_HEADER`].
pub const CSRF_COOKIE: &str = "bowtie_csrf";
/// The sign-in in progress: state, nonce, PKCE verifier.
pub const LOGIN_COOKIE: &str = "bowtie_login";
/// The header a cookie-authenticated write must carry.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Seconds a sign-in may take at the provider.
const LOGIN_SECONDS: i64 = 600;

type HmacSha256 = Hmac<Sha256>;

/// The issuer's endpoints the sign-in uses, from its discovery document.
#[derive(Debug, Clone)]
struct Endpoints {
    authorization: String,
    token: String,
    end_session: Option<String>,
}

/// The configured sign-in.
pub struct SignIn {
    keys: Arc<ApiKeys>,
    client_id: String,
    client_secret: SecretString,
    redirect_url: String,
    public_url: String,
    scopes: String,
    resource: String,
    default_role: Option<Role>,
    /// Keys the HMACs of the login, profile and CSRF cookies.
    cookie_key: [u8; 32],
    endpoints: tokio::sync::OnceCell<Endpoints>,
}

impl std::fmt::Debug for SignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignIn")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl SignIn {
    /// The sign-in of `settings`, or `None` when it is off (no client id).
    /// Refused when a client id is set without an issuer or a secret.
    pub fn from_settings(settings: &Settings, keys: Arc<ApiKeys>) -> anyhow::Result<Option<Self>> {
        let sign_in = &settings.gateway.sign_in;
        if sign_in.client_id.trim().is_empty() {
            return Ok(None);
        }
        if keys.oidc().is_none() {
            anyhow::bail!("gateway.sign_in.client_id is set but auth.oidc.issuer is empty");
        }
        let secret = sign_in.client_secret.expose_secret();
        if secret.is_empty() {
            anyhow::bail!(
                "gateway.sign_in.client_secret is required with gateway.sign_in.client_id \
                 (set BOWTIE__GATEWAY__SIGN_IN__CLIENT_SECRET)"
            );
        }
        let redirect = sign_in.redirect_url.trim();
        if !redirect.is_empty() && !redirect.ends_with("/auth/callback") {
            anyhow::bail!(
                "gateway.sign_in.redirect_url {redirect:?} must end with /auth/callback, the route that receives the code"
            );
        }
        let mut scopes: Vec<&str> = vec!["openid"];
        for scope in &sign_in.scopes {
            for scope in scope.split_whitespace() {
                if !scopes.contains(&scope) {
                    scopes.push(scope);
                }
            }
        }
        let mut derive = Sha256::new();
        derive.update(b"bowtie gateway cookies\0");
        derive.update(secret.as_bytes());
        Ok(Some(Self {
            keys,
            client_id: sign_in.client_id.trim().to_owned(),
            client_secret: sign_in.client_secret.clone(),
            redirect_url: redirect.to_owned(),
            public_url: settings
                .gateway
                .public_url
                .trim()
                .trim_end_matches('/')
                .to_owned(),
            scopes: scopes.join(" "),
            resource: sign_in.resource.trim().to_owned(),
            default_role: Role::parse(&settings.auth.oidc.default_role),
            cookie_key: derive.finalize().into(),
            endpoints: tokio::sync::OnceCell::new(),
        }))
    }

    fn mac(&self, purpose: &str, data: &[u8]) -> [u8; 32] {
        // An HMAC takes a key of any length: `new_from_slice` cannot fail.
        let mut mac = match HmacSha256::new_from_slice(&self.cookie_key) {
            Ok(mac) => mac,
            Err(_) => return [0; 32],
        };
        mac.update(purpose.as_bytes());
        mac.update(b"\0");
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    /// `base64url(payload).base64url(mac)`.
    fn seal(&self, purpose: &str, payload: &Value) -> String {
        let body = URL_SAFE_NO_PAD.encode(payload.to_string());
        let mac = URL_SAFE_NO_PAD.encode(self.mac(purpose, body.as_bytes()));
        format!("{body}.{mac}")
    }

    /// The payload of a [`SignIn::seal`]ed value whose MAC verifies.
    fn open(&self, purpose: &str, sealed: &str) -> Option<Value> {
        let (body, mac) = sealed.split_once('.')?;
        let presented = URL_SAFE_NO_PAD.decode(mac).ok()?;
        let expected = self.mac(purpose, body.as_bytes());
        if !bool::from(presented.as_slice().ct_eq(&expected)) {
            return None;
        }
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()
    }

    /// The CSRF token of a session token.
    fn csrf_token(&self, session: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.mac("csrf", session.as_bytes()))
    }

    /// The redirect URI: configured, else from `public_url` or the request's Host.
    fn redirect_uri(&self, headers: &HeaderMap) -> String {
        if !self.redirect_url.is_empty() {
            return self.redirect_url.clone();
        }
        format!("{}/auth/callback", self.base_url(headers))
    }

    /// Where the gateway is reached: the redirect URL's origin,
    /// `public_url`, or `http://<Host>`.
    fn base_url(&self, headers: &HeaderMap) -> String {
        if let Some(base) = self.redirect_url.strip_suffix("/auth/callback") {
            return base.to_owned();
        }
        if !self.public_url.is_empty() {
            return self.public_url.clone();
        }
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        format!("http://{host}")
    }

    /// Whether the cookies are `Secure`: the gateway is reached over https.
    fn secure(&self, headers: &HeaderMap) -> bool {
        self.base_url(headers).starts_with("https://")
    }

    async fn endpoints(&self) -> Result<&Endpoints, ApiError> {
        self.endpoints
            .get_or_try_init(|| async {
                let verifier = self
                    .keys
                    .oidc()
                    .ok_or_else(|| unavailable("no issuer is configured"))?;
                let document = verifier
                    .discovery_document()
                    .await
                    .map_err(|e| unavailable(&format!("the issuer's discovery failed: {e:#}")))?;
                let url = |name: &str| {
                    document
                        .get(name)
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                };
                Ok(Endpoints {
                    authorization: url("authorization_endpoint").ok_or_else(|| {
                        unavailable("the issuer's discovery document has no authorization_endpoint")
                    })?,
                    token: url("token_endpoint").ok_or_else(|| {
                        unavailable("the issuer's discovery document has no token_endpoint")
                    })?,
                    end_session: url("end_session_endpoint"),
                })
            })
            .await
    }
}

/// 502 for an identity provider that failed the gateway.
fn unavailable(message: &str) -> ApiError {
    tracing::warn!(error = %message, "sign-in: the identity provider failed");
    ApiError::plain(StatusCode::BAD_GATEWAY, "UNAVAILABLE", message)
}

/// Percent-encodes a query or form value (RFC 3986 unreserved kept).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b));
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn query(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A random value of 256 bits, base64url.
fn random() -> String {
    let mut bytes = Vec::with_capacity(32);
    bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The PKCE S256 challenge of `verifier`.
fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// A `Set-Cookie` value; `max_age` 0 deletes the cookie.
fn set_cookie(
    name: &str,
    value: &str,
    path: &str,
    max_age: i64,
    http_only: bool,
    secure: bool,
) -> Option<HeaderValue> {
    let mut cookie = format!("{name}={value}; Path={path}; Max-Age={max_age}; SameSite=Lax");
    if http_only {
        cookie.push_str("; HttpOnly");
    }
    if secure {
        cookie.push_str("; Secure");
    }
    HeaderValue::from_str(&cookie).ok()
}

fn with_cookies(mut response: Response, cookies: Vec<Option<HeaderValue>>) -> Response {
    for cookie in cookies.into_iter().flatten() {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// The cookies that end a session.
fn cleared(secure: bool) -> Vec<Option<HeaderValue>> {
    vec![
        set_cookie(SESSION_COOKIE, "", "/", 0, true, secure),
        set_cookie(PROFILE_COOKIE, "", "/", 0, true, secure),
        set_cookie(CSRF_COOKIE, "", "/", 0, false, secure),
    ]
}

fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The routes of the sign-in (404 while it is off).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/login", get(login))
        .route("/auth/callback", get(callback))
        .route("/auth/logout", post(logout))
        .route("/auth/me", get(me))
}

fn configured(state: &AppState) -> Result<&SignIn, ApiError> {
    state
        .sign_in
        .as_deref()
        .ok_or_else(|| ApiError::not_found("sign-in is not configured (gateway.sign_in.client_id)"))
}

async fn login(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let sign_in = configured(&state)?;
    let endpoints = sign_in.endpoints().await?;
    let (login_state, nonce, verifier) = (random(), random(), random());
    let redirect_uri = sign_in.redirect_uri(&headers);
    let mut params = vec![
        ("response_type", "code"),
        ("client_id", sign_in.client_id.as_str()),
        ("redirect_uri", redirect_uri.as_str()),
        ("scope", sign_in.scopes.as_str()),
        ("state", login_state.as_str()),
        ("nonce", nonce.as_str()),
        ("code_challenge_method", "S256"),
    ];
    let code_challenge = challenge(&verifier);
    params.push(("code_challenge", code_challenge.as_str()));
    if !sign_in.resource.is_empty() {
        params.push(("resource", sign_in.resource.as_str()));
    }
    let separator = if endpoints.authorization.contains('?') {
        '&'
    } else {
        '?'
    };
    let location = format!("{}{separator}{}", endpoints.authorization, query(&params));
    let pending = sign_in.seal(
        "login",
        &serde_json::json!({
            "state": login_state,
            "nonce": nonce,
            "verifier": verifier,
            "redirect_uri": redirect_uri,
            "exp": chrono::Utc::now().timestamp() + LOGIN_SECONDS,
        }),
    );
    let secure = sign_in.secure(&headers);
    Ok(with_cookies(
        see_other(&location),
        vec![set_cookie(
            LOGIN_COOKIE,
            &pending,
            "/auth",
            LOGIN_SECONDS,
            true,
            secure,
        )],
    ))
}

/// What the provider sends back to the redirect URI.
#[derive(Debug, Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// The sign-in in progress, from its cookie.
struct Pending {
    state: String,
    nonce: String,
    verifier: String,
    redirect_uri: String,
}

fn pending(sign_in: &SignIn, headers: &HeaderMap) -> Result<Pending, ApiError> {
    let none = || {
        ApiError::invalid(
            "state",
            "no sign-in of this browser is in progress (or it took over ten minutes): start again at /auth/login",
        )
    };
    let value = cookie(headers, LOGIN_COOKIE)
        .and_then(|c| sign_in.open("login", c))
        .ok_or_else(none)?;
    let text = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_owned);
    let exp = value.get("exp").and_then(Value::as_i64).unwrap_or(0);
    if chrono::Utc::now().timestamp() >= exp {
        return Err(none());
    }
    Ok(Pending {
        state: text("state").ok_or_else(none)?,
        nonce: text("nonce").ok_or_else(none)?,
        verifier: text("verifier").ok_or_else(none)?,
        redirect_uri: text("redirect_uri").ok_or_else(none)?,
    })
}

async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(answer): Query<CallbackQuery>,
) -> Result<Response, ApiError> {
    let sign_in = configured(&state)?;
    if let Some(error) = &answer.error {
        return Err(ApiError::plain(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            format!(
                "the identity provider did not sign you in: {error}{}",
                answer
                    .error_description
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            ),
        ));
    }
    let pending = pending(sign_in, &headers)?;
    let returned = answer.state.as_deref().unwrap_or_default();
    if !bool::from(returned.as_bytes().ct_eq(pending.state.as_bytes())) {
        return Err(ApiError::invalid(
            "state",
            "the state does not match this browser's sign-in: start again at /auth/login",
        ));
    }
    let code = answer
        .code
        .as_deref()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::invalid("code", "the identity provider sent no code"))?;
    let endpoints = sign_in.endpoints().await?;
    let verifier = sign_in
        .keys
        .oidc()
        .ok_or_else(|| unavailable("no issuer is configured"))?;
    let form = query(&[
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", &pending.redirect_uri),
        ("code_verifier", &pending.verifier),
        ("client_id", &sign_in.client_id),
    ]);
    // client_secret_basic: the id and secret form-encoded, then base64.
    let basic = format!(
        "Basic {}",
        STANDARD.encode(format!(
            "{}:{}",
            encode(&sign_in.client_id),
            encode(sign_in.client_secret.expose_secret())
        ))
    );
    let (status, tokens) = verifier
        .post_form(&endpoints.token, form, Some(&basic))
        .await
        .map_err(|e| unavailable(&format!("redeeming the code failed: {e:#}")))?;
    if !status.is_success() {
        return Err(unavailable(&format!(
            "the identity provider refused the code: {status} {}",
            tokens
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or_default()
        )));
    }
    let token = |name: &str| {
        tokens
            .get(name)
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
    };
    let id_token = token("id_token")
        .ok_or_else(|| unavailable("the identity provider returned no ID token"))?;
    let id_claims = verifier
        .verify_id_token(id_token, &sign_in.client_id, &pending.nonce)
        .await
        .map_err(|s| ApiError::unauthenticated(s.message()))?;
    // The session is the access token when it is a JWT for Bowtie's
    // audience, else the ID token when that is (an audience equal to the
    // client id, as with Google).
    let mut session = None;
    let mut refusal = String::new();
    for candidate in [token("access_token"), Some(id_token)]
        .into_iter()
        .flatten()
    {
        match verifier.verify(candidate).await {
            Ok(identity) => {
                session = Some((candidate.to_owned(), identity));
                break;
            }
            Err(status) => refusal = status.message().to_owned(),
        }
    }
    let (session, identity) = session.ok_or_else(|| {
        ApiError::unauthenticated(format!(
            "neither the access token nor the ID token is accepted as a bearer token: {refusal}"
        ))
    })?;
    let id_subject = id_claims
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if id_subject != identity.subject {
        return Err(ApiError::unauthenticated(
            "the access token and the ID token are of different subjects",
        ));
    }
    let name = id_claims
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.trim().is_empty())
        .map(str::to_owned)
        .or_else(|| identity.email.clone())
        .unwrap_or_else(|| identity.subject.clone());
    let max_age = (identity.expires_at - chrono::Utc::now().timestamp()).max(1);
    let secure = sign_in.secure(&headers);
    let profile = sign_in.seal(
        "profile",
        &serde_json::json!({"sub": identity.subject, "name": name}),
    );
    tracing::info!(subject = %identity.subject, "signed in to the dashboard");
    Ok(with_cookies(
        see_other("/"),
        vec![
            set_cookie(SESSION_COOKIE, &session, "/", max_age, true, secure),
            set_cookie(PROFILE_COOKIE, &profile, "/", max_age, true, secure),
            set_cookie(
                CSRF_COOKIE,
                &sign_in.csrf_token(&session),
                "/",
                max_age,
                false,
                secure,
            ),
            set_cookie(LOGIN_COOKIE, "", "/auth", 0, true, secure),
        ],
    ))
}

/// The answer of `POST /auth/logout`.
#[derive(Debug, Serialize)]
struct SignedOut {
    /// The issuer's end-session URL for the page to go to, when it has one.
    end_session_url: Option<String>,
}

async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let sign_in = configured(&state)?;
    let secure = sign_in.secure(&headers);
    let end_session_url = match sign_in.endpoints().await {
        Ok(endpoints) => endpoints.end_session.as_ref().map(|end| {
            let separator = if end.contains('?') { '&' } else { '?' };
            let back = format!("{}/", sign_in.base_url(&headers));
            format!(
                "{end}{separator}{}",
                query(&[
                    ("client_id", &sign_in.client_id),
                    ("post_logout_redirect_uri", &back),
                ])
            )
        }),
        // The cookies go regardless; the provider's own session stays.
        Err(_) => None,
    };
    Ok(with_cookies(
        Json(SignedOut { end_session_url }).into_response(),
        cleared(secure),
    ))
}

/// Who the session is.
#[derive(Debug, Serialize)]
struct Me {
    /// The token's subject.
    subject: String,
    /// The display name (the ID token's `name`, else the e-mail or subject).
    name: String,
    /// The e-mail claim.
    email: Option<String>,
    /// The session's Bowtie roles.
    roles: Vec<String>,
    /// When the session ends (the token's `exp`), RFC 3339.
    expires_at: String,
    /// The value to echo in `X-CSRF-Token` on writes.
    csrf_token: String,
}

async fn me(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let sign_in = configured(&state)?;
    let session = cookie(&headers, SESSION_COOKIE)
        .ok_or_else(|| ApiError::unauthenticated("not signed in: no session cookie"))?;
    let verifier = sign_in
        .keys
        .oidc()
        .ok_or_else(|| unavailable("no issuer is configured"))?;
    let identity = verifier
        .verify(session)
        .await
        .map_err(|s| ApiError::unauthenticated(format!("the session ended: {}", s.message())))?;
    let name = cookie(&headers, PROFILE_COOKIE)
        .and_then(|c| sign_in.open("profile", c))
        .filter(|p| p.get("sub").and_then(Value::as_str) == Some(identity.subject.as_str()))
        .and_then(|p| p.get("name").and_then(Value::as_str).map(str::to_owned))
        .or_else(|| identity.email.clone())
        .unwrap_or_else(|| identity.subject.clone());
    let mut roles: Vec<Role> = identity
        .roles
        .iter()
        .filter_map(|r| Role::parse(r))
        .collect();
    if roles.is_empty() {
        roles.extend(sign_in.default_role);
    }
    roles.sort();
    roles.dedup();
    let expires_at = chrono::DateTime::from_timestamp(identity.expires_at, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    let mut response = Json(Me {
        csrf_token: sign_in.csrf_token(session),
        subject: identity.subject,
        name,
        email: identity.email,
        roles: roles.iter().map(|r| r.as_str().to_owned()).collect(),
        expires_at,
    })
    .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Whether a request changes state (and so needs the CSRF token when the
/// session cookie authenticates it).
fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Routes that authenticate by other means (HMAC signatures, write keys)
/// and never by the session.
fn foreign(path: &str) -> bool {
    path.starts_with("/webhooks/") || path.starts_with("/v1/")
}

/// Turns the session cookie into the bearer token of an API request, after
/// the CSRF check of a state-changing one. Requests with an `Authorization`
/// header, without the cookie, or to the webhook and tracking routes pass
/// untouched.
pub async fn authenticate(
    sign_in: Option<Arc<SignIn>>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(sign_in) = sign_in else {
        return next.run(request).await;
    };
    let path = request.uri().path();
    if foreign(path) || request.headers().contains_key(header::AUTHORIZATION) {
        return next.run(request).await;
    }
    let Some(session) = cookie(request.headers(), SESSION_COOKIE).map(str::to_owned) else {
        return next.run(request).await;
    };
    if changes_state(request.method()) {
        let presented = request
            .headers()
            .get(CSRF_HEADER)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        let expected = sign_in.csrf_token(&session);
        if !bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
            return ApiError::plain(
                StatusCode::FORBIDDEN,
                "PERMISSION_DENIED",
                "a write signed in by cookie must echo the bowtie_csrf cookie in the X-CSRF-Token header",
            )
            .into_response();
        }
    }
    if path.starts_with("/api/")
        && let Ok(value) = HeaderValue::from_str(&format!("Bearer {session}"))
    {
        request.headers_mut().insert(header::AUTHORIZATION, value);
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pkce_challenge_is_the_rfc_7636_example() {
        // RFC 7636 appendix B.
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn values_are_percent_encoded_except_the_unreserved_characters() {
        assert_eq!(encode("openid profile"), "openid%20profile");
        assert_eq!(
            encode("http://127.0.0.1:8080/auth/callback"),
            "http%3A%2F%2F127.0.0.1%3A8080%2Fauth%2Fcallback"
        );
        assert_eq!(encode("a-b_c.d~e"), "a-b_c.d~e");
    }

    #[test]
    fn a_cookie_is_found_among_several_headers_and_pairs() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; bowtie_csrf=x"),
        );
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("bowtie_session=tok.en.sig"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("tok.en.sig"));
        assert_eq!(cookie(&headers, CSRF_COOKIE), Some("x"));
        assert_eq!(cookie(&headers, "missing"), None);
    }

    #[test]
    fn only_reads_leave_state_alone() {
        assert!(!changes_state(&Method::GET));
        assert!(!changes_state(&Method::HEAD));
        assert!(changes_state(&Method::POST));
        assert!(changes_state(&Method::PUT));
        assert!(changes_state(&Method::PATCH));
        assert!(changes_state(&Method::DELETE));
    }
}
