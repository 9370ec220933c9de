//! `bowtie export <kind>`: a streaming export (accounts, subscriptions,
//! movements, transitions, health) as JSON lines on a writer, the same
//! lines as the gateway's `GET /api/v1/export/<kind>`: each with the
//! `cursor` that resumes after its row (`--cursor`).

use std::io::Write;

use bowtie_gateway::representation as rest;
use futures::StreamExt;
use serde::Serialize;

use crate::client::{Target, describe};

/// What to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Every account, archived ones too, in creation order (accounts).
    Accounts,
    /// Every subscription, by id (revenue).
    Subscriptions,
    /// Every MRR movement, by time then account (revenue).
    Movements,
    /// Every recorded transition, in the order recorded (funnel).
    Transitions,
}

impl Kind {
    /// The service that holds the rows.
    pub fn service(self) -> crate::client::Service {
        match self {
            Kind::Accounts => crate::client::Service::Accounts,
            Kind::Subscriptions | Kind::Movements => crate::client::Service::Revenue,
            Kind::Transitions => crate::client::Service::Funnel,
        }
    }
}

fn lines<T: Serialize>(out: &mut impl Write, rows: Vec<T>) -> anyhow::Result<u64> {
    let n = rows.len() as u64;
    for row in rows {
        serde_json::to_writer(&mut *out, &row)?;
        out.write_all(b"\n")?;
    }
    Ok(n)
}

/// Writes every message of an export stream's answer to `out` as JSON
/// lines (`rows` gives a message's lines); returns the number written.
async fn drain<M, T: Serialize>(
    rpc: &str,
    answer: Result<tonic::Response<tonic::Streaming<M>>, tonic::Status>,
    rows: fn(M) -> Vec<T>,
    out: &mut impl Write,
) -> anyhow::Result<u64> {
    let failed = |s: tonic::Status| anyhow::anyhow!("{rpc}: {}", describe(&s));
    let mut stream = answer.map_err(failed)?.into_inner();
    let mut written = 0;
    while let Some(m) = stream.next().await {
        written += lines(out, rows(m.map_err(failed)?))?;
    }
    Ok(written)
}

/// Writes export `kind` from after `cursor` (empty: from the first row),
/// `batch_size` rows per message (0: the service's default), to `out` as
/// JSON lines; returns the number of rows written.
pub async fn export(
    target: &Target,
    kind: Kind,
    cursor: &str,
    batch_size: i32,
    out: &mut impl Write,
) -> anyhow::Result<u64> {
    let cursor = cursor.to_owned();
    let written = match kind {
        Kind::Accounts => {
            let request = bowtie_proto::accounts::ExportAccountsRequest { cursor, batch_size };
            let answer = target.accounts()?.export_accounts(request).await;
            drain("ExportAccounts", answer, rest::account_lines, out).await?
        }
        Kind::Movements => {
            let request = bowtie_proto::revenue::ExportMovementsRequest { cursor, batch_size };
            let answer = target.revenue()?.export_movements(request).await;
            drain("ExportMovements", answer, rest::movement_lines, out).await?
        }
        Kind::Subscriptions => {
            let request = bowtie_proto::revenue::ExportSubscriptionsRequest { cursor, batch_size };
            let answer = target.revenue()?.export_subscriptions(request).await;
            drain("ExportSubscriptions", answer, rest::subscription_lines, out).await?
        }
        Kind::Transitions => {
            let request = bowtie_proto::funnel::ExportTransitionsRequest { cursor, batch_size };
            let answer = target.funnel()?.export_transitions(request).await;
            drain("ExportTransitions", answer, rest::transition_lines, out).await?
        }
    };
    out.flush()?;
    Ok(written)
}
