//! Benchmark of the bridge: (a) mosquitto → MQTT subscriber, (b) nats-server's MQTT
//! listener → NATS subscriber, (c) mosquitto → `dtaas bridge` → JetStream; the added
//! latency of (c) over (a) at a steady 2,000 msg/s; the bridge's peak RSS.
//!
//! Run: `cargo bench --bench bridge` (prints a markdown table).

use std::time::{Duration, Instant};

use async_nats::jetstream;
use dtaas_schemas::telemetry::{FieldValue, TelemetryRecord};
use dtaas_test_harness::worker::{spawn_worker, WorkerEnv};
use dtaas_test_harness::{Mosquitto, NatsServer, Process};
use futures::StreamExt;
use rumqttc::v5::mqttbytes::v5::Packet as Packet5;
use rumqttc::v5::mqttbytes::QoS as QoS5;
use rumqttc::{AsyncClient, Event, MqttOptions, QoS};
use tokio::sync::mpsc;

/// Messages per throughput run, unless `DTAAS_BENCH_MESSAGES` says otherwise.
const COUNT: usize = 20_000;

fn count() -> usize {
    std::env::var("DTAAS_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(COUNT)
}
/// Steady rate and duration of the latency runs.
const RATE: u64 = 2_000;
const LATENCY_SECS: u64 = 5;
/// Every await is bounded by this.
const LIMIT: Duration = Duration::from_secs(120);

fn now_ns() -> i64 {
    dtaas_schemas::time::now_ns()
}

/// A 100-byte JSON message carrying its send time and sequence number.
fn body(seq: usize) -> String {
    let mut b = format!("{{\"t\":{},\"seq\":{seq},\"pad\":\"", now_ns());
    while b.len() < 98 {
        b.push('x');
    }
    b.push_str("\"}");
    b
}

/// Publishes `count` QoS 1 messages to `topic`, paced at `rate` per second when given;
/// returns when the broker acknowledged all of them.
async fn publish(port: u16, topic: &str, count: usize, rate: Option<u64>) {
    let mut options = MqttOptions::new(format!("bench-pub-{}", now_ns()), "127.0.0.1", port);
    options
        .set_inflight(1000)
        .set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 1000);
    let acks = tokio::spawn(async move {
        let mut acked = 0;
        while acked < count {
            match eventloop.poll().await {
                Ok(Event::Incoming(rumqttc::Packet::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(e) => panic!("publisher connection failed: {e}"),
            }
        }
    });
    let start = Instant::now();
    for seq in 0..count {
        if let Some(rate) = rate {
            let due = start + Duration::from_nanos(seq as u64 * 1_000_000_000 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        client
            .publish(topic, QoS::AtLeastOnce, false, body(seq))
            .await
            .unwrap();
    }
    tokio::time::timeout(LIMIT, acks).await.unwrap().unwrap();
}

/// An MQTT 5 subscriber (receive maximum 1000) sending each payload's latency.
async fn mqtt_subscriber(port: u16, filter: &str) -> mpsc::UnboundedReceiver<i64> {
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let mut options = MqttOptions::new(format!("bench-sub-{}", now_ns()), "127.0.0.1", port);
    options.set_receive_maximum(Some(1000));
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    let (tx, rx) = mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let mut ready_tx = Some(ready_tx);
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet5::Publish(p))) => {
                    let t = sent_at(&p.payload);
                    if tx.send(now_ns() - t).is_err() {
                        return;
                    }
                }
                Ok(Event::Incoming(Packet5::SubAck(_))) => {
                    if let Some(r) = ready_tx.take() {
                        let _ = r.send(());
                    }
                }
                Ok(_) => {}
                // The broker went away at the end of the run.
                Err(_) => return,
            }
        }
    });
    client.subscribe(filter, QoS5::AtLeastOnce).await.unwrap();
    tokio::time::timeout(LIMIT, ready_rx)
        .await
        .unwrap()
        .unwrap();
    rx
}

fn sent_at(payload: &[u8]) -> i64 {
    let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
    v["t"].as_i64().unwrap()
}

/// Receives `count` latencies; returns the time from `start` to the last one.
async fn collect(
    rx: &mut mpsc::UnboundedReceiver<i64>,
    count: usize,
    start: Instant,
) -> (f64, Vec<i64>) {
    let mut latencies = Vec::with_capacity(count);
    while latencies.len() < count {
        let l = tokio::time::timeout(LIMIT, rx.recv())
            .await
            .unwrap()
            .unwrap();
        latencies.push(l);
    }
    (start.elapsed().as_secs_f64(), latencies)
}

