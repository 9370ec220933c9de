//! Streaming imports (docs/design.md, "Streaming imports"): a client stream
//! of batches, each answered once committed, in order, with one result per
//! row. Every service's import RPC runs through [`serve`] and answers its
//! rows with [`recorded`], [`duplicate`] and [`rejected`], so batches, acks
//! and row results behave alike everywhere.

use std::future::Future;

use bowtie_proto::common::{ImportOutcome, ImportResult};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming};

use crate::error::Error;
use crate::feed::EventStream;

/// Most rows in one batch of an import stream.
pub const MAX_BATCH_ROWS: usize = 5_000;

/// INVALID_ARGUMENT on `field` when a batch holds more than [`MAX_BATCH_ROWS`].
pub fn check_batch(field: &str, rows: usize) -> Result<(), Error> {
    if rows > MAX_BATCH_ROWS {
        return Err(Error::invalid(
            field,
            format!("at most {MAX_BATCH_ROWS} rows per batch (this one has {rows})"),
        ));
    }
    Ok(())
}

/// Answers each batch of `inbound` with `handle(position, batch)`, in order,
/// one batch at a time. The first error ends the stream with its status (the
/// batch that failed was not written, and no later batch is read); so does
/// a message the server cannot take (over the message limit: RESOURCE_EXHAUSTED).
pub fn serve<Req, Resp, F, Fut>(mut inbound: Streaming<Req>, mut handle: F) -> EventStream<Resp>
where
    Req: Send + 'static,
    Resp: Send + 'static,
    F: FnMut(i64, Req) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Resp, Error>> + Send,
{
    let (tx, rx) = mpsc::channel(4);
    // The batches are written as the call that opened the stream.
    crate::audit::AuditContext::spawn(async move {
        let mut batch: i64 = 0;
        while let Some(item) = inbound.next().await {
            let request = match item {
                Ok(r) => r,
                Err(status) => {
                    // When the client is gone nobody hears this, and that is fine.
                    tracing::debug!(%status, "import stream ended by an inbound error");
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            };
            let answer = handle(batch, request).await;
            let failed = answer.is_err();
            if tx.send(answer.map_err(Status::from)).await.is_err() || failed {
                return;
            }
            batch += 1;
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

/// A row recorded by its batch, with the id of what it recorded.
pub fn recorded(index: usize, id: impl Into<String>) -> ImportResult {
    ImportResult {
        index: index as i32,
        outcome: ImportOutcome::Recorded as i32,
        id: id.into(),
        ..ImportResult::default()
    }
}

/// A row that was recorded before, with the id of what it found.
pub fn duplicate(index: usize, id: impl Into<String>) -> ImportResult {
    ImportResult {
        index: index as i32,
        outcome: ImportOutcome::Duplicate as i32,
        id: id.into(),
        ..ImportResult::default()
    }
}

/// A row refused with `error`: the status code the same error gets from a
/// unary call, the first offending field (or `field`, the part of the row
/// the error is about, when the error names none: the account of a
/// NOT_FOUND) and the message.
pub fn rejected(index: usize, field: &str, error: &Error) -> ImportResult {
    let (code, field, message) = match error {
        Error::InvalidArgument(v) => match v.0.first() {
            Some(first) => (Code::InvalidArgument, first.field.clone(), v.to_string()),
            None => (Code::InvalidArgument, field.to_owned(), v.to_string()),
        },
        Error::NotFound { .. } => (Code::NotFound, field.to_owned(), error.to_string()),
        Error::AlreadyExists(m) => (Code::AlreadyExists, field.to_owned(), m.clone()),
        Error::Aborted(m) => (Code::Aborted, field.to_owned(), m.clone()),
        Error::FailedPrecondition(m) => (Code::FailedPrecondition, field.to_owned(), m.clone()),
        Error::Forbidden { message, .. } => {
            (Code::PermissionDenied, field.to_owned(), message.clone())
        }
        // Rows are refused for what they say; anything else fails the
        // whole batch before it reaches here.
        Error::Unauthenticated(m) | Error::PermissionDenied(m) | Error::Unavailable(m) => {
            (Code::Unavailable, String::new(), m.clone())
        }
        Error::Database(_) | Error::Internal(_) => {
            (Code::Internal, String::new(), "internal error".to_owned())
        }
    };
    ImportResult {
        index: index as i32,
        outcome: ImportOutcome::Rejected as i32,
        code: code as i32,
        field,
        message,
        id: String::new(),
    }
}

/// How many results of each outcome: (recorded, duplicates, rejected).
pub fn tally(results: &[ImportResult]) -> (i32, i32, i32) {
    let count = |o: ImportOutcome| results.iter().filter(|r| r.outcome == o as i32).count() as i32;
    (
        count(ImportOutcome::Recorded),
        count(ImportOutcome::Duplicate),
        count(ImportOutcome::Rejected),
    )
}
