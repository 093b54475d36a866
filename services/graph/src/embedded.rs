//! The embedded backend: the graph in a SQLite file (`graph.sqlite` under
//! `DTAAS_DATA_DIR`), with node, edge, export, transition, command and process tables and a
//! recursive CTE for composition trees.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dtaas_schemas::graph::{AssetUseNode, AssetUser, DtProcess, DtRead, PtNode, Transition};
use futures::future::BoxFuture;
use rusqlite::{params, Connection, OptionalExtension};

use crate::model::{Batch, MAX_DEPTH, TERMINATED};
use crate::store::{CommandStatusRow, DtRow, GraphStore, StoreError, TreeRows};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS dt (
    id TEXT PRIMARY KEY,
    description TEXT,
    state TEXT,
    state_at INTEGER,
    config_at INTEGER,
    config_version INTEGER,
    fork_of TEXT,
    owner TEXT
);
CREATE TABLE IF NOT EXISTS asset (
    id TEXT NOT NULL,
    version TEXT NOT NULL,
    kind TEXT,
    PRIMARY KEY (id, version)
);
CREATE TABLE IF NOT EXISTS pt (id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS uses (
    dt TEXT NOT NULL,
    name TEXT NOT NULL,
    asset TEXT NOT NULL,
    version TEXT NOT NULL,
    PRIMARY KEY (dt, name, asset, version)
);
CREATE INDEX IF NOT EXISTS uses_asset ON uses (asset, version);
CREATE TABLE IF NOT EXISTS mirrors (
    dt TEXT NOT NULL,
    pt TEXT NOT NULL,
    signals TEXT NOT NULL,
    commands TEXT NOT NULL,
    PRIMARY KEY (dt, pt)
);
CREATE TABLE IF NOT EXISTS child (
    parent TEXT NOT NULL,
    child TEXT NOT NULL,
    PRIMARY KEY (parent, child)
);
CREATE TABLE IF NOT EXISTS export (
    dt TEXT NOT NULL,
    subject TEXT NOT NULL,
    PRIMARY KEY (dt, subject)
);
CREATE TABLE IF NOT EXISTS reads (
    dt TEXT NOT NULL,
    source TEXT NOT NULL,
    output TEXT NOT NULL,
    PRIMARY KEY (dt, source, output)
);
CREATE TABLE IF NOT EXISTS transition (
    dt TEXT NOT NULL,
    at INTEGER NOT NULL,
    to_state TEXT NOT NULL,
    from_state TEXT,
    user TEXT NOT NULL,
    config_version INTEGER,
    detail TEXT,
    PRIMARY KEY (dt, at, to_state)
);
CREATE TABLE IF NOT EXISTS command (
    id TEXT PRIMARY KEY,
    pt TEXT NOT NULL,
    command TEXT NOT NULL,
    first_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS command_pt ON command (pt, first_at);
CREATE TABLE IF NOT EXISTS command_status (
    id TEXT NOT NULL,
    status TEXT NOT NULL,
    at INTEGER NOT NULL,
    reason TEXT,
    PRIMARY KEY (id, status, at)
);
CREATE TABLE IF NOT EXISTS exec_node (id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS process (
    dt TEXT NOT NULL,
    role TEXT NOT NULL,
    node TEXT NOT NULL,
    pid INTEGER NOT NULL,
    status TEXT NOT NULL,
    restarts INTEGER NOT NULL,
    exit_code INTEGER,
    at INTEGER NOT NULL,
    PRIMARY KEY (dt, role)
);
CREATE INDEX IF NOT EXISTS process_node ON process (node, dt, role);
";

/// The SQLite graph: one connection writes, another reads (WAL lets them overlap).
pub struct EmbeddedStore {
    writer: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Constraint and type failures come back the same on every retry, so they are
/// `Rejected`; locks, I/O and permissions are worth retrying.
fn classify(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::{ConstraintViolation, TooBig, TypeMismatch};
    match e.sqlite_error_code() {
        Some(ConstraintViolation | TooBig | TypeMismatch) => StoreError::Rejected(e.to_string()),
        _ => unavailable(e),
    }
}

impl EmbeddedStore {
    /// Opens (creating) `dir/graph.sqlite`; `busy` is how long a write waits for a
    /// lock before it fails and is retried by the consumer.
    pub fn open(dir: &Path, busy: Duration) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| unavailable(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("graph.sqlite");
        let open = || -> Result<Connection, StoreError> {
            let conn = Connection::open(&path)
                .map_err(|e| unavailable(format!("cannot open {}: {e}", path.display())))?;
            conn.busy_timeout(busy).map_err(unavailable)?;
            Ok(conn)
        };
        let writer = open()?;
        writer
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(unavailable)?;
        writer
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(unavailable)?;
        writer.execute_batch(SCHEMA).map_err(unavailable)?;
        add_owner_column(&writer).map_err(unavailable)?;
        Ok(Self {
            writer: Arc::new(Mutex::new(writer)),
            reader: Arc::new(Mutex::new(open()?)),
        })
    }

    /// Runs `f` on a connection in the blocking pool.
    fn with<T, F>(conn: &Arc<Mutex<Connection>>, f: F) -> BoxFuture<'static, Result<T, StoreError>>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let conn = conn.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
                f(&mut conn).map_err(classify)
            })
            .await
            .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
        })
    }
}

