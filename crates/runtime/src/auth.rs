//! Bearer API keys with scopes, and bearer JWTs of an OpenID Connect issuer
//! (`crate::oidc`) with roles, checked by a tower layer in front of every
//! service and by the gateway.
//!
//! A role maps to the scope [`authorize`](ApiKeys::authorize) checks:
//! viewer reads, csm and manager read and write, admin does everything.
//! A token carrying several roles gets the highest scope among them.
//!
//! Keys are configured as SHA-256 hashes, never in clear. API keys are long
//! random strings, so a fast hash is enough (a slow password hash would only
//! add latency to every call); the presented key is hashed and compared with
//! every configured hash in constant time, without stopping at the first match,
//! so timing does not reveal which or how many keys exist. Health checks and
//! reflection are open: orchestrators and `grpcurl list` need no key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::Status;
use tower::{Layer, Service};

use crate::audit::AuditContext;
use crate::config::{AuthSettings, RateBudget, RateLimitSettings, TeamSettings};
use crate::oidc::JwtVerifier;

/// The metadata key (and HTTP header) that says how many seconds to wait
/// before retrying a call refused by a rate limit.
pub const RETRY_AFTER: &str = "retry-after";

/// What a key may do. Each scope includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Get, List and Watch calls.
    Read,
    /// Every write.
    Write,
    /// Administrative calls (configuration such as scorecards).
    Admin,
}

impl Scope {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "read" => Some(Scope::Read),
            "write" => Some(Scope::Write),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }
}

/// What a person (or a key) is in the customer-success team.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads everything.
    Viewer,
    /// A customer success manager.
    Csm,
    /// Leads a team of CSMs.
    Manager,
    /// Changes configuration too.
    Admin,
}

impl Role {
    /// The role named `s` (`viewer`, `csm`, `manager`, `admin`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "viewer" => Some(Role::Viewer),
            "csm" => Some(Role::Csm),
            "manager" => Some(Role::Manager),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// Its name in configuration and claims.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Csm => "csm",
            Role::Manager => "manager",
            Role::Admin => "admin",
        }
    }

    /// The scope the role grants.
    pub fn scope(self) -> Scope {
        match self {
            Role::Viewer => Scope::Read,
            Role::Csm | Role::Manager => Scope::Write,
            Role::Admin => Scope::Admin,
        }
    }

    /// The role of a key configured with scopes only.
    fn of_scope(scope: Scope) -> Self {
        match scope {
            Scope::Read => Role::Viewer,
            Scope::Write => Role::Manager,
            Scope::Admin => Role::Admin,
        }
    }
}

/// How a caller authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    /// A configured API key.
    Key,
    /// A bearer JWT of the configured issuer.
    Jwt,
}

/// The caller a request was authenticated as; handlers find it in the
/// request extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The key's configured name, or the token's subject.
    pub name: String,
    /// Its highest scope.
    pub scope: Scope,
    /// Key or token.
    pub kind: PrincipalKind,
    /// The key's name, or the token's `sub`.
    pub subject: String,
    /// The token's e-mail claim; `None` for keys.
    pub email: Option<String>,
    /// The caller's roles, highest last.
    pub roles: Vec<Role>,
    /// The role whose ownership rules its writes follow (docs/design.md
    /// 9.3): its highest; `None` for a key configured with scopes only,
    /// which its scope alone decides.
    pub rules: Option<Role>,
    /// Its book: the people (e-mail addresses and subjects, lower-cased)
    /// whose accounts are its own - itself, and for a manager the members
    /// of its teams. Empty for a key configured with scopes only.
    pub book: Vec<String>,
}

impl Principal {
    /// True when the caller is a person (a token, or a key given a role),
    /// so it has a book of its own.
    pub fn is_personal(&self) -> bool {
        self.rules.is_some()
    }

    /// True when `person` (an account's CSM or owner, a CTA's owner, an
    /// author) is in the caller's book, compared case-insensitively.
    pub fn has_in_book(&self, person: &str) -> bool {
        let person = person.trim();
        !person.is_empty() && self.book.iter().any(|p| p.eq_ignore_ascii_case(person))
    }

    /// True when `person` is the caller itself (its e-mail or subject).
    pub fn is(&self, person: &str) -> bool {
        let person = person.trim();
        !person.is_empty()
            && (self.subject.eq_ignore_ascii_case(person)
                || self
                    .email
                    .as_deref()
                    .is_some_and(|e| e.eq_ignore_ascii_case(person)))
    }
}

/// The configured teams, lower-cased for matching.
#[derive(Debug, Default)]
struct Teams(Vec<TeamSettings>);

