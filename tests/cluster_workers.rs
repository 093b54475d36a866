//! The consumers of the worker kit (historian, graph) and their request endpoints on a
//! three-node cluster (`DTAAS_REPLICAS=3`, seeds as a list) through JetStream leader
//! changes: the leaders of both streams and both durables stepped down until they are
//! on the node that holds the graph's connection, then that node SIGKILLed and started
//! again five seconds later, while events and readings flow. Counted
//! as a user counts them (`graph.history` transitions, `ts.query` points): every one
//! stored once, the workers never restarted (same pid), redeliveries bounded, and
//! `ts.query` / `graph.history` answer again within seconds. Also: a worker started
//! while the cluster has no JetStream meta leader waits and starts once it has one.

mod worker_support;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull};
use dtaas_schemas::lifecycle::{LifecycleEvent, LifecycleState};
use dtaas_schemas::names::{header, STREAM_EVENTS, STREAM_TELEMETRY};
use dtaas_schemas::telemetry::{FieldValue, TelemetryRecord};
use dtaas_test_harness::worker::{spawn_worker, WorkerEnv};
use dtaas_test_harness::{NatsCluster, Process};
use tokio::time::timeout;
use worker_support::{request, wait_for_service};

/// A generous bound for one step: the machine is small and shared.
const WAIT: Duration = Duration::from_secs(60);
/// One event and one reading every 10 ms (fewer when acks are slow).
const PERIOD: Duration = Duration::from_millis(10);
/// How long after losing a node `ts.query` and `graph.history` must answer again.
const ANSWER_BOUND: Duration = Duration::from_secs(15);
const GRAPH_DURABLE: &str = "graph";
const HISTORIAN_DURABLE: &str = "historian-embedded";

/// 2026-01-01T00:00:00Z in ns: the readings' and transitions' time origin.
const T0: i64 = 1_767_225_600_000_000_000;

fn env(cluster: &NatsCluster, dir: &Path) -> WorkerEnv {
    WorkerEnv {
        nats_url: cluster.urls(),
        mqtt_url: "mqtt://127.0.0.1:1".into(),
        data_dir: dir.to_owned(),
        extra: vec![("DTAAS_REPLICAS".into(), "3".into())],
    }
}

fn spawn(worker: &str, env: &WorkerEnv) -> Process {
    spawn_worker(Path::new(env!("CARGO_BIN_EXE_dtaas")), worker, env).expect(worker)
}

async fn connect(cluster: &NatsCluster) -> async_nats::Client {
    let seeds: Vec<String> = cluster.nodes.iter().map(|n| n.url()).collect();
    timeout(WAIT, async_nats::connect(seeds))
        .await
        .unwrap()
        .unwrap()
}

/// A `dtaas.v1.test.<service>.<verb>` answer that is not an error reply.
async fn answer(
    client: &async_nats::Client,
    service: &str,
    verb: &str,
    body: serde_json::Value,
) -> Option<serde_json::Value> {
    let value = request(client, service, verb, body).await?;
    value.get("error").is_none().then_some(value)
}

/// The seq of every reading of PT `ride`, through `ts.query`.
async fn points(client: &async_nats::Client) -> Option<Vec<i64>> {
    let body = serde_json::json!({"pt": "ride", "measurement": "seq", "fields": ["seq"],
        "from": "2025-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z", "limit": 1_000_000});
    let reply = answer(client, "ts", "query", body).await?;
    let Some(series) = reply["series"].as_array()?.first() else {
        return Some(Vec::new());
    };
    let points: Vec<(i64, serde_json::Value)> =
        serde_json::from_value(series["points"].clone()).ok()?;
    Some(
        points
            .iter()
            .filter_map(|(_, v)| v.as_f64())
            .map(|v| v as i64)
            .collect(),
    )
}

