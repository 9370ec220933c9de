//! What the streaming-import tests share: reading every acknowledgement of
//! an import stream, and a batch's results as (outcome, code, field).

use bowtie_proto::common::{ImportOutcome, ImportResult};
use tonic::{Code, Status, Streaming};

/// Every acknowledgement an import stream's answer carries, in order; the
/// first failure ends the reading with its status.
pub async fn acks<M>(
    answer: Result<tonic::Response<Streaming<M>>, Status>,
) -> Result<Vec<M>, Status> {
    let mut stream = answer?.into_inner();
    let mut acks = Vec::new();
    while let Some(ack) = stream.message().await? {
        acks.push(ack);
    }
    Ok(acks)
}

/// (outcome, code, field) of each result.
pub fn outcomes(results: &[ImportResult]) -> Vec<(ImportOutcome, Code, &str)> {
    results
        .iter()
        .map(|r| {
            (
                ImportOutcome::try_from(r.outcome).unwrap_or_default(),
                Code::from(r.code),
                r.field.as_str(),
            )
        })
        .collect()
}

/// A row recorded.
pub const RECORDED: (ImportOutcome, Code, &str) = (ImportOutcome::Recorded, Code::Ok, "");
/// A row already recorded before.
pub const DUPLICATE: (ImportOutcome, Code, &str) = (ImportOutcome::Duplicate, Code::Ok, "");
