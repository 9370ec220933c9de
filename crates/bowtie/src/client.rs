//! gRPC clients of the Bowtie services for the command line: the addresses
//! come from the `[peers]` configuration (overridable per command), the API
//! key from `--key` or `BOWTIE_API_KEY`.
//!
//! The channels are the runtime's peer channels (`bowtie_runtime::peer`), so
//! the CLI presents its key and continues the trace exactly as a service
//! calling another does; there is no second client stack to keep in step.

use std::time::Duration;

use bowtie_proto::accounts::accounts_service_client::AccountsServiceClient;
use bowtie_proto::funnel::funnel_service_client::FunnelServiceClient;
use bowtie_proto::revenue::revenue_service_client::RevenueServiceClient;
use bowtie_proto::scoring::scoring_service_client::ScoringServiceClient;
use bowtie_proto::success::success_service_client::SuccessServiceClient;
use bowtie_runtime::config::PeerSettings;
use bowtie_runtime::peer::{PeerChannel, connect};
use secrecy::SecretString;

/// An accounts client that presents the CLI's key.
pub type AccountsClient = AccountsServiceClient<PeerChannel>;
/// A funnel client that presents the CLI's key.
pub type FunnelClient = FunnelServiceClient<PeerChannel>;
/// A revenue client that presents the CLI's key.
pub type RevenueClient = RevenueServiceClient<PeerChannel>;
/// A scoring client that presents the CLI's key.
pub type ScoringClient = ScoringServiceClient<PeerChannel>;
/// A success client that presents the CLI's key.
pub type SuccessClient = SuccessServiceClient<PeerChannel>;

/// Deadline of each call the CLI makes: imports and reports over a large
/// book take longer than the peer-to-peer default.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the services listen and the key to present.
#[derive(Debug, Clone)]
pub struct Target {
    peers: PeerSettings,
}

impl Target {
    /// The services named in `peers`, called with `key`.
    pub fn new(peers: &PeerSettings, key: &str) -> Self {
        let mut peers = peers.clone();
        peers.api_key = SecretString::from(key.to_owned());
        peers.request_timeout_ms = peers
            .request_timeout_ms
            .max(u64::try_from(CALL_TIMEOUT.as_millis()).unwrap_or(u64::MAX));
        Self { peers }
    }

    /// The same target with one service at another address.
    pub fn with_address(mut self, service: Service, address: &str) -> Self {
        let uri = if address.contains("://") {
            address.to_owned()
        } else {
            format!("http://{address}")
        };
        match service {
            Service::Accounts => self.peers.accounts = uri,
            Service::Funnel => self.peers.funnel = uri,
            Service::Revenue => self.peers.revenue = uri,
            Service::Scoring => self.peers.scoring = uri,
            Service::Success => self.peers.success = uri,
        }
        self
    }

    /// The address of `service`.
    pub fn address(&self, service: Service) -> &str {
        match service {
            Service::Accounts => &self.peers.accounts,
            Service::Funnel => &self.peers.funnel,
            Service::Revenue => &self.peers.revenue,
            Service::Scoring => &self.peers.scoring,
            Service::Success => &self.peers.success,
        }
    }

    fn channel(&self, service: Service) -> anyhow::Result<PeerChannel> {
        Ok(connect(self.address(service), &self.peers)?)
    }

    /// An accounts client (connects on first use).
    pub fn accounts(&self) -> anyhow::Result<AccountsClient> {
        Ok(AccountsServiceClient::new(self.channel(Service::Accounts)?))
    }

    /// A funnel client (connects on first use).
    pub fn funnel(&self) -> anyhow::Result<FunnelClient> {
        Ok(FunnelServiceClient::new(self.channel(Service::Funnel)?))
    }

    /// A revenue client (connects on first use).
    pub fn revenue(&self) -> anyhow::Result<RevenueClient> {
        Ok(RevenueServiceClient::new(self.channel(Service::Revenue)?))
    }

    /// A scoring client (connects on first use).
    pub fn scoring(&self) -> anyhow::Result<ScoringClient> {
        Ok(ScoringServiceClient::new(self.channel(Service::Scoring)?))
    }

    /// A success client (connects on first use).
    pub fn success(&self) -> anyhow::Result<SuccessClient> {
        Ok(SuccessServiceClient::new(self.channel(Service::Success)?))
    }
}

/// A Bowtie service the CLI talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Accounts.
    Accounts,
    /// Funnel.
    Funnel,
    /// Revenue.
    Revenue,
    /// Scoring.
    Scoring,
    /// Success.
    Success,
}

/// A failed call as a person reads it: the status code and the server's
/// message, which names the offending field for INVALID_ARGUMENT.
pub fn describe(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    let mut text = format!("{:?}: {}", status.code(), status.message());
    if let Some(bad) = status.get_details_bad_request() {
        let fields: Vec<&str> = bad
            .field_violations
            .iter()
            .map(|v| v.field.as_str())
            .filter(|f| !status.message().contains(*f))
            .collect();
        if !fields.is_empty() {
            text.push_str(&format!(" (fields: {})", fields.join(", ")));
        }
    }
    text
}