/// The `at` of every transition of DT `ride`, through `graph.history`.
async fn transitions(client: &async_nats::Client) -> Option<Vec<i64>> {
    let body = serde_json::json!({"dt": "ride", "limit": 100_000});
    let reply = answer(client, "graph", "history", body).await?;
    let transitions = reply["transitions"].as_array()?;
    Some(
        transitions
            .iter()
            .filter_map(|t| t["at"].as_i64())
            .collect(),
    )
}

/// Publishes `body` to JetStream with `Nats-Msg-Id` `id`, again (same id) until the
/// ack comes: the test's own client rides through the leader changes too.
async fn publish(js: &jetstream::Context, subject: String, id: String, body: Vec<u8>) {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(header::MSG_ID, id.as_str());
        headers.insert(header::CONTENT_TYPE, "application/json");
        let sent = js
            .publish_with_headers(subject.clone(), headers, body.clone().into())
            .await;
        if let Ok(ack) = sent {
            if ack.await.is_ok() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{id} was never acknowledged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Event and reading `i`: DT `ride` moves to executing or saved, PT `ride` reads `i`.
async fn publish_pair(js: &jetstream::Context, i: i64) {
    let (from, to) = if i % 2 == 0 {
        (LifecycleState::Saved, LifecycleState::Executing)
    } else {
        (LifecycleState::Executing, LifecycleState::Saved)
    };
    let event = LifecycleEvent {
        dt: "ride".into(),
        from: Some(from),
        to,
        at: T0 + i * 1_000_000,
        user: "test".into(),
        owner: Some("test".into()),
        config: None,
        config_version: None,
        parent: None,
        fork_of: None,
        detail: None,
    };
    let reading = TelemetryRecord {
        pt: "ride".into(),
        measurement: "seq".into(),
        ts: T0 + i * 1_000_000,
        tags: Default::default(),
        fields: [("seq".to_owned(), FieldValue::I64(i))].into(),
    };
    let event_body = serde_json::to_vec(&event).unwrap();
    let reading_body = serde_json::to_vec(&reading).unwrap();
    tokio::join!(
        publish(js, event.subject().unwrap(), format!("evt-{i}"), event_body),
        publish(
            js,
            reading.subject().unwrap(),
            format!("tel-{i}"),
            reading_body
        ),
    );
}

/// A stream or a durable consumer, whose leader the test moves.
#[derive(Clone, Copy)]
enum Group {
    Stream(&'static str),
    Consumer(&'static str, &'static str),
}

impl Group {
    /// The server name of its leader.
    async fn leader(self, js: &jetstream::Context) -> Option<String> {
        let ask = Duration::from_secs(5);
        let (name, durable) = match self {
            Self::Stream(name) => (name, None),
            Self::Consumer(name, durable) => (name, Some(durable)),
        };
        let mut stream = timeout(ask, js.get_stream(name)).await.ok()?.ok()?;
        let cluster = match durable {
            None => timeout(ask, stream.info())
                .await
                .ok()?
                .ok()?
                .cluster
                .clone(),
            Some(durable) => {
                let mut consumer = timeout(ask, stream.get_consumer::<pull::Config>(durable))
                    .await
                    .ok()?
                    .ok()?;
                timeout(ask, consumer.info())
                    .await
                    .ok()?
                    .ok()?
                    .cluster
                    .clone()
            }
        };
        cluster?.leader
    }

    fn step_down_subject(self) -> String {
        match self {
            Self::Stream(name) => format!("$JS.API.STREAM.LEADER.STEPDOWN.{name}"),
            Self::Consumer(name, durable) => {
                format!("$JS.API.CONSUMER.LEADER.STEPDOWN.{name}.{durable}")
            }
        }
    }

    /// Steps its leader down until `target` leads it.
    async fn move_leader_to(self, client: &async_nats::Client, target: &str) {
        let js = jetstream::new(client.clone());
        for _ in 0..30 {
            let leader = self.leader(&js).await;
            if leader.as_deref() == Some(target) {
                return;
            }
            let _ = timeout(
                Duration::from_secs(5),
                client.request(self.step_down_subject(), "".into()),
            )
            .await;
            // The new leader is elected within a few seconds.
            for _ in 0..40 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let now = self.leader(&js).await;
                if now.is_some() && now != leader {
                    break;
                }
            }
        }
        panic!("the leader did not move to {target}");
    }
}

/// The server name of the node that holds the NATS connection named `name`.
fn node_of(cluster: &NatsCluster, name: &str) -> Option<String> {
    cluster.nodes.iter().find_map(|node| {
        let (_, connz) = dtaas_test_harness::http::get(node.http_port, "/connz").ok()?;
        connz
            .contains(&format!("\"{name}\""))
            .then(|| node.name.clone())
    })
}

/// Deliveries beyond the first of each message of `durable` on `stream`: the
/// consumer's delivery count minus the stream sequence it reached.
async fn redeliveries(js: &jetstream::Context, stream: &str, durable: &str) -> u64 {
    let stream = js.get_stream(stream).await.unwrap();
    let mut consumer = stream.get_consumer::<pull::Config>(durable).await.unwrap();
    let info = consumer.info().await.unwrap();
    info.delivered
        .consumer_sequence
        .saturating_sub(info.delivered.stream_sequence)
}

/// Polls `read` until it gives `count` values, at most `WAIT`; returns the
/// last answer.
async fn wait_for_all<F, Fut>(count: i64, read: F) -> Vec<i64>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<Vec<i64>>>,
{
    let deadline = Instant::now() + WAIT;
    let mut last = Vec::new();
    while Instant::now() < deadline {
        last = read().await.unwrap_or(last);
        if last.len() >= count as usize {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    last
}

#[tokio::test(flavor = "multi_thread")]
async fn graph_and_historian_ride_through_leader_changes() {
    let mut cluster = NatsCluster::start(3).expect("three-node cluster");
    let dir = tempfile::tempdir().unwrap();
    let env = env(&cluster, dir.path());
    let mut historian = spawn("historian", &env);
    let mut graph = spawn("graph", &env);
    let client = connect(&cluster).await;
    let js = jetstream::new(client.clone());
    wait_for_service(&client, "dtaas-historian", &historian).await;
    wait_for_service(&client, "dtaas-graph", &graph).await;
    let pids = (historian.pid(), graph.pid());

    // Events and readings flow from before the leaders move until after the node is back.
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicI64::new(0));
    let publisher = {
        let (stop, published) = (stop.clone(), published.clone());
        // A lost ack is sent again after 2 s (same id), as the workers' publisher does.
        let mut js = jetstream::new(client.clone());
        js.set_timeout(Duration::from_secs(2));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PERIOD);
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                publish_pair(&js, i).await;
                i += 1;
                published.store(i, Ordering::Relaxed);
            }
            i
        })
    };
    // Then the leaders of both streams and both durables step down until they are on
    // the node that holds the graph's connection (the worst case for it).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let victim = node_of(&cluster, "dtaas-graph").expect("the graph is connected");
    for group in [
        Group::Stream(STREAM_EVENTS),
        Group::Stream(STREAM_TELEMETRY),
        Group::Consumer(STREAM_EVENTS, GRAPH_DURABLE),
        Group::Consumer(STREAM_TELEMETRY, HISTORIAN_DURABLE),
    ] {
        group.move_leader_to(&client, &victim).await;
    }
    // Then that node dies, and comes back five seconds later.
    cluster.node_named(&victim).unwrap().kill();
    let killed = Instant::now();
    let at_kill = published.load(Ordering::Relaxed);
    let mut answered = None;
    while killed.elapsed() < WAIT {
        let (p, t) = tokio::join!(points(&client), transitions(&client));
        if p.is_some() && t.is_some() {
            answered = Some(killed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(killed.elapsed())).await;
    cluster.node_named(&victim).unwrap().start_again().unwrap();
    let flowing = Instant::now() + WAIT;
    while published.load(Ordering::Relaxed) < at_kill + 300 && Instant::now() < flowing {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let count = timeout(WAIT, publisher)
        .await
        .expect("every event and reading acknowledged")
        .unwrap();
    assert!(count >= at_kill + 300, "flowing again after the kill");

    let stored = wait_for_all(count, || points(&client)).await;
    let history = wait_for_all(count, || transitions(&client)).await;
    let expected: BTreeSet<i64> = (0..count).collect();
    let expected_at: BTreeSet<i64> = (0..count).map(|i| T0 + i * 1_000_000).collect();
    let tel_again = redeliveries(&js, STREAM_TELEMETRY, HISTORIAN_DURABLE).await;
    let evt_again = redeliveries(&js, STREAM_EVENTS, GRAPH_DURABLE).await;
    eprintln!(
        "killed {victim} after {at_kill} of {count} pairs; endpoints answered after \
         {answered:?}; {} points, {} transitions; redelivered: {tel_again} readings, \
         {evt_again} events",
        stored.len(),
        history.len()
    );
    assert_eq!(
        stored.iter().copied().collect::<BTreeSet<_>>(),
        expected,
        "historian log:\n{}",
        historian.log_tail()
    );
    assert_eq!(stored.len(), count as usize, "every reading once");
    assert_eq!(
        history.iter().copied().collect::<BTreeSet<_>>(),
        expected_at,
        "graph log:\n{}",
        graph.log_tail()
    );
    assert_eq!(history.len(), count as usize, "every transition once");
    let answered = answered.expect("ts.query and graph.history answered again");
    assert!(answered < ANSWER_BOUND, "answered only after {answered:?}");
    assert!(historian.is_running() && graph.is_running());
    assert_eq!((historian.pid(), graph.pid()), pids, "no worker restarted");
    // No storm (everything in flight delivered again and again): fewer redeliveries
    // than half of what was sent.
    assert!(
        tel_again <= count as u64 / 2,
        "{tel_again} readings redelivered"
    );
    assert!(
        evt_again <= count as u64 / 2,
        "{evt_again} events redelivered"
    );
}

/// Waits until `process`'s log has `count` lines containing `text`, at most `WAIT`.
async fn wait_for_log(process: &Process, text: &str, count: usize) {
    let deadline = Instant::now() + WAIT;
    while process.log().matches(text).count() < count && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = process.log();
    assert!(log.matches(text).count() >= count, "no {text:?} in:\n{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_started_without_a_meta_leader_starts_once_there_is_one() {
    let mut cluster = NatsCluster::start(3).expect("three-node cluster");
    // Two of three nodes down: no JetStream meta leader, nothing can be created.
    for node in &mut cluster.nodes[1..] {
        node.kill();
    }
    let dir = tempfile::tempdir().unwrap();
    let mut graph = spawn("graph", &env(&cluster, dir.path()));
    let started = Instant::now();
    let waiting = "Waiting for JetStream to provision.";
    // The first line comes once a request timed out (10 s) or was refused.
    wait_for_log(&graph, waiting, 1).await;
    assert!(graph.log().contains("waiting_for=stream DTAAS_TEL"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(graph.is_running(), "still waiting:\n{}", graph.log_tail());
    let pid = graph.pid();
    // A second node: a meta leader again, but (on nats-server 2.10+) too few peers to
    // place three replicas; then the third.
    cluster.nodes[1].start_again().unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(graph.is_running(), "still waiting:\n{}", graph.log_tail());
    cluster.nodes[2].start_again().unwrap();
    let client = connect(&cluster).await;
    wait_for_service(&client, "dtaas-graph", &graph).await;
    wait_for_log(&graph, "Consuming.", 1).await;
    let log = graph.log();
    eprintln!("graph started after {:?}:\n{log}", started.elapsed());
    assert_eq!(graph.pid(), pid, "the same process started");
    assert!(!log.contains("ERROR"), "{log}");
}
