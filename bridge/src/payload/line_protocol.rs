//! InfluxDB line protocol: `measurement[,tag=v…] field=v[,…] [timestamp]`, one record
//! per line; blank lines and `#` comments are skipped.

use std::collections::BTreeMap;

use dtaas_schemas::excerpt::excerpt;
use dtaas_schemas::telemetry::FieldValue;

use super::error::{LineError, PayloadError};

/// One parsed line.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub measurement: String,
    pub tags: BTreeMap<String, String>,
    pub fields: BTreeMap<String, FieldValue>,
    /// As written; the unit is the caller's choice (nanoseconds by default).
    pub timestamp: Option<i64>,
}

/// Parses every line of `text`; the error names the line number and what is wrong.
pub fn parse(text: &str) -> Result<Vec<Line>, PayloadError> {
    let mut lines = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let raw = raw.trim();
        if raw.is_empty() || raw.starts_with('#') {
            continue;
        }
        let line = parse_line(raw).map_err(|source| PayloadError::Line {
            line: n + 1,
            source,
        })?;
        lines.push(line);
    }
    if lines.is_empty() {
        return Err(PayloadError::NoLines);
    }
    Ok(lines)
}

/// Splits at `sep` outside quotes and not escaped by `\`.
fn split_unescaped(text: &str, sep: char, max: usize) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted && parts.len() + 1 < max {
            parts.push(&text[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&text[start..]);
    parts
}

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn parse_line(line: &str) -> Result<Line, LineError> {
    let parts = split_unescaped(line, ' ', 3);
    let (series, fields_text) = match parts.as_slice() {
        [series, fields, ..] => (*series, *fields),
        _ => {
            return Err(LineError::NoFields {
                line: excerpt(line),
            })
        }
    };
    let timestamp = match parts.get(2).map(|t| t.trim()) {
        None | Some("") => None,
        Some(t) => Some(
            t.parse::<i64>()
                .map_err(|_| LineError::Timestamp { value: excerpt(t) })?,
        ),
    };
    let mut series_parts = split_unescaped(series, ',', usize::MAX).into_iter();
    let measurement = unescape(series_parts.next().unwrap_or_default());
    if measurement.is_empty() {
        return Err(LineError::NoMeasurement);
    }
    let mut tags = BTreeMap::new();
    for tag in series_parts {
        let kv = split_unescaped(tag, '=', 2);
        let [k, v] = kv.as_slice() else {
            return Err(LineError::Tag { tag: excerpt(tag) });
        };
        tags.insert(unescape(k), unescape(v));
    }
    let mut fields = BTreeMap::new();
    for field in split_unescaped(fields_text, ',', usize::MAX) {
        let kv = split_unescaped(field, '=', 2);
        let [k, v] = kv.as_slice() else {
            return Err(LineError::Field {
                field: excerpt(field),
            });
        };
        let value = field_value(v).ok_or_else(|| LineError::FieldValue {
            field: excerpt(k),
            value: excerpt(v),
        })?;
        fields.insert(unescape(k), value);
    }
    Ok(Line {
        measurement,
        tags,
        fields,
        timestamp,
    })
}

fn field_value(v: &str) -> Option<FieldValue> {
    if let Some(s) = v.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        return Some(FieldValue::Str(unescape(s)));
    }
    match v {
        "t" | "T" | "true" | "True" | "TRUE" => return Some(FieldValue::Bool(true)),
        "f" | "F" | "false" | "False" | "FALSE" => return Some(FieldValue::Bool(false)),
        _ => {}
    }
    if let Some(i) = v.strip_suffix('i') {
        return i.parse().ok().map(FieldValue::I64);
    }
    if let Some(u) = v.strip_suffix('u') {
        return u.parse::<u64>().ok().map(|u| FieldValue::I64(u as i64));
    }
    v.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .map(FieldValue::F64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_lines() {
        let lines = parse(
            "weather,loc=us\\ west,room=a temp=21.5,count=3i,ok=t,msg=\"hi, \\\"x\\\"\" 1700000000000000000\n\n# c\nweather temp=1",
        )
        .unwrap();
        assert_eq!(lines.len(), 2);
        let l = &lines[0];
        assert_eq!(l.measurement, "weather");
        assert_eq!(l.tags["loc"], "us west");
        assert_eq!(l.fields["temp"], FieldValue::F64(21.5));
        assert_eq!(l.fields["count"], FieldValue::I64(3));
        assert_eq!(l.fields["ok"], FieldValue::Bool(true));
        assert_eq!(l.fields["msg"], FieldValue::Str("hi, \"x\"".into()));
        assert_eq!(l.timestamp, Some(1_700_000_000_000_000_000));
        assert_eq!(lines[1].timestamp, None);
    }

    #[test]
    fn errors_name_the_line() {
        let err = parse("m a=1\nm b=x").unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("\"b\""), "{err}");
        let err = |text: &str| parse(text).unwrap_err().to_string();
        assert!(err("m").contains("no fields"));
        assert!(err("m a=1 xyz").contains("timestamp"));
        assert!(matches!(parse("  "), Err(PayloadError::NoLines)));
    }
}
