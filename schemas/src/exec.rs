//! The exec contract: nodes in KV `dtaas-nodes`, node requests
//! (`dtaas.v1.exec.<node>.<verb>`), process events (`dtaas.v1.evt.proc.<dt>.<status>`),
//! log lines (`dtaas.v1.dt.<dt>.log.<role>`) and usage samples for accounting.
//!
//! Lifecycle places processes on nodes from `dtaas-nodes` and talks to one node by its
//! id; exec supervises them. Changes to this file stay additive (new optional fields).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How often a node rewrites its `NodeInfo` in `dtaas-nodes`.
pub const HEARTBEAT_INTERVAL_MS: u64 = 2_000;
/// A node whose `heartbeat_at` is older than this is gone: lifecycle places its
/// processes elsewhere.
pub const NODE_STALE_AFTER_MS: u64 = 10_000;

/// The event kind of process events: `dtaas.v1.evt.proc.<dt>.<status>`.
pub const EVENT_KIND: &str = "proc";

/// Node verbs: `dtaas.v1.exec.<node>.<verb>`.
pub const VERB_START: &str = "start";
pub const VERB_STOP: &str = "stop";
pub const VERB_LIST: &str = "list";
pub const VERB_LOGS: &str = "logs";

/// The accounting service: `dtaas.v1.<user>.usage.get`.
pub const USAGE_SERVICE: &str = "usage";
pub const USAGE_VERB_GET: &str = "get";

/// An exec node as registered in KV `dtaas-nodes` (key = node id), rewritten every
/// `HEARTBEAT_INTERVAL_MS`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node id: one subject token, unique on the platform.
    pub id: String,
    /// CPUs the node offers to DT processes.
    pub cpus: f64,
    /// Memory the node offers to DT processes, MiB.
    pub memory_mb: u64,
    /// Labels placement constraints match (`C_i.constraints`), e.g. `gpu = "yes"`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Nanoseconds since the Unix epoch of the last heartbeat.
    pub heartbeat_at: i64,
    /// When this life of the node started (ns since the Unix epoch; 0 from nodes
    /// older than this field): a node that comes back under its id has a new one, so
    /// lifecycle knows the processes of its earlier life are gone.
    #[serde(default)]
    pub started_at: i64,
    /// How many DT processes the node supervises now.
    #[serde(default)]
    pub processes: u32,
    /// CPUs promised to the processes running now (sum of their `cpu`).
    #[serde(default)]
    pub cpus_used: f64,
    /// Memory promised to the processes running now (sum of their `memory_mb`).
    #[serde(default)]
    pub memory_mb_used: u64,
}

impl NodeInfo {
    /// Whether the node missed its heartbeats for `NODE_STALE_AFTER_MS` at `now_ns`.
    pub fn is_stale(&self, now_ns: i64) -> bool {
        now_ns.saturating_sub(self.heartbeat_at) > (NODE_STALE_AFTER_MS as i64) * 1_000_000
    }
}

/// When a process that ended is started again (`restart` of an asset use in a DT
/// configuration, too).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never: an end is final.
    Never,
    /// When it ends with a non-zero code or by a signal it did not ask for.
    #[default]
    OnFailure,
    /// Whenever it ends, until stopped.
    Always,
}

/// `dtaas.v1.exec.<node>.start`: run one process of a DT. Starting a `(dt, role)`
/// that runs already with the same spec answers its pid (`already_running`); with a
/// different spec the old process is stopped and the new one started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessSpec {
    pub dt: String,
    /// The asset use's name in the DT (`DTAAS_ROLE`).
    pub role: String,
    /// The user the DT belongs to; usage is accounted to them.
    pub owner: String,
    /// The resolved asset, `owner/name@version`.
    pub asset: String,
    /// SHA-256 of the asset's files, when lifecycle resolved it; exec fetches by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Program and arguments, relative to the asset's files (run in its work directory).
    pub argv: Vec<String>,
    /// The process contract: `DTAAS_PARAMS`, `DTAAS_IN_<NAME>`, `DTAAS_OUT_<NAME>`, …
    /// Exec sets `DTAAS_NATS_URL` (unless given), `DTAAS_DT`, `DTAAS_ROLE`,
    /// `DTAAS_WORKDIR` and `DTAAS_STATE` itself.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub restart: RestartPolicy,
    /// CPUs the process may use (CPU quota with cgroups; placement otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    /// Memory limit, MiB (address-space rlimit, and cgroup `memory.max` where available).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// CPU seconds after which the process is killed (`RLIMIT_CPU`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_seconds_max: Option<u64>,
    /// A snapshot to restore: object name in `dtaas-snapshots`; written into the work
    /// directory and named by `DTAAS_STATE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// The reply to `start`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartReply {
    pub pid: u32,
    pub node: String,
    /// The same `(dt, role)` with the same spec ran already; nothing was started.
    #[serde(default)]
    pub already_running: bool,
}

