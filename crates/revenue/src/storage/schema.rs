//! The revenue schema, written with sea-orm-migration's schema builder.
//!
//! The migration keeps its name (`m0300_revenue_tables`) and creates every
//! table and index `IF NOT EXISTS`, so a database created by an earlier
//! version is recognised as migrated and keeps working unchanged.
//!
//! On SQLite the movement and span tables are `WITHOUT ROWID`: clustered by
//! their primary key (account first), so an account's movements or spans
//! are one contiguous range, which is what recompute and retention read.

use sea_orm::DbBackend;
use sea_orm_migration::prelude::{
    ColumnDef, DbErr, Index, IndexCreateStatement, MigrationName, MigrationTrait, SchemaManager,
    Table, TableCreateStatement,
};

use super::entity::{
    account_version, cut_rollup, fx_rate, invoice, monthly_spend, movement, paying_span,
    renewal_outcome, rollup, subscription,
};

/// Length of a stored UUID (hyphenated text).
const ID: u32 = 36;
/// Length of an ISO-4217 code.
const CURRENCY: u32 = 3;
/// Longest owner or CSM name.
const OWNER: u32 = 200;
/// Longest external invoice id.
pub const EXTERNAL_ID: u32 = 200;

struct CreateRevenueTables;

/// Adds the billing system's id to invoices, so a later record of the same
/// invoice (its payment) updates it: the past-due policy reads when each
/// invoice was paid.
struct InvoiceExternalIds;

