//! A three-node NATS cluster (`DTAAS_REPLICAS=3`, seeds as a list) loses the
//! `DTAAS_TEL` stream leader while a QoS 1 device sends thousands of timestamped
//! readings through a mosquitto with its default queue limits (it drops beyond 1,000
//! queued messages; its log must show no drop): every reading the broker
//! acknowledged is stored exactly once (counted through `ts.query`), and ingestion
//! resumes within the bound docs/bridge.md states. Two cases: the leader SIGKILLed,
//! and the worst case, the leader moved (step-down) onto the node that holds the
//! bridge's connection and that node SIGKILLed.

mod worker_support;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use dtaas_schemas::names;
use dtaas_test_harness::worker::{spawn_worker, WorkerEnv};
use dtaas_test_harness::{http, Mosquitto, NatsCluster, Process};
use tokio::time::timeout;
use worker_support::request;

/// A generous bound for one step: the machine is small and shared.
const STEP: Duration = Duration::from_secs(30);
const READINGS: u64 = 3000;
/// One reading every 5 ms: 200 readings/s, as in the reproduction.
const PERIOD: Duration = Duration::from_millis(5);
/// The longest the bridge may take nothing into JetStream while readings arrive
/// (docs/bridge.md, "Stream leader change"); generous for a loaded machine.
const RESUME_BOUND: Duration = Duration::from_secs(30);

struct Deployment {
    cluster: NatsCluster,
    broker: Mosquitto,
    bridge: Process,
    _historian: Process,
    client: async_nats::Client,
    js: jetstream::Context,
    _dir: tempfile::TempDir,
}

impl Deployment {
    async fn start() -> Self {
        let cluster = NatsCluster::start(3).expect("three-node cluster");
        let broker = Mosquitto::start_with_default_limits().expect("mosquitto");
        let dir = tempfile::tempdir().unwrap();
        let env = WorkerEnv {
            nats_url: cluster.urls(),
            mqtt_url: broker.url(),
            data_dir: dir.path().join("data"),
            extra: vec![("DTAAS_REPLICAS".into(), "3".into())],
        };
        let binary = Path::new(env!("CARGO_BIN_EXE_dtaas"));
        let bridge = spawn_worker(binary, "bridge", &env).expect("dtaas bridge");
        let historian = spawn_worker(binary, "historian", &env).expect("dtaas historian");
        let seeds: Vec<String> = cluster.nodes.iter().map(|n| n.url()).collect();
        let client = timeout(STEP, async_nats::connect(seeds))
            .await
            .unwrap()
            .unwrap();
        let js = jetstream::new(client.clone());
        let deployment = Self {
            cluster,
            broker,
            bridge,
            _historian: historian,
            client,
            js,
            _dir: dir,
        };
        deployment.wait_ready().await;
        deployment
    }

    async fn request(
        &self,
        service: &str,
        verb: &str,
        body: serde_json::Value,
    ) -> Option<serde_json::Value> {
        request(&self.client, service, verb, body).await
    }

