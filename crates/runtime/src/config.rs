//! Layered configuration: built-in defaults < `bowtie.toml` < environment.
//!
//! Every service and the `bowtie` binary load settings through [`Settings::load`];
//! tests start from [`Settings::defaults`] and change fields directly rather than
//! setting process-wide environment variables.

use std::net::SocketAddr;
use std::path::Path;

use config::{Config, Environment, File, FileFormat, Map};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The built-in defaults, documented in place.
pub const DEFAULTS_TOML: &str = include_str!("defaults.toml");

/// Every setting of the suite.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// Logging and OpenTelemetry export.
    pub telemetry: TelemetrySettings,
    /// gRPC server behaviour shared by all services.
    pub server: ServerSettings,
    /// API keys.
    pub auth: AuthSettings,
    /// The accounts service.
    pub accounts: ServiceSettings,
    /// The funnel service.
    pub funnel: ServiceSettings,
    /// The revenue service.
    pub revenue: ServiceSettings,
    /// The scoring service.
    pub scoring: ServiceSettings,
    /// The success service.
    pub success: ServiceSettings,
    /// The HTTP/JSON gateway and dashboard.
    pub gateway: GatewaySettings,
    /// How services reach each other.
    pub peers: PeerSettings,
    /// Revenue reporting policy.
    pub revenue_policy: RevenuePolicySettings,
    /// Health scoring, churn model, alerts and value segment policy.
    pub scoring_policy: ScoringPolicySettings,
    /// Playbook effectiveness policy.
    pub success_policy: SuccessPolicySettings,
    /// How the success service notifies people of CTAs.
    pub success_notify: SuccessNotifySettings,
    /// Stripe webhooks and Segment-spec tracking on the gateway.
    pub connectors: ConnectorSettings,
    /// How long idempotency keys answer a replay.
    pub idempotency: IdempotencySettings,
    /// How long each service's outbox keeps its events.
    pub feed: FeedSettings,
    /// The background pruning of expired rows.
    pub pruning: PruningSettings,
    /// The audit log of writes.
    pub audit: AuditSettings,
}

/// The audit log (docs/design.md, "Audit log").
#[derive(Debug, Clone, Deserialize)]
pub struct AuditSettings {
    /// Whether each write made by a call adds an audit row. On by default;
    /// off only where another system keeps the trail (and for benchmarks
    /// that measure what the log costs).
    pub enabled: bool,
}

/// Idempotency keys (docs/operations.md, "Retention").
#[derive(Debug, Clone, Deserialize)]
pub struct IdempotencySettings {
    /// Days a key answers a replay with its first response; after that a
    /// request with the key is treated as new and the key is pruned.
    /// Fractions are allowed; 0 keeps keys for ever.
    pub retention_days: f64,
}

/// The outbox behind every service's change feed.
#[derive(Debug, Clone, Deserialize)]
pub struct FeedSettings {
    /// Days an event is kept at least; it is pruned after that once every
    /// registered consumer has passed it. Fractions are allowed; 0 keeps
    /// events for ever.
    pub retention_days: f64,
}

/// How expired rows are pruned: in the background, in small batches, each
/// in its own short transaction.
#[derive(Debug, Clone, Deserialize)]
pub struct PruningSettings {
    /// Most rows one batch deletes.
    pub batch_size: u64,
    /// Milliseconds between two pruning passes.
    pub interval_ms: u64,
}

/// How the success service judges playbooks (docs/design.md section 6.3).
#[derive(Debug, Clone, Deserialize)]
pub struct SuccessPolicySettings {
    /// Days after a trigger that its outcome is judged.
    pub horizon_days: i32,
    /// Seed of the holdout draw.
    pub holdout_seed: String,
    /// Churn risk (basis points) from which the book of business counts an
    /// account as high risk.
    pub high_risk_bp: i32,
    /// Seconds between two runs of the sweep that fires the time-based
    /// triggers (RENEWAL_DUE, ONBOARDING_STALLED, COMPLAINT_UNRESOLVED).
    pub sweep_interval_seconds: u64,
}

