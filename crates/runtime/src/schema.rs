//! The runtime's own tables, created in every service's schema by
//! [`runtime_migrations`]: idempotency keys, the outbox that backs the change
//! feed, the cursors of change-feed consumers, and the audit log; since
//! `m0002_runtime_retention` (in `schema/retention.rs`) also the consumers
//! of this service's own feed and how far its outbox was pruned.

use sea_orm_migration::prelude::*;

mod audit;
mod retention;

pub use audit::AuditEvents;

/// Idempotency keys and the responses they produced.
#[derive(DeriveIden, Clone, Copy)]
pub enum IdempotencyKeys {
    /// The table.
    Table,
    /// The client's key.
    Key,
    /// Fingerprint of the request.
    Fingerprint,
    /// Encoded response.
    Response,
    /// Microseconds since the epoch.
    CreatedAt,
}

/// The outbox: the service's change feed.
#[derive(DeriveIden, Clone, Copy)]
pub enum OutboxEvents {
    /// The table.
    Table,
    /// Feed position.
    Sequence,
    /// UUID of the event.
    EventId,
    /// Kind of thing that changed.
    AggregateType,
    /// Id of the thing.
    AggregateId,
    /// What happened.
    EventType,
    /// Protobuf type URL of the payload.
    PayloadType,
    /// Encoded payload.
    Payload,
    /// Microseconds since the epoch.
    OccurredAt,
}

/// Positions of this service's change-feed consumers in other services' feeds.
#[derive(DeriveIden, Clone, Copy)]
pub enum FeedCursors {
    /// The table.
    Table,
    /// Consumer name, e.g. `revenue-events`.
    Consumer,
    /// Last applied sequence.
    Position,
    /// Microseconds since the epoch.
    UpdatedAt,
}

/// The consumers of this service's own feed, as they name themselves in
/// `WatchEvents`, and the sequence each has passed: pruning keeps every
/// event after the lowest of them.
#[derive(DeriveIden, Clone, Copy)]
pub enum FeedConsumers {
    /// The table.
    Table,
    /// The name the consumer gave, e.g. `scoring.revenue`.
    Consumer,
    /// The `after_sequence` of its latest `WatchEvents`: it applied every event up to it.
    Position,
    /// Microseconds since the epoch.
    UpdatedAt,
}

/// How far the outbox was pruned: one row (id 1) once anything was.
#[derive(DeriveIden, Clone, Copy)]
pub enum OutboxPruned {
    /// The table.
    Table,
    /// Always 1.
    Id,
    /// No event with this sequence or a lower one is kept.
    Through,
}

struct CreateRuntimeTables;

impl MigrationName for CreateRuntimeTables {
    fn name(&self) -> &str {
        "m0001_runtime_tables"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateRuntimeTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(IdempotencyKeys::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(IdempotencyKeys::Key)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(IdempotencyKeys::Fingerprint)
                            .string()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(IdempotencyKeys::Response)
                            .binary()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(IdempotencyKeys::CreatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(OutboxEvents::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(OutboxEvents::Sequence)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(OutboxEvents::EventId).string().not_null())
                    .col(
                        ColumnDef::new(OutboxEvents::AggregateType)
                            .string()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(OutboxEvents::AggregateId)
                            .string()
                            .not_null(),
                    )
                    .col(ColumnDef::new(OutboxEvents::EventType).string().not_null())
                    .col(
                        ColumnDef::new(OutboxEvents::PayloadType)
                            .string()
                            .not_null(),
                    )
                    .col(ColumnDef::new(OutboxEvents::Payload).binary().not_null())
                    .col(
                        ColumnDef::new(OutboxEvents::OccurredAt)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(FeedCursors::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(FeedCursors::Consumer)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(FeedCursors::Position)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(FeedCursors::UpdatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            IdempotencyKeys::Table.into_iden(),
            OutboxEvents::Table.into_iden(),
            FeedCursors::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}

/// The runtime's migrations; every service's migrator lists these first.
pub fn runtime_migrations() -> Vec<Box<dyn MigrationTrait>> {
    vec![
        Box::new(CreateRuntimeTables),
        Box::new(retention::RetentionTables),
        Box::new(audit::CreateAuditEvents),
    ]
}
