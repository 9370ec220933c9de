//! What a service keeps in its database, for the retention tests: they
//! check that pruning left exactly the rows its window allows, which no
//! API answers; and the rows an older version would not have written, for
//! the tests of what a service fills in on its own.

use bowtie_runtime::config::DatabaseSettings;
use bowtie_runtime::db::Db;
use bowtie_runtime::sql::query_one;
use sea_orm::sea_query::{Alias, Asterisk, Expr, Query};

/// How many rows `table` of the database at `database` holds; with
/// `below`, only those whose column is less than the value.
pub async fn count_rows(
    database: &DatabaseSettings,
    table: &str,
    below: Option<(&str, i64)>,
) -> anyhow::Result<i64> {
    let db = Db::connect(database).await?;
    let mut select = Query::select()
        .expr_as(Expr::col(Asterisk).count(), Alias::new("n"))
        .from(Alias::new(table))
        .to_owned();
    if let Some((column, value)) = below {
        select.and_where(Expr::col(Alias::new(column)).lt(value));
    }
    let row = query_one(db.reader(), &select).await;
    db.close().await;
    Ok(match row? {
        Some(row) => row.try_get::<i64>("", "n")?,
        None => 0,
    })
}

/// Deletes every row of `table` of the database at `database` (a state an
/// older version left: a table it did not fill); how many it deleted.
pub async fn delete_rows(database: &DatabaseSettings, table: &str) -> anyhow::Result<u64> {
    let db = Db::connect(database).await?;
    let delete = Query::delete().from_table(Alias::new(table)).to_owned();
    let deleted = bowtie_runtime::sql::execute_counted(db.writer(), &delete).await;
    db.close().await;
    Ok(deleted?)
}
