//! The telemetry record: the InfluxDB data model (measurement, tags, fields, time).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::subject::{self, SubjectError};

/// One field value: float, integer, boolean or string.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum FieldValue {
    Bool(bool),
    I64(i64),
    F64(f64),
    Str(String),
}

impl FieldValue {
    /// The value as a float, for aggregation; strings have none.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F64(v) => Some(v),
            Self::I64(v) => Some(v as f64),
            Self::Bool(v) => Some(if v { 1.0 } else { 0.0 }),
            Self::Str(_) => None,
        }
    }
}

/// Reads a value by its own type, in one pass: an untagged derive would buffer each
/// value and try the variants in turn, building an error for every miss, which is the
/// historian's hottest decode path.
impl<'de> Deserialize<'de> for FieldValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FieldValueVisitor)
    }
}

struct FieldValueVisitor;

impl serde::de::Visitor<'_> for FieldValueVisitor {
    type Value = FieldValue;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a number, a boolean or a string")
    }

    fn visit_bool<E>(self, v: bool) -> Result<FieldValue, E> {
        Ok(FieldValue::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<FieldValue, E> {
        Ok(FieldValue::I64(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<FieldValue, E> {
        Ok(i64::try_from(v).map_or(FieldValue::F64(v as f64), FieldValue::I64))
    }

    fn visit_f64<E>(self, v: f64) -> Result<FieldValue, E> {
        Ok(FieldValue::F64(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<FieldValue, E> {
        Ok(FieldValue::Str(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<FieldValue, E> {
        Ok(FieldValue::Str(v))
    }
}

/// A set of field values of one PT and measurement at one instant.
///
/// JSON as typed by hand:
/// `{"pt":"inc1","measurement":"temperature","ts":1764000000000000000,"tags":{"room":"lab"},"fields":{"temp":21.5}}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryRecord {
    /// The PT (or, for DT outputs, the DT) the values belong to.
    pub pt: String,
    pub measurement: String,
    /// Nanoseconds since the Unix epoch.
    pub ts: i64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    pub fields: BTreeMap<String, FieldValue>,
}

/// A record that cannot be stored.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Subject(#[from] SubjectError),
    #[error("record of {pt}/{measurement} has no fields")]
    NoFields { pt: String, measurement: String },
    #[error("record of {pt}/{measurement} has a field with an empty name")]
    EmptyFieldName { pt: String, measurement: String },
    #[error("record of {pt}/{measurement}: field {field:?} is not a finite number")]
    NotFinite {
        pt: String,
        measurement: String,
        field: String,
    },
}

impl TelemetryRecord {
    /// The subject this record is published on.
    pub fn subject(&self) -> Result<String, SubjectError> {
        subject::telemetry(&self.pt, &self.measurement)
    }

    /// Checks what every store requires: valid ids, at least one named, finite field.
    pub fn validate(&self) -> Result<(), RecordError> {
        subject::validate_token("PT id", &self.pt)?;
        subject::validate_token("measurement", &self.measurement)?;
        let context = || (self.pt.clone(), self.measurement.clone());
        if self.fields.is_empty() {
            let (pt, measurement) = context();
            return Err(RecordError::NoFields { pt, measurement });
        }
        for (name, value) in &self.fields {
            if name.is_empty() {
                let (pt, measurement) = context();
                return Err(RecordError::EmptyFieldName { pt, measurement });
            }
            if matches!(value, FieldValue::F64(v) if !v.is_finite()) {
                let (pt, measurement) = context();
                return Err(RecordError::NotFinite {
                    pt,
                    measurement,
                    field: name.clone(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, Encoding};

    fn sample() -> TelemetryRecord {
        TelemetryRecord {
            pt: "inc1".into(),
            measurement: "temperature".into(),
            ts: 1_764_000_000_000_000_000,
            tags: BTreeMap::from([("room".into(), "lab".into())]),
            fields: BTreeMap::from([
                ("temp".into(), FieldValue::F64(21.5)),
                ("count".into(), FieldValue::I64(3)),
                ("heater".into(), FieldValue::Bool(true)),
                ("state".into(), FieldValue::Str("ok".into())),
            ]),
        }
    }

    #[test]
    fn round_trips_in_both_encodings() {
        let record = sample();
        for encoding in [Encoding::Json, Encoding::MsgPack] {
            let body = encoding.encode(&record).unwrap();
            assert_eq!(decode::<TelemetryRecord>(None, &body).unwrap(), record);
        }
    }

    #[test]
    fn json_as_typed_by_hand() {
        let typed = r#"{"pt":"inc1","measurement":"temperature","ts":1764000000000000000,
            "tags":{"room":"lab"},"fields":{"temp":21.5,"count":3,"heater":true,"state":"ok"}}"#;
        let record: TelemetryRecord = decode(Some("application/json"), typed.as_bytes()).unwrap();
        assert_eq!(record, sample());
        assert_eq!(record.subject().unwrap(), "dtaas.v1.tel.inc1.temperature");
    }

    #[test]
    fn malformed_records_are_rejected_clearly() {
        let err = decode::<TelemetryRecord>(None, br#"{"pt":"inc1","ts":1,"fields":{}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("measurement"), "{err}");
        let mut record = sample();
        record.fields.clear();
        assert!(record
            .validate()
            .unwrap_err()
            .to_string()
            .contains("no fields"));
        let mut record = sample();
        record.pt = "in c1".into();
        assert!(record.validate().unwrap_err().to_string().contains("PT id"));
        let mut record = sample();
        record
            .fields
            .insert("bad".into(), FieldValue::F64(f64::NAN));
        assert!(record
            .validate()
            .unwrap_err()
            .to_string()
            .contains("\"bad\""));
    }

    #[test]
    fn field_values_keep_their_type_and_refuse_the_rest() {
        let fields: BTreeMap<String, FieldValue> = serde_json::from_str(
            r#"{"a":1,"b":-2,"c":2.5,"d":false,"e":"x","f":18446744073709551615}"#,
        )
        .unwrap();
        assert_eq!(fields["a"], FieldValue::I64(1));
        assert_eq!(fields["b"], FieldValue::I64(-2));
        assert_eq!(fields["c"], FieldValue::F64(2.5));
        assert_eq!(fields["d"], FieldValue::Bool(false));
        assert_eq!(fields["e"], FieldValue::Str("x".into()));
        assert_eq!(fields["f"], FieldValue::F64(u64::MAX as f64));
        let err = serde_json::from_str::<FieldValue>("[1]")
            .unwrap_err()
            .to_string();
        assert!(err.contains("a number, a boolean or a string"), "{err}");
    }
}
