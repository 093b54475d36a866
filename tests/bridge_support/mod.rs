//! Shared setup of the bridge tests: servers, the bridge process, readers, publishers.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use dtaas_schemas::{bridge, subject};
use dtaas_test_harness::worker::{spawn_worker, WorkerEnv};
use dtaas_test_harness::{Mosquitto, NatsServer, Process, TcpProxy};
use futures::StreamExt;

mod device;
#[allow(unused_imports)]
pub use device::*;
mod store;
#[allow(unused_imports)]
pub use store::*;

/// Every await of a test step is bounded by this.
pub const STEP: Duration = Duration::from_secs(30);

/// Runs `f` under `limit`, failing with `what` when it takes longer.
pub async fn within<T>(limit: Duration, what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("timed out after {limit:?}: {what}"))
}

/// The MQTT broker of a test.
pub enum Broker {
    /// mosquitto 2.0: MQTT 5 and 3.1.1.
    Mosquitto(Mosquitto),
    /// A nats-server of its own (not the bridge's NATS) whose built-in MQTT listener
    /// speaks MQTT 3.1.1 only.
    NatsMqtt(NatsServer),
}

impl Broker {
    /// A new mosquitto.
    pub fn mosquitto() -> Broker {
        Broker::Mosquitto(Mosquitto::start().expect("mosquitto"))
    }

    /// A new nats-server with its MQTT 3.1.1 listener.
    pub fn nats_mqtt() -> Broker {
        Broker::NatsMqtt(NatsServer::start_with_mqtt().expect("nats-server with MQTT"))
    }

    /// The MQTT port.
    pub fn port(&self) -> u16 {
        match self {
            Broker::Mosquitto(m) => m.port,
            Broker::NatsMqtt(n) => n.mqtt_port.expect("MQTT listener"),
        }
    }

    /// `mqtt://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port())
    }

    /// The mosquitto; panics for another broker.
    pub fn mosquitto_mut(&mut self) -> &mut Mosquitto {
        match self {
            Broker::Mosquitto(m) => m,
            Broker::NatsMqtt(_) => panic!("the broker is not mosquitto"),
        }
    }

    /// Everything the broker logged so far.
    pub fn log(&self) -> String {
        match self {
            Broker::Mosquitto(m) => m.process().log(),
            Broker::NatsMqtt(n) => n.process().log(),
        }
    }
}

/// The servers, the bridge and a NATS client of one test.
pub struct Setup {
    pub nats: NatsServer,
    pub broker: Broker,
    pub bridge: Process,
    /// The proxy the bridge reaches the broker through, if any (`start_through_proxy`).
    pub proxy: Option<TcpProxy>,
    pub env: WorkerEnv,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub dir: tempfile::TempDir,
}

impl Setup {
    /// nats-server, mosquitto and `dtaas bridge`, ready (subscribed).
    pub async fn start(extra: &[(&str, &str)]) -> Setup {
        Self::start_with(Broker::mosquitto(), extra, None).await
    }

    /// nats-server and `dtaas bridge` on `broker`, ready (subscribed); `config` is the
    /// text of a configuration file (`DTAAS_CONFIG`), if any.
    pub async fn start_with(broker: Broker, extra: &[(&str, &str)], config: Option<&str>) -> Setup {
        let setup = Self::spawn(broker, extra, config).await;
        setup.wait_ready().await;
        setup
    }

    /// nats-server, mosquitto and `dtaas bridge` reaching mosquitto through a
    /// `TcpProxy` (`setup.proxy`), ready (subscribed). Other clients (devices) use
    /// mosquitto directly.
    pub async fn start_through_proxy(extra: &[(&str, &str)]) -> Setup {
        let broker = Broker::mosquitto();
        let proxy = TcpProxy::start(broker.port()).expect("TCP proxy");
        let setup = Self::spawn_at(broker, Some(proxy), extra, None).await;
        setup.wait_ready().await;
        setup
    }

    /// Like `start_with`, without waiting for the bridge to be ready.
    pub async fn spawn(broker: Broker, extra: &[(&str, &str)], config: Option<&str>) -> Setup {
        Self::spawn_at(broker, None, extra, config).await
    }

