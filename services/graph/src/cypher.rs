//! Every Cypher statement the Neo4j backend sends, with the parameter rows built from
//! a batch and the column types of the query results.
//!
//! The statements are plain openCypher (parameters, `UNWIND`, `MERGE`, `ON CREATE
//! SET`, variable-length paths) so that they run on Neo4j and on FalkorDB, which the
//! tests use as the engine. Only the constraints are Neo4j-specific, kept apart.

use std::collections::HashMap;

use dtaas_schemas::graph::{AssetUseNode, AssetUser, DtProcess, DtRead, PtNode, Transition};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::model::{Batch, ConfigRow, StateRow};
use crate::store::{DtRow, TreeRows};

/// Created at start (Neo4j 5 syntax); uniqueness also makes the MERGEs fast.
pub const CONSTRAINTS: [&str; 8] = [
    "CREATE CONSTRAINT dtaas_dt_id IF NOT EXISTS FOR (d:Dt) REQUIRE d.id IS UNIQUE",
    "CREATE CONSTRAINT dtaas_pt_id IF NOT EXISTS FOR (p:Pt) REQUIRE p.id IS UNIQUE",
    "CREATE CONSTRAINT dtaas_asset_key IF NOT EXISTS FOR (a:Asset) REQUIRE (a.id, a.version) IS UNIQUE",
    "CREATE CONSTRAINT dtaas_command_id IF NOT EXISTS FOR (c:Command) REQUIRE c.id IS UNIQUE",
    "CREATE CONSTRAINT dtaas_transition_key IF NOT EXISTS FOR (t:Transition) REQUIRE (t.dt, t.at, t.to_state) IS UNIQUE",
    "CREATE CONSTRAINT dtaas_status_key IF NOT EXISTS FOR (s:CommandStatus) REQUIRE (s.command, s.status, s.at) IS UNIQUE",
    "CREATE CONSTRAINT dtaas_process_key IF NOT EXISTS FOR (p:Process) REQUIRE (p.dt, p.role) IS UNIQUE",
    "CREATE CONSTRAINT dtaas_exec_node_id IF NOT EXISTS FOR (n:ExecNode) REQUIRE n.id IS UNIQUE",
];

/// The newest state of each DT; only moves forward in time.
pub const WRITE_STATES: &str = "\
UNWIND $rows AS row
MERGE (d:Dt {id: row.dt})
WITH d, row WHERE d.state_at IS NULL OR d.state_at <= row.at
SET d.state = row.state, d.state_at = row.at, d.fork_of = coalesce(row.fork_of, d.fork_of),
    d.owner = coalesce(row.owner, d.owner)";

/// A configuration at least as new as the stored one replaces the DT's assets, PTs,
/// children, exports and reads: this clears them (and sets the exports); the next four
/// statements add the new ones.
pub const WRITE_CONFIGS: &str = "\
UNWIND $rows AS row
MERGE (d:Dt {id: row.dt})
WITH d, row WHERE d.config_at IS NULL OR d.config_at <= row.at
SET d.config_at = row.at, d.description = row.description, d.config_version = row.config_version,
    d.exports = row.exports, d.owner = coalesce(row.owner, d.owner)
WITH d
OPTIONAL MATCH (d)-[r:USES|MIRRORS|HAS_CHILD|READS]->()
DELETE r";

/// `(dt)-[:USES {name}]->(asset)` of the configuration that was applied.
pub const WRITE_USES: &str = "\
UNWIND $rows AS row
MATCH (d:Dt {id: row.dt}) WHERE d.config_at = row.at
MERGE (a:Asset {id: row.asset, version: row.version})
SET a.kind = coalesce(row.kind, a.kind)
MERGE (d)-[:USES {name: row.name}]->(a)";

/// `(dt)-[:MIRRORS {signals, commands}]->(pt)` of the configuration that was applied.
pub const WRITE_MIRRORS: &str = "\
UNWIND $rows AS row
MATCH (d:Dt {id: row.dt}) WHERE d.config_at = row.at
MERGE (p:Pt {id: row.pt})
MERGE (d)-[m:MIRRORS]->(p)
SET m.signals = row.signals, m.commands = row.commands";

