//! The scoring tables as sea-orm entities: their columns name the schema
//! (migrations), the builder statements and the row-shaped reads, so a
//! column is spelled once.

// The derive macros generate items that cannot carry doc comments.
#![allow(missing_docs)]

/// `signals`: every accepted signal, keyed by its idempotency key.
pub mod signal {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "signals")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub idempotency_key: String,
        pub account_id: String,
        pub kind: i32,
        pub value: i64,
        pub occurred_at: i64,
        pub recorded_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `signal_days`: per account, day and kind, the sum, the number of events
/// and the latest value.
pub mod signal_day {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "signal_days")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub account_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub day: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub kind: i32,
        pub total: i64,
        pub events: i64,
        pub last_value: i64,
        pub last_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `profiles`: what the feeds say about an account.
pub mod profile {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "profiles")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub account_id: String,
        pub segment: i32,
        pub strategic: i32,
        pub created_at: Option<i64>,
        pub mrr: i64,
        pub mrr_at: Option<i64>,
        pub first_paid_at: Option<i64>,
        pub churned_at: Option<i64>,
        pub onboarding_at: Option<i64>,
        pub first_value_at: Option<i64>,
        pub seats: Option<i64>,
        pub renewal_at: Option<i64>,
        pub contract_months: Option<i64>,
        pub last_mrr: i64,
        pub updated_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `subscriptions`: quantity and term of each subscription.
pub mod subscription {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "subscriptions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub account_id: String,
        pub quantity: i64,
        pub term_end: Option<i64>,
        pub interval_months: i32,
        pub cancelled: i32,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `health`: the current score of an account, its body encoded.
pub mod health {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "health")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub account_id: String,
        pub segment: i32,
        pub score: i32,
        pub band: i32,
        pub risk_bp: Option<i32>,
        pub tier: i32,
        pub quadrant: i32,
        pub mrr: i64,
        pub body: Vec<u8>,
        pub computed_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `health_history`: one snapshot per account and day.
pub mod health_history {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "health_history")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub account_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub day: i64,
        pub score: i32,
        pub band: i32,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `scorecards`: the current scorecard of each segment.
pub mod scorecard {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "scorecards")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub segment: i32,
        pub version: i64,
        pub body: String,
        pub updated_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `scorecard_versions`: every version of every segment's scorecard.
pub mod scorecard_version {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "scorecard_versions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub segment: i32,
        #[sea_orm(primary_key, auto_increment = false)]
        pub version: i64,
        pub body: String,
        pub updated_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `alerts`: raised alerts and their state.
pub mod alert {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "alerts")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub account_id: String,
        pub kind: i32,
        pub state: i32,
        pub dedupe: String,
        pub message: String,
        pub score: i32,
        pub risk_bp: i32,
        pub version: i64,
        pub note: String,
        pub created_at: i64,
        pub updated_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `models`: every trained churn model.
pub mod model {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "models")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub trained_at: i64,
        pub body: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `account_people`: each account's CSM and owner from the accounts feed
/// (trimmed and lower-cased), what the ownership rules and `mine=true`
/// decide by.
pub mod account_person {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "account_people")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub account_id: String,
        pub csm: String,
        pub owner: String,
        pub updated_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
