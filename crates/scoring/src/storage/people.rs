//! `account_people`: each account's CSM and owner as the accounts feed last
//! said them, trimmed and lower-cased, so the ownership rules
//! (docs/design.md 9.3) are checked inside a write's transaction and
//! `mine=true` filters health lists by the caller's book.
//! `m0403_scoring_account_people` creates the table; an account the feed
//! has not brought since (created before the table) has no row until the
//! backfill at start (`service::people`) fills it from the accounts
//! service, and until then a write's check asks the accounts service.

use std::collections::HashMap;

use async_trait::async_trait;
use bowtie_runtime::error::Error;
use bowtie_runtime::{AccountId, Instant};
use sea_orm::sea_query::{Alias, Condition, Expr, OnConflict, Query, SelectStatement};
use sea_orm::{ColumnTrait, DbBackend, DbErr, EntityTrait, QueryFilter};
use sea_orm_migration::prelude::{
    ColumnDef, Index, MigrationName, MigrationTrait, SchemaManager, Table,
};

use super::entity::account_person::{self, Column as A, Entity as AccountPeople};
use super::entity::profile::{Column as P, Entity as Profiles};
use super::stored_account;

/// `m0403_scoring_account_people`: the table of each account's people.
pub struct AccountPeopleTable;

impl MigrationName for AccountPeopleTable {
    fn name(&self) -> &str {
        "m0403_scoring_account_people"
    }
}

#[async_trait]
impl MigrationTrait for AccountPeopleTable {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let text = |c: A| ColumnDef::new(c).string().not_null().to_owned();
        let mut key = text(A::AccountId);
        if m.get_database_backend() == DbBackend::Postgres {
            // Compared with the other tables' keys, which PostgreSQL
            // collates byte by byte (`PostgresLayout`).
            key = ColumnDef::new(A::AccountId)
                .custom(Alias::new("varchar COLLATE \"C\""))
                .not_null()
                .to_owned();
        }
        m.create_table(
            Table::create()
                .table(AccountPeople)
                .if_not_exists()
                .col(key.primary_key())
                .col(text(A::Csm))
                .col(text(A::Owner))
                .col(ColumnDef::new(A::UpdatedAt).big_integer().not_null())
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(AccountPeople).if_exists().to_owned())
            .await
    }
}

/// `m0404_scoring_account_people_by_person`: an index on each of CSM and
/// owner, so `mine=true` finds a book's accounts without reading every row.
pub struct AccountPeopleByPerson;

impl MigrationName for AccountPeopleByPerson {
    fn name(&self) -> &str {
        "m0404_scoring_account_people_by_person"
    }
}

/// The index on column `c` of `account_people`, named `name`.
fn person_index(name: &str, c: A) -> sea_orm_migration::prelude::IndexCreateStatement {
    Index::create()
        .name(name)
        .table(AccountPeople)
        .col(c)
        .if_not_exists()
        .to_owned()
}

#[async_trait]
impl MigrationTrait for AccountPeopleByPerson {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_index(person_index("account_people_csm", A::Csm))
            .await?;
        m.create_index(person_index("account_people_owner", A::Owner))
            .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for name in ["account_people_csm", "account_people_owner"] {
            m.drop_index(Index::drop().name(name).table(AccountPeople).to_owned())
                .await?;
        }
        Ok(())
    }
}

/// A person as stored and compared: trimmed, lower-cased.
pub fn folded(person: &str) -> String {
    person.trim().to_lowercase()
}

/// Stores account `id`'s CSM and owner (the accounts feed's latest).
pub async fn save_people<C: sea_orm::ConnectionTrait>(
    conn: &C,
    id: AccountId,
    csm: &str,
    owner: &str,
    now: Instant,
) -> Result<(), Error> {
    let row = account_person::ActiveModel {
        account_id: sea_orm::Set(id.to_string()),
        csm: sea_orm::Set(folded(csm)),
        owner: sea_orm::Set(folded(owner)),
        updated_at: sea_orm::Set(now.micros()),
    };
    AccountPeople::insert(row)
        .on_conflict(
            OnConflict::column(A::AccountId)
                .update_columns([A::Csm, A::Owner, A::UpdatedAt])
                .to_owned(),
        )
        .exec(conn)
        .await?;
    Ok(())
}

/// The (CSM, owner) of those of `ids` the feed has brought.
pub async fn people_of<C: sea_orm::ConnectionTrait>(
    conn: &C,
    ids: &[AccountId],
) -> Result<HashMap<AccountId, (String, String)>, Error> {
    let mut out = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(1000) {
        let rows = AccountPeople::find()
            .filter(A::AccountId.is_in(chunk.iter().map(AccountId::to_string)))
            .all(conn)
            .await?;
        for row in rows {
            out.insert(stored_account(&row.account_id)?, (row.csm, row.owner));
        }
    }
    Ok(out)
}

/// The ids of the accounts whose CSM or owner is one of `book`, as a
/// subquery for `IN`.
pub fn accounts_of(book: &[String]) -> SelectStatement {
    let book: Vec<String> = book.iter().map(|p| folded(p)).collect();
    Query::select()
        .column(A::AccountId)
        .from(AccountPeople)
        .cond_where(
            Condition::any()
                .add(Expr::col(A::Csm).is_in(book.iter().map(String::as_str)))
                .add(Expr::col(A::Owner).is_in(book.iter().map(String::as_str))),
        )
        .to_owned()
}

/// The accounts scoring knows (those with a profile) that have no people
/// row: what the backfill fills.
pub async fn lacking_people<C: sea_orm::ConnectionTrait>(
    conn: &C,
) -> Result<Vec<AccountId>, Error> {
    let select = Query::select()
        .column(P::AccountId)
        .from(Profiles)
        .and_where(
            Expr::col(P::AccountId).not_in_subquery(
                Query::select()
                    .column(A::AccountId)
                    .from(AccountPeople)
                    .to_owned(),
            ),
        )
        .to_owned();
    bowtie_runtime::sql::query(conn, &select)
        .await?
        .iter()
        .map(|r| stored_account(&r.try_get_by_index::<String>(0)?))
        .collect()
}

/// Stores the (id, CSM, owner) of accounts that have no row yet; a row
/// already there is the feed's and is kept: the feed applies every change
/// after the answer these come from, so its row is at least as fresh.
pub async fn fill_people<C: sea_orm::ConnectionTrait>(
    conn: &C,
    rows: &[(AccountId, String, String)],
    now: Instant,
) -> Result<(), Error> {
    for chunk in rows.chunks(1000) {
        let models = chunk
            .iter()
            .map(|(id, csm, owner)| account_person::ActiveModel {
                account_id: sea_orm::Set(id.to_string()),
                csm: sea_orm::Set(folded(csm)),
                owner: sea_orm::Set(folded(owner)),
                updated_at: sea_orm::Set(now.micros()),
            });
        AccountPeople::insert_many(models)
            .on_conflict(OnConflict::column(A::AccountId).do_nothing().to_owned())
            .do_nothing()
            .exec(conn)
            .await?;
    }
    Ok(())
}
