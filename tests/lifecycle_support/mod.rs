//! Shared setup of the lifecycle tests: a nats-server, exec nodes, the assets,
//! lifecycle (and historian) workers as `dtaas` processes, assets put through the
//! library, and `dt.*` requests as JSON.

#![allow(dead_code)]

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use crate::exec_support::Cluster;
use dtaas_assets::client::AssetClient;
use dtaas_schemas::asset_api::{self, PutReply, PutRequest};
use dtaas_schemas::subject;
use serde_json::{json, Value};
use tokio::time::timeout;

pub const WAIT: Duration = Duration::from_secs(90);

/// A whole platform without MQTT: nats-server, exec nodes (`exec-<node>`) and the
/// workers named, on the exec tests' [`Cluster`].
pub struct Platform(Cluster);

impl Deref for Platform {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        &self.0
    }
}

impl DerefMut for Platform {
    fn deref_mut(&mut self) -> &mut Cluster {
        &mut self.0
    }
}

impl Platform {
    pub async fn start(nodes: &[&str], workers: &[&str]) -> Self {
        let mut platform = Self(Cluster::empty(WAIT).await);
        for node in nodes {
            // Kept as root: the test's Python (with nats-py) may live under /root.
            platform.spawn(
                &format!("exec-{node}"),
                "exec",
                &[
                    ("DTAAS_EXEC_NODE", node),
                    ("DTAAS_EXEC_RUN_AS", ""),
                    ("DTAAS_EXEC_GRACE", "2s"),
                ],
            );
        }
        for worker in workers {
            platform.spawn(worker, worker, &[]);
        }
        for node in nodes {
            platform.wait_for_node(node).await;
        }
        platform.wait_for("lifecycle", "dt", "list", "dts").await;
        platform
            .wait_for("assets", asset_api::SERVICE, asset_api::VERB_LIST, "assets")
            .await;
        platform
    }

