//! Bearer JWTs of an OpenID Connect issuer (`auth.oidc`), checked beside the
//! API keys by [`crate::auth::ApiKeys`] on every service and on the gateway.
//!
//! A token is accepted when its signature verifies with a key of the
//! issuer's JWKS (chosen by the header's `kid`) under an allowlisted
//! algorithm (RS256, ES256: never `none`, never an HMAC one, so a public key
//! cannot be used as a shared secret), `iss` is the configured issuer
//! exactly, `aud` contains the configured audience, and `exp`, `nbf` and
//! `iat` hold within `leeway_seconds`. Its roles come from one configured
//! claim (docs/design.md section 9.1).
//!
//! The JWKS is fetched on the first token and cached. A token whose `kid` is
//! not in the cache refreshes it, but at most once per
//! `jwks_refresh_cooldown_seconds` (and one fetch at a time), so a stream of
//! tokens with made-up kids costs the issuer at most one request per
//! cooldown; meanwhile such tokens are simply UNAUTHENTICATED.
//!
//! A token that verified is remembered (by its SHA-256) with its identity
//! until it expires, so a client that sends the same token on every call
//! pays for the signature check once, not on every call.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tonic::Status;

use crate::config::OidcSettings;
use crate::tls::HttpsClient;

/// The algorithms a token may be signed with.
pub const ALLOWED_ALGORITHMS: [Algorithm; 2] = [Algorithm::RS256, Algorithm::ES256];

/// Deadline of one discovery or JWKS request.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Most verified tokens remembered; past it the expired ones are dropped,
/// and all of them when none has expired.
const MAX_VERIFIED: usize = 10_000;

/// Largest discovery document or JWKS accepted.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// What the claims must say, and how roles are read from them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectations {
    /// `iss`, exactly.
    pub issuer: String,
    /// One of the `aud` values.
    pub audience: String,
    /// Allowed clock difference, seconds.
    pub leeway_seconds: i64,
    /// The claim holding the roles; dots descend into objects
    /// (`realm_access.roles`).
    pub roles_claim: String,
    /// Stripped from each claim value before it is read as a role
    /// (`bowtie-` turns the group `bowtie-csm` into `csm`).
    pub role_prefix: String,
    /// The claim holding the e-mail address.
    pub email_claim: String,
    /// The claim listing the teams a manager leads; empty: none read.
    pub teams_claim: String,
}

/// Who a valid token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `sub`.
    pub subject: String,
    /// The e-mail claim, when the token has one.
    pub email: Option<String>,
    /// The values of the roles claim with the prefix stripped, in token
    /// order; those that are no role are kept out.
    pub roles: Vec<String>,
    /// The values of the teams claim: the teams a manager leads.
    pub teams: Vec<String>,
    /// `exp`, Unix seconds.
    pub expires_at: i64,
}

/// Why a token's claims are refused; the message names the claim.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// A required claim is absent or of the wrong type.
    #[error("the token has no {0} claim of the right type")]
    Missing(&'static str),
    /// `iss` is another issuer.
    #[error("the token was issued by {found:?}, not {expected:?}")]
    WrongIssuer {
        /// The token's `iss`.
        found: String,
        /// The configured issuer.
        expected: String,
    },
    /// `aud` does not name Bowtie.
    #[error("the token's audience does not include {0:?}")]
    WrongAudience(String),
    /// `exp` has passed.
    #[error("the token expired at {exp} (now {now}, leeway {leeway} s)")]
    Expired {
        /// The token's `exp`.
        exp: i64,
        /// The time of the check.
        now: i64,
        /// The configured leeway.
        leeway: i64,
    },
    /// `nbf` has not come yet.
    #[error("the token is not valid before {nbf} (now {now}, leeway {leeway} s)")]
    NotYetValid {
        /// The token's `nbf`.
        nbf: i64,
        /// The time of the check.
        now: i64,
        /// The configured leeway.
        leeway: i64,
    },
    /// `iat` lies in the future.
    #[error("the token was issued in the future, at {iat} (now {now}, leeway {leeway} s)")]
    IssuedInFuture {
        /// The token's `iat`.
        iat: i64,
        /// The time of the check.
        now: i64,
        /// The configured leeway.
        leeway: i64,
    },
}

