//! The graph store behind one trait, so the embedded SQLite and the Neo4j backends are
//! interchangeable; both return the same raw rows and `queries` shapes the replies.

use std::collections::{BTreeMap, HashMap, HashSet};

use dtaas_schemas::graph::{
    AssetUseNode, AssetUser, CommandRecord, DtNode, DtProcess, DtRead, ProcessNode, PtNode,
    StatusChange, Transition,
};
use futures::future::BoxFuture;

use crate::model::Batch;

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store is down, locked or unreachable: retry later, the write is not lost.
    #[error("graph store unavailable: {0}")]
    Unavailable(String),
    /// The request cannot be answered by this backend or is not allowed.
    #[error("{0}")]
    Unsupported(String),
    /// The store rejected the query itself (for example a Cypher syntax error).
    #[error("graph store rejected the query: {0}")]
    Rejected(String),
}

/// One DT of a composition subtree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DtRow {
    pub id: String,
    pub state: Option<String>,
    pub description: Option<String>,
    /// The DT it was forked from (what-if forks).
    pub fork_of: Option<String>,
}

/// The flat rows of a composition subtree.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TreeRows {
    /// Every DT reachable from the root through `HAS_CHILD` (the root included).
    pub dts: Vec<DtRow>,
    /// `(parent, child)` edges among them.
    pub edges: Vec<(String, String)>,
    /// `(dt, asset use)`.
    pub assets: Vec<(String, AssetUseNode)>,
    /// `(dt, pt)`.
    pub pts: Vec<(String, PtNode)>,
    /// `(dt, process)`.
    pub processes: Vec<(String, ProcessNode)>,
    /// `(dt, export subject)`.
    pub exports: Vec<(String, String)>,
    /// `(dt, what it reads)`.
    pub reads: Vec<(String, DtRead)>,
}

/// One status of a command, flat; also a row of `cypher::COMMANDS`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct CommandStatusRow {
    pub id: String,
    pub command: String,
    pub first_at: i64,
    pub status: String,
    pub at: i64,
    pub reason: Option<String>,
}

/// What every graph backend does.
pub trait GraphStore: Send + Sync {
    /// Writes a batch in one transaction; returns only once it is durable.
    fn write(&self, batch: &Batch) -> BoxFuture<'_, Result<(), StoreError>>;

    /// The owner of each of `dts` that has one recorded (DTs known only from before
    /// owners were recorded, or only as another DT's child or source, have none).
    fn owners(
        &self,
        dts: Vec<String>,
    ) -> BoxFuture<'_, Result<HashMap<String, String>, StoreError>>;

    /// The subtree under `dt`; `None` when no such DT exists.
    fn tree(&self, dt: String) -> BoxFuture<'_, Result<Option<TreeRows>, StoreError>>;

    /// The DTs whose current configuration uses `asset` (in `version`, when given).
    fn impact(
        &self,
        asset: String,
        version: Option<String>,
    ) -> BoxFuture<'_, Result<Vec<AssetUser>, StoreError>>;

    /// Lifecycle transitions of `dt`, oldest first, at most `limit`.
    fn history(&self, dt: String, limit: u32)
        -> BoxFuture<'_, Result<Vec<Transition>, StoreError>>;