/// Email (SMTP) and chat-webhook notifications of CTAs: both off until
/// configured; delivered from the outbox with retries.
#[derive(Debug, Clone, Deserialize)]
pub struct SuccessNotifySettings {
    /// The SMTP server; empty: no email.
    pub smtp_host: String,
    /// Its port.
    pub smtp_port: u16,
    /// `none`, `starttls` or `tls`.
    pub smtp_security: String,
    /// The SMTP user name; empty: no authentication.
    pub smtp_username: String,
    /// Its password. Secret.
    pub smtp_password: SecretString,
    /// The sender address.
    pub from: String,
    /// A Slack-compatible incoming-webhook URL; empty: no chat. Secret (the URL is the credential).
    pub chat_webhook_url: SecretString,
    /// The dashboard the messages link to.
    pub dashboard_url: String,
    /// The first retry's delay; it doubles up to `max_backoff_ms`.
    pub retry_backoff_ms: u64,
    /// The longest delay between retries.
    pub max_backoff_ms: u64,
    /// How long one delivery attempt may take.
    pub timeout_ms: u64,
    /// How often the service looks for playbook steps that came due and
    /// daily digests whose hour has come.
    pub schedule_interval_ms: u64,
}

/// The gateway's connectors (docs/connectors.md). Both are off until their
/// secret is configured; they write with `gateway.webhook_api_key`.
#[derive(Debug, Clone, Deserialize)]
pub struct ConnectorSettings {
    /// `POST /webhooks/stripe`.
    pub stripe: StripeSettings,
    /// `POST /v1/identify`, `/v1/group`, `/v1/track`, `/v1/batch`.
    pub segment: SegmentSettings,
}

/// How Stripe events become accounts, subscriptions and invoices.
#[derive(Debug, Clone, Deserialize)]
pub struct StripeSettings {
    /// The endpoint's signing secret (`whsec_...`); empty disables the
    /// webhook unless `webhook_secret_env` names a set variable. Secret.
    pub webhook_secret: SecretString,
    /// Name of an environment variable holding the signing secret; when it
    /// is set and not empty it wins over `webhook_secret`.
    pub webhook_secret_env: String,
    /// Largest accepted distance between the signature's `t=` and now.
    pub tolerance_seconds: u64,
    /// How long the first verified delivery of a batch waits for others
    /// before the batch is applied (milliseconds).
    pub batch_window_ms: u64,
    /// Most deliveries applied together; 1 applies each on its own.
    pub batch_max_events: usize,
    /// Customer metadata key holding the segment (SMB, MID_MARKET, ENTERPRISE).
    pub segment_metadata_key: String,
    /// Which coupons reduce MRR: `forever` (only `forever` coupons) or `all`
    /// (`once` and `repeating` too, while attached).
    pub discounts: String,
    /// `cancellation_details.feedback` -> churn reason code (of
    /// `revenue_policy.churn_reasons`); unmapped feedback is `other`.
    pub feedback_reasons: std::collections::BTreeMap<String, String>,
    /// Customer metadata key -> declared account attribute: the value,
    /// converted to the declared type, is set on the account.
    pub attributes: std::collections::BTreeMap<String, String>,
}

impl StripeSettings {
    /// The signing secret in force: the named variable's value, else `webhook_secret`.
    pub fn secret(&self) -> SecretString {
        from_env_or(&self.webhook_secret_env, &self.webhook_secret)
    }
}

/// How Segment-spec calls become accounts, contacts and signals.
#[derive(Debug, Clone, Deserialize)]
pub struct SegmentSettings {
    /// The write key sources present; empty disables the endpoints unless
    /// `write_key_env` names a set variable. Secret.
    pub write_key: SecretString,
    /// Name of an environment variable holding the write key; it wins when set.
    pub write_key_env: String,
    /// `track` event name -> scoring signal type; an unmapped event is counted, not stored.
    pub events: Vec<SegmentEventSignal>,
    /// `group` trait -> declared account attribute: the value, converted
    /// to the declared type, is set on the account.
    pub attributes: std::collections::BTreeMap<String, String>,
}

impl SegmentSettings {
    /// The write key in force: the named variable's value, else `write_key`.
    pub fn key(&self) -> SecretString {
        from_env_or(&self.write_key_env, &self.write_key)
    }
}

/// One `track` event name and the signal it becomes.
#[derive(Debug, Clone, Deserialize)]
pub struct SegmentEventSignal {
    /// The event name exactly as tracked, e.g. `Signed In`.
    pub event: String,
    /// A scoring signal type, e.g. `LOGIN`, `FEATURE_USED`, `TICKET_OPENED`.
    pub signal: String,
}

/// The value of the environment variable `name` when it is named and set,
/// else `fallback`: secrets a deployment keeps out of `bowtie.toml`.
fn from_env_or(name: &str, fallback: &SecretString) -> SecretString {
    if !name.is_empty()
        && let Ok(value) = std::env::var(name)
        && !value.is_empty()
    {
        return SecretString::from(value);
    }
    fallback.clone()
}

