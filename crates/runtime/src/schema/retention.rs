//! `m0002_runtime_retention`: what bounded storage needs (docs/operations.md,
//! "Retention"): indexes on the times the pruner looks rows up by, the
//! consumers a producer knows with the position each has passed, and how
//! far the outbox has been pruned.

use sea_orm_migration::prelude::*;

use super::{FeedConsumers, IdempotencyKeys, OutboxEvents, OutboxPruned};

pub(super) struct RetentionTables;

impl MigrationName for RetentionTables {
    fn name(&self) -> &str {
        "m0002_runtime_retention"
    }
}

const KEYS_BY_TIME: &str = "idempotency_keys_created_at";
const EVENTS_BY_TIME: &str = "outbox_events_occurred_at";

#[async_trait::async_trait]
impl MigrationTrait for RetentionTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(KEYS_BY_TIME)
                    .table(IdempotencyKeys::Table)
                    .col(IdempotencyKeys::CreatedAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(EVENTS_BY_TIME)
                    .table(OutboxEvents::Table)
                    .col(OutboxEvents::OccurredAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(FeedConsumers::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(FeedConsumers::Consumer)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(FeedConsumers::Position)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(FeedConsumers::UpdatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(OutboxPruned::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(OutboxPruned::Id)
                            .integer()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(OutboxPruned::Through)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            FeedConsumers::Table.into_iden(),
            OutboxPruned::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        for (name, table) in [
            (KEYS_BY_TIME, IdempotencyKeys::Table.into_iden()),
            (EVENTS_BY_TIME, OutboxEvents::Table.into_iden()),
        ] {
            manager
                .drop_index(Index::drop().name(name).table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