/// A NumericDate claim as whole seconds; fractions are allowed and cut off.
/// `Err` when present but not a number.
fn numeric(claims: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, ClaimError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .map(Some)
            .ok_or(ClaimError::Missing(name)),
        Some(_) => Err(ClaimError::Missing(name)),
    }
}

/// The value at a dotted path (`realm_access.roles`).
fn at_path<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

/// Checks the claims of a token whose signature verified, at `now` (Unix
/// seconds), and reads who it speaks for.
///
/// `exp` and `sub` are required; `nbf` and `iat` are checked when present.
/// A token is expired from `exp + leeway` on (RFC 7519: not accepted "on or
/// after" its expiry), not yet valid before `nbf - leeway`, and refused when
/// issued after `now + leeway`.
pub fn check_claims(
    claims: &Map<String, Value>,
    expect: &Expectations,
    now: i64,
) -> Result<Identity, ClaimError> {
    let leeway = expect.leeway_seconds;
    let issuer = claims
        .get("iss")
        .and_then(Value::as_str)
        .ok_or(ClaimError::Missing("iss"))?;
    if issuer != expect.issuer {
        return Err(ClaimError::WrongIssuer {
            found: issuer.to_owned(),
            expected: expect.issuer.clone(),
        });
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(one)) => *one == expect.audience,
        Some(Value::Array(many)) => many
            .iter()
            .any(|a| a.as_str() == Some(expect.audience.as_str())),
        _ => return Err(ClaimError::Missing("aud")),
    };
    if !audience_ok {
        return Err(ClaimError::WrongAudience(expect.audience.clone()));
    }
    let exp = numeric(claims, "exp")?.ok_or(ClaimError::Missing("exp"))?;
    if now >= exp.saturating_add(leeway) {
        return Err(ClaimError::Expired { exp, now, leeway });
    }
    if let Some(nbf) = numeric(claims, "nbf")?
        && now < nbf.saturating_sub(leeway)
    {
        return Err(ClaimError::NotYetValid { nbf, now, leeway });
    }
    if let Some(iat) = numeric(claims, "iat")?
        && iat > now.saturating_add(leeway)
    {
        return Err(ClaimError::IssuedInFuture { iat, now, leeway });
    }
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(ClaimError::Missing("sub"))?;
    let email = at_path(claims, &expect.email_claim)
        .and_then(Value::as_str)
        .map(str::to_owned);
    let roles = strings(at_path(claims, &expect.roles_claim))
        .into_iter()
        .filter_map(|v| v.strip_prefix(expect.role_prefix.as_str()))
        .filter(|v| crate::auth::Role::parse(v).is_some())
        .map(str::to_owned)
        .collect();
    let teams = if expect.teams_claim.is_empty() {
        Vec::new()
    } else {
        strings(at_path(claims, &expect.teams_claim))
            .into_iter()
            .map(str::to_owned)
            .collect()
    };
    Ok(Identity {
        subject: subject.to_owned(),
        email,
        roles,
        teams,
        expires_at: exp,
    })
}

/// The values of a claim that is a space-separated string or a list.
fn strings(claim: Option<&Value>) -> Vec<&str> {
    match claim {
        Some(Value::String(one)) => one.split_whitespace().collect(),
        Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// True when `token` has the shape of a JWS (three dot-separated parts):
/// API keys never do.
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

/// One key of the issuer's JWKS.
struct SigningKey {
    key: DecodingKey,
    /// The one algorithm it verifies: RS256 for an RSA key, ES256 for a
    /// P-256 one.
    algorithm: Algorithm,
}

/// The cached JWKS.
#[derive(Default)]
struct KeyCache {
    keys: HashMap<String, std::sync::Arc<SigningKey>>,
    /// When the last fetch was tried (successful or not).
    fetched_at: Option<Instant>,
    /// How many fetches were tried.
    fetches: u64,
}

/// Verifies bearer JWTs of the configured issuer.
pub struct JwtVerifier {
    expect: Expectations,
    /// Where the JWKS is; empty until discovery found it.
    jwks_uri: Mutex<String>,
    cooldown: Duration,
    http: HttpsClient,
    cache: RwLock<KeyCache>,
    /// One refresh at a time.
    refreshing: tokio::sync::Mutex<()>,
    /// Tokens that verified, by their SHA-256.
    verified: RwLock<HashMap<[u8; 32], Identity>>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("expect", &self.expect)
            .finish_non_exhaustive()
    }
}

fn unauthenticated(why: impl std::fmt::Display) -> Status {
    Status::unauthenticated(format!("bearer token refused: {why}"))
}

/// Refuses a plain-HTTP URL unless it points at this machine.
fn check_url(key: &str, url: &str) -> anyhow::Result<()> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| anyhow::anyhow!("{key} {url:?} is not a URL ({e})"))?;
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http")
            if matches!(
                uri.host(),
                Some("127.0.0.1" | "localhost" | "[::1]" | "::1")
            ) =>
        {
            Ok(())
        }
        _ => anyhow::bail!("{key} {url:?} must be an https:// URL (http:// only on loopback)"),
    }
}

