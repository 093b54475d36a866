//! Payload parsing: one MQTT payload → one or more telemetry records.

pub mod error;
pub mod json;
pub mod line_protocol;
pub mod msgpack;
pub mod stamp;

use dtaas_schemas::telemetry::TelemetryRecord;

pub use error::PayloadError;

use crate::config::{Format, TimeUnit};
use crate::topic_map::Target;
use stamp::Stamper;

/// A record and, when known, its de-duplication id.
#[derive(Debug, PartialEq)]
pub struct Parsed {
    pub record: TelemetryRecord,
    pub msg_id: Option<String>,
}

/// Parses `payload` for `target`; a reading without a timestamp gets its arrival stamp
/// from `stamps`, one each, in order. The error says what is wrong, for the DLQ reason
/// header.
pub fn parse(
    payload: &[u8],
    target: &Target<'_>,
    stamps: &mut Stamper,
) -> Result<Vec<Parsed>, PayloadError> {
    // A UTF-8 byte order mark (some Windows tools write one) says nothing about the
    // format; without removing it, JSON would be taken for line protocol.
    let payload = payload.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(payload);
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Err(PayloadError::Empty);
    }
    let map = target.map;
    let format = match map.format {
        Format::Auto => detect(payload),
        f => f,
    };
    let records = match format {
        Format::LineProtocol => {
            let text = std::str::from_utf8(payload).map_err(|_| PayloadError::NotUtf8)?;
            let unit = match map.timestamp_unit {
                TimeUnit::Auto | TimeUnit::Rfc3339 => TimeUnit::Ns,
                u => u,
            };
            let mut out = Vec::new();
            for line in line_protocol::parse(text)? {
                let mut tags = target.tags.clone();
                tags.extend(line.tags);
                let ts = match line.timestamp {
                    Some(t) => json::scale_int(t, unit).map_err(PayloadError::LineTime)?,
                    None => stamps.next_stamp(),
                };
                out.push(Parsed {
                    record: TelemetryRecord {
                        pt: target.pt.to_owned(),
                        measurement: line.measurement,
                        ts,
                        tags,
                        fields: line.fields,
                    },
                    msg_id: None,
                });
            }
            out
        }
        Format::Json | Format::Msgpack | Format::Auto => {
            let value = if format == Format::Msgpack {
                msgpack::parse(payload)?
            } else {
                serde_json::from_slice(payload).map_err(PayloadError::Json)?
            };
            // An array holds several readings, each an object or a scalar.
            let readings = match value {
                serde_json::Value::Array(items) if items.is_empty() => {
                    return Err(PayloadError::EmptyArray)
                }
                serde_json::Value::Array(items) => items,
                one => vec![one],
            };
            let many = readings.len() > 1;
            let mut out = Vec::with_capacity(readings.len());
            for (index, reading) in readings.into_iter().enumerate() {
                let e = json::extract(
                    reading,
                    &map.timestamp_field,
                    map.timestamp_unit,
                    map.id_field.as_deref(),
                )
                .map_err(|source| match many {
                    true => PayloadError::ArrayReading { index, source },
                    false => PayloadError::Reading(source),
                })?;
                let msg_id =
                    e.id.map(|id| format!("{}.{}.{id}", target.pt, target.measurement));
                out.push(Parsed {
                    record: TelemetryRecord {
                        pt: target.pt.to_owned(),
                        measurement: target.measurement.to_owned(),
                        ts: e.ts.unwrap_or_else(|| stamps.next_stamp()),
                        tags: target.tags.clone(),
                        fields: e.fields,
                    },
                    msg_id,
                });
            }
            out
        }
    };
    for parsed in &records {
        parsed.record.validate()?;
    }
    Ok(records)
}

