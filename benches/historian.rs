//! Historian benchmark: ingest rate `DTAAS_TEL` → store for the embedded (SQLite) and
//! the victoria-metrics (InfluxDB v2 write API) backends, each against a raw bulk
//! write of the same points straight into the same store, and `ts.query` latency for a
//! one-hour, 1 Hz window. Prints a markdown table. Run: `cargo bench --bench historian`
//! (`DTAAS_BENCH_POINTS` sets the number of points, default 100000;
//! `DTAAS_BENCH_RECORDS_PER_MESSAGE` the size of the batched messages, default 10).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull};
use async_nats::HeaderMap;
use dtaas_historian::config::{AckPolicy, Backend, HistorianConfig, InfluxConfig, Secret};
use dtaas_historian::{EmbeddedStore, InfluxStore, Sink};
use dtaas_runtime::{Config, Context};
use dtaas_schemas::codec::Encoding;
use dtaas_schemas::names::{self, header};
use dtaas_schemas::{subject, FieldValue, TelemetryRecord};
use dtaas_test_harness::{NatsServer, VictoriaMetrics};
use tokio_util::sync::CancellationToken;

/// The allocator of the `dtaas` binary, so the in-process historian runs as it does there.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// 2026-01-01T00:00:00Z in ns.
const BASE_NS: i64 = 1_767_225_600_000_000_000;
const CHUNK: usize = 5_000;
const QUERIES: usize = 300;

fn record(pt: &str, i: i64, step_ns: i64) -> TelemetryRecord {
    TelemetryRecord {
        pt: pt.into(),
        measurement: "env".into(),
        ts: BASE_NS + i * step_ns,
        tags: BTreeMap::from([("site".into(), "lab".into())]),
        fields: BTreeMap::from([("temp".into(), FieldValue::F64(i as f64 * 0.5))]),
    }
}

/// Publishes `records` into `DTAAS_TEL`, `per_message` of them in each message (one
/// record as a map, more as an array).
async fn publish(
    js: &jetstream::Context,
    records: &[TelemetryRecord],
    per_message: usize,
) -> anyhow::Result<()> {
    let mut acks = Vec::with_capacity(1_000);
    for chunk in records.chunks(per_message) {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, Encoding::MsgPack.content_type());
        let body = match chunk {
            [record] => Encoding::MsgPack.encode(record)?,
            batch => Encoding::MsgPack.encode(batch)?,
        };
        acks.push(
            js.publish_with_headers(chunk[0].subject()?, headers, body)
                .await?,
        );
        if acks.len() == 1_000 {
            for ack in acks.drain(..) {
                ack.await?;
            }
        }
    }
    for ack in acks {
        ack.await?;
    }
    Ok(())
}

/// Runs the historian on `store` until its durable consumer acknowledged `last_seq`;
/// returns the elapsed time and leaves the worker running (cancel `shutdown`).
async fn ingest<S: Sink>(
    nats_url: &str,
    config: HistorianConfig,
    store: S,
    last_seq: u64,
) -> anyhow::Result<(Duration, CancellationToken, tokio::task::JoinHandle<()>)> {
    let env_url = nats_url.to_owned();
    let runtime_config = Config::from_toml("", "bench", &move |name| {
        (name == "DTAAS_NATS_URL").then(|| env_url.clone())
    })?;
    let shutdown = CancellationToken::new();
    let ctx = Context::connect(Arc::new(runtime_config), "historian", shutdown.clone()).await?;
    let durable = config.durable_name();
    let js = ctx.js.clone();
    let started = Instant::now();
    let worker = tokio::spawn(async move {
        if let Err(e) = dtaas_historian::run_with(ctx, config, store).await {
            eprintln!("historian failed: {e:#}");
        }
    });
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let Ok(mut consumer) = js
            .get_consumer_from_stream::<pull::Config, _, _>(&durable, names::STREAM_TELEMETRY)
            .await
        else {
            continue;
        };
        let info = consumer.info().await?;
        if info.ack_floor.stream_sequence >= last_seq {
            eprintln!("{durable}: done in {:?}", started.elapsed());
            return Ok((started.elapsed(), shutdown, worker));
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "ingest by {durable} did not finish: its ack floor is at stream sequence {} of {last_seq}",
            info.ack_floor.stream_sequence
        );
    }
}