impl Teams {
    fn new(teams: &[TeamSettings]) -> anyhow::Result<Self> {
        let lower = |v: &[String]| v.iter().map(|p| p.trim().to_lowercase()).collect();
        let mut out: Vec<TeamSettings> = Vec::with_capacity(teams.len());
        for team in teams {
            if team.name.trim().is_empty() {
                anyhow::bail!("auth.teams: a team has no name");
            }
            if out.iter().any(|t| t.name == team.name) {
                anyhow::bail!("auth.teams: team {:?} is configured twice", team.name);
            }
            out.push(TeamSettings {
                name: team.name.clone(),
                managers: lower(&team.managers),
                members: lower(&team.members),
            });
        }
        Ok(Self(out))
    }

    /// The book of a caller known as `identities` (lower-cased) with
    /// `role`: itself, and for a manager the members of the teams it leads
    /// (listed among their managers, or named by `claimed`).
    fn book(&self, role: Role, identities: Vec<String>, claimed: &[String]) -> Vec<String> {
        let mut book = identities;
        if role == Role::Manager {
            for team in &self.0 {
                let leads =
                    claimed.contains(&team.name) || team.managers.iter().any(|m| book.contains(m));
                if leads {
                    book.extend(team.members.iter().cloned());
                }
            }
        }
        book.sort();
        book.dedup();
        book
    }
}

#[derive(Debug)]
struct Key {
    hash: [u8; 32],
    principal: Principal,
    /// Refused from this instant on.
    expires_at: Option<DateTime<Utc>>,
    /// Its request budget; `None`: unlimited.
    bucket: Option<Bucket>,
}

/// A token bucket (`auth.rate_limits`): `per_second` tokens a second up to
/// `burst`; a call takes one, and a call that finds none is
/// RESOURCE_EXHAUSTED with the wait until the next token.
#[derive(Debug)]
struct Bucket {
    per_second: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    fn new(budget: RateBudget, now: Instant) -> Option<Self> {
        if budget.per_second <= 0.0 || budget.per_second.is_nan() {
            return None;
        }
        let burst = if budget.burst == 0 {
            budget.per_second.ceil().max(1.0)
        } else {
            f64::from(budget.burst)
        };
        Some(Self {
            per_second: budget.per_second,
            burst,
            state: Mutex::new((burst, now)),
        })
    }

    /// True when the bucket has refilled to its burst by `now`.
    fn is_full(&self, now: Instant) -> bool {
        let (tokens, since) = *self.state.lock().unwrap_or_else(PoisonError::into_inner);
        tokens + now.saturating_duration_since(since).as_secs_f64() * self.per_second >= self.burst
    }

    /// Takes a token at `now`, or says how long until one is there.
    fn take(&self, now: Instant) -> Result<(), Duration> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (tokens, since) = *state;
        let elapsed = now.saturating_duration_since(since).as_secs_f64();
        let tokens = (tokens + elapsed * self.per_second).min(self.burst);
        if tokens >= 1.0 {
            *state = (tokens - 1.0, now);
            Ok(())
        } else {
            *state = (tokens, now);
            Err(Duration::from_secs_f64((1.0 - tokens) / self.per_second))
        }
    }
}

/// Most per-subject buckets kept; past it the full (idle) ones are dropped.
const MAX_SUBJECT_BUCKETS: usize = 10_000;

/// The configured keys and, when an issuer is configured, its JWT verifier.
#[derive(Debug, Default)]
pub struct ApiKeys {
    keys: Vec<Key>,
    oidc: Option<JwtVerifier>,
    /// A token's role when its claim names none.
    default_role: Option<Role>,
    /// The budgets of token subjects, by their scope.
    rate_limits: RateLimitSettings,
    /// Each token subject's bucket, made on its first call.
    subjects: Mutex<HashMap<String, Arc<Bucket>>>,
    /// The teams managers write for.
    teams: Teams,
    /// Whether calls' writes are audited (`audit.enabled`).
    audited: bool,
}

/// `sha256:<hex>` of a key, the form the configuration holds.
pub fn hash_key(key: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes())))
}

