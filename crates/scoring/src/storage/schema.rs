//! The scoring schema: the tables (from the entities' columns), their
//! indexes, and the PostgreSQL layout a recomputation of every account
//! needs.
//!
//! - `signals`: every accepted signal, keyed by its idempotency key (a replay
//!   inserts nothing).
//! - `signal_days`: per account, kind and UTC day, the sum, the number of
//!   events and the latest value (see `day_cells`).
//! - `profiles`: what the feeds say about an account (segment, strategic,
//!   MRR, seats, renewal date, onboarding start, first value, churn).
//! - `subscriptions`: quantity and term of each subscription (seats, renewal).
//! - `health`, `health_history`: the current score (with its components,
//!   encoded) and one snapshot per account and day.
//! - `scorecards`, `scorecard_versions`, `alerts`, `models`.
//! - `account_people`: each account's CSM and owner (`people`).

use sea_orm::sea_query::{Alias, IntoIden};
use sea_orm::{DbBackend, DbErr};
use sea_orm_migration::prelude::{
    ColumnDef, Index, MigrationName, MigrationTrait, SchemaManager, Table, TableAlterStatement,
};

use super::entity::{
    alert, health, health_history, model, profile, scorecard, scorecard_version, signal,
    signal_day, subscription,
};
use super::pg;

/// The index on the score (SQLite only since [`PostgresLayout`]).
const HEALTH_SCORE: &str = "health_score";

fn health_score_index() -> sea_orm::sea_query::IndexCreateStatement {
    Index::create()
        .name(HEALTH_SCORE)
        .table(health::Entity)
        .col(health::Column::Score)
        .col(health::Column::AccountId)
        .if_not_exists()
        .to_owned()
}

struct CreateScoringTables;

impl MigrationName for CreateScoringTables {
    fn name(&self) -> &str {
        "m0400_scoring_tables"
    }
}

fn big(c: impl sea_orm::sea_query::IntoIden) -> ColumnDef {
    ColumnDef::new(c).big_integer().not_null().to_owned()
}

fn big_null(c: impl sea_orm::sea_query::IntoIden) -> ColumnDef {
    ColumnDef::new(c).big_integer().null().to_owned()
}

fn int(c: impl sea_orm::sea_query::IntoIden) -> ColumnDef {
    ColumnDef::new(c).integer().not_null().to_owned()
}

