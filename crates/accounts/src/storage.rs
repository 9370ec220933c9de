//! The accounts service's own tables and the queries on them. Nothing outside
//! this module knows the table layout, and no other service reads it.
//!
//! External ids live twice: in a lookup table whose primary key makes each
//! (source, id) belong to one account, and as a JSON column on the account
//! row, so the hot `GetAccount` path is a single-row primary-key read.
//!
//! Tags live in their own table (`account_tags`, one row per account and
//! tag, indexed by tag then account) so the tag filter of ListAccounts is
//! an index lookup; an account's tags are read with it by account id.
//!
//! The name is also stored case-folded by Rust (`name_folded`) for the text
//! filter: SQLite's `LOWER()` folds only ASCII, so folding in SQL would make
//! "émile" miss "Émile" on SQLite but not on PostgreSQL.

use std::collections::HashMap;

use bowtie_runtime::error::Error;
use bowtie_runtime::sql::{corrupt, stored_uuid};
use bowtie_runtime::{AccountId, Instant};
use sea_orm::entity::prelude::*;
use sea_orm::sea_query::{Expr, Func, LikeExpr, Query};
use sea_orm::{ActiveValue::Set, Condition, PaginatorTrait, QueryOrder, QuerySelect, Schema};
use sea_orm_migration::prelude::{Index, MigrationName, MigrationTrait, SchemaManager, Table};

use crate::attributes::{AttributeKind, Declaration, DeclarationFields, Value, Values};
use crate::domain::*;

/// Table definitions (sea-orm entities; the derive macros generate items
/// that cannot carry doc comments).
#[allow(missing_docs)]
pub mod entity {
    /// `accounts`
    pub mod account {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "accounts")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub id: String,
            pub name: String,
            pub name_folded: String,
            pub segment: i32,
            pub industry: String,
            pub owner: String,
            pub csm: String,
            pub strategic: bool,
            #[sea_orm(column_type = "Text")]
            pub external_ids: String,
            pub status: i32,
            pub version: i64,
            pub created_at: i64,
            pub updated_at: i64,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    /// `account_external_ids`
    pub mod external_id {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "account_external_ids")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub source: String,
            #[sea_orm(primary_key, auto_increment = false)]
            pub external_id: String,
            pub account_id: String,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    /// `account_tags`
    pub mod tag {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "account_tags")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub account_id: String,
            #[sea_orm(primary_key, auto_increment = false)]
            pub tag: String,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    /// `account_attributes`
    pub mod attribute {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "account_attributes")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub account_id: String,
            #[sea_orm(primary_key, auto_increment = false)]
            pub name: String,
            pub kind: i32,
            pub value: String,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    /// `attribute_declarations`
    pub mod declaration {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "attribute_declarations")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub name: String,
            pub kind: i32,
            #[sea_orm(column_type = "Text")]
            pub allowed_values: String,
            pub description: String,
            pub version: i64,
            pub created_at: i64,
            pub updated_at: i64,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    /// `contacts`
    pub mod contact {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "contacts")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub id: String,
            pub account_id: String,
            pub name: String,
            pub email: String,
            pub title: String,
            pub roles: String,
            pub left_at: Option<i64>,
            pub version: i64,
            pub created_at: i64,
            pub updated_at: i64,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }
}

use entity::{account, attribute, contact, declaration, external_id, tag};

struct CreateAccountTables;

impl MigrationName for CreateAccountTables {
    fn name(&self) -> &str {
        "m0100_accounts_tables"
    }
}

/// Creates `entity`'s table from its definition (columns, types, nullability
/// and primary key), unless it exists.
async fn create_table<E: EntityTrait>(manager: &SchemaManager<'_>, entity: E) -> Result<(), DbErr> {
    let schema = Schema::new(manager.get_database_backend());
    manager
        .create_table(
            schema
                .create_table_from_entity(entity)
                .if_not_exists()
                .to_owned(),
        )
        .await
}