impl MigrationName for InvoiceExternalIds {
    fn name(&self) -> &str {
        "m0301_invoice_external_ids"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for InvoiceExternalIds {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use invoice::Column as I;
        manager
            .alter_table(
                Table::alter()
                    .table(invoice::Entity)
                    .add_column(ColumnDef::new(I::ExternalId).string_len(EXTERNAL_ID).null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                index("invoices_external", invoice::Entity)
                    .col(I::ExternalId)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("invoices_external")
                    .table(invoice::Entity)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(invoice::Entity)
                    .drop_column(invoice::Column::ExternalId)
                    .to_owned(),
            )
            .await
    }
}

impl MigrationName for CreateRevenueTables {
    fn name(&self) -> &str {
        "m0300_revenue_tables"
    }
}

fn id(column: impl sea_orm::Iden + 'static) -> ColumnDef {
    ColumnDef::new(column).string_len(ID).not_null().to_owned()
}

fn big(column: impl sea_orm::Iden + 'static) -> ColumnDef {
    ColumnDef::new(column).big_integer().not_null().to_owned()
}

fn int(column: impl sea_orm::Iden + 'static) -> ColumnDef {
    ColumnDef::new(column).integer().not_null().to_owned()
}

fn index(name: &str, table: impl sea_orm::Iden + 'static) -> IndexCreateStatement {
    Index::create()
        .name(name)
        .table(table)
        .if_not_exists()
        .to_owned()
}

/// Every table, in creation order, with the indexes created after it.
fn tables(backend: DbBackend) -> Vec<(TableCreateStatement, Vec<IndexCreateStatement>)> {
    use fx_rate::Column as F;
    use invoice::Column as I;
    use monthly_spend::Column as S;
    use movement::Column as M;
    use paying_span::Column as P;
    use renewal_outcome::Column as O;
    use rollup::Column as R;
    use subscription::Column as Sub;
    let clustered = |table: &mut TableCreateStatement| {
        if backend == DbBackend::Sqlite {
            table.extra("WITHOUT ROWID");
        }
        table.to_owned()
    };
    vec![
        (
            Table::create()
                .table(subscription::Entity)
                .if_not_exists()
                .col(id(Sub::Id).primary_key())
                .col(id(Sub::AccountId))
                .col(ColumnDef::new(Sub::RenewalAt).big_integer().null())
                .col(ColumnDef::new(Sub::Data).text().not_null())
                .col(big(Sub::Version))
                .col(big(Sub::UpdatedAt))
                .to_owned(),
            vec![
                index("subscriptions_account", subscription::Entity)
                    .col(Sub::AccountId)
                    .to_owned(),
                index("subscriptions_renewal", subscription::Entity)
                    .col(Sub::RenewalAt)
                    .to_owned(),
            ],
        ),
        (
            clustered(
                Table::create()
                    .table(movement::Entity)
                    .if_not_exists()
                    .col(id(M::AccountId))
                    .col(big(M::OccurredAt))
                    .col(int(M::Kind))
                    .col(big(M::Amount))
                    .col(big(M::MrrBefore))
                    .col(big(M::MrrAfter))
                    .col(int(M::Segment))
                    .primary_key(Index::create().col(M::AccountId).col(M::OccurredAt)),
            ),
            vec![
                index("movements_time", movement::Entity)
                    .col(M::OccurredAt)
                    .col(M::AccountId)
                    .to_owned(),
            ],
        ),
        (
            Table::create()
                .table(rollup::Entity)
                .if_not_exists()
                .col(int(R::Month))
                .col(int(R::Segment))
                .col(int(R::Kind))
                .col(big(R::Amount))
                .col(big(R::Movements))
                .primary_key(Index::create().col(R::Month).col(R::Segment).col(R::Kind))
                .to_owned(),
            vec![],
        ),
        (
            clustered(
                Table::create()
                    .table(paying_span::Entity)
                    .if_not_exists()
                    .col(id(P::AccountId))
                    .col(big(P::ValidFrom))
                    .col(big(P::ValidTo))
                    .col(big(P::Mrr))
                    .col(int(P::Segment))
                    .col(ColumnDef::new(P::Owner).string_len(OWNER).not_null())
                    .primary_key(Index::create().col(P::AccountId).col(P::ValidFrom)),
            ),
            vec![
                index("paying_spans_from", paying_span::Entity)
                    .col(P::ValidFrom)
                    .to_owned(),
            ],
        ),
        (
            Table::create()
                .table(fx_rate::Entity)
                .if_not_exists()
                .col(ColumnDef::new(F::Currency).string_len(CURRENCY).not_null())
                .col(big(F::EffectiveAt))
                .col(big(F::RateNanos))
                .primary_key(Index::create().col(F::Currency).col(F::EffectiveAt))
                .to_owned(),
            vec![],
        ),
        (
            Table::create()
                .table(invoice::Entity)
                .if_not_exists()
                .col(id(I::Id).primary_key())
                .col(id(I::AccountId))
                .col(id(I::SubscriptionId))
                .col(ColumnDef::new(I::Currency).string_len(CURRENCY).not_null())
                .col(big(I::Amount))
                .col(big(I::DueAt))
                .col(ColumnDef::new(I::PaidAt).big_integer().null())
                .col(big(I::CreatedAt))
                .to_owned(),
            vec![
                index("invoices_account", invoice::Entity)
                    .col(I::AccountId)
                    .to_owned(),
            ],
        ),
        (
            Table::create()
                .table(renewal_outcome::Entity)
                .if_not_exists()
                .col(id(O::SubscriptionId))
                .col(big(O::RenewalAt))
                .col(int(O::Outcome))
                .col(big(O::DecidedAt))
                .primary_key(Index::create().col(O::SubscriptionId).col(O::RenewalAt))
                .to_owned(),
            vec![],
        ),
        (
            Table::create()
                .table(monthly_spend::Entity)
                .if_not_exists()
                .col(int(S::Month).primary_key())
                .col(big(S::Spend))
                .col(int(S::GrossMarginBp))
                .to_owned(),
            vec![],
        ),
    ]
}

#[async_trait::async_trait]
impl MigrationTrait for CreateRevenueTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (table, indexes) in tables(manager.get_database_backend()) {
            manager.create_table(table).await?;
            for index in indexes {
                manager.create_index(index).await?;
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let drops = [
            Table::drop().table(monthly_spend::Entity).to_owned(),
            Table::drop().table(renewal_outcome::Entity).to_owned(),
            Table::drop().table(invoice::Entity).to_owned(),
            Table::drop().table(fx_rate::Entity).to_owned(),
            Table::drop().table(paying_span::Entity).to_owned(),
            Table::drop().table(rollup::Entity).to_owned(),
            Table::drop().table(movement::Entity).to_owned(),
            Table::drop().table(subscription::Entity).to_owned(),
        ];
        for mut drop in drops {
            manager.drop_table(drop.if_exists().to_owned()).await?;
        }
        Ok(())
    }
}

/// Gives the paying spans the account's customer success manager, so
/// retention cuts by CSM as it does by owner. Spans written before it have
/// none ("") until their account's next write recomputes them.
struct AddSpanCsm;

impl MigrationName for AddSpanCsm {
    fn name(&self) -> &str {
        "m0302_paying_span_csm"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddSpanCsm {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(paying_span::Entity)
                    .add_column(
                        ColumnDef::new(paying_span::Column::Csm)
                            .string_len(OWNER)
                            .not_null()
                            .default(""),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(paying_span::Entity)
                    .drop_column(paying_span::Column::Csm)
                    .to_owned(),
            )
            .await
    }
}

/// Gives each movement the cause a CHURN or CONTRACTION is attributed to
/// (the kind and reason code of the cancellation or lapse behind it), so the
/// churn analysis reads the movements of its range instead of every
/// subscription's history, and an index by kind and time for that read.
/// Movements written before it have no cause (they report as
/// "unspecified") until their account's next write, or an import of it,
/// recomputes them.
struct AddMovementCause;

/// Longest stored reason code (as CancelSubscription accepts).
const REASON: u32 = 100;

impl MigrationName for AddMovementCause {
    fn name(&self) -> &str {
        "m0303_movement_cause"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddMovementCause {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use movement::Column as M;
        // SQLite adds one column per ALTER TABLE.
        manager
            .alter_table(
                Table::alter()
                    .table(movement::Entity)
                    .add_column(ColumnDef::new(M::CauseKind).integer().not_null().default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(movement::Entity)
                    .add_column(
                        ColumnDef::new(M::CauseReason)
                            .string_len(REASON)
                            .not_null()
                            .default(""),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                index("movements_kind_time", movement::Entity)
                    .col(M::Kind)
                    .col(M::OccurredAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("movements_kind_time")
                    .table(movement::Entity)
                    .to_owned(),
            )
            .await?;
        for column in [movement::Column::CauseReason, movement::Column::CauseKind] {
            manager
                .alter_table(
                    Table::alter()
                        .table(movement::Entity)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

/// The cuts (docs/design.md, "Cuts"): the account versions revenue
/// records, the plan and tags and attributes of each paying span, and the
/// roll-up per dimension and value. Spans written before it have NULL
/// extras and are left out of the cut roll-up until their account's next
/// write or import recomputes them.
struct AddCuts;

/// Longest dimension key (`attr:` and an attribute name).
const DIMENSION: u32 = 120;

impl MigrationName for AddCuts {
    fn name(&self) -> &str {
        "m0304_revenue_cuts"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddCuts {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use account_version::Column as V;
        use cut_rollup::Column as C;
        use paying_span::Column as P;
        let backend = manager.get_database_backend();
        // SQLite adds one column per ALTER TABLE.
        manager
            .alter_table(
                Table::alter()
                    .table(paying_span::Entity)
                    .add_column(
                        ColumnDef::new(P::Plan)
                            .string_len(OWNER)
                            .not_null()
                            .default(""),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(paying_span::Entity)
                    .add_column(ColumnDef::new(P::Extras).text().null())
                    .to_owned(),
            )
            .await?;
        let mut versions = Table::create()
            .table(account_version::Entity)
            .if_not_exists()
            .col(id(V::AccountId))
            .col(big(V::Version))
            .col(big(V::EffectiveAt))
            .col(int(V::Segment))
            .col(ColumnDef::new(V::Owner).string_len(OWNER).not_null())
            .col(ColumnDef::new(V::Csm).string_len(OWNER).not_null())
            .col(ColumnDef::new(V::Extras).text().not_null())
            .primary_key(Index::create().col(V::AccountId).col(V::Version))
            .to_owned();
        if backend == DbBackend::Sqlite {
            versions.extra("WITHOUT ROWID");
        }
        manager.create_table(versions).await?;
        manager
            .create_table(
                Table::create()
                    .table(cut_rollup::Entity)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(C::Dimension)
                            .string_len(DIMENSION)
                            .not_null(),
                    )
                    .col(ColumnDef::new(C::Value).string_len(OWNER).not_null())
                    .col(int(C::Month))
                    .col(int(C::Kind))
                    .col(big(C::Amount))
                    .col(big(C::Movements))
                    .primary_key(
                        Index::create()
                            .col(C::Dimension)
                            .col(C::Value)
                            .col(C::Month)
                            .col(C::Kind),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Table::drop().table(cut_rollup::Entity).to_owned(),
            Table::drop().table(account_version::Entity).to_owned(),
        ] {
            manager.drop_table(table).await?;
        }
        for column in [paying_span::Column::Extras, paying_span::Column::Plan] {
            manager
                .alter_table(
                    Table::alter()
                        .table(paying_span::Entity)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

bowtie_runtime::migrator!(
    CreateRevenueTables,
    InvoiceExternalIds,
    AddSpanCsm,
    AddMovementCause,
    AddCuts
);
