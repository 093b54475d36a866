//! What a plot shows, fetched from the platform: series from the historian's `ts.query`
//! and a DT's anomaly periods from its `anomaly` / `anomaly_cleared` events in
//! `DTAAS_EVT` (their `ts` is data time, so they line up with the series).

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use dtaas_schemas::names;
use dtaas_schemas::subject;
use dtaas_schemas::timeseries::{TsQueryReply, TsQueryRequest};
use futures::StreamExt;

/// One series to draw: a field of a PT's measurement (or of a DT's output).
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSpec {
    pub pt: String,
    pub measurement: String,
    pub field: String,
    /// Legend text.
    pub label: String,
}

impl FromStr for SeriesSpec {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Self> {
        let (path, label) = match text.split_once('=') {
            Some((path, label)) => (path, Some(label)),
            None => (text, None),
        };
        let parts: Vec<&str> = path.split('/').collect();
        let [pt, measurement, field] = parts[..] else {
            anyhow::bail!(
                "series {text:?} must be PT/MEASUREMENT/FIELD[=LABEL], e.g. inc1/state/t1=room"
            );
        };
        Ok(Self {
            pt: pt.to_owned(),
            measurement: measurement.to_owned(),
            field: field.to_owned(),
            label: label.unwrap_or(path).to_owned(),
        })
    }
}

impl SeriesSpec {
    fn new(pt: &str, measurement: &str, field: &str, label: &str) -> Self {
        Self {
            pt: pt.to_owned(),
            measurement: measurement.to_owned(),
            field: field.to_owned(),
            label: label.to_owned(),
        }
    }

    /// The incubator demo's series.
    pub fn incubator(pt: &str, dt: &str) -> Vec<Self> {
        vec![
            Self::new(pt, "state", "average_temperature", "T box, measured (°C)"),
            Self::new(dt, "estimate", "t_box", "T box, estimated (°C)"),
            Self::new(dt, "estimate", "t_heater", "T heater, estimated (°C)"),
            Self::new(pt, "state", "temperature_desired", "setpoint (°C)"),
            Self::new(pt, "state", "t1", "room (°C)"),
        ]
    }
}

/// The time range asked for.
#[derive(Debug, Clone)]
pub enum Range {
    /// RFC 3339 bounds.
    Fixed { from: String, to: String },
    /// The last span of data, ending at the newest point (which may lie ahead of the
    /// wall clock when a simulator runs faster than real time).
    Last(Duration),
}

impl Range {
    pub fn new(from: Option<&str>, to: Option<&str>, last: Duration) -> anyhow::Result<Self> {
        match (from, to) {
            (Some(from), Some(to)) => {
                let now = dtaas_schemas::time::now_ns();
                for bound in [from, to] {
                    dtaas_schemas::time::parse_time(bound, now)
                        .map_err(|e| anyhow::anyhow!("--from/--to: {e}"))?;
                }
                Ok(Self::Fixed {
                    from: from.to_owned(),
                    to: to.to_owned(),
                })
            }
            _ => Ok(Self::Last(last)),
        }
    }

    fn query_bounds(&self) -> (String, String) {
        match self {
            Self::Fixed { from, to } => (from.clone(), to.clone()),
            Self::Last(span) => (
                format!("-{}ms", span.as_millis()),
                "2200-01-01T00:00:00Z".to_owned(),
            ),
        }
    }
}

/// A series' points: (ns since the epoch, value).
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub points: Vec<(i64, f64)>,
}

/// Everything one plot shows.
#[derive(Debug, Clone)]
pub struct Plot {
    pub series: Vec<Series>,
    /// Anomaly periods (start, end), ns; an open one ends at the plot's end.
    pub shaded: Vec<(i64, i64)>,
    /// The x range, ns.
    pub start: i64,
    pub end: i64,
}

/// Most points one series may have.
const LIMIT: usize = 1_000_000;

