//! A real OpenID Connect provider for the identity tests: `oidc-provider`
//! (npm, pinned; `make oidc-tools` installs it into `.tools/` and `make
//! test` names its node_modules in `BOWTIE_OIDC_PROVIDER_NODE_PATH`) run
//! with node from `tests/oidc/provider.mjs`, on a random loopback port. It
//! issues RS256 JWT access tokens for [`AUDIENCE`] through the client
//! credentials grant, one client per role, and can rotate its signing key.
//! It also signs [`PEOPLE`] in to the dashboard ([`DASHBOARD_CLIENT`],
//! the authorization code flow with PKCE) through its development login
//! page.
//!
//! Without `BOWTIE_OIDC_PROVIDER_NODE_PATH` the tests say why and pass,
//! except under `CI=true`, where they fail.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use bowtie_runtime::config::{OidcSettings, SignInSettings};
use serde_json::Value;

/// The audience (resource indicator) the provider issues Bowtie's tokens for.
pub const AUDIENCE: &str = "https://bowtie.test/api";

/// The provider's client for the dashboard's sign-in (authorization code
/// with PKCE, any loopback redirect port).
pub const DASHBOARD_CLIENT: &str = "bowtie-dashboard";

/// The people who can sign in at the provider's login page (any password):
/// login, name, e-mail, Bowtie role.
pub const PEOPLE: [(&str, &str, &str, &str); 3] = [
    ("ada", "Ada Lovelace", "ada@example.com", "csm"),
    ("grace", "Grace Hopper", "grace@example.com", "manager"),
    ("linus", "Linus Viewer", "linus@example.com", "viewer"),
];

/// The environment variable naming the node_modules that hold oidc-provider.
pub const NODE_PATH_VAR: &str = "BOWTIE_OIDC_PROVIDER_NODE_PATH";

/// A running provider; dropping it ends the node process.
#[derive(Debug)]
pub struct OidcProvider {
    child: Child,
    issuer: String,
    http: reqwest::Client,
}

/// The node_modules of oidc-provider, or `None` (with the reason printed) to
/// skip; panics under `CI=true` without them.
fn node_path() -> Option<String> {
    match std::env::var(NODE_PATH_VAR) {
        Ok(p) if !p.trim().is_empty() => Some(p),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => panic!(
            "{NODE_PATH_VAR} is not set, but CI=true requires the identity-provider tests to run \
             (`make test` installs the pinned oidc-provider and sets it)"
        ),
        _ => {
            eprintln!(
                "SKIPPED: the identity-provider test did not run: {NODE_PATH_VAR} is not set \
                 (`make oidc-tools` installs the pinned oidc-provider; `make test` sets it)"
            );
            None
        }
    }
}

/// How long the provider may take to print that it listens.
const START_TIMEOUT: Duration = Duration::from_secs(60);

impl OidcProvider {
    /// Starts the provider and waits until it listens; `None` to skip. A
    /// provider that prints nothing within [`START_TIMEOUT`] is killed and
    /// started once more, so a stuck node fails the test rather than hanging it.
    pub fn start() -> anyhow::Result<Option<Self>> {
        let Some(node_path) = node_path() else {
            return Ok(None);
        };
        match Self::spawn(&node_path) {
            Ok(started) => Ok(Some(started)),
            Err(first) => {
                eprintln!("the identity provider did not start ({first:#}); starting it again");
                Self::spawn(&node_path).map(Some)
            }
        }
    }

