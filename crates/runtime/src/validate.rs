//! Small parsing helpers that turn raw request fields into checked values,
//! recording a field-named violation for each problem, so every service
//! validates text, ids, times and enums the same way.

use prost_types::Timestamp;
use uuid::Uuid;

use crate::error::FieldViolations;
use crate::types::{AccountId, Instant};

/// Checks a required text field: trimmed, not blank, at most `max` characters.
pub fn required_text(
    v: &mut FieldViolations,
    field: &str,
    value: &str,
    max: usize,
) -> Option<String> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        v.add(field, "must not be blank");
        None
    } else {
        bounded(v, field, trimmed, max)
    }
}

/// Checks an optional text field: trimmed, at most `max` characters, may be empty.
pub fn optional_text(
    v: &mut FieldViolations,
    field: &str,
    value: &str,
    max: usize,
) -> Option<String> {
    bounded(v, field, value.trim(), max)
}

fn bounded(v: &mut FieldViolations, field: &str, value: &str, max: usize) -> Option<String> {
    if value.chars().count() > max {
        v.add(field, format!("must be at most {max} characters"));
        None
    } else if value.chars().any(|c| c.is_control()) {
        v.add(field, "must not contain control characters");
        None
    } else {
        Some(value.to_owned())
    }
}

/// Parses a required UUID id field.
pub fn uuid(v: &mut FieldViolations, field: &str, value: &str) -> Option<Uuid> {
    if value.is_empty() {
        v.add(field, "is required");
        return None;
    }
    match Uuid::parse_str(value) {
        Ok(id) => Some(id),
        Err(_) => {
            v.add(field, "must be a UUID");
            None
        }
    }
}

/// Parses an idempotency key: empty means none; at most 200 printable characters.
pub fn idempotency_key(v: &mut FieldViolations, value: &str) -> Option<String> {
    if value.is_empty() {
        return None;
    }
    if value.len() > 200 || value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        v.add(
            "idempotency_key",
            "must be at most 200 characters without spaces or control characters",
        );
        return None;
    }
    Some(value.to_owned())
}

/// Converts a protobuf timestamp into microseconds since the Unix epoch,
/// rejecting values outside years 1970..=9999 and invalid nanos.
pub fn timestamp_micros(v: &mut FieldViolations, field: &str, ts: &Timestamp) -> Option<i64> {
    const MAX_SECONDS: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    if ts.seconds < 0 || ts.seconds > MAX_SECONDS || !(0..1_000_000_000).contains(&ts.nanos) {
        v.add(field, "must be a valid time between 1970 and 9999");
        return None;
    }
    Some(ts.seconds * 1_000_000 + i64::from(ts.nanos / 1000))
}

/// Longest period a report may cover: ten years (of 366 days, to be generous
/// with leap years).
pub const MAX_PERIOD_MICROS: i64 = 10 * 366 * 24 * 3600 * 1_000_000;

/// Parses a required report period into `[start, end)` microseconds: both
/// ends set and valid, end after start, at most ten years long.
pub fn period(
    v: &mut FieldViolations,
    field: &str,
    period: Option<&bowtie_proto::common::Period>,
) -> Option<(i64, i64)> {
    let Some(period) = period else {
        v.add(field, "is required");
        return None;
    };
    let start = required_timestamp(v, &format!("{field}.start"), period.start.as_ref());
    let end = required_timestamp(v, &format!("{field}.end"), period.end.as_ref());
    let (start, end) = (start?, end?);
    if end <= start {
        v.add(format!("{field}.end"), "must be after period.start");
        return None;
    }
    if end - start > MAX_PERIOD_MICROS {
        v.add(format!("{field}.end"), "a period may span at most 10 years");
        return None;
    }
    Some((start, end))
}

/// A required timestamp field in microseconds.
pub fn required_timestamp(
    v: &mut FieldViolations,
    field: &str,
    ts: Option<&Timestamp>,
) -> Option<i64> {
    match ts {
        Some(ts) => timestamp_micros(v, field, ts),
        None => {
            v.add(field, "is required");
            None
        }
    }
}

