//! The streamed kinds of `bowtie import` (subscription events, invoices,
//! transitions): the rows are read and checked here, sent in batches of
//! [`BATCH_ROWS`] over the service's import stream, and every batch's
//! acknowledgement (sent once it is committed) advances the progress bar.
//!
//! Resuming: when the stream breaks in transit (the server restarts, the
//! network drops), the batches not yet acknowledged are sent again on a new
//! stream, up to [`ATTEMPTS`] times; acknowledged batches are never re-sent.
//! When the import gives up, or is interrupted, running it again with the
//! same file finishes it: every row is idempotent by its content, so the
//! rows that landed before come back as already there and nothing is
//! recorded twice.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use bowtie_proto::common::{ImportOutcome, ImportResult};
use bowtie_proto::funnel::{ImportTransitionsRequest, ImportedTransition};
use bowtie_proto::revenue::{
    ImportInvoicesRequest, ImportSubscriptionEventsRequest, ImportedInvoice, SubscriptionEvent,
    SubscriptionEventType,
};
use indicatif::ProgressBar;
use prost_types::Timestamp;
use tonic::{Code, Status, Streaming};

use crate::client::{Target, describe};
use crate::import::{
    DEFAULT_SOURCE, Kind, Row, RowError, account_of, cancel_kind_of, interval_of, optional_time,
    parse_amount, parse_stage, terms_of,
};

/// Rows per batch: well under the services' 5,000 and the 4 MiB message
/// limit, and large enough that a batch's transaction carries its cost.
pub const BATCH_ROWS: usize = 1_000;
/// New streams tried after the stream breaks in transit.
const ATTEMPTS: u32 = 4;

/// What the streamed rows came to.
#[derive(Debug, Default)]
pub(crate) struct Streamed {
    /// Rows that failed, here or at the server.
    pub errors: Vec<RowError>,
    /// Rows recorded by this import.
    pub recorded: usize,
    /// Rows that were already there.
    pub duplicates: usize,
}

type Directory = HashMap<(String, String), String>;

/// Checks `rows` of `kind`, sends the good ones over the service's import
/// stream and collects every row's outcome.
pub(crate) async fn send(
    target: &Target,
    kind: Kind,
    directory: &Directory,
    rows: Vec<Row>,
    progress: &ProgressBar,
) -> anyhow::Result<Streamed> {
    let mut out = Streamed::default();
    match kind {
        Kind::SubscriptionEvents => {
            let (lines, wire) = convert(&rows, &mut out, |r| event_row(directory, r));
            progress.inc(out.errors.len() as u64);
            let client = target.revenue()?;
            let results = drive(
                wire,
                |events| {
                    let mut client = client.clone();
                    let requests = events
                        .into_iter()
                        .map(|events| ImportSubscriptionEventsRequest { events });
                    async move {
                        let stream = futures::stream::iter(requests);
                        Ok(client
                            .import_subscription_events(stream)
                            .await?
                            .into_inner())
                    }
                },
                |r| r.results,
                progress,
            )
            .await?;
            tally(&lines, results, &mut out);
        }
        Kind::Invoices => {
            let (lines, wire) = convert(&rows, &mut out, |r| invoice_row(directory, r));
            progress.inc(out.errors.len() as u64);
            let client = target.revenue()?;
            let results = drive(
                wire,
                |invoices| {
                    let mut client = client.clone();
                    let requests = invoices
                        .into_iter()
                        .map(|invoices| ImportInvoicesRequest { invoices });
                    async move {
                        let stream = futures::stream::iter(requests);
                        Ok(client.import_invoices(stream).await?.into_inner())
                    }
                },
                |r| r.results,
                progress,
            )
            .await?;
            tally(&lines, results, &mut out);
        }
        Kind::Transitions => {
            let (lines, wire) = convert(&rows, &mut out, |r| transition_row(directory, r));
            progress.inc(out.errors.len() as u64);
            let client = target.funnel()?;
            let results = drive(
                wire,
                |transitions| {
                    let mut client = client.clone();
                    let requests = transitions
                        .into_iter()
                        .map(|transitions| ImportTransitionsRequest { transitions });
                    async move {
                        let stream = futures::stream::iter(requests);
                        Ok(client.import_transitions(stream).await?.into_inner())
                    }
                },
                |r| r.results,
                progress,
            )
            .await?;
            tally(&lines, results, &mut out);
        }
        Kind::Accounts | Kind::Subscriptions => {
            anyhow::bail!("{kind:?} files are not imported over a stream")
        }
    }
    Ok(out)
}