/// Creates the index `name` on `columns` of `entity`'s table, unless it exists.
async fn create_index<E: EntityTrait>(
    manager: &SchemaManager<'_>,
    name: &str,
    entity: E,
    columns: [E::Column; 2],
) -> Result<(), DbErr> {
    let mut index = Index::create();
    index.name(name).table(entity).if_not_exists();
    for column in columns {
        index.col(column);
    }
    manager.create_index(index.to_owned()).await
}

#[async_trait::async_trait]
impl MigrationTrait for CreateAccountTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use account::Column as A;
        create_table(manager, account::Entity).await?;
        for (name, column) in [
            ("accounts_owner", A::Owner),
            ("accounts_csm", A::Csm),
            ("accounts_segment", A::Segment),
        ] {
            create_index(manager, name, account::Entity, [column, A::Id]).await?;
        }
        create_table(manager, external_id::Entity).await?;
        create_table(manager, contact::Entity).await?;
        create_index(
            manager,
            "contacts_account",
            contact::Entity,
            [contact::Column::AccountId, contact::Column::Id],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(contact::Entity).if_exists().to_owned())
            .await?;
        manager
            .drop_table(
                Table::drop()
                    .table(external_id::Entity)
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(account::Entity).if_exists().to_owned())
            .await
    }
}

/// Adds the tags table and its by-tag index.
struct CreateTagTable;

