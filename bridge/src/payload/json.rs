//! JSON (and MessagePack) value trees → fields: nested objects flattened with `_`,
//! arrays by index, nulls skipped; a bare scalar becomes the field `value`.

use std::collections::BTreeMap;

use dtaas_schemas::excerpt::excerpt;
use dtaas_schemas::telemetry::FieldValue;
use serde_json::Value;

use super::error::{ReadingError, TimestampError};
use crate::config::TimeUnit;

/// Fields, timestamp and message id taken from one value.
#[derive(Debug, Default, PartialEq)]
pub struct Extracted {
    pub fields: BTreeMap<String, FieldValue>,
    pub ts: Option<i64>,
    pub id: Option<String>,
}

/// Extracts fields from `value`, taking `ts_field` (in `unit`) and `id_field` out.
pub fn extract(
    value: Value,
    ts_field: &str,
    unit: TimeUnit,
    id_field: Option<&str>,
) -> Result<Extracted, ReadingError> {
    let mut out = Extracted::default();
    match value {
        Value::Object(mut map) => {
            if let Some(ts) = map.remove(ts_field) {
                let ts = timestamp(&ts, unit).map_err(|source| ReadingError::Timestamp {
                    field: ts_field.to_owned(),
                    source,
                })?;
                out.ts = Some(ts);
            }
            if let Some(id_field) = id_field {
                out.id = match map.remove(id_field) {
                    Some(Value::String(s)) => Some(s),
                    Some(Value::Number(n)) => Some(n.to_string()),
                    _ => None,
                };
            }
            let mut prefix = String::new();
            flatten(&mut prefix, Value::Object(map), &mut out.fields);
        }
        Value::Array(_) => return Err(ReadingError::Array),
        Value::Null => return Err(ReadingError::Null),
        scalar => {
            if let Some(v) = scalar_value(scalar) {
                out.fields.insert("value".into(), v);
            }
        }
    }
    Ok(out)
}

fn scalar_value(value: Value) -> Option<FieldValue> {
    match value {
        Value::Bool(b) => Some(FieldValue::Bool(b)),
        Value::Number(n) => Some(match n.as_i64() {
            Some(i) => FieldValue::I64(i),
            None => FieldValue::F64(n.as_f64()?),
        }),
        Value::String(s) => Some(FieldValue::Str(s)),
        _ => None,
    }
}

fn flatten(prefix: &mut String, value: Value, fields: &mut BTreeMap<String, FieldValue>) {
    let mut child = |prefix: &mut String, key: &str, v: Value| {
        let len = prefix.len();
        if !prefix.is_empty() {
            prefix.push('_');
        }
        prefix.push_str(key);
        flatten(prefix, v, fields);
        prefix.truncate(len);
    };
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                child(prefix, &k, v);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.into_iter().enumerate() {
                child(prefix, &i.to_string(), v);
            }
        }
        scalar => {
            if let Some(v) = scalar_value(scalar) {
                fields.insert(prefix.clone(), v);
            }
        }
    }
}

/// A timestamp in nanoseconds from a number in `unit` or an RFC 3339 string.
pub fn timestamp(value: &Value, unit: TimeUnit) -> Result<i64, TimestampError> {
    match value {
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .and_then(|t| t.timestamp_nanos_opt())
            .ok_or_else(|| TimestampError::NotRfc3339 { value: excerpt(s) }),
        Value::Number(n) => match n.as_i64() {
            Some(i) => scale_int(i, unit),
            None => scale(n.as_f64().ok_or(TimestampError::NotANumber)?, unit),
        },
        other => Err(TimestampError::NotATime {
            value: excerpt(&other.to_string()),
        }),
    }
}

/// The factor from `unit` to nanoseconds; `Auto` guesses by magnitude (a date after
/// 1973 in seconds is above 1e8).
fn factor(v: f64, unit: TimeUnit) -> Result<i64, TimestampError> {
    Ok(match unit {
        TimeUnit::S => 1_000_000_000,
        TimeUnit::Ms => 1_000_000,
        TimeUnit::Us => 1_000,
        TimeUnit::Ns => 1,
        TimeUnit::Rfc3339 => return Err(TimestampError::ExpectedRfc3339),
        TimeUnit::Auto => match v.abs() {
            a if a < 1e11 => 1_000_000_000,
            a if a < 1e14 => 1_000_000,
            a if a < 1e17 => 1_000,
            _ => 1,
        },
    })
}

/// Scales an integer time in `unit` to nanoseconds, exactly.
pub fn scale_int(v: i64, unit: TimeUnit) -> Result<i64, TimestampError> {
    v.checked_mul(factor(v as f64, unit)?)
        .ok_or_else(|| TimestampError::OutOfRange {
            value: v.to_string(),
        })
}

/// Scales a fractional time in `unit` to nanoseconds.
pub fn scale(v: f64, unit: TimeUnit) -> Result<i64, TimestampError> {
    let factor = factor(v, unit)? as f64;
    let ns = v * factor;
    if !ns.is_finite() || ns.abs() > i64::MAX as f64 {
        return Err(TimestampError::OutOfRange {
            value: v.to_string(),
        });
    }
    Ok(ns as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_objects_are_flattened() {
        let e = extract(
            json!({"ts": 1700000000123u64, "id": "m1", "temp": 21.5, "n": 3, "ok": true,
                   "s": "x", "pos": {"x": 1, "y": {"z": 2.5}}, "gone": null}),
            "ts",
            TimeUnit::Auto,
            Some("id"),
        )
        .unwrap();
        assert_eq!(e.ts, Some(1_700_000_000_123_000_000));
        assert_eq!(e.id.as_deref(), Some("m1"));
        assert_eq!(e.fields["pos_y_z"], FieldValue::F64(2.5));
        assert_eq!(e.fields["n"], FieldValue::I64(3));
        assert_eq!(e.fields["ok"], FieldValue::Bool(true));
        assert_eq!(e.fields["s"], FieldValue::Str("x".into()));
        assert!(!e.fields.contains_key("gone") && !e.fields.contains_key("id"));
    }

    #[test]
    fn scalars_units_and_rfc3339() {
        let e = extract(json!(42.5), "ts", TimeUnit::Auto, None).unwrap();
        assert_eq!(e.fields["value"], FieldValue::F64(42.5));
        assert_eq!(e.ts, None);
        for (v, unit) in [
            (json!(1_700_000_000), TimeUnit::Auto),
            (json!(1_700_000_000_000u64), TimeUnit::Ms),
            (json!(1_700_000_000_000_000u64), TimeUnit::Auto),
            (json!("2023-11-14T22:13:20Z"), TimeUnit::Auto),
        ] {
            assert_eq!(
                timestamp(&v, unit).unwrap(),
                1_700_000_000_000_000_000,
                "{v}"
            );
        }
        assert!(extract(
            json!({"ts": "yesterday", "a": 1}),
            "ts",
            TimeUnit::Auto,
            None
        )
        .unwrap_err()
        .to_string()
        .contains("\"ts\""));
        assert!(extract(json!([1]), "ts", TimeUnit::Auto, None).is_err());
    }
}
