//! What every service's JSON shares: the enums of `common.proto` (stage,
//! segment, coverage model), money, timestamps and durations, and the macro
//! that mirrors a protobuf enum as a JSON one.
//!
//! The API is written out rather than derived from the protos so it reads
//! like JSON (enum values without their prefix, RFC 3339 times, durations in
//! seconds, report amounts as minor units beside one currency) and so the
//! OpenAPI document, generated from these types, describes exactly what is
//! sent.

use bowtie_proto::common;
use chrono::{DateTime, Utc};
use prost_types::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Declares a JSON enum mirroring a protobuf enum: `UNSPECIFIED` for the
/// zero value (and any value this gateway does not know yet), the other
/// values without their prefix.
macro_rules! mirror_enum {
    ($(#[$meta:meta])* $name:ident, $pb:path { $($(#[$vmeta:meta])* $variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Default,
            ::serde::Serialize, ::serde::Deserialize, ::utoipa::ToSchema,
        )]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum $name {
            /// Not set (or a value this gateway does not know).
            #[default]
            Unspecified,
            $($(#[$vmeta])* $variant),+
        }

        impl From<i32> for $name {
            fn from(v: i32) -> Self {
                use $pb as P;
                match P::try_from(v) {
                    $(Ok(P::$variant) => $name::$variant,)+
                    _ => $name::Unspecified,
                }
            }
        }

        impl From<$name> for i32 {
            fn from(v: $name) -> i32 {
                use $pb as P;
                match v {
                    $name::Unspecified => 0,
                    $($name::$variant => P::$variant as i32,)+
                }
            }
        }
    };
}

pub(crate) use mirror_enum;

mirror_enum!(
    /// A bowtie stage or outcome.
    Stage, common::Stage {
        /// A target account is identified.
        Awareness,
        /// It engages and is qualified (MQL).
        Education,
        /// An opportunity is open (SQL).
        Selection,
        /// Contract signed.
        Commit,
        /// Being set up.
        Onboarding,
        /// First value reached.
        Impact,
        /// Renewed and/or expanded.
        Growth,
        /// Did not buy.
        Lost,
        /// All revenue gone.
        Churned,
    }
);

mirror_enum!(
    /// Customer segment.
    Segment, common::Segment {
        /// Small business.
        Smb,
        /// Mid-market.
        MidMarket,
        /// Enterprise.
        Enterprise,
    }
);

mirror_enum!(
    /// How customer success covers an account.
    CoverageModel, common::CoverageModel {
        /// Automated programmes.
        TechTouch,
        /// A pool of CSMs.
        PooledCsm,
        /// A named senior CSM.
        NamedCsm,
    }
);

/// Business time from a protobuf timestamp.
pub fn time(t: Option<&Timestamp>) -> Option<DateTime<Utc>> {
    t.and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
}

/// A protobuf timestamp from business time.
pub fn timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// Seconds of a protobuf duration.
pub fn seconds(d: Option<&prost_types::Duration>) -> Option<f64> {
    d.map(|d| d.seconds as f64 + f64::from(d.nanos) / 1e9)
}

/// An amount of money.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Money {
    /// ISO-4217 code, e.g. `USD`.
    pub currency: String,
    /// Whole minor units (cents).
    pub minor_units: i64,
}

impl Money {
    /// From the protobuf message (absent is zero of no currency).
    pub fn from_pb(m: Option<&common::Money>) -> Self {
        m.map_or(
            Self {
                currency: String::new(),
                minor_units: 0,
            },
            |m| Self {
                currency: m.currency_code.clone(),
                minor_units: m.minor_units,
            },
        )
    }

    /// To the protobuf message.
    pub fn to_pb(&self) -> common::Money {
        common::Money {
            currency_code: self.currency.clone(),
            minor_units: self.minor_units,
        }
    }
}

/// The minor units of an amount (absent is zero).
pub fn minor(m: Option<&common::Money>) -> i64 {
    m.map_or(0, |m| m.minor_units)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_drop_their_protobuf_prefix_both_ways() -> anyhow::Result<()> {
        let segment = Segment::from(common::Segment::MidMarket as i32);
        assert_eq!(serde_json::to_string(&segment)?, "\"MID_MARKET\"");
        let stage: Stage = serde_json::from_str("\"SELECTION\"")?;
        assert_eq!(i32::from(stage), common::Stage::Selection as i32);
        assert_eq!(Stage::from(42), Stage::Unspecified);
        Ok(())
    }
}