/// What the scoring service accepts and decides: signal time tolerance, the
/// recompute schedule (time decay), alert triggers, the churn model, value
/// tier and quadrant thresholds and the alert webhook.
#[derive(Debug, Clone, Deserialize)]
pub struct ScoringPolicySettings {
    /// Newest accepted signal time, seconds after now.
    pub future_tolerance_seconds: i64,
    /// Debounce of the recompute worker, in milliseconds.
    pub recompute_interval_ms: u64,
    /// Seconds between full recomputations and snapshots.
    pub sweep_interval_seconds: u64,
    /// Points dropped within 30 days that raise SCORE_DROP.
    pub alert_drop_points: i32,
    /// Churn probability (basis points) that raises HIGH_RISK and lists an account as at risk.
    pub risk_threshold_bp: i32,
    /// Churn horizon in days.
    pub churn_horizon_days: i32,
    /// Seed of the train / hold-out split.
    pub model_seed: u64,
    /// Hold-out share in percent (1..=90).
    pub holdout_percent: u32,
    /// Fewest labelled accounts to train on.
    pub min_training_examples: usize,
    /// DIAMOND: top percent of paying accounts by MRR.
    pub diamond_top_percent: u32,
    /// GOLD: the next percent.
    pub gold_next_percent: u32,
    /// POTENTIAL: expansion within this many days.
    pub potential_window_days: i64,
    /// PROBLEM: a late payment within this many days (or red health).
    pub problem_late_days: i64,
    /// High value: MRR at or above this percentile of paying accounts.
    pub value_percentile: u32,
    /// High loyalty: health at or above this score.
    pub loyalty_score: i32,
    /// Dormant: no usage within this many days.
    pub dormant_days: i64,
    /// Alert webhook URL (http:// or https://); empty disables delivery.
    pub webhook_url: String,
    /// PEM file of the CA an https:// webhook's certificate must chain to;
    /// empty trusts the public web PKI (Mozilla's roots, built in).
    #[serde(default)]
    pub webhook_ca: String,
    /// HMAC-SHA256 key of the webhook signature. Secret.
    pub webhook_secret: SecretString,
    /// Delivery attempts after the first one fails.
    pub webhook_retries: u32,
    /// First wait between attempts (doubles each time), in milliseconds.
    pub webhook_backoff_ms: u64,
    /// Deadline of one delivery attempt, in milliseconds.
    pub webhook_timeout_ms: u64,
}

/// Revenue reporting policy: the currency reports are in, the churn reason
/// taxonomy and the renewal likelihood used when scoring has none.
#[derive(Debug, Clone, Deserialize)]
pub struct RevenuePolicySettings {
    /// ISO-4217 code of the reporting currency, e.g. `USD`.
    pub reporting_currency: String,
    /// Accepted cancellation reason codes.
    pub churn_reasons: Vec<String>,
    /// Renewal likelihood in basis points (0..=10000) when no score exists.
    pub default_renewal_likelihood_bp: u32,
    /// Days an invoice may stay unpaid past its due date before its
    /// subscription churns involuntarily; 0 turns the policy off.
    pub past_due_churn_days: u32,
}

/// How a service reaches the others (their gRPC addresses and the key it
/// presents). `bowtie dev` points these at its own listeners.
#[derive(Debug, Clone, Deserialize)]
pub struct PeerSettings {
    /// The accounts service, e.g. `http://accounts:50051`.
    pub accounts: String,
    /// The funnel service.
    pub funnel: String,
    /// The revenue service.
    pub revenue: String,
    /// The scoring service.
    pub scoring: String,
    /// The success service.
    pub success: String,
    /// API key (read scope is enough) presented to peers. Secret.
    pub api_key: SecretString,
    /// Time allowed to connect to a peer.
    pub connect_timeout_ms: u64,
    /// Deadline of each unary call to a peer.
    pub request_timeout_ms: u64,
    /// Most events of a peer's feed a consumer applies in one transaction
    /// (1: each in its own).
    pub feed_batch: usize,
    /// TLS of calls to `https://` peers.
    #[serde(default)]
    pub tls: PeerTlsSettings,
}

/// How a service (or the gateway) calls `https://` peers; `http://` peers
/// ignore it. Paths of PEM files; empty means unset.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PeerTlsSettings {
    /// The CA that signs the services' certificates; required for `https://` peers.
    pub ca: String,
    /// Client certificate (chain) presented to peers that require one (mTLS).
    pub cert: String,
    /// The client certificate's private key.
    pub key: String,
}

