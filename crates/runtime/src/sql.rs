//! The small storage helpers every service's storage layer uses, written
//! once: running a sea-query statement on whichever backend the connection
//! is, and turning a stored value that does not parse into an internal error.
//!
//! A stored value that fails to parse means the database holds something
//! Bowtie never wrote (a hand edit, a bug in an older version): it is an
//! internal error, logged with what was wrong and answered as INTERNAL, never
//! shown to the client and never a panic.

use sea_orm::{ConnectionTrait, QueryResult, StatementBuilder};
use uuid::Uuid;

use crate::error::Error;

/// An internal error for a stored value that does not parse; `what` names it.
pub fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::Internal(anyhow::anyhow!("corrupt row: {what}"))
}

/// An internal error from anything displayable: a statement the builder
/// refused, a value that cannot be encoded.
pub fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(anyhow::anyhow!("{e}"))
}

/// A stored UUID, or an internal error naming the value.
pub fn stored_uuid(raw: &str) -> Result<Uuid, Error> {
    Uuid::parse_str(raw).map_err(|_| corrupt(format_args!("stored id {raw:?} is not a UUID")))
}

/// Runs a statement built with sea-query (insert, update, delete, schema)
/// with its values bound, on the connection's backend.
pub async fn execute<C: ConnectionTrait, S: StatementBuilder>(
    conn: &C,
    stmt: &S,
) -> Result<(), Error> {
    execute_counted(conn, stmt).await.map(drop)
}

/// [`execute`], answering how many rows the statement changed.
pub async fn execute_counted<C: ConnectionTrait, S: StatementBuilder>(
    conn: &C,
    stmt: &S,
) -> Result<u64, Error> {
    let result = conn
        .execute(StatementBuilder::build(stmt, &conn.get_database_backend()))
        .await?;
    Ok(result.rows_affected())
}

/// Runs a select built with sea-query and returns every row.
pub async fn query<C: ConnectionTrait, S: StatementBuilder>(
    conn: &C,
    stmt: &S,
) -> Result<Vec<QueryResult>, Error> {
    Ok(conn
        .query_all(StatementBuilder::build(stmt, &conn.get_database_backend()))
        .await?)
}

/// Runs a select built with sea-query and returns its first row, if any.
pub async fn query_one<C: ConnectionTrait, S: StatementBuilder>(
    conn: &C,
    stmt: &S,
) -> Result<Option<QueryResult>, Error> {
    Ok(conn
        .query_one(StatementBuilder::build(stmt, &conn.get_database_backend()))
        .await?)
}

/// The migration crate the [`migrator!`](crate::migrator) expansion names,
/// so a service needs no path of its own to it.
#[doc(hidden)]
pub use sea_orm_migration as migration;

/// Declares a service's `Migrator`: the runtime's tables
/// ([`runtime_migrations`](crate::schema::runtime_migrations)), then the
/// service's own migrations in the order given.
#[macro_export]
macro_rules! migrator {
    ($($own:expr),+ $(,)?) => {
        /// The service's migrations: the runtime's tables, then its own.
        #[derive(Debug)]
        pub struct Migrator;

        impl $crate::sql::migration::MigratorTrait for Migrator {
            fn migrations() -> Vec<Box<dyn $crate::sql::migration::MigrationTrait>> {
                let mut migrations = $crate::schema::runtime_migrations();
                $(migrations.push(Box::new($own));)+
                migrations
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_id_that_is_not_a_uuid_is_an_internal_error_naming_it() {
        let e = stored_uuid("not-a-uuid").err().map(|e| format!("{e:?}"));
        assert!(e.is_some_and(|e| e.contains("not-a-uuid")));
    }

    #[test]
    fn a_stored_uuid_parses() {
        let id = Uuid::new_v4();
        assert_eq!(stored_uuid(&id.to_string()).ok(), Some(id));
    }
}