    async fn wait_ready(&self) {
        let ready = async {
            loop {
                let stats = self.request("bridge", "stats", serde_json::json!({})).await;
                let points = self.stored("ready").await;
                if stats.is_some_and(|s| s["mqtt_subscribed"] == true) && points.is_some() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        };
        if timeout(Duration::from_secs(120), ready).await.is_err() {
            panic!("bridge or historian not ready:\n{}", self.bridge.log_tail());
        }
    }

    /// The `seq` of every stored point of `pt`, through `ts.query`.
    async fn stored(&self, pt: &str) -> Option<Vec<i64>> {
        let body = serde_json::json!({"pt": pt, "measurement": "seq", "fields": ["seq"],
            "from": "-1d", "to": "2100-01-01T00:00:00Z", "limit": 1_000_000});
        let reply = self.request("ts", "query", body).await?;
        let series = reply["series"].as_array()?;
        let Some(series) = series.first() else {
            return Some(Vec::new());
        };
        let points: Vec<(i64, serde_json::Value)> =
            serde_json::from_value(series["points"].clone()).ok()?;
        Some(points.iter().filter_map(|(_, v)| seq_of(v)).collect())
    }

    /// The server name of the `DTAAS_TEL` leader.
    async fn tel_leader(&self) -> Option<String> {
        let mut stream = timeout(STEP, self.js.get_stream(names::STREAM_TELEMETRY))
            .await
            .ok()?
            .ok()?;
        let info = timeout(STEP, stream.info()).await.ok()?.ok()?;
        info.cluster.as_ref()?.leader.clone()
    }

    /// The server name of the node that holds the bridge's NATS connection.
    fn bridge_node(&self) -> Option<String> {
        self.cluster.nodes.iter().find_map(|node| {
            let (_, connz) = http::get(node.http_port, "/connz").ok()?;
            connz
                .contains("\"dtaas-bridge\"")
                .then(|| node.name.clone())
        })
    }

    /// Steps the `DTAAS_TEL` leader down until `target` leads it.
    async fn move_leader_to(&self, target: &str) {
        for _ in 0..30 {
            let leader = self.tel_leader().await;
            if leader.as_deref() == Some(target) {
                return;
            }
            let subject = format!("$JS.API.STREAM.LEADER.STEPDOWN.{}", names::STREAM_TELEMETRY);
            let _ = timeout(STEP, self.client.request(subject, "".into())).await;
            // The new leader is elected within a few seconds.
            for _ in 0..40 {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let now = self.tel_leader().await;
                if now.is_some() && now != leader {
                    break;
                }
            }
        }
        panic!("the DTAAS_TEL leader did not move to {target}");
    }
}

/// A stored field value as an integer (the historian returns numbers as JSON).
fn seq_of(value: &serde_json::Value) -> Option<i64> {
    value
        .as_i64()
        .or_else(|| value.as_f64().map(|f| f as i64))
        .or_else(|| value.get("I64").and_then(serde_json::Value::as_i64))
        .or_else(|| value.get("F64").and_then(|f| f.as_f64()).map(|f| f as i64))
}

/// Sends `READINGS` QoS 1 readings `{"seq":i,"ts":…}` (1 ms apart) at 200/s, calling
/// `during(i)` after each; returns how many the broker acknowledged.
async fn publish_readings(port: u16, pt: &str, mut during: impl FnMut(u64)) -> u64 {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let mut options = MqttOptions::new(format!("device-{pt}"), "127.0.0.1", port);
    options.set_clean_session(false).set_inflight(100);
    let (client, mut eventloop) = AsyncClient::new(options, 200);
    let acked = tokio::spawn(async move {
        let mut acked = 0u64;
        while acked < READINGS {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        acked
    });
    let base = dtaas_schemas::time::now_ns() - 3_600_000_000_000;
    let topic = format!("dtaas/pt/{pt}/tel/seq");
    let mut tick = tokio::time::interval(PERIOD);
    for i in 0..READINGS {
        tick.tick().await;
        let ts = base + i as i64 * 1_000_000;
        let body = format!("{{\"seq\":{i},\"ts\":{ts}}}");
        timeout(STEP, client.publish(&topic, QoS::AtLeastOnce, false, body))
            .await
            .unwrap()
            .unwrap();
        during(i);
    }
    let acked = timeout(Duration::from_secs(300), acked)
        .await
        .expect("the broker acknowledged every reading")
        .unwrap();
    let _ = client.disconnect().await;
    acked
}

/// Polls `records_out` of `bridge.stats` and keeps the longest time it stood still
/// while `active` (readings arriving).
fn watch_progress(
    client: async_nats::Client,
    active: Arc<Mutex<bool>>,
) -> tokio::task::JoinHandle<Duration> {
    tokio::spawn(async move {
        let (mut last, mut since, mut longest) = (0u64, Instant::now(), Duration::ZERO);
        while *active.lock().unwrap() {
            if let Some(stats) = request(&client, "bridge", "stats", serde_json::json!({})).await {
                let out = stats["records_out"].as_u64().unwrap_or(0);
                if out != last {
                    last = out;
                    since = Instant::now();
                }
            }
            longest = longest.max(since.elapsed());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        longest
    })
}

/// Runs the readings with node `victim` SIGKILLed after a third of them and started
/// again after two thirds; checks every acknowledged reading is stored once.
async fn survive_losing(mut deployment: Deployment, pt: &str, victim: &str) {
    let active = Arc::new(Mutex::new(true));
    let watcher = watch_progress(deployment.client.clone(), active.clone());
    let port = deployment.broker.port;
    let cluster = &mut deployment.cluster;
    let acked = publish_readings(port, pt, |i| {
        let node = cluster.node_named(victim).expect("the victim is a node");
        if i == READINGS / 3 {
            node.kill();
        } else if i == 2 * READINGS / 3 {
            node.start_again().expect("the node starts again");
        }
    })
    .await;
    *active.lock().unwrap() = false;
    let stalled = timeout(STEP, watcher).await.unwrap().unwrap();
    let expected: BTreeSet<i64> = (0..acked as i64).collect();
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut stored = Vec::new();
    while Instant::now() < deadline {
        stored = deployment.stored(pt).await.unwrap_or_default();
        if stored.len() >= expected.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let unique: BTreeSet<i64> = stored.iter().copied().collect();
    let missing: Vec<&i64> = expected.difference(&unique).take(20).collect();
    eprintln!(
        "{pt}: {acked} acknowledged, {} stored, longest stall {stalled:?}",
        stored.len()
    );
    assert_eq!(acked, READINGS);
    assert!(
        missing.is_empty() && stored.len() == expected.len(),
        "{} stored of {acked}, first missing {missing:?}; bridge log:\n{}",
        stored.len(),
        deployment.bridge.log_tail()
    );
    let broker_log = deployment.broker.process().log();
    assert!(
        !broker_log.contains("being dropped"),
        "the broker dropped messages:\n{broker_log}"
    );
    assert!(
        stalled < RESUME_BOUND,
        "ingestion stood still for {stalled:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn losing_the_telemetry_leader_loses_no_reading() {
    let deployment = Deployment::start().await;
    let leader = deployment
        .tel_leader()
        .await
        .expect("DTAAS_TEL has a leader");
    survive_losing(deployment, "leaderkill", &leader).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn losing_the_leader_that_holds_the_bridge_connection_loses_no_reading() {
    let deployment = Deployment::start().await;
    let node = deployment
        .bridge_node()
        .expect("the bridge is connected to a node");
    deployment.move_leader_to(&node).await;
    survive_losing(deployment, "worstcase", &node).await;
}
