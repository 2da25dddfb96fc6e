//! Timestamps: UTC, microseconds since the Unix epoch.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

/// A point in time, UTC, in whole microseconds since the Unix epoch.
///
/// Rendered as RFC 3339 with six fractional digits and a `Z`, e.g.
/// `2026-11-27T10:00:00.123456Z`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The earliest representable time.
    pub const MIN: Timestamp = Timestamp(i64::MIN);
    /// The latest representable time.
    pub const MAX: Timestamp = Timestamp(i64::MAX);

    /// The time from microseconds since the Unix epoch.
    pub const fn from_micros(micros: i64) -> Timestamp {
        Timestamp(micros)
    }

    /// Microseconds since the Unix epoch.
    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// The current time of the system clock.
    pub fn now() -> Timestamp {
        Timestamp(Utc::now().timestamp_micros())
    }

    /// Parses an RFC 3339 time for a lower bound (`since`): a time with finer than
    /// microsecond precision rounds up, so `timestamp >= bound` keeps its meaning.
    pub fn parse_lower_bound(text: &str) -> Result<Timestamp, Error> {
        let nanos = parse_nanos(text)?;
        micros(nanos.div_euclid(1000) + i128::from(nanos.rem_euclid(1000) != 0))
    }

    /// Parses an RFC 3339 time for an upper bound (`until`, `as_of`): a time with finer
    /// than microsecond precision rounds down, so `timestamp <= bound` keeps its meaning.
    pub fn parse_upper_bound(text: &str) -> Result<Timestamp, Error> {
        micros(parse_nanos(text)?.div_euclid(1000))
    }

    /// The RFC 3339 text, with microseconds and a `Z`.
    pub fn to_rfc3339(self) -> String {
        match DateTime::<Utc>::from_timestamp_micros(self.0) {
            Some(time) => time.to_rfc3339_opts(SecondsFormat::Micros, true),
            None => format!("@{}us", self.0),
        }
    }
}

/// Parses RFC 3339 into nanoseconds since the epoch, as i128 so no valid year overflows.
fn parse_nanos(text: &str) -> Result<i128, Error> {
    let time = DateTime::parse_from_rfc3339(text)
        .map_err(|e| Error::Validation(format!("bad timestamp {text:?}: {e} (expected RFC 3339)")))?;
    Ok(i128::from(time.timestamp()) * 1_000_000_000 + i128::from(time.timestamp_subsec_nanos()))
}

/// A timestamp from whole microseconds; every time chrono parses fits in i64 microseconds.
fn micros(whole_micros: i128) -> Result<Timestamp, Error> {
    i64::try_from(whole_micros)
        .map(Timestamp)
        .map_err(|_| Error::Validation("timestamp out of range".to_string()))
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Timestamp::parse_upper_bound(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_micros_and_z() {
        let t = Timestamp::parse_lower_bound("2026-11-27T10:00:00.123456Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-27T10:00:00.123456Z");
        assert_eq!(Timestamp::from_micros(0).to_rfc3339(), "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn offsets_are_converted_to_utc() {
        let t = Timestamp::parse_upper_bound("2026-11-27T12:00:00+02:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-27T10:00:00.000000Z");
    }

    #[test]
    fn sub_microsecond_bounds_round_inwards() {
        let lower = Timestamp::parse_lower_bound("2026-11-27T10:00:00.1234561Z").unwrap();
        let upper = Timestamp::parse_upper_bound("2026-11-27T10:00:00.1234569Z").unwrap();
        assert_eq!(lower.to_rfc3339(), "2026-11-27T10:00:00.123457Z");
        assert_eq!(upper.to_rfc3339(), "2026-11-27T10:00:00.123456Z");
        let before_epoch = Timestamp::parse_lower_bound("1969-12-31T23:59:59.9999995Z").unwrap();
        assert_eq!(before_epoch.as_micros(), 0);
    }

    #[test]
    fn rejects_non_rfc3339() {
        for bad in ["", "yesterday", "2026-11-27", "2026-11-27T10:00:00", "1700000000"] {
            let err = Timestamp::parse_lower_bound(bad).unwrap_err();
            assert_eq!(err.code(), "ValidationError", "{bad}");
        }
    }
}
