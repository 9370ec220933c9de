//! The success service's own tables and the queries on them: sea-orm entities
//! for every row-shaped table, the query builder for lists, bind parameters
//! everywhere. No other service reads them.
//!
//! - `playbooks` holds each playbook's current version and
//!   `playbook_versions` every version ever written (the spec as JSON with the
//!   contract's enum numbers, so a rename never breaks a stored spec).
//! - `ctas` holds calls to action with their tasks and comments as JSON.
//!   `open_slot` is `"<account>:<playbook>"` while a playbook's CTA is not
//!   closed and NULL after; its unique index makes "at most one open CTA per
//!   account and playbook" a database guarantee, on SQLite and PostgreSQL
//!   alike (both let many NULLs through a unique index). `due_key` is the
//!   due time zero-padded and the id, the list order and page key.
//! - `triggers` records every enrollment with its arm (treated, held out,
//!   untreated), the rows the effectiveness report counts.
//! - `activities` is the timeline; `sort_key` orders it newest first.
//! - `facts` is what the feeds told the service about each account, and
//!   `churns` when each account's MRR reached zero.

use std::collections::HashMap;

use sea_orm::entity::prelude::*;
use sea_orm::sea_query::{Expr, Func, OnConflict, Query};
use sea_orm::{ActiveValue::Set, Condition, QueryOrder, QuerySelect};
use sea_orm_migration::prelude::{
    ColumnDef, Index, MigrationName, MigrationTrait, SchemaManager, Table,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use bowtie_runtime::error::Error;
use bowtie_runtime::sql::{corrupt, internal, stored_uuid};
use bowtie_runtime::{AccountId, Instant, Minor};

use crate::domain::*;

/// Table definitions (sea-orm entities; the derive macros generate items
/// that cannot carry doc comments).
#[allow(missing_docs)]
pub mod entity {
    /// `playbooks`: the current version of each playbook.
    pub mod playbook {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "playbooks")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub id: String,
            pub name: String,
            pub version: i64,
            pub trigger_kind: i32,
            pub spec: String,
            pub created_at: i64,
            pub updated_at: i64,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    /// `playbook_versions`: every version of every playbook.
    pub mod playbook_version {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "playbook_versions")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub playbook_id: String,
            #[sea_orm(primary_key, auto_increment = false)]
            pub version: i64,
            pub spec: String,
            pub written_at: i64,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    /// `ctas`: calls to action.
    pub mod cta {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "ctas")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub id: String,
            pub account_id: String,
            pub playbook_id: String,
            pub playbook_version: i64,
            pub cta_type: i32,
            pub reason: String,
            pub priority: i32,
            pub owner: String,
            pub status: i32,
            pub outcome: i32,
            pub due_at: i64,
            pub due_key: String,
            pub snooze_until: Option<i64>,
            pub snooze_reason: String,
            pub tasks: String,
            pub comments: String,
            pub trigger_count: i32,
            pub open_slot: Option<String>,
            pub version: i64,
            pub created_at: i64,
            pub updated_at: i64,
            pub closed_at: Option<i64>,
            pub first_action_at: Option<i64>,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    /// `triggers`: every enrollment of an account in a playbook.
    pub mod trigger {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "triggers")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub id: String,
            pub playbook_id: String,
            pub playbook_version: i64,
            pub account_id: String,
            pub at: i64,
            pub arm: i32,
            pub segment: i32,
            pub cta_id: String,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    /// `activities`: the accounts' timelines.
    pub mod activity {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "activities")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub id: String,
            pub account_id: String,
            pub kind: i32,
            pub author: String,
            pub occurred_at: i64,
            pub text: String,
            pub participants: String,
            pub sort_key: String,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    /// `facts`: what the feeds said about each account.
    pub mod fact {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "facts")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub account_id: String,
            pub csm: String,
            pub owner: String,
            pub segment: i32,
            pub mrr: i64,
            pub red: bool,
            pub churn_risk_bp: Option<i32>,
            pub first_value: bool,
            pub onboarding_since: Option<i64>,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    /// `churns`: when each account's MRR reached zero.
    pub mod churn {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "churns")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub account_id: String,
            #[sea_orm(primary_key, auto_increment = false)]
            pub at: i64,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    /// `reactivations`: when each account's MRR came back from zero.
    pub mod reactivation {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "reactivations")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub account_id: String,
            #[sea_orm(primary_key, auto_increment = false)]
            pub at: i64,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    /// `people`: who is notified of which CTAs.
    pub mod person {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "people")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub person: String,
            pub email: String,
            pub cta_types: String,
            pub min_priority: i32,
            pub muted: bool,
            pub daily_digest: bool,
            pub digest_hour_utc: i32,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    /// `deliveries`: each notification of a CTA event on a channel.
    pub mod delivery {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "deliveries")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub sequence: i64,
            #[sea_orm(primary_key, auto_increment = false)]
            pub channel: i32,
            pub cta_id: String,
            pub recipient: String,
            pub status: i32,
            pub attempts: i32,
            pub last_error: String,
            pub delivered_at: Option<i64>,
            pub about: String,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    /// `step_runs`: each playbook step with an action of each CTA, until it
    /// has come due (`done`).
    pub mod step_run {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "step_runs")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub cta_id: String,
            #[sea_orm(primary_key, auto_increment = false)]
            pub step_index: i32,
            pub due_at: i64,
            pub done: bool,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    /// `digests`: the daily digests queued, one per person and day.
    pub mod digest {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "digests")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub person: String,
            #[sea_orm(primary_key, auto_increment = false)]
            pub day: String,
            pub queued_at: i64,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    /// `health_scores`: each account's health score as scoring reported it.
    pub mod health_score {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "health_scores")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub account_id: String,
            #[sea_orm(primary_key, auto_increment = false)]
            pub at: i64,
            pub score: i32,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    /// `renewals`: each subscription's renewal date, from revenue's feed.
    pub mod renewal {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "renewals")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub subscription_id: String,
            pub account_id: String,
            pub renews_at: Option<i64>,
            pub cancelled: bool,
            pub recorded_for: Option<i64>,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    /// `complaints`: each complaint scoring recorded, until resolved.
    pub mod complaint {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "complaints")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub id: String,
            pub account_id: String,
            pub at: i64,
            pub resolved_at: Option<i64>,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    /// `revenue_to_date`: each account's revenue to date from the revenue
    /// feed's movements (see `domain::RevenueToDate`).
    pub mod revenue_to_date {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "revenue_to_date")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub account_id: String,
            pub earned: i64,
            pub mrr: i64,
            pub since: i64,
            pub currency: String,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    /// `sweep_fired`: what the sweep fired, once per playbook, account and
    /// occurrence (a renewal date, an onboarding entry, a complaint).
    pub mod sweep_fired {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "sweep_fired")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub playbook_id: String,
            #[sea_orm(primary_key, auto_increment = false)]
            pub account_id: String,
            #[sea_orm(primary_key, auto_increment = false)]
            pub occurrence: i64,
            pub fired_at: i64,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }
}

use entity::{
    activity, churn, complaint, cta, delivery, digest, fact, health_score, person, playbook,
    playbook_version, reactivation, renewal, revenue_to_date, step_run, sweep_fired, trigger,
};

struct CreateSuccessTables;

