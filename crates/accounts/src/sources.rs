//! What the accounts service keeps about the systems that feed it (Stripe,
//! Segment-spec tracking, CRMs), beside the accounts themselves: the
//! instant of the newest data applied per external id, so a late delivery
//! never overwrites newer data (`UpsertAccountByExternalId.source_updated_at`),
//! and the account each user of a source was last linked to (a Segment
//! user's last group: `LinkSourceUser`, `GetSourceUsers`), so every gateway
//! replica, and a restarted one, attributes a user's calls the same way.
//!
//! Its own tables, added by their own migrations; only this module knows
//! their layout.

use bowtie_proto::accounts as pb;
use bowtie_runtime::api::parsed;
use bowtie_runtime::error::{Error, FieldViolations};
use bowtie_runtime::sql::stored_uuid;
use bowtie_runtime::{AccountId, Instant, validate};
use sea_orm::entity::prelude::*;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, Schema};
use sea_orm_migration::prelude::{MigrationName, MigrationTrait, SchemaManager, Table};

use crate::domain::{ExternalId, MAX_EXTERNAL_ID};
use crate::service::Accounts;
use crate::storage;

/// Table definitions (sea-orm entities; the derive macros generate items
/// that cannot carry doc comments).
#[allow(missing_docs)]
pub mod entity {
    /// `account_source_times`: per external id, the instant of the newest
    /// source data applied.
    pub mod source_time {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "account_source_times")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub source: String,
            #[sea_orm(primary_key, auto_increment = false)]
            pub external_id: String,
            pub updated_at: i64,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    /// `account_source_users`: per user of a source, the account it was
    /// last linked to and when.
    pub mod source_user {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "account_source_users")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub source: String,
            #[sea_orm(primary_key, auto_increment = false)]
            pub user_id: String,
            pub account_id: String,
            pub linked_at: i64,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }
}

use entity::{source_time, source_user};

/// Adds `account_source_times`.
pub struct CreateSourceTimes;

