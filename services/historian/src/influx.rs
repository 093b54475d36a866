//! The `influxdb` backend: InfluxDB 2 write API (line protocol) and Flux queries,
//! through the `influxdb2` crate.
//!
//! A record becomes one line: measurement = the record's measurement, tag `pt` = the
//! PT (it wins over a record tag of the same name), the record's tags, its fields and
//! its nanosecond timestamp. InfluxDB overwrites a point with the same series and
//! timestamp, which makes writes idempotent.

use std::fmt::Write as _;
use std::sync::Arc;

use dtaas_schemas::timeseries::{TsLatest, TsLatestReply, TsQueryReply, TsSeries};
use dtaas_schemas::{FieldValue, TelemetryRecord};
use influxdb2::models::Query as FluxQuery;
use influxdb2::RequestError;

use crate::config::InfluxConfig;
use crate::error::OpenError;
use crate::query::Query;
use crate::sink::{Sink, SinkError};

/// The InfluxDB 2 store; cheap to clone. Its `Debug` never shows the token.
#[derive(Clone)]
pub struct InfluxStore {
    client: influxdb2::Client,
    bucket: Arc<str>,
}

impl InfluxStore {
    /// Builds the client; checks the URL so a typo is a clear start-up error.
    pub fn new(config: &InfluxConfig) -> Result<Self, OpenError> {
        let bad_url = |problem: String| OpenError::InfluxUrl {
            url: config.url.clone(),
            problem,
        };
        let url =
            reqwest::Url::parse(&config.url).map_err(|e| bad_url(format!("is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad_url("must start with http:// or https://".into()));
        }
        let http = reqwest::Client::builder().timeout(config.timeout);
        let client = influxdb2::ClientBuilder::with_builder(
            http,
            config.url.as_str(),
            config.org.as_str(),
            config.token.expose(),
        )
        .build()?;
        Ok(Self {
            client,
            bucket: config.bucket.as_str().into(),
        })
    }

    async fn flux(
        &self,
        flux: String,
    ) -> Result<Vec<influxdb2::api::query::FluxRecord>, SinkError> {
        self.client
            .query_raw(Some(FluxQuery::new(flux)))
            .await
            .map_err(classify)
    }
}

/// 400 (bad line protocol), 413 (too large, splitting helps) and 422 (outside
/// retention) are the data's fault; everything else (down, 5xx, 401) is retried.
fn classify(error: RequestError) -> SinkError {
    // The token travels in a header and never appears in these messages.
    match &error {
        RequestError::Http { status, .. } if matches!(status.as_u16(), 400 | 413 | 422) => {
            SinkError::Rejected(error.to_string())
        }
        _ => SinkError::Unavailable(error.to_string()),
    }
}

/// Appends `text` escaped with backslashes before every char in `special`.
fn escape(out: &mut String, text: &str, special: &[char]) {
    for c in text.chars() {
        if special.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
}

const MEASUREMENT: &[char] = &[',', ' ', '\\'];
const KEY: &[char] = &[',', '=', ' ', '\\'];
const STRING: &[char] = &['"', '\\'];

/// Appends the line-protocol line of `record`.
pub fn line_protocol(out: &mut String, record: &TelemetryRecord) {
    escape(out, &record.measurement, MEASUREMENT);
    out.push_str(",pt=");
    escape(out, &record.pt, KEY);
    for (key, value) in &record.tags {
        if key == "pt" || value.is_empty() {
            continue;
        }
        out.push(',');
        escape(out, key, KEY);
        out.push('=');
        escape(out, value, KEY);
    }
    let mut first = true;
    for (key, value) in &record.fields {
        out.push(if first { ' ' } else { ',' });
        first = false;
        escape(out, key, KEY);
        out.push('=');
        match value {
            FieldValue::F64(v) => {
                let _ = write!(out, "{v:?}");
            }
            FieldValue::I64(v) => {
                let _ = write!(out, "{v}i");
            }
            FieldValue::Bool(v) => out.push_str(if *v { "true" } else { "false" }),
            FieldValue::Str(v) => {
                out.push('"');
                escape(out, v, STRING);
                out.push('"');
            }
        }
    }
    let _ = writeln!(out, " {}", record.ts);
}

/// A Flux string literal.
fn flux_string(text: &str) -> String {
    let mut out = String::from("\"");
    escape(&mut out, text, &['"', '\\', '$']);
    out.push('"');
    out
}

/// The Flux program for `query`.
pub fn flux_query(bucket: &str, query: &Query) -> String {
    let mut flux = format!(
        "from(bucket: {})\n  |> range(start: time(v: {}), stop: time(v: {}))\n  |> filter(fn: (r) => r._measurement == {} and r.pt == {})\n",
        flux_string(bucket),
        query.from,
        query.to.saturating_add(1),
        flux_string(&query.measurement),
        flux_string(&query.pt),
    );
    if !query.fields.is_empty() {
        let any: Vec<String> = query
            .fields
            .iter()
            .map(|f| format!("r._field == {}", flux_string(f)))
            .collect();
        let _ = writeln!(flux, "  |> filter(fn: (r) => {})", any.join(" or "));
    }
    flux.push_str("  |> group(columns: [\"_field\"])\n  |> sort(columns: [\"_time\"])\n");
    if let Some((every, agg)) = query.window {
        let every = every
            .unwrap_or(query.to.saturating_add(1) - query.from)
            .max(1);
        let _ = writeln!(
            flux,
            "  |> aggregateWindow(every: {every}ns, fn: {}, createEmpty: false, timeSrc: \"_start\")",
            agg.name()
        );
    }
    let _ = writeln!(flux, "  |> limit(n: {})", query.limit);
    flux
}

fn value_of(value: Option<&influxdb2_structmap::value::Value>) -> Option<FieldValue> {
    use influxdb2_structmap::value::Value;
    Some(match value? {
        Value::Double(v) => FieldValue::F64(v.0),
        Value::Long(v) => FieldValue::I64(*v),
        Value::UnsignedLong(v) => FieldValue::I64(*v as i64),
        Value::Bool(v) => FieldValue::Bool(*v),
        Value::String(v) => FieldValue::Str(v.clone()),
        _ => return None,
    })
}

fn time_of(value: Option<&influxdb2_structmap::value::Value>) -> Option<i64> {
    match value? {
        influxdb2_structmap::value::Value::TimeRFC(t) => t.timestamp_nanos_opt(),
        _ => None,
    }
}

fn string_of(value: Option<&influxdb2_structmap::value::Value>) -> Option<String> {
    match value? {
        influxdb2_structmap::value::Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

impl Sink for InfluxStore {
    async fn write(&self, records: Arc<Vec<TelemetryRecord>>) -> Result<(), SinkError> {
        let mut body = String::with_capacity(records.len() * 96);
        for record in records.iter() {
            line_protocol(&mut body, record);
        }
        self.client
            .write_line_protocol(&self.client.org, &self.bucket, body)
            .await
            .map_err(classify)
    }

    async fn query(&self, query: Query) -> Result<TsQueryReply, SinkError> {
        let records = self.flux(flux_query(&self.bucket, &query)).await?;
        let mut reply = TsQueryReply::default();
        for record in records {
            let (Some(field), Some(ts), Some(value)) = (
                string_of(record.values.get("_field")),
                time_of(record.values.get("_time")),
                value_of(record.values.get("_value")),
            ) else {
                continue;
            };
            match reply.series.iter_mut().find(|s| s.field == field) {
                Some(series) => series.points.push((ts, value)),
                None => reply.series.push(TsSeries {
                    field,
                    points: vec![(ts, value)],
                }),
            }
        }
        // Named fields without points are empty series, as with the embedded store.
        for field in &query.fields {
            if !reply.series.iter().any(|s| &s.field == field) {
                reply.series.push(TsSeries {
                    field: field.clone(),
                    points: Vec::new(),
                });
            }
        }
        reply.series.sort_by(|a, b| a.field.cmp(&b.field));
        Ok(reply)
    }

    async fn latest(&self, pt: String) -> Result<TsLatestReply, SinkError> {
        let flux = format!(
            "from(bucket: {})\n  |> range(start: 0)\n  |> filter(fn: (r) => r.pt == {})\n  |> group(columns: [\"_measurement\", \"_field\"])\n  |> last()\n",
            flux_string(&self.bucket),
            flux_string(&pt)
        );
        let mut reply = TsLatestReply::default();
        for record in self.flux(flux).await? {
            let (Some(measurement), Some(field), Some(ts), Some(value)) = (
                string_of(record.values.get("_measurement")),
                string_of(record.values.get("_field")),
                time_of(record.values.get("_time")),
                value_of(record.values.get("_value")),
            ) else {
                continue;
            };
            reply.latest.push(TsLatest {
                measurement,
                field,
                ts,
                value,
            });
        }
        reply
            .latest
            .sort_by(|a, b| (&a.measurement, &a.field).cmp(&(&b.measurement, &b.field)));
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::query::Agg;

    #[test]
    fn line_protocol_escapes_and_types() {
        let record = TelemetryRecord {
            pt: "inc1".into(),
            measurement: "temp erature".into(),
            ts: 42,
            tags: BTreeMap::from([("room".into(), "lab,1".into()), ("pt".into(), "x".into())]),
            fields: BTreeMap::from([
                ("a".into(), FieldValue::F64(1.0)),
                ("b".into(), FieldValue::I64(3)),
                ("c".into(), FieldValue::Bool(true)),
                ("d".into(), FieldValue::Str("say \"hi\"".into())),
            ]),
        };
        let mut out = String::new();
        line_protocol(&mut out, &record);
        assert_eq!(
            out,
            "temp\\ erature,pt=inc1,room=lab\\,1 a=1.0,b=3i,c=true,d=\"say \\\"hi\\\"\" 42\n"
        );
    }

    #[test]
    fn flux_names_bucket_range_and_window() {
        let query = Query {
            pt: "inc1".into(),
            measurement: "temperature".into(),
            fields: vec!["temp".into()],
            from: 10,
            to: 20,
            window: Some((Some(5), Agg::Max)),
            limit: 7,
        };
        let flux = flux_query("b\"1", &query);
        assert!(flux.contains("from(bucket: \"b\\\"1\")"), "{flux}");
        assert!(
            flux.contains("range(start: time(v: 10), stop: time(v: 21))"),
            "{flux}"
        );
        assert!(flux.contains("r._field == \"temp\""), "{flux}");
        assert!(
            flux.contains("aggregateWindow(every: 5ns, fn: max"),
            "{flux}"
        );
        assert!(flux.contains("limit(n: 7)"), "{flux}");
    }

    #[test]
    fn token_never_printed() {
        let config = InfluxConfig {
            token: crate::config::Secret::new("s3cret-token"),
            ..Default::default()
        };
        let store = InfluxStore::new(&config).unwrap();
        assert!(!format!("{:?}", store.client).contains("s3cret-token"));
        assert!(!format!("{config:?}").contains("s3cret-token"));
    }
}
