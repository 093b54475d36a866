//! Helpers shared by the historian's integration tests: spawning `dtaas historian`,
//! publishing known telemetry, asking `ts.*` requests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::HeaderMap;
use dtaas_schemas::codec::Encoding;
use dtaas_schemas::names::header;
use dtaas_schemas::{subject, FieldValue, TelemetryRecord};
use dtaas_test_harness::Process;
use serde_json::Value;

pub mod picky;

/// A generous bound for every await: the machine is small and shared.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// 2026-01-01T00:00:00Z in ns: the base of known data.
pub const BASE_NS: i64 = 1_767_225_600_000_000_000;

/// Starts `dtaas historian` against `nats_url` with its data in `data_dir`.
pub fn spawn_historian(nats_url: &str, data_dir: &Path, extra: &[(&str, &str)]) -> Process {
    let mut envs: Vec<(OsString, OsString)> = vec![
        ("DTAAS_NATS_URL".into(), nats_url.into()),
        ("DTAAS_DATA_DIR".into(), data_dir.into()),
        ("RUST_LOG".into(), "info".into()),
    ];
    envs.extend(extra.iter().map(|(k, v)| ((*k).into(), (*v).into())));
    Process::spawn(
        "dtaas historian",
        Path::new(env!("CARGO_BIN_EXE_dtaas")),
        vec!["historian".into()],
        envs,
        data_dir.join("historian.log"),
    )
    .expect("spawn dtaas historian")
}

/// Starts `dtaas historian` with `toml` as its configuration file.
pub fn spawn_historian_with_config(nats_url: &str, data_dir: &Path, toml: &str) -> Process {
    let config = data_dir.join("dtaas.toml");
    std::fs::write(&config, toml).expect("write dtaas.toml");
    let config = config.display().to_string();
    spawn_historian(nats_url, data_dir, &[("DTAAS_CONFIG", &config)])
}

