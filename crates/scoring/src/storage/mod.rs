//! The scoring service's own tables and the statements on them, one file per
//! concern: `schema` (migrations), `signals`, `day_cells` (the day cells
//! health is folded from, in memory on SQLite and in `signal_days` on
//! PostgreSQL), `profiles`, `health` (current scores and snapshots),
//! `alerts`, `scorecards`, `models`, `people` (each account's CSM and
//! owner, for the ownership rules), `copy` (the reader of PostgreSQL's
//! binary `COPY`) and `pg` (the only statements written as SQL text, each
//! saying why).
//!
//! Reads return domain rows (ids, instants, money and enums in their
//! domain types; the columns hold their numbers and text, converted here);
//! statements are built with sea-query from the entities' columns, every
//! value bound. The row-shaped reads (profiles, alerts, scorecards, models)
//! go through the entities; the narrow reads of a recomputation (health,
//! snapshots, day cells), 100,000 rows at a time, select only the columns
//! they need with the builder and read them by position.

pub mod alerts;
mod copy;
pub mod day_cells;
pub mod entity;
pub mod health;
pub mod models;
pub mod people;
mod pg;
pub mod profiles;
pub mod retention;
pub mod schema;
pub mod scorecards;
pub mod signals;

use bowtie_runtime::AccountId;
use bowtie_runtime::error::Error;
use bowtie_runtime::sql::stored_uuid;
use sea_orm::sea_query::{Expr, IntoColumnRef, SelectStatement};

pub use crate::domain::cells::{Cell, DayDelta, Kind, day_of};
pub use alerts::*;
pub use day_cells::{DayCells, ReadCells, add_days, newest_signal};
pub use health::*;
pub use models::*;
pub use people::{accounts_of, fill_people, lacking_people, people_of, save_people};
pub use profiles::*;
pub use schema::Migrator;
pub use scorecards::*;
pub use signals::*;

/// A stored account id, or an internal error naming the value.
fn stored_account(raw: &str) -> Result<AccountId, Error> {
    stored_uuid(raw).map(AccountId)
}

/// A stored enum number (segment, band, tier, quadrant) as its enum; a
/// number this version does not know reads as the unset value, as the
/// filters and summaries that use it treat any unknown one.
fn stored_enum<E: TryFrom<i32> + Default>(number: i32) -> E {
    E::try_from(number).unwrap_or_default()
}

/// Which accounts a read covers.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// Every account.
    All,
    /// These accounts.
    Ids(&'a [AccountId]),
    /// The accounts whose id is after `after` (from the first when `None`)
    /// and at most `last`: a key range, read without an id list.
    Range {
        /// Exclusive lower bound.
        after: Option<AccountId>,
        /// Inclusive upper bound.
        last: AccountId,
    },
}

impl Scope<'_> {
    /// Restricts `select` to the scope's accounts by `column`; `false` when
    /// the scope names no account at all (there is nothing to read).
    fn restrict<C: IntoColumnRef + Clone>(&self, select: &mut SelectStatement, column: C) -> bool {
        match self {
            Self::All => {}
            Self::Ids([]) => return false,
            Self::Ids(ids) => {
                select.and_where(Expr::col(column).is_in(ids.iter().map(AccountId::to_string)));
            }
            Self::Range { after, last } => {
                if let Some(after) = after {
                    select.and_where(Expr::col(column.clone()).gt(after.to_string()));
                }
                select.and_where(Expr::col(column).lte(last.to_string()));
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::sea_query::{Query, SqliteQueryBuilder};

    use uuid::Uuid;

    use super::*;
    use entity::profile::{Column as P, Entity as Profiles};

    fn restricted(scope: Scope<'_>) -> Option<(String, usize)> {
        let mut select = Query::select().column(P::Mrr).from(Profiles).to_owned();
        scope.restrict(&mut select, P::AccountId).then(|| {
            let (sql, values) = select.build(SqliteQueryBuilder);
            (sql, values.0.len())
        })
    }

    #[test]
    fn a_scope_restricts_a_read_with_bound_ids() {
        let ids = [AccountId(Uuid::from_u128(1)), AccountId(Uuid::from_u128(2))];
        assert_eq!(
            restricted(Scope::All),
            Some((r#"SELECT "mrr" FROM "profiles""#.to_owned(), 0))
        );
        assert_eq!(
            restricted(Scope::Ids(&ids)),
            Some((
                r#"SELECT "mrr" FROM "profiles" WHERE "account_id" IN (?, ?)"#.to_owned(),
                2
            ))
        );
        assert_eq!(
            restricted(Scope::Range {
                after: Some(ids[0]),
                last: ids[1]
            }),
            Some((
                r#"SELECT "mrr" FROM "profiles" WHERE "account_id" > ? AND "account_id" <= ?"#
                    .to_owned(),
                2
            ))
        );
        assert_eq!(restricted(Scope::Ids(&[])), None);
    }
}
