//! `signals`: every accepted signal, keyed by its idempotency key, so a
//! replayed batch inserts nothing and answers which keys were new.

use std::collections::HashSet;

use bowtie_proto::scoring::SignalType;
use bowtie_runtime::error::Error;
use bowtie_runtime::sql::{internal, query};
use bowtie_runtime::{AccountId, Instant};
use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{OnConflict, Query};

use super::entity::signal::{Column as S, Entity as Signals};

/// A validated signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSignal {
    /// Its idempotency key.
    pub key: String,
    /// The account.
    pub account_id: AccountId,
    /// Its type.
    pub kind: SignalType,
    /// The value (counts already defaulted to 1).
    pub value: i64,
    /// When it happened.
    pub occurred_at: Instant,
}

/// Inserts signals, skipping keys recorded before; returns the keys inserted.
pub async fn insert_signals<C: ConnectionTrait>(
    conn: &C,
    signals: &[NewSignal],
    now: Instant,
) -> Result<HashSet<String>, Error> {
    let mut inserted = HashSet::with_capacity(signals.len());
    // 6 values a row: within SQLite's 32,766 and PostgreSQL's 65,535 parameters.
    for chunk in signals.chunks(5000) {
        let mut insert = Query::insert();
        insert
            .into_table(Signals)
            .columns([
                S::IdempotencyKey,
                S::AccountId,
                S::Kind,
                S::Value,
                S::OccurredAt,
                S::RecordedAt,
            ])
            .on_conflict(
                OnConflict::column(S::IdempotencyKey)
                    .do_nothing()
                    .to_owned(),
            )
            .returning_col(S::IdempotencyKey);
        for s in chunk {
            insert
                .values([
                    s.key.clone().into(),
                    s.account_id.to_string().into(),
                    (s.kind as i32).into(),
                    s.value.into(),
                    s.occurred_at.micros().into(),
                    now.micros().into(),
                ])
                .map_err(internal)?;
        }
        for row in query(conn, &insert).await? {
            inserted.insert(row.try_get_by_index::<String>(0)?);
        }
    }
    Ok(inserted)
}
