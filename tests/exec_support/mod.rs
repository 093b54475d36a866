//! Shared setup of the exec tests: a nats-server, exec nodes as `dtaas exec`
//! processes, JSON requests, their events and log lines, what `/proc` says about
//! processes, and checks more than one test file runs.

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use dtaas_schemas::exec::{
    NodeInfo, ProcessEvent, ProcessEventKind, ProcessSpec, RestartPolicy, StartReply, StopReply,
    UsageReply,
};
use dtaas_schemas::subject;
use dtaas_test_harness::worker::{spawn_worker, WorkerEnv};
use dtaas_test_harness::{NatsServer, Process};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::json;
use serde_json::Value;
use tokio::time::timeout;

pub const WAIT: Duration = Duration::from_secs(60);

/// A nats-server and `dtaas` processes on it: exec nodes, and other workers where a
/// test suite adds them (the lifecycle tests' `Platform`).
pub struct Cluster {
    pub nats: NatsServer,
    pub client: async_nats::Client,
    /// (name, process): an exec node by its id, other workers as spawned.
    pub processes: Vec<(String, Process)>,
    pub dir: tempfile::TempDir,
    /// How long waits for a node or a reply may take.
    pub wait: Duration,
}

impl Cluster {
    /// Starts nats-server and the nodes `ids`, and waits until all are registered.
    pub async fn start(ids: &[&str]) -> Self {
        let mut cluster = Self::empty(WAIT).await;
        for id in ids {
            cluster.add_node(id);
        }
        for id in ids {
            cluster.wait_for_node(id).await;
        }
        cluster
    }

    /// nats-server alone, with a data directory; `wait` bounds every wait.
    pub async fn empty(wait: Duration) -> Self {
        let nats = NatsServer::start().expect("nats-server starts");
        let dir = tempfile::tempdir().unwrap();
        // DT processes run as `nobody` when the tests run as root: their work
        // directories' parents must be traversable.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let client = timeout(wait, async_nats::connect(nats.url()))
            .await
            .unwrap()
            .unwrap();
        Self {
            nats,
            client,
            processes: Vec::new(),
            dir,
            wait,
        }
    }

    /// Starts exec node `id`.
    pub fn add_node(&mut self, id: &str) {
        self.add_node_with(id, &[]);
    }

    /// Starts exec node `id` with `extra` environment.
    pub fn add_node_with(&mut self, id: &str, extra: &[(&str, &str)]) {
        let mut env = vec![("DTAAS_EXEC_NODE", id), ("DTAAS_EXEC_GRACE", "2s")];
        env.extend_from_slice(extra);
        self.spawn(id, "exec", &env);
    }

    /// Starts `dtaas <worker>` as `name`, with its own data directory and `extra`
    /// environment.
    pub fn spawn(&mut self, name: &str, worker: &str, extra: &[(&str, &str)]) {
        let data_dir = self.dir.path().join(name);
        std::fs::create_dir_all(&data_dir).unwrap();
        std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let env = WorkerEnv {
            nats_url: self.nats.url(),
            mqtt_url: "mqtt://127.0.0.1:1".into(),
            data_dir,
            extra: extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let process = spawn_worker(env!("CARGO_BIN_EXE_dtaas").as_ref(), worker, &env)
            .unwrap_or_else(|e| panic!("dtaas {worker} starts: {e}"));
        self.processes.push((name.to_owned(), process));
    }

    /// The process spawned as `name`.
    pub fn process(&mut self, name: &str) -> &mut Process {
        &mut self
            .processes
            .iter_mut()
            .find(|(n, _)| n == name)
            .unwrap()
            .1
    }

    /// Exec node `id`.
    pub fn node(&mut self, id: &str) -> &mut Process {
        self.process(id)
    }

    pub fn logs(&self) -> String {
        self.processes
            .iter()
            .map(|(id, p)| format!("--- {id}:\n{}", p.log_tail()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The node's entry in `dtaas-nodes`, once it is there.
    pub async fn wait_for_node(&self, id: &str) -> NodeInfo {
        let js = async_nats::jetstream::new(self.client.clone());
        let deadline = tokio::time::Instant::now() + self.wait;
        while tokio::time::Instant::now() < deadline {
            if let Ok(kv) = js.get_key_value("dtaas-nodes").await {
                if let Ok(Some(entry)) = kv.get(id).await {
                    return serde_json::from_slice(&entry).unwrap();
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("node {id} never registered\n{}", self.logs());
    }

    /// A request with a JSON body; the JSON reply (an error reply too).
    pub async fn request(&self, subject: String, body: Value) -> Value {
        let reply = timeout(
            self.wait,
            self.client
                .request(subject.clone(), body.to_string().into()),
        )
        .await
        .unwrap_or_else(|_| panic!("{subject} timed out\n{}", self.logs()))
        .unwrap_or_else(|e| panic!("{subject}: {e}\n{}", self.logs()));
        serde_json::from_slice(&reply.payload).unwrap()
    }

    /// A node request that must succeed.
    pub async fn node_request<T: DeserializeOwned>(
        &self,
        node: &str,
        verb: &str,
        body: Value,
    ) -> T {
        let reply = self
            .request(subject::exec_node(node, verb).unwrap(), body)
            .await;
        assert!(reply.get("error").is_none(), "{node} {verb}: {reply}");
        serde_json::from_value(reply).unwrap()
    }
}

/// A spec running `sh -c script`.
pub fn shell(dt: &str, role: &str, script: &str) -> ProcessSpec {
    ProcessSpec {
        dt: dt.into(),
        role: role.into(),
        owner: "alice".into(),
        asset: String::new(),
        digest: None,
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        env: Default::default(),
        restart: RestartPolicy::OnFailure,
        cpu: None,
        memory_mb: None,
        cpu_seconds_max: None,
        state: None,
    }
}

/// Every live (not zombie) pid whose process group is `pgid`. Zombies are left out:
/// they run nothing, and whoever inherited them (the machine's init) reaps them.
pub fn group_members(pgid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| proc_stat(*pid).is_some_and(|f| f[2] == pgid.to_string() && f[0] != "Z"))
        .collect()
}

/// The fields of `/proc/<pid>/stat` after the command name (state first).
pub fn proc_stat(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// User + system CPU seconds of `pid` (children it reaped included), from `/proc`.
pub fn proc_cpu_seconds(pid: u32) -> f64 {
    let f = proc_stat(pid).expect("process is there");
    let ticks: u64 = (11..=14).map(|i| f[i].parse::<u64>().unwrap()).sum();
    ticks as f64 / 100.0
}

/// Whether `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|f| f[0] != "Z")
}

/// Open file descriptors and child processes (with threads) of `pid`.
pub fn fds_and_children(pid: u32) -> (usize, usize, usize) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count();
    let children = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| proc_stat(*p).is_some_and(|f| f[1] == pid.to_string()))
        .count();
    (fds, threads, children)
}

/// Polls `condition` until it holds or `WAIT` passed.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen within {WAIT:?}");
}

/// The next event of `kind` from `events`, skipping others.
pub async fn next_event(
    events: &mut async_nats::Subscriber,
    kind: ProcessEventKind,
    cluster: &Cluster,
) -> ProcessEvent {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let message = timeout(left, events.next())
            .await
            .unwrap_or_else(|_| panic!("no {kind:?} event\n{}", cluster.logs()))
            .unwrap();
        let event: ProcessEvent = serde_json::from_slice(&message.payload).unwrap();
        if event.status == kind {
            return event;
        }
    }
}

/// The next log line from `lines` that contains `text`.
pub async fn next_line(lines: &mut async_nats::Subscriber, text: &str, cluster: &Cluster) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let message = timeout(left, lines.next())
            .await
            .unwrap_or_else(|_| panic!("no line with {text:?}\n{}", cluster.logs()))
            .unwrap();
        let line: Value = serde_json::from_slice(&message.payload).unwrap();
        if line["line"].as_str().unwrap().contains(text) {
            return line;
        }
    }
}

