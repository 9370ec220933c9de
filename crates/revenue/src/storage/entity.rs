//! The revenue tables as sea-orm entities: one module per table, named after
//! the row it holds. Queries name tables and columns through these, so a
//! column is spelled once; the schema itself (types, keys, indexes) is
//! created in `schema`.
//!
//! Ids are stored as their hyphenated text (`VARCHAR(36)`), instants as
//! microseconds since the epoch, money as minor units of the reporting
//! currency, and segments and movement kinds as their protobuf codes.

// The derive macros generate items that cannot carry doc comments.
#![allow(missing_docs)]

/// `subscriptions`: one row per subscription; `data` is its whole history
/// as JSON (`renewal_at` and `account_id` are copied out for the indexes).
pub mod subscription {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "subscriptions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub account_id: String,
        pub renewal_at: Option<i64>,
        #[sea_orm(column_type = "Text")]
        pub data: String,
        pub version: i64,
        pub updated_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `movements`: the derived MRR movements, one per account and instant.
/// `cause_kind` (0 none, 1 voluntary, 2 involuntary) and `cause_reason` ("":
/// none) are what a CHURN or CONTRACTION movement is attributed to.
pub mod movement {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "movements")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub account_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub occurred_at: i64,
        pub kind: i32,
        pub amount: i64,
        pub mrr_before: i64,
        pub mrr_after: i64,
        pub segment: i32,
        pub cause_kind: i32,
        pub cause_reason: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `mrr_rollup`: signed sum and count of movements per month x segment x
/// kind, kept current by deltas.
pub mod rollup {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "mrr_rollup")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub month: i32,
        #[sea_orm(primary_key, auto_increment = false)]
        pub segment: i32,
        #[sea_orm(primary_key, auto_increment = false)]
        pub kind: i32,
        pub amount: i64,
        pub movements: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `paying_spans`: the intervals `[valid_from, valid_to)` in which an
/// account paid, with its MRR, segment, owner and CSM (`valid_to` is
/// [`super::OPEN_END`] while it still pays), split wherever one of its cut
/// values changes: `plan` and `extras` (tags and attributes as JSON; NULL
/// on spans written before the cuts) are the values of the span.
pub mod paying_span {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "paying_spans")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub account_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub valid_from: i64,
        pub valid_to: i64,
        pub mrr: i64,
        pub segment: i32,
        pub owner: String,
        pub csm: String,
        pub plan: String,
        pub extras: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `fx_rates`: a currency's rate (nanos of the reporting currency per unit)
/// from an instant on.
pub mod fx_rate {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "fx_rates")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub currency: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub effective_at: i64,
        pub rate_nanos: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `invoices`: recorded invoices (`subscription_id` is empty when the
/// invoice is tied to no subscription; `external_id`, unique, is the billing
/// system's id when one was given).
pub mod invoice {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "invoices")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub account_id: String,
        pub subscription_id: String,
        pub currency: String,
        pub amount: i64,
        pub due_at: i64,
        pub paid_at: Option<i64>,
        pub created_at: i64,
        pub external_id: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `renewal_outcomes`: the decision recorded for a subscription's renewal
/// at one term end.
pub mod renewal_outcome {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "renewal_outcomes")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub subscription_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub renewal_at: i64,
        pub outcome: i32,
        pub decided_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `monthly_spend`: a month's sales and marketing spend and gross margin.
pub mod monthly_spend {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "monthly_spend")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub month: i32,
        pub spend: i64,
        pub gross_margin_bp: i32,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `account_versions`: the versions of each account revenue recorded from
/// the accounts service (segment, owner, CSM, tags and attributes from
/// `effective_at` on), which the cuts read.
pub mod account_version {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "account_versions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub account_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub version: i64,
        pub effective_at: i64,
        pub segment: i32,
        pub owner: String,
        pub csm: String,
        #[sea_orm(column_type = "Text")]
        pub extras: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `mrr_cut_rollup`: signed sum and count of movements (and of moves,
/// kind 0) per dimension x value x month x kind, kept current by deltas.
pub mod cut_rollup {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "mrr_cut_rollup")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub dimension: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub value: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub month: i32,
        #[sea_orm(primary_key, auto_increment = false)]
        pub kind: i32,
        pub amount: i64,
        pub movements: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
