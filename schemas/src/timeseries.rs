//! Time-series requests and replies of the historian: `ts.query` and `ts.latest`.

use serde::{Deserialize, Deserializer, Serialize};

use crate::telemetry::FieldValue;

/// The service name in request subjects: `dtaas.v1.<user>.ts.<verb>`.
pub const SERVICE: &str = "ts";
/// Verb of the points-in-a-range request.
pub const VERB_QUERY: &str = "query";
/// Verb of the latest-values request.
pub const VERB_LATEST: &str = "latest";

/// `dtaas.v1.<user>.ts.query`: the points of one PT and measurement in a time range.
///
/// JSON as typed by hand:
/// `{"pt":"inc1","measurement":"temperature","fields":["temp"],"from":"-1h","to":"now","every":"10s","agg":"mean","limit":10000}`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TsQueryRequest {
    /// The PT (or DT, for DT outputs) whose points are wanted.
    #[serde(deserialize_with = "named::pt")]
    pub pt: String,
    #[serde(deserialize_with = "named::measurement")]
    pub measurement: String,
    /// Fields to return; all fields of the measurement when absent.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "named::fields"
    )]
    pub fields: Option<Vec<String>>,
    /// Start of the range, inclusive: RFC 3339, `now` or relative (`-1h`) [default: -1h].
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "named::from"
    )]
    pub from: Option<String>,
    /// End of the range, inclusive: RFC 3339, `now` or relative [default: now].
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "named::to"
    )]
    pub to: Option<String>,
    /// Aggregation window such as `10s`; raw points when absent and `agg` is absent.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "named::every"
    )]
    pub every: Option<String>,
    /// `mean`, `min`, `max`, `last` or `count` [default: mean when `every` is set].
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "named::agg"
    )]
    pub agg: Option<String>,
    /// Most points per series, the earliest first [default: 10000].
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "named::limit"
    )]
    pub limit: Option<usize>,
}

/// The reply to `ts.query`: one series per field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TsQueryReply {
    pub series: Vec<TsSeries>,
}

/// The points of one field, ordered by time: `[[<ts_ns>, <value>], …]`. For aggregates
/// the timestamp is the start of the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TsSeries {
    pub field: String,
    pub points: Vec<(i64, FieldValue)>,
}

/// `dtaas.v1.<user>.ts.latest`: the last value of every field of every measurement.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TsLatestRequest {
    #[serde(deserialize_with = "named::pt")]
    pub pt: String,
}

/// The reply to `ts.latest`, ordered by measurement then field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TsLatestReply {
    pub latest: Vec<TsLatest>,
}

/// The last value of one field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TsLatest {
    pub measurement: String,
    pub field: String,
    /// Nanoseconds since the Unix epoch.
    pub ts: i64,
    pub value: FieldValue,
}

/// Deserializers that put the field's name into type errors, so a caller who sends
/// `"limit":"many"` reads which field is wrong.
mod named {
    use super::*;

    fn with_name<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
        name: &str,
    ) -> Result<T, D::Error> {
        T::deserialize(d).map_err(|e| serde::de::Error::custom(format!("field `{name}`: {e}")))
    }

    macro_rules! named {
        ($($name:ident: $ty:ty),* $(,)?) => {$(
            pub fn $name<'de, D: Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                with_name(d, stringify!($name))
            }
        )*};
    }

    named! {
        pt: String,
        measurement: String,
        fields: Option<Vec<String>>,
        from: Option<String>,
        to: Option<String>,
        every: Option<String>,
        agg: Option<String>,
        limit: Option<usize>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_shape_is_the_documented_one() {
        let reply = TsQueryReply {
            series: vec![TsSeries {
                field: "temp".into(),
                points: vec![(1, FieldValue::F64(21.5)), (2, FieldValue::I64(3))],
            }],
        };
        assert_eq!(
            serde_json::to_string(&reply).unwrap(),
            r#"{"series":[{"field":"temp","points":[[1,21.5],[2,3]]}]}"#
        );
        let request: TsQueryRequest =
            serde_json::from_str(r#"{"pt":"inc1","measurement":"t","from":"-1h"}"#).unwrap();
        assert_eq!(request.from.as_deref(), Some("-1h"));
        let err =
            serde_json::from_str::<TsQueryRequest>(r#"{"pt":"a","measurement":"t","limit":"x"}"#)
                .unwrap_err()
                .to_string();
        assert!(err.contains("`limit`"), "{err}");
    }
}
