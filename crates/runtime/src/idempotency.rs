//! The idempotency-key store.
//!
//! A write that carries a key stores the key, a fingerprint of the request and
//! the encoded response in the same transaction as the change itself. A repeat
//! with the same key and the same request gets the stored response without
//! writing again; the same key with a different request (or another method) is
//! rejected. Keys are global to a service, not per method, so a client cannot
//! accidentally reuse one for an unrelated call and have it silently succeed.
//!
//! Keys expire after `idempotency.retention_days`: a key older than that is
//! treated as absent (a request carrying it runs as new, and its new response
//! replaces the old row), whether or not the pruner has deleted it yet.

use sea_orm::sea_query::{Expr, OnConflict, Query};
use sea_orm::{ConnectionTrait, StatementBuilder};
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::schema::IdempotencyKeys;

/// A validated key and the fingerprint of the request that carried it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    /// The client's key.
    pub key: String,
    /// Hex SHA-256 of the method name and the encoded request.
    pub fingerprint: String,
}

impl Idempotency {
    /// `None` when the request carried no key.
    ///
    /// The fingerprint covers the whole request including the key field, which
    /// is harmless: a repeat carries the same key.
    pub fn new<M: prost::Message>(key: Option<String>, method: &str, request: &M) -> Option<Self> {
        let key = key?;
        let mut hasher = Sha256::new();
        hasher.update(method.as_bytes());
        hasher.update([0u8]);
        hasher.update(request.encode_to_vec());
        Some(Self {
            key,
            fingerprint: hex::encode(hasher.finalize()),
        })
    }
}

/// The stored response for `idem`, if the key was used after `expired_before`
/// (microseconds; keys created earlier count as absent) with the same
/// request; an INVALID_ARGUMENT error if it was used with a different one.
pub async fn replay<C: ConnectionTrait, R: prost::Message + Default>(
    conn: &C,
    idem: &Idempotency,
    expired_before: i64,
) -> Result<Option<R>, Error> {
    let stmt = Query::select()
        .columns([IdempotencyKeys::Fingerprint, IdempotencyKeys::Response])
        .from(IdempotencyKeys::Table)
        .and_where(Expr::col(IdempotencyKeys::Key).eq(idem.key.as_str()))
        .and_where(Expr::col(IdempotencyKeys::CreatedAt).gte(expired_before))
        .to_owned();
    let Some(row) = conn
        .query_one(StatementBuilder::build(&stmt, &conn.get_database_backend()))
        .await?
    else {
        return Ok(None);
    };
    let fingerprint: String = row.try_get("", "fingerprint")?;
    if fingerprint != idem.fingerprint {
        return Err(Error::invalid(
            "idempotency_key",
            "was already used for a different request",
        ));
    }
    let bytes: Vec<u8> = row.try_get("", "response")?;
    let response = R::decode(bytes.as_slice())
        .map_err(|e| Error::Internal(anyhow::Error::new(e).context("stored response")))?;
    Ok(Some(response))
}

/// Records the response of a first execution, inside its transaction; an
/// expired row of the same key (created before `expired_before`) is
/// replaced. `false` when a live row holds the key: a concurrent request
/// with the same key won.
pub(crate) async fn record<C: ConnectionTrait>(
    conn: &C,
    idem: &Idempotency,
    response: &[u8],
    now: i64,
    expired_before: i64,
) -> Result<bool, Error> {
    let stmt = Query::insert()
        .into_table(IdempotencyKeys::Table)
        .columns([
            IdempotencyKeys::Key,
            IdempotencyKeys::Fingerprint,
            IdempotencyKeys::Response,
            IdempotencyKeys::CreatedAt,
        ])
        .values([
            idem.key.clone().into(),
            idem.fingerprint.clone().into(),
            response.to_vec().into(),
            now.into(),
        ])
        .map_err(|e| Error::Internal(e.into()))?
        .on_conflict(
            OnConflict::column(IdempotencyKeys::Key)
                .update_columns([
                    IdempotencyKeys::Fingerprint,
                    IdempotencyKeys::Response,
                    IdempotencyKeys::CreatedAt,
                ])
                .action_and_where(
                    Expr::col((IdempotencyKeys::Table, IdempotencyKeys::CreatedAt))
                        .lt(expired_before),
                )
                .to_owned(),
        )
        .to_owned();
    let result = conn
        .execute(StatementBuilder::build(&stmt, &conn.get_database_backend()))
        .await?;
    Ok(result.rows_affected() == 1)
}

/// Deletes up to `batch` keys created before `expired_before`, oldest
/// first; answers how many.
pub(crate) async fn prune<C: ConnectionTrait>(
    conn: &C,
    expired_before: i64,
    batch: u64,
) -> Result<u64, Error> {
    let oldest = Query::select()
        .column(IdempotencyKeys::Key)
        .from(IdempotencyKeys::Table)
        .and_where(Expr::col(IdempotencyKeys::CreatedAt).lt(expired_before))
        .order_by(IdempotencyKeys::CreatedAt, sea_orm::sea_query::Order::Asc)
        .limit(batch)
        .to_owned();
    let stmt = Query::delete()
        .from_table(IdempotencyKeys::Table)
        .and_where(Expr::col(IdempotencyKeys::Key).in_subquery(oldest))
        .to_owned();
    let result = conn
        .execute(StatementBuilder::build(&stmt, &conn.get_database_backend()))
        .await?;
    Ok(result.rows_affected())
}
