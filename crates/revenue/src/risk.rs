//! Renewal likelihood from the scoring service: one minus the account's
//! churn probability over scoring's horizon, asked for every account of a
//! renewal page at once. Scoring is optional: an account it cannot answer
//! for (no model trained yet, unknown, scoring unreachable or slower than
//! [`WAIT`]) gets the configured default likelihood, and the response says
//! which one each entry used.

use std::collections::HashMap;
use std::time::Duration;

use bowtie_proto::scoring::GetChurnRiskRequest;
use bowtie_proto::scoring::scoring_service_client::ScoringServiceClient;
use bowtie_runtime::AccountId;
use bowtie_runtime::config::PeerSettings;
use bowtie_runtime::error::Error;
use bowtie_runtime::peer::{self, PeerChannel};

/// Longest a renewal page waits for scoring before using the default.
pub const WAIT: Duration = Duration::from_millis(1_500);

/// Asks scoring for churn risk.
#[derive(Debug, Clone)]
pub struct ChurnRisk {
    client: ScoringServiceClient<PeerChannel>,
}

impl ChurnRisk {
    /// A client of the scoring service at `settings.scoring` (connects lazily).
    pub fn connect(settings: &PeerSettings) -> Result<Self, Error> {
        Ok(Self {
            client: ScoringServiceClient::new(peer::connect(&settings.scoring, settings)?),
        })
    }

    /// Renewal likelihood in basis points of each account scoring answered
    /// for; the others are absent.
    pub async fn likelihoods(&self, accounts: &[AccountId]) -> HashMap<AccountId, i64> {
        let calls = accounts.iter().map(|&id| {
            let mut client = self.client.clone();
            async move {
                let answer = client
                    .get_churn_risk(GetChurnRiskRequest {
                        account_id: id.to_string(),
                    })
                    .await;
                (id, answer.ok().map(|r| r.into_inner().probability))
            }
        });
        let Ok(answers) = tokio::time::timeout(WAIT, futures::future::join_all(calls)).await else {
            tracing::warn!("scoring did not answer in time; default renewal likelihoods used");
            return HashMap::new();
        };
        answers
            .into_iter()
            .filter_map(|(id, p)| {
                let p = p.filter(|p| (0.0..=1.0).contains(p))?;
                Some((id, likelihood_bp(p)))
            })
            .collect()
    }
}

/// 1 - p in basis points, rounded to the nearest.
pub fn likelihood_bp(churn_probability: f64) -> i64 {
    ((1.0 - churn_probability) * 10_000.0).round() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn likelihood_is_one_minus_the_churn_probability_in_basis_points() {
        assert_eq!(likelihood_bp(0.0), 10_000);
        assert_eq!(likelihood_bp(1.0), 0);
        assert_eq!(likelihood_bp(0.123_45), 8_766);
        assert_eq!(likelihood_bp(0.5), 5_000);
    }
}