pub async fn load(
    client: &async_nats::Client,
    user: &str,
    specs: &[SeriesSpec],
    dt: &str,
    range: &Range,
) -> anyhow::Result<Plot> {
    let (from, to) = range.query_bounds();
    let mut series = Vec::with_capacity(specs.len());
    for spec in specs {
        let points = query(client, user, spec, &from, &to).await?;
        series.push(Series {
            label: spec.label.clone(),
            points,
        });
    }
    let newest = series
        .iter()
        .filter_map(|s| s.points.last().map(|p| p.0))
        .max();
    let oldest = series
        .iter()
        .filter_map(|s| s.points.first().map(|p| p.0))
        .min();
    let (Some(oldest), Some(newest)) = (oldest, newest) else {
        anyhow::bail!(
            "no data for {} between {from} and {to}; is the PT sending (dtaas up --demo incubator), \
             or give an older range with --from/--to",
            specs
                .iter()
                .map(|s| format!("{}/{}/{}", s.pt, s.measurement, s.field))
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let start = match range {
        Range::Last(span) => oldest.max(newest - span.as_nanos() as i64),
        Range::Fixed { .. } => oldest,
    };
    for s in &mut series {
        s.points.retain(|p| p.0 >= start);
    }
    let shaded = anomaly_periods(client, dt, start, newest).await?;
    Ok(Plot {
        series,
        shaded,
        start,
        end: newest,
    })
}

async fn query(
    client: &async_nats::Client,
    user: &str,
    spec: &SeriesSpec,
    from: &str,
    to: &str,
) -> anyhow::Result<Vec<(i64, f64)>> {
    let request = TsQueryRequest {
        pt: spec.pt.clone(),
        measurement: spec.measurement.clone(),
        fields: Some(vec![spec.field.clone()]),
        from: Some(from.to_owned()),
        to: Some(to.to_owned()),
        limit: Some(LIMIT),
        ..Default::default()
    };
    let subject = subject::request(user, "ts", "query")?;
    let reply = tokio::time::timeout(
        Duration::from_secs(30),
        client.request(subject.clone(), serde_json::to_vec(&request)?.into()),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no reply on {subject} within 30 s"))?
    .with_context(|| format!("no reply on {subject}; is the historian running (`dtaas up`)?"))?;
    let reply: TsQueryReply = crate::reply::decode(&reply.payload)
        .with_context(|| format!("ts.query of {}/{}", spec.pt, spec.measurement))?;
    Ok(reply
        .series
        .into_iter()
        .flat_map(|s| s.points)
        .filter_map(|(ts, v)| Some((ts, v.as_f64()?)))
        .collect())
}

/// The DT's anomaly periods overlapping `start..=end`, from its events in `DTAAS_EVT`.
async fn anomaly_periods(
    client: &async_nats::Client,
    dt: &str,
    start: i64,
    end: i64,
) -> anyhow::Result<Vec<(i64, i64)>> {
    let js = jetstream::new(client.clone());
    let stream = js
        .get_stream(names::STREAM_EVENTS)
        .await
        .context("cannot open the event stream")?;
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            filter_subject: subject::event_id_all("dt", dt)?,
            ack_policy: jetstream::consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .context("cannot read the DT's events")?;
    let mut transitions = Vec::new();
    loop {
        let mut batch = consumer
            .fetch()
            .max_messages(1000)
            .expires(Duration::from_secs(1))
            .messages()
            .await?;
        let mut got = 0;
        let mut pending = 0;
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| anyhow::anyhow!("{e}"))?;
            got += 1;
            pending = message.info().map(|i| i.pending).unwrap_or(0);
            let (_, _, event) = subject::parse_event(&message.subject)?;
            let active = match event {
                "anomaly" => true,
                "anomaly_cleared" => false,
                _ => continue,
            };
            let body: serde_json::Value = dtaas_schemas::codec::decode(None, &message.payload)?;
            if let Some(ts) = body["ts"].as_i64() {
                transitions.push((ts, active));
            }
        }
        if got == 0 || pending == 0 {
            break;
        }
    }
    Ok(periods(transitions, start, end))
}

/// Anomaly periods from (ts, active) transitions, clipped to `start..=end`.
fn periods(mut transitions: Vec<(i64, bool)>, start: i64, end: i64) -> Vec<(i64, i64)> {
    transitions.sort_unstable();
    let mut out = Vec::new();
    let mut open: Option<i64> = None;
    for (ts, active) in transitions {
        match (active, open) {
            (true, None) => open = Some(ts),
            (false, Some(since)) => {
                out.push((since, ts));
                open = None;
            }
            _ => {}
        }
    }
    if let Some(since) = open {
        out.push((since, end));
    }
    out.into_iter()
        .filter(|(a, b)| *b >= start && *a <= end)
        .map(|(a, b)| (a.max(start), b.min(end)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_specs_parse_with_and_without_labels() {
        let s: SeriesSpec = "inc1/state/t1=room".parse().unwrap();
        assert_eq!(
            (s.pt.as_str(), s.field.as_str(), s.label.as_str()),
            ("inc1", "t1", "room")
        );
        let s: SeriesSpec = "incubator/estimate/t_heater".parse().unwrap();
        assert_eq!(s.label, "incubator/estimate/t_heater");
        assert!("inc1/t1"
            .parse::<SeriesSpec>()
            .unwrap_err()
            .to_string()
            .contains("PT/MEASUREMENT/FIELD"));
    }

    #[test]
    fn periods_pair_transitions_and_clip() {
        let t = vec![
            (50, false),
            (10, true),
            (20, false),
            (30, true),
            (35, true),
            (90, true),
        ];
        assert_eq!(periods(t, 0, 100), vec![(10, 20), (30, 50), (90, 100)]);
        assert_eq!(
            periods(vec![(10, true), (20, false)], 15, 100),
            vec![(15, 20)]
        );
        assert!(periods(vec![(10, true), (20, false)], 30, 100).is_empty());
    }
}
