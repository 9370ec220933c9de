//! Every statement of the scoring service written as SQL text rather than
//! built: what the query builder cannot say, or says in a shape a
//! recomputation of every account cannot afford. All of them are
//! PostgreSQL's; each says why it is text.

use futures::StreamExt;
use sea_orm::sea_query::{PostgresQueryBuilder, SelectStatement};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, RuntimeErr, Statement, Value,
};

use bowtie_runtime::error::Error;
use bowtie_runtime::{AccountId, Instant};

use super::copy::CopyDecoder;
use super::health::{HealthRow, Snapshot};
use crate::domain::cells::Cell;

/// Sets (or, with `None`, resets) the fill factor of `health`: a storage
/// parameter, which the schema builder has no words for.
pub async fn set_health_fillfactor<C: ConnectionTrait>(
    conn: &C,
    percent: Option<u8>,
) -> Result<(), DbErr> {
    let sql = match percent {
        Some(p) => format!("ALTER TABLE health SET (fillfactor = {p})"),
        None => "ALTER TABLE health RESET (fillfactor)".to_owned(),
    };
    conn.execute_unprepared(&sql).await.map(drop)
}

/// Writes health rows (insert or replace) from one array per column: a
/// short statement PostgreSQL plans once however many rows, where a
/// multi-row `VALUES` (what the builder writes) is parsed and planned anew
/// for every size and tops out at 65,535 parameters. The builder cannot
/// write `UNNEST` of typed arrays. A risk of -1 stands for none.
pub async fn save_health<C: ConnectionTrait>(
    conn: &C,
    rows: &[&HealthRow],
    now: Instant,
) -> Result<(), Error> {
    let column = |f: fn(&HealthRow) -> i32| -> Value {
        rows.iter().map(|r| f(r)).collect::<Vec<i32>>().into()
    };
    let values: Vec<Value> = vec![
        rows.iter()
            .map(|r| r.account_id.to_string())
            .collect::<Vec<String>>()
            .into(),
        column(|r| r.segment as i32),
        column(|r| r.score),
        column(|r| r.band as i32),
        column(|r| r.risk_bp.unwrap_or(-1)),
        column(|r| r.tier as i32),
        column(|r| r.quadrant as i32),
        rows.iter()
            .map(|r| r.mrr.get())
            .collect::<Vec<i64>>()
            .into(),
        rows.iter()
            .map(|r| r.body.clone())
            .collect::<Vec<Vec<u8>>>()
            .into(),
        now.micros().into(),
    ];
    conn.execute(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "INSERT INTO health (account_id, segment, score, band, risk_bp, tier, quadrant, mrr, \
         body, computed_at) \
         SELECT a, s, sc, b, NULLIF(r, -1), t, q, m, bo, $10 FROM UNNEST($1::varchar[], \
         $2::int4[], $3::int4[], $4::int4[], $5::int4[], $6::int4[], $7::int4[], $8::int8[], \
         $9::bytea[]) AS u(a, s, sc, b, r, t, q, m, bo) \
         ON CONFLICT (account_id) DO UPDATE SET segment = EXCLUDED.segment, \
         score = EXCLUDED.score, band = EXCLUDED.band, risk_bp = EXCLUDED.risk_bp, \
         tier = EXCLUDED.tier, quadrant = EXCLUDED.quadrant, mrr = EXCLUDED.mrr, \
         body = EXCLUDED.body, computed_at = EXCLUDED.computed_at",
        values,
    ))
    .await?;
    Ok(())
}

/// Writes snapshots (insert or replace) from one array per column, for the
/// reasons of [`save_health`].
pub async fn save_snapshots<C: ConnectionTrait>(conn: &C, rows: &[&Snapshot]) -> Result<(), Error> {
    let values: Vec<Value> = vec![
        rows.iter()
            .map(|r| r.account_id.to_string())
            .collect::<Vec<String>>()
            .into(),
        rows.iter().map(|r| r.day).collect::<Vec<i64>>().into(),
        rows.iter().map(|r| r.score).collect::<Vec<i32>>().into(),
        rows.iter()
            .map(|r| r.band as i32)
            .collect::<Vec<i32>>()
            .into(),
    ];
    conn.execute(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "INSERT INTO health_history (account_id, day, score, band) \
         SELECT a, d, s, b FROM UNNEST($1::varchar[], $2::int8[], $3::int4[], $4::int4[]) \
         AS u(a, d, s, b) \
         ON CONFLICT (account_id, day) DO UPDATE SET score = EXCLUDED.score, \
         band = EXCLUDED.band",
        values,
    ))
    .await?;
    Ok(())
}

/// Runs `select` (the seven columns of a `signal_days` row, in order) as
/// `COPY ... TO STDOUT` in the binary format and decodes the rows as they
/// arrive: a recomputation reads about ten cells per account, and the
/// binary copy is much lighter for both sides than a result set read
/// column by column.
///
/// `COPY` takes no bind parameters, so the select is rendered with its
/// values as literals by the query builder (which quotes and escapes them);
/// they are day numbers and account ids the caller parsed.
pub async fn copy_cells(
    conn: &DatabaseConnection,
    select: &SelectStatement,
) -> Result<Vec<(AccountId, Cell)>, Error> {
    use sea_orm::sqlx::Executor;
    let sqlx_error =
        |e: sea_orm::sqlx::Error| Error::Database(DbErr::Query(RuntimeErr::SqlxError(e)));
    let pool = conn.get_postgres_connection_pool();
    let mut txn = pool.begin().await.map_err(sqlx_error)?;
    // A key range's cells are scattered over the table (rows arrive in time
    // order, not account order): a bitmap scan reads each page once, where
    // an index scan returns to a page for every row. Without statistics,
    // e.g. on a table filled minutes ago, PostgreSQL expects a few rows and
    // picks the index scan, so it is ruled out for this statement. A planner
    // setting is not something the builder says.
    (&mut *txn)
        .execute("SET LOCAL enable_indexscan = off")
        .await
        .map_err(sqlx_error)?;
    let mut out = Vec::new();
    {
        let select = select.to_string(PostgresQueryBuilder);
        let mut stream = txn
            .copy_out_raw(&format!("COPY ({select}) TO STDOUT (FORMAT binary)"))
            .await
            .map_err(sqlx_error)?;
        let mut decoder = CopyDecoder::default();
        while let Some(chunk) = stream.next().await {
            decoder.feed(&chunk.map_err(sqlx_error)?, &mut out)?;
        }
        decoder.finish()?;
    }
    txn.commit().await.map_err(sqlx_error)?;
    Ok(out)
}