    /// Spawns the bridge against `broker`, through `proxy` if there is one.
    async fn spawn_at(
        broker: Broker,
        proxy: Option<TcpProxy>,
        extra: &[(&str, &str)],
        config: Option<&str>,
    ) -> Setup {
        let nats = NatsServer::start().expect("nats-server");
        let dir = tempfile::tempdir().unwrap();
        let mut extra: Vec<(String, String)> = extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(config) = config {
            let path = dir.path().join("dtaas.toml");
            std::fs::write(&path, config).unwrap();
            extra.push(("DTAAS_CONFIG".into(), path.display().to_string()));
        }
        let env = WorkerEnv {
            nats_url: nats.url(),
            mqtt_url: proxy
                .as_ref()
                .map_or_else(|| broker.url(), TcpProxy::mqtt_url),
            data_dir: dir.path().join("data"),
            extra,
        };
        let bridge = spawn_worker(env!("CARGO_BIN_EXE_dtaas").as_ref(), "bridge", &env)
            .expect("dtaas bridge");
        let client = within(STEP, "connect", async_nats::connect(nats.url()))
            .await
            .unwrap();
        let js = jetstream::new(client.clone());
        Setup {
            nats,
            broker,
            bridge,
            proxy,
            env,
            client,
            js,
            dir,
        }
    }