impl JwtVerifier {
    /// The verifier of `settings`, or `None` when no issuer is configured.
    /// Nothing is fetched yet: the issuer may be down while Bowtie starts.
    pub fn from_settings(settings: &OidcSettings) -> anyhow::Result<Option<Self>> {
        if settings.issuer.trim().is_empty() {
            return Ok(None);
        }
        check_url("auth.oidc.issuer", &settings.issuer)?;
        if settings.audience.trim().is_empty() {
            anyhow::bail!("auth.oidc.audience is required when auth.oidc.issuer is set");
        }
        if !settings.jwks_uri.is_empty() {
            check_url("auth.oidc.jwks_uri", &settings.jwks_uri)?;
        }
        if !settings.default_role.is_empty()
            && crate::auth::Role::parse(&settings.default_role).is_none()
        {
            anyhow::bail!(
                "auth.oidc.default_role {:?} is not viewer, csm, manager or admin",
                settings.default_role
            );
        }
        let leeway_seconds = i64::try_from(settings.leeway_seconds)
            .map_err(|_| anyhow::anyhow!("auth.oidc.leeway_seconds is too large"))?;
        Ok(Some(Self {
            expect: Expectations {
                issuer: settings.issuer.clone(),
                audience: settings.audience.clone(),
                leeway_seconds,
                roles_claim: settings.roles_claim.clone(),
                role_prefix: settings.role_prefix.clone(),
                email_claim: settings.email_claim.clone(),
                teams_claim: settings.teams_claim.clone(),
            },
            jwks_uri: Mutex::new(settings.jwks_uri.clone()),
            cooldown: Duration::from_secs(settings.jwks_refresh_cooldown_seconds),
            http: crate::tls::https_client("auth.oidc.ca", &settings.ca)?,
            cache: RwLock::new(KeyCache::default()),
            refreshing: tokio::sync::Mutex::new(()),
            verified: RwLock::new(HashMap::new()),
        }))
    }

    /// How many JWKS fetches were tried so far.
    pub fn jwks_fetches(&self) -> u64 {
        self.cache
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .fetches
    }

