//! What the accounts service keeps about the systems that feed it (Stripe,
//! Segment-spec tracking, CRMs), beside the accounts themselves: the
//! instant of the newest data applied per external id, so a late delivery
//! never overwrites newer data (`UpsertAccountByExternalId.source_updated_at`).
//!
//! Its own tables, added by their own migrations; only this module knows
//! their layout.

use bowtie_runtime::Instant;
use bowtie_runtime::error::Error;
use sea_orm::entity::prelude::*;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, Schema};
use sea_orm_migration::prelude::{MigrationName, MigrationTrait, SchemaManager, Table};

use crate::domain::ExternalId;

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
}

use entity::source_time;

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