    fn spawn(node_path: &str) -> anyhow::Result<Self> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/oidc/provider.mjs");
        let mut child = Command::new("node")
            .arg(script)
            .env(NODE_PATH_VAR, node_path)
            .env("BOWTIE_OIDC_AUDIENCE", AUDIENCE)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting node with tests/oidc/provider.mjs")?;
        let stdout = child.stdout.take().context("the provider's stdout")?;
        let (sent, first_line) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let read = reader.read_line(&mut line).map(|_| line);
            let _ = sent.send(read);
            // Keep reading: the provider logs notices to stdout later (its
            // first interactive login), and a closed pipe would end it.
            let mut rest = String::new();
            while reader.read_line(&mut rest).is_ok_and(|n| n > 0) {
                rest.clear();
            }
        });
        let line = match first_line.recv_timeout(START_TIMEOUT) {
            Ok(read) => read.context("reading the provider's first line")?,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("the provider printed nothing in {START_TIMEOUT:?}");
            }
        };
        let ready: Value = serde_json::from_str(line.trim())
            .with_context(|| format!("the provider did not start: {line:?}"))?;
        let issuer = ready
            .get("issuer")
            .and_then(Value::as_str)
            .context("the provider printed no issuer")?
            .to_owned();
        Ok(Self {
            child,
            issuer,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
        })
    }

    /// The issuer URL, as tokens carry it in `iss`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// `auth.oidc` for this provider: groups with the prefix `bowtie-` as
    /// roles, `leeway_seconds` of leeway and a JWKS refresh cooldown of
    /// `cooldown_seconds`.
    pub fn settings(&self, leeway_seconds: u64, cooldown_seconds: u64) -> OidcSettings {
        OidcSettings {
            issuer: self.issuer.clone(),
            audience: AUDIENCE.to_owned(),
            roles_claim: "groups".to_owned(),
            role_prefix: "bowtie-".to_owned(),
            default_role: String::new(),
            email_claim: "email".to_owned(),
            teams_claim: "teams".to_owned(),
            leeway_seconds,
            jwks_refresh_cooldown_seconds: cooldown_seconds,
            jwks_uri: String::new(),
            ca: String::new(),
        }
    }

    /// `gateway.sign_in` for the provider's dashboard client
    /// ([`DASHBOARD_CLIENT`]): the redirect URI from the gateway's Host, the
    /// `api` scope and Bowtie's audience as the resource, so the access
    /// token of a sign-in is a bearer token Bowtie accepts.
    pub fn sign_in_settings(&self) -> SignInSettings {
        SignInSettings {
            client_id: DASHBOARD_CLIENT.to_owned(),
            client_secret: format!("secret-{DASHBOARD_CLIENT}").into(),
            redirect_url: String::new(),
            scopes: ["openid", "profile", "email", "api"]
                .map(str::to_owned)
                .to_vec(),
            resource: AUDIENCE.to_owned(),
        }
    }

    /// An access token of `client` (`bowtie-viewer`, `bowtie-csm`,
    /// `bowtie-admin`, `bowtie-nobody`, or `bowtie-short`: a viewer whose
    /// token lives 10 s) by the client credentials grant.
    pub async fn token(&self, client: &str) -> anyhow::Result<String> {
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", client),
            ("client_secret", &format!("secret-{client}")),
            ("resource", AUDIENCE),
            ("scope", "api"),
        ];
        let body: String = form
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let response = self
            .http
            .post(format!("{}/token", self.issuer))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await?;
        let status = response.status();
        let answer: Value = response.json().await?;
        answer
            .get("access_token")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .with_context(|| format!("no access token for {client}: {status} {answer}"))
    }

    /// A token of exactly `claims`, signed with the provider's current key.
    pub async fn sign(&self, claims: &Value) -> anyhow::Result<String> {
        let response = self
            .http
            .post(format!("{}/test/sign", self.issuer))
            .body(claims.to_string())
            .send()
            .await?
            .error_for_status()?;
        Ok(response.text().await?)
    }

    /// Rotates the signing key: a new one signs from now on, the old ones
    /// stay published. Returns the new key's id.
    pub async fn rotate(&self) -> anyhow::Result<String> {
        let answer: Value = self
            .http
            .post(format!("{}/test/rotate", self.issuer))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        answer
            .get("kid")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .context("the rotation named no key")
    }

    /// The current signing key's public half, SPKI PEM.
    pub async fn public_pem(&self) -> anyhow::Result<String> {
        Ok(self
            .http
            .get(format!("{}/test/public.pem", self.issuer))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?)
    }

    /// How many times the JWKS was requested.
    pub async fn jwks_requests(&self) -> anyhow::Result<u64> {
        let stats: Value = self
            .http
            .get(format!("{}/test/stats", self.issuer))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        stats
            .get("jwks")
            .and_then(Value::as_u64)
            .context("the provider's stats have no jwks count")
    }
}

fn urlencode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        // Closing stdin ends the script; kill it too, in case it hangs.
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