    pub async fn wait_for(&self, name: &str, service: &str, verb: &str, field: &str) {
        if !self.processes.iter().any(|(n, _)| n == name) {
            return;
        }
        let subject = subject::request("probe", service, verb).unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::time::Instant::now() < deadline {
            if let Ok(Ok(reply)) = timeout(
                Duration::from_secs(5),
                self.client.request(subject.clone(), "{}".into()),
            )
            .await
            {
                if serde_json::from_slice::<Value>(&reply.payload)
                    .is_ok_and(|v| v[field].is_array())
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("{name} never answered\n{}", self.logs());
    }

    /// Puts asset `name` of `user` with `files` (path, content, mode), `interface` and
    /// `run` as JSON; answers its address.
    pub async fn put_asset(
        &self,
        user: &str,
        name: &str,
        files: &[(&str, &[u8], u32)],
        interface: Value,
        run: Value,
    ) -> String {
        let client = AssetClient::new(self.client.clone(), user);
        let dir = tempfile::tempdir().unwrap();
        let mut entries = Vec::new();
        for (path, content, mode) in files {
            let local = dir.path().join(path.replace('/', "_"));
            std::fs::write(&local, content).unwrap();
            let file = timeout(WAIT, client.upload_file(&local, path, *mode, &|_| {}))
                .await
                .unwrap()
                .unwrap();
            entries.push(file);
        }
        let request: PutRequest = serde_json::from_value(json!({
            "name": name, "kind": "function", "files": entries,
            "interface": interface, "run": run,
        }))
        .unwrap();
        let reply: PutReply = timeout(WAIT, client.call(asset_api::VERB_PUT, &request))
            .await
            .unwrap()
            .unwrap();
        reply.asset.address()
    }

    /// A `dt.<verb>` request of `user` with a JSON body; the JSON reply (errors too).
    pub async fn dt(&self, user: &str, verb: &str, body: Value) -> Value {
        let subject = subject::request(user, "dt", verb).unwrap();
        let reply = timeout(
            WAIT,
            self.client
                .request(subject.clone(), body.to_string().into()),
        )
        .await
        .unwrap_or_else(|_| panic!("{subject} timed out\n{}", self.logs()))
        .unwrap_or_else(|e| panic!("{subject}: {e}\n{}", self.logs()));
        serde_json::from_slice(&reply.payload).unwrap()
    }

    /// A `dt.<verb>` request that must succeed.
    pub async fn ok(&self, user: &str, verb: &str, body: Value) -> Value {
        let reply = self.dt(user, verb, body.clone()).await;
        assert!(
            reply.get("error").is_none(),
            "dt.{verb} {body}: {reply}\n{}",
            self.logs()
        );
        reply
    }

    /// Polls `dt.get` until `check` accepts the DT.
    pub async fn until(
        &self,
        user: &str,
        id: &str,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let fetch = || self.dt(user, "get", json!({"id": id}));
        poll(self, what, "dt", fetch, check).await
    }
}

/// Asks `fetch` every 200 ms until `check` accepts the answer's `field`, and answers
/// that; after `WAIT` fails with the last answer and the workers' logs.
async fn poll<F: std::future::Future<Output = Value>>(
    p: &Platform,
    what: &str,
    field: &str,
    fetch: impl Fn() -> F,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = Value::Null;
    while tokio::time::Instant::now() < deadline {
        last = fetch().await;
        if check(&last[field]) {
            return last[field].clone();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "{what} did not happen within {WAIT:?}; last: {last}\n{}",
        p.logs()
    );
}

/// Creates and executes alice's DT `id` with one process of `alice/sleeper` (put
/// before); answers the DT once that process runs.
pub async fn run_sleeper(p: &Platform, id: &str) -> Value {
    let config = json!({"id": id, "assets": [{"name": "s", "asset": "sleeper"}]});
    p.ok("alice", "create", json!({ "config": config })).await;
    p.ok("alice", "execute", json!({ "id": id })).await;
    p.until("alice", id, "the sleeper runs", |dt| {
        dt["processes"][0]["status"] == "running"
    })
    .await
}

/// Puts `alice/sleeper`: a shell script that sleeps until it is stopped.
pub async fn put_sleeper(p: &Platform) -> String {
    let run = b"#!/bin/sh\necho sleeping\nexec sleep 600\n";
    p.put_asset(
        "alice",
        "sleeper",
        &[("run.sh", run, 0o755)],
        json!({}),
        json!({"command": ["./run.sh"]}),
    )
    .await
}

/// The pids of a DT's processes from a `dt.get` reply.
pub fn pids(dt: &Value) -> Vec<u32> {
    dt["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["pid"].as_u64())
        .map(|p| p as u32)
        .collect()
}

/// Runs `dtaas <args>` as alice against `p`; (success, stdout, stderr).
pub async fn cli(p: &Platform, args: &[&str]) -> (bool, String, String) {
    let output = timeout(WAIT, dtaas_as_alice(p, args).output())
        .await
        .unwrap_or_else(|_| panic!("dtaas {args:?} timed out"))
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (
        output.status.success(),
        text(&output.stdout),
        text(&output.stderr),
    )
}

/// The `dtaas` command with `args`, as alice on the platform's NATS.
pub fn dtaas_as_alice(p: &Platform, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_dtaas"));
    command
        .args(args)
        .env("DTAAS_NATS_URL", p.nats.url())
        .env("DTAAS_USER", "alice")
        .env_remove("DTAAS_CONFIG");
    command
}

/// `cli` that must succeed; its stdout.
pub async fn cli_ok(p: &Platform, args: &[&str]) -> String {
    let (ok, out, err) = cli(p, args).await;
    assert!(ok, "dtaas {args:?} failed:\n{out}\n{err}\n{}", p.logs());
    out
}

/// A `graph.<verb>` request of alice; the JSON reply.
pub async fn graph(p: &Platform, verb: &str, body: Value) -> Value {
    let subject = dtaas_schemas::subject::request("alice", "graph", verb).unwrap();
    match timeout(
        Duration::from_secs(5),
        p.client.request(subject, body.to_string().into()),
    )
    .await
    {
        Ok(Ok(reply)) => serde_json::from_slice(&reply.payload).unwrap(),
        _ => Value::Null,
    }
}

/// Polls `graph.tree` of `dt` until `check` accepts the tree.
pub async fn tree_until(
    p: &Platform,
    dt: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let what = format!("{what} in the graph");
    poll(
        p,
        &what,
        "tree",
        || graph(p, "tree", json!({ "dt": dt })),
        check,
    )
    .await
}
