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
}

impl Kind {
    /// The service that holds the rows.
    pub fn service(self) -> crate::client::Service {
        match self {
            Kind::Accounts => crate::client::Service::Accounts,
            Kind::Subscriptions | Kind::Movements => crate::client::Service::Revenue,
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
    let mut written = 0;
    let cursor = cursor.to_owned();
    match kind {
        Kind::Accounts => {
            let mut stream = target
                .accounts()?
                .export_accounts(bowtie_proto::accounts::ExportAccountsRequest {
                    cursor,
                    batch_size,
                })
                .await
                .map_err(|s| anyhow::anyhow!("ExportAccounts: {}", describe(&s)))?
                .into_inner();
            while let Some(m) = stream.next().await {
                let m = m.map_err(|s| anyhow::anyhow!("ExportAccounts: {}", describe(&s)))?;
                written += lines(out, rest::account_lines(m))?;
            }
        }
        Kind::Movements => {
            let mut stream = target
                .revenue()?
                .export_movements(bowtie_proto::revenue::ExportMovementsRequest {
                    cursor,
                    batch_size,
                })
                .await
                .map_err(|s| anyhow::anyhow!("ExportMovements: {}", describe(&s)))?
                .into_inner();
            while let Some(m) = stream.next().await {
                let m = m.map_err(|s| anyhow::anyhow!("ExportMovements: {}", describe(&s)))?;
                written += lines(out, rest::movement_lines(m))?;
            }
        }
        Kind::Subscriptions => {
            let mut stream = target
                .revenue()?
                .export_subscriptions(bowtie_proto::revenue::ExportSubscriptionsRequest {
                    cursor,
                    batch_size,
                })
                .await
                .map_err(|s| anyhow::anyhow!("ExportSubscriptions: {}", describe(&s)))?
                .into_inner();
            while let Some(m) = stream.next().await {
                let m = m.map_err(|s| anyhow::anyhow!("ExportSubscriptions: {}", describe(&s)))?;
                written += lines(out, rest::subscription_lines(m))?;
            }
        }
    }
    out.flush()?;
    Ok(written)
}