/// The good rows as batches of their wire form with their lines (in the
/// same order); the bad ones become errors in `out`.
fn convert<T>(
    rows: &[Row],
    out: &mut Streamed,
    wire: impl Fn(&Row) -> Result<T, String>,
) -> (Vec<u64>, Vec<Vec<T>>) {
    let mut lines = Vec::with_capacity(rows.len());
    let mut batches: Vec<Vec<T>> = Vec::new();
    for row in rows {
        match wire(row) {
            Ok(w) => {
                lines.push(row.line);
                match batches.last_mut() {
                    Some(batch) if batch.len() < BATCH_ROWS => batch.push(w),
                    _ => batches.push(vec![w]),
                }
            }
            Err(message) => out.errors.push(RowError {
                line: row.line,
                message,
            }),
        }
    }
    (lines, batches)
}

/// Whether a new stream may succeed where this one failed.
fn transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled
    ) || bowtie_runtime::peer::broke_in_transit(status)
}

/// Sends `batches` over streams `open` opens, collecting each batch's
/// results as it is acknowledged; after a transient failure the batches not
/// yet acknowledged go out again on a new stream.
async fn drive<T, Resp, Open, Fut>(
    batches: Vec<Vec<T>>,
    mut open: Open,
    results: fn(Resp) -> Vec<ImportResult>,
    progress: &ProgressBar,
) -> anyhow::Result<Vec<Vec<ImportResult>>>
where
    T: Clone,
    Open: FnMut(Vec<Vec<T>>) -> Fut,
    Fut: Future<Output = Result<Streaming<Resp>, Status>>,
{
    let total = batches.len();
    let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
    let mut acked: Vec<Vec<ImportResult>> = Vec::with_capacity(total);
    let mut failures = 0;
    while acked.len() < total {
        let outcome = async {
            let mut stream = open(batches[acked.len()..].to_vec()).await?;
            while acked.len() < total {
                let Some(response) = stream.message().await? else {
                    return Err(Status::unavailable(
                        "the server ended the import stream before acknowledging every batch",
                    ));
                };
                progress.inc(sizes[acked.len()] as u64);
                acked.push(results(response));
            }
            Ok(())
        }
        .await;
        match outcome {
            Ok(()) => {}
            Err(status) if transient(&status) && failures < ATTEMPTS => {
                failures += 1;
                progress.set_message(format!("reconnecting ({})", describe(&status)));
                tokio::time::sleep(Duration::from_millis(250 << failures)).await;
            }
            Err(status) => {
                let done: usize = sizes[..acked.len()].iter().sum();
                let all: usize = sizes.iter().sum();
                anyhow::bail!(
                    "{} after {done} of {all} rows were acknowledged; run the import again \
                     with the same file to finish it (rows already recorded are not recorded \
                     twice)",
                    describe(&status)
                );
            }
        }
    }
    Ok(acked)
}

/// Adds the results of every acknowledged batch to `out`, by line.
fn tally(lines: &[u64], batches: Vec<Vec<ImportResult>>, out: &mut Streamed) {
    let mut offset = 0;
    for batch in batches {
        let size = batch.len();
        for r in batch {
            let line = usize::try_from(r.index)
                .ok()
                .and_then(|i| lines.get(offset + i))
                .copied()
                .unwrap_or_default();
            match ImportOutcome::try_from(r.outcome).unwrap_or_default() {
                ImportOutcome::Recorded => out.recorded += 1,
                ImportOutcome::Duplicate => out.duplicates += 1,
                _ => out.errors.push(RowError {
                    line,
                    message: rejection(&r),
                }),
            }
        }
        offset += size;
    }
}