/// Guesses the format: MessagePack maps by their first byte, JSON when it parses as
/// JSON, line protocol otherwise.
fn detect(payload: &[u8]) -> Format {
    if msgpack::looks_like_map_or_array(payload) {
        return Format::Msgpack;
    }
    let first = payload.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        Some(b'{' | b'[' | b'"' | b'-' | b'0'..=b'9') => Format::Json,
        Some(_) if serde_json::from_slice::<serde_json::Value>(payload).is_ok() => Format::Json,
        _ => Format::LineProtocol,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BridgeConfig;
    use crate::topic_map::{Route, TopicMaps};
    use dtaas_schemas::telemetry::FieldValue;

    fn parse_on(topic: &str, payload: &[u8]) -> Result<Vec<Parsed>, String> {
        // Tests compare the DLQ reasons: the errors' messages.
        let maps = TopicMaps::new(&BridgeConfig::default());
        let Route::Telemetry(target) = maps.route(topic) else {
            panic!("unmapped")
        };
        parse(payload, &target, &mut Stamper::with_clock(|| 7)).map_err(|e| e.to_string())
    }

    #[test]
    fn every_format() {
        let t = "dtaas/pt/inc1/tel/env";
        let r = &parse_on(t, br#"{"temp":21.5,"ts":1700000000}"#).unwrap()[0].record;
        assert_eq!((r.pt.as_str(), r.measurement.as_str()), ("inc1", "env"));
        assert_eq!(r.ts, 1_700_000_000_000_000_000);
        let r = &parse_on(t, b"true").unwrap()[0].record;
        assert_eq!(r.fields["value"], FieldValue::Bool(true));
        assert_eq!(r.ts, 7);
        let r = &parse_on(t, b"-3").unwrap()[0].record;
        assert_eq!(r.fields["value"], FieldValue::I64(-3));
        let lp = parse_on(t, b"env,room=a temp=1\nhum h=2i 5").unwrap();
        assert_eq!(lp.len(), 2);
        assert_eq!(lp[1].record.measurement, "hum");
        assert_eq!(lp[1].record.ts, 5);
        assert_eq!(lp[0].record.tags["room"], "a");
        let mp = rmp_serde::to_vec_named(&serde_json::json!({"x": 2})).unwrap();
        assert_eq!(
            parse_on(t, &mp).unwrap()[0].record.fields["x"],
            FieldValue::I64(2)
        );
    }

    #[test]
    fn arrays_hold_several_readings_in_json_and_msgpack() {
        let t = "dtaas/pt/inc1/tel/env";
        let json = br#"[{"temp":21.5,"ts":1700000000},{"temp":21.7,"ts":1700000001}, 3]"#;
        let readings = parse_on(t, json).unwrap();
        let values: Vec<(i64, FieldValue)> = readings
            .iter()
            .map(|p| {
                let (name, value) = p.record.fields.iter().next().unwrap();
                assert!(name == "temp" || name == "value");
                (p.record.ts, value.clone())
            })
            .collect();
        assert_eq!(
            values,
            vec![
                (1_700_000_000_000_000_000, FieldValue::F64(21.5)),
                (1_700_000_001_000_000_000, FieldValue::F64(21.7)),
                (7, FieldValue::I64(3)),
            ]
        );
        let mp = rmp_serde::to_vec_named(&serde_json::json!([{"x": 1}, {"x": 2}])).unwrap();
        assert_eq!(parse_on(t, &mp).unwrap().len(), 2);
        let err = parse_on(t, br#"[{"x":1},[2]]"#).unwrap_err();
        assert!(err.contains("reading 1 of the array"), "{err}");
        assert!(parse_on(t, b"[]").unwrap_err().contains("empty array"));
    }

    #[test]
    fn readings_without_time_get_one_stamp_each_and_timed_ones_keep_theirs() {
        let t = "dtaas/pt/inc1/tel/env";
        let stamps = |payload: &[u8]| -> Vec<i64> {
            let parsed = parse_on(t, payload).unwrap();
            parsed.iter().map(|p| p.record.ts).collect()
        };
        let array: Vec<String> = (0..300).map(|i| format!(r#"{{"v":{i}}}"#)).collect();
        let array = format!("[{}]", array.join(","));
        assert_eq!(stamps(array.as_bytes()), (7..307).collect::<Vec<_>>());
        let lines = "env v=1\nenv v=2 100\nenv v=3\nhum h=1\n";
        assert_eq!(stamps(lines.as_bytes()), vec![7, 100, 8, 9]);
        let mixed = br#"[{"v":1},{"v":2,"ts":1700000000},{"v":3}]"#;
        assert_eq!(stamps(mixed), vec![7, 1_700_000_000_000_000_000, 8]);
    }

    #[test]
    fn bad_payloads_say_why() {
        let t = "dtaas/pt/inc1/tel/env";
        assert!(parse_on(t, b"").unwrap_err().contains("payload is empty"));
        assert!(parse_on(t, b" \n")
            .unwrap_err()
            .contains("payload is empty"));
        let bom = parse_on(t, b"\xEF\xBB\xBF{\"temp\":1}").unwrap();
        assert_eq!(bom[0].record.fields["temp"], FieldValue::I64(1));
        assert!(parse_on(t, b"{\"a\":").unwrap_err().contains("JSON"));
        assert!(parse_on(t, b"{}").unwrap_err().contains("no fields"));
        assert!(parse_on(t, b"not valid")
            .unwrap_err()
            .contains("line protocol"));
    }
}