    /// Verifies `token` at the current time: the identity, or
    /// UNAUTHENTICATED saying why not.
    pub async fn verify(&self, token: &str) -> Result<Identity, Status> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = chrono::Utc::now().timestamp();
        let remembered = self
            .verified
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&digest)
            .cloned();
        if let Some(identity) = remembered {
            // It verified before; only time can have made it invalid since.
            let (exp, leeway) = (identity.expires_at, self.expect.leeway_seconds);
            if now >= exp.saturating_add(leeway) {
                return Err(unauthenticated(ClaimError::Expired { exp, now, leeway }));
            }
            return Ok(identity);
        }
        let identity = self.verify_anew(token, now).await?;
        self.remember(digest, &identity, now);
        Ok(identity)
    }

    /// Remembers a token that verified at `now`.
    fn remember(&self, digest: [u8; 32], identity: &Identity, now: i64) {
        let leeway = self.expect.leeway_seconds;
        let mut verified = self
            .verified
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if verified.len() >= MAX_VERIFIED {
            verified.retain(|_, i| now < i.expires_at.saturating_add(leeway));
            if verified.len() >= MAX_VERIFIED {
                verified.clear();
            }
        }
        verified.insert(digest, identity.clone());
    }

    /// Verifies an ID token the issuer's token endpoint just returned to the
    /// client `client_id` (the gateway's sign-in): the signature as for any
    /// token, `iss` exact, `aud` containing `client_id`, the times, and
    /// `nonce` equal to the one the sign-in sent. Returns its claims.
    pub async fn verify_id_token(
        &self,
        token: &str,
        client_id: &str,
        nonce: &str,
    ) -> Result<Map<String, Value>, Status> {
        let expect = Expectations {
            audience: client_id.to_owned(),
            ..self.expect.clone()
        };
        let now = chrono::Utc::now().timestamp();
        let claims = self.verified_claims(token).await?;
        check_claims(&claims, &expect, now).map_err(unauthenticated)?;
        let sent = nonce.as_bytes();
        let found = claims
            .get("nonce")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .as_bytes();
        if sent.is_empty() || !bool::from(subtle::ConstantTimeEq::ct_eq(sent, found)) {
            return Err(unauthenticated("the ID token's nonce is not the one sent"));
        }
        Ok(claims)
    }

    /// POSTs a form to one of the issuer's endpoints (its token endpoint),
    /// with `authorization` as the `Authorization` header when given: the
    /// status and the JSON answer.
    pub async fn post_form(
        &self,
        url: &str,
        form: String,
        authorization: Option<&str>,
    ) -> anyhow::Result<(http::StatusCode, Value)> {
        check_url("token_endpoint", url)?;
        let mut request = http::Request::post(url)
            .header(http::header::ACCEPT, "application/json")
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            );
        if let Some(authorization) = authorization {
            request = request.header(http::header::AUTHORIZATION, authorization);
        }
        let request = request.body(Full::new(Bytes::from(form)))?;
        let response = tokio::time::timeout(FETCH_TIMEOUT, self.http.request(request))
            .await
            .map_err(|_| anyhow::anyhow!("{url} did not answer within {FETCH_TIMEOUT:?}"))??;
        let status = response.status();
        let body = tokio::time::timeout(
            FETCH_TIMEOUT,
            Limited::new(response.into_body(), MAX_DOCUMENT_BYTES).collect(),
        )
        .await
        .map_err(|_| anyhow::anyhow!("{url} did not answer within {FETCH_TIMEOUT:?}"))?
        .map_err(|e| anyhow::anyhow!("reading {url}: {e}"))?
        .to_bytes();
        let value = serde_json::from_slice(&body)
            .map_err(|e| anyhow::anyhow!("{url} answered {status} without JSON ({e})"))?;
        Ok((status, value))
    }

    /// Checks `token`'s signature and claims at `now`.
    async fn verify_anew(&self, token: &str, now: i64) -> Result<Identity, Status> {
        let claims = self.verified_claims(token).await?;
        check_claims(&claims, &self.expect, now).map_err(unauthenticated)
    }

    /// The claims of `token` once its algorithm, key and signature are
    /// checked (the claims themselves are not yet).
    async fn verified_claims(&self, token: &str) -> Result<Map<String, Value>, Status> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| {
            unauthenticated(format!("not a signed JWT with a known algorithm ({e})"))
        })?;
        if !ALLOWED_ALGORITHMS.contains(&header.alg) {
            return Err(unauthenticated(format!(
                "algorithm {:?} is not accepted (RS256, ES256)",
                header.alg
            )));
        }
        let kid = header
            .kid
            .as_deref()
            .ok_or_else(|| unauthenticated("the token header names no key (kid)"))?;
        let key = self.key(kid).await?;
        if key.algorithm != header.alg {
            return Err(unauthenticated(format!(
                "key {kid:?} is not for {:?}",
                header.alg
            )));
        }
        let mut validation = Validation::new(header.alg);
        // The claims are checked by `check_claims`, against an explicit clock.
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|e| unauthenticated(format!("the signature does not verify ({e})")))?;
        Ok(data.claims)
    }

    /// The cached key `kid`, refreshing the cache first when it has none and
    /// the cooldown allows.
    async fn key(&self, kid: &str) -> Result<std::sync::Arc<SigningKey>, Status> {
        if let Some(key) = self.cached(kid) {
            return Ok(key);
        }
        let _one_at_a_time = self.refreshing.lock().await;
        // Another call may have refreshed while this one waited.
        if let Some(key) = self.cached(kid) {
            return Ok(key);
        }
        let due = {
            let cache = self.cache.read().unwrap_or_else(PoisonError::into_inner);
            cache
                .fetched_at
                .is_none_or(|at| at.elapsed() >= self.cooldown)
        };
        if due {
            self.refresh().await;
        }
        self.cached(kid)
            .ok_or_else(|| unauthenticated(format!("no key {kid:?} in the issuer's JWKS")))
    }

    fn cached(&self, kid: &str) -> Option<std::sync::Arc<SigningKey>> {
        self.cache
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys
            .get(kid)
            .cloned()
    }

    /// Fetches the JWKS (after discovery, the first time) and replaces the
    /// cache; a failure keeps the old keys and is logged.
    async fn refresh(&self) {
        {
            let mut cache = self.cache.write().unwrap_or_else(PoisonError::into_inner);
            cache.fetched_at = Some(Instant::now());
            cache.fetches += 1;
        }
        match self.fetch_keys().await {
            Ok(keys) => {
                tracing::info!(issuer = %self.expect.issuer, keys = keys.len(), "fetched the issuer's JWKS");
                self.cache
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
                    .keys = keys;
            }
            Err(e) => {
                tracing::warn!(issuer = %self.expect.issuer, error = %e, "could not fetch the issuer's JWKS");
            }
        }
    }

    async fn fetch_keys(&self) -> anyhow::Result<HashMap<String, std::sync::Arc<SigningKey>>> {
        let known = self
            .jwks_uri
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let jwks_uri = if known.is_empty() {
            let discovered = self.discover().await?;
            *self.jwks_uri.lock().unwrap_or_else(PoisonError::into_inner) = discovered.clone();
            discovered
        } else {
            known
        };
        let document = self.get_json(&jwks_uri).await?;
        Ok(parse_jwks(&document))
    }

    /// The issuer's discovery document, which must name the configured
    /// issuer (the gateway's sign-in reads its endpoints from it).
    pub async fn discovery_document(&self) -> anyhow::Result<Value> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.expect.issuer.trim_end_matches('/')
        );
        let document = self.get_json(&url).await?;
        let issuer = document.get("issuer").and_then(Value::as_str);
        if issuer != Some(self.expect.issuer.as_str()) {
            anyhow::bail!(
                "{url} names the issuer {issuer:?}, not {:?}",
                self.expect.issuer
            );
        }
        Ok(document)
    }

    /// The `jwks_uri` of the issuer's discovery document.
    async fn discover(&self) -> anyhow::Result<String> {
        let url = "the discovery document";
        let document = self.discovery_document().await?;
        let jwks_uri = document
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow::anyhow!("{url} has no jwks_uri"))?;
        check_url("jwks_uri", jwks_uri)?;
        Ok(jwks_uri.to_owned())
    }

    async fn get_json(&self, url: &str) -> anyhow::Result<Value> {
        let request = http::Request::get(url)
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))?;
        let response = tokio::time::timeout(FETCH_TIMEOUT, self.http.request(request))
            .await
            .map_err(|_| anyhow::anyhow!("{url} did not answer within {FETCH_TIMEOUT:?}"))??;
        if !response.status().is_success() {
            anyhow::bail!("{url} answered {}", response.status());
        }
        let body = tokio::time::timeout(
            FETCH_TIMEOUT,
            Limited::new(response.into_body(), MAX_DOCUMENT_BYTES).collect(),
        )
        .await
        .map_err(|_| anyhow::anyhow!("{url} did not answer within {FETCH_TIMEOUT:?}"))?
        .map_err(|e| anyhow::anyhow!("reading {url}: {e}"))?
        .to_bytes();
        Ok(serde_json::from_slice(&body)?)
    }
}