/// Logging and tracing.
#[derive(Debug, Clone, Deserialize)]
pub struct TelemetrySettings {
    /// `EnvFilter` directives.
    pub log_filter: String,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// OTLP/gRPC endpoint; empty disables export.
    pub otlp_endpoint: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Server behaviour shared by all services.
#[derive(Debug, Clone, Deserialize)]
pub struct ServerSettings {
    /// Seconds of NOT_SERVING before the listener closes on shutdown.
    pub drain_seconds: u64,
    /// Largest accepted request message in bytes.
    pub max_message_bytes: usize,
    /// Upper bound of a unary call in milliseconds.
    pub request_timeout_ms: u64,
    /// TLS of the gRPC listener; plaintext when no certificate is set.
    #[serde(default)]
    pub tls: ServerTlsSettings,
}

/// TLS of a service's gRPC listener. Paths of PEM files; empty means unset.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ServerTlsSettings {
    /// Certificate (chain) of the service: set, the service serves TLS only.
    pub cert: String,
    /// Its private key.
    pub key: String,
    /// CA of the client certificates: set, every client must present a
    /// certificate signed by it (mutual TLS).
    pub client_ca: String,
}

/// API keys.
#[derive(Debug, Clone, Deserialize)]
pub struct AuthSettings {
    /// The accepted keys, hashed.
    pub keys: Vec<ApiKeySettings>,
    /// Each key's request budget by its scope, unless the key sets its own.
    #[serde(default)]
    pub rate_limits: RateLimitSettings,
    /// Bearer JWTs of an OpenID Connect issuer, beside the keys.
    #[serde(default)]
    pub oidc: OidcSettings,
    /// The teams managers write for (docs/design.md 9.3).
    #[serde(default)]
    pub teams: Vec<TeamSettings>,
}

/// A team: the people whose accounts its managers may change.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TeamSettings {
    /// Its name, as the `teams_claim` of a manager's token names it.
    pub name: String,
    /// The e-mail addresses or subjects (key names) of the managers who
    /// lead it, beside those whose token names it.
    #[serde(default)]
    pub managers: Vec<String>,
    /// The e-mail addresses or subjects of its members: the accounts whose
    /// CSM or owner is one of them are the team's.
    #[serde(default)]
    pub members: Vec<String>,
}

/// The OpenID Connect issuer whose bearer JWTs (access or ID tokens) are
/// accepted beside the API keys; off while `issuer` is empty.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct OidcSettings {
    /// The issuer URL, exactly as tokens carry it in `iss`; its discovery
    /// document is `<issuer>/.well-known/openid-configuration`. Empty: no JWTs.
    #[serde(default)]
    pub issuer: String,
    /// The audience Bowtie's tokens are issued for: one of their `aud` values.
    #[serde(default)]
    pub audience: String,
    /// The claim that lists the caller's roles (dots descend into objects,
    /// e.g. `realm_access.roles`).
    #[serde(default)]
    pub roles_claim: String,
    /// Stripped from each value of the roles claim before it is read as a
    /// role (`bowtie-` maps the group `bowtie-csm` to `csm`); values without
    /// it are ignored.
    #[serde(default)]
    pub role_prefix: String,
    /// The role of a valid token whose claim names none; empty: such a
    /// token may call nothing.
    #[serde(default)]
    pub default_role: String,
    /// The claim holding the caller's e-mail address.
    #[serde(default)]
    pub email_claim: String,
    /// The claim listing the teams (`auth.teams` names) a manager leads;
    /// empty: teams come from `auth.teams` alone.
    #[serde(default)]
    pub teams_claim: String,
    /// Allowed clock difference for `exp`, `nbf` and `iat`, in seconds.
    #[serde(default)]
    pub leeway_seconds: u64,
    /// Shortest time between two JWKS fetches caused by an unknown `kid`.
    #[serde(default)]
    pub jwks_refresh_cooldown_seconds: u64,
    /// The JWKS URL instead of the discovery document's `jwks_uri`; empty:
    /// discovered.
    #[serde(default)]
    pub jwks_uri: String,
    /// PEM file of the CA the issuer's certificate chains to; empty: the
    /// public web PKI.
    #[serde(default)]
    pub ca: String,
}

