//! Requests and replies of the graph service, `dtaas.v1.<user>.graph.<verb>`.
//!
//! Both graph backends (embedded SQLite and Neo4j) answer with exactly these shapes.

use serde::{Deserialize, Serialize};

/// The service name in request subjects: `dtaas.v1.<user>.graph.<verb>`.
pub const SERVICE: &str = "graph";
/// Verb of the composition tree request.
pub const VERB_TREE: &str = "tree";
/// Verb of the impact analysis request.
pub const VERB_IMPACT: &str = "impact";
/// Verb of the lifecycle history request.
pub const VERB_HISTORY: &str = "history";
/// Verb of the commands-to-a-PT request.
pub const VERB_COMMANDS: &str = "commands";
/// Verb of the raw Cypher request (Neo4j backend only).
pub const VERB_CYPHER: &str = "cypher";
/// Verb of the DT processes request (by DT and/or exec node).
pub const VERB_PROCESSES: &str = "processes";

/// `graph.tree`: `{"dt":"factory"}`, the composition tree of a DT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeRequest {
    pub dt: String,
}

/// Reply to `graph.tree`: `{"tree":{…}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TreeReply {
    pub tree: DtNode,
}

/// One DT in a composition tree, with its assets, PTs and children.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DtNode {
    pub id: String,
    /// The latest lifecycle state, when one was recorded.
    pub state: Option<String>,
    pub description: Option<String>,
    /// The DT it was forked from, for what-if forks (`dt.fork`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fork_of: Option<String>,
    /// Sorted by role name, then asset id.
    pub assets: Vec<AssetUseNode>,
    /// Sorted by PT id.
    pub pts: Vec<PtNode>,
    /// Sorted by DT id.
    pub children: Vec<DtNode>,
    /// The DT's processes as exec reported them last, sorted by role.
    #[serde(default)]
    pub processes: Vec<ProcessNode>,
    /// Its `C_e` exports as the subjects other DTs wire to, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exports: Vec<String>,
    /// Outputs of other DTs its inputs are wired to, sorted by DT, then output.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reads: Vec<DtRead>,
}

/// `(dt)-[:READS {output}]->(other dt)`: an input of the DT is wired to
/// `dtaas.v1.dt.<dt>.out.<output>` of another DT.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DtRead {
    /// The DT read from.
    pub dt: String,
    /// Its output token.
    pub output: String,
}

/// A process of a DT, from its latest process event (`dtaas.v1.evt.proc.<dt>.<status>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessNode {
    /// The asset use's name (`DTAAS_ROLE`); `<role>-<phase>` for a DTaaS lifecycle script.
    pub role: String,
    /// The exec node it runs (or ran) on.
    pub node: String,
    pub pid: u32,
    /// `running`, `exited`, `failed` or `killed`.
    pub status: String,
    pub restarts: u32,
    pub exit_code: Option<i32>,
    /// When the event that set this status happened (ns since the epoch).
    pub at: i64,
}

/// `graph.processes`: `{"dt":"factory"}`, `{"node":"n1"}` or both: the processes of a
/// DT, of an exec node, or of a DT on a node. `limit` as in history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessesRequest {
    #[serde(default)]
    pub dt: Option<String>,
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default)]
    pub limit: Option<u32>,
}

/// Reply to `graph.processes`, sorted by DT, then role; empty when none match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessesReply {
    pub processes: Vec<DtProcess>,
}

/// A process with the DT it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DtProcess {
    pub dt: String,
    pub role: String,
    pub node: String,
    pub pid: u32,
    pub status: String,
    pub restarts: u32,
    pub exit_code: Option<i32>,
    pub at: i64,
}

impl DtProcess {
    /// The process without its DT, as a tree shows it.
    pub fn node(self) -> (String, ProcessNode) {
        (
            self.dt,
            ProcessNode {
                role: self.role,
                node: self.node,
                pid: self.pid,
                status: self.status,
                restarts: self.restarts,
                exit_code: self.exit_code,
                at: self.at,
            },
        )
    }
}

/// An asset a DT uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssetUseNode {
    /// The role of the asset in the DT.
    pub name: String,
    pub id: String,
    pub version: String,
    /// `data`, `model`, `function`, `tool` or `dt`, when the asset library knows it.
    pub kind: Option<String>,
}

/// A PT a DT mirrors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PtNode {
    pub id: String,
    pub signals: Vec<String>,
    pub commands: Vec<String>,
}

/// `graph.impact`: `{"asset":"pid","version":"1.2.0"}` (`version` optional): the DTs
/// that use an asset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImpactRequest {
    pub asset: String,
    #[serde(default)]
    pub version: Option<String>,
}

/// Reply to `graph.impact`: `{"asset":"pid","version":null,"users":[…]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImpactReply {
    pub asset: String,
    pub version: Option<String>,
    /// Sorted by DT, version, role; empty when no DT uses the asset.
    pub users: Vec<AssetUser>,
}

/// A DT that uses an asset, in which version and role.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AssetUser {
    pub dt: String,
    pub version: String,
    pub name: String,
}

/// `graph.history`: `{"dt":"factory","limit":100}` (`limit` optional): lifecycle
/// transitions of a DT, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryRequest {
    pub dt: String,
    #[serde(default)]
    pub limit: Option<u32>,
}

/// Reply to `graph.history`; `transitions` is empty for an unknown DT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryReply {
    pub dt: String,
    pub transitions: Vec<Transition>,
}

/// One lifecycle transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub from: Option<String>,
    pub to: String,
    /// Nanoseconds since the Unix epoch.
    pub at: i64,
    pub user: String,
    pub config_version: Option<i64>,
    pub detail: Option<String>,
}

/// `graph.commands`: `{"pt":"robot1","from":"-1h","to":"now","limit":1000}`: the
/// commands sent to a PT whose first status lies in `[from, to)`. `from`/`to` are
/// RFC 3339, `now` or relative (`-15m`); both optional (unbounded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandsRequest {
    pub pt: String,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub limit: Option<u32>,
}

/// Reply to `graph.commands`; `commands` is empty for an unknown PT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandsReply {
    pub pt: String,
    /// Oldest first (by `first_at`, then id).
    pub commands: Vec<CommandRecord>,
}

/// A command and its status history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRecord {
    pub id: String,
    pub command: String,
    /// The latest status.
    pub status: String,
    /// When the first status was recorded (ns since the epoch).
    pub first_at: i64,
    /// Oldest first.
    pub history: Vec<StatusChange>,
}

/// One status of a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChange {
    pub status: String,
    pub at: i64,
    pub reason: Option<String>,
}

/// `graph.cypher` (Neo4j backend): `{"query":"MATCH (d:Dt) RETURN d.id AS id",
/// "params":{}}`. For graph admins only (`[graph] admins`): raw Cypher sees every
/// user's DTs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CypherRequest {
    pub query: String,
    #[serde(default)]
    pub params: serde_json::Map<String, serde_json::Value>,
}

/// Reply to `graph.cypher`: one JSON object per row, keyed by column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CypherReply {
    pub rows: Vec<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::decode;

    #[test]
    fn requests_name_bad_fields() {
        let ok: CommandsRequest = decode(None, br#"{"pt":"r1","from":"-1h"}"#).unwrap();
        assert_eq!(ok.from.as_deref(), Some("-1h"));
        let err = decode::<ImpactRequest>(None, br#"{"asset":"a","versoin":"1"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("versoin"), "{err}");
        let err = decode::<TreeRequest>(None, b"{}").unwrap_err().to_string();
        assert!(err.contains("`dt`"), "{err}");
    }
}
