//! The gRPC clients of the services and the caller's credentials.
//!
//! The channels come from the runtime's peer module with no key of their own,
//! so the gateway holds no privileges: each call carries the `Authorization`
//! header of the HTTP request that caused it (the services check the key and
//! its scope), and the W3C trace context of the request's span.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use bowtie_proto::accounts::accounts_service_client::AccountsServiceClient;
use bowtie_proto::funnel::funnel_service_client::FunnelServiceClient;
use bowtie_proto::revenue::revenue_service_client::RevenueServiceClient;
use bowtie_proto::scoring::scoring_service_client::ScoringServiceClient;
use bowtie_proto::success::success_service_client::SuccessServiceClient;
use bowtie_runtime::config::PeerSettings;
use bowtie_runtime::peer::{PeerChannel, connect};
use secrecy::SecretString;
use tonic::metadata::{Ascii, MetadataValue};
use tonic_health::pb::health_client::HealthClient;

use crate::error::ApiError;

/// One client per service, cheap to clone.
#[derive(Debug, Clone)]
pub struct Services {
    /// The accounts service.
    pub accounts: AccountsServiceClient<PeerChannel>,
    /// The funnel service.
    pub funnel: FunnelServiceClient<PeerChannel>,
    /// The revenue service.
    pub revenue: RevenueServiceClient<PeerChannel>,
    /// The scoring service.
    pub scoring: ScoringServiceClient<PeerChannel>,
    /// The success service.
    pub success: SuccessServiceClient<PeerChannel>,
    /// Health clients, by service name and gRPC service name, for /readyz.
    pub health: Vec<(&'static str, &'static str, HealthClient<PeerChannel>)>,
}

impl Services {
    /// Lazily connected clients of every service at the `peers` addresses.
    /// The configured `peers.api_key` is deliberately not used.
    pub fn connect(peers: &PeerSettings) -> anyhow::Result<Self> {
        let keyless = PeerSettings {
            api_key: SecretString::from(String::new()),
            ..peers.clone()
        };
        let accounts = connect(&keyless.accounts, &keyless)?;
        let funnel = connect(&keyless.funnel, &keyless)?;
        let revenue = connect(&keyless.revenue, &keyless)?;
        let scoring = connect(&keyless.scoring, &keyless)?;
        let success = connect(&keyless.success, &keyless)?;
        let health = vec![
            (
                "accounts",
                "bowtie.accounts.v1.AccountsService",
                HealthClient::new(accounts.clone()),
            ),
            (
                "funnel",
                "bowtie.funnel.v1.FunnelService",
                HealthClient::new(funnel.clone()),
            ),
            (
                "revenue",
                "bowtie.revenue.v1.RevenueService",
                HealthClient::new(revenue.clone()),
            ),
            (
                "scoring",
                "bowtie.scoring.v1.ScoringService",
                HealthClient::new(scoring.clone()),
            ),
            (
                "success",
                "bowtie.success.v1.SuccessService",
                HealthClient::new(success.clone()),
            ),
        ];
        Ok(Self {
            accounts: AccountsServiceClient::new(accounts),
            funnel: FunnelServiceClient::new(funnel),
            revenue: RevenueServiceClient::new(revenue),
            scoring: ScoringServiceClient::new(scoring),
            success: SuccessServiceClient::new(success),
            health,
        })
    }
}

/// The caller's `Authorization` header, passed on to the services as is,
/// and its W3C trace context (`traceparent`, `tracestate`).
///
/// The trace context is copied so a trace continues through the gateway even
/// when this process exports no traces; when it does, the peer interceptor
/// replaces it with the gateway's own span, a child of the caller's.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    authorization: Option<MetadataValue<Ascii>>,
    trace: Vec<(&'static str, MetadataValue<Ascii>)>,
}

/// The W3C trace context headers.
const TRACE_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

impl Caller {
    /// A caller presenting `Bearer <key>` (the webhooks' configured key).
    pub fn bearer(key: &str) -> Result<Self, ApiError> {
        MetadataValue::try_from(format!("Bearer {key}"))
            .map(|v| Self {
                authorization: Some(v),
                trace: Vec::new(),
            })
            .map_err(|_| ApiError::internal(&"the configured webhook API key is not ASCII"))
    }

    /// A gRPC request carrying the caller's credentials.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(value) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        for (name, value) in &self.trace {
            request.metadata_mut().insert(*name, value.clone());
        }
        request
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let ascii = |name: &str| {
            parts.headers.get(name).map(|v| {
                v.to_str()
                    .ok()
                    .and_then(|v| MetadataValue::try_from(v).ok())
            })
        };
        let authorization = match ascii("authorization") {
            None => None,
            Some(Some(v)) => Some(v),
            Some(None) => {
                return Err(ApiError::unauthenticated(
                    "the Authorization header is not printable ASCII",
                ));
            }
        };
        let trace = TRACE_HEADERS
            .iter()
            .filter_map(|name| ascii(name).flatten().map(|v| (*name, v)))
            .collect();
        Ok(Self {
            authorization,
            trace,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_callers_key_and_trace_context_travel_to_the_service() -> anyhow::Result<()> {
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (mut parts, ()) = http::Request::builder()
            .header("authorization", "Bearer bt_key")
            .header("traceparent", traceparent)
            .body(())?
            .into_parts();
        let caller = Caller::from_request_parts(&mut parts, &())
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let request = caller.request(());
        assert_eq!(
            request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok()),
            Some("Bearer bt_key")
        );
        assert_eq!(
            request
                .metadata()
                .get("traceparent")
                .and_then(|v| v.to_str().ok()),
            Some(traceparent)
        );
        assert!(request.metadata().get("tracestate").is_none());
        Ok(())
    }

    #[tokio::test]
    async fn no_key_sends_no_credentials() -> anyhow::Result<()> {
        let (mut parts, ()) = http::Request::builder().body(())?.into_parts();
        let caller = Caller::from_request_parts(&mut parts, &())
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        assert!(caller.request(()).metadata().get("authorization").is_none());
        Ok(())
    }
}