impl MigrationName for CreateSuccessTables {
    fn name(&self) -> &str {
        "m0100_success_tables"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateSuccessTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use activity::Column as A;
        use churn::Column as Ch;
        use cta::Column as C;
        use fact::Column as F;
        use playbook::Column as P;
        use playbook_version::Column as V;
        use trigger::Column as T;
        manager
            .create_table(
                Table::create()
                    .table(playbook::Entity)
                    .if_not_exists()
                    .col(ColumnDef::new(P::Id).string().not_null().primary_key())
                    .col(text(P::Name).unique_key().to_owned())
                    .col(ColumnDef::new(P::Version).big_integer().not_null())
                    .col(ColumnDef::new(P::TriggerKind).integer().not_null())
                    .col(ColumnDef::new(P::Spec).text().not_null())
                    .col(ColumnDef::new(P::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(P::UpdatedAt).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(playbook_version::Entity)
                    .if_not_exists()
                    .col(text(V::PlaybookId))
                    .col(ColumnDef::new(V::Version).big_integer().not_null())
                    .col(ColumnDef::new(V::Spec).text().not_null())
                    .col(ColumnDef::new(V::WrittenAt).big_integer().not_null())
                    .primary_key(Index::create().col(V::PlaybookId).col(V::Version))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(cta::Entity)
                    .if_not_exists()
                    .col(ColumnDef::new(C::Id).string().not_null().primary_key())
                    .col(text(C::AccountId))
                    .col(text(C::PlaybookId))
                    .col(ColumnDef::new(C::PlaybookVersion).big_integer().not_null())
                    .col(ColumnDef::new(C::CtaType).integer().not_null())
                    .col(ColumnDef::new(C::Reason).text().not_null())
                    .col(ColumnDef::new(C::Priority).integer().not_null())
                    .col(text(C::Owner))
                    .col(ColumnDef::new(C::Status).integer().not_null())
                    .col(ColumnDef::new(C::Outcome).integer().not_null())
                    .col(ColumnDef::new(C::DueAt).big_integer().not_null())
                    .col(text(C::DueKey))
                    .col(ColumnDef::new(C::SnoozeUntil).big_integer().null())
                    .col(ColumnDef::new(C::SnoozeReason).text().not_null())
                    .col(ColumnDef::new(C::Tasks).text().not_null())
                    .col(ColumnDef::new(C::Comments).text().not_null())
                    .col(ColumnDef::new(C::TriggerCount).integer().not_null())
                    .col(ColumnDef::new(C::OpenSlot).string().null().unique_key())
                    .col(ColumnDef::new(C::Version).big_integer().not_null())
                    .col(ColumnDef::new(C::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(C::UpdatedAt).big_integer().not_null())
                    .col(ColumnDef::new(C::ClosedAt).big_integer().null())
                    .col(ColumnDef::new(C::FirstActionAt).big_integer().null())
                    .to_owned(),
            )
            .await?;
        create_indexes(
            manager,
            cta::Entity,
            &[
                ("ctas_owner", &[C::Owner, C::Status, C::DueKey]),
                ("ctas_account", &[C::AccountId, C::DueKey]),
                ("ctas_playbook", &[C::PlaybookId, C::CreatedAt]),
                ("ctas_due", &[C::Status, C::DueKey]),
            ],
        )
        .await?;
        manager
            .create_table(
                Table::create()
                    .table(trigger::Entity)
                    .if_not_exists()
                    .col(ColumnDef::new(T::Id).string().not_null().primary_key())
                    .col(text(T::PlaybookId))
                    .col(ColumnDef::new(T::PlaybookVersion).big_integer().not_null())
                    .col(text(T::AccountId))
                    .col(ColumnDef::new(T::At).big_integer().not_null())
                    .col(ColumnDef::new(T::Arm).integer().not_null())
                    .col(ColumnDef::new(T::Segment).integer().not_null())
                    .col(text(T::CtaId))
                    .to_owned(),
            )
            .await?;
        create_indexes(
            manager,
            trigger::Entity,
            &[
                ("triggers_playbook_at", &[T::PlaybookId, T::At]),
                ("triggers_enrollment", &[T::PlaybookId, T::AccountId, T::At]),
            ],
        )
        .await?;
        manager
            .create_table(
                Table::create()
                    .table(activity::Entity)
                    .if_not_exists()
                    .col(ColumnDef::new(A::Id).string().not_null().primary_key())
                    .col(text(A::AccountId))
                    .col(ColumnDef::new(A::Kind).integer().not_null())
                    .col(text(A::Author))
                    .col(ColumnDef::new(A::OccurredAt).big_integer().not_null())
                    .col(ColumnDef::new(A::Text).text().not_null())
                    .col(ColumnDef::new(A::Participants).text().not_null())
                    .col(text(A::SortKey))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("activities_account")
                    .table(activity::Entity)
                    .col(A::AccountId)
                    .col(A::SortKey)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(fact::Entity)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(F::AccountId)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(text(F::Csm))
                    .col(text(F::Owner))
                    .col(ColumnDef::new(F::Segment).integer().not_null())
                    .col(ColumnDef::new(F::Mrr).big_integer().not_null())
                    .col(ColumnDef::new(F::Red).boolean().not_null())
                    .col(ColumnDef::new(F::ChurnRiskBp).integer().null())
                    .col(ColumnDef::new(F::FirstValue).boolean().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(churn::Entity)
                    .if_not_exists()
                    .col(text(Ch::AccountId))
                    .col(ColumnDef::new(Ch::At).big_integer().not_null())
                    .primary_key(Index::create().col(Ch::AccountId).col(Ch::At))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(churn::Entity).if_exists().to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(fact::Entity).if_exists().to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(activity::Entity).if_exists().to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(trigger::Entity).if_exists().to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(cta::Entity).if_exists().to_owned())
            .await?;
        manager
            .drop_table(
                Table::drop()
                    .table(playbook_version::Entity)
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(playbook::Entity).if_exists().to_owned())
            .await
    }
}

struct CreateNotificationTables;

impl MigrationName for CreateNotificationTables {
    fn name(&self) -> &str {
        "m0101_success_notifications"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateNotificationTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use delivery::Column as D;
        use person::Column as P;
        manager
            .create_table(
                Table::create()
                    .table(person::Entity)
                    .if_not_exists()
                    .col(ColumnDef::new(P::Person).string().not_null().primary_key())
                    .col(text(P::Email))
                    .col(ColumnDef::new(P::CtaTypes).text().not_null())
                    .col(ColumnDef::new(P::MinPriority).integer().not_null())
                    .col(ColumnDef::new(P::Muted).boolean().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(delivery::Entity)
                    .if_not_exists()
                    .col(ColumnDef::new(D::Sequence).big_integer().not_null())
                    .col(ColumnDef::new(D::Channel).integer().not_null())
                    .col(text(D::CtaId))
                    .col(text(D::Recipient))
                    .col(ColumnDef::new(D::Status).integer().not_null())
                    .col(ColumnDef::new(D::Attempts).integer().not_null())
                    .col(ColumnDef::new(D::LastError).text().not_null())
                    .col(ColumnDef::new(D::DeliveredAt).big_integer().null())
                    .primary_key(Index::create().col(D::Sequence).col(D::Channel))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(delivery::Entity).if_exists().to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(person::Entity).if_exists().to_owned())
            .await
    }
}

struct CreateReactivationTable;

impl MigrationName for CreateReactivationTable {
    fn name(&self) -> &str {
        "m0102_success_reactivations"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateReactivationTable {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use reactivation::Column as R;
        manager
            .create_table(
                Table::create()
                    .table(reactivation::Entity)
                    .if_not_exists()
                    .col(text(R::AccountId))
                    .col(ColumnDef::new(R::At).big_integer().not_null())
                    .primary_key(Index::create().col(R::AccountId).col(R::At))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(reactivation::Entity)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}

struct CreateScheduleTables;

impl MigrationName for CreateScheduleTables {
    fn name(&self) -> &str {
        "m0103_success_steps_digests_scores"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateScheduleTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use delivery::Column as D;
        use digest::Column as G;
        use health_score::Column as H;
        use person::Column as P;
        use step_run::Column as S;
        manager
            .alter_table(
                Table::alter()
                    .table(person::Entity)
                    .add_column(
                        ColumnDef::new(P::DailyDigest)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .to_owned(),
            )
            .await?;
        // SQLite adds one column per ALTER TABLE.
        manager
            .alter_table(
                Table::alter()
                    .table(person::Entity)
                    .add_column(
                        ColumnDef::new(P::DigestHourUtc)
                            .integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(delivery::Entity)
                    .add_column(ColumnDef::new(D::About).string().not_null().default(""))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(step_run::Entity)
                    .if_not_exists()
                    .col(text(S::CtaId))
                    .col(ColumnDef::new(S::StepIndex).integer().not_null())
                    .col(ColumnDef::new(S::DueAt).big_integer().not_null())
                    .col(ColumnDef::new(S::Done).boolean().not_null())
                    .primary_key(Index::create().col(S::CtaId).col(S::StepIndex))
                    .to_owned(),
            )
            .await?;
        create_indexes(
            manager,
            step_run::Entity,
            &[("step_runs_due", &[S::Done, S::DueAt])],
        )
        .await?;
        manager
            .create_table(
                Table::create()
                    .table(digest::Entity)
                    .if_not_exists()
                    .col(text(G::Person))
                    .col(text(G::Day))
                    .col(ColumnDef::new(G::QueuedAt).big_integer().not_null())
                    .primary_key(Index::create().col(G::Person).col(G::Day))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(health_score::Entity)
                    .if_not_exists()
                    .col(text(H::AccountId))
                    .col(ColumnDef::new(H::At).big_integer().not_null())
                    .col(ColumnDef::new(H::Score).integer().not_null())
                    .primary_key(Index::create().col(H::AccountId).col(H::At))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            health_score::Entity.table_name(),
            digest::Entity.table_name(),
            step_run::Entity.table_name(),
        ] {
            manager
                .drop_table(
                    Table::drop()
                        .table(sea_orm::sea_query::Alias::new(table))
                        .if_exists()
                        .to_owned(),
                )
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(delivery::Entity)
                    .drop_column(delivery::Column::About)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(person::Entity)
                    .drop_column(person::Column::DigestHourUtc)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(person::Entity)
                    .drop_column(person::Column::DailyDigest)
                    .to_owned(),
            )
            .await
    }
}

struct CreateSweepTables;

impl MigrationName for CreateSweepTables {
    fn name(&self) -> &str {
        "m0104_success_sweep"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateSweepTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use complaint::Column as Co;
        use fact::Column as F;
        use renewal::Column as R;
        use sweep_fired::Column as S;
        manager
            .alter_table(
                Table::alter()
                    .table(fact::Entity)
                    .add_column_if_not_exists(
                        ColumnDef::new(F::OnboardingSince).big_integer().null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(renewal::Entity)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(R::SubscriptionId)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(text(R::AccountId))
                    .col(ColumnDef::new(R::RenewsAt).big_integer().null())
                    .col(ColumnDef::new(R::Cancelled).boolean().not_null())
                    .col(ColumnDef::new(R::RecordedFor).big_integer().null())
                    .to_owned(),
            )
            .await?;
        create_indexes(
            manager,
            renewal::Entity,
            &[("renewals_date", &[R::RenewsAt])],
        )
        .await?;
        manager
            .create_table(
                Table::create()
                    .table(complaint::Entity)
                    .if_not_exists()
                    .col(ColumnDef::new(Co::Id).string().not_null().primary_key())
                    .col(text(Co::AccountId))
                    .col(ColumnDef::new(Co::At).big_integer().not_null())
                    .col(ColumnDef::new(Co::ResolvedAt).big_integer().null())
                    .to_owned(),
            )
            .await?;
        create_indexes(
            manager,
            complaint::Entity,
            &[("complaints_account", &[Co::AccountId, Co::At])],
        )
        .await?;
        manager
            .create_table(
                Table::create()
                    .table(sweep_fired::Entity)
                    .if_not_exists()
                    .col(text(S::PlaybookId))
                    .col(text(S::AccountId))
                    .col(ColumnDef::new(S::Occurrence).big_integer().not_null())
                    .col(ColumnDef::new(S::FiredAt).big_integer().not_null())
                    .primary_key(
                        Index::create()
                            .col(S::PlaybookId)
                            .col(S::AccountId)
                            .col(S::Occurrence),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(sweep_fired::Entity)
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(
                Table::drop()
                    .table(complaint::Entity)
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(renewal::Entity).if_exists().to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(fact::Entity)
                    .drop_column(fact::Column::OnboardingSince)
                    .to_owned(),
            )
            .await
    }
}

struct CreateRevenueToDateTable;

impl MigrationName for CreateRevenueToDateTable {
    fn name(&self) -> &str {
        "m0105_success_revenue_to_date"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateRevenueToDateTable {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use revenue_to_date::Column as R;
        manager
            .create_table(
                Table::create()
                    .table(revenue_to_date::Entity)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(R::AccountId)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(R::Earned).big_integer().not_null())
                    .col(ColumnDef::new(R::Mrr).big_integer().not_null())
                    .col(ColumnDef::new(R::Since).big_integer().not_null())
                    .col(text(R::Currency))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(revenue_to_date::Entity)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}

bowtie_runtime::migrator!(
    CreateSuccessTables,
    CreateNotificationTables,
    CreateReactivationTable,
    CreateScheduleTables,
    CreateSweepTables,
    CreateRevenueToDateTable
);

/// Decodes a stored contract enum number.
fn stored_enum<E: TryFrom<i32>>(what: &str, raw: i32) -> Result<E, Error> {
    E::try_from(raw).map_err(|_| corrupt(format_args!("{what} {raw}")))
}

// --- playbooks ---------------------------------------------------------------

/// Creates the named indexes of `table`, each on its columns in order.
async fn create_indexes<T, C>(
    manager: &SchemaManager<'_>,
    table: T,
    indexes: &[(&str, &[C])],
) -> Result<(), DbErr>
where
    T: sea_orm::sea_query::IntoTableRef + Clone,
    C: sea_orm::sea_query::IntoIden + Clone,
{
    for (name, columns) in indexes {
        let mut index = Index::create();
        index.name(*name).table(table.clone()).if_not_exists();
        for c in columns.iter() {
            index.col(c.clone());
        }
        manager.create_index(index.to_owned()).await?;
    }
    Ok(())
}

/// A required text column.
fn text(c: impl sea_orm_migration::prelude::IntoIden) -> ColumnDef {
    ColumnDef::new(c).string().not_null().to_owned()
}

fn spec_json(spec: &PlaybookSpec) -> Result<String, Error> {
    serde_json::to_string(spec).map_err(internal)
}

fn spec_from_json(raw: &str) -> Result<PlaybookSpec, Error> {
    serde_json::from_str(raw).map_err(|e| corrupt(format_args!("playbook spec: {e}")))
}

fn playbook_from_row(m: playbook::Model) -> Result<Playbook, Error> {
    Ok(Playbook {
        id: PlaybookId(stored_uuid(&m.id)?),
        version: m.version,
        spec: spec_from_json(&m.spec)?,
        created_at: Instant::from_micros(m.created_at),
        updated_at: Instant::from_micros(m.updated_at),
    })
}

/// One playbook's current version.
pub async fn get_playbook<C: ConnectionTrait>(
    conn: &C,
    id: PlaybookId,
) -> Result<Option<Playbook>, Error> {
    playbook::Entity::find_by_id(id.0.to_string())
        .one(conn)
        .await?
        .map(playbook_from_row)
        .transpose()
}

/// One playbook's current version, or NOT_FOUND.
pub async fn require_playbook<C: ConnectionTrait>(
    conn: &C,
    id: PlaybookId,
) -> Result<Playbook, Error> {
    get_playbook(conn, id)
        .await?
        .ok_or_else(|| Error::not_found("playbook", id.0.to_string()))
}

/// The playbook called `name`, if any.
pub async fn playbook_named<C: ConnectionTrait>(
    conn: &C,
    name: &str,
) -> Result<Option<PlaybookId>, Error> {
    playbook::Entity::find()
        .filter(playbook::Column::Name.eq(name))
        .one(conn)
        .await?
        .map(|m| stored_uuid(&m.id).map(PlaybookId))
        .transpose()
}

/// Every playbook's current version, by name.
pub async fn list_playbooks<C: ConnectionTrait>(conn: &C) -> Result<Vec<Playbook>, Error> {
    playbook::Entity::find()
        .order_by_asc(playbook::Column::Name)
        .all(conn)
        .await?
        .into_iter()
        .map(playbook_from_row)
        .collect()
}

/// The current versions of the playbooks that fire on `kind`.
pub async fn playbooks_for<C: ConnectionTrait>(
    conn: &C,
    kind: TriggerKind,
) -> Result<Vec<Playbook>, Error> {
    playbook::Entity::find()
        .filter(playbook::Column::TriggerKind.eq(kind as i32))
        .order_by_asc(playbook::Column::Name)
        .all(conn)
        .await?
        .into_iter()
        .map(playbook_from_row)
        .collect()
}

/// Every version of one playbook, newest first.
pub async fn playbook_versions<C: ConnectionTrait>(
    conn: &C,
    current: &Playbook,
) -> Result<Vec<Playbook>, Error> {
    playbook_version::Entity::find()
        .filter(playbook_version::Column::PlaybookId.eq(current.id.0.to_string()))
        .order_by_desc(playbook_version::Column::Version)
        .all(conn)
        .await?
        .into_iter()
        .map(|m| {
            Ok(Playbook {
                id: current.id,
                version: m.version,
                spec: spec_from_json(&m.spec)?,
                created_at: current.created_at,
                updated_at: Instant::from_micros(m.written_at),
            })
        })
        .collect()
}

/// Writes `p` as its current version and keeps the version. `previous` is
/// the version it replaces (none for a new playbook); a row that moved past
/// it meanwhile is ABORTED.
pub async fn save_playbook<C: ConnectionTrait>(
    conn: &C,
    p: &Playbook,
    previous: Option<i64>,
) -> Result<(), Error> {
    let spec = spec_json(&p.spec)?;
    let row = playbook::ActiveModel {
        id: Set(p.id.0.to_string()),
        name: Set(p.spec.name.clone()),
        version: Set(p.version),
        trigger_kind: Set(p.spec.trigger.kind as i32),
        spec: Set(spec.clone()),
        created_at: Set(p.created_at.micros()),
        updated_at: Set(p.updated_at.micros()),
    };
    match previous {
        None => {
            row.insert(conn).await?;
        }
        Some(version) => {
            let result = playbook::Entity::update_many()
                .set(row)
                .filter(playbook::Column::Id.eq(p.id.0.to_string()))
                .filter(playbook::Column::Version.eq(version))
                .exec(conn)
                .await?;
            if result.rows_affected != 1 {
                return Err(Error::Aborted(format!(
                    "playbook {} changed concurrently; re-read it and retry",
                    p.id.0
                )));
            }
        }
    }
    playbook_version::ActiveModel {
        playbook_id: Set(p.id.0.to_string()),
        version: Set(p.version),
        spec: Set(spec),
        written_at: Set(p.updated_at.micros()),
    }
    .insert(conn)
    .await?;
    Ok(())
}

// --- CTAs --------------------------------------------------------------------

/// A task of a CTA as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// What to do.
    pub title: String,
    /// When it is due.
    pub due_at: Instant,
    /// Where it stands (the contract's number).
    pub status: i32,
}

/// A comment on a CTA as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comment {
    /// Who wrote it.
    pub author: String,
    /// The text.
    pub text: String,
    /// When.
    pub at: Instant,
}

/// A call to action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cta {
    /// Its id.
    pub id: CtaId,
    /// The account.
    pub account_id: AccountId,
    /// The playbook that opened it, if any.
    pub playbook: Option<(PlaybookId, i64)>,
    /// Its type.
    pub cta_type: CtaType,
    /// Why it exists.
    pub reason: String,
    /// Its priority.
    pub priority: Priority,
    /// Its owner.
    pub owner: String,
    /// Where it stands.
    pub status: CtaStatus,
    /// How it ended.
    pub outcome: Outcome,
    /// When it is due.
    pub due_at: Instant,
    /// SNOOZED: until when.
    pub snooze_until: Option<Instant>,
    /// SNOOZED: why.
    pub snooze_reason: String,
    /// Its tasks.
    pub tasks: Vec<Task>,
    /// Its comments.
    pub comments: Vec<Comment>,
    /// Triggers counted on it.
    pub trigger_count: i32,
    /// Its version.
    pub version: i64,
    /// When it was opened.
    pub created_at: Instant,
    /// When it last changed.
    pub updated_at: Instant,
    /// When it was closed.
    pub closed_at: Option<Instant>,
    /// When someone first acted on it.
    pub first_action_at: Option<Instant>,
}

impl Cta {
    /// What the trigger decision needs of it.
    pub fn as_open(&self) -> OpenCta {
        OpenCta {
            id: self.id,
            status: self.status,
            snooze_until: self.snooze_until,
        }
    }
}

fn due_key(due_at: Instant, id: CtaId) -> String {
    // Due times are from 1970 on (validated), so zero-padded micros sort.
    format!("{:020}:{}", due_at.micros().max(0), id.0)
}

fn open_slot(c: &Cta) -> Option<String> {
    match (c.status, c.playbook) {
        (CtaStatus::Closed, _) | (_, None) => None,
        (_, Some((playbook, _))) => Some(format!("{}:{}", c.account_id, playbook.0)),
    }
}

fn cta_row(c: &Cta) -> Result<cta::ActiveModel, Error> {
    Ok(cta::ActiveModel {
        id: Set(c.id.0.to_string()),
        account_id: Set(c.account_id.to_string()),
        playbook_id: Set(c.playbook.map(|p| p.0.0.to_string()).unwrap_or_default()),
        playbook_version: Set(c.playbook.map_or(0, |p| p.1)),
        cta_type: Set(c.cta_type as i32),
        reason: Set(c.reason.clone()),
        priority: Set(c.priority as i32),
        owner: Set(c.owner.clone()),
        status: Set(c.status as i32),
        outcome: Set(c.outcome as i32),
        due_at: Set(c.due_at.micros()),
        due_key: Set(due_key(c.due_at, c.id)),
        snooze_until: Set(c.snooze_until.map(Instant::micros)),
        snooze_reason: Set(c.snooze_reason.clone()),
        tasks: Set(serde_json::to_string(&c.tasks).map_err(internal)?),
        comments: Set(serde_json::to_string(&c.comments).map_err(internal)?),
        trigger_count: Set(c.trigger_count),
        open_slot: Set(open_slot(c)),
        version: Set(c.version),
        created_at: Set(c.created_at.micros()),
        updated_at: Set(c.updated_at.micros()),
        closed_at: Set(c.closed_at.map(Instant::micros)),
        first_action_at: Set(c.first_action_at.map(Instant::micros)),
    })
}

fn cta_from_row(m: cta::Model) -> Result<Cta, Error> {
    let playbook = if m.playbook_id.is_empty() {
        None
    } else {
        Some((PlaybookId(stored_uuid(&m.playbook_id)?), m.playbook_version))
    };
    Ok(Cta {
        id: CtaId(stored_uuid(&m.id)?),
        account_id: AccountId(stored_uuid(&m.account_id)?),
        playbook,
        cta_type: stored_enum("cta type", m.cta_type)?,
        reason: m.reason,
        priority: stored_enum("priority", m.priority)?,
        owner: m.owner,
        status: stored_enum("cta status", m.status)?,
        outcome: stored_enum("outcome", m.outcome)?,
        due_at: Instant::from_micros(m.due_at),
        snooze_until: m.snooze_until.map(Instant::from_micros),
        snooze_reason: m.snooze_reason,
        tasks: serde_json::from_str(&m.tasks).map_err(|_| corrupt("cta tasks"))?,
        comments: serde_json::from_str(&m.comments).map_err(|_| corrupt("cta comments"))?,
        trigger_count: m.trigger_count,
        version: m.version,
        created_at: Instant::from_micros(m.created_at),
        updated_at: Instant::from_micros(m.updated_at),
        closed_at: m.closed_at.map(Instant::from_micros),
        first_action_at: m.first_action_at.map(Instant::from_micros),
    })
}

/// One CTA.
pub async fn get_cta<C: ConnectionTrait>(conn: &C, id: CtaId) -> Result<Option<Cta>, Error> {
    cta::Entity::find_by_id(id.0.to_string())
        .one(conn)
        .await?
        .map(cta_from_row)
        .transpose()
}

/// One CTA, or NOT_FOUND.
pub async fn require_cta<C: ConnectionTrait>(conn: &C, id: CtaId) -> Result<Cta, Error> {
    get_cta(conn, id)
        .await?
        .ok_or_else(|| Error::not_found("cta", id.0.to_string()))
}

/// Inserts a new CTA.
pub async fn insert_cta<C: ConnectionTrait>(conn: &C, c: &Cta) -> Result<(), Error> {
    // Without RETURNING, as SQLite then reads the row back in a second
    // statement.
    cta::Entity::insert(cta_row(c)?)
        .exec_without_returning(conn)
        .await?;
    Ok(())
}

/// Writes `next` over the CTA if it is still at `previous_version`; ABORTED
/// when a concurrent writer got there first.
pub async fn update_cta<C: ConnectionTrait>(
    conn: &C,
    next: &Cta,
    previous_version: i64,
) -> Result<(), Error> {
    let result = cta::Entity::update_many()
        .set(cta_row(next)?)
        .filter(cta::Column::Id.eq(next.id.0.to_string()))
        .filter(cta::Column::Version.eq(previous_version))
        .exec(conn)
        .await?;
    if result.rows_affected == 1 {
        Ok(())
    } else {
        Err(Error::Aborted(format!(
            "cta {} changed concurrently; re-read it and retry",
            next.id.0
        )))
    }
}

/// The account's CTA from `playbook` that is not closed, if any.
pub async fn open_cta<C: ConnectionTrait>(
    conn: &C,
    account: AccountId,
    playbook: PlaybookId,
) -> Result<Option<Cta>, Error> {
    cta::Entity::find()
        .filter(cta::Column::OpenSlot.eq(format!("{account}:{}", playbook.0)))
        .one(conn)
        .await?
        .map(cta_from_row)
        .transpose()
}

/// Every CTA of the account that is not closed and came from a playbook.
pub async fn open_ctas_of<C: ConnectionTrait>(
    conn: &C,
    account: AccountId,
) -> Result<Vec<Cta>, Error> {
    cta::Entity::find()
        .filter(cta::Column::AccountId.eq(account.to_string()))
        .filter(cta::Column::OpenSlot.is_not_null())
        .all(conn)
        .await?
        .into_iter()
        .map(cta_from_row)
        .collect()
}

/// How many CTAs that are not closed each of `owners` has.
pub async fn open_counts<C: ConnectionTrait>(
    conn: &C,
    owners: &[String],
) -> Result<HashMap<String, i64>, Error> {
    if owners.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(String, i64)> = cta::Entity::find()
        .select_only()
        .column(cta::Column::Owner)
        .column_as(Expr::col(cta::Column::Id).count(), "n")
        .filter(cta::Column::Owner.is_in(owners.iter().cloned()))
        .filter(cta::Column::Status.ne(CtaStatus::Closed as i32))
        .group_by(cta::Column::Owner)
        .into_tuple()
        .all(conn)
        .await?;
    Ok(rows.into_iter().collect())
}

/// Filters of ListCtas.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CtaFilter {
    /// Exact owner.
    pub owner: Option<String>,
    /// The account.
    pub account: Option<AccountId>,
    /// The playbook.
    pub playbook: Option<PlaybookId>,
    /// The status; `None` for every status but CLOSED.
    pub status: Option<CtaStatus>,
    /// Not closed and due before this instant.
    pub overdue_at: Option<Instant>,
    /// Only CTAs these people (lower-cased) own, or of accounts whose CSM
    /// or owner they are (`mine=true`).
    pub book: Option<Vec<String>>,
}

impl CtaFilter {
    /// A stable rendering, to bind page tokens to the filters.
    pub fn fingerprint(&self) -> String {
        format!(
            "{:?}|{:?}|{:?}|{:?}|{}|{}",
            self.owner,
            self.account,
            self.playbook,
            self.status.map(|s| s as i32),
            self.overdue_at.is_some(),
            self.book.is_some()
        )
    }
}

/// One page of CTAs in due order, after the page key `after`.
pub async fn list_ctas<C: ConnectionTrait>(
    conn: &C,
    filter: &CtaFilter,
    after: Option<&str>,
    limit: u64,
) -> Result<Vec<Cta>, Error> {
    let mut cond = Condition::all();
    if let Some(owner) = &filter.owner {
        cond = cond.add(cta::Column::Owner.eq(owner.clone()));
    }
    if let Some(account) = filter.account {
        cond = cond.add(cta::Column::AccountId.eq(account.to_string()));
    }
    if let Some(playbook) = filter.playbook {
        cond = cond.add(cta::Column::PlaybookId.eq(playbook.0.to_string()));
    }
    cond = match filter.status {
        Some(status) => cond.add(cta::Column::Status.eq(status as i32)),
        None => cond.add(cta::Column::Status.ne(CtaStatus::Closed as i32)),
    };
    if let Some(now) = filter.overdue_at {
        cond = cond
            .add(cta::Column::Status.ne(CtaStatus::Closed as i32))
            .add(cta::Column::DueAt.lt(now.micros()));
    }
    if let Some(book) = &filter.book {
        // People compare case-insensitively (docs/design.md 9.3).
        let people = || book.iter().map(String::as_str);
        let lower = |c: fact::Column| Expr::expr(Func::lower(Expr::col(c)));
        let accounts = Query::select()
            .column(fact::Column::AccountId)
            .from(fact::Entity)
            .cond_where(
                Condition::any()
                    .add(lower(fact::Column::Csm).is_in(people()))
                    .add(lower(fact::Column::Owner).is_in(people())),
            )
            .to_owned();
        cond = cond.add(
            Condition::any()
                .add(Expr::expr(Func::lower(Expr::col(cta::Column::Owner))).is_in(people()))
                .add(cta::Column::AccountId.in_subquery(accounts)),
        );
    }
    if let Some(after) = after {
        cond = cond.add(cta::Column::DueKey.gt(after));
    }
    cta::Entity::find()
        .filter(cond)
        .order_by_asc(cta::Column::DueKey)
        .limit(limit)
        .all(conn)
        .await?
        .into_iter()
        .map(cta_from_row)
        .collect()
}

/// The page key of a CTA in ListCtas.
pub fn cta_page_key(c: &Cta) -> String {
    due_key(c.due_at, c.id)
}

/// What the effectiveness report counts of a playbook's CTAs opened in a
/// period, counted by the database.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CtaTotals {
    /// CTAs opened.
    pub opened: i64,
    /// Of those, the ones due by the report's instant.
    pub due: i64,
    /// Of the due ones, those closed at or before their due time.
    pub closed_on_time: i64,
    /// Closed CTAs per outcome, indexed by the outcome's number.
    pub outcomes: [i64; 6],
    /// Microseconds from opening to the first action, of each CTA acted on.
    pub to_first_action: Vec<i64>,
}

/// The totals of the playbook's CTAs opened in `[start, end)` as of `now`:
/// three aggregate queries (counts, outcomes, time to first action), so a
/// year of CTAs is never read row by row.
pub async fn cta_totals<C: ConnectionTrait>(
    conn: &C,
    playbook: PlaybookId,
    (start, end): (Instant, Instant),
    now: Instant,
) -> Result<CtaTotals, Error> {
    use cta::Column as C;
    use sea_orm::sea_query::{Func, SimpleExpr};
    let in_period = Condition::all()
        .add(C::PlaybookId.eq(playbook.0.to_string()))
        .add(C::CreatedAt.gte(start.micros()))
        .add(C::CreatedAt.lt(end.micros()));
    let due = Expr::col(C::DueAt).lte(now.micros());
    let one_if = |cond: SimpleExpr| -> SimpleExpr {
        // Integer ones: PostgreSQL sums them as a BIGINT (a sum of BIGINTs
        // would be a NUMERIC).
        Func::sum(Expr::case(cond, 1i32).finally(0i32)).into()
    };
    let on_time = due.clone().and(
        Expr::col(C::ClosedAt)
            .is_not_null()
            .and(Expr::col(C::ClosedAt).lte(Expr::col(C::DueAt))),
    );
    let counts: Option<(i64, Option<i64>, Option<i64>)> = cta::Entity::find()
        .select_only()
        .column_as(Expr::col(C::Id).count(), "opened")
        .column_as(one_if(due), "due")
        .column_as(one_if(on_time), "on_time")
        .filter(in_period.clone())
        .into_tuple()
        .one(conn)
        .await?;
    let (opened, due, closed_on_time) = counts.unwrap_or_default();
    let by_outcome: Vec<(i32, i64)> = cta::Entity::find()
        .select_only()
        .column(C::Outcome)
        .column_as(Expr::col(C::Id).count(), "n")
        .filter(in_period.clone())
        .filter(C::Status.eq(CtaStatus::Closed as i32))
        .group_by(C::Outcome)
        .into_tuple()
        .all(conn)
        .await?;
    let mut outcomes = [0i64; 6];
    for (outcome, n) in by_outcome {
        let outcome: Outcome = stored_enum("outcome", outcome)?;
        if let Some(slot) = outcomes.get_mut(outcome as usize) {
            *slot += n;
        }
    }
    let to_first_action: Vec<i64> = cta::Entity::find()
        .select_only()
        .column_as(
            Expr::col(C::FirstActionAt).sub(Expr::col(C::CreatedAt)),
            "took",
        )
        .filter(in_period)
        .filter(C::FirstActionAt.is_not_null())
        .into_tuple()
        .all(conn)
        .await?;
    Ok(CtaTotals {
        opened,
        due: due.unwrap_or(0),
        closed_on_time: closed_on_time.unwrap_or(0),
        outcomes,
        to_first_action,
    })
}

// --- triggers ----------------------------------------------------------------

/// An enrollment of an account in a playbook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerRow {
    /// The playbook.
    pub playbook: PlaybookId,
    /// Its version then.
    pub playbook_version: i64,
    /// The account.
    pub account_id: AccountId,
    /// When the event happened.
    pub at: Instant,
    /// Its arm.
    pub arm: Arm,
    /// The account's segment then.
    pub segment: Segment,
    /// The CTA it opened, if any.
    pub cta: Option<CtaId>,
}

/// Rows of one multi-row insert: at most 9 columns a row stays under
/// SQLite's oldest limit of 999 bound parameters a statement.
pub const ROWS_PER_INSERT: usize = 100;

fn trigger_row(t: &TriggerRow) -> trigger::ActiveModel {
    trigger::ActiveModel {
        id: Set(Uuid::now_v7().to_string()),
        playbook_id: Set(t.playbook.0.to_string()),
        playbook_version: Set(t.playbook_version),
        account_id: Set(t.account_id.to_string()),
        at: Set(t.at.micros()),
        arm: Set(t.arm.code()),
        segment: Set(t.segment as i32),
        cta_id: Set(t.cta.map(|c| c.0.to_string()).unwrap_or_default()),
    }
}

/// Records an enrollment.
pub async fn insert_trigger<C: ConnectionTrait>(conn: &C, t: &TriggerRow) -> Result<(), Error> {
    insert_triggers(conn, std::slice::from_ref(t)).await
}

/// Records enrollments, one statement per [`ROWS_PER_INSERT`] of them.
pub async fn insert_triggers<C: ConnectionTrait>(
    conn: &C,
    triggers: &[TriggerRow],
) -> Result<(), Error> {
    for chunk in triggers.chunks(ROWS_PER_INSERT) {
        trigger::Entity::insert_many(chunk.iter().map(trigger_row))
            .exec_without_returning(conn)
            .await?;
    }
    Ok(())
}

/// The account's last enrollment in the playbook, if any.
pub async fn last_enrolled<C: ConnectionTrait>(
    conn: &C,
    playbook: PlaybookId,
    account: AccountId,
) -> Result<Option<Instant>, Error> {
    let at: Option<i64> = trigger::Entity::find()
        .select_only()
        .column(trigger::Column::At)
        .filter(trigger::Column::PlaybookId.eq(playbook.0.to_string()))
        .filter(trigger::Column::AccountId.eq(account.to_string()))
        .order_by_desc(trigger::Column::At)
        .limit(1)
        .into_tuple()
        .one(conn)
        .await?;
    Ok(at.map(Instant::from_micros))
}

/// A trigger as the effectiveness report counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountedTrigger {
    /// The account.
    pub account_id: AccountId,
    /// When the event happened.
    pub at: Instant,
    /// Its arm.
    pub arm: Arm,
    /// The account's segment then.
    pub segment: Segment,
}

/// The playbook's triggers in `[start, end)`, only the columns the
/// effectiveness report counts.
pub async fn counted_triggers<C: ConnectionTrait>(
    conn: &C,
    playbook: PlaybookId,
    period: (Instant, Instant),
) -> Result<Vec<CountedTrigger>, Error> {
    use trigger::Column as T;
    let rows: Vec<(String, i64, i32, i32)> = trigger::Entity::find()
        .select_only()
        .columns([T::AccountId, T::At, T::Arm, T::Segment])
        .filter(triggers_in_period(playbook, period))
        .into_tuple()
        .all(conn)
        .await?;
    rows.into_iter()
        .map(|(account, at, arm, segment)| {
            Ok(CountedTrigger {
                account_id: AccountId(stored_uuid(&account)?),
                at: Instant::from_micros(at),
                arm: Arm::from_code(arm).ok_or_else(|| corrupt("trigger arm"))?,
                segment: stored_enum("segment", segment)?,
            })
        })
        .collect()
}

fn triggers_in_period(playbook: PlaybookId, (start, end): (Instant, Instant)) -> Condition {
    Condition::all()
        .add(trigger::Column::PlaybookId.eq(playbook.0.to_string()))
        .add(trigger::Column::At.gte(start.micros()))
        .add(trigger::Column::At.lt(end.micros()))
}

/// The accounts the playbook's triggers in the period name, as a subquery.
fn triggered_accounts(
    playbook: PlaybookId,
    period: (Instant, Instant),
) -> sea_orm::sea_query::SelectStatement {
    sea_orm::sea_query::Query::select()
        .column(trigger::Column::AccountId)
        .from(trigger::Entity)
        .cond_where(triggers_in_period(playbook, period))
        .to_owned()
}

/// The churns (or reactivations) of every account the playbook's triggers
/// in the period name, in one query.
pub async fn turns_of_triggered<C: ConnectionTrait>(
    conn: &C,
    turn: Turn,
    playbook: PlaybookId,
    period: (Instant, Instant),
) -> Result<HashMap<AccountId, Vec<Instant>>, Error> {
    let accounts = triggered_accounts(playbook, period);
    let rows: Vec<(String, i64)> = match turn {
        Turn::Churn => {
            churn::Entity::find()
                .select_only()
                .columns([churn::Column::AccountId, churn::Column::At])
                .filter(churn::Column::AccountId.in_subquery(accounts))
                .into_tuple()
                .all(conn)
                .await?
        }
        Turn::Reactivation => {
            reactivation::Entity::find()
                .select_only()
                .columns([reactivation::Column::AccountId, reactivation::Column::At])
                .filter(reactivation::Column::AccountId.in_subquery(accounts))
                .into_tuple()
                .all(conn)
                .await?
        }
    };
    let mut out: HashMap<AccountId, Vec<Instant>> = HashMap::new();
    for (account, at) in rows {
        out.entry(AccountId(stored_uuid(&account)?))
            .or_default()
            .push(Instant::from_micros(at));
    }
    Ok(out)
}

/// The recorded health scores of every account the playbook's triggers in
/// the period name, in one query.
pub async fn scores_of_triggered<C: ConnectionTrait>(
    conn: &C,
    playbook: PlaybookId,
    period: (Instant, Instant),
) -> Result<HashMap<AccountId, Vec<(Instant, i32)>>, Error> {
    use health_score::Column as H;
    let rows: Vec<(String, i64, i32)> = health_score::Entity::find()
        .select_only()
        .columns([H::AccountId, H::At, H::Score])
        .filter(H::AccountId.in_subquery(triggered_accounts(playbook, period)))
        .into_tuple()
        .all(conn)
        .await?;
    let mut out: HashMap<AccountId, Vec<(Instant, i32)>> = HashMap::new();
    for (account, at, score) in rows {
        out.entry(AccountId(stored_uuid(&account)?))
            .or_default()
            .push((Instant::from_micros(at), score));
    }
    Ok(out)
}

// --- activities --------------------------------------------------------------

/// A timeline entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    /// Its id.
    pub id: ActivityId,
    /// The account.
    pub account_id: AccountId,
    /// Its kind.
    pub kind: ActivityKind,
    /// Who.
    pub author: String,
    /// When it happened.
    pub occurred_at: Instant,
    /// What happened.
    pub text: String,
    /// Who took part.
    pub participants: Vec<String>,
}

fn activity_key(a: &Activity) -> String {
    // Newest first in ascending key order: the time subtracted from the
    // largest instant, zero-padded, then the id to break ties.
    format!(
        "{:020}:{}",
        i64::MAX - a.occurred_at.micros().max(0),
        a.id.0
    )
}

/// The page key of an activity in ListActivities.
pub fn activity_page_key(a: &Activity) -> String {
    activity_key(a)
}

fn activity_row(a: &Activity) -> Result<activity::ActiveModel, Error> {
    Ok(activity::ActiveModel {
        id: Set(a.id.0.to_string()),
        account_id: Set(a.account_id.to_string()),
        kind: Set(a.kind as i32),
        author: Set(a.author.clone()),
        occurred_at: Set(a.occurred_at.micros()),
        text: Set(a.text.clone()),
        participants: Set(serde_json::to_string(&a.participants).map_err(internal)?),
        sort_key: Set(activity_key(a)),
    })
}

/// Adds an entry to the timeline.
pub async fn insert_activity<C: ConnectionTrait>(conn: &C, a: &Activity) -> Result<(), Error> {
    insert_activities(conn, std::slice::from_ref(a)).await
}

/// Adds entries to the timeline in one statement (a few: the entries one
/// feed event writes).
pub async fn insert_activities<C: ConnectionTrait>(
    conn: &C,
    entries: &[Activity],
) -> Result<(), Error> {
    if entries.is_empty() {
        return Ok(());
    }
    for chunk in entries.chunks(ROWS_PER_INSERT) {
        let rows = chunk
            .iter()
            .map(activity_row)
            .collect::<Result<Vec<_>, _>>()?;
        activity::Entity::insert_many(rows)
            .exec_without_returning(conn)
            .await?;
    }
    Ok(())
}

/// Filters of ListActivities.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActivityFilter {
    /// The account.
    pub account: AccountId,
    /// Only these kinds; empty for all.
    pub kinds: Vec<ActivityKind>,
    /// Only this author.
    pub author: Option<String>,
}

impl ActivityFilter {
    /// A stable rendering, to bind page tokens to the filters.
    pub fn fingerprint(&self) -> String {
        format!(
            "{}|{:?}|{:?}",
            self.account,
            self.kinds.iter().map(|k| *k as i32).collect::<Vec<_>>(),
            self.author
        )
    }
}

/// One page of an account's timeline, newest first, after the page key `after`.
pub async fn list_activities<C: ConnectionTrait>(
    conn: &C,
    filter: &ActivityFilter,
    after: Option<&str>,
    limit: u64,
) -> Result<Vec<Activity>, Error> {
    let mut cond = Condition::all().add(activity::Column::AccountId.eq(filter.account.to_string()));
    if !filter.kinds.is_empty() {
        cond = cond.add(activity::Column::Kind.is_in(filter.kinds.iter().map(|k| *k as i32)));
    }
    if let Some(author) = &filter.author {
        cond = cond.add(activity::Column::Author.eq(author.clone()));
    }
    if let Some(after) = after {
        cond = cond.add(activity::Column::SortKey.gt(after));
    }
    activity::Entity::find()
        .filter(cond)
        .order_by_asc(activity::Column::SortKey)
        .limit(limit)
        .all(conn)
        .await?
        .into_iter()
        .map(|m| {
            Ok(Activity {
                id: ActivityId(stored_uuid(&m.id)?),
                account_id: AccountId(stored_uuid(&m.account_id)?),
                kind: stored_enum("activity kind", m.kind)?,
                author: m.author,
                occurred_at: Instant::from_micros(m.occurred_at),
                text: m.text,
                participants: serde_json::from_str(&m.participants)
                    .map_err(|_| corrupt("activity participants"))?,
            })
        })
        .collect()
}

// --- facts and churns --------------------------------------------------------

/// What the service knows of an account; defaults for one it never heard of.
pub async fn facts<C: ConnectionTrait>(
    conn: &C,
    account: AccountId,
) -> Result<AccountFacts, Error> {
    Ok(known_facts(conn, account).await?.unwrap_or(AccountFacts {
        account_id: account,
        ..AccountFacts::default()
    }))
}

/// What the service knows of an account, `None` when no feed mentioned it yet.
pub async fn known_facts<C: ConnectionTrait>(
    conn: &C,
    account: AccountId,
) -> Result<Option<AccountFacts>, Error> {
    let Some(m) = fact::Entity::find_by_id(account.to_string())
        .one(conn)
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(AccountFacts {
        account_id: account,
        csm: m.csm,
        owner: m.owner,
        segment: stored_enum("segment", m.segment)?,
        mrr: Minor(m.mrr),
        red: m.red,
        churn_risk_bp: m.churn_risk_bp,
        first_value: m.first_value,
        onboarding_since: m.onboarding_since.map(Instant::from_micros),
    }))
}

/// Stores an account's facts.
pub async fn save_facts<C: ConnectionTrait>(conn: &C, f: &AccountFacts) -> Result<(), Error> {
    use fact::Column as F;
    fact::Entity::insert(fact::ActiveModel {
        account_id: Set(f.account_id.to_string()),
        csm: Set(f.csm.clone()),
        owner: Set(f.owner.clone()),
        segment: Set(f.segment as i32),
        mrr: Set(f.mrr.get()),
        red: Set(f.red),
        churn_risk_bp: Set(f.churn_risk_bp),
        first_value: Set(f.first_value),
        onboarding_since: Set(f.onboarding_since.map(Instant::micros)),
    })
    .on_conflict(
        OnConflict::column(F::AccountId)
            .update_columns([
                F::Csm,
                F::Owner,
                F::Segment,
                F::Mrr,
                F::Red,
                F::ChurnRiskBp,
                F::FirstValue,
                F::OnboardingSince,
            ])
            .to_owned(),
    )
    .exec(conn)
    .await?;
    Ok(())
}

/// A turn of an account's MRR: to zero (a churn) or back from zero (a
/// reactivation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// MRR reached zero.
    Churn,
    /// MRR came back from zero.
    Reactivation,
}

/// Records that the account's MRR turned at `at` (once).
pub async fn add_turn<C: ConnectionTrait>(
    conn: &C,
    turn: Turn,
    account: AccountId,
    at: Instant,
) -> Result<(), Error> {
    let (id, at) = (account.to_string(), at.micros());
    match turn {
        Turn::Churn => {
            churn::Entity::insert(churn::ActiveModel {
                account_id: Set(id),
                at: Set(at),
            })
            .on_conflict(
                OnConflict::columns([churn::Column::AccountId, churn::Column::At])
                    .do_nothing()
                    .to_owned(),
            )
            .do_nothing()
            .exec(conn)
            .await?;
        }
        Turn::Reactivation => {
            reactivation::Entity::insert(reactivation::ActiveModel {
                account_id: Set(id),
                at: Set(at),
            })
            .on_conflict(
                OnConflict::columns([reactivation::Column::AccountId, reactivation::Column::At])
                    .do_nothing()
                    .to_owned(),
            )
            .do_nothing()
            .exec(conn)
            .await?;
        }
    }
    Ok(())
}

/// Takes back a turn that revenue retracted.
pub async fn remove_turn<C: ConnectionTrait>(
    conn: &C,
    turn: Turn,
    account: AccountId,
    at: Instant,
) -> Result<(), Error> {
    let key = (account.to_string(), at.micros());
    match turn {
        Turn::Churn => {
            churn::Entity::delete_by_id(key).exec(conn).await?;
        }
        Turn::Reactivation => {
            reactivation::Entity::delete_by_id(key).exec(conn).await?;
        }
    }
    Ok(())
}

// --- the sweep's facts ------------------------------------------------------

/// Stores a subscription's renewal date as revenue announced it (none
/// without a fixed term); a cancelled subscription renews no more. What was
/// recorded for an earlier date stays, and counts only for that date.
pub async fn save_renewal<C: ConnectionTrait>(
    conn: &C,
    subscription_id: &str,
    account: AccountId,
    renews_at: Option<Instant>,
    cancelled: bool,
) -> Result<(), Error> {
    use renewal::Column as R;
    renewal::Entity::insert(renewal::ActiveModel {
        subscription_id: Set(subscription_id.to_owned()),
        account_id: Set(account.to_string()),
        renews_at: Set(renews_at.map(Instant::micros)),
        cancelled: Set(cancelled),
        recorded_for: Set(None),
    })
    .on_conflict(
        OnConflict::column(R::SubscriptionId)
            .update_columns([R::AccountId, R::RenewsAt, R::Cancelled])
            .to_owned(),
    )
    .exec(conn)
    .await?;
    Ok(())
}

/// Records that the outcome of the subscription's current renewal date is
/// known, so the sweep no longer fires on that date.
pub async fn record_renewal<C: ConnectionTrait>(
    conn: &C,
    subscription_id: &str,
) -> Result<(), Error> {
    renewal::Entity::update_many()
        .col_expr(
            renewal::Column::RecordedFor,
            Expr::col(renewal::Column::RenewsAt).into(),
        )
        .filter(renewal::Column::SubscriptionId.eq(subscription_id))
        .exec(conn)
        .await?;
    Ok(())
}

/// The renewals still open with a date in `(start, end]`: not cancelled and
/// no outcome recorded for that date.
pub async fn renewals_between<C: ConnectionTrait>(
    conn: &C,
    start: Instant,
    end: Instant,
) -> Result<Vec<RenewalDate>, Error> {
    renewal::Entity::find()
        .filter(renewal::Column::Cancelled.eq(false))
        .filter(renewal::Column::RenewsAt.gt(start.micros()))
        .filter(renewal::Column::RenewsAt.lte(end.micros()))
        .filter(
            Condition::any()
                .add(renewal::Column::RecordedFor.is_null())
                .add(
                    Expr::col(renewal::Column::RecordedFor)
                        .ne(Expr::col(renewal::Column::RenewsAt)),
                ),
        )
        .all(conn)
        .await?
        .into_iter()
        .filter_map(|m| {
            let at = m.renews_at?;
            Some(stored_uuid(&m.account_id).map(|id| RenewalDate {
                account_id: AccountId(id),
                subscription_id: m.subscription_id,
                renews_at: Instant::from_micros(at),
            }))
        })
        .collect()
}

/// The accounts in ONBOARDING since before `before`, with that instant.
pub async fn onboarding_before<C: ConnectionTrait>(
    conn: &C,
    before: Instant,
) -> Result<Vec<(AccountId, Instant)>, Error> {
    let rows: Vec<(String, Option<i64>)> = fact::Entity::find()
        .select_only()
        .column(fact::Column::AccountId)
        .column(fact::Column::OnboardingSince)
        .filter(fact::Column::OnboardingSince.lt(before.micros()))
        .order_by_asc(fact::Column::AccountId)
        .into_tuple()
        .all(conn)
        .await?;
    rows.into_iter()
        .filter_map(|(id, since)| Some((id, since?)))
        .map(|(id, since)| Ok((AccountId(stored_uuid(&id)?), Instant::from_micros(since))))
        .collect()
}

/// An account's revenue to date (the default before its first movement).
pub async fn revenue_to_date<C: ConnectionTrait>(
    conn: &C,
    account: AccountId,
) -> Result<RevenueToDate, Error> {
    Ok(revenue_to_date::Entity::find_by_id(account.to_string())
        .one(conn)
        .await?
        .map(|m| RevenueToDate {
            earned: Minor(m.earned),
            mrr: Minor(m.mrr),
            since: Some(Instant::from_micros(m.since)),
            currency: m.currency,
        })
        .unwrap_or_default())
}

/// Stores an account's revenue to date (one that has a movement).
pub async fn save_revenue_to_date<C: ConnectionTrait>(
    conn: &C,
    account: AccountId,
    r: &RevenueToDate,
) -> Result<(), Error> {
    use revenue_to_date::Column as R;
    let Some(since) = r.since else {
        return Ok(());
    };
    revenue_to_date::Entity::insert(revenue_to_date::ActiveModel {
        account_id: Set(account.to_string()),
        earned: Set(r.earned.get()),
        mrr: Set(r.mrr.get()),
        since: Set(since.micros()),
        currency: Set(r.currency.clone()),
    })
    .on_conflict(
        OnConflict::column(R::AccountId)
            .update_columns([R::Earned, R::Mrr, R::Since, R::Currency])
            .to_owned(),
    )
    .exec(conn)
    .await?;
    Ok(())
}

/// The accounts that may have reached `milestone` by now: those that
/// earned it already or still earn (a positive MRR), in account order.
pub async fn earning_toward<C: ConnectionTrait>(
    conn: &C,
    milestone: Minor,
) -> Result<Vec<(AccountId, RevenueToDate)>, Error> {
    use revenue_to_date::Column as R;
    revenue_to_date::Entity::find()
        .filter(
            Condition::any()
                .add(R::Earned.gte(milestone.get()))
                .add(R::Mrr.gt(0)),
        )
        .order_by_asc(R::AccountId)
        .all(conn)
        .await?
        .into_iter()
        .map(|m| {
            Ok((
                AccountId(stored_uuid(&m.account_id)?),
                RevenueToDate {
                    earned: Minor(m.earned),
                    mrr: Minor(m.mrr),
                    since: Some(Instant::from_micros(m.since)),
                    currency: m.currency,
                },
            ))
        })
        .collect()
}

/// Records `count` complaints of the account at `at` under `key` (a
/// replayed key records nothing).
pub async fn add_complaints<C: ConnectionTrait>(
    conn: &C,
    key: &str,
    account: AccountId,
    at: Instant,
    count: i64,
) -> Result<(), Error> {
    for i in 0..count {
        complaint::Entity::insert(complaint::ActiveModel {
            id: Set(format!("{key}#{i}")),
            account_id: Set(account.to_string()),
            at: Set(at.micros()),
            resolved_at: Set(None),
        })
        .on_conflict(
            OnConflict::column(complaint::Column::Id)
                .do_nothing()
                .to_owned(),
        )
        .do_nothing()
        .exec(conn)
        .await?;
    }
    Ok(())
}

/// Resolves the account's `count` oldest open complaints at `at`.
pub async fn resolve_complaints<C: ConnectionTrait>(
    conn: &C,
    account: AccountId,
    at: Instant,
    count: i64,
) -> Result<(), Error> {
    let oldest: Vec<String> = complaint::Entity::find()
        .select_only()
        .column(complaint::Column::Id)
        .filter(complaint::Column::AccountId.eq(account.to_string()))
        .filter(complaint::Column::ResolvedAt.is_null())
        .order_by_asc(complaint::Column::At)
        .order_by_asc(complaint::Column::Id)
        .limit(u64::try_from(count).unwrap_or(0))
        .into_tuple()
        .all(conn)
        .await?;
    if oldest.is_empty() {
        return Ok(());
    }
    complaint::Entity::update_many()
        .col_expr(complaint::Column::ResolvedAt, Expr::value(at.micros()))
        .filter(complaint::Column::Id.is_in(oldest))
        .exec(conn)
        .await?;
    Ok(())
}

/// Each account's oldest open complaint made before `before`.
pub async fn complaints_before<C: ConnectionTrait>(
    conn: &C,
    before: Instant,
) -> Result<Vec<(AccountId, Instant)>, Error> {
    let rows: Vec<(String, Option<i64>)> = complaint::Entity::find()
        .select_only()
        .column(complaint::Column::AccountId)
        .column_as(Expr::col(complaint::Column::At).min(), "at")
        .filter(complaint::Column::ResolvedAt.is_null())
        .filter(complaint::Column::At.lt(before.micros()))
        .group_by(complaint::Column::AccountId)
        .order_by_asc(complaint::Column::AccountId)
        .into_tuple()
        .all(conn)
        .await?;
    rows.into_iter()
        .filter_map(|(id, at)| Some((id, at?)))
        .map(|(id, at)| Ok((AccountId(stored_uuid(&id)?), Instant::from_micros(at))))
        .collect()
}

/// Records that the sweep fired `playbook` for the account's `occurrence`;
/// `false` when it had already (on this replica or another, before or
/// after a restart).
pub async fn mark_fired<C: ConnectionTrait>(
    conn: &C,
    playbook: PlaybookId,
    account: AccountId,
    occurrence: Instant,
    now: Instant,
) -> Result<bool, Error> {
    use sweep_fired::Column as S;
    let result = sweep_fired::Entity::insert(sweep_fired::ActiveModel {
        playbook_id: Set(playbook.0.to_string()),
        account_id: Set(account.to_string()),
        occurrence: Set(occurrence.micros()),
        fired_at: Set(now.micros()),
    })
    .on_conflict(
        OnConflict::columns([S::PlaybookId, S::AccountId, S::Occurrence])
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(conn)
    .await?;
    Ok(result == 1)
}

// --- notifications -----------------------------------------------------------

/// Stores a person's notification settings.
pub async fn save_person<C: ConnectionTrait>(conn: &C, p: &Person) -> Result<(), Error> {
    use person::Column as P;
    let types: Vec<i32> = p.cta_types.iter().map(|t| *t as i32).collect();
    person::Entity::insert(person::ActiveModel {
        person: Set(p.person.clone()),
        email: Set(p.email.clone()),
        cta_types: Set(serde_json::to_string(&types).map_err(internal)?),
        min_priority: Set(p.min_priority as i32),
        muted: Set(p.muted),
        daily_digest: Set(p.daily_digest),
        digest_hour_utc: Set(p.digest_hour_utc),
    })
    .on_conflict(
        OnConflict::column(P::Person)
            .update_columns([
                P::Email,
                P::CtaTypes,
                P::MinPriority,
                P::Muted,
                P::DailyDigest,
                P::DigestHourUtc,
            ])
            .to_owned(),
    )
    .exec(conn)
    .await?;
    Ok(())
}

fn person_from_row(m: person::Model) -> Result<Person, Error> {
    let types: Vec<i32> =
        serde_json::from_str(&m.cta_types).map_err(|_| corrupt("person cta_types"))?;
    Ok(Person {
        person: m.person,
        email: m.email,
        cta_types: types
            .into_iter()
            .map(|t| stored_enum("cta type", t))
            .collect::<Result<_, _>>()?,
        min_priority: stored_enum("priority", m.min_priority)?,
        muted: m.muted,
        daily_digest: m.daily_digest,
        digest_hour_utc: m.digest_hour_utc,
    })
}

/// A person's notification settings, if they set any.
pub async fn get_person<C: ConnectionTrait>(conn: &C, who: &str) -> Result<Option<Person>, Error> {
    person::Entity::find_by_id(who.to_owned())
        .one(conn)
        .await?
        .map(person_from_row)
        .transpose()
}

/// Everyone who asked for a daily digest and has not muted email.
pub async fn digest_people<C: ConnectionTrait>(conn: &C) -> Result<Vec<Person>, Error> {
    person::Entity::find()
        .filter(person::Column::DailyDigest.eq(true))
        .filter(person::Column::Muted.eq(false))
        .order_by_asc(person::Column::Person)
        .all(conn)
        .await?
        .into_iter()
        .map(person_from_row)
        .collect()
}

/// Records that `person`'s digest of `day` is queued; `false` when it
/// already was (by this replica or another, before a restart or not).
pub async fn claim_digest<C: ConnectionTrait>(
    conn: &C,
    person: &str,
    day: &str,
    at: Instant,
) -> Result<bool, Error> {
    let rows = digest::Entity::insert(digest::ActiveModel {
        person: Set(person.to_owned()),
        day: Set(day.to_owned()),
        queued_at: Set(at.micros()),
    })
    .on_conflict(
        OnConflict::columns([digest::Column::Person, digest::Column::Day])
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(conn)
    .await?;
    Ok(rows == 1)
}

// --- step actions --------------------------------------------------------------

/// Schedules the action of step `index` of a CTA for `due_at`.
pub async fn schedule_step<C: ConnectionTrait>(
    conn: &C,
    cta: CtaId,
    index: i32,
    due_at: Instant,
    done: bool,
) -> Result<(), Error> {
    step_run::Entity::insert(step_run::ActiveModel {
        cta_id: Set(cta.0.to_string()),
        step_index: Set(index),
        due_at: Set(due_at.micros()),
        done: Set(done),
    })
    .exec_without_returning(conn)
    .await?;
    Ok(())
}

/// Up to `limit` scheduled step actions due at `now`, the earliest first.
pub async fn due_steps<C: ConnectionTrait>(
    conn: &C,
    now: Instant,
    limit: u64,
) -> Result<Vec<(CtaId, i32)>, Error> {
    let rows: Vec<(String, i32)> = step_run::Entity::find()
        .select_only()
        .column(step_run::Column::CtaId)
        .column(step_run::Column::StepIndex)
        .filter(step_run::Column::Done.eq(false))
        .filter(step_run::Column::DueAt.lte(now.micros()))
        .order_by_asc(step_run::Column::DueAt)
        .limit(limit)
        .into_tuple()
        .all(conn)
        .await?;
    rows.into_iter()
        .map(|(id, index)| Ok((CtaId(stored_uuid(&id)?), index)))
        .collect()
}

/// Marks a scheduled step action as come due; `false` when it already was.
pub async fn finish_step<C: ConnectionTrait>(
    conn: &C,
    cta: CtaId,
    index: i32,
) -> Result<bool, Error> {
    let done = step_run::Entity::update_many()
        .col_expr(step_run::Column::Done, Expr::value(true))
        .filter(step_run::Column::CtaId.eq(cta.0.to_string()))
        .filter(step_run::Column::StepIndex.eq(index))
        .filter(step_run::Column::Done.eq(false))
        .exec(conn)
        .await?;
    Ok(done.rows_affected == 1)
}

/// One version of a playbook, if it exists.
pub async fn playbook_at_version<C: ConnectionTrait>(
    conn: &C,
    id: PlaybookId,
    version: i64,
) -> Result<Option<PlaybookSpec>, Error> {
    playbook_version::Entity::find_by_id((id.0.to_string(), version))
        .one(conn)
        .await?
        .map(|m| spec_from_json(&m.spec))
        .transpose()
}

// --- health scores -------------------------------------------------------------

/// Records an account's health score at `at` (a repeat changes nothing).
pub async fn add_score<C: ConnectionTrait>(
    conn: &C,
    account: AccountId,
    at: Instant,
    score: i32,
) -> Result<(), Error> {
    add_scores(conn, &[(account, at, score)]).await
}

/// Records health scores, each an account's at an instant (a repeat
/// changes nothing), one statement per [`ROWS_PER_INSERT`] of them.
pub async fn add_scores<C: ConnectionTrait>(
    conn: &C,
    scores: &[(AccountId, Instant, i32)],
) -> Result<(), Error> {
    for chunk in scores.chunks(ROWS_PER_INSERT) {
        health_score::Entity::insert_many(chunk.iter().map(|&(account, at, score)| {
            health_score::ActiveModel {
                account_id: Set(account.to_string()),
                at: Set(at.micros()),
                score: Set(score),
            }
        }))
        .on_conflict(
            OnConflict::columns([health_score::Column::AccountId, health_score::Column::At])
                .do_nothing()
                .to_owned(),
        )
        .do_nothing()
        .exec(conn)
        .await?;
    }
    Ok(())
}

/// Each account's latest recorded health score (the one at its latest
/// `at`), for the book of business.
pub async fn latest_scores<C: ConnectionTrait>(conn: &C) -> Result<HashMap<AccountId, i32>, Error> {
    use health_score::Column as H;
    let latest = sea_orm::sea_query::Query::select()
        .column(H::AccountId)
        .expr(Expr::col(H::At).max())
        .from(health_score::Entity)
        .group_by_col(H::AccountId)
        .to_owned();
    let rows: Vec<(String, i32)> = health_score::Entity::find()
        .select_only()
        .columns([H::AccountId, H::Score])
        .filter(
            Expr::tuple([Expr::col(H::AccountId).into(), Expr::col(H::At).into()])
                .in_subquery(latest),
        )
        .into_tuple()
        .all(conn)
        .await?;
    rows.into_iter()
        .map(|(account, score)| Ok((AccountId(stored_uuid(&account)?), score)))
        .collect()
}

/// One notification of a CTA event on a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The feed sequence of the event.
    pub sequence: i64,
    /// The channel (the contract's number).
    pub channel: i32,
    /// The CTA; `None` for a digest.
    pub cta_id: Option<CtaId>,
    /// The address, or the webhook's host.
    pub recipient: String,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// When it was delivered.
    pub delivered_at: Option<Instant>,
    /// Attempts so far.
    pub attempts: i32,
    /// Why the last attempt failed.
    pub last_error: String,
    /// What it is: `cta.opened`, `step <index>` or `digest <day>`.
    pub about: String,
}

fn delivery_from_row(m: delivery::Model) -> Result<Delivery, Error> {
    Ok(Delivery {
        sequence: m.sequence,
        channel: m.channel,
        cta_id: if m.cta_id.is_empty() {
            None
        } else {
            Some(CtaId(stored_uuid(&m.cta_id)?))
        },
        about: m.about,
        recipient: m.recipient,
        status: stored_enum("delivery status", m.status)?,
        delivered_at: m.delivered_at.map(Instant::from_micros),
        attempts: m.attempts,
        last_error: m.last_error,
    })
}

/// The delivery of event `sequence` on `channel`, if one was tried.
pub async fn get_delivery<C: ConnectionTrait>(
    conn: &C,
    sequence: i64,
    channel: i32,
) -> Result<Option<Delivery>, Error> {
    delivery::Entity::find_by_id((sequence, channel))
        .one(conn)
        .await?
        .map(delivery_from_row)
        .transpose()
}

/// Records an attempt (or the success) of a delivery.
pub async fn save_delivery<C: ConnectionTrait>(conn: &C, d: &Delivery) -> Result<(), Error> {
    use delivery::Column as D;
    delivery::Entity::insert(delivery::ActiveModel {
        sequence: Set(d.sequence),
        channel: Set(d.channel),
        cta_id: Set(d.cta_id.map(|c| c.0.to_string()).unwrap_or_default()),
        about: Set(d.about.clone()),
        recipient: Set(d.recipient.clone()),
        status: Set(d.status as i32),
        attempts: Set(d.attempts),
        last_error: Set(d.last_error.clone()),
        delivered_at: Set(d.delivered_at.map(Instant::micros)),
    })
    .on_conflict(
        OnConflict::columns([D::Sequence, D::Channel])
            .update_columns([
                D::Recipient,
                D::Status,
                D::Attempts,
                D::LastError,
                D::DeliveredAt,
            ])
            .to_owned(),
    )
    .exec(conn)
    .await?;
    Ok(())
}

/// The newest deliveries, of one status when asked.
pub async fn list_deliveries<C: ConnectionTrait>(
    conn: &C,
    status: Option<DeliveryStatus>,
    limit: u64,
) -> Result<Vec<Delivery>, Error> {
    let mut q = delivery::Entity::find();
    if let Some(status) = status {
        q = q.filter(delivery::Column::Status.eq(status as i32));
    }
    q.order_by_desc(delivery::Column::Sequence)
        .order_by_asc(delivery::Column::Channel)
        .limit(limit)
        .all(conn)
        .await?
        .into_iter()
        .map(delivery_from_row)
        .collect()
}

// --- book of business and touches ---------------------------------------------

/// What the book of business reads of every account's facts.
pub async fn book_facts<C: ConnectionTrait>(
    conn: &C,
) -> Result<Vec<crate::book::BookFacts>, Error> {
    use fact::Column as F;
    let rows: Vec<(String, String, String, i64, bool, Option<i32>)> = fact::Entity::find()
        .select_only()
        .columns([
            F::AccountId,
            F::Csm,
            F::Owner,
            F::Mrr,
            F::Red,
            F::ChurnRiskBp,
        ])
        .order_by_asc(F::AccountId)
        .into_tuple()
        .all(conn)
        .await?;
    rows.into_iter()
        .map(|(account, csm, owner, mrr, red, churn_risk_bp)| {
            Ok(crate::book::BookFacts {
                account_id: AccountId(stored_uuid(&account)?),
                csm,
                owner,
                mrr: Minor(mrr),
                red,
                churn_risk_bp,
            })
        })
        .collect()
}

/// The account and due time of every CTA that is not closed.
pub async fn open_cta_dues<C: ConnectionTrait>(
    conn: &C,
) -> Result<Vec<(AccountId, Instant)>, Error> {
    let rows: Vec<(String, i64)> = cta::Entity::find()
        .select_only()
        .columns([cta::Column::AccountId, cta::Column::DueAt])
        .filter(cta::Column::Status.ne(CtaStatus::Closed as i32))
        .into_tuple()
        .all(conn)
        .await?;
    rows.into_iter()
        .map(|(account, due)| Ok((AccountId(stored_uuid(&account)?), Instant::from_micros(due))))
        .collect()
}

/// The activities people logged (NOTE, CALL, MEETING, EMAIL) that happened
/// in `[start, end)`, of one author when asked.
pub async fn logged_touches<C: ConnectionTrait>(
    conn: &C,
    (start, end): (Instant, Instant),
    author: Option<&str>,
) -> Result<Vec<crate::book::Touch>, Error> {
    use activity::Column as A;
    let mut q = activity::Entity::find()
        .select_only()
        .columns([A::AccountId, A::Kind, A::Author, A::OccurredAt])
        .filter(A::Kind.is_in(crate::book::LOGGED_KINDS.iter().map(|k| *k as i32)))
        .filter(A::OccurredAt.gte(start.micros()))
        .filter(A::OccurredAt.lt(end.micros()));
    if let Some(author) = author {
        q = q.filter(A::Author.eq(author));
    }
    let rows: Vec<(String, i32, String, i64)> = q.into_tuple().all(conn).await?;
    rows.into_iter()
        .map(|(account, kind, author, at)| {
            Ok(crate::book::Touch {
                account_id: AccountId(stored_uuid(&account)?),
                kind: stored_enum("activity kind", kind)?,
                author,
                at: Instant::from_micros(at),
            })
        })
        .collect()
}