/// A graph file from before owners were recorded gets the `owner` column (empty: its
/// DTs are seen by admins only until their next event names the owner).
fn add_owner_column(conn: &Connection) -> rusqlite::Result<()> {
    let has: bool = conn.query_row(
        "SELECT count(*) FROM pragma_table_info('dt') WHERE name = 'owner'",
        [],
        |r| r.get::<_, i64>(0).map(|n| n > 0),
    )?;
    if !has {
        conn.execute_batch("ALTER TABLE dt ADD COLUMN owner TEXT")?;
    }
    Ok(())
}

fn write_batch(conn: &mut Connection, batch: &Batch) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut add_dt =
            tx.prepare_cached("INSERT INTO dt (id) VALUES (?1) ON CONFLICT DO NOTHING")?;
        let mut set_state = tx.prepare_cached(
            "UPDATE dt SET state = ?2, state_at = ?3, fork_of = coalesce(?4, fork_of),
                 owner = coalesce(?5, owner)
             WHERE id = ?1 AND coalesce(state_at, -9223372036854775808) <= ?3",
        )?;
        for row in &batch.states {
            add_dt.execute([&row.dt])?;
            set_state.execute(params![row.dt, row.state, row.at, row.fork_of, row.owner])?;
        }
        let mut set_config = tx.prepare_cached(
            "UPDATE dt SET config_at = ?2, description = ?3, config_version = ?4,
                 owner = coalesce(?5, owner)
             WHERE id = ?1 AND coalesce(config_at, -9223372036854775808) <= ?2",
        )?;
        let mut add_asset = tx.prepare_cached(
            "INSERT INTO asset (id, version, kind) VALUES (?1, ?2, ?3)
             ON CONFLICT DO UPDATE SET kind = coalesce(excluded.kind, kind)",
        )?;
        let mut add_pt =
            tx.prepare_cached("INSERT INTO pt (id) VALUES (?1) ON CONFLICT DO NOTHING")?;
        let mut add_use =
            tx.prepare_cached("INSERT OR IGNORE INTO uses VALUES (?1, ?2, ?3, ?4)")?;
        let mut add_mirror =
            tx.prepare_cached("INSERT OR REPLACE INTO mirrors VALUES (?1, ?2, ?3, ?4)")?;
        let mut add_child = tx.prepare_cached("INSERT OR IGNORE INTO child VALUES (?1, ?2)")?;
        let mut add_export = tx.prepare_cached("INSERT OR IGNORE INTO export VALUES (?1, ?2)")?;
        let mut add_read = tx.prepare_cached("INSERT OR IGNORE INTO reads VALUES (?1, ?2, ?3)")?;
        for row in &batch.configs {
            add_dt.execute([&row.dt])?;
            let set = params![
                row.dt,
                row.at,
                row.description,
                row.config_version,
                row.owner
            ];
            if set_config.execute(set)? == 0 {
                continue; // a newer configuration is already stored
            }
            tx.execute("DELETE FROM uses WHERE dt = ?1", [&row.dt])?;
            tx.execute("DELETE FROM mirrors WHERE dt = ?1", [&row.dt])?;
            tx.execute("DELETE FROM child WHERE parent = ?1", [&row.dt])?;
            tx.execute("DELETE FROM export WHERE dt = ?1", [&row.dt])?;
            tx.execute("DELETE FROM reads WHERE dt = ?1", [&row.dt])?;
            for a in &row.assets {
                add_asset.execute(params![a.asset, a.version, a.kind])?;
                add_use.execute(params![row.dt, a.name, a.asset, a.version])?;
            }
            for p in &row.pts {
                add_pt.execute([&p.pt])?;
                let signals = serde_json::to_string(&p.signals).unwrap_or_default();
                let commands = serde_json::to_string(&p.commands).unwrap_or_default();
                add_mirror.execute(params![row.dt, p.pt, signals, commands])?;
            }
            for c in &row.children {
                add_dt.execute([c])?;
                add_child.execute(params![row.dt, c])?;
            }
            for subject in &row.exports {
                add_export.execute(params![row.dt, subject])?;
            }
            for r in &row.reads {
                add_dt.execute([&r.source])?;
                add_read.execute(params![row.dt, r.source, r.output])?;
            }
        }
        // A parent's newer configuration decides its children: an older event's
        // `parent` field (replayed, or batched after it) adds no edge.
        let mut add_parent = tx.prepare_cached(
            "INSERT OR IGNORE INTO child SELECT ?1, ?2
             WHERE NOT EXISTS (SELECT 1 FROM dt WHERE id = ?1 AND config_at > ?3)",
        )?;
        for row in &batch.parents {
            add_dt.execute([&row.parent])?;
            add_dt.execute([&row.child])?;
            add_parent.execute(params![row.parent, row.child, row.at])?;
        }
        let mut add_transition = tx.prepare_cached(
            "INSERT OR IGNORE INTO transition VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for t in &batch.transitions {
            add_transition.execute(params![
                t.dt,
                t.at,
                t.to,
                t.from,
                t.user,
                t.config_version,
                t.detail
            ])?;
        }
        let mut add_command = tx.prepare_cached(
            "INSERT INTO command (id, pt, command, first_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT DO UPDATE SET first_at = min(first_at, excluded.first_at)",
        )?;
        let mut add_status =
            tx.prepare_cached("INSERT OR IGNORE INTO command_status VALUES (?1, ?2, ?3, ?4)")?;
        for c in &batch.commands {
            add_pt.execute([&c.pt])?;
            add_command.execute(params![c.id, c.pt, c.command, c.at])?;
            add_status.execute(params![c.id, c.status, c.at, c.reason])?;
        }
        let mut add_node =
            tx.prepare_cached("INSERT INTO exec_node (id) VALUES (?1) ON CONFLICT DO NOTHING")?;
        // Only a newer (or equally new) event moves a process: replays change nothing.
        let mut set_process = tx.prepare_cached(
            "INSERT INTO process VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (dt, role) DO UPDATE SET node = excluded.node, pid = excluded.pid,
                 status = excluded.status, restarts = excluded.restarts,
                 exit_code = excluded.exit_code, at = excluded.at
             WHERE excluded.at >= process.at",
        )?;
        for p in &batch.processes {
            add_dt.execute([&p.dt])?;
            add_node.execute([&p.node])?;
            set_process.execute(params![
                p.dt,
                p.role,
                p.node,
                p.pid,
                p.status,
                p.restarts,
                p.exit_code,
                p.at
            ])?;
        }
        // A terminated DT runs nothing: a process still shown running (its node died
        // before it could report the kill) ends with the transition.
        let mut end_processes = tx.prepare_cached(
            "UPDATE process SET status = 'killed', at = ?2
             WHERE dt = ?1 AND status = 'running' AND at <= ?2",
        )?;
        for row in batch.states.iter().filter(|s| s.state == TERMINATED) {
            end_processes.execute(params![row.dt, row.at])?;
        }
    }
    tx.commit()
}