/// A new random key (two v4 UUIDs from the OS generator: 244 random bits) and
/// its configuration hash.
pub fn generate_key() -> (String, String) {
    let key = format!(
        "bt_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let hash = hash_key(&key);
    (key, hash)
}

impl ApiKeys {
    /// Parses the configured keys; a malformed entry is a startup error.
    pub fn from_settings(settings: &AuthSettings) -> anyhow::Result<Self> {
        let teams = Teams::new(&settings.teams)?;
        let mut keys: Vec<Key> = Vec::with_capacity(settings.keys.len());
        for entry in &settings.keys {
            if keys.iter().any(|k| k.principal.name == entry.name) {
                anyhow::bail!("auth key {:?} is configured twice", entry.name);
            }
            let expires_at = entry
                .expires_at
                .as_deref()
                .map(|text| {
                    DateTime::parse_from_rfc3339(text)
                        .map(|t| t.with_timezone(&Utc))
                        .map_err(|e| {
                            anyhow::anyhow!(
                                "auth key {:?}: expires_at {text:?} is not an RFC 3339 instant ({e})",
                                entry.name
                            )
                        })
                })
                .transpose()?;
            let hex_part = entry.hash.strip_prefix("sha256:").ok_or_else(|| {
                anyhow::anyhow!("auth key {:?}: hash must start with sha256:", entry.name)
            })?;
            let bytes = hex::decode(hex_part)
                .map_err(|_| anyhow::anyhow!("auth key {:?}: hash is not hex", entry.name))?;
            let hash: [u8; 32] = bytes.try_into().map_err(|_| {
                anyhow::anyhow!("auth key {:?}: hash must be 64 hex digits", entry.name)
            })?;
            let mut scope = None;
            for s in &entry.scopes {
                let parsed = Scope::parse(s).ok_or_else(|| {
                    anyhow::anyhow!("auth key {:?}: unknown scope {s:?}", entry.name)
                })?;
                scope = scope.max(Some(parsed));
            }
            let role = entry
                .role
                .as_deref()
                .map(|r| {
                    Role::parse(r).ok_or_else(|| {
                        anyhow::anyhow!(
                            "auth key {:?}: unknown role {r:?} (viewer, csm, manager, admin)",
                            entry.name
                        )
                    })
                })
                .transpose()?;
            let (scope, role, rules) = match (scope, role) {
                (Some(_), Some(_)) => {
                    anyhow::bail!("auth key {:?}: give scopes or a role, not both", entry.name)
                }
                (Some(scope), None) => (scope, Role::of_scope(scope), None),
                (None, Some(role)) => (role.scope(), role, Some(role)),
                (None, None) => anyhow::bail!("auth key {:?}: no scopes and no role", entry.name),
            };
            let budget = entry.rate_limit.unwrap_or(match scope {
                Scope::Read => settings.rate_limits.read,
                Scope::Write => settings.rate_limits.write,
                Scope::Admin => settings.rate_limits.admin,
            });
            keys.push(Key {
                hash,
                principal: Principal {
                    name: entry.name.clone(),
                    scope,
                    kind: PrincipalKind::Key,
                    subject: entry.name.clone(),
                    email: None,
                    roles: vec![role],
                    rules,
                    book: match rules {
                        Some(role) => teams.book(role, vec![entry.name.to_lowercase()], &[]),
                        None => Vec::new(),
                    },
                },
                expires_at,
                bucket: Bucket::new(budget, Instant::now()),
            });
        }
        let default_role = Some(settings.oidc.default_role.as_str())
            .filter(|r| !r.is_empty())
            .map(|r| {
                Role::parse(r).ok_or_else(|| {
                    anyhow::anyhow!(
                        "auth.oidc.default_role {r:?} is not viewer, csm, manager or admin"
                    )
                })
            })
            .transpose()?;
        Ok(Self {
            keys,
            oidc: JwtVerifier::from_settings(&settings.oidc)?,
            default_role,
            rate_limits: settings.rate_limits.clone(),
            subjects: Mutex::default(),
            teams,
            audited: true,
        })
    }

    /// These keys, auditing the writes of the calls they admit or not
    /// (`audit.enabled`; on unless turned off here).
    pub fn audited(mut self, enabled: bool) -> Self {
        self.audited = enabled;
        self
    }

    /// The JWT verifier, when an issuer is configured.
    pub fn oidc(&self) -> Option<&JwtVerifier> {
        self.oidc.as_ref()
    }

    /// The principal of a bearer JWT: `None` when `token` is not shaped like
    /// one or no issuer is configured (it is then looked up as a key),
    /// UNAUTHENTICATED when it does not verify, PERMISSION_DENIED when it
    /// carries no role.
    async fn jwt_principal(&self, token: &str) -> Option<Result<Principal, Status>> {
        let verifier = self.oidc.as_ref()?;
        if !crate::oidc::looks_like_jwt(token) {
            return None;
        }
        let identity = match verifier.verify(token).await {
            Ok(identity) => identity,
            Err(status) => return Some(Err(status)),
        };
        let mut roles: Vec<Role> = identity
            .roles
            .iter()
            .filter_map(|r| Role::parse(r))
            .collect();
        if roles.is_empty() {
            roles.extend(self.default_role);
        }
        roles.sort();
        roles.dedup();
        let Some(scope) = roles.iter().map(|r| r.scope()).max() else {
            return Some(Err(Status::permission_denied(format!(
                "the token of {:?} carries no Bowtie role (viewer, csm, manager, admin)",
                identity.subject
            ))));
        };
        let rules = roles.last().copied();
        let mut identities = vec![identity.subject.to_lowercase()];
        identities.extend(identity.email.as_deref().map(str::to_lowercase));
        let book = match rules {
            Some(role) => self.teams.book(role, identities, &identity.teams),
            None => Vec::new(),
        };
        Some(Ok(Principal {
            name: identity.subject.clone(),
            scope,
            kind: PrincipalKind::Jwt,
            subject: identity.subject,
            email: identity.email,
            roles,
            rules,
            book,
        }))
    }

    /// The bucket of a token subject with `scope`, made on its first call;
    /// `None` when that scope has no budget.
    fn subject_bucket(&self, subject: &str, scope: Scope) -> Option<Arc<Bucket>> {
        let budget = match scope {
            Scope::Read => self.rate_limits.read,
            Scope::Write => self.rate_limits.write,
            Scope::Admin => self.rate_limits.admin,
        };
        if budget.per_second <= 0.0 || budget.per_second.is_nan() {
            return None;
        }
        let now = Instant::now();
        let mut subjects = self.subjects.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(bucket) = subjects.get(subject) {
            return Some(bucket.clone());
        }
        if subjects.len() >= MAX_SUBJECT_BUCKETS {
            // A full bucket is one whose subject has been idle long enough:
            // forgetting it changes nothing for that subject.
            subjects.retain(|_, b| !b.is_full(now));
        }
        let bucket = Arc::new(Bucket::new(budget, now)?);
        subjects.insert(subject.to_owned(), bucket.clone());
        Some(bucket)
    }

    /// Takes one call from a token subject's budget.
    fn admit_subject(&self, principal: &Principal, now: Instant) -> Result<(), Status> {
        let Some(bucket) = self.subject_bucket(&principal.subject, principal.scope) else {
            return Ok(());
        };
        bucket.take(now).map_err(|wait| {
            over_budget(
                format!(
                    "token subject {:?} (scope {})",
                    principal.subject,
                    principal.scope.as_str()
                ),
                bucket.per_second,
                wait,
            )
        })
    }

    /// The key presented, comparing against every key in constant time:
    /// `None` for an unknown key, UNAUTHENTICATED naming the key for one that
    /// expired by `now`.
    fn find(&self, presented: &str, now: DateTime<Utc>) -> Result<Option<&Key>, Status> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for key in &self.keys {
            if bool::from(key.hash.ct_eq(&digest)) {
                found = Some(key);
            }
        }
        match found {
            Some(Key {
                principal,
                expires_at: Some(end),
                ..
            }) if now >= *end => Err(Status::unauthenticated(format!(
                "API key {:?} expired at {}",
                principal.name,
                end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ))),
            found => Ok(found),
        }
    }

    /// For a front door that passes the caller's key on (the gateway): takes
    /// one call from the budget of the key `authorization` carries. A request
    /// without a known, unexpired key passes; the services refuse it.
    ///
    /// A bearer JWT is verified here too (UNAUTHENTICATED when it does not
    /// verify), so its budget is its verified subject's.
    pub async fn throttle(&self, authorization: Option<&str>) -> Result<(), Status> {
        let Some(token) = bearer(authorization) else {
            return Ok(());
        };
        if let Some(principal) = self.jwt_principal(token).await {
            return match principal {
                Ok(principal) => self.admit_subject(&principal, Instant::now()),
                // A token without a role is the services' to refuse.
                Err(status) if status.code() == tonic::Code::PermissionDenied => Ok(()),
                Err(status) => Err(status),
            };
        }
        // Without any budget there is nothing to take: skip hashing the key.
        if self.keys.iter().all(|k| k.bucket.is_none()) {
            return Ok(());
        }
        match self.find(token, Utc::now()) {
            Ok(Some(key)) => Self::admit(key, Instant::now()),
            _ => Ok(()),
        }
    }

    /// Takes one call from the key's budget at `now`: RESOURCE_EXHAUSTED
    /// naming the key and its scope, with `retry-after` (whole seconds,
    /// rounded up) in the metadata, when it has none left.
    fn admit(key: &Key, now: Instant) -> Result<(), Status> {
        let Some(bucket) = &key.bucket else {
            return Ok(());
        };
        bucket.take(now).map_err(|wait| {
            over_budget(
                format!(
                    "API key {:?} (scope {})",
                    key.principal.name,
                    key.principal.scope.as_str()
                ),
                bucket.per_second,
                wait,
            )
        })
    }

    /// Decides one request: `Ok(None)` for an open method, the principal when
    /// allowed, else the status to answer with.
    ///
    /// The credential is a bearer JWT of the configured issuer when it is
    /// shaped like one, else an API key.
    pub async fn authorize(
        &self,
        path: &str,
        authorization: Option<&str>,
        admin_methods: &[&str],
    ) -> Result<Option<Principal>, Status> {
        let Some(needed) = required_scope(path, admin_methods) else {
            return Ok(None);
        };
        let token = bearer(authorization).ok_or_else(|| {
            Status::unauthenticated(
                "missing credentials: send `authorization: Bearer <API key or token>`",
            )
        })?;
        if let Some(principal) = self.jwt_principal(token).await {
            let principal = principal?;
            if principal.scope < needed {
                return Err(Status::permission_denied(format!(
                    "{:?} has the roles {}; this call needs the {} scope",
                    principal.subject,
                    principal
                        .roles
                        .iter()
                        .map(|r| r.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    needed.as_str()
                )));
            }
            self.admit_subject(&principal, Instant::now())?;
            return Ok(Some(principal));
        }
        let key = self
            .find(token, Utc::now())?
            .ok_or_else(|| Status::unauthenticated("unknown API key"))?;
        let principal = &key.principal;
        if principal.scope < needed {
            return Err(Status::permission_denied(format!(
                "API key {:?} has scope {}; this call needs {}",
                principal.name,
                principal.scope.as_str(),
                needed.as_str()
            )));
        }
        Self::admit(key, Instant::now())?;
        Ok(Some(principal.clone()))
    }
}

/// RESOURCE_EXHAUSTED for `who`, over its `per_second` budget, with
/// `retry-after` (whole seconds, rounded up) in the metadata.
fn over_budget(who: String, per_second: f64, wait: Duration) -> Status {
    let seconds = wait.as_secs_f64().ceil().max(1.0);
    let mut status = Status::resource_exhausted(format!(
        "{who} is over its rate limit of {per_second} calls/s; retry after {seconds} s"
    ));
    if let Ok(value) = format!("{seconds}").parse() {
        status.metadata_mut().insert(RETRY_AFTER, value);
    }
    status
}

/// The token of an `authorization: Bearer <token>` header.
fn bearer(authorization: Option<&str>) -> Option<&str> {
    authorization
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The scope a gRPC method path needs, or `None` for open ones (health,
/// reflection). Get/List/Watch/Export need read, `admin_methods` need admin,
/// every other call writes.
pub fn required_scope(path: &str, admin_methods: &[&str]) -> Option<Scope> {
    if path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.") {
        return None;
    }
    let method = path.rsplit('/').next().unwrap_or_default();
    // Every service's audit log is for admins.
    if method == "ListAuditEvents" || admin_methods.contains(&method) {
        Some(Scope::Admin)
    } else if ["Get", "List", "Watch", "Export"]
        .iter()
        .any(|p| method.starts_with(p))
    {
        Some(Scope::Read)
    } else {
        Some(Scope::Write)
    }
}

/// Tower layer that authenticates and authorizes every gRPC call.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    keys: Arc<ApiKeys>,
    admin_methods: &'static [&'static str],
}

