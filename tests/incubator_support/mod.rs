//! Shared setup of the incubator tests: the platform (`dtaas up` on fresh nats-server
//! and mosquitto), DT functions started under the process contract, `ts.query` polling.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use dtaas_test_harness::{Mosquitto, NatsServer, Process};
use serde_json::{json, Value};
use tokio::time::timeout;

/// Bound of every wait for data to arrive.
pub const WAIT: Duration = Duration::from_secs(120);

/// `examples/incubator/`.
pub fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/incubator")
}

/// nats-server, mosquitto and `dtaas up` for one test, as user `user`.
pub struct Platform {
    pub nats: NatsServer,
    pub broker: Mosquitto,
    pub data: tempfile::TempDir,
    pub env: Vec<(&'static str, String)>,
    pub up: Process,
}

impl Platform {
    pub fn start(user: &str) -> Self {
        let nats = NatsServer::start().unwrap();
        let broker = Mosquitto::start().unwrap();
        let data = tempfile::tempdir().unwrap();
        let env = vec![
            ("DTAAS_NATS_URL", nats.url()),
            ("DTAAS_MQTT_URL", broker.url()),
            ("DTAAS_DATA_DIR", data.path().display().to_string()),
            ("DTAAS_USER", user.to_owned()),
        ];
        let up = spawn(data.path(), "up", &["up"], &env);
        Self {
            nats,
            broker,
            data,
            env,
            up,
        }
    }

    pub fn dir(&self) -> &Path {
        self.data.path()
    }

    /// Runs `dtaas <args>` in the background.
    pub fn dtaas(&self, name: &str, args: &[&str]) -> Process {
        spawn(self.dir(), name, args, &self.env)
    }

    /// `dtaas pt send inc1 <command> <payload>` to completion; its output.
    pub fn send(&self, command: &str, payload: &str) -> String {
        let name = format!("send-{command}-{}", uuid::Uuid::new_v4().simple());
        let mut process = self.dtaas(
            &name,
            &["pt", "send", "inc1", command, payload, "--wait", "60s"],
        );
        let status = process.wait(WAIT).unwrap();
        let log = process.log();
        assert_eq!(status, Some(0), "dtaas pt send failed:\n{log}");
        log
    }

    /// Starts a function of `examples/incubator/library/functions` as exec would: the
    /// process contract's environment, inputs as `(NAME, subject)`.
    pub fn function(
        &self,
        dt: &str,
        role: &str,
        script: &str,
        inputs: &[(&str, String)],
        params: &[(&str, Value)],
        state: Option<&Path>,
    ) -> Process {
        let script = example_dir().join("library/functions").join(script);
        let params: serde_json::Map<String, Value> = params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        let mut env: Vec<(String, String)> = vec![
            ("DTAAS_NATS_URL".into(), self.nats.url()),
            ("DTAAS_DT".into(), dt.into()),
            ("DTAAS_ROLE".into(), role.into()),
            ("DTAAS_PARAMS".into(), json!(params).to_string()),
            (
                "DTAAS_WORKDIR".into(),
                script.parent().unwrap().display().to_string(),
            ),
        ];
        env.extend(
            inputs
                .iter()
                .map(|(k, v)| (format!("DTAAS_IN_{k}"), v.clone())),
        );
        if let Some(state) = state {
            env.push(("DTAAS_STATE".into(), state.display().to_string()));
        }
        let name = format!("{role}-{}", uuid::Uuid::new_v4().simple());
        Process::spawn(
            &name,
            "python3".as_ref(),
            vec!["-u".into(), script.into()],
            env.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
            self.dir().join(format!("{name}.log")),
        )
        .unwrap()
    }
}

fn spawn(dir: &Path, name: &str, args: &[&str], env: &[(&str, String)]) -> Process {
    Process::spawn(
        name,
        env!("CARGO_BIN_EXE_dtaas").as_ref(),
        args.iter().map(Into::into).collect(),
        env.iter().map(|(k, v)| ((*k).into(), v.into())).collect(),
        dir.join(format!("{name}.log")),
    )
    .unwrap()
}

/// The last lines of each process's log.
pub fn tails(logs: &[&Process]) -> String {
    logs.iter()
        .map(|p| p.log_tail())
        .collect::<Vec<_>>()
        .join("\n----\n")
}

/// Asks `ts.query` for all points of `pt`/`measurement` (simulated time may run ahead
/// of the wall clock, so the range is wide) until `accept` likes the reply.
pub async fn query_until(
    client: &async_nats::Client,
    pt: &str,
    measurement: &str,
    accept: impl Fn(&Value) -> bool,
    logs: &[&Process],
) -> Value {
    let subject = dtaas_schemas::subject::request("alice", "ts", "query").unwrap();
    let query = json!({"pt": pt, "measurement": measurement, "from": "-1h",
        "to": "2100-01-01T00:00:00Z", "limit": 1000000});
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
    panic!(
        "ts.query {pt}/{measurement} never satisfied; last reply: {last}\n{}",
        tails(logs)
    );
}

/// The points of `field` in a `ts.query` reply: (ts, value).
pub fn points(reply: &Value, field: &str) -> Vec<(i64, f64)> {
    reply["series"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["field"] == field))
        .and_then(|s| s["points"].as_array())
        .map(|points| {
            points
                .iter()
                .filter_map(|p| Some((p[0].as_i64()?, p[1].as_f64()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// The values of `field`.
pub fn values(reply: &Value, field: &str) -> Vec<f64> {
    points(reply, field).into_iter().map(|(_, v)| v).collect()
}

/// The points of `field` after `ts`.
pub fn points_after(reply: &Value, field: &str, ts: i64) -> Vec<(i64, f64)> {
    points(reply, field)
        .into_iter()
        .filter(|(t, _)| *t > ts)
        .collect()
}

/// The newest timestamp of any series in the reply (0 when empty).
pub fn last_ts(reply: &Value) -> i64 {
    reply["series"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["points"].as_array()?.last()?[0].as_i64())
        .max()
        .unwrap_or(0)
}