/// The groups of `pid` in every hierarchy (`/proc/<pid>/cgroup`).
pub fn cgroups_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default()
}

/// The line in which exec node `node` said which isolation is in effect.
pub fn isolation_line(cluster: &Cluster, node: &str) -> String {
    let log = cluster
        .processes
        .iter()
        .find(|(name, _)| name == node)
        .expect("the node was started")
        .1
        .log();
    log.lines()
        .find(|l| l.contains("Process isolation:"))
        .expect("the node says which isolation is in effect")
        .to_owned()
}

/// A run on `node` starts a child that calls `setsid` (a new session and process
/// group); with cgroups, the child is in the run's groups, its CPU seconds are in
/// `usage.get`, and it is gone, reaped, after `stop`.
pub async fn a_setsid_escapee_is_killed_on_stop(cluster: &Cluster, node: &str) {
    let mut lines = cluster
        .client
        .subscribe(subject::dt_log("esc", "r").unwrap())
        .await
        .unwrap();
    // The escaped child spins, so its CPU seconds show in the run's usage.
    let script = "setsid sh -c 'echo escaped $$; while :; do :; done' & exec sleep 600";
    let started: StartReply = cluster
        .node_request(
            node,
            "start",
            serde_json::to_value(shell("esc", "r", script)).unwrap(),
        )
        .await;
    let line = next_line(&mut lines, "escaped", cluster).await;
    let escaped: u32 = line["line"].as_str().unwrap()[8..].trim().parse().unwrap();
    let stat = proc_stat(escaped).expect("the escaped process runs");
    assert_ne!(
        stat[2],
        started.pid.to_string(),
        "it left the process group"
    );
    eprintln!("{}", isolation_line(cluster, node));
    if !cgroups_of(started.pid).contains("/dtaas-exec-") {
        // No writable cgroup v2 here: the process group is all there is, and a
        // process that leaves it is out of reach (docs/exec.md says so).
        eprintln!("no cgroups on this machine; the escape cannot be caught");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(escaped as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        return;
    }
    assert_eq!(cgroups_of(escaped), cgroups_of(started.pid), "same cgroups");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let spun = proc_cpu_seconds(escaped);
    let _: StopReply = cluster
        .node_request(node, "stop", json!({"dt": "esc"}))
        .await;
    // Accounting counts the escaped child too (the cgroup's `cpu.stat`).
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut used = 0.0;
    while used < spun * 0.9 && tokio::time::Instant::now() < deadline {
        let reply = cluster
            .request(
                subject::request("alice", "usage", "get").unwrap(),
                json!({"from": "-1h"}),
            )
            .await;
        let usage: UsageReply = serde_json::from_value(reply).unwrap();
        used = usage.total.cpu_seconds;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        used >= spun * 0.9 && spun > 0.1,
        "usage {used} CPU s, the escaped child alone spun {spun} s"
    );
    // Gone, zombie included: exec, the subreaper of its runs, reaped it.
    eventually("the escaped process is gone and reaped", || {
        proc_stat(escaped).is_none()
    })
    .await;
    assert!(!alive(started.pid));
}
