//! The runtime's raw PostgreSQL statements, gathered in one place: the few
//! things sea-query cannot say. Each says why it is raw.
//!
//! - Schemas: `CREATE SCHEMA` / `DROP SCHEMA` take an identifier, and an
//!   identifier cannot be a bound parameter. The name is checked against
//!   [`valid_schema`] (lower-case letters, digits, `_`) before it is quoted
//!   into the statement, so nothing else can reach the SQL text.
//! - Advisory locks and privilege checks are PostgreSQL functions with no
//!   builder form; their arguments are bound.
//! - `SET LOCAL lock_timeout` is a setting, which has no builder form and
//!   takes no parameters; its value is a number the runtime formats.
//!
//! Tests and benchmarks create and drop their throw-away schemas through
//! the same functions.

use sea_orm::{ConnectionTrait, DbBackend, Statement};

use crate::error::Error;

/// Whether `schema` is a name Bowtie accepts for a PostgreSQL schema: 1 to
/// 63 lower-case ASCII letters, digits and `_`, not starting with a digit.
pub fn valid_schema(schema: &str) -> bool {
    !schema.is_empty()
        && schema.len() <= 63
        && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn checked(schema: &str) -> Result<&str, Error> {
    if valid_schema(schema) {
        Ok(schema)
    } else {
        Err(Error::Internal(anyhow::anyhow!(
            "database.schema must be a lower-case identifier, got {schema:?}"
        )))
    }
}

/// `CREATE SCHEMA IF NOT EXISTS` (raw: a schema name is an identifier, which
/// no placeholder can stand for; [`valid_schema`] guards the text).
pub async fn create_schema<C: ConnectionTrait>(conn: &C, schema: &str) -> Result<(), Error> {
    let schema = checked(schema)?;
    conn.execute_unprepared(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
        .await?;
    Ok(())
}

/// `DROP SCHEMA IF EXISTS ... CASCADE`, for throw-away test and benchmark
/// schemas (raw for the same reason as [`create_schema`]).
pub async fn drop_schema<C: ConnectionTrait>(conn: &C, schema: &str) -> Result<(), Error> {
    let schema = checked(schema)?;
    conn.execute_unprepared(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await?;
    Ok(())
}

/// Whether the connected role may use and create in `schema` (raw:
/// `has_schema_privilege` is a function with no builder form).
pub async fn schema_usable<C: ConnectionTrait>(conn: &C, schema: &str) -> Result<bool, Error> {
    Ok(conn
        .query_one(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT has_schema_privilege($1, 'USAGE, CREATE') AS usable",
            [schema.into()],
        ))
        .await?
        .map(|row| row.try_get::<bool>("", "usable"))
        .transpose()?
        .unwrap_or(false))
}

/// Takes the transaction-scoped advisory lock named by `key` (hashed by
/// PostgreSQL's `hashtext`); raw: advisory locks are functions.
pub async fn advisory_lock<C: ConnectionTrait>(txn: &C, key: &str) -> Result<(), Error> {
    txn.execute(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT pg_advisory_xact_lock(hashtext($1))",
        [key.into()],
    ))
    .await?;
    Ok(())
}

/// Makes every lock wait of the rest of the transaction give up after
/// `millis` (`SET LOCAL lock_timeout`; raw: a setting has no builder form,
/// and `SET` takes no bound parameters, so the number is formatted in).
pub async fn lock_timeout<C: ConnectionTrait>(txn: &C, millis: u32) -> Result<(), Error> {
    txn.execute_unprepared(&format!("SET LOCAL lock_timeout = {millis}"))
        .await?;
    Ok(())
}

/// Takes the transaction-scoped advisory lock with the numeric `id`.
pub async fn advisory_lock_id<C: ConnectionTrait>(txn: &C, id: i64) -> Result<(), Error> {
    txn.execute(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT pg_advisory_xact_lock($1)",
        [id.into()],
    ))
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_lower_case_identifiers() {
        assert!(valid_schema("bowtie_scoring"));
        assert!(valid_schema("_t1"));
        assert!(!valid_schema(""));
        assert!(!valid_schema("1abc"));
        assert!(!valid_schema("Upper"));
        assert!(!valid_schema("a\"; DROP TABLE x; --"));
        assert!(!valid_schema(&"a".repeat(64)));
    }
}