/// The request budget of each scope (role): a token bucket per key.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RateLimitSettings {
    /// Keys whose highest scope is read.
    #[serde(default)]
    pub read: RateBudget,
    /// Keys whose highest scope is write.
    #[serde(default)]
    pub write: RateBudget,
    /// Keys whose highest scope is admin.
    #[serde(default)]
    pub admin: RateBudget,
}

/// A token bucket: `per_second` calls on average, up to `burst` at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
pub struct RateBudget {
    /// Calls per second the bucket refills; 0: no limit.
    #[serde(default)]
    pub per_second: f64,
    /// The bucket's size (the most calls at once); 0: one second's worth.
    #[serde(default)]
    pub burst: u32,
}

/// One configured API key.
#[derive(Debug, Clone, Deserialize)]
pub struct ApiKeySettings {
    /// Who the key belongs to; appears in logs, never the key itself.
    pub name: String,
    /// `sha256:<64 hex digits>` of the key.
    pub hash: String,
    /// `read`, `write` and/or `admin`; the highest one counts.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The key's role (`viewer`, `csm`, `manager` or `admin`) instead of
    /// scopes: its scope is the role's. Unset: the role follows the highest
    /// scope (read: viewer, write: manager, admin: admin).
    #[serde(default)]
    pub role: Option<String>,
    /// RFC 3339 instant from which the key is refused; unset: never.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// This key's own budget instead of its scope's (e.g. unlimited for the
    /// services' peer key).
    #[serde(default)]
    pub rate_limit: Option<RateBudget>,
}

/// The variable that holds the whole key list (a JSON or TOML array of
/// `{ name, hash, scopes, expires_at }`); it replaces `auth.keys` of the file.
pub const KEYS_VARIABLE: &str = "BOWTIE__AUTH__KEYS";

/// The prefix of a variable that adds one key, named after the rest of the
/// variable's name (lower case, `_` as `-`), for example
/// `BOWTIE__AUTH__KEY__CRM_SYNC="hash=sha256:<hex> scopes=write expires_at=2027-06-30T00:00:00Z"`.
pub const KEY_VARIABLE_PREFIX: &str = "BOWTIE__AUTH__KEY__";

/// Takes the key variables out of `env` (so the generic `BOWTIE__...`
/// mapping never sees them) and returns the keys they configure: `None` for
/// the list when [`KEYS_VARIABLE`] is not set, and the one-key variables in
/// name order.
fn key_variables(
    env: &mut Map<String, String>,
) -> Result<(Option<Vec<ApiKeySettings>>, Vec<ApiKeySettings>), config::ConfigError> {
    let list = env
        .remove(KEYS_VARIABLE)
        .map(|text| parse_key_list(&text))
        .transpose()?;
    let mut names: Vec<String> = env
        .keys()
        .filter(|k| k.starts_with(KEY_VARIABLE_PREFIX))
        .cloned()
        .collect();
    names.sort();
    let mut single = Vec::with_capacity(names.len());
    for variable in names {
        let text = env.remove(&variable).unwrap_or_default();
        let name = variable[KEY_VARIABLE_PREFIX.len()..]
            .to_ascii_lowercase()
            .replace('_', "-");
        single.push(parse_key_variable(&variable, name, &text)?);
    }
    Ok((list, single))
}