/// `(dt)-[:HAS_CHILD]->(child)` of the configuration that was applied.
pub const WRITE_CHILDREN: &str = "\
UNWIND $rows AS row
MATCH (d:Dt {id: row.dt}) WHERE d.config_at = row.at
MERGE (c:Dt {id: row.child})
MERGE (d)-[:HAS_CHILD]->(c)";

/// `(dt)-[:READS {output}]->(source)` of the configuration that was applied.
pub const WRITE_READS: &str = "\
UNWIND $rows AS row
MATCH (d:Dt {id: row.dt}) WHERE d.config_at = row.at
MERGE (o:Dt {id: row.source})
MERGE (d)-[:READS {output: row.output}]->(o)";

/// `(parent)-[:HAS_CHILD]->(dt)` from an event's `parent` field, unless the parent
/// has a newer configuration (which names its children).
pub const WRITE_PARENTS: &str = "\
UNWIND $rows AS row
MERGE (p:Dt {id: row.parent})
MERGE (c:Dt {id: row.child})
WITH p, c, row WHERE p.config_at IS NULL OR p.config_at <= row.at
MERGE (p)-[:HAS_CHILD]->(c)";

/// Lifecycle transitions, keyed by `(dt, at, to_state)`.
pub const WRITE_TRANSITIONS: &str = "\
UNWIND $rows AS row
MERGE (d:Dt {id: row.dt})
MERGE (t:Transition {dt: row.dt, at: row.at, to_state: row.to})
SET t.from_state = row.from, t.user = row.user, t.config_version = row.config_version, t.detail = row.detail
MERGE (d)-[:TRANSITIONED]->(t)";

/// Commands to PTs and their statuses, keyed by `(id, status, at)`.
pub const WRITE_COMMANDS: &str = "\
UNWIND $rows AS row
MERGE (p:Pt {id: row.pt})
MERGE (c:Command {id: row.id})
ON CREATE SET c.pt = row.pt, c.command = row.command, c.first_at = row.at
SET c.first_at = CASE WHEN row.at < c.first_at THEN row.at ELSE c.first_at END
MERGE (c)-[:SENT_TO]->(p)
MERGE (s:CommandStatus {command: row.id, status: row.status, at: row.at})
SET s.reason = row.reason
MERGE (c)-[:HAD_STATUS]->(s)";

/// DT processes, keyed by `(dt, role)`: a newer (or equally new) event sets the node,
/// pid and status and moves the `RUNS_ON` edge to the node it names.
pub const WRITE_PROCESSES: &str = "\
UNWIND $rows AS row
MERGE (d:Dt {id: row.dt})
MERGE (p:Process {dt: row.dt, role: row.role})
MERGE (d)-[:RUNS]->(p)
WITH p, row WHERE p.at IS NULL OR p.at <= row.at
SET p.node = row.node, p.pid = row.pid, p.status = row.status, p.restarts = row.restarts,
    p.exit_code = row.exit_code, p.at = row.at
WITH p, row
OPTIONAL MATCH (p)-[old:RUNS_ON]->(:ExecNode)
DELETE old
WITH DISTINCT p, row
MERGE (n:ExecNode {id: row.node})
MERGE (p)-[:RUNS_ON]->(n)";

/// A terminated DT runs nothing: its processes still `running` (their node died before
/// it could report the kill) become `killed` at the transition.
pub const END_PROCESSES: &str = "\
UNWIND $rows AS row
MATCH (:Dt {id: row.dt})-[:RUNS]->(p:Process)
WHERE p.status = 'running' AND p.at <= row.at
SET p.status = 'killed', p.at = row.at";

/// The recorded owner of each DT in `$dts` that has one.
pub const OWNERS: &str = "\
UNWIND $dts AS id
MATCH (d:Dt {id: id}) WHERE d.owner IS NOT NULL
RETURN d.id AS dt, d.owner AS owner";

/// The DTs of a composition subtree (root included); no row when the root is unknown.
pub const TREE_DTS: &str = "\
MATCH (root:Dt {id: $dt})-[:HAS_CHILD*0..32]->(d:Dt)
RETURN DISTINCT d.id AS id, d.state AS state, d.description AS description, d.exports AS exports,
       d.fork_of AS fork_of";