fn percentile(latencies: &mut [i64], p: f64) -> f64 {
    latencies.sort_unstable();
    let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
    latencies[i] as f64 / 1e6
}

/// (a) mosquitto → MQTT subscriber.
async fn run_a(broker: &Mosquitto, count: usize, rate: Option<u64>) -> (f64, Vec<i64>) {
    let mut rx = mqtt_subscriber(broker.port, "bench/a").await;
    let start = Instant::now();
    let publisher = tokio::spawn(publish(broker.port, "bench/a", count, rate));
    let result = collect(&mut rx, count, start).await;
    publisher.await.unwrap();
    result
}

/// (b) nats-server MQTT listener → NATS subscriber.
async fn run_b(nats: &NatsServer, count: usize) -> f64 {
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut sub = client.subscribe("bench.b").await.unwrap();
    client.flush().await.unwrap();
    let start = Instant::now();
    let publisher = tokio::spawn(publish(nats.mqtt_port.unwrap(), "bench/b", count, None));
    for _ in 0..count {
        tokio::time::timeout(LIMIT, sub.next())
            .await
            .unwrap()
            .unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    publisher.await.unwrap();
    elapsed
}

/// (b, persisted) nats-server MQTT listener → a file-backed JetStream stream on the
/// mapped subject: the same persistence class as (c), whose records land in a stream.
async fn run_b_persisted(nats: &NatsServer, count: usize) -> f64 {
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client);
    let mut stream = js
        .get_or_create_stream(jetstream::stream::Config {
            name: "BENCH_B".into(),
            subjects: vec!["bench.bp".into()],
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
        .unwrap();
    let publisher = publish(nats.mqtt_port.unwrap(), "bench/bp", count, None);
    time_until_stored(&mut stream, count, publisher).await
}

/// Seconds from starting `publisher` until `stream` holds `count` more messages.
async fn time_until_stored(
    stream: &mut jetstream::stream::Stream,
    count: usize,
    publisher: impl std::future::Future<Output = ()> + Send + 'static,
) -> f64 {
    let before = stream.info().await.unwrap().state.messages;
    let start = Instant::now();
    let publisher = tokio::spawn(publisher);
    loop {
        let stored = stream.info().await.unwrap().state.messages - before;
        if stored >= count as u64 {
            break;
        }
        assert!(
            start.elapsed() < LIMIT,
            "{} stored only {stored} of {count}",
            stream.cached_info().config.name
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    publisher.await.unwrap();
    elapsed
}

/// (c) mosquitto → bridge → JetStream, throughput: until the stream holds `count` more.
async fn run_c(broker: &Mosquitto, js: &jetstream::Context, count: usize) -> f64 {
    let mut stream = js
        .get_stream(dtaas_schemas::names::STREAM_TELEMETRY)
        .await
        .unwrap();
    let publisher = publish(broker.port, "dtaas/pt/bench/tel/load", count, None);
    time_until_stored(&mut stream, count, publisher).await
}

/// (c) latency at a steady rate: send time → record seen on NATS.
async fn run_c_latency(broker: &Mosquitto, client: &async_nats::Client, count: usize) -> Vec<i64> {
    let mut sub = client.subscribe("dtaas.v1.tel.bench.lat").await.unwrap();
    client.flush().await.unwrap();
    let publisher = tokio::spawn(publish(
        broker.port,
        "dtaas/pt/bench/tel/lat",
        count,
        Some(RATE),
    ));
    let mut latencies = Vec::with_capacity(count);
    while latencies.len() < count {
        let m = tokio::time::timeout(LIMIT, sub.next())
            .await
            .unwrap()
            .unwrap();
        let record: TelemetryRecord = dtaas_schemas::codec::decode(None, &m.payload).unwrap();
        let Some(FieldValue::I64(t)) = record.fields.get("t") else {
            panic!("record without t")
        };
        latencies.push(now_ns() - t);
    }
    publisher.await.unwrap();
    latencies
}

/// CPU seconds (user + system) the process used so far, from /proc.
fn cpu_secs(process: &Process) -> f64 {
    let Some(pid) = process.pid() else { return 0.0 };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

async fn wait_bridge(client: &async_nats::Client, bridge: &Process) {
    let subject = dtaas_schemas::subject::request(
        "bench",
        dtaas_schemas::bridge::SERVICE,
        dtaas_schemas::bridge::VERB_STATS,
    )
    .unwrap();
    let start = Instant::now();
    loop {
        if let Ok(Ok(reply)) = tokio::time::timeout(
            Duration::from_secs(2),
            client.request(subject.clone(), "{}".into()),
        )
        .await
        {
            let v: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap_or_default();
            if v["mqtt_subscribed"] == true {
                return;
            }
        }
        assert!(
            start.elapsed() < LIMIT,
            "bridge not ready:\n{}",
            bridge.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main]
async fn main() {
    let lat_count = (RATE * LATENCY_SECS) as usize;

    let mosquitto = Mosquitto::start().expect("mosquitto");
    // Warm-up, then (a).
    run_a(&mosquitto, 2_000, None).await;
    let count = count();
    let (a_secs, _) = run_a(&mosquitto, count, None).await;
    let (_, mut a_lat) = run_a(&mosquitto, lat_count, Some(RATE)).await;
    eprintln!("(a) done");

    let nats_mqtt = NatsServer::start_with_mqtt().expect("nats-server with MQTT");
    run_b(&nats_mqtt, 2_000).await;
    let b_secs = run_b(&nats_mqtt, count).await;
    run_b_persisted(&nats_mqtt, 2_000).await;
    let bp_secs = run_b_persisted(&nats_mqtt, count).await;
    drop(nats_mqtt);
    eprintln!("(b) done");

    let nats = NatsServer::start().expect("nats-server");
    let dir = tempfile::tempdir().unwrap();
    let env = WorkerEnv {
        nats_url: nats.url(),
        mqtt_url: mosquitto.url(),
        data_dir: dir.path().join("data"),
        extra: vec![("RUST_LOG".into(), "warn".into())],
    };
    let bridge =
        spawn_worker(env!("CARGO_BIN_EXE_dtaas").as_ref(), "bridge", &env).expect("dtaas bridge");
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    wait_bridge(&client, &bridge).await;
    run_c(&mosquitto, &js, 2_000).await;
    let cpu_before = cpu_secs(&bridge);
    let c_secs = run_c(&mosquitto, &js, count).await;
    let c_cpu = cpu_secs(&bridge) - cpu_before;
    let mut c_lat = run_c_latency(&mosquitto, &client, lat_count).await;
    let rss_mib = bridge.peak_rss_kib().unwrap_or(0) as f64 / 1024.0;
    eprintln!("(c) done");

    let (a, b, bp, c) = (
        count as f64 / a_secs,
        count as f64 / b_secs,
        count as f64 / bp_secs,
        count as f64 / c_secs,
    );
    let (a50, a99) = (percentile(&mut a_lat, 0.5), percentile(&mut a_lat, 0.99));
    let (c50, c99) = (percentile(&mut c_lat, 0.5), percentile(&mut c_lat, 0.99));
    println!("| measure | value | target |");
    println!("|---|---|---|");
    println!("| (a) mosquitto → MQTT subscriber | {a:.0} msg/s | |");
    println!(
        "| (b) nats-server MQTT → JetStream stream (same persistence as c) | {bp:.0} msg/s | |"
    );
    println!(
        "| (b core) nats-server MQTT → core NATS subscriber (no persistence) | {b:.0} msg/s | |"
    );
    println!("| (c) mosquitto → dtaas bridge → JetStream | {c:.0} msg/s | |");
    println!("| c/b | {:.2} | ≥ 1.0 |", c / bp);
    println!("| c/(b core) | {:.2} | |", c / b);
    println!("| c/a | {:.2} | ≥ 0.5 |", c / a);
    println!("| (a) latency p50 / p99 at {RATE} msg/s | {a50:.2} / {a99:.2} ms | |");
    println!("| (c) latency p50 / p99 at {RATE} msg/s | {c50:.2} / {c99:.2} ms | |");
    println!(
        "| added latency (c − a) p50 / p99 | {:.2} / {:.2} ms | |",
        c50 - a50,
        c99 - a99
    );
    println!("| bridge peak RSS | {rss_mib:.1} MiB | < 50 MB |");
    println!(
        "| bridge CPU during (c) | {:.1} µs/msg ({c_cpu:.2} s) | |",
        c_cpu * 1e6 / count as f64
    );
    println!("\n{count} messages of 100 bytes, QoS 1, per throughput run; {lat_count} at {RATE} msg/s for latency.");
}