/// `dtaas.v1.exec.<node>.stop`: terminate a DT's processes (one role, or all), each
/// process group with SIGTERM, then SIGKILL after the grace period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopRequest {
    pub dt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Between SIGTERM and SIGKILL; the node's default (`grace`) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_ms: Option<u64>,
}

/// The reply to `stop`: what was stopped (empty when nothing ran; not an error).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StopReply {
    pub stopped: Vec<ProcessInfo>,
}

/// `dtaas.v1.exec.<node>.list`: the processes of one DT, or all.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dt: Option<String>,
}

/// The reply to `list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListReply {
    pub node: String,
    pub processes: Vec<ProcessInfo>,
}

/// `dtaas.v1.exec.<node>.logs`: the last lines of a DT's processes from the node's
/// bounded history (oldest first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsRequest {
    pub dt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// How many lines at most [default: 100].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines: Option<usize>,
}

/// The reply to `logs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogsReply {
    pub lines: Vec<LogLine>,
}

/// One line a process wrote; published on `dtaas.v1.dt.<dt>.log.<role>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    pub dt: String,
    pub role: String,
    pub stream: LogStream,
    /// Nanoseconds since the Unix epoch.
    pub at: i64,
    pub line: String,
}

/// Which output a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// Where a supervised process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessStatus {
    Running,
    /// Ended; waiting for its backoff before the restart.
    Restarting,
    /// Ended with success and not restarted.
    Exited,
    /// Ended with failure and not restarted.
    Failed,
    /// Stopped by a request.
    Killed,
    /// Stopped because its node shut down; lifecycle starts it again on a live node
    /// (this one, once it is back).
    Interrupted,
}

impl ProcessStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Restarting => "restarting",
            Self::Exited => "exited",
            Self::Failed => "failed",
            Self::Killed => "killed",
            Self::Interrupted => "interrupted",
        }
    }
}

/// One process a node supervises (or supervised, until it is stopped).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub dt: String,
    pub role: String,
    pub owner: String,
    pub asset: String,
    pub node: String,
    /// The pid of the current (or last) run; also its process group id.
    pub pid: u32,
    pub status: ProcessStatus,
    pub restarts: u32,
    /// Nanoseconds since the Unix epoch of the current run's start.
    pub started_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// What happened to a process: `dtaas.v1.evt.proc.<dt>.<status>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessEventKind {
    /// Spawned by a start request.
    Started,
    /// Ended with success; not restarted (a DT whose processes all exited completed).
    Exited,
    /// Spawned again after it ended, per its restart policy.
    Restarted,
    /// Ended with failure (non-zero code, signal, or it could not be spawned); not
    /// restarted.
    Failed,
    /// Stopped by a stop request.
    Killed,
    /// Stopped because its node shut down; lifecycle starts it again on a live node
    /// (this one, once it is back).
    Interrupted,
}

impl ProcessEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Exited => "exited",
            Self::Restarted => "restarted",
            Self::Failed => "failed",
            Self::Killed => "killed",
            Self::Interrupted => "interrupted",
        }
    }
}