/// The parent → child edges of a composition subtree.
pub const TREE_EDGES: &str = "\
MATCH (root:Dt {id: $dt})-[:HAS_CHILD*0..32]->(p:Dt)-[:HAS_CHILD]->(c:Dt)
RETURN DISTINCT p.id AS parent, c.id AS child";

/// The assets used in a composition subtree.
pub const TREE_ASSETS: &str = "\
MATCH (root:Dt {id: $dt})-[:HAS_CHILD*0..32]->(d:Dt)-[u:USES]->(a:Asset)
RETURN DISTINCT d.id AS dt, u.name AS name, a.id AS asset, a.version AS version, a.kind AS kind";

/// The PTs mirrored in a composition subtree.
pub const TREE_PTS: &str = "\
MATCH (root:Dt {id: $dt})-[:HAS_CHILD*0..32]->(d:Dt)-[m:MIRRORS]->(p:Pt)
RETURN DISTINCT d.id AS dt, p.id AS pt, m.signals AS signals, m.commands AS commands";

/// The outputs of other DTs read in a composition subtree.
pub const TREE_READS: &str = "\
MATCH (root:Dt {id: $dt})-[:HAS_CHILD*0..32]->(d:Dt)-[r:READS]->(o:Dt)
RETURN DISTINCT d.id AS dt, o.id AS source, r.output AS output";

/// The processes in a composition subtree.
pub const TREE_PROCESSES: &str = "\
MATCH (root:Dt {id: $dt})-[:HAS_CHILD*0..32]->(d:Dt)-[:RUNS]->(p:Process)-[:RUNS_ON]->(n:ExecNode)
RETURN DISTINCT d.id AS dt, p.role AS role, n.id AS node, p.pid AS pid, p.status AS status,
       p.restarts AS restarts, p.exit_code AS exit_code, p.at AS at";

/// The processes of a DT (`$dt`) and/or on an exec node (`$node`) of DTs owned by
/// `$owner`; `null` matches any.
pub const PROCESSES: &str = "\
MATCH (d:Dt)-[:RUNS]->(p:Process)-[:RUNS_ON]->(n:ExecNode)
WHERE ($dt IS NULL OR d.id = $dt) AND ($node IS NULL OR n.id = $node)
  AND ($owner IS NULL OR d.owner = $owner)
RETURN d.id AS dt, p.role AS role, n.id AS node, p.pid AS pid, p.status AS status,
       p.restarts AS restarts, p.exit_code AS exit_code, p.at AS at
ORDER BY dt, role
LIMIT $limit";

/// The DTs using an asset, in one version (`$version`) or any (`null`).
pub const IMPACT: &str = "\
MATCH (d:Dt)-[u:USES]->(a:Asset {id: $asset})
WHERE $version IS NULL OR a.version = $version
RETURN d.id AS dt, a.version AS version, u.name AS name
ORDER BY dt, version, name";

/// Lifecycle history of a DT, oldest first.
pub const HISTORY: &str = "\
MATCH (t:Transition {dt: $dt})
RETURN t.from_state AS from_state, t.to_state AS to_state, t.at AS at, t.user AS user,
       t.config_version AS config_version, t.detail AS detail
ORDER BY at, to_state
LIMIT $limit";

/// Status rows of the commands to a PT first seen in `[$from, $to)`.
pub const COMMANDS: &str = "\
MATCH (c:Command)-[:SENT_TO]->(:Pt {id: $pt})
WHERE c.first_at >= $from AND c.first_at < $to
WITH c ORDER BY c.first_at, c.id LIMIT $limit
MATCH (c)-[:HAD_STATUS]->(s:CommandStatus)
RETURN c.id AS id, c.command AS command, c.first_at AS first_at, s.status AS status,
       s.at AS at, s.reason AS reason
ORDER BY first_at, id, at";

#[derive(Serialize)]
struct DtAt<'a, T: Serialize> {
    dt: &'a str,
    at: i64,
    #[serde(flatten)]
    row: T,
}

#[derive(Serialize)]
struct Child<'a> {
    child: &'a str,
}