/// A key list given as JSON (`[{"name": ...}]`) or as a TOML array
/// (`[{ name = "...", ... }]`).
fn parse_key_list(text: &str) -> Result<Vec<ApiKeySettings>, config::ConfigError> {
    if let Ok(keys) = serde_json::from_str::<Vec<ApiKeySettings>>(text) {
        return Ok(keys);
    }
    #[derive(Deserialize)]
    struct Keys {
        keys: Vec<ApiKeySettings>,
    }
    Config::builder()
        .add_source(File::from_str(&format!("keys = {text}"), FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize::<Keys>())
        .map(|k| k.keys)
        .map_err(|e| {
            config::ConfigError::Message(format!(
                "{KEYS_VARIABLE}: not a JSON or TOML list of keys ({e})"
            ))
        })
}

/// One key from `hash=... scopes=a,b [expires_at=...]`.
fn parse_key_variable(
    variable: &str,
    name: String,
    text: &str,
) -> Result<ApiKeySettings, config::ConfigError> {
    let mut key = ApiKeySettings {
        name,
        hash: String::new(),
        scopes: Vec::new(),
        expires_at: None,
        rate_limit: None,
        role: None,
    };
    for part in text.split_whitespace() {
        match part.split_once('=') {
            Some(("hash", v)) => key.hash = v.to_owned(),
            Some(("scopes", v)) => {
                key.scopes = v
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            }
            Some(("expires_at", v)) => key.expires_at = Some(v.to_owned()),
            Some(("role", v)) => key.role = Some(v.to_owned()),
            _ => {
                return Err(config::ConfigError::Message(format!(
                    "{variable}: {part:?} is not hash=..., scopes=..., role=... or expires_at=..."
                )));
            }
        }
    }
    if key.hash.is_empty() {
        return Err(config::ConfigError::Message(format!(
            "{variable}: hash=sha256:<hex> is required"
        )));
    }
    Ok(key)
}

/// Settings of one service.
#[derive(Debug, Clone, Deserialize)]
pub struct ServiceSettings {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Where to also serve `grpc.health.v1` alone in plaintext, for probes
    /// that cannot speak TLS; empty: nowhere.
    #[serde(default, deserialize_with = "optional_address")]
    pub health_listen: Option<SocketAddr>,
    /// The service's own database.
    pub database: DatabaseSettings,
    /// Scoring only: days raw signals are kept (from when they occurred and
    /// were recorded) once their day cells hold them; 0 keeps them for
    /// ever. Other services ignore it.
    #[serde(default)]
    pub raw_signal_days: f64,
}

/// The HTTP/JSON gateway: it has no database, it calls the services.
#[derive(Debug, Clone, Deserialize)]
pub struct GatewaySettings {
    /// Address the HTTP server listens on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Key the dashboard's sign-in shows pre-filled (development only). Secret.
    pub dashboard_key: SecretString,
    /// Key (write scope) the gateway writes verified CRM webhooks with. Secret.
    pub webhook_api_key: SecretString,
    /// HMAC secret of the HubSpot webhook; empty disables it. Secret.
    pub hubspot_secret: SecretString,
    /// HMAC secret of the generic CRM webhook; empty disables it. Secret.
    pub crm_secret: SecretString,
    /// Largest accepted distance between a webhook's timestamp and now.
    pub webhook_tolerance_seconds: u64,
    /// Public base URL of the gateway (HubSpot signs the full URI); empty: from the Host header.
    pub public_url: String,
    /// The dashboard's OpenID Connect sign-in; off without a client id.
    #[serde(default)]
    pub sign_in: SignInSettings,
}

/// The dashboard's sign-in with the `auth.oidc` issuer: the authorization
/// code flow with PKCE (docs/design.md section 9.5). Off while `client_id`
/// or `auth.oidc.issuer` is empty.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SignInSettings {
    /// The client Bowtie is registered as at the issuer.
    #[serde(default)]
    pub client_id: String,
    /// Its client secret (`BOWTIE__GATEWAY__SIGN_IN__CLIENT_SECRET`); it
    /// also keys the gateway's signed cookies. Secret.
    #[serde(default)]
    pub client_secret: SecretString,
    /// The registered redirect URI, `<gateway>/auth/callback`; empty:
    /// `gateway.public_url` + `/auth/callback`, or from the Host header.
    #[serde(default)]
    pub redirect_url: String,
    /// Scopes asked for; `openid` is always among them.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The `resource` (RFC 8707) asked for, so the access token is for
    /// Bowtie's audience; empty: none sent.
    #[serde(default)]
    pub resource: String,
}

/// Connection to a service's own database.
#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    /// `sqlite://path/file.db` or `postgres://user:password@host/db`. Secret: it may hold a password.
    pub url: SecretString,
    /// PostgreSQL schema that holds this service's tables (ignored for SQLite).
    pub schema: String,
    /// Pool size (PostgreSQL; SQLite readers). SQLite always has one writer.
    pub max_connections: u32,
    /// Time allowed to open a connection.
    pub connect_timeout_ms: u64,
    /// Time a request waits for a pooled connection before UNAVAILABLE.
    pub acquire_timeout_ms: u64,
}

/// An address that may be given as an empty string, meaning none.
fn optional_address<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SocketAddr>, D::Error> {
    let text = Option::<String>::deserialize(deserializer)?.unwrap_or_default();
    if text.trim().is_empty() {
        return Ok(None);
    }
    text.trim()
        .parse()
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("{text:?} is not host:port ({e})")))
}

impl DatabaseSettings {
    /// The database URL, for the connection code only.
    pub fn url(&self) -> &str {
        self.url.expose_secret()
    }