impl MigrationName for CreateSourceTimes {
    fn name(&self) -> &str {
        "m0103_account_source_times"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateSourceTimes {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let schema = Schema::new(manager.get_database_backend());
        manager
            .create_table(
                schema
                    .create_table_from_entity(source_time::Entity)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(source_time::Entity)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}

/// The instant of the newest data applied for `id`, if any was timed.
pub async fn source_time<C: ConnectionTrait>(
    conn: &C,
    id: &ExternalId,
) -> Result<Option<Instant>, Error> {
    Ok(
        source_time::Entity::find_by_id((id.source.clone(), id.id.clone()))
            .one(conn)
            .await?
            .map(|row| Instant::from_micros(row.updated_at)),
    )
}

/// Records `at` as the instant of the newest data applied for `id`.
pub async fn set_source_time<C: ConnectionTrait>(
    conn: &C,
    id: &ExternalId,
    at: Instant,
) -> Result<(), Error> {
    source_time::Entity::insert(source_time::ActiveModel {
        source: Set(id.source.clone()),
        external_id: Set(id.id.clone()),
        updated_at: Set(at.micros()),
    })
    .on_conflict(
        OnConflict::columns([source_time::Column::Source, source_time::Column::ExternalId])
            .update_column(source_time::Column::UpdatedAt)
            .to_owned(),
    )
    .exec(conn)
    .await?;
    Ok(())
}

/// Adds `account_source_users`.
pub struct CreateSourceUsers;

impl MigrationName for CreateSourceUsers {
    fn name(&self) -> &str {
        "m0104_account_source_users"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateSourceUsers {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let schema = Schema::new(manager.get_database_backend());
        manager
            .create_table(
                schema
                    .create_table_from_entity(source_user::Entity)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(source_user::Entity)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}

/// Most users one GetSourceUsers asks for (a Segment batch's events).
pub const MAX_SOURCE_USERS: usize = 2500;

/// A user of a source linked to an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceUser {
    /// The user: source and id there.
    pub user: ExternalId,
    /// The account.
    pub account_id: AccountId,
    /// When the link was made at the source.
    pub linked_at: Instant,
}

impl SourceUser {
    fn from_row(row: source_user::Model) -> Result<Self, Error> {
        Ok(Self {
            user: ExternalId {
                source: row.source,
                id: row.user_id,
            },
            account_id: AccountId(stored_uuid(&row.account_id)?),
            linked_at: Instant::from_micros(row.linked_at),
        })
    }

    fn to_pb(&self) -> pb::SourceUser {
        pb::SourceUser {
            user: Some(pb::ExternalId {
                source: self.user.source.clone(),
                external_id: self.user.id.clone(),
            }),
            account_id: self.account_id.to_string(),
            linked_at: Some(self.linked_at.to_timestamp()),
        }
    }
}

/// Parses LinkSourceUser.
pub fn link_request(req: &pb::LinkSourceUserRequest) -> Result<SourceUser, Error> {
    let mut v = FieldViolations::default();
    let user = match req.user.as_ref() {
        Some(u) => crate::convert::external_id(&mut v, "user", u),
        None => {
            v.add("user", "is required");
            None
        }
    };
    let account_id = validate::account_id(&mut v, "account_id", &req.account_id);
    let linked_at = validate::optional_instant(&mut v, "linked_at", req.linked_at.as_ref());
    v.into_result()?;
    Ok(SourceUser {
        user: parsed(user)?,
        account_id: parsed(account_id)?,
        linked_at: parsed(linked_at)?.unwrap_or_else(Instant::now),
    })
}

/// Parses GetSourceUsers: the source and the distinct user ids.
pub fn get_request(req: &pb::GetSourceUsersRequest) -> Result<(String, Vec<String>), Error> {
    let mut v = FieldViolations::default();
    let source = crate::convert::source(&mut v, "source", &req.source);
    if req.user_ids.is_empty() || req.user_ids.len() > MAX_SOURCE_USERS {
        v.add(
            "user_ids",
            format!("must hold 1 to {MAX_SOURCE_USERS} user ids"),
        );
    }
    for (i, id) in req.user_ids.iter().enumerate() {
        validate::required_text(&mut v, &format!("user_ids[{i}]"), id, MAX_EXTERNAL_ID);
    }
    v.into_result()?;
    let mut ids = req.user_ids.clone();
    ids.sort();
    ids.dedup();
    Ok((parsed(source)?, ids))
}

impl Accounts {
    /// Links a source's user to an account unless a newer link is in
    /// force; the link in force.
    pub async fn link_source_user(
        &self,
        link: SourceUser,
    ) -> Result<pb::LinkSourceUserResponse, Error> {
        self.store()
            .write(None, move |tx| {
                Box::pin(async move {
                    storage::require_account(tx.conn(), link.account_id).await?;
                    let key = (link.user.source.clone(), link.user.id.clone());
                    let current = source_user::Entity::find_by_id(key)
                        .one(tx.conn())
                        .await?
                        .map(SourceUser::from_row)
                        .transpose()?;
                    if let Some(current) = current.filter(|c| c.linked_at > link.linked_at) {
                        return Ok(pb::LinkSourceUserResponse {
                            link: Some(current.to_pb()),
                        });
                    }
                    source_user::Entity::insert(source_user::ActiveModel {
                        source: Set(link.user.source.clone()),
                        user_id: Set(link.user.id.clone()),
                        account_id: Set(link.account_id.to_string()),
                        linked_at: Set(link.linked_at.micros()),
                    })
                    .on_conflict(
                        OnConflict::columns([
                            source_user::Column::Source,
                            source_user::Column::UserId,
                        ])
                        .update_columns([
                            source_user::Column::AccountId,
                            source_user::Column::LinkedAt,
                        ])
                        .to_owned(),
                    )
                    .exec(tx.conn())
                    .await?;
                    Ok(pb::LinkSourceUserResponse {
                        link: Some(link.to_pb()),
                    })
                })
            })
            .await
    }

    /// The links of `user_ids` of `source` that exist.
    pub async fn get_source_users(
        &self,
        source: String,
        user_ids: Vec<String>,
    ) -> Result<pb::GetSourceUsersResponse, Error> {
        let rows = source_user::Entity::find()
            .filter(source_user::Column::Source.eq(source))
            .filter(source_user::Column::UserId.is_in(user_ids))
            .all(self.store().db().reader())
            .await?;
        let links = rows
            .into_iter()
            .map(|r| SourceUser::from_row(r).map(|l| l.to_pb()))
            .collect::<Result<_, _>>()?;
        Ok(pb::GetSourceUsersResponse { links })
    }
}
