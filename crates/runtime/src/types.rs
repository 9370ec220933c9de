//! The value types every service's domain speaks in (docs/design.md section 1):
//! an instant on the timeline, an amount of money in minor units, and the id
//! of an account. They are newtypes so that a microsecond count, a number of
//! cents and a row id cannot be mixed up as they cross from the API through
//! the domain into storage; each layer converts at its edge (`convert` from
//! and to protobuf, `storage` from and to columns).

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Neg, Sub, SubAssign};

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use prost_types::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Microseconds in one second.
pub const MICROS_PER_SECOND: i64 = 1_000_000;
/// Microseconds in one day.
pub const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

/// An instant in UTC with microsecond precision, stored as microseconds since
/// the Unix epoch (the column type every service uses).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Instant(i64);

impl Instant {
    /// The Unix epoch.
    pub const EPOCH: Instant = Instant(0);

    /// The instant `micros` microseconds after the epoch.
    pub const fn from_micros(micros: i64) -> Self {
        Instant(micros)
    }

    /// Microseconds since the epoch, as stored.
    pub const fn micros(self) -> i64 {
        self.0
    }

    /// The current time.
    pub fn now() -> Self {
        Instant(Utc::now().timestamp_micros())
    }

    /// The instant as a protobuf timestamp.
    pub fn to_timestamp(self) -> Timestamp {
        Timestamp {
            seconds: self.0.div_euclid(MICROS_PER_SECOND),
            nanos: (self.0.rem_euclid(MICROS_PER_SECOND) * 1000) as i32,
        }
    }

    /// The instant as a chrono time, `None` outside chrono's range.
    pub fn to_datetime(self) -> Option<DateTime<Utc>> {
        Utc.timestamp_micros(self.0).single()
    }

    /// Microseconds from `earlier` to `self` (negative when `earlier` is later).
    pub const fn micros_since(self, earlier: Instant) -> i64 {
        self.0 - earlier.0
    }

    /// Whole days from `earlier` to `self`, rounded down.
    pub const fn days_since(self, earlier: Instant) -> i64 {
        (self.0 - earlier.0).div_euclid(MICROS_PER_DAY)
    }

    /// The instant `micros` microseconds later (saturating).
    pub const fn plus_micros(self, micros: i64) -> Self {
        Instant(self.0.saturating_add(micros))
    }

    /// The instant `days` days later (saturating).
    pub const fn plus_days(self, days: i64) -> Self {
        Instant(self.0.saturating_add(days.saturating_mul(MICROS_PER_DAY)))
    }
}

impl From<DateTime<Utc>> for Instant {
    fn from(at: DateTime<Utc>) -> Self {
        Instant(at.timestamp_micros())
    }
}

impl fmt::Display for Instant {
    /// RFC 3339 in UTC, e.g. `2026-01-31T09:30:00Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_datetime() {
            Some(at) => f.write_str(&at.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
            None => write!(f, "{}us", self.0),
        }
    }
}

/// An amount of money in the minor unit of its currency (cents for USD, yen
/// for JPY). Which currency is carried beside it where it matters; reports
/// are in the reporting currency.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Minor(pub i64);

impl Minor {
    /// No money.
    pub const ZERO: Minor = Minor(0);

    /// The amount in minor units.
    pub const fn get(self) -> i64 {
        self.0
    }

    /// True for an amount above zero.
    pub const fn is_positive(self) -> bool {
        self.0 > 0
    }

    /// True for an amount below zero.
    pub const fn is_negative(self) -> bool {
        self.0 < 0
    }

    /// The absolute amount.
    pub const fn abs(self) -> Minor {
        Minor(self.0.abs())
    }
}

impl Add for Minor {
    type Output = Minor;
    fn add(self, rhs: Minor) -> Minor {
        Minor(self.0 + rhs.0)
    }
}

impl AddAssign for Minor {
    fn add_assign(&mut self, rhs: Minor) {
        self.0 += rhs.0;
    }
}

impl Sub for Minor {
    type Output = Minor;
    fn sub(self, rhs: Minor) -> Minor {
        Minor(self.0 - rhs.0)
    }
}

impl SubAssign for Minor {
    fn sub_assign(&mut self, rhs: Minor) {
        self.0 -= rhs.0;
    }
}

impl Neg for Minor {
    type Output = Minor;
    fn neg(self) -> Minor {
        Minor(-self.0)
    }
}

impl Sum for Minor {
    fn sum<I: Iterator<Item = Minor>>(iter: I) -> Minor {
        Minor(iter.map(|m| m.0).sum())
    }
}

impl<'a> Sum<&'a Minor> for Minor {
    fn sum<I: Iterator<Item = &'a Minor>>(iter: I) -> Minor {
        Minor(iter.map(|m| m.0).sum())
    }
}

impl fmt::Display for Minor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The id of an account, assigned by the accounts service and used by every
/// other service to refer to it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct AccountId(pub Uuid);

impl AccountId {
    /// A fresh random id.
    pub fn new() -> Self {
        AccountId(Uuid::new_v4())
    }

    /// The underlying UUID.
    pub const fn uuid(self) -> Uuid {
        self.0
    }
}

impl From<Uuid> for AccountId {
    fn from(id: Uuid) -> Self {
        AccountId(id)
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instant_before_the_epoch_converts_to_a_timestamp_with_positive_nanos() {
        let ts = Instant::from_micros(-1).to_timestamp();
        assert_eq!((ts.seconds, ts.nanos), (-1, 999_999_000));
    }

    #[test]
    fn an_instant_prints_as_rfc3339() {
        let at = Instant::from_micros(1_769_851_800 * MICROS_PER_SECOND);
        assert_eq!(at.to_string(), "2026-01-31T09:30:00Z");
    }

    #[test]
    fn days_since_rounds_down_across_the_epoch() {
        let day = Instant::EPOCH.plus_days(1);
        assert_eq!(day.days_since(Instant::EPOCH), 1);
        assert_eq!(Instant::from_micros(-1).days_since(Instant::EPOCH), -1);
        assert_eq!(day.plus_micros(-1).days_since(Instant::EPOCH), 0);
    }

    #[test]
    fn money_adds_subtracts_and_sums_in_minor_units() {
        let total: Minor = [Minor(1_050), Minor(-50), Minor(7)].iter().sum();
        assert_eq!(total, Minor(1_007));
        assert_eq!(-(Minor(5) - Minor(8)), Minor(3));
    }
}