/// The DTs under `root` (root included), at most `MAX_DEPTH` levels down.
const SUBTREE: &str = "
WITH RECURSIVE sub(id, depth) AS (
    SELECT ?1, 0
    UNION
    SELECT child.child, sub.depth + 1 FROM child JOIN sub ON child.parent = sub.id
    WHERE sub.depth < ?2
)";

fn read_tree(conn: &mut Connection, root: &str) -> rusqlite::Result<Option<TreeRows>> {
    let exists: Option<i64> = conn
        .query_row("SELECT 1 FROM dt WHERE id = ?1", [root], |r| r.get(0))
        .optional()?;
    if exists.is_none() {
        return Ok(None);
    }
    let sub = Subtree { conn, root };
    Ok(Some(TreeRows {
        dts: sub.rows(
            "dt.id, dt.state, dt.description, dt.fork_of FROM sub JOIN dt ON dt.id = sub.id",
            |r| {
                Ok(DtRow {
                    id: r.get(0)?,
                    state: r.get(1)?,
                    description: r.get::<_, Option<String>>(2)?.filter(|d| !d.is_empty()),
                    fork_of: r.get(3)?,
                })
            },
        )?,
        edges: sub.rows(
            "child.parent, child.child FROM sub JOIN child ON child.parent = sub.id",
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?,
        assets: sub.rows(
            "uses.dt, uses.name, uses.asset, uses.version, asset.kind
             FROM sub JOIN uses ON uses.dt = sub.id
             LEFT JOIN asset ON asset.id = uses.asset AND asset.version = uses.version",
            |r| {
                let node = AssetUseNode {
                    name: r.get(1)?,
                    id: r.get(2)?,
                    version: r.get(3)?,
                    kind: r.get(4)?,
                };
                Ok((r.get(0)?, node))
            },
        )?,
        pts: sub.rows(
            "mirrors.dt, mirrors.pt, mirrors.signals, mirrors.commands
             FROM sub JOIN mirrors ON mirrors.dt = sub.id",
            |r| {
                let list = |i| -> rusqlite::Result<Vec<String>> {
                    Ok(serde_json::from_str(&r.get::<_, String>(i)?).unwrap_or_default())
                };
                let node = PtNode {
                    id: r.get(1)?,
                    signals: list(2)?,
                    commands: list(3)?,
                };
                Ok((r.get(0)?, node))
            },
        )?,
        processes: sub.rows(
            &format!("{PROCESS_COLUMNS} FROM sub JOIN process ON process.dt = sub.id"),
            |r| process_row(r).map(DtProcess::node),
        )?,
        exports: sub.rows(
            "export.dt, export.subject FROM sub JOIN export ON export.dt = sub.id",
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?,
        reads: sub.rows(
            "reads.dt, reads.source, reads.output FROM sub JOIN reads ON reads.dt = sub.id",
            |r| {
                let read = DtRead {
                    dt: r.get(1)?,
                    output: r.get(2)?,
                };
                Ok((r.get(0)?, read))
            },
        )?,
    }))
}

/// Queries over the DTs under one root (see `SUBTREE`).
struct Subtree<'a> {
    conn: &'a Connection,
    root: &'a str,
}

impl Subtree<'_> {
    /// `SELECT DISTINCT <select>` over the subtree, each row read by `row`.
    fn rows<T>(
        &self,
        select: &str,
        row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<Vec<T>> {
        let mut stmt = self
            .conn
            .prepare(&format!("{SUBTREE} SELECT DISTINCT {select}"))?;
        let rows = stmt.query_map(params![self.root, MAX_DEPTH as i64], row)?;
        rows.collect()
    }
}

/// The columns `process_row` reads.
const PROCESS_COLUMNS: &str =
    "process.dt, process.role, process.node, process.pid, process.status, process.restarts, \
     process.exit_code, process.at";

fn process_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DtProcess> {
    Ok(DtProcess {
        dt: r.get(0)?,
        role: r.get(1)?,
        node: r.get(2)?,
        pid: r.get(3)?,
        status: r.get(4)?,
        restarts: r.get(5)?,
        exit_code: r.get(6)?,
        at: r.get(7)?,
    })
}

impl GraphStore for EmbeddedStore {
    fn write(&self, batch: &Batch) -> BoxFuture<'_, Result<(), StoreError>> {
        let batch = batch.clone();
        Self::with(&self.writer, move |conn| write_batch(conn, &batch))
    }

    fn owners(
        &self,
        dts: Vec<String>,
    ) -> BoxFuture<'_, Result<HashMap<String, String>, StoreError>> {
        Self::with(&self.reader, move |conn| {
            let ids = serde_json::to_string(&dts).unwrap_or_default();
            let mut stmt = conn.prepare_cached(
                "SELECT id, owner FROM dt
                 WHERE owner IS NOT NULL AND id IN (SELECT value FROM json_each(?1))",
            )?;
            let owners = stmt
                .query_map([ids], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect();
            owners
        })
    }

    fn tree(&self, dt: String) -> BoxFuture<'_, Result<Option<TreeRows>, StoreError>> {
        Self::with(&self.reader, move |conn| read_tree(conn, &dt))
    }

    fn impact(
        &self,
        asset: String,
        version: Option<String>,
    ) -> BoxFuture<'_, Result<Vec<AssetUser>, StoreError>> {
        Self::with(&self.reader, move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT dt, version, name FROM uses
                 WHERE asset = ?1 AND (?2 IS NULL OR version = ?2)
                 ORDER BY dt, version, name",
            )?;
            let users = stmt
                .query_map(params![asset, version], |r| {
                    Ok(AssetUser {
                        dt: r.get(0)?,
                        version: r.get(1)?,
                        name: r.get(2)?,
                    })
                })?
                .collect();
            users
        })
    }

    fn history(
        &self,
        dt: String,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<Transition>, StoreError>> {
        Self::with(&self.reader, move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT from_state, to_state, at, user, config_version, detail FROM transition
                 WHERE dt = ?1 ORDER BY at, to_state LIMIT ?2",
            )?;
            let transitions = stmt
                .query_map(params![dt, limit], |r| {
                    Ok(Transition {
                        from: r.get(0)?,
                        to: r.get(1)?,
                        at: r.get(2)?,
                        user: r.get(3)?,
                        config_version: r.get(4)?,
                        detail: r.get(5)?,
                    })
                })?
                .collect();
            transitions
        })
    }

    fn processes(
        &self,
        dt: Option<String>,
        node: Option<String>,
        owner: Option<String>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<DtProcess>, StoreError>> {
        Self::with(&self.reader, move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {PROCESS_COLUMNS} FROM process
                 WHERE (?1 IS NULL OR dt = ?1) AND (?2 IS NULL OR node = ?2)
                   AND (?4 IS NULL OR dt IN (SELECT id FROM dt WHERE owner = ?4))
                 ORDER BY dt, role LIMIT ?3"
            ))?;
            let rows = stmt
                .query_map(params![dt, node, limit, owner], process_row)?
                .collect();
            rows
        })
    }

    fn commands(
        &self,
        pt: String,
        from: i64,
        to: i64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<CommandStatusRow>, StoreError>> {
        Self::with(&self.reader, move |conn| {
            let mut stmt = conn.prepare_cached(
                "WITH c AS (
                    SELECT id, command, first_at FROM command
                    WHERE pt = ?1 AND first_at >= ?2 AND first_at < ?3
                    ORDER BY first_at, id LIMIT ?4
                 )
                 SELECT c.id, c.command, c.first_at, s.status, s.at, s.reason
                 FROM c JOIN command_status s ON s.id = c.id
                 ORDER BY c.first_at, c.id, s.at",
            )?;
            let rows = stmt
                .query_map(params![pt, from, to, limit], |r| {
                    Ok(CommandStatusRow {
                        id: r.get(0)?,
                        command: r.get(1)?,
                        first_at: r.get(2)?,
                        status: r.get(3)?,
                        at: r.get(4)?,
                        reason: r.get(5)?,
                    })
                })?
                .collect();
            rows
        })
    }
}
