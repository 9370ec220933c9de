//! Layered configuration: built-in defaults < `bowtie.toml` < environment.
//!
//! Every service and the `bowtie` binary load settings through [`Settings::load`];
//! tests start from [`Settings::defaults`] and change fields directly rather than
//! setting process-wide environment variables.

use std::net::SocketAddr;
use std::path::Path;

use config::{Config, Environment, File, FileFormat};
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
    /// The HTTP/JSON gateway and dashboard.
    pub gateway: GatewaySettings,
    /// How services reach each other.
    pub peers: PeerSettings,
    /// Revenue reporting policy.
    pub revenue_policy: RevenuePolicySettings,
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
    /// API key (read scope is enough) presented to peers. Secret.
    pub api_key: SecretString,
    /// Time allowed to connect to a peer.
    pub connect_timeout_ms: u64,
    /// Deadline of each unary call to a peer.
    pub request_timeout_ms: u64,
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
}

/// API keys.
#[derive(Debug, Clone, Deserialize)]
pub struct AuthSettings {
    /// The accepted keys, hashed.
    pub keys: Vec<ApiKeySettings>,
}

/// One configured API key.
#[derive(Debug, Clone, Deserialize)]
pub struct ApiKeySettings {
    /// Who the key belongs to; appears in logs, never the key itself.
    pub name: String,
    /// `sha256:<64 hex digits>` of the key.
    pub hash: String,
    /// `read`, `write` and/or `admin`; the highest one counts.
    pub scopes: Vec<String>,
}

/// Settings of one service.
#[derive(Debug, Clone, Deserialize)]
pub struct ServiceSettings {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The service's own database.
    pub database: DatabaseSettings,
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
        let mut builder =
            Config::builder().add_source(File::from_str(DEFAULTS_TOML, FileFormat::Toml));
        builder = match file {
            Some(path) => builder.add_source(File::from(path).required(true)),
            None => builder.add_source(File::with_name("bowtie.toml").required(false)),
        };
        builder
            .add_source(
                Environment::with_prefix("BOWTIE")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            )
            .build()?
            .try_deserialize()
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
        assert_eq!(settings.accounts.database.schema, "accounts");
        assert_eq!(settings.auth.keys[0].name, "crm");
        Ok(())
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