    /// Waits until the bridge answers `bridge.stats` with its subscriptions in place.
    pub async fn wait_ready(&self) {
        let subject = subject::request("test", bridge::SERVICE, bridge::VERB_STATS).unwrap();
        let ready = async {
            loop {
                let reply = tokio::time::timeout(
                    Duration::from_secs(2),
                    self.client.request(subject.clone(), "{}".into()),
                )
                .await;
                if let Ok(Ok(reply)) = reply {
                    let stats: serde_json::Value =
                        serde_json::from_slice(&reply.payload).unwrap_or_default();
                    if stats["mqtt_subscribed"] == true {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(60), ready)
            .await
            .is_err()
        {
            panic!("bridge not ready:\n{}", self.bridge.log_tail());
        }
    }

    /// The bridge's stats.
    pub async fn stats(&self) -> serde_json::Value {
        let subject = subject::request("test", bridge::SERVICE, bridge::VERB_STATS).unwrap();
        let reply = within(STEP, "stats", self.client.request(subject, "{}".into()))
            .await
            .unwrap();
        serde_json::from_slice(&reply.payload).unwrap()
    }
}

/// Every message now in `stream` on `filter`.
pub async fn read_all(
    js: &jetstream::Context,
    stream: &str,
    filter: &str,
) -> Vec<jetstream::Message> {
    let stream = within(STEP, "get stream", js.get_stream(stream))
        .await
        .unwrap();
    let consumer = within(
        STEP,
        "create consumer",
        stream.create_consumer(pull::Config {
            filter_subject: filter.to_owned(),
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    let mut all = Vec::new();
    loop {
        let mut batch = within(
            STEP,
            "fetch",
            consumer
                .fetch()
                .max_messages(1000)
                .expires(Duration::from_millis(500))
                .messages(),
        )
        .await
        .unwrap();
        let before = all.len();
        while let Some(m) = within(STEP, "fetch message", batch.next()).await {
            all.push(m.unwrap());
        }
        if all.len() == before {
            return all;
        }
    }
}

/// Polls `read` until `done` holds for its result, for at most `limit`; returns the
/// last result either way, for the caller's assertion with details.
pub async fn poll_until<T, F, Fut>(limit: Duration, mut read: F, done: impl Fn(&T) -> bool) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let value = read().await;
        if done(&value) || tokio::time::Instant::now() >= deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `mosquitto_pub -q 1`, the independent MQTT client.
pub fn mosquitto_pub(port: u16, topic: &str, message: &str) {
    mosquitto_pub_with(port, &["-q", "1"], topic, message);
}

/// `mosquitto_pub <args> -t topic -m message`.
pub fn mosquitto_pub_with(port: u16, args: &[&str], topic: &str, message: &str) {
    run_mosquitto_pub(port, args, topic, PubInput::Message(message));
}

/// `mosquitto_pub -q 1 -f <file>`: one message of any size (a `-m` argument is
/// limited to 128 KiB by the kernel).
pub fn mosquitto_pub_bytes(port: u16, topic: &str, message: &[u8]) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), message).unwrap();
    run_mosquitto_pub(port, &["-q", "1"], topic, PubInput::File(file.path()));
}

/// `mosquitto_pub <args> -t topic -l`: every line is one message, one connection.
pub fn mosquitto_pub_lines(port: u16, args: &[&str], topic: &str, lines: &[String]) {
    run_mosquitto_pub(port, args, topic, PubInput::Lines(lines));
}

/// What one mosquitto_pub run sends.
enum PubInput<'a> {
    /// One message (`-m`).
    Message(&'a str),
    /// One message a line, on stdin (`-l`).
    Lines(&'a [String]),
    /// One message, the file's bytes (`-f`).
    File(&'a std::path::Path),
}

/// Runs mosquitto_pub with `args` on `topic`, sending `input`.
fn run_mosquitto_pub(port: u16, args: &[&str], topic: &str, input: PubInput<'_>) {
    use std::io::Write;
    let port = port.to_string();
    let mut command = std::process::Command::new("mosquitto_pub");
    command
        .args(["-h", "127.0.0.1", "-p", &port, "-t", topic])
        .args(args);
    match input {
        PubInput::Message(message) => command.args(["-m", message]),
        PubInput::Lines(_) => command.arg("-l").stdin(std::process::Stdio::piped()),
        PubInput::File(path) => command.arg("-f").arg(path),
    };
    let mut child = command
        .spawn()
        .expect("mosquitto_pub is installed (apt-get install mosquitto-clients)");
    if let PubInput::Lines(lines) = input {
        let mut stdin = child.stdin.take().unwrap();
        for line in lines {
            writeln!(stdin, "{line}").unwrap();
        }
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "mosquitto_pub failed for {topic}");
}

/// Publishes `count` QoS 1 messages `{"seq":i,"v":…}` to `dtaas/pt/<pt>/tel/seq` with a
/// persistent session, calling `during(i)` after each; returns once the broker
/// acknowledged every one.
pub async fn publish_sequence(port: u16, pt: &str, count: u64, mut during: impl FnMut(u64)) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
    let mut options = MqttOptions::new(format!("seq-publisher-{pt}"), "127.0.0.1", port);
    options.set_clean_session(false).set_inflight(100);
    let (client, mut eventloop) = AsyncClient::new(options, 200);
    let acked = tokio::spawn(async move {
        let mut acked = 0u64;
        let mut sent = 0u64;
        while acked < count {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(Event::Outgoing(Outgoing::Publish(_))) => sent += 1,
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let _ = sent;
        acked
    });
    let topic = format!("dtaas/pt/{pt}/tel/seq");
    for i in 0..count {
        let body = format!("{{\"seq\":{i},\"v\":{}.5}}", i % 100);
        within(
            STEP,
            "publish",
            client.publish(&topic, QoS::AtLeastOnce, false, body),
        )
        .await
        .unwrap();
        during(i);
    }
    let acked = within(Duration::from_secs(120), "publisher acks", acked)
        .await
        .unwrap();
    assert_eq!(acked, count);
    let _ = client.disconnect().await;
}

/// The `seq` field of every telemetry record of `pt` in `DTAAS_TEL`.
pub async fn sequences(js: &jetstream::Context, pt: &str) -> std::collections::BTreeSet<i64> {
    use dtaas_schemas::telemetry::{FieldValue, TelemetryRecord};
    let filter = subject::telemetry(pt, "seq").unwrap();
    read_all(js, "DTAAS_TEL", &filter)
        .await
        .iter()
        .filter_map(|m| {
            let record: TelemetryRecord = dtaas_schemas::codec::decode(None, &m.payload).ok()?;
            match record.fields.get("seq") {
                Some(FieldValue::I64(i)) => Some(*i),
                _ => None,
            }
        })
        .collect()
}
