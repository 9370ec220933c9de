//! The demo's product, support, survey and stakeholder signals, written to
//! the scoring service in batches (one transaction each), then a health
//! recompute and a first churn model, so health, risk and alerts are there
//! when seeding returns.

use anyhow::Context as _;
use bowtie_proto::scoring::{
    GetModelRequest, RecomputeHealthRequest, RecordSignalBatchRequest, Signal, SignalOutcome,
    SignalType, TrainModelRequest,
};
use prost_types::Timestamp;

use super::plan::{PlannedAccount, SignalKind};
use crate::client::{ScoringClient, describe};

/// Signals per batch: one commit each.
const BATCH: usize = 2000;

fn signal_type(kind: SignalKind) -> SignalType {
    match kind {
        SignalKind::Login => SignalType::Login,
        SignalKind::ActiveUsers => SignalType::ActiveUsers,
        SignalKind::FeatureUsed => SignalType::FeatureUsed,
        SignalKind::TicketOpened => SignalType::TicketOpened,
        SignalKind::TicketResolved => SignalType::TicketResolved,
        SignalKind::Complaint => SignalType::Complaint,
        SignalKind::Nps => SignalType::NpsAnswer,
        SignalKind::StakeholderLeft => SignalType::StakeholderLeft,
        SignalKind::FirstValue => SignalType::FirstValueReached,
    }
}

/// Records every account's signals; returns how many batches were sent.
/// The signal count is in the plan's summary.
/// A repeat (a restart) is answered DUPLICATE and changes nothing.
pub async fn record(
    client: ScoringClient,
    prefix: &str,
    accounts: &[(PlannedAccount, String)],
) -> anyhow::Result<usize> {
    let mut client = client;
    let signals: Vec<Signal> = accounts
        .iter()
        .flat_map(|(a, id)| {
            a.signals.iter().enumerate().map(move |(k, s)| Signal {
                idempotency_key: format!("{prefix}-a{}-g{k}", a.index),
                account_id: id.clone(),
                r#type: signal_type(s.kind) as i32,
                value: s.value,
                occurred_at: Some(Timestamp {
                    seconds: s.at,
                    nanos: 0,
                }),
            })
        })
        .collect();
    let mut batches = 0;
    for chunk in signals.chunks(BATCH) {
        let response = client
            .record_signal_batch(RecordSignalBatchRequest {
                signals: chunk.to_vec(),
            })
            .await
            .map_err(|s| anyhow::anyhow!("RecordSignalBatch: {}", describe(&s)))?
            .into_inner();
        if let Some(rejected) = response
            .results
            .iter()
            .find(|r| r.outcome == SignalOutcome::Rejected as i32)
        {
            anyhow::bail!(
                "scoring rejected {} demo signals, e.g. {}: {}",
                response.rejected,
                chunk
                    .get(usize::try_from(rejected.index).unwrap_or(0))
                    .map_or("", |s| s.idempotency_key.as_str()),
                rejected.message
            );
        }
        batches += 1;
    }
    Ok(batches)
}

/// Trains the churn model on the demo's history (unless one exists) and
/// rescores every account with it (both admin calls). A model that cannot
/// be trained yet (too few labelled accounts) is not an error: risk then
/// stays unset. Returns the model's hold-out AUC.
pub async fn score(mut client: ScoringClient) -> anyhow::Result<Option<f64>> {
    // A restart keeps the model the first seeding trained.
    if let Ok(existing) = client.get_model(GetModelRequest {}).await {
        let auc = existing.into_inner().model.map(|m| m.holdout_auc);
        rescore(&mut client).await?;
        return Ok(auc);
    }
    let auc = match client.train_model(TrainModelRequest::default()).await {
        Ok(response) => response.into_inner().model.map(|m| m.holdout_auc),
        Err(status) if status.code() == tonic::Code::FailedPrecondition => None,
        Err(status) => anyhow::bail!("TrainModel: {}", describe(&status)),
    };
    rescore(&mut client).await?;
    Ok(auc)
}

async fn rescore(client: &mut ScoringClient) -> anyhow::Result<()> {
    client
        .recompute_health(RecomputeHealthRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("RecomputeHealth: {}", describe(&s)))
        .context("rescoring the demo accounts")?;
    Ok(())
}