/// The write statements of a batch, in order, each with its `$rows` parameter;
/// statements without rows are left out. Run them in one transaction.
pub fn write_statements(batch: &Batch) -> Vec<(&'static str, Value)> {
    let mut out = Vec::with_capacity(8);
    let mut push = |statement, rows: Value| {
        if rows.as_array().is_some_and(|r| !r.is_empty()) {
            out.push((statement, rows));
        }
    };
    push(WRITE_STATES, json!(newest_states(&batch.states)));
    let configs: Vec<Value> = batch
        .configs
        .iter()
        .map(|c| {
            json!({"dt": c.dt, "at": c.at, "description": c.description,
                   "config_version": c.config_version, "exports": c.exports,
                   "owner": c.owner})
        })
        .collect();
    push(WRITE_CONFIGS, json!(configs));
    let uses = config_rows(batch, |c| &c.assets);
    push(WRITE_USES, json!(uses));
    let mirrors = config_rows(batch, |c| &c.pts);
    push(WRITE_MIRRORS, json!(mirrors));
    let children: Vec<_> = batch
        .configs
        .iter()
        .flat_map(|c| {
            c.children.iter().map(|child| DtAt {
                dt: &c.dt,
                at: c.at,
                row: Child { child },
            })
        })
        .collect();
    push(WRITE_CHILDREN, json!(children));
    let reads = config_rows(batch, |c| &c.reads);
    push(WRITE_READS, json!(reads));
    push(WRITE_PARENTS, json!(batch.parents));
    push(WRITE_TRANSITIONS, json!(batch.transitions));
    push(WRITE_COMMANDS, json!(batch.commands));
    push(WRITE_PROCESSES, json!(batch.processes));
    let terminated: Vec<&StateRow> = batch
        .states
        .iter()
        .filter(|s| s.state == crate::model::TERMINATED)
        .collect();
    push(END_PROCESSES, json!(terminated));
    out
}

/// The rows `part` picks from each configuration of `batch`, each with the DT and
/// time of its configuration.
fn config_rows<'a, T: Serialize>(
    batch: &'a Batch,
    part: impl Fn(&'a ConfigRow) -> &'a [T],
) -> Vec<DtAt<'a, &'a T>> {
    batch
        .configs
        .iter()
        .flat_map(|c| {
            part(c).iter().map(move |row| DtAt {
                dt: &c.dt,
                at: c.at,
                row,
            })
        })
        .collect()
}

/// One state row per DT, the newest (the later one on a tie), so the statement need
/// not rely on rows of one `UNWIND` seeing each other's writes.
fn newest_states(states: &[StateRow]) -> Vec<&StateRow> {
    let mut newest: HashMap<&str, &StateRow> = HashMap::new();
    for row in states {
        match newest.get(row.dt.as_str()) {
            Some(kept) if kept.at > row.at => {}
            _ => {
                newest.insert(&row.dt, row);
            }
        }
    }
    let mut rows: Vec<_> = newest.into_values().collect();
    rows.sort_by(|a, b| a.dt.cmp(&b.dt));
    rows
}

/// Parameters of `OWNERS`.
pub fn owners_params(dts: &[String]) -> Value {
    json!({ "dts": dts })
}

/// The rows of `OWNERS` as each DT's owner.
pub fn owners(rows: Vec<OwnerCols>) -> HashMap<String, String> {
    rows.into_iter().map(|r| (r.dt, r.owner)).collect()
}

/// A row of `OWNERS`.
#[derive(Debug, Deserialize)]
pub struct OwnerCols {
    pub dt: String,
    pub owner: String,
}

/// Parameters of the six tree statements.
pub fn tree_params(dt: &str) -> Value {
    json!({ "dt": dt })
}

/// Parameters of `IMPACT`.
pub fn impact_params(asset: &str, version: Option<&str>) -> Value {
    json!({ "asset": asset, "version": version })
}

/// Parameters of `HISTORY`.
pub fn history_params(dt: &str, limit: u32) -> Value {
    json!({ "dt": dt, "limit": limit })
}