    /// Status rows of the first `limit` commands to `pt` whose first status lies in
    /// `[from, to)`, ordered by `(first_at, id, at)`.
    fn commands(
        &self,
        pt: String,
        from: i64,
        to: i64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<CommandStatusRow>, StoreError>>;

    /// The processes of `dt` and/or on exec node `node` (at least one is given), of
    /// DTs recorded as `owner`'s (any DT's when `None`), ordered by DT and role, at
    /// most `limit`.
    fn processes(
        &self,
        dt: Option<String>,
        node: Option<String>,
        owner: Option<String>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<DtProcess>, StoreError>>;

    /// Runs raw Cypher and commits it; only the Neo4j backend can.
    fn cypher(
        &self,
        query: String,
        params: serde_json::Map<String, serde_json::Value>,
    ) -> BoxFuture<'_, Result<Vec<serde_json::Value>, StoreError>> {
        let _ = (query, params);
        Box::pin(async {
            Err(StoreError::Unsupported(
                "graph.cypher needs the neo4j backend (DTAAS_GRAPH_BACKEND=neo4j)".into(),
            ))
        })
    }
}

/// Builds the nested tree from flat rows; children, assets and PTs sorted, and a DT
/// reached twice (shared child) appears under each parent; cycles are cut.
pub fn assemble_tree(root: &str, rows: TreeRows) -> DtNode {
    let dts: HashMap<String, DtRow> = rows.dts.into_iter().map(|d| (d.id.clone(), d)).collect();
    let mut children: HashMap<String, Vec<String>> = HashMap::new();
    for (parent, child) in rows.edges {
        children.entry(parent).or_default().push(child);
    }
    let mut assets: HashMap<String, Vec<AssetUseNode>> = HashMap::new();
    for (dt, asset) in rows.assets {
        assets.entry(dt).or_default().push(asset);
    }
    let mut pts: HashMap<String, Vec<PtNode>> = HashMap::new();
    for (dt, pt) in rows.pts {
        pts.entry(dt).or_default().push(pt);
    }
    let mut processes: HashMap<String, Vec<ProcessNode>> = HashMap::new();
    for (dt, process) in rows.processes {
        processes.entry(dt).or_default().push(process);
    }
    let parts = Parts {
        dts,
        children,
        assets,
        pts,
        processes,
        exports: grouped(rows.exports),
        reads: grouped(rows.reads),
    };
    parts.node(root, &mut HashSet::new())
}

/// `(dt, item)` rows as each DT's items, sorted, each once.
fn grouped<T: Ord>(rows: Vec<(String, T)>) -> HashMap<String, Vec<T>> {
    let mut by_dt: HashMap<String, Vec<T>> = HashMap::new();
    for (dt, item) in rows {
        by_dt.entry(dt).or_default().push(item);
    }
    for items in by_dt.values_mut() {
        items.sort();
        items.dedup();
    }
    by_dt
}

struct Parts {
    dts: HashMap<String, DtRow>,
    children: HashMap<String, Vec<String>>,
    assets: HashMap<String, Vec<AssetUseNode>>,
    pts: HashMap<String, Vec<PtNode>>,
    processes: HashMap<String, Vec<ProcessNode>>,
    exports: HashMap<String, Vec<String>>,
    reads: HashMap<String, Vec<DtRead>>,
}

impl Parts {
    fn node(&self, id: &str, path: &mut HashSet<String>) -> DtNode {
        path.insert(id.to_owned());
        let row = self.dts.get(id);
        let mut assets = self.assets.get(id).cloned().unwrap_or_default();
        assets.sort_by(|a, b| (&a.name, &a.id, &a.version).cmp(&(&b.name, &b.id, &b.version)));
        assets.dedup();
        let mut pts = self.pts.get(id).cloned().unwrap_or_default();
        pts.sort_by(|a, b| a.id.cmp(&b.id));
        pts.dedup();
        let mut processes = self.processes.get(id).cloned().unwrap_or_default();
        processes.sort_by(|a, b| a.role.cmp(&b.role));
        processes.dedup();
        let mut child_ids = self.children.get(id).cloned().unwrap_or_default();
        child_ids.sort();
        child_ids.dedup();
        let mut children = Vec::with_capacity(child_ids.len());
        for child in &child_ids {
            if !path.contains(child) {
                children.push(self.node(child, path));
            }
        }
        path.remove(id);
        DtNode {
            id: id.to_owned(),
            state: row.and_then(|r| r.state.clone()),
            description: row.and_then(|r| r.description.clone()),
            fork_of: row.and_then(|r| r.fork_of.clone()),
            assets,
            pts,
            children,
            processes,
            exports: self.exports.get(id).cloned().unwrap_or_default(),
            reads: self.reads.get(id).cloned().unwrap_or_default(),
        }
    }
}

/// Groups status rows (ordered by first_at, id, at) into commands.
pub fn assemble_commands(rows: Vec<CommandStatusRow>) -> Vec<CommandRecord> {
    let mut order: Vec<String> = Vec::new();
    let mut by_id: BTreeMap<String, CommandRecord> = BTreeMap::new();
    for row in rows {
        let record = by_id.entry(row.id.clone()).or_insert_with(|| {
            order.push(row.id.clone());
            CommandRecord {
                id: row.id.clone(),
                command: row.command.clone(),
                status: String::new(),
                first_at: row.first_at,
                history: Vec::new(),
            }
        });
        record.history.push(StatusChange {
            status: row.status,
            at: row.at,
            reason: row.reason,
        });
    }
    let mut records: Vec<CommandRecord> = order
        .into_iter()
        .filter_map(|id| by_id.remove(&id))
        .map(|mut r| {
            r.history.sort_by_key(|s| (s.at, rank(&s.status)));
            r.history.dedup();
            r.status = r
                .history
                .last()
                .map(|s| s.status.clone())
                .unwrap_or_default();
            r
        })
        .collect();
    records.sort_by(|a, b| (a.first_at, &a.id).cmp(&(b.first_at, &b.id)));
    records
}

/// Order of statuses that share a timestamp: the life order of a command.
fn rank(status: &str) -> u8 {
    match status {
        "accepted" => 0,
        "sent" => 1,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dt(id: &str) -> DtRow {
        DtRow {
            id: id.into(),
            state: None,
            description: None,
            fork_of: None,
        }
    }

    #[test]
    fn shared_children_repeat_and_cycles_are_cut() {
        let edge = |p: &str, c: &str| (p.to_owned(), c.to_owned());
        let rows = TreeRows {
            dts: vec![dt("a"), dt("b"), dt("c"), dt("s")],
            edges: vec![
                edge("a", "c"),
                edge("a", "b"),
                edge("b", "s"),
                edge("c", "s"),
                edge("s", "a"),
            ],
            ..TreeRows::default()
        };
        let tree = assemble_tree("a", rows);
        let ids: Vec<_> = tree.children.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["b", "c"], "sorted");
        assert_eq!(tree.children[0].children[0].id, "s");
        assert_eq!(
            tree.children[1].children[0].id, "s",
            "shared child under both"
        );
        assert!(
            tree.children[0].children[0].children.is_empty(),
            "cycle back to a cut"
        );
    }

    #[test]
    fn commands_group_with_latest_status() {
        let row = |id: &str, status: &str, at: i64| CommandStatusRow {
            id: id.into(),
            command: "stop".into(),
            first_at: if id == "x" { 5 } else { 1 },
            status: status.into(),
            at,
            reason: None,
        };
        let records = assemble_commands(vec![
            row("y", "sent", 2),
            row("y", "accepted", 1),
            row("x", "accepted", 5),
            row("x", "sent", 5),
            row("y", "sent", 2),
        ]);
        assert_eq!(records[0].id, "y");
        assert_eq!(records[0].status, "sent");
        assert_eq!(records[0].history.len(), 2, "duplicates removed");
        assert_eq!(records[1].status, "sent", "same time: life order decides");
    }
}
