//! The audit log's table ([`crate::audit`]): one row per committed write
//! made by a call, newest last by id; the index on the time serves the
//! period filter.

use sea_orm_migration::prelude::*;

/// The audit log.
#[derive(DeriveIden, Clone, Copy)]
pub enum AuditEvents {
    /// The table.
    Table,
    /// UUIDv7.
    Id,
    /// Commit time, microseconds since the epoch.
    OccurredAt,
    /// Key name or token subject.
    Principal,
    /// gRPC path.
    Rpc,
    /// `,type:id,type:id,` (at most 100).
    Targets,
    /// How many targets there were.
    TargetsTotal,
    /// Hex SHA-256 of the request body.
    RequestDigest,
    /// The request's idempotency key, or empty.
    IdempotencyKey,
    /// gRPC code name of the answer.
    ResultCode,
}

pub(super) struct CreateAuditEvents;

impl MigrationName for CreateAuditEvents {
    fn name(&self) -> &str {
        "m0003_runtime_audit_events"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateAuditEvents {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let text = |c: AuditEvents| ColumnDef::new(c).string().not_null().to_owned();
        manager
            .create_table(
                Table::create()
                    .table(AuditEvents::Table)
                    .if_not_exists()
                    .col(text(AuditEvents::Id).primary_key())
                    .col(
                        ColumnDef::new(AuditEvents::OccurredAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(text(AuditEvents::Principal))
                    .col(text(AuditEvents::Rpc))
                    .col(ColumnDef::new(AuditEvents::Targets).text().not_null())
                    .col(
                        ColumnDef::new(AuditEvents::TargetsTotal)
                            .integer()
                            .not_null(),
                    )
                    .col(text(AuditEvents::RequestDigest))
                    .col(text(AuditEvents::IdempotencyKey))
                    .col(text(AuditEvents::ResultCode))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("audit_events_occurred_at")
                    .table(AuditEvents::Table)
                    .col(AuditEvents::OccurredAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(AuditEvents::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