impl MigrationName for CreateTagTable {
    fn name(&self) -> &str {
        "m0101_account_tags"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateTagTable {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        create_table(manager, tag::Entity).await?;
        create_index(
            manager,
            "account_tags_tag",
            tag::Entity,
            [tag::Column::Tag, tag::Column::AccountId],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(tag::Entity).if_exists().to_owned())
            .await
    }
}

/// Adds the attribute declarations and the account attribute values, the
/// values indexed by (name, value) for the attribute filter.
struct CreateAttributeTables;

impl MigrationName for CreateAttributeTables {
    fn name(&self) -> &str {
        "m0102_account_attributes"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateAttributeTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        create_table(manager, declaration::Entity).await?;
        create_table(manager, attribute::Entity).await?;
        create_index(
            manager,
            "account_attributes_value",
            attribute::Entity,
            [attribute::Column::Name, attribute::Column::Value],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(attribute::Entity)
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(
                Table::drop()
                    .table(declaration::Entity)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}

bowtie_runtime::migrator!(
    CreateAccountTables,
    CreateTagTable,
    CreateAttributeTables,
    crate::sources::CreateSourceTimes,
    crate::sources::CreateSourceUsers,
);

fn account_from_row(
    m: account::Model,
    tags: Vec<String>,
    attributes: Values,
) -> Result<Account, Error> {
    let ids: Vec<(String, String)> =
        serde_json::from_str(&m.external_ids).map_err(|_| corrupt("external_ids"))?;
    Ok(Account {
        id: AccountId(stored_uuid(&m.id)?),
        fields: AccountFields {
            name: m.name,
            segment: Segment::from_code(m.segment).ok_or_else(|| corrupt("segment"))?,
            industry: m.industry,
            owner: m.owner,
            csm: m.csm,
            strategic: m.strategic,
            external_ids: ids
                .into_iter()
                .map(|(source, id)| ExternalId { source, id })
                .collect(),
            tags,
            attributes,
        },
        status: AccountStatus::from_code(m.status).ok_or_else(|| corrupt("status"))?,
        version: m.version,
        created_at: Instant::from_micros(m.created_at),
        updated_at: Instant::from_micros(m.updated_at),
    })
}

fn external_ids_json(ids: &[ExternalId]) -> String {
    serde_json::Value::from(
        ids.iter()
            .map(|e| serde_json::json!([e.source, e.id]))
            .collect::<Vec<_>>(),
    )
    .to_string()
}

fn account_row(a: &Account) -> account::ActiveModel {
    account::ActiveModel {
        id: Set(a.id.to_string()),
        name: Set(a.fields.name.clone()),
        name_folded: Set(a.fields.name.to_lowercase()),
        segment: Set(a.fields.segment.code()),
        industry: Set(a.fields.industry.clone()),
        owner: Set(a.fields.owner.clone()),
        csm: Set(a.fields.csm.clone()),
        strategic: Set(a.fields.strategic),
        external_ids: Set(external_ids_json(&a.fields.external_ids)),
        status: Set(a.status.code()),
        version: Set(a.version),
        created_at: Set(a.created_at.micros()),
        updated_at: Set(a.updated_at.micros()),
    }
}

/// The row of `E` whose id is `id`, read by `from_row`.
async fn find<E, T, C>(
    conn: &C,
    id: impl std::fmt::Display,
    from_row: fn(E::Model) -> Result<T, Error>,
) -> Result<Option<T>, Error>
where
    E: EntityTrait,
    C: ConnectionTrait,
    <E::PrimaryKey as PrimaryKeyTrait>::ValueType: From<String>,
{
    E::find_by_id(id.to_string())
        .one(conn)
        .await?
        .map(from_row)
        .transpose()
}

/// The tags of `accounts`, by account id, each list sorted.
async fn tags_of<C: ConnectionTrait>(
    conn: &C,
    accounts: Vec<String>,
) -> Result<HashMap<String, Vec<String>>, Error> {
    let mut tags: HashMap<String, Vec<String>> = HashMap::new();
    if accounts.is_empty() {
        return Ok(tags);
    }
    let rows = tag::Entity::find()
        .filter(tag::Column::AccountId.is_in(accounts))
        .order_by_asc(tag::Column::AccountId)
        .order_by_asc(tag::Column::Tag)
        .all(conn)
        .await?;
    for row in rows {
        tags.entry(row.account_id).or_default().push(row.tag);
    }
    Ok(tags)
}

/// The attribute values of `accounts`, by account id.
async fn attributes_of<C: ConnectionTrait>(
    conn: &C,
    accounts: Vec<String>,
) -> Result<HashMap<String, Values>, Error> {
    let mut values: HashMap<String, Values> = HashMap::new();
    if accounts.is_empty() {
        return Ok(values);
    }
    let rows = attribute::Entity::find()
        .filter(attribute::Column::AccountId.is_in(accounts))
        .all(conn)
        .await?;
    for row in rows {
        let kind = AttributeKind::from_code(row.kind).ok_or_else(|| corrupt("attribute kind"))?;
        values.entry(row.account_id).or_default().insert(
            row.name,
            Value {
                kind,
                text: row.value,
            },
        );
    }
    Ok(values)
}

/// Replaces the attribute values of `account`: `previous` by `next`.
async fn write_attributes<C: ConnectionTrait>(
    conn: &C,
    account: AccountId,
    previous: &Values,
    next: &Values,
) -> Result<(), Error> {
    let gone: Vec<String> = previous
        .iter()
        .filter(|(name, value)| next.get(*name) != Some(value))
        .map(|(name, _)| name.clone())
        .collect();
    if !gone.is_empty() {
        attribute::Entity::delete_many()
            .filter(attribute::Column::AccountId.eq(account.to_string()))
            .filter(attribute::Column::Name.is_in(gone))
            .exec(conn)
            .await?;
    }
    let new: Vec<attribute::ActiveModel> = next
        .iter()
        .filter(|(name, value)| previous.get(*name) != Some(value))
        .map(|(name, value)| attribute::ActiveModel {
            account_id: Set(account.to_string()),
            name: Set(name.clone()),
            kind: Set(value.kind.code()),
            value: Set(value.text.clone()),
        })
        .collect();
    if !new.is_empty() {
        attribute::Entity::insert_many(new).exec(conn).await?;
    }
    Ok(())
}

fn declaration_from_row(m: declaration::Model) -> Result<Declaration, Error> {
    Ok(Declaration {
        fields: DeclarationFields {
            name: m.name,
            kind: AttributeKind::from_code(m.kind).ok_or_else(|| corrupt("declaration kind"))?,
            allowed_values: serde_json::from_str(&m.allowed_values)
                .map_err(|_| corrupt("allowed_values"))?,
            description: m.description,
        },
        version: m.version,
        created_at: Instant::from_micros(m.created_at),
        updated_at: Instant::from_micros(m.updated_at),
    })
}

/// Every attribute declaration, by name.
pub async fn declarations<C: ConnectionTrait>(conn: &C) -> Result<Vec<Declaration>, Error> {
    declaration::Entity::find()
        .order_by_asc(declaration::Column::Name)
        .all(conn)
        .await?
        .into_iter()
        .map(declaration_from_row)
        .collect()
}

/// One declaration, if it exists.
pub async fn get_declaration<C: ConnectionTrait>(
    conn: &C,
    name: &str,
) -> Result<Option<Declaration>, Error> {
    find::<declaration::Entity, _, _>(conn, name, declaration_from_row).await
}

/// Inserts `d`, or writes it over the row at `previous_version` (ABORTED
/// when a concurrent writer moved it on).
pub async fn put_declaration<C: ConnectionTrait>(
    conn: &C,
    d: &Declaration,
    previous_version: Option<i64>,
) -> Result<(), Error> {
    let row = declaration::ActiveModel {
        name: Set(d.fields.name.clone()),
        kind: Set(d.fields.kind.code()),
        allowed_values: Set(serde_json::Value::from(d.fields.allowed_values.clone()).to_string()),
        description: Set(d.fields.description.clone()),
        version: Set(d.version),
        created_at: Set(d.created_at.micros()),
        updated_at: Set(d.updated_at.micros()),
    };
    let Some(previous) = previous_version else {
        row.insert(conn).await?;
        return Ok(());
    };
    let result = declaration::Entity::update_many()
        .set(row)
        .filter(declaration::Column::Name.eq(d.fields.name.as_str()))
        .filter(declaration::Column::Version.eq(previous))
        .exec(conn)
        .await?;
    one_row_changed(result.rows_affected, "attribute", &d.fields.name)
}

/// Deletes the declaration `name` if it is at `version`, else ABORTED.
pub async fn delete_declaration<C: ConnectionTrait>(
    conn: &C,
    name: &str,
    version: i64,
) -> Result<(), Error> {
    let result = declaration::Entity::delete_many()
        .filter(declaration::Column::Name.eq(name))
        .filter(declaration::Column::Version.eq(version))
        .exec(conn)
        .await?;
    one_row_changed(result.rows_affected, "attribute", name)
}

/// How many accounts hold a value of attribute `name`, counting only
/// values outside `keep` when it is given.
pub async fn count_values<C: ConnectionTrait>(
    conn: &C,
    name: &str,
    keep: Option<&[String]>,
) -> Result<u64, Error> {
    let mut query = attribute::Entity::find().filter(attribute::Column::Name.eq(name));
    if let Some(keep) = keep {
        query = query.filter(attribute::Column::Value.is_not_in(keep.iter().cloned()));
    }
    Ok(query.count(conn).await?)
}

/// Reads account rows with their tags.
async fn accounts_from_rows<C: ConnectionTrait>(
    conn: &C,
    rows: Vec<account::Model>,
) -> Result<Vec<Account>, Error> {
    let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    let mut tags = tags_of(conn, ids.clone()).await?;
    let mut attributes = attributes_of(conn, ids).await?;
    rows.into_iter()
        .map(|row| {
            let own = tags.remove(&row.id).unwrap_or_default();
            let values = attributes.remove(&row.id).unwrap_or_default();
            account_from_row(row, own, values)
        })
        .collect()
}

/// Reads one account.
pub async fn get_account<C: ConnectionTrait>(
    conn: &C,
    id: AccountId,
) -> Result<Option<Account>, Error> {
    let Some(row) = account::Entity::find_by_id(id.to_string())
        .one(conn)
        .await?
    else {
        return Ok(None);
    };
    Ok(accounts_from_rows(conn, vec![row]).await?.pop())
}

/// Replaces the tags of `account`: `previous` by `next`.
async fn write_tags<C: ConnectionTrait>(
    conn: &C,
    account: AccountId,
    previous: &[String],
    next: &[String],
) -> Result<(), Error> {
    let gone: Vec<String> = previous
        .iter()
        .filter(|t| !next.contains(t))
        .cloned()
        .collect();
    if !gone.is_empty() {
        tag::Entity::delete_many()
            .filter(tag::Column::AccountId.eq(account.to_string()))
            .filter(tag::Column::Tag.is_in(gone))
            .exec(conn)
            .await?;
    }
    let new: Vec<tag::ActiveModel> = next
        .iter()
        .filter(|t| !previous.contains(t))
        .map(|t| tag::ActiveModel {
            account_id: Set(account.to_string()),
            tag: Set(t.clone()),
        })
        .collect();
    if !new.is_empty() {
        tag::Entity::insert_many(new).exec(conn).await?;
    }
    Ok(())
}

/// Reads one account or fails with NOT_FOUND.
pub async fn require_account<C: ConnectionTrait>(
    conn: &C,
    id: AccountId,
) -> Result<Account, Error> {
    get_account(conn, id)
        .await?
        .ok_or_else(|| Error::not_found("account", id.to_string()))
}

/// Makes `ids` point at `account`, failing with ALREADY_EXISTS when one of
/// them belongs to another account; ids in `previous` that are gone are freed.
async fn claim_external_ids<C: ConnectionTrait>(
    conn: &C,
    account: AccountId,
    previous: &[ExternalId],
    ids: &[ExternalId],
) -> Result<(), Error> {
    for gone in previous.iter().filter(|p| !ids.contains(p)) {
        external_id::Entity::delete_by_id((gone.source.clone(), gone.id.clone()))
            .exec(conn)
            .await?;
    }
    for new in ids.iter().filter(|i| !previous.contains(i)) {
        let owner = external_id::Entity::find_by_id((new.source.clone(), new.id.clone()))
            .one(conn)
            .await?;
        if let Some(owner) = owner {
            return Err(Error::AlreadyExists(format!(
                "external id {}/{} already belongs to account {}",
                new.source, new.id, owner.account_id
            )));
        }
        external_id::ActiveModel {
            source: Set(new.source.clone()),
            external_id: Set(new.id.clone()),
            account_id: Set(account.to_string()),
        }
        .insert(conn)
        .await?;
    }
    Ok(())
}

/// Inserts a new account and claims its external ids.
pub async fn insert_account<C: ConnectionTrait>(conn: &C, a: &Account) -> Result<(), Error> {
    claim_external_ids(conn, a.id, &[], &a.fields.external_ids).await?;
    account_row(a).insert(conn).await?;
    write_tags(conn, a.id, &[], &a.fields.tags).await?;
    write_attributes(conn, a.id, &Values::new(), &a.fields.attributes).await
}

/// Writes `next` over `previous` if the row is still at `previous.version`;
/// ABORTED when a concurrent writer got there first.
pub async fn update_account<C: ConnectionTrait>(
    conn: &C,
    previous: &Account,
    next: &Account,
) -> Result<(), Error> {
    claim_external_ids(
        conn,
        next.id,
        &previous.fields.external_ids,
        &next.fields.external_ids,
    )
    .await?;
    let result = account::Entity::update_many()
        .set(account_row(next))
        .filter(account::Column::Id.eq(next.id.to_string()))
        .filter(account::Column::Version.eq(previous.version))
        .exec(conn)
        .await?;
    one_row_changed(result.rows_affected, "account", next.id)?;
    write_tags(conn, next.id, &previous.fields.tags, &next.fields.tags).await?;
    write_attributes(
        conn,
        next.id,
        &previous.fields.attributes,
        &next.fields.attributes,
    )
    .await
}

/// ABORTED unless a versioned update changed its one row: a concurrent
/// writer moved the version on first.
fn one_row_changed(rows: u64, kind: &str, id: impl std::fmt::Display) -> Result<(), Error> {
    if rows == 1 {
        Ok(())
    } else {
        Err(Error::Aborted(format!(
            "{kind} {id} changed concurrently; re-read it and retry"
        )))
    }
}

/// Holds the external id `id` until the transaction ends, so concurrent
/// upserts of the same external id on PostgreSQL take turns (the second
/// sees the first's account) instead of both inserting one.
pub async fn lock_external_id<C: ConnectionTrait>(conn: &C, id: &ExternalId) -> Result<(), Error> {
    bowtie_runtime::store::lock(conn, &format!("accounts.external.{}.{}", id.source, id.id)).await
}

/// The account a CRM knows by `id`, if any.
pub async fn find_by_external_id<C: ConnectionTrait>(
    conn: &C,
    id: &ExternalId,
) -> Result<Option<AccountId>, Error> {
    external_id::Entity::find_by_id((id.source.clone(), id.id.clone()))
        .one(conn)
        .await?
        .map(|row| stored_uuid(&row.account_id).map(AccountId))
        .transpose()
}

/// Filters of ListAccounts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountFilter {
    /// Segment.
    pub segment: Option<Segment>,
    /// Exact owner.
    pub owner: Option<String>,
    /// Exact CSM.
    pub csm: Option<String>,
    /// Status.
    pub status: Option<AccountStatus>,
    /// Case-insensitive name substring.
    pub text: Option<String>,
    /// A tag the account carries (normal form).
    pub tag: Option<String>,
    /// Attribute values to match, as sent.
    pub attributes: Inputs,
    /// The same, checked: (name, canonical value) pairs, all to match.
    pub attribute_values: Vec<(String, String)>,
    /// Only accounts whose CSM or owner is one of these people
    /// (lower-cased; `mine=true`).
    pub book: Option<Vec<String>>,
}

impl AccountFilter {
    /// A stable rendering, to bind page tokens to the filters.
    pub fn fingerprint(&self) -> String {
        format!(
            "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{}",
            self.segment.map(Segment::code),
            self.owner,
            self.csm,
            self.status.map(AccountStatus::code),
            self.text,
            self.tag,
            self.attributes,
            self.book.is_some()
        )
    }
}

/// Escapes LIKE wildcards so user text matches literally.
fn like_pattern(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len() + 2);
    escaped.push('%');
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped.push('%');
    escaped
}

/// Up to `limit` accounts matching `filter` with ids after `after`, by id.
pub async fn list_accounts<C: ConnectionTrait>(
    conn: &C,
    filter: &AccountFilter,
    after: Option<&str>,
    limit: u64,
) -> Result<Vec<Account>, Error> {
    let mut condition = Condition::all();
    if let Some(segment) = filter.segment {
        condition = condition.add(account::Column::Segment.eq(segment.code()));
    }
    if let Some(owner) = &filter.owner {
        condition = condition.add(account::Column::Owner.eq(owner.as_str()));
    }
    if let Some(csm) = &filter.csm {
        condition = condition.add(account::Column::Csm.eq(csm.as_str()));
    }
    if let Some(book) = &filter.book {
        // People compare case-insensitively (docs/design.md 9.3).
        let lower = |c: account::Column| Expr::expr(Func::lower(Expr::col(c)));
        condition = condition.add(
            Condition::any()
                .add(lower(account::Column::Csm).is_in(book.iter().map(String::as_str)))
                .add(lower(account::Column::Owner).is_in(book.iter().map(String::as_str))),
        );
    }
    if let Some(status) = filter.status {
        condition = condition.add(account::Column::Status.eq(status.code()));
    }
    if let Some(text) = &filter.text {
        condition = condition.add(
            Expr::col(account::Column::NameFolded)
                .like(LikeExpr::new(like_pattern(text)).escape('\\')),
        );
    }
    if let Some(wanted) = &filter.tag {
        condition = condition.add(
            account::Column::Id.in_subquery(
                Query::select()
                    .column(tag::Column::AccountId)
                    .from(tag::Entity)
                    .and_where(tag::Column::Tag.eq(wanted.as_str()))
                    .to_owned(),
            ),
        );
    }
    for (name, value) in &filter.attribute_values {
        condition = condition.add(
            account::Column::Id.in_subquery(
                Query::select()
                    .column(attribute::Column::AccountId)
                    .from(attribute::Entity)
                    .and_where(attribute::Column::Name.eq(name.as_str()))
                    .and_where(attribute::Column::Value.eq(value.as_str()))
                    .to_owned(),
            ),
        );
    }
    if let Some(after) = after {
        condition = condition.add(account::Column::Id.gt(after));
    }
    let rows = account::Entity::find()
        .filter(condition)
        .order_by_asc(account::Column::Id)
        .limit(limit)
        .all(conn)
        .await?;
    accounts_from_rows(conn, rows).await
}

fn contact_from_row(m: contact::Model) -> Result<Contact, Error> {
    let roles = if m.roles.is_empty() {
        Vec::new()
    } else {
        m.roles
            .split(',')
            .map(|r| ContactRole::from_code(r).ok_or_else(|| corrupt("roles")))
            .collect::<Result<_, _>>()?
    };
    Ok(Contact {
        id: ContactId(stored_uuid(&m.id)?),
        account_id: AccountId(stored_uuid(&m.account_id)?),
        fields: ContactFields {
            name: m.name,
            email: m.email,
            title: m.title,
            roles,
        },
        left_at: m.left_at.map(Instant::from_micros),
        version: m.version,
        created_at: Instant::from_micros(m.created_at),
        updated_at: Instant::from_micros(m.updated_at),
    })
}

fn contact_row(c: &Contact) -> contact::ActiveModel {
    contact::ActiveModel {
        id: Set(c.id.to_string()),
        account_id: Set(c.account_id.to_string()),
        name: Set(c.fields.name.clone()),
        email: Set(c.fields.email.clone()),
        title: Set(c.fields.title.clone()),
        roles: Set(c
            .fields
            .roles
            .iter()
            .map(|r| r.code())
            .collect::<Vec<_>>()
            .join(",")),
        left_at: Set(c.left_at.map(Instant::micros)),
        version: Set(c.version),
        created_at: Set(c.created_at.micros()),
        updated_at: Set(c.updated_at.micros()),
    }
}

/// Reads one contact or fails with NOT_FOUND.
pub async fn require_contact<C: ConnectionTrait>(
    conn: &C,
    id: ContactId,
) -> Result<Contact, Error> {
    find::<contact::Entity, _, _>(conn, id, contact_from_row)
        .await?
        .ok_or_else(|| Error::not_found("contact", id.to_string()))
}

/// Inserts a contact.
pub async fn insert_contact<C: ConnectionTrait>(conn: &C, c: &Contact) -> Result<(), Error> {
    contact_row(c).insert(conn).await?;
    Ok(())
}

/// Writes `next` if the row is still at `previous_version`, else ABORTED.
pub async fn update_contact<C: ConnectionTrait>(
    conn: &C,
    previous_version: i64,
    next: &Contact,
) -> Result<(), Error> {
    let result = contact::Entity::update_many()
        .set(contact_row(next))
        .filter(contact::Column::Id.eq(next.id.to_string()))
        .filter(contact::Column::Version.eq(previous_version))
        .exec(conn)
        .await?;
    one_row_changed(result.rows_affected, "contact", next.id)
}

/// Deletes a contact.
pub async fn delete_contact<C: ConnectionTrait>(conn: &C, id: ContactId) -> Result<(), Error> {
    contact::Entity::delete_by_id(id.to_string())
        .exec(conn)
        .await?;
    Ok(())
}

/// Up to `limit` contacts of an account with ids after `after`, by id.
pub async fn list_contacts<C: ConnectionTrait>(
    conn: &C,
    account: AccountId,
    after: Option<&str>,
    limit: u64,
) -> Result<Vec<Contact>, Error> {
    let mut query =
        contact::Entity::find().filter(contact::Column::AccountId.eq(account.to_string()));
    if let Some(after) = after {
        query = query.filter(contact::Column::Id.gt(after));
    }
    query
        .order_by_asc(contact::Column::Id)
        .limit(limit)
        .all(conn)
        .await?
        .into_iter()
        .map(contact_from_row)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_match_wildcards_literally() {
        assert_eq!(like_pattern("50%_Off"), "%50\\%\\_off%");
        assert_eq!(like_pattern("a\\b"), "%a\\\\b%");
    }
}