fn text(c: impl sea_orm::sea_query::IntoIden) -> ColumnDef {
    ColumnDef::new(c).string().not_null().to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for CreateScoringTables {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(signal::Entity)
                .if_not_exists()
                .col(text(signal::Column::IdempotencyKey).primary_key())
                .col(text(signal::Column::AccountId))
                .col(int(signal::Column::Kind))
                .col(big(signal::Column::Value))
                .col(big(signal::Column::OccurredAt))
                .col(big(signal::Column::RecordedAt))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(signal_day::Entity)
                .if_not_exists()
                .col(text(signal_day::Column::AccountId))
                .col(int(signal_day::Column::Kind))
                .col(big(signal_day::Column::Day))
                .col(big(signal_day::Column::Total))
                .col(big(signal_day::Column::Events))
                .col(big(signal_day::Column::LastValue))
                .col(big(signal_day::Column::LastAt))
                .primary_key(
                    Index::create()
                        .col(signal_day::Column::AccountId)
                        .col(signal_day::Column::Day)
                        .col(signal_day::Column::Kind),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(profile::Entity)
                .if_not_exists()
                .col(text(profile::Column::AccountId).primary_key())
                .col(int(profile::Column::Segment))
                .col(int(profile::Column::Strategic))
                .col(big_null(profile::Column::CreatedAt))
                .col(big(profile::Column::Mrr))
                .col(big_null(profile::Column::MrrAt))
                .col(big_null(profile::Column::FirstPaidAt))
                .col(big_null(profile::Column::ChurnedAt))
                .col(big_null(profile::Column::OnboardingAt))
                .col(big_null(profile::Column::FirstValueAt))
                .col(big_null(profile::Column::Seats))
                .col(big_null(profile::Column::RenewalAt))
                .col(big_null(profile::Column::ContractMonths))
                .col(big(profile::Column::LastMrr))
                .col(big(profile::Column::UpdatedAt))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(subscription::Entity)
                .if_not_exists()
                .col(text(subscription::Column::Id).primary_key())
                .col(text(subscription::Column::AccountId))
                .col(big(subscription::Column::Quantity))
                .col(big_null(subscription::Column::TermEnd))
                .col(int(subscription::Column::IntervalMonths))
                .col(int(subscription::Column::Cancelled))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("subscriptions_account")
                .table(subscription::Entity)
                .col(subscription::Column::AccountId)
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(health::Entity)
                .if_not_exists()
                .col(text(health::Column::AccountId).primary_key())
                .col(int(health::Column::Segment))
                .col(int(health::Column::Score))
                .col(int(health::Column::Band))
                .col(ColumnDef::new(health::Column::RiskBp).integer().null())
                .col(int(health::Column::Tier))
                .col(int(health::Column::Quadrant))
                .col(big(health::Column::Mrr))
                .col(ColumnDef::new(health::Column::Body).binary().not_null())
                .col(big(health::Column::ComputedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(health_score_index()).await?;
        m.create_table(
            Table::create()
                .table(health_history::Entity)
                .if_not_exists()
                .col(text(health_history::Column::AccountId))
                .col(big(health_history::Column::Day))
                .col(int(health_history::Column::Score))
                .col(int(health_history::Column::Band))
                .primary_key(
                    Index::create()
                        .col(health_history::Column::AccountId)
                        .col(health_history::Column::Day),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(scorecard::Entity)
                .if_not_exists()
                .col(int(scorecard::Column::Segment).primary_key())
                .col(big(scorecard::Column::Version))
                .col(ColumnDef::new(scorecard::Column::Body).text().not_null())
                .col(big(scorecard::Column::UpdatedAt))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(scorecard_version::Entity)
                .if_not_exists()
                .col(int(scorecard_version::Column::Segment))
                .col(big(scorecard_version::Column::Version))
                .col(
                    ColumnDef::new(scorecard_version::Column::Body)
                        .text()
                        .not_null(),
                )
                .col(big(scorecard_version::Column::UpdatedAt))
                .primary_key(
                    Index::create()
                        .col(scorecard_version::Column::Segment)
                        .col(scorecard_version::Column::Version),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(alert::Entity)
                .if_not_exists()
                .col(text(alert::Column::Id).primary_key())
                .col(text(alert::Column::AccountId))
                .col(int(alert::Column::Kind))
                .col(int(alert::Column::State))
                .col(text(alert::Column::Dedupe))
                .col(text(alert::Column::Message))
                .col(int(alert::Column::Score))
                .col(int(alert::Column::RiskBp))
                .col(big(alert::Column::Version))
                .col(text(alert::Column::Note))
                .col(big(alert::Column::CreatedAt))
                .col(big(alert::Column::UpdatedAt))
                .to_owned(),
        )
        .await?;
        // One alert per account and kind is not resolved: `dedupe` is "open"
        // until resolution, then the alert's own id.
        m.create_index(
            Index::create()
                .name("alerts_open_once")
                .table(alert::Entity)
                .col(alert::Column::AccountId)
                .col(alert::Column::Kind)
                .col(alert::Column::Dedupe)
                .unique()
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(model::Entity)
                .if_not_exists()
                .col(text(model::Column::Id).primary_key())
                .col(big(model::Column::TrainedAt))
                .col(ColumnDef::new(model::Column::Body).text().not_null())
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let tables = [
            model::Entity.into_iden(),
            alert::Entity.into_iden(),
            scorecard_version::Entity.into_iden(),
            scorecard::Entity.into_iden(),
            health_history::Entity.into_iden(),
            health::Entity.into_iden(),
            subscription::Entity.into_iden(),
            profile::Entity.into_iden(),
            signal_day::Entity.into_iden(),
            signal::Entity.into_iden(),
        ];
        for t in tables {
            m.drop_table(Table::drop().table(t).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}

/// The PostgreSQL layout of the scoring tables, for a recomputation that
/// rewrites most health rows at once. SQLite is left as it is.
///
/// - Keys compare byte by byte. They are UUIDs and idempotency keys, never
///   text sorted for a reader, yet a database's default collation
///   (`en_US.UTF-8`, even `C.UTF-8` before PostgreSQL 17) compares them
///   through the C library's locale routines, without abbreviated keys, on
///   every index look-up, upsert and sort. The "C" collation orders these
///   keys exactly as before (ASCII), so paging by key is unchanged.
/// - A health row is updated in place (a HOT update: no new index entries)
///   when its page has room and no indexed column changed. Pages are left
///   half empty for that, and the index on the score is dropped: the score
///   changes with almost every rescoring, and every change meant new
///   entries in both indexes. ListHealth sorts the matching rows instead
///   (tens of milliseconds per page for 100,000 accounts).
struct PostgresLayout;

impl MigrationName for PostgresLayout {
    fn name(&self) -> &str {
        "m0401_scoring_postgres_layout"
    }
}

/// The columns [`PostgresLayout`] compares byte by byte, by table.
fn key_columns() -> Vec<(
    sea_orm::sea_query::DynIden,
    Vec<sea_orm::sea_query::DynIden>,
)> {
    vec![
        (
            signal::Entity.into_iden(),
            vec![
                signal::Column::IdempotencyKey.into_iden(),
                signal::Column::AccountId.into_iden(),
            ],
        ),
        (
            signal_day::Entity.into_iden(),
            vec![signal_day::Column::AccountId.into_iden()],
        ),
        (
            profile::Entity.into_iden(),
            vec![profile::Column::AccountId.into_iden()],
        ),
        (
            subscription::Entity.into_iden(),
            vec![
                subscription::Column::Id.into_iden(),
                subscription::Column::AccountId.into_iden(),
            ],
        ),
        (
            health::Entity.into_iden(),
            vec![health::Column::AccountId.into_iden()],
        ),
        (
            health_history::Entity.into_iden(),
            vec![health_history::Column::AccountId.into_iden()],
        ),
        (
            alert::Entity.into_iden(),
            vec![
                alert::Column::Id.into_iden(),
                alert::Column::AccountId.into_iden(),
                alert::Column::Dedupe.into_iden(),
            ],
        ),
    ]
}

/// The key columns' type comparing byte by byte.
const BYTEWISE: &str = "varchar COLLATE \"C\"";
/// The key columns' type as created: the database's collation.
const LOCALE: &str = "varchar COLLATE \"default\"";

/// The statements giving every [`key_columns`] column the type `varchar
/// COLLATE ...` (`column_type` is [`BYTEWISE`] or [`LOCALE`]), one per table.
fn collate_keys(column_type: &'static str) -> Vec<TableAlterStatement> {
    key_columns()
        .into_iter()
        .map(|(table, columns)| {
            let mut alter = Table::alter();
            alter.table(table);
            for c in columns {
                alter.modify_column(ColumnDef::new(c).custom(Alias::new(column_type)));
            }
            alter
        })
        .collect()
}

#[async_trait::async_trait]
impl MigrationTrait for PostgresLayout {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if m.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        for alter in collate_keys(BYTEWISE) {
            m.alter_table(alter).await?;
        }
        m.drop_index(
            Index::drop()
                .name(HEALTH_SCORE)
                .table(health::Entity)
                .if_exists()
                .to_owned(),
        )
        .await?;
        pg::set_health_fillfactor(m.get_connection(), Some(50)).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if m.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        pg::set_health_fillfactor(m.get_connection(), None).await?;
        m.create_index(health_score_index()).await?;
        for alter in collate_keys(LOCALE) {
            m.alter_table(alter).await?;
        }
        Ok(())
    }
}

bowtie_runtime::migrator!(
    CreateScoringTables,
    PostgresLayout,
    super::retention::RetentionIndexes,
    super::people::AccountPeopleTable,
    super::people::AccountPeopleByPerson
);

#[cfg(test)]
mod tests {
    use sea_orm::sea_query::PostgresQueryBuilder;

    use super::*;

    #[test]
    fn the_postgres_layout_collates_each_table_s_keys_in_one_statement() {
        let alters: Vec<String> = collate_keys(BYTEWISE)
            .iter()
            .map(|a| a.to_string(PostgresQueryBuilder))
            .collect();
        assert_eq!(alters.len(), 7);
        assert_eq!(
            alters[0],
            r#"ALTER TABLE "signals" ALTER COLUMN "idempotency_key" TYPE varchar COLLATE "C", ALTER COLUMN "account_id" TYPE varchar COLLATE "C""#
        );
    }
}
