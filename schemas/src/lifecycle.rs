//! Lifecycle states of a DT, the events that record its transitions, and the
//! requests and replies of the lifecycle service `dtaas.v1.<user>.dt.<verb>`.

use serde::{Deserialize, Serialize};

use crate::dt_config::{DtConfig, DtState};
use crate::exec::LogLine;

/// The event kind of DT lifecycle events: `dtaas.v1.evt.dt.<dt>.<event>`.
pub const EVENT_KIND: &str = "dt";

/// Where a DT is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LifecycleState {
    Created,
    Executing,
    /// Every process ended on its own with success (and its restart policy let it).
    Completed,
    /// A transition event only: a snapshot was saved; the DT keeps its state.
    Saved,
    /// A transition event only: the DT was started from a snapshot.
    Restored,
    /// A transition event only: the DT's `analyze` scripts ran; the DT keeps its state.
    Analysing,
    /// A transition event only: the DT's `clean` scripts ran; the DT keeps its state.
    Cleaned,
    /// A transition event only: a new configuration was applied.
    Evolving,
    /// A transition event only: a what-if fork's replay of recorded telemetry ended
    /// (`detail` says how many records, or why it stopped early).
    Replayed,
    Terminated,
    Failed,
    /// A transition event only, the last of an id: the DT left the registry (with its
    /// children and snapshots); a DT created with the id later starts anew.
    Deleted,
}

impl LifecycleState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Executing => "executing",
            Self::Completed => "completed",
            Self::Restored => "restored",
            Self::Saved => "saved",
            Self::Analysing => "analysing",
            Self::Cleaned => "cleaned",
            Self::Evolving => "evolving",
            Self::Replayed => "replayed",
            Self::Terminated => "terminated",
            Self::Failed => "failed",
            Self::Deleted => "deleted",
        }
    }
}

/// A lifecycle transition of a DT, published on `dtaas.v1.evt.dt.<dt>.<to>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LifecycleEvent {
    pub dt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<LifecycleState>,
    pub to: LifecycleState,
    /// Nanoseconds since the Unix epoch.
    pub at: i64,
    /// Who caused the transition (not always the owner: an admin, or a DT reading
    /// another's export, may cause it).
    pub user: String,
    /// The user the DT belongs to; the graph answers only them (and graph admins)
    /// about it. Events published before owners were recorded lack it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The configuration, on `created` and after `evolving`; it carries the assets,
    /// PTs and children that the graph records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<DtConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fork_of: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl LifecycleEvent {
    pub fn subject(&self) -> Result<String, crate::SubjectError> {
        crate::subject::event(EVENT_KIND, &self.dt, self.to.as_str())
    }
}

/// The service name in request subjects: `dtaas.v1.<user>.dt.<verb>`.
pub const SERVICE: &str = "dt";
pub const VERB_CREATE: &str = "create";
pub const VERB_EXECUTE: &str = "execute";
pub const VERB_SAVE: &str = "save";
pub const VERB_RESTORE: &str = "restore";
pub const VERB_EVOLVE: &str = "evolve";
pub const VERB_TERMINATE: &str = "terminate";
pub const VERB_ANALYZE: &str = "analyze";
pub const VERB_CLEAN: &str = "clean";
pub const VERB_DELETE: &str = "delete";
pub const VERB_GET: &str = "get";
pub const VERB_LIST: &str = "list";
pub const VERB_LOGS: &str = "logs";
pub const VERB_FORK: &str = "fork";
pub const VERB_REPLAY: &str = "replay";

/// One process of a DT as the registry knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessState {
    /// The asset use's name (`DTAAS_ROLE`).
    pub role: String,
    /// `owner/name@version`.
    pub asset: String,
    /// The exec node it was placed on.
    pub node: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// `starting`, `running`, `exited`, `failed`, `killed`, `interrupted`.
    pub status: String,
    /// `started_at` of the node's life it was placed on (0: not recorded).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub node_started_at: i64,
    #[serde(default)]
    pub restarts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Hash of the configuration part this process was started from; evolve restarts
    /// only processes whose hash changed.
    #[serde(default)]
    pub spec_hash: String,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// A saved snapshot of a DT (object store `dtaas-snapshots`, `<dt>/<name>/…`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// Unique within the DT, e.g. `s-1767225600`.
    pub name: String,
    /// Nanoseconds since the Unix epoch.
    pub at: i64,
    pub config_version: u64,
    /// Roles whose process answered with a state.
    pub roles: Vec<String>,
}