/// Converts microseconds since the epoch into a protobuf timestamp.
pub fn to_timestamp(micros: i64) -> Timestamp {
    Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

/// The current time in microseconds since the epoch.
pub fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// Converts a protobuf timestamp into an [`Instant`], rejecting values outside
/// years 1970..=9999 and invalid nanos.
pub fn instant(v: &mut FieldViolations, field: &str, ts: &Timestamp) -> Option<Instant> {
    timestamp_micros(v, field, ts).map(Instant::from_micros)
}

/// A required timestamp field as an [`Instant`].
pub fn required_instant(
    v: &mut FieldViolations,
    field: &str,
    ts: Option<&Timestamp>,
) -> Option<Instant> {
    required_timestamp(v, field, ts).map(Instant::from_micros)
}

/// An optional timestamp field: `Ok(None)` when unset, a violation when set
/// but out of range.
pub fn optional_instant(
    v: &mut FieldViolations,
    field: &str,
    ts: Option<&Timestamp>,
) -> Option<Option<Instant>> {
    match ts {
        None => Some(None),
        Some(ts) => instant(v, field, ts).map(Some),
    }
}

/// A required report period as `[start, end)` instants, checked as [`period`].
pub fn instant_period(
    v: &mut FieldViolations,
    field: &str,
    p: Option<&bowtie_proto::common::Period>,
) -> Option<(Instant, Instant)> {
    period(v, field, p).map(|(s, e)| (Instant::from_micros(s), Instant::from_micros(e)))
}

/// Parses a required account id field.
pub fn account_id(v: &mut FieldViolations, field: &str, value: &str) -> Option<AccountId> {
    uuid(v, field, value).map(AccountId)
}

/// Decodes a protobuf enum field, recording a violation for unknown numbers
/// and, when `required`, for the zero (UNSPECIFIED) value.
pub fn enum_value<E: TryFrom<i32>>(
    v: &mut FieldViolations,
    field: &str,
    raw: i32,
    required: bool,
) -> Option<E> {
    if raw == 0 && required {
        v.add(field, "must be set");
        return None;
    }
    match E::try_from(raw) {
        Ok(e) => Some(e),
        Err(_) => {
            v.add(field, format!("unknown value {raw}"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_text_trims_and_rejects_blank_and_oversized_values() {
        let mut v = FieldViolations::default();
        assert_eq!(
            required_text(&mut v, "name", "  Acme  ", 10).as_deref(),
            Some("Acme")
        );
        assert!(required_text(&mut v, "name", "   ", 10).is_none());
        assert!(required_text(&mut v, "name", "ééééééééééé", 10).is_none());
        assert_eq!(v.0.len(), 2);
        assert_eq!(v.0[0].description, "must not be blank");
        assert_eq!(v.0[1].description, "must be at most 10 characters");
    }

    #[test]
    fn timestamps_round_trip_through_microseconds() {
        let mut v = FieldViolations::default();
        let ts = Timestamp {
            seconds: 1_700_000_000,
            nanos: 123_456_000,
        };
        let micros = timestamp_micros(&mut v, "t", &ts);
        assert_eq!(micros, Some(1_700_000_000_123_456));
        assert_eq!(to_timestamp(1_700_000_000_123_456), ts);
        assert!(
            timestamp_micros(
                &mut v,
                "t",
                &Timestamp {
                    seconds: -1,
                    nanos: 0
                }
            )
            .is_none()
        );
        assert!(v.0.len() == 1 && v.0[0].field == "t");
    }

    #[test]
    fn a_period_must_end_after_it_starts_and_span_at_most_ten_years() {
        let at = |seconds| Some(Timestamp { seconds, nanos: 0 });
        let p = |start, end| bowtie_proto::common::Period {
            start: at(start),
            end: at(end),
        };
        let mut v = FieldViolations::default();
        assert_eq!(
            period(&mut v, "period", Some(&p(10, 20))),
            Some((10_000_000, 20_000_000))
        );
        assert!(v.is_empty());
        assert!(period(&mut v, "period", Some(&p(20, 10))).is_none());
        assert!(period(&mut v, "period", Some(&p(0, 11 * 366 * 86_400))).is_none());
        assert!(period(&mut v, "period", None).is_none());
        let fields: Vec<_> = v.0.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["period.end", "period.end", "period"]);
    }

    #[test]
    fn ids_must_be_uuids() {
        let mut v = FieldViolations::default();
        assert!(uuid(&mut v, "id", "not-a-uuid").is_none());
        assert!(uuid(&mut v, "id", "").is_none());
        assert!(uuid(&mut v, "id", "0190f0c2-7f43-7a55-8000-000000000000").is_some());
        assert_eq!(v.0.len(), 2);
    }
}