/// Writes `records` straight into `store` in batches of `CHUNK`, timed from the first
/// write to the last (the batches are built before the clock starts).
async fn raw<S: Sink>(store: &S, records: &[TelemetryRecord]) -> anyhow::Result<Duration> {
    let batches: Vec<_> = records
        .chunks(CHUNK)
        .map(|chunk| Arc::new(chunk.to_vec()))
        .collect();
    let started = Instant::now();
    for batch in batches {
        store
            .write(batch)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(started.elapsed())
}

/// JetStream delivery alone: a pull consumer that takes every message and neither
/// decodes nor acknowledges it (`AckPolicy::None`) — what nats-server can deliver to one
/// client on this machine, the ceiling of any consumer.
async fn delivery_only(js: &jetstream::Context, n: usize) -> anyhow::Result<Duration> {
    use futures::StreamExt;
    let stream = js.get_stream(names::STREAM_TELEMETRY).await?;
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("delivery-only".into()),
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await?;
    let started = Instant::now();
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(2 * CHUNK)
        .messages()
        .await?;
    let mut bytes = 0;
    for _ in 0..n {
        let message = messages
            .next()
            .await
            .ok_or_else(|| anyhow::anyhow!("delivery ended"))??;
        bytes += message.payload.len();
    }
    anyhow::ensure!(bytes > 0);
    Ok(started.elapsed())
}

/// A store that keeps nothing: the consumer's own ceiling (pull, decode, ack) here.
#[derive(Clone)]
struct Discard;

impl Sink for Discard {
    async fn write(&self, _: Arc<Vec<TelemetryRecord>>) -> Result<(), dtaas_historian::SinkError> {
        Ok(())
    }

    async fn query(
        &self,
        _: dtaas_historian::query::Query,
    ) -> Result<dtaas_schemas::timeseries::TsQueryReply, dtaas_historian::SinkError> {
        Ok(Default::default())
    }

    async fn latest(
        &self,
        _: String,
    ) -> Result<dtaas_schemas::timeseries::TsLatestReply, dtaas_historian::SinkError> {
        Ok(Default::default())
    }
}

/// Raw bulk writes of `n` points into a new SQLite file and into victoria-metrics
/// under a new PT, both named after `label`.
async fn raw_both(
    dir: &tempfile::TempDir,
    influx: &InfluxConfig,
    n: usize,
    label: &str,
) -> anyhow::Result<(Duration, Duration)> {
    let records: Vec<TelemetryRecord> = (0..n as i64)
        .map(|i| record(&format!("raw{label}"), i, 1_000_000))
        .collect();
    let file = dir.path().join(format!("raw-{label}.sqlite"));
    let embedded = raw(&EmbeddedStore::open(&file)?, &records).await?;
    let vm = raw(&InfluxStore::new(influx)?, &records).await?;
    Ok((embedded, vm))
}

/// Empties `DTAAS_TEL` and loads `records` into it, `per_message` to a message; returns
/// the last stream sequence.
async fn reload(
    js: &jetstream::Context,
    records: &[TelemetryRecord],
    per_message: usize,
) -> anyhow::Result<u64> {
    let mut stream = js.get_stream(names::STREAM_TELEMETRY).await?;
    stream.purge().await?;
    publish(js, records, per_message).await?;
    Ok(stream.info().await?.state.last_sequence)
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::var("DTAAS_BENCH_POINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let per_message: usize = std::env::var("DTAAS_BENCH_RECORDS_PER_MESSAGE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&v| v > 1)
        .unwrap_or(10);
    let nats = NatsServer::start()?;
    let vm = VictoriaMetrics::start_with_args(&["-dedup.minScrapeInterval=1ms"])?;
    let dir = tempfile::tempdir()?;
    let client = async_nats::connect(nats.url()).await?;
    let js = jetstream::new(client.clone());
    dtaas_runtime::provision::all(&js, 1).await?;

    // The stream holds the points once; each backend's durable consumer reads them all.
    let records: Vec<TelemetryRecord> = (0..n as i64)
        .map(|i| record("bench1", i, 1_000_000))
        .collect();
    let loading = Instant::now();
    publish(&js, &records, 1).await?;
    eprintln!(
        "loaded {n} points into {} in {:?}",
        names::STREAM_TELEMETRY,
        loading.elapsed()
    );
    let last_seq = js
        .get_stream(names::STREAM_TELEMETRY)
        .await?
        .info()
        .await?
        .state
        .last_sequence;

    let delivery = delivery_only(&js, n).await?;

    // The consumer alone (pull, decode, ack) with a store that keeps nothing.
    let mut ceilings = Vec::new();
    for policy in [AckPolicy::Explicit, AckPolicy::All] {
        let config = HistorianConfig {
            durable: Some(format!("historian-discard-{}", policy.name())),
            ack_policy: Some(policy),
            ..Default::default()
        };
        let (took, stop, worker) = ingest(&nats.url(), config, Discard, last_seq).await?;
        stop.cancel();
        let _ = worker.await;
        ceilings.push((policy, took));
    }

    let influx = InfluxConfig {
        url: vm.url(),
        token: Secret::new("bench"),
        ..Default::default()
    };
    // The historian into each store: the backlog of one record per message, then the
    // same points again with `per_message` records to a message. Each pass measures
    // its raw bulk writes (SQLite into a new file, victoria-metrics under a new PT)
    // before and after its ingests and compares with their mean, so that a slow or
    // fast moment of the shared machine (fsync latency above all) skews no ratio.
    let mut rows = Vec::new();
    let backlogs = [(1, last_seq), (per_message, 0)];
    for (records_per_message, mut last_seq) in backlogs {
        if records_per_message > 1 {
            let batched: Vec<TelemetryRecord> = (0..n as i64)
                .map(|i| record("batch1", i, 1_000_000))
                .collect();
            last_seq = reload(&js, &batched, records_per_message).await?;
        }
        let (embedded_before, vm_before) =
            raw_both(&dir, &influx, n, &format!("{records_per_message}a")).await?;
        let mut pass = Vec::new();
        let runs = [
            (Backend::Embedded, AckPolicy::All),
            (Backend::Influxdb, AckPolicy::Explicit),
            (Backend::Influxdb, AckPolicy::All),
        ];
        for (backend, policy) in runs {
            let config = HistorianConfig {
                backend,
                durable: Some(format!(
                    "historian-{}-{}-{records_per_message}",
                    backend.name(),
                    policy.name()
                )),
                ack_policy: Some(policy),
                influxdb: influx.clone(),
                ..Default::default()
            };
            let (took, stop, worker) = match backend {
                Backend::Embedded => {
                    let file = format!("historian-{records_per_message}.sqlite");
                    let store = EmbeddedStore::open(&dir.path().join(file))?;
                    ingest(&nats.url(), config, store, last_seq).await?
                }
                Backend::Influxdb => {
                    let store = InfluxStore::new(&influx)?;
                    ingest(&nats.url(), config, store, last_seq).await?
                }
            };
            stop.cancel();
            let _ = worker.await;
            pass.push((backend, policy, took));
        }
        let (embedded_after, vm_after) =
            raw_both(&dir, &influx, n, &format!("{records_per_message}b")).await?;
        for (backend, policy, took) in pass {
            let raw = match backend {
                Backend::Embedded => (embedded_before + embedded_after) / 2,
                Backend::Influxdb => (vm_before + vm_after) / 2,
            };
            rows.push((backend, policy, records_per_message, raw, took));
        }
    }

    // Query latency: one hour at 1 Hz in the embedded store, asked through ts.query.
    let hour: Vec<TelemetryRecord> = (0..3_600)
        .map(|i| record("query1", i, 1_000_000_000))
        .collect();
    let last_seq = reload(&js, &hour, 1).await?;
    let config = HistorianConfig {
        durable: Some("historian-query".into()),
        ..Default::default()
    };
    let store = EmbeddedStore::open(&dir.path().join("query.sqlite"))?;
    let (_, query_stop, query_worker) = ingest(&nats.url(), config, store, last_seq).await?;
    let query_subject = subject::request("bench", "ts", "query")?;
    let body = serde_json::to_vec(&serde_json::json!({"pt":"query1","measurement":"env",
        "fields":["temp"],"from":"2026-01-01T00:00:00Z","to":"2026-01-01T00:59:59Z"}))?;
    let agg_body = serde_json::to_vec(&serde_json::json!({"pt":"query1","measurement":"env",
        "fields":["temp"],"from":"2026-01-01T00:00:00Z","to":"2026-01-01T00:59:59Z",
        "every":"1m","agg":"mean"}))?;
    let reply = client
        .request(query_subject.clone(), body.clone().into())
        .await?;
    let reply: serde_json::Value = serde_json::from_slice(&reply.payload)?;
    anyhow::ensure!(
        reply["series"][0]["points"].as_array().map_or(0, Vec::len) == 3_600,
        "the hour of points is not all queryable: {reply}"
    );
    let mut latencies = Vec::new();
    for body in [&body, &agg_body] {
        let mut times = Vec::with_capacity(QUERIES);
        for _ in 0..QUERIES {
            let started = Instant::now();
            let reply = client
                .request(query_subject.clone(), body.clone().into())
                .await?;
            times.push(started.elapsed());
            anyhow::ensure!(!reply.payload.is_empty());
        }
        times.sort();
        latencies.push((percentile(&times, 0.5), percentile(&times, 0.99)));
    }
    query_stop.cancel();
    let _ = query_worker.await;

    println!("\n## Historian benchmark ({n} points, batch {CHUNK})\n");
    println!("| backend | ack policy | records per message | raw bulk write (points/s) | DTAAS_TEL → store (points/s) | ratio |");
    println!("|---|---|---:|---:|---:|---:|");
    for (backend, policy, records_per_message, raw, ingest) in rows {
        let name = match backend {
            Backend::Embedded => "embedded (SQLite)",
            Backend::Influxdb => "victoria-metrics (InfluxDB v2 write API)",
        };
        println!(
            "| {name} | {} | {records_per_message} | {:.0} | {:.0} | {:.2} |",
            policy.name(),
            rate(n, raw),
            rate(n, ingest),
            raw.as_secs_f64() / ingest.as_secs_f64()
        );
    }
    println!(
        "| (JetStream delivery only: pull, no decode, no ack) | none | 1 | – | {:.0} | – |",
        rate(n, delivery)
    );
    for (policy, took) in ceilings {
        println!(
            "| (no store: consumer pull + decode + ack only) | {} | 1 | – | {:.0} | – |",
            policy.name(),
            rate(n, took)
        );
    }
    println!("\n| ts.query, one hour at 1 Hz (embedded, {QUERIES} requests) | p50 | p99 |");
    println!("|---|---:|---:|");
    for (name, (p50, p99)) in ["raw, 3600 points", "every 1m mean, 60 points"]
        .iter()
        .zip(latencies)
    {
        println!(
            "| {name} | {:.2} ms | {:.2} ms |",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        );
    }
    Ok(())
}
