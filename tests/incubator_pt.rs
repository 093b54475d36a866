//! The simulated incubator (`dtaas pt sim`) as a PT on real mosquitto and nats-server
//! behind `dtaas up`: its samples are stored with the INTO-CPS fields, and commands sent
//! with `dtaas pt send` reach it, change it and end `acknowledged` in the ledger.

use std::time::Duration;

use dtaas_schemas::subject;
use dtaas_test_harness::{Mosquitto, NatsServer, Process};
use serde_json::{json, Value};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(90);

fn dtaas(name: &str, args: &[&str], env: &[(&str, String)], dir: &std::path::Path) -> Process {
    Process::spawn(
        name,
        env!("CARGO_BIN_EXE_dtaas").as_ref(),
        args.iter().map(Into::into).collect(),
        env.iter().map(|(k, v)| ((*k).into(), v.into())).collect(),
        dir.join(format!("{name}.log")),
    )
    .unwrap()
}

/// Asks `ts.query` until `accept` likes the reply.
async fn query_until(
    client: &async_nats::Client,
    query: Value,
    accept: impl Fn(&Value) -> bool,
    logs: &[&Process],
) -> Value {
    let subject = subject::request("alice", "ts", "query").unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = Value::Null;
    while tokio::time::Instant::now() < deadline {
        let request = client.request(subject.clone(), query.to_string().into());
        if let Ok(Ok(reply)) = timeout(Duration::from_secs(5), request).await {
            last = serde_json::from_slice(&reply.payload).unwrap_or(Value::Null);
            if accept(&last) {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let logs: Vec<String> = logs.iter().map(|p| p.log_tail()).collect();
    panic!(
        "ts.query never satisfied; last reply: {last}\nlogs:\n{}",
        logs.join("\n")
    );
}

/// The values of `field` in a `ts.query` reply.
fn values(reply: &Value, field: &str) -> Vec<f64> {
    reply["series"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["field"] == field))
        .and_then(|s| s["points"].as_array())
        .map(|points| points.iter().filter_map(|p| p[1].as_f64()).collect())
        .unwrap_or_default()
}

/// Runs `dtaas pt send` to completion and returns its output.
fn send(env: &[(&str, String)], dir: &std::path::Path, command: &str, payload: &str) -> String {
    let mut process = dtaas(
        &format!("send-{command}"),
        &["pt", "send", "inc1", command, payload, "--wait", "60s"],
        env,
        dir,
    );
    let status = process.wait(WAIT).unwrap();
    let log = process.log();
    assert_eq!(status, Some(0), "dtaas pt send failed:\n{log}");
    log
}

#[tokio::test(flavor = "multi_thread")]
async fn simulated_incubator_publishes_samples_and_obeys_commands() {
    let nats = NatsServer::start().unwrap();
    let broker = Mosquitto::start().unwrap();
    let data = tempfile::tempdir().unwrap();
    let env = vec![
        ("DTAAS_NATS_URL", nats.url()),
        ("DTAAS_MQTT_URL", broker.url()),
        ("DTAAS_DATA_DIR", data.path().display().to_string()),
        ("DTAAS_USER", "alice".to_owned()),
    ];
    let up = dtaas("up", &["up"], &env, data.path());
    let sim = dtaas(
        "sim",
        &[
            "pt",
            "sim",
            "--time-scale",
            "30",
            "--seed",
            "7",
            "--noise",
            "0.05",
        ],
        &env,
        data.path(),
    );
    let client = async_nats::connect(nats.url()).await.unwrap();

    // Samples are simulated time, which runs ahead of the wall clock: query a wide range.
    let query = json!({"pt": "inc1", "measurement": "state", "from": "-1h",
        "to": "2100-01-01T00:00:00Z", "limit": 100000});
    let reply = query_until(
        &client,
        query.clone(),
        |r| values(r, "t2").len() >= 20,
        &[&up, &sim],
    )
    .await;
    let fields: Vec<&str> = reply["series"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["field"].as_str())
        .collect();
    for field in [
        "t1",
        "t2",
        "t3",
        "average_temperature",
        "heater_on",
        "fan_on",
        "controller_state",
        "temperature_desired",
        "heating_time",
        "heating_gap",
        "lower_bound",
    ] {
        assert!(fields.contains(&field), "no field {field} in {fields:?}");
    }
    // Three simulated seconds between samples, and the box warming from the room.
    let ts: Vec<i64> = reply["series"][0]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_i64().unwrap())
        .collect();
    assert_eq!(ts[1] - ts[0], 3_000_000_000);
    let box_t = values(&reply, "average_temperature");
    assert!(box_t.last().unwrap() > &box_t[0], "{box_t:?}");

    // A controller command is applied and acknowledged; a refused one is acknowledged too.
    let out = send(&env, data.path(), "controller", r#"{"heating_time":40}"#);
    assert!(out.contains("acknowledged"), "{out}");
    query_until(
        &client,
        query.clone(),
        |r| values(r, "heating_time").last() == Some(&40.0),
        &[&up, &sim],
    )
    .await;
    let out = send(&env, data.path(), "lid", r#"{"open":true}"#);
    assert!(out.contains("acknowledged"), "{out}");
    let out = send(&env, data.path(), "controller", r#"{"heating_time":0}"#);
    assert!(out.contains("acknowledged"), "{out}");
    assert!(
        sim.log().contains("heating_time must lie in"),
        "{}",
        sim.log()
    );

    let mut up = up;
    let mut sim = sim;
    assert_eq!(sim.stop(), Some(0), "{}", sim.log_tail());
    assert_eq!(up.stop(), Some(0), "{}", up.log_tail());
}
