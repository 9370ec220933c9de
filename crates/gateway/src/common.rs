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
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};

/// Declares a JSON enum mirroring a protobuf enum: `UNSPECIFIED` for the
/// zero value (and any value this gateway does not know yet), the other
/// values without their prefix.
///
/// `UNSPECIFIED` only ever goes out: an answer may carry it (a renewal not
/// decided yet, a value newer than this gateway), a request never may (the
/// services reject it where a value is required, and a filter is left out
/// rather than set to it). So it is not deserialized (a request naming it
/// is a 400), and request fields declare `input_schema`, the values
/// without it.
macro_rules! mirror_enum {
    ($(#[$meta:meta])* $name:ident, $pb:path { $($(#[$vmeta:meta])* $variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Default,
            ::serde::Serialize, ::utoipa::ToSchema,
        )]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum $name {
            /// Not set (or a value this gateway does not know); never accepted.
            #[default]
            Unspecified,
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// The schema of a request field: every value but `UNSPECIFIED`.
            #[allow(dead_code)]
            pub fn input_schema() -> ::utoipa::openapi::RefOr<::utoipa::openapi::schema::Schema> {
                $crate::common::without_unspecified(
                    <Self as ::utoipa::PartialSchema>::schema(),
                )
            }

            /// [`input_schema`](Self::input_schema) or `null` (an optional body field).
            #[allow(dead_code)]
            pub fn nullable_input_schema(
            ) -> ::utoipa::openapi::RefOr<::utoipa::openapi::schema::Schema> {
                $crate::common::or_null(Self::input_schema())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                /// The values a request may name.
                #[derive(::serde::Deserialize)]
                #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
                enum Given {
                    $($variant),+
                }
                Ok(match Given::deserialize(d)? {
                    $(Given::$variant => $name::$variant,)+
                })
            }
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

/// An integer field of a request body: `3` or `3.0`, both integers to JSON
/// Schema (serde alone refuses the second for an integer type).
pub fn integer<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i64>,
{
    whole(&serde_json::Number::deserialize(d)?)
}

/// [`integer`] of an optional field (absent or `null` is `None`).
pub fn optional_integer<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i64>,
{
    Option::<serde_json::Number>::deserialize(d)?
        .map(|n| whole(&n))
        .transpose()
}

fn whole<E: serde::de::Error, T: TryFrom<i64>>(n: &serde_json::Number) -> Result<T, E> {
    /// 2^63, the first float past `i64::MAX`.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    let value = match (n.as_i64(), n.as_f64()) {
        (Some(v), _) => Some(v),
        (None, Some(f)) if f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f) => Some(f as i64),
        _ => None,
    };
    value
        .and_then(|v| T::try_from(v).ok())
        .ok_or_else(|| E::custom(format!("{n} is not an integer in range")))
}

/// `schema` (an enum of strings) without its `UNSPECIFIED` value.
pub fn without_unspecified(schema: RefOr<Schema>) -> RefOr<Schema> {
    match schema {
        RefOr::T(Schema::Object(mut object)) => {
            if let Some(values) = object.enum_values.as_mut() {
                values.retain(|v| v != "UNSPECIFIED");
            }
            RefOr::T(Schema::Object(object))
        }
        other => other,
    }
}

/// `schema` or `null`.
pub fn or_null(schema: RefOr<Schema>) -> RefOr<Schema> {
    RefOr::T(Schema::OneOf(
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::Null))
            .item(schema)
            .build(),
    ))
}

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
    #[serde(deserialize_with = "integer")]
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