/// Parameters of `PROCESSES`.
pub fn processes_params(
    dt: Option<&str>,
    node: Option<&str>,
    owner: Option<&str>,
    limit: u32,
) -> Value {
    json!({ "dt": dt, "node": node, "owner": owner, "limit": limit })
}

/// Parameters of `COMMANDS`.
pub fn commands_params(pt: &str, from: i64, to: i64, limit: u32) -> Value {
    json!({ "pt": pt, "from": from, "to": to, "limit": limit })
}

/// A row of `TREE_DTS`.
#[derive(Debug, Deserialize)]
pub struct TreeDtCols {
    pub id: String,
    pub state: Option<String>,
    pub description: Option<String>,
    pub exports: Option<Vec<String>>,
    #[serde(default)]
    pub fork_of: Option<String>,
}

/// A row of `TREE_EDGES`.
#[derive(Debug, Deserialize)]
pub struct TreeEdgeCols {
    pub parent: String,
    pub child: String,
}

/// A row of `TREE_ASSETS`.
#[derive(Debug, Deserialize)]
pub struct TreeAssetCols {
    pub dt: String,
    pub name: String,
    pub asset: String,
    pub version: String,
    pub kind: Option<String>,
}

/// A row of `TREE_PTS`.
#[derive(Debug, Deserialize)]
pub struct TreePtCols {
    pub dt: String,
    pub pt: String,
    pub signals: Option<Vec<String>>,
    pub commands: Option<Vec<String>>,
}

/// A row of `TREE_READS`.
#[derive(Debug, Deserialize)]
pub struct TreeReadCols {
    pub dt: String,
    pub source: String,
    pub output: String,
}

/// A row of `TREE_PROCESSES` and `PROCESSES`.
pub type ProcessCols = DtProcess;

/// A row of `IMPACT`.
pub type ImpactCols = AssetUser;

/// A row of `HISTORY`.
#[derive(Debug, Deserialize)]
pub struct HistoryCols {
    pub from_state: Option<String>,
    pub to_state: String,
    pub at: i64,
    pub user: String,
    pub config_version: Option<i64>,
    pub detail: Option<String>,
}

/// The result rows of the six tree statements as `TreeRows`; `None` when the root
/// DT is unknown (no row from `TREE_DTS`).
pub fn tree_rows(
    dts: Vec<TreeDtCols>,
    edges: Vec<TreeEdgeCols>,
    assets: Vec<TreeAssetCols>,
    pts: Vec<TreePtCols>,
    processes: Vec<ProcessCols>,
    reads: Vec<TreeReadCols>,
) -> Option<TreeRows> {
    if dts.is_empty() {
        return None;
    }
    let exports = dts
        .iter()
        .flat_map(|d| {
            let subjects = d.exports.iter().flatten();
            subjects.map(|subject| (d.id.clone(), subject.clone()))
        })
        .collect();
    Some(TreeRows {
        exports,
        reads: reads
            .into_iter()
            .map(|r| {
                let read = DtRead {
                    dt: r.source,
                    output: r.output,
                };
                (r.dt, read)
            })
            .collect(),
        dts: dts
            .into_iter()
            .map(|d| DtRow {
                id: d.id,
                state: d.state,
                description: d.description.filter(|d| !d.is_empty()),
                fork_of: d.fork_of,
            })
            .collect(),
        edges: edges.into_iter().map(|e| (e.parent, e.child)).collect(),
        assets: assets
            .into_iter()
            .map(|a| {
                let node = AssetUseNode {
                    name: a.name,
                    id: a.asset,
                    version: a.version,
                    kind: a.kind,
                };
                (a.dt, node)
            })
            .collect(),
        pts: pts
            .into_iter()
            .map(|p| {
                let node = PtNode {
                    id: p.pt,
                    signals: p.signals.unwrap_or_default(),
                    commands: p.commands.unwrap_or_default(),
                };
                (p.dt, node)
            })
            .collect(),
        processes: processes.into_iter().map(DtProcess::node).collect(),
    })
}

impl From<HistoryCols> for Transition {
    fn from(c: HistoryCols) -> Self {
        Transition {
            from: c.from_state,
            to: c.to_state,
            at: c.at,
            user: c.user,
            config_version: c.config_version,
            detail: c.detail,
        }
    }
}