/// Polls the durable until nothing is left to deliver or acknowledge; returns its ack
/// floor's stream sequence.
pub async fn wait_all_acknowledged(js: &jetstream::Context, durable: &str) -> u64 {
    let done = async {
        loop {
            let consumer: Result<jetstream::consumer::PullConsumer, _> = js
                .get_consumer_from_stream(durable, dtaas_schemas::names::STREAM_TELEMETRY)
                .await;
            if let Ok(mut consumer) = consumer {
                let info = consumer.info().await.expect("consumer info");
                if info.num_pending == 0 && info.num_ack_pending == 0 {
                    return info.ack_floor.stream_sequence;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(TIMEOUT, done)
        .await
        .expect("everything acknowledged in time")
}

/// Connects a test client and creates the streams the way workers do.
pub async fn connect(url: &str) -> (async_nats::Client, jetstream::Context) {
    let client = tokio::time::timeout(TIMEOUT, async_nats::connect(url))
        .await
        .expect("connect in time")
        .expect("connect");
    let js = jetstream::new(client.clone());
    tokio::time::timeout(TIMEOUT, dtaas_runtime::provision::all(&js, 1))
        .await
        .expect("provision in time")
        .expect("provision");
    (client, js)
}

/// The record number `i` of a known series: 1 s apart from `BASE_NS`, temp = i.
pub fn record(pt: &str, measurement: &str, i: i64) -> TelemetryRecord {
    TelemetryRecord {
        pt: pt.into(),
        measurement: measurement.into(),
        ts: BASE_NS + i * 1_000_000_000,
        tags: BTreeMap::from([("site".into(), "lab".into())]),
        fields: BTreeMap::from([
            ("temp".into(), FieldValue::F64(i as f64)),
            ("state".into(), FieldValue::Str(format!("s{i}"))),
        ]),
    }
}

/// Publishes `records` to JetStream (MessagePack, with `Nats-Msg-Id`) and waits for
/// every acknowledgement.
pub async fn publish(js: &jetstream::Context, records: impl IntoIterator<Item = TelemetryRecord>) {
    publish_in_arrays(js, &records.into_iter().collect::<Vec<_>>(), 1).await;
}

/// Like `publish`, with `per_message` records in each message: a MessagePack array
/// (a single record stays a map). Records of one message must share PT and measurement.
pub async fn publish_in_arrays(
    js: &jetstream::Context,
    records: &[TelemetryRecord],
    per_message: usize,
) {
    let mut acks = Vec::new();
    for chunk in records.chunks(per_message) {
        let first = &chunk[0];
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, Encoding::MsgPack.content_type());
        let id = format!(
            "{}-{}-{}-{}",
            first.pt,
            first.measurement,
            first.ts,
            chunk.len()
        );
        headers.insert(header::MSG_ID, id.as_str());
        let body = match chunk {
            [record] => Encoding::MsgPack.encode(record).unwrap(),
            array => Encoding::MsgPack.encode(array).unwrap(),
        };
        let subject = subject::telemetry(&first.pt, &first.measurement).unwrap();
        let ack = tokio::time::timeout(TIMEOUT, js.publish_with_headers(subject, headers, body))
            .await
            .expect("publish in time")
            .expect("publish");
        acks.push(ack);
        if acks.len() >= 500 {
            for ack in acks.drain(..) {
                tokio::time::timeout(TIMEOUT, ack)
                    .await
                    .expect("ack in time")
                    .expect("ack");
            }
        }
    }
    for ack in acks {
        tokio::time::timeout(TIMEOUT, ack)
            .await
            .expect("ack in time")
            .expect("ack");
    }
}

/// Sends a JSON request to `dtaas.v1.test.ts.<verb>` and returns the reply body.
pub async fn ts(client: &async_nats::Client, verb: &str, body: Value) -> Value {
    let subject = subject::request("test", "ts", verb).unwrap();
    let reply = tokio::time::timeout(
        TIMEOUT,
        client.request(subject, serde_json::to_vec(&body).unwrap().into()),
    )
    .await
    .expect("reply in time")
    .expect("reply");
    serde_json::from_slice(&reply.payload).expect("JSON reply")
}

/// Like `ts`, but retries until the historian's service answers (it may still start).
pub async fn ts_ready(client: &async_nats::Client, verb: &str, body: Value) -> Value {
    let subject = subject::request("test", "ts", verb).unwrap();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let request = client.request(subject.clone(), serde_json::to_vec(&body).unwrap().into());
        if let Ok(Ok(reply)) = tokio::time::timeout(Duration::from_secs(5), request).await {
            return serde_json::from_slice(&reply.payload).expect("JSON reply");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ts.{verb} never answered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The `temp` values of `pt`/`measurement` over the whole known range, raw.
pub async fn temps(client: &async_nats::Client, pt: &str, measurement: &str) -> Vec<i64> {
    let reply = ts_ready(
        client,
        "query",
        serde_json::json!({"pt": pt, "measurement": measurement, "fields": ["temp"],
            "from": "2025-12-31T00:00:00Z", "to": "2026-12-31T00:00:00Z", "limit": 1_000_000}),
    )
    .await;
    let points = reply["series"][0]["points"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    points
        .iter()
        .map(|p| p[1].as_f64().unwrap() as i64)
        .collect()
}

/// Polls `temps` until `expected` values are stored (or the timeout passes).
pub async fn wait_for_count(
    client: &async_nats::Client,
    pt: &str,
    measurement: &str,
    expected: usize,
    timeout: Duration,
) -> Vec<i64> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let values = temps(client, pt, measurement).await;
        if values.len() >= expected || tokio::time::Instant::now() >= deadline {
            return values;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Asserts `values` are exactly 0..n, each once.
pub fn assert_exactly_once(values: &[i64], n: i64) {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let expected: Vec<i64> = (0..n).collect();
    if sorted != expected {
        let missing = expected
            .iter()
            .filter(|v| sorted.binary_search(v).is_err())
            .count();
        panic!(
            "expected each of 0..{n} once; got {} values, {missing} missing",
            values.len()
        );
    }
}