/// The signing keys of a JWKS document by `kid`: RSA keys for RS256 and
/// P-256 keys for ES256. Keys without a kid, for encryption, of another type
/// (symmetric ones above all), naming another algorithm or unreadable are
/// left out.
fn parse_jwks(document: &Value) -> HashMap<String, std::sync::Arc<SigningKey>> {
    let mut keys = HashMap::new();
    let Some(entries) = document.get("keys").and_then(Value::as_array) else {
        return keys;
    };
    for entry in entries {
        let Ok(jwk) = serde_json::from_value::<Jwk>(entry.clone()) else {
            continue;
        };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let algorithm = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
                Algorithm::ES256
            }
            _ => continue,
        };
        let named = match jwk.common.key_algorithm {
            None => algorithm,
            Some(KeyAlgorithm::RS256) => Algorithm::RS256,
            Some(KeyAlgorithm::ES256) => Algorithm::ES256,
            Some(_) => continue,
        };
        if named != algorithm {
            continue;
        }
        let Some(kid) = jwk.common.key_id.clone() else {
            continue;
        };
        if let Ok(key) = DecodingKey::from_jwk(&jwk) {
            keys.insert(kid, std::sync::Arc::new(SigningKey { key, algorithm }));
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;

    fn expect() -> Expectations {
        Expectations {
            issuer: "https://id.example.com/".into(),
            audience: "https://bowtie.example.com".into(),
            leeway_seconds: 30,
            roles_claim: "groups".into(),
            role_prefix: "bowtie-".into(),
            email_claim: "email".into(),
            teams_claim: "teams".into(),
        }
    }

    fn claims(extra: Value) -> Map<String, Value> {
        let mut base = json!({
            "iss": "https://id.example.com/",
            "aud": ["account", "https://bowtie.example.com"],
            "sub": "00u1csm",
            "email": "ada@example.com",
            "exp": NOW + 300,
            "iat": NOW - 10,
            "groups": ["Everyone", "bowtie-csm", "bowtie-auditor", "bowtie-admin"],
        });
        if let (Some(base), Some(extra)) = (base.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                if v.is_null() {
                    base.remove(k);
                } else {
                    base.insert(k.clone(), v.clone());
                }
            }
        }
        base.as_object().cloned().unwrap_or_default()
    }

    fn check(extra: Value) -> Result<Identity, ClaimError> {
        check_claims(&claims(extra), &expect(), NOW)
    }

    #[test]
    fn a_valid_token_gives_its_subject_email_and_the_known_prefixed_roles() {
        assert_eq!(
            check(json!({})),
            Ok(Identity {
                subject: "00u1csm".into(),
                email: Some("ada@example.com".into()),
                roles: vec!["csm".into(), "admin".into()],
                teams: Vec::new(),
                expires_at: NOW + 300,
            })
        );
    }

    #[test]
    fn the_teams_claim_lists_the_teams_a_manager_leads() {
        let teams = |extra| check(extra).map(|i| i.teams);
        assert_eq!(
            teams(json!({"teams": ["emea", "dach"]})),
            Ok(vec!["emea".to_owned(), "dach".to_owned()])
        );
        assert_eq!(teams(json!({"teams": "emea"})), Ok(vec!["emea".to_owned()]));
    }

    #[test]
    fn the_issuer_must_match_exactly_and_the_audience_must_be_among_aud() {
        assert_eq!(
            check(json!({"iss": "https://id.example.com"})),
            Err(ClaimError::WrongIssuer {
                found: "https://id.example.com".into(),
                expected: "https://id.example.com/".into(),
            })
        );
        assert_eq!(
            check(json!({"aud": "account"})),
            Err(ClaimError::WrongAudience(
                "https://bowtie.example.com".into()
            ))
        );
        assert_eq!(
            check(json!({"aud": "https://bowtie.example.com"})).map(|i| i.subject),
            Ok("00u1csm".into())
        );
        assert_eq!(check(json!({"aud": null})), Err(ClaimError::Missing("aud")));
        assert_eq!(check(json!({"iss": 7})), Err(ClaimError::Missing("iss")));
    }

    #[test]
    fn expiry_holds_until_exp_plus_leeway_and_not_on_it() {
        // exp = NOW - 29: still inside the 30 s leeway.
        assert!(check(json!({"exp": NOW - 29})).is_ok());
        // exp = NOW - 30: NOW is exactly exp + leeway, refused.
        assert_eq!(
            check(json!({"exp": NOW - 30})),
            Err(ClaimError::Expired {
                exp: NOW - 30,
                now: NOW,
                leeway: 30
            })
        );
        assert_eq!(check(json!({"exp": null})), Err(ClaimError::Missing("exp")));
        assert_eq!(
            check(json!({"exp": "tomorrow"})),
            Err(ClaimError::Missing("exp"))
        );
        // A fractional NumericDate counts by its whole seconds.
        assert!(check(json!({"exp": (NOW - 29) as f64 + 0.5})).is_ok());
    }

    #[test]
    fn not_before_and_issued_at_allow_the_leeway_into_the_future_and_no_more() {
        assert!(check(json!({"nbf": NOW + 30})).is_ok());
        assert_eq!(
            check(json!({"nbf": NOW + 31})),
            Err(ClaimError::NotYetValid {
                nbf: NOW + 31,
                now: NOW,
                leeway: 30
            })
        );
        assert!(check(json!({"iat": NOW + 30})).is_ok());
        assert_eq!(
            check(json!({"iat": NOW + 31})),
            Err(ClaimError::IssuedInFuture {
                iat: NOW + 31,
                now: NOW,
                leeway: 30
            })
        );
        assert!(check(json!({"iat": null, "nbf": null})).is_ok());
    }

    #[test]
    fn a_subject_is_required_and_roles_may_be_nested_or_space_separated() {
        assert_eq!(check(json!({"sub": ""})), Err(ClaimError::Missing("sub")));
        let nested = Expectations {
            roles_claim: "realm_access.roles".into(),
            role_prefix: String::new(),
            ..expect()
        };
        let token = claims(json!({"realm_access": {"roles": ["offline_access", "manager"]}}));
        assert_eq!(
            check_claims(&token, &nested, NOW).map(|i| i.roles),
            Ok(vec!["manager".to_owned()])
        );
        let spaced = Expectations {
            roles_claim: "scp".into(),
            role_prefix: String::new(),
            ..expect()
        };
        let token = claims(json!({"scp": "openid viewer"}));
        assert_eq!(
            check_claims(&token, &spaced, NOW).map(|i| i.roles),
            Ok(vec!["viewer".to_owned()])
        );
        assert_eq!(
            check(json!({"groups": null, "email": null})).map(|i| (i.roles, i.email)),
            Ok((Vec::new(), None))
        );
    }

    #[test]
    fn only_signing_keys_with_a_kid_and_an_allowed_algorithm_are_kept_from_a_jwks() {
        let rsa = |kid: &str, extra: Value| {
            let mut key = json!({"kty": "RSA", "kid": kid, "n": "sXch", "e": "AQAB"});
            if let (Some(key), Some(extra)) = (key.as_object_mut(), extra.as_object()) {
                key.extend(extra.clone());
            }
            key
        };
        let document = json!({"keys": [
            rsa("plain", json!({})),
            rsa("signing", json!({"use": "sig", "alg": "RS256"})),
            rsa("encryption", json!({"use": "enc"})),
            rsa("rs512", json!({"alg": "RS512"})),
            rsa("mislabelled", json!({"alg": "ES256"})),
            {"kty": "RSA", "n": "sXch", "e": "AQAB"},
            {"kty": "EC", "kid": "ec", "crv": "P-256", "alg": "ES256", "x": "AQ", "y": "AQ"},
            {"kty": "oct", "kid": "secret", "k": "c2VjcmV0"},
            "not a key",
        ]});
        let keys = parse_jwks(&document);
        let mut kids: Vec<&str> = keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        assert_eq!(kids, vec!["ec", "plain", "signing"]);
        let algorithm = |kid: &str| keys.get(kid).map(|k| k.algorithm);
        assert_eq!(algorithm("plain"), Some(Algorithm::RS256));
        assert_eq!(algorithm("ec"), Some(Algorithm::ES256));
        assert!(parse_jwks(&json!({"no": "keys"})).is_empty());
    }

    #[test]
    fn jwt_shaped_tokens_are_told_from_api_keys() {
        assert!(looks_like_jwt("eyJh.eyJz.c2ln"));
        assert!(!looks_like_jwt("bt_0123456789abcdef"));
    }

    #[test]
    fn plain_http_is_refused_except_on_loopback() {
        assert!(check_url("auth.oidc.issuer", "https://id.example.com").is_ok());
        assert!(check_url("auth.oidc.issuer", "http://127.0.0.1:4000").is_ok());
        let error = check_url("auth.oidc.issuer", "http://id.example.com")
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            error.as_deref(),
            Some(
                "auth.oidc.issuer \"http://id.example.com\" must be an https:// URL (http:// only on loopback)"
            )
        );
    }
}
