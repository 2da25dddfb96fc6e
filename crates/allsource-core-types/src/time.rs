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
        self.to_string()
    }

    /// Appends the RFC 3339 text (as [`Timestamp::to_rfc3339`] makes it) to `out`,
    /// without going through a formatter.
    pub fn push_rfc3339(self, out: &mut Vec<u8>) {
        match write_rfc3339(self.0, &mut [0; RFC3339_LEN]) {
            Some(text) => out.extend_from_slice(text.as_bytes()),
            None => out.extend_from_slice(self.to_rfc3339_chrono().as_bytes()),
        }
    }

    /// The text through chrono: for the years [`write_rfc3339`] does not write.
    fn to_rfc3339_chrono(self) -> String {
        match DateTime::<Utc>::from_timestamp_micros(self.0) {
            Some(time) => time.to_rfc3339_opts(SecondsFormat::Micros, true),
            None => format!("@{}us", self.0),
        }
    }
}

/// The length of `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
const RFC3339_LEN: usize = 27;

/// Writes the RFC 3339 text of `micros` into `out`, as chrono writes it, for the years
/// 0000 to 9999 (every event's time); `None` for the others. Every answer that carries
/// an event writes its time: chrono's formatter, which allocates its text, was 3% of the
/// server's time under entity queries.
fn write_rfc3339(micros: i64, out: &mut [u8; RFC3339_LEN]) -> Option<&str> {
    let (seconds, fraction) = (micros.div_euclid(1_000_000), micros.rem_euclid(1_000_000));
    let (days, second_of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        return None;
    }
    let fields: [(i64, usize, usize); 7] = [
        (year, 0, 4),
        (month, 5, 2),
        (day, 8, 2),
        (second_of_day / 3600, 11, 2),
        (second_of_day / 60 % 60, 14, 2),
        (second_of_day % 60, 17, 2),
        (fraction, 20, 6),
    ];
    for (value, at, width) in fields {
        let mut value = value;
        for digit in out[at..at + width].iter_mut().rev() {
            *digit = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
    for (at, separator) in [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':'), (19, b'.'), (26, b'Z')]
    {
        out[at] = separator;
    }
    std::str::from_utf8(out).ok()
}

/// The proleptic Gregorian (year, month, day) of a day count from 1970-01-01: Howard
/// Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
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
        match write_rfc3339(self.0, &mut [0; RFC3339_LEN]) {
            Some(text) => f.write_str(text),
            None => f.write_str(&self.to_rfc3339_chrono()),
        }
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
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
    fn written_as_chrono_writes_it_at_the_edges() {
        let day = 86_400_000_000i64;
        // 0000-01-01 and 9999-12-31T23:59:59.999999 bound the years written here.
        let first = Timestamp::parse_lower_bound("0000-01-01T00:00:00Z").unwrap().as_micros();
        let last = Timestamp::parse_lower_bound("9999-12-31T23:59:59.999999Z").unwrap().as_micros();
        let leap = Timestamp::parse_lower_bound("2024-02-29T12:34:56.000001Z").unwrap().as_micros();
        let edges =
            [0, -1, 1, day - 1, day, -day, leap, first, first - 1, last, last + 1, i64::MIN, i64::MAX];
        for micros in edges {
            let t = Timestamp::from_micros(micros);
            assert_eq!(t.to_string(), t.to_rfc3339_chrono(), "{micros}");
            let mut pushed = b"x".to_vec();
            t.push_rfc3339(&mut pushed);
            assert_eq!(pushed, [b"x", t.to_rfc3339_chrono().as_bytes()].concat(), "{micros}");
            assert_eq!(format!("{t:?}"), t.to_rfc3339_chrono(), "{micros}");
        }
        assert_eq!(Timestamp::from_micros(-1).to_string(), "1969-12-31T23:59:59.999999Z");
        assert_eq!(Timestamp::from_micros(leap).to_string(), "2024-02-29T12:34:56.000001Z");
        assert_eq!(Timestamp::from_micros(first - 1).to_string(), "-0001-12-31T23:59:59.999999Z");
        assert_eq!(Timestamp::from_micros(last + 1).to_string(), "+10000-01-01T00:00:00.000000Z");
    }

    proptest::proptest! {
        /// Any time in the years written here, and around them, reads as chrono's text.
        #[test]
        fn written_as_chrono_writes_it(micros in -70_000_000_000_000_000i64..260_000_000_000_000_000) {
            let t = Timestamp::from_micros(micros);
            proptest::prop_assert_eq!(t.to_string(), t.to_rfc3339_chrono());
            let mut pushed = Vec::new();
            t.push_rfc3339(&mut pushed);
            proptest::prop_assert_eq!(pushed, t.to_rfc3339_chrono().into_bytes());
        }
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