    /// A copy pointing at another URL and schema (tests, tools).
    pub fn with_url(&self, url: &str, schema: &str) -> Self {
        Self {
            url: SecretString::from(url.to_owned()),
            schema: schema.to_owned(),
            ..self.clone()
        }
    }
}

impl Settings {
    /// The built-in defaults alone, ignoring any file or environment.
    pub fn defaults() -> Result<Self, config::ConfigError> {
        Config::builder()
            .add_source(File::from_str(DEFAULTS_TOML, FileFormat::Toml))
            .build()?
            .try_deserialize()
    }

    /// Defaults, then `file` (or `./bowtie.toml` when it exists), then `BOWTIE__...` variables.
    pub fn load(file: Option<&Path>) -> Result<Self, config::ConfigError> {
        Self::load_with_env(file, std::env::vars().collect())
    }

    /// [`Settings::load`] with the given environment instead of the process's.
    /// The API key variables ([`KEYS_VARIABLE`], [`KEY_VARIABLE_PREFIX`]) are
    /// read here: the list replaces the file's keys, each one-key variable
    /// adds a key.
    pub fn load_with_env(
        file: Option<&Path>,
        mut env: Map<String, String>,
    ) -> Result<Self, config::ConfigError> {
        let (list, single) = key_variables(&mut env)?;
        let mut builder =
            Config::builder().add_source(File::from_str(DEFAULTS_TOML, FileFormat::Toml));
        builder = match file {
            Some(path) => builder.add_source(File::from(path).required(true)),
            None => builder.add_source(File::with_name("bowtie.toml").required(false)),
        };
        let built = builder
            .add_source(
                Environment::with_prefix("BOWTIE")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true)
                    .source(Some(env)),
            )
            .build()?;
        let mut settings: Self = built.try_deserialize()?;
        if let Some(list) = list {
            settings.auth.keys = list;
        }
        settings.auth.keys.extend(single);
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_defaults_parse_and_point_accounts_at_a_local_sqlite_file() -> anyhow::Result<()> {
        let settings = Settings::defaults()?;
        assert_eq!(
            settings.accounts.database.url(),
            "sqlite://data/accounts.db"
        );
        assert_eq!(settings.accounts.listen.port(), 50051);
        assert_eq!(settings.telemetry.log_format, LogFormat::Text);
        assert!(settings.auth.keys.is_empty());
        Ok(())
    }

