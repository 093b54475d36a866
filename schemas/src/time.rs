//! Timestamps: nanoseconds since the Unix epoch, the resolution of the InfluxDB model.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::excerpt::excerpt;

/// A time or duration written by a person that cannot be read; the message quotes
/// (an excerpt of) it and says what is expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TimeError(pub String);

/// Nanoseconds since the Unix epoch, now.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// A time written by a person: RFC 3339 (`2026-11-24T10:00:00Z`), `now`, or relative to
/// now (`-15m`, `-1h`, `-2d`, `-30s`, `-500ms`). Returns nanoseconds since the epoch.
pub fn parse_time(text: &str, now_ns: i64) -> Result<i64, TimeError> {
    let text = text.trim();
    if text == "now" {
        return Ok(now_ns);
    }
    if let Some(rest) = text.strip_prefix('-') {
        return Ok(now_ns - parse_duration_ns(rest)?);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map_err(|e| {
            TimeError(format!(
                "{} is neither RFC 3339, `now`, nor relative like `-15m`: {e}",
                excerpt(text)
            ))
        })?
        .timestamp_nanos_opt()
        .ok_or_else(|| TimeError(format!("{} is out of range", excerpt(text))))
}

/// `ns` (nanoseconds since the epoch) as RFC 3339 in UTC with every nanosecond
/// (`2026-11-24T10:00:00.000000001Z`): what [`parse_time`] reads back exactly.
pub fn format_rfc3339(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// A duration such as `10s`, `500ms`, `15m`, `1h`, `2d`, `1w`, in nanoseconds.
pub fn parse_duration_ns(text: &str) -> Result<i64, TimeError> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| {
        TimeError(format!(
            "duration {} lacks a unit (ns, us, ms, s, m, h, d, w)",
            excerpt(text)
        ))
    })?;
    let (number, unit) = text.split_at(split);
    let number: i64 = number.parse().map_err(|_| {
        TimeError(format!(
            "duration {} must start with a whole number",
            excerpt(text)
        ))
    })?;
    let scale: i64 = match unit {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3_600 * 1_000_000_000,
        "d" => 86_400 * 1_000_000_000,
        "w" => 7 * 86_400 * 1_000_000_000,
        _ => {
            return Err(TimeError(format!(
                "duration {} has unknown unit {} (ns, us, ms, s, m, h, d, w)",
                excerpt(text),
                excerpt(unit)
            )))
        }
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| TimeError(format!("duration {} is too long", excerpt(text))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_keeps_every_nanosecond() {
        for ns in [0, 1, 1_764_000_000_123_456_789, -5] {
            let text = format_rfc3339(ns);
            assert_eq!(parse_time(&text, 0).unwrap(), ns, "{text}");
        }
        assert_eq!(format_rfc3339(1), "1970-01-01T00:00:00.000000001Z");
    }

    #[test]
    fn relative_absolute_and_now() {
        let now = 10_000_000_000_000;
        assert_eq!(parse_time("now", now).unwrap(), now);
        assert_eq!(parse_time("-15m", now).unwrap(), now - 900_000_000_000);
        assert_eq!(
            parse_time("1970-01-01T00:00:01Z", now).unwrap(),
            1_000_000_000
        );
        assert!(parse_time("yesterday", now)
            .unwrap_err()
            .to_string()
            .contains("yesterday"));
        assert_eq!(parse_duration_ns("10s").unwrap(), 10_000_000_000);
        assert!(parse_duration_ns("10")
            .unwrap_err()
            .to_string()
            .contains("unit"));
        assert!(parse_duration_ns("10y")
            .unwrap_err()
            .to_string()
            .contains("\"y\""));
    }
}