/// A rejected row's message, as `describe` renders a refused call.
fn rejection(r: &ImportResult) -> String {
    let mut text = format!("{:?}: {}", Code::from(r.code), r.message);
    if !r.field.is_empty() && !r.message.contains(&r.field) {
        text.push_str(&format!(" (field: {})", r.field));
    }
    text
}

fn required_time(row: &Row, column: &str) -> Result<Timestamp, String> {
    optional_time(row, column)?.ok_or_else(|| format!("{column}: must not be empty"))
}

/// The account a row names, when it names one.
fn optional_account(directory: &Directory, row: &Row) -> Result<String, String> {
    if row.get("account_id").is_none() && row.get("account_external_id").is_none() {
        return Ok(String::new());
    }
    account_of(directory, row).map(str::to_owned)
}

fn event_row(directory: &Directory, row: &Row) -> Result<SubscriptionEvent, String> {
    let subscription_id = row.required("subscription_id")?.to_owned();
    let event_text = row.required("event")?;
    let kind = match event_text.to_ascii_lowercase().as_str() {
        "start" => SubscriptionEventType::Start,
        "change" => SubscriptionEventType::Change,
        "cancel" => SubscriptionEventType::Cancel,
        _ => {
            return Err(format!(
                "event: {event_text:?} is not start, change or cancel"
            ));
        }
    };
    let effective_at = Some(required_time(row, "effective_date")?);
    let event = SubscriptionEvent {
        subscription_id,
        r#type: kind as i32,
        effective_at,
        ..SubscriptionEvent::default()
    };
    Ok(match kind {
        SubscriptionEventType::Start => SubscriptionEvent {
            account_id: account_of(directory, row)?.to_owned(),
            terms: Some(terms_of(row)?),
            billing_interval: interval_of(row)? as i32,
            trial_end_at: optional_time(row, "trial_end_date")?,
            term_end_at: optional_time(row, "term_end_date")?,
            ..event
        },
        SubscriptionEventType::Change => SubscriptionEvent {
            account_id: optional_account(directory, row)?,
            terms: Some(terms_of(row)?),
            ..event
        },
        _ => SubscriptionEvent {
            account_id: optional_account(directory, row)?,
            cancellation_kind: cancel_kind_of(row)? as i32,
            reason_code: row.required("cancel_reason")?.to_owned(),
            ..event
        },
    })
}

fn invoice_row(directory: &Directory, row: &Row) -> Result<ImportedInvoice, String> {
    let currency = row.get("currency").unwrap_or("USD").to_ascii_uppercase();
    let exponent = bowtie_revenue::domain::minor_exponent(&currency)
        .ok_or_else(|| format!("currency: unknown currency {currency:?}"))?;
    let amount_text = row.required("amount")?;
    let amount = parse_amount(amount_text, exponent).ok_or_else(|| {
        format!("amount: {amount_text:?} is not an amount in {currency} (e.g. 49.00)")
    })?;
    Ok(ImportedInvoice {
        external_id: row.required("invoice_id")?.to_owned(),
        account_id: account_of(directory, row)?.to_owned(),
        subscription_id: row.get("subscription_id").unwrap_or_default().to_owned(),
        amount: Some(bowtie_proto::common::Money {
            currency_code: currency,
            minor_units: amount,
        }),
        due_at: Some(required_time(row, "due_date")?),
        paid_at: optional_time(row, "paid_date")?,
    })
}

fn transition_row(directory: &Directory, row: &Row) -> Result<ImportedTransition, String> {
    let account_id = account_of(directory, row)?.to_owned();
    let stage_text = row.required("stage")?;
    let stage = parse_stage(stage_text).ok_or_else(|| {
        format!(
            "stage: unknown stage {stage_text:?} (awareness, education, selection, commit, \
             onboarding, impact, growth, lost, churned)"
        )
    })?;
    Ok(ImportedTransition {
        account_id,
        to_stage: stage as i32,
        occurred_at: Some(required_time(row, "occurred_at")?),
        reason: row.get("reason").unwrap_or_default().to_owned(),
        source: row.get("source").unwrap_or(DEFAULT_SOURCE).to_owned(),
    })
}