/// A process event (stream `DTAAS_EVT`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessEvent {
    pub dt: String,
    pub role: String,
    pub node: String,
    pub pid: u32,
    pub status: ProcessEventKind,
    /// The exit code of the run that ended (on exited, failed, killed, restarted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The signal that ended the run, if a signal did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    pub restarts: u32,
    /// Nanoseconds since the Unix epoch.
    pub at: i64,
    /// Why, in words (for example the spawn error on `failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl ProcessEvent {
    pub fn subject(&self) -> Result<String, crate::SubjectError> {
        crate::subject::event(EVENT_KIND, &self.dt, self.status.as_str())
    }
}

/// Usage of one run of a process over one interval, published by the node that
/// meters it on `dtaas.v1.acct.<user>.<dt>` (stream `DTAAS_USAGE`): every interval
/// and at the run's end. Sums of samples give usage over any time range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageSample {
    pub user: String,
    pub dt: String,
    pub role: String,
    pub node: String,
    pub pid: u32,
    /// Start of the run (ns), which with `pid` and `node` names the run.
    pub run_started_at: i64,
    /// End of the interval (ns).
    pub at: i64,
    /// CPU seconds (user + system, the process group's reaped children included)
    /// used in this interval.
    pub cpu_seconds: f64,
    /// Wall-clock seconds of this interval.
    pub wall_seconds: f64,
    /// Highest resident memory of the run so far, KiB.
    pub peak_memory_kib: u64,
    /// The run ended with this sample.
    #[serde(default)]
    pub ended: bool,
}

/// `dtaas.v1.<user>.usage.get`: usage over a time range. Times as `ts.query` takes
/// them: RFC 3339, `now`, or relative (`-1h`); default the last 24 hours.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Admins only: one other user, or `*` for every user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// Usage of one DT (or of everything, as `total`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Usage {
    pub cpu_seconds: f64,
    pub wall_seconds: f64,
    /// The highest resident memory of any one process, KiB.
    pub peak_memory_kib: u64,
    /// How many runs of processes (a restart is another run).
    pub runs: u64,
}

/// Usage of one DT of one user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DtUsage {
    pub user: String,
    pub dt: String,
    #[serde(flatten)]
    pub usage: Usage,
}

/// The reply to `usage.get`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageReply {
    /// The range, ns since the epoch.
    pub from: i64,
    pub to: i64,
    pub dts: Vec<DtUsage>,
    pub total: Usage,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, Encoding};

    #[test]
    fn spec_by_hand_and_round_trip() {
        let text = r#"{"dt":"dbl-1","role":"doubler","owner":"alice",
            "asset":"alice/doubler@1.0.0","argv":["python3","main.py"],
            "env":{"DTAAS_PARAMS":"{}"},"restart":"on-failure","memory_mb":64}"#;
        let spec: ProcessSpec = decode(None, text.as_bytes()).unwrap();
        assert_eq!(spec.restart, RestartPolicy::OnFailure);
        let body = Encoding::MsgPack.encode(&spec).unwrap();
        assert_eq!(decode::<ProcessSpec>(None, &body).unwrap(), spec);
        let err = decode::<ProcessSpec>(
            None,
            br#"{"dt":"a","role":"b","owner":"c","asset":"d","argv":[],"restart":"sometimes"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("sometimes"), "{err}");
    }

    #[test]
    fn event_subject_and_staleness() {
        let event = ProcessEvent {
            dt: "dbl-1".into(),
            role: "doubler".into(),
            node: "n1".into(),
            pid: 42,
            status: ProcessEventKind::Restarted,
            exit_code: None,
            signal: Some(9),
            restarts: 1,
            at: 0,
            detail: None,
        };
        assert_eq!(
            event.subject().unwrap(),
            "dtaas.v1.evt.proc.dbl-1.restarted"
        );
        let node = NodeInfo {
            id: "n1".into(),
            cpus: 2.0,
            memory_mb: 1024,
            labels: BTreeMap::new(),
            heartbeat_at: 1_000_000_000,
            started_at: 1,
            processes: 0,
            cpus_used: 0.0,
            memory_mb_used: 0,
        };
        assert!(!node.is_stale(1_000_000_000 + 9_000_000_000));
        assert!(node.is_stale(1_000_000_000 + 11_000_000_000));
    }
}