    #[test]
    fn a_config_file_overrides_the_defaults() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("bowtie.toml");
        std::fs::write(
            &path,
            "[accounts]\nlisten = \"0.0.0.0:6000\"\n[[auth.keys]]\nname = \"crm\"\nhash = \"sha256:00\"\nscopes = [\"write\"]\n",
        )?;
        let settings = Settings::load(Some(&path))?;
        assert_eq!(settings.accounts.listen.port(), 6000);
        assert_eq!(settings.accounts.health_listen, None);
        assert_eq!(settings.accounts.database.schema, "accounts");
        assert_eq!(settings.auth.keys[0].name, "crm");
        Ok(())
    }

    #[test]
    fn a_health_address_is_read_and_a_malformed_one_is_refused() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("bowtie.toml");
        std::fs::write(&path, "[funnel]\nhealth_listen = \"0.0.0.0:50062\"\n")?;
        let settings = Settings::load(Some(&path))?;
        assert_eq!(
            settings.funnel.health_listen,
            Some(SocketAddr::from(([0, 0, 0, 0], 50062)))
        );
        std::fs::write(&path, "[funnel]\nhealth_listen = \"nowhere\"\n")?;
        let error = Settings::load(Some(&path))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("\"nowhere\" is not host:port"), "{error}");
        Ok(())
    }

    fn env(vars: &[(&str, &str)]) -> Map<String, String> {
        vars.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn names(settings: &Settings) -> Vec<&str> {
        settings.auth.keys.iter().map(|k| k.name.as_str()).collect()
    }

    #[test]
    fn the_key_list_variable_replaces_the_files_keys_in_json_or_toml() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("bowtie.toml");
        std::fs::write(
            &path,
            "[[auth.keys]]\nname = \"file\"\nhash = \"sha256:00\"\nscopes = [\"read\"]\n",
        )?;
        let json = Settings::load_with_env(
            Some(&path),
            env(&[(
                KEYS_VARIABLE,
                r#"[{"name": "crm", "hash": "sha256:11", "scopes": ["write"], "expires_at": "2027-06-30T00:00:00Z"}]"#,
            )]),
        )?;
        assert_eq!(names(&json), vec!["crm"]);
        assert_eq!(
            json.auth.keys[0].expires_at.as_deref(),
            Some("2027-06-30T00:00:00Z")
        );
        let toml = Settings::load_with_env(
            Some(&path),
            env(&[(
                KEYS_VARIABLE,
                r#"[{ name = "a", hash = "sha256:22", scopes = ["read"] }, { name = "b", hash = "sha256:33", scopes = ["admin"] }]"#,
            )]),
        )?;
        assert_eq!(names(&toml), vec!["a", "b"]);
        assert_eq!(toml.auth.keys[1].scopes, vec!["admin"]);
        let without = Settings::load_with_env(Some(&path), env(&[]))?;
        assert_eq!(names(&without), vec!["file"]);
        Ok(())
    }

    #[test]
    fn a_one_key_variable_adds_a_key_named_after_it() -> anyhow::Result<()> {
        let settings = Settings::load_with_env(
            None,
            env(&[
                (
                    "BOWTIE__AUTH__KEY__CRM_SYNC",
                    "hash=sha256:44 scopes=read,write expires_at=2027-01-01T00:00:00Z",
                ),
                ("BOWTIE__AUTH__KEY__DASHBOARD", "scopes=read hash=sha256:55"),
            ]),
        )?;
        assert_eq!(names(&settings), vec!["crm-sync", "dashboard"]);
        assert_eq!(settings.auth.keys[0].hash, "sha256:44");
        assert_eq!(settings.auth.keys[0].scopes, vec!["read", "write"]);
        assert_eq!(
            settings.auth.keys[0].expires_at.as_deref(),
            Some("2027-01-01T00:00:00Z")
        );
        assert_eq!(settings.auth.keys[1].expires_at, None);
        Ok(())
    }

    #[test]
    fn a_one_key_variable_may_give_a_role_instead_of_scopes() -> anyhow::Result<()> {
        let settings = Settings::load_with_env(
            None,
            env(&[("BOWTIE__AUTH__KEY__SUPPORT", "hash=sha256:77 role=csm")]),
        )?;
        assert_eq!(settings.auth.keys[0].role.as_deref(), Some("csm"));
        assert!(settings.auth.keys[0].scopes.is_empty());
        Ok(())
    }

    #[test]
    fn the_issuer_settings_come_from_the_environment_too() -> anyhow::Result<()> {
        let defaults = Settings::defaults()?;
        assert_eq!(defaults.auth.oidc.issuer, "");
        assert_eq!(defaults.auth.oidc.leeway_seconds, 60);
        let settings = Settings::load_with_env(
            None,
            env(&[
                ("BOWTIE__AUTH__OIDC__ISSUER", "https://id.example.com/"),
                ("BOWTIE__AUTH__OIDC__AUDIENCE", "https://bowtie.example.com"),
                ("BOWTIE__AUTH__OIDC__ROLES_CLAIM", "groups"),
                ("BOWTIE__AUTH__OIDC__LEEWAY_SECONDS", "15"),
            ]),
        )?;
        let oidc = &settings.auth.oidc;
        assert_eq!(oidc.issuer, "https://id.example.com/");
        assert_eq!(oidc.audience, "https://bowtie.example.com");
        assert_eq!(oidc.roles_claim, "groups");
        assert_eq!(oidc.leeway_seconds, 15);
        assert_eq!(oidc.jwks_refresh_cooldown_seconds, 60);
        Ok(())
    }

    #[test]
    fn a_malformed_key_variable_is_refused_naming_it() {
        let error = |vars: &[(&str, &str)]| {
            Settings::load_with_env(None, env(vars))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(error(&[(KEYS_VARIABLE, "crm")]).contains(KEYS_VARIABLE));
        let unknown = error(&[("BOWTIE__AUTH__KEY__CRM", "hash=sha256:66 team=emea")]);
        assert!(
            unknown.contains("BOWTIE__AUTH__KEY__CRM: \"team=emea\""),
            "{unknown}"
        );
        let no_hash = error(&[("BOWTIE__AUTH__KEY__CRM", "scopes=read")]);
        assert!(
            no_hash.contains("hash=sha256:<hex> is required"),
            "{no_hash}"
        );
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() -> anyhow::Result<()> {
        let mut settings = Settings::defaults()?;
        settings.accounts.database = settings
            .accounts
            .database
            .with_url("postgres://u:hunter2@db/x", "accounts");
        assert!(!format!("{settings:?}").contains("hunter2"));
        Ok(())
    }
}
