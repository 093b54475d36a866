//! `dtaas up` end to end, as a user runs it: every worker answers the service API, a
//! PT's MQTT telemetry becomes queryable, a lifecycle event becomes a composition tree,
//! and SIGTERM stops everything cleanly.

use std::time::Duration;

use dtaas_schemas::codec::Encoding;
use dtaas_schemas::dt_config::DtConfig;
use dtaas_schemas::lifecycle::{LifecycleEvent, LifecycleState};
use dtaas_schemas::subject;
use dtaas_test_harness::{Mosquitto, NatsServer, Process};
use serde_json::{json, Value};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(60);

/// Repeats `request` until `accept` likes the JSON reply, or fails after `WAIT`.
async fn eventually(
    up: &Process,
    client: &async_nats::Client,
    subject: &str,
    body: Value,
    accept: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = Value::Null;
    while tokio::time::Instant::now() < deadline {
        let request = client.request(subject.to_owned(), body.to_string().into());
        if let Ok(Ok(reply)) = timeout(Duration::from_secs(5), request).await {
            last = serde_json::from_slice(&reply.payload).unwrap_or(Value::Null);
            if accept(&last) {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "{subject} never gave the expected answer; last reply: {last}\ndtaas up log:\n{}",
        up.log_tail()
    );
}

/// Publishes `message` on `topic` with QoS 1, as an independent MQTT client would.
fn mosquitto_pub(port: u16, topic: &str, message: &str) {
    let status = std::process::Command::new("mosquitto_pub")
        .args([
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            topic,
            "-m",
            message,
        ])
        .status()
        .expect("mosquitto_pub runs (apt-get install mosquitto-clients)");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn up_runs_every_worker_end_to_end() {
    let nats = NatsServer::start().unwrap();
    let broker = Mosquitto::start().unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut up = Process::spawn(
        "dtaas-up",
        env!("CARGO_BIN_EXE_dtaas").as_ref(),
        vec!["up".into()],
        vec![
            ("DTAAS_NATS_URL".into(), nats.url().into()),
            ("DTAAS_MQTT_URL".into(), broker.url().into()),
            ("DTAAS_DATA_DIR".into(), data.path().as_os_str().to_owned()),
        ],
        data.path().join("up.log"),
    )
    .unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();

    for worker in [
        "dtaas-bridge",
        "dtaas-historian",
        "dtaas-graph",
        "dtaas-assets",
    ] {
        let ping = eventually(
            &up,
            &client,
            &format!("$SRV.PING.{worker}"),
            json!({}),
            |r| r["name"] == worker,
        )
        .await;
        assert_eq!(ping["version"], env!("CARGO_PKG_VERSION"));
    }

    // A PT publishes over MQTT with an independent client; the historian has it.
    mosquitto_pub(
        broker.port,
        "dtaas/pt/inc1/tel/temperature",
        r#"{"temp":21.5}"#,
    );
    let latest_subject = subject::request("alice", "ts", "latest").unwrap();
    let latest = eventually(&up, &client, &latest_subject, json!({"pt": "inc1"}), |r| {
        r["latest"].as_array().is_some_and(|l| !l.is_empty())
    })
    .await;
    assert_eq!(latest["latest"][0]["field"], "temp");
    assert_eq!(latest["latest"][0]["value"], 21.5);

    // Fifty lines of line protocol in one MQTT message travel as one array of records
    // and are all stored.
    let lines: Vec<String> = (0..50)
        .map(|i| {
            format!(
                "env temp={i} {}",
                1_767_225_600_000_000_000i64 + i * 1_000_000_000
            )
        })
        .collect();
    mosquitto_pub(broker.port, "dtaas/pt/inc2/tel/lp", &lines.join("\n"));
    let query_subject = subject::request("alice", "ts", "query").unwrap();
    let query = json!({"pt": "inc2", "measurement": "env", "from": "2026-01-01T00:00:00Z",
        "to": "2026-01-02T00:00:00Z"});
    let series = eventually(&up, &client, &query_subject, query, |r| {
        r["series"][0]["points"].as_array().map_or(0, Vec::len) == 50
    })
    .await;
    assert_eq!(series["series"][0]["points"][49][1], 49.0);

    // A lifecycle event with a configuration; the graph has its composition.
    let config: DtConfig = serde_json::from_value(json!({
        "id": "incubator-1",
        "pt": [{"id": "inc1", "signals": ["temperature"], "commands": ["heater"]}],
        "children": [{"id": "heater-model"}]
    }))
    .unwrap();
    let event = LifecycleEvent {
        dt: "incubator-1".into(),
        from: None,
        to: LifecycleState::Created,
        at: dtaas_schemas::time::now_ns(),
        user: "alice".into(),
        // As events from before owners were recorded: `created` names its owner.
        owner: None,
        config: Some(config),
        config_version: Some(1),
        parent: None,
        fork_of: None,
        detail: None,
    };
    let js = async_nats::jetstream::new(client.clone());
    let body = Encoding::MsgPack.encode(&event).unwrap();
    timeout(WAIT, async {
        js.publish(event.subject().unwrap(), body).await?.await
    })
    .await
    .unwrap()
    .unwrap();
    let tree_subject = subject::request("alice", "graph", "tree").unwrap();
    let tree = eventually(
        &up,
        &client,
        &tree_subject,
        json!({"dt": "incubator-1"}),
        |r| r.get("tree").is_some(),
    )
    .await;
    assert_eq!(tree["tree"]["children"][0]["id"], "heater-model");
    assert_eq!(tree["tree"]["pts"][0]["id"], "inc1");

    // Graceful shutdown on SIGTERM.
    assert_eq!(
        up.stop(),
        Some(0),
        "dtaas up did not exit cleanly:\n{}",
        up.log_tail()
    );
}