impl AuthLayer {
    /// Checks calls against `keys`; `admin_methods` are method names that need admin.
    pub fn new(keys: Arc<ApiKeys>, admin_methods: &'static [&'static str]) -> Self {
        Self {
            keys,
            admin_methods,
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service produced by [`AuthLayer`].
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    layer: AuthLayer,
}

impl<S, B> Service<http::Request<B>> for AuthService<S>
where
    S: Service<
            http::Request<crate::audit::HashingBody<B>>,
            Response = http::Response<tonic::body::Body>,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The service that was polled ready serves this call; its clone
        // takes its place for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let keys = self.layer.keys.clone();
        let admin_methods = self.layer.admin_methods;
        Box::pin(async move {
            let authorization = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            match keys
                .authorize(request.uri().path(), authorization, admin_methods)
                .await
            {
                Ok(principal) => {
                    // Every call's writes are audited under its principal,
                    // and follow its ownership rules (`crate::access`).
                    let (parts, body) = request.into_parts();
                    let (context, body) =
                        AuditContext::open(principal.clone(), parts.uri.path(), body, keys.audited);
                    let mut request = http::Request::from_parts(parts, body);
                    if let Some(principal) = principal {
                        request.extensions_mut().insert(principal);
                    }
                    context.scope(inner.call(request)).await
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ApiKeySettings;

    fn keys() -> anyhow::Result<ApiKeys> {
        ApiKeys::from_settings(&AuthSettings {
            rate_limits: Default::default(),
            oidc: Default::default(),
            teams: Vec::new(),
            keys: vec![
                ApiKeySettings {
                    name: "dashboard".into(),
                    hash: hash_key("reader-secret"),
                    scopes: vec!["read".into()],
                    expires_at: None,
                    rate_limit: None,
                    role: None,
                },
                ApiKeySettings {
                    name: "crm".into(),
                    hash: hash_key("writer-secret"),
                    scopes: vec!["read".into(), "write".into()],
                    expires_at: None,
                    rate_limit: None,
                    role: None,
                },
            ],
        })
    }

    #[test]
    fn read_calls_need_read_writes_need_write_and_health_is_open() {
        let path = |m: &str| format!("/bowtie.accounts.v1.AccountsService/{m}");
        assert_eq!(required_scope(&path("GetAccount"), &[]), Some(Scope::Read));
        assert_eq!(
            required_scope(&path("ListAccounts"), &[]),
            Some(Scope::Read)
        );
        assert_eq!(required_scope(&path("WatchEvents"), &[]), Some(Scope::Read));
        assert_eq!(
            required_scope(&path("ExportMovements"), &[]),
            Some(Scope::Read)
        );
        assert_eq!(
            required_scope(&path("CreateAccount"), &[]),
            Some(Scope::Write)
        );
        assert_eq!(
            required_scope(&path("UpdateScorecard"), &["UpdateScorecard"]),
            Some(Scope::Admin)
        );
        assert_eq!(required_scope("/grpc.health.v1.Health/Check", &[]), None);
    }

    #[test]
    fn a_read_key_cannot_write_and_a_wrong_key_is_unauthenticated() -> anyhow::Result<()> {
        let keys = keys()?;
        let create = "/bowtie.accounts.v1.AccountsService/CreateAccount";
        let denied =
            futures::executor::block_on(keys.authorize(create, Some("Bearer reader-secret"), &[]));
        assert_eq!(
            denied.err().map(|s| s.code()),
            Some(tonic::Code::PermissionDenied)
        );
        let wrong = futures::executor::block_on(keys.authorize(create, Some("Bearer nope"), &[]));
        assert_eq!(
            wrong.err().map(|s| s.code()),
            Some(tonic::Code::Unauthenticated)
        );
        let missing = futures::executor::block_on(keys.authorize(create, None, &[]));
        assert_eq!(
            missing.err().map(|s| s.code()),
            Some(tonic::Code::Unauthenticated)
        );
        let allowed =
            futures::executor::block_on(keys.authorize(create, Some("Bearer writer-secret"), &[]));
        assert_eq!(allowed.ok().flatten().map(|p| p.name), Some("crm".into()));
        Ok(())
    }

    #[test]
    fn malformed_key_hashes_are_a_startup_error() {
        let settings = AuthSettings {
            rate_limits: Default::default(),
            oidc: Default::default(),
            teams: Vec::new(),
            keys: vec![ApiKeySettings {
                name: "x".into(),
                hash: "md5:abc".into(),
                scopes: vec!["read".into()],
                expires_at: None,
                rate_limit: None,
                role: None,
            }],
        };
        assert!(ApiKeys::from_settings(&settings).is_err());
    }

    fn key_expiring_at(name: &str, expires_at: Option<&str>) -> ApiKeySettings {
        ApiKeySettings {
            name: name.into(),
            hash: hash_key(&format!("{name}-secret")),
            scopes: vec!["write".into()],
            expires_at: expires_at.map(str::to_owned),
            rate_limit: None,
            role: None,
        }
    }

    #[test]
    fn a_key_is_refused_from_its_expiry_instant_on_naming_it() -> anyhow::Result<()> {
        let keys = ApiKeys::from_settings(&AuthSettings {
            rate_limits: Default::default(),
            oidc: Default::default(),
            teams: Vec::new(),
            keys: vec![key_expiring_at("import", Some("2027-01-01T00:00:00Z"))],
        })?;
        let at = |t: &str| -> anyhow::Result<DateTime<Utc>> {
            Ok(DateTime::parse_from_rfc3339(t)?.with_timezone(&Utc))
        };
        let before = keys.find("import-secret", at("2026-12-31T23:59:59Z")?);
        assert_eq!(
            before.ok().flatten().map(|k| k.principal.name.clone()),
            Some("import".into())
        );
        let expired = keys
            .find("import-secret", at("2027-01-01T00:00:00Z")?)
            .err()
            .map(|s| (s.code(), s.message().to_owned()));
        assert_eq!(
            expired,
            Some((
                tonic::Code::Unauthenticated,
                "API key \"import\" expired at 2027-01-01T00:00:00Z".into()
            ))
        );
        Ok(())
    }

    #[test]
    fn a_malformed_expiry_or_a_name_given_twice_is_a_startup_error() {
        let malformed = ApiKeys::from_settings(&AuthSettings {
            rate_limits: Default::default(),
            oidc: Default::default(),
            teams: Vec::new(),
            keys: vec![key_expiring_at("import", Some("next year"))],
        });
        assert!(
            malformed
                .err()
                .is_some_and(|e| e.to_string().contains("expires_at \"next year\""))
        );
        let twice = ApiKeys::from_settings(&AuthSettings {
            rate_limits: Default::default(),
            oidc: Default::default(),
            teams: Vec::new(),
            keys: vec![key_expiring_at("crm", None), key_expiring_at("crm", None)],
        });
        assert!(
            twice
                .err()
                .is_some_and(|e| e.to_string().contains("configured twice"))
        );
    }

    #[test]
    fn a_bucket_gives_its_burst_at_once_then_refills_at_its_rate() {
        let start = Instant::now();
        let budget = RateBudget {
            per_second: 2.0,
            burst: 3,
        };
        let bucket = Bucket::new(budget, start);
        let Some(bucket) = bucket else {
            panic!("a positive rate makes a bucket");
        };
        for _ in 0..3 {
            assert_eq!(bucket.take(start), Ok(()));
        }
        // Empty: the next token comes after 1 / 2 s.
        assert_eq!(bucket.take(start), Err(Duration::from_millis(500)));
        // 250 ms later half a token is there: 250 ms more to wait.
        let later = start + Duration::from_millis(250);
        assert_eq!(bucket.take(later), Err(Duration::from_millis(250)));
        assert_eq!(bucket.take(start + Duration::from_millis(500)), Ok(()));
        // A long pause fills it up to the burst, no further.
        let rested = start + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(bucket.take(rested), Ok(()));
        }
        assert!(bucket.take(rested).is_err());
    }

    #[test]
    fn no_rate_means_no_bucket_and_no_burst_means_one_seconds_worth() {
        let now = Instant::now();
        assert!(Bucket::new(RateBudget::default(), now).is_none());
        let bucket = Bucket::new(
            RateBudget {
                per_second: 2.5,
                burst: 0,
            },
            now,
        );
        assert_eq!(bucket.map(|b| b.burst), Some(3.0));
    }

    #[test]
    fn a_key_over_its_scopes_budget_is_resource_exhausted_while_another_key_passes()
    -> anyhow::Result<()> {
        let mut settings = AuthSettings {
            rate_limits: Default::default(),
            oidc: Default::default(),
            teams: Vec::new(),
            keys: vec![
                key_expiring_at("script", None),
                ApiKeySettings {
                    rate_limit: Some(RateBudget::default()),
                    ..key_expiring_at("peer", None)
                },
                key_expiring_at("crm", None),
            ],
        };
        settings.rate_limits.write = RateBudget {
            per_second: 0.5,
            burst: 2,
        };
        let keys = ApiKeys::from_settings(&settings)?;
        let create = "/bowtie.accounts.v1.AccountsService/CreateAccount";
        let call = |key: &str| {
            futures::executor::block_on(keys.authorize(create, Some(&format!("Bearer {key}")), &[]))
        };
        assert!(call("script-secret").is_ok());
        assert!(call("script-secret").is_ok());
        let refused = call("script-secret").err();
        assert_eq!(
            refused.as_ref().map(|s| s.code()),
            Some(tonic::Code::ResourceExhausted)
        );
        assert_eq!(
            refused
                .as_ref()
                .and_then(|s| s.metadata().get(RETRY_AFTER))
                .and_then(|v| v.to_str().ok()),
            Some("2")
        );
        assert!(
            refused
                .map(|s| s.message().to_owned())
                .unwrap_or_default()
                .starts_with("API key \"script\" (scope write) is over its rate limit")
        );
        // The other write key has its own bucket; the peer key has none.
        assert!(call("crm-secret").is_ok());
        for _ in 0..10 {
            assert!(call("peer-secret").is_ok());
        }
        Ok(())
    }

    #[test]
    fn viewers_read_csms_and_managers_write_and_admins_administer() {
        let scopes: Vec<(&str, Scope)> = [Role::Viewer, Role::Csm, Role::Manager, Role::Admin]
            .into_iter()
            .map(|r| (r.as_str(), r.scope()))
            .collect();
        assert_eq!(
            scopes,
            vec![
                ("viewer", Scope::Read),
                ("csm", Scope::Write),
                ("manager", Scope::Write),
                ("admin", Scope::Admin),
            ]
        );
        assert_eq!(Role::parse("owner"), None);
    }

    #[test]
    fn a_key_has_the_role_it_is_given_or_the_one_of_its_highest_scope() -> anyhow::Result<()> {
        let keys = ApiKeys::from_settings(&AuthSettings {
            rate_limits: Default::default(),
            oidc: Default::default(),
            teams: Vec::new(),
            keys: vec![
                ApiKeySettings {
                    scopes: Vec::new(),
                    role: Some("csm".into()),
                    ..key_expiring_at("support", None)
                },
                key_expiring_at("crm", None),
            ],
        })?;
        let create = "/bowtie.accounts.v1.AccountsService/CreateAccount";
        let principal = |key: &str| {
            futures::executor::block_on(keys.authorize(create, Some(key), &[]))
                .ok()
                .flatten()
                .map(|p| (p.kind, p.subject, p.scope, p.roles))
        };
        assert_eq!(
            principal("Bearer support-secret"),
            Some((
                PrincipalKind::Key,
                "support".into(),
                Scope::Write,
                vec![Role::Csm]
            ))
        );
        assert_eq!(
            principal("Bearer crm-secret"),
            Some((
                PrincipalKind::Key,
                "crm".into(),
                Scope::Write,
                vec![Role::Manager]
            ))
        );
        Ok(())
    }

    #[test]
    fn a_key_with_both_scopes_and_a_role_or_an_unknown_role_is_a_startup_error() {
        let error = |key: ApiKeySettings| {
            ApiKeys::from_settings(&AuthSettings {
                rate_limits: Default::default(),
                oidc: Default::default(),
                teams: Vec::new(),
                keys: vec![key],
            })
            .err()
            .map(|e| e.to_string())
        };
        assert_eq!(
            error(ApiKeySettings {
                role: Some("admin".into()),
                ..key_expiring_at("crm", None)
            }),
            Some("auth key \"crm\": give scopes or a role, not both".into())
        );
        assert_eq!(
            error(ApiKeySettings {
                scopes: Vec::new(),
                role: Some("owner".into()),
                ..key_expiring_at("crm", None)
            }),
            Some("auth key \"crm\": unknown role \"owner\" (viewer, csm, manager, admin)".into())
        );
    }

    #[test]
    fn each_token_subject_has_its_own_bucket_by_its_scope() -> anyhow::Result<()> {
        let mut settings = AuthSettings {
            rate_limits: Default::default(),
            oidc: Default::default(),
            teams: Vec::new(),
            keys: Vec::new(),
        };
        settings.rate_limits.write = RateBudget {
            per_second: 1.0,
            burst: 2,
        };
        let keys = ApiKeys::from_settings(&settings)?;
        let person = |subject: &str, role: Role| Principal {
            name: subject.into(),
            scope: role.scope(),
            kind: PrincipalKind::Jwt,
            subject: subject.into(),
            email: None,
            roles: vec![role],
            rules: Some(role),
            book: vec![subject.into()],
        };
        let now = Instant::now();
        let ada = person("ada", Role::Csm);
        assert!(keys.admit_subject(&ada, now).is_ok());
        assert!(keys.admit_subject(&ada, now).is_ok());
        let refused = keys.admit_subject(&ada, now).err();
        assert_eq!(
            refused.as_ref().map(|s| s.message().to_owned()),
            Some(
                "token subject \"ada\" (scope write) is over its rate limit of 1 calls/s; retry after 1 s"
                    .into()
            )
        );
        // Another person still passes; a viewer's scope has no budget.
        assert!(
            keys.admit_subject(&person("grace", Role::Manager), now)
                .is_ok()
        );
        for _ in 0..5 {
            assert!(
                keys.admit_subject(&person("lin", Role::Viewer), now)
                    .is_ok()
            );
        }
        // A second later Ada has one call again.
        assert!(
            keys.admit_subject(&ada, now + Duration::from_secs(1))
                .is_ok()
        );
        Ok(())
    }

    #[test]
    fn generated_keys_match_their_hash_and_differ_each_time() {
        let (key, hash) = generate_key();
        assert_eq!(hash_key(&key), hash);
        assert_ne!(generate_key().0, key);
    }
}