/// `dt.create`: `{"config":{…}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    pub config: DtConfig,
}

/// `dt.execute`, `dt.save`, `dt.terminate`, `dt.analyze`, `dt.clean`, `dt.delete`,
/// `dt.get`: `{"id":"…"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdRequest {
    pub id: String,
}

/// `dt.restore`: `{"id":"…","snapshot":"…"}`; without `snapshot` the newest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
}

/// `dt.evolve`: `{"id":"…","config":{…}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvolveRequest {
    pub id: String,
    pub config: DtConfig,
}

/// `dt.list`: `{}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListRequest {}

/// `dt.logs`: `{"id":"…","lines":100}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsRequest {
    pub id: String,
    #[serde(default = "default_lines")]
    pub lines: usize,
}

fn default_lines() -> usize {
    100
}

/// The reply of every verb that changes or reads one DT: its registry entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DtReply {
    pub dt: DtState,
    /// Its `C_e` exports as the subjects other users' DTs wire to
    /// (`dtaas.v1.dt.<dt>.out.<output>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exports: Vec<String>,
    /// The last log lines of its processes (`dt.get` only), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<LogLine>,
}

impl DtReply {
    /// The reply about `dt`, with `logs` (`dt.get`) or none.
    pub fn new(dt: DtState, logs: Vec<LogLine>) -> Self {
        let exports = dt.config.external.export_subjects(&dt.id);
        Self { dt, exports, logs }
    }
}

/// Reply to `dt.analyze` and `dt.clean`: the DT, and the scripts that ran for it
/// and each of its children, in the order they ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScriptsReply {
    pub dt: DtState,
    pub ran: Vec<DtScripts>,
}

/// The scripts of one DT of a tree that ran, as the processes `<role>-<phase>`
/// they ran as; empty when the DT has no such script (it was skipped).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DtScripts {
    pub id: String,
    pub scripts: Vec<String>,
}

/// Reply to `dt.delete`: every DT that left the registry, the DT first, then its
/// children (parents before their children).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeleteReply {
    pub deleted: Vec<DeletedDt>,
}

/// One deleted DT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeletedDt {
    pub id: String,
    /// The state it had.
    pub state: LifecycleState,
    /// How many snapshot objects (`<dt>/<snapshot>/…` in `dtaas-snapshots`) went with it.
    pub snapshot_objects: usize,
}

/// One line of `dt.list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DtSummary {
    pub id: String,
    pub state: LifecycleState,
    pub config_version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The DT it was forked from (what-if forks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fork_of: Option<String>,
    pub processes: usize,
    pub updated_at: i64,
}

/// Reply to `dt.list`: the caller's DTs, sorted by id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListReply {
    pub dts: Vec<DtSummary>,
}

/// Reply to `dt.logs`: the newest `lines` lines, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogsReply {
    pub lines: Vec<LogLine>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, Encoding};

    #[test]
    fn lifecycle_event_round_trip() {
        let typed =
            r#"{"dt":"incubator-1","from":"created","to":"executing","at":7,"user":"alice"}"#;
        let event: LifecycleEvent = decode(None, typed.as_bytes()).unwrap();
        assert_eq!(event.to, LifecycleState::Executing);
        assert_eq!(
            event.subject().unwrap(),
            "dtaas.v1.evt.dt.incubator-1.executing"
        );
        let body = Encoding::MsgPack.encode(&event).unwrap();
        assert_eq!(decode::<LifecycleEvent>(None, &body).unwrap(), event);
        assert!(
            decode::<LifecycleEvent>(None, br#"{"dt":"x","to":"flying","at":1,"user":"a"}"#)
                .unwrap_err()
                .to_string()
                .contains("flying")
        );
    }
}
