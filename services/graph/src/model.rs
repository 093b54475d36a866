//! Events → graph mutations: a `Batch` of rows, one list per kind of write.
//!
//! Every row is written with MERGE semantics, so applying a batch twice leaves the same
//! graph. Configurations replace a DT's assets, PTs and children only when they are at
//! least as new as the one stored (`config_at`), and states move only forward in time,
//! so replaying old events never rolls the graph back. A `deleted` transition is a
//! configuration with nothing in it: the DT keeps its node and history, no edges.

use std::collections::HashMap;

use dtaas_schemas::command::CommandStatusEvent;
use dtaas_schemas::dt_config::DtConfig;
use dtaas_schemas::exec::{ProcessEvent, ProcessEventKind};
use dtaas_schemas::graph::DtProcess;
use dtaas_schemas::lifecycle::{LifecycleEvent, LifecycleState};
use dtaas_schemas::subject::{parse_dt_output, validate_token};
use serde::Serialize;

/// A DT node and, when the event set one, its latest state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateRow {
    pub dt: String,
    pub state: String,
    pub at: i64,
    pub fork_of: Option<String>,
    /// The user the DT belongs to, when the event names one.
    pub owner: Option<String>,
}

/// The newest configuration of one DT seen in a batch (children have their own row).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfigRow {
    pub dt: String,
    pub at: i64,
    /// The owner of the event's DT: its children belong to the same user.
    pub owner: Option<String>,
    pub description: String,
    pub config_version: Option<i64>,
    pub assets: Vec<UseRow>,
    pub pts: Vec<PtRow>,
    pub children: Vec<String>,
    /// `C_e` exports as subjects (`dtaas.v1.dt.<dt>.out.<output>`), sorted.
    pub exports: Vec<String>,
    /// Outputs of other DTs the DT's inputs are wired to, sorted.
    pub reads: Vec<ReadRow>,
}

/// `(dt)-[:READS {output}]->(source dt)`: an input wired to another DT's output.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ReadRow {
    pub source: String,
    pub output: String,
}

/// `(dt)-[:USES {name}]->(asset {id, version, kind})`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UseRow {
    pub name: String,
    pub asset: String,
    pub version: String,
    pub kind: Option<String>,
}

/// `(dt)-[:MIRRORS {signals, commands}]->(pt)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PtRow {
    pub pt: String,
    pub signals: Vec<String>,
    pub commands: Vec<String>,
}

/// `(parent)-[:HAS_CHILD]->(child)` declared by an event's `parent` field at `at`;
/// not added when the parent has a newer configuration (which names its children).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParentRow {
    pub parent: String,
    pub child: String,
    pub at: i64,
}

/// A lifecycle transition, keyed by `(dt, at, to)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TransitionRow {
    pub dt: String,
    pub from: Option<String>,
    pub to: String,
    pub at: i64,
    pub user: String,
    pub config_version: Option<i64>,
    pub detail: Option<String>,
}

/// A command status, keyed by `(id, status, at)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommandRow {
    pub id: String,
    pub pt: String,
    pub command: String,
    pub status: String,
    pub at: i64,
    pub reason: Option<String>,
}

/// The writes of a batch of events, ready for one store transaction.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Batch {
    pub states: Vec<StateRow>,
    /// At most one row per DT: the newest configuration of the batch.
    pub configs: Vec<ConfigRow>,
    pub parents: Vec<ParentRow>,
    pub transitions: Vec<TransitionRow>,
    pub commands: Vec<CommandRow>,
    /// `(dt)-[:RUNS]->(process {dt, role, …})-[:RUNS_ON]->(exec node)`, keyed by
    /// `(dt, role)`: at most one row each, the newest process event of the batch.
    pub processes: Vec<DtProcess>,
    /// Index of each DT's row in `configs`.
    config_index: HashMap<String, usize>,
    /// Index of each `(dt, role)` in `processes`.
    process_index: HashMap<(String, String), usize>,
}

/// An event that cannot enter the graph; the reason goes to the DLQ.
pub use dtaas_runtime::consumer::Invalid;

/// The state after which a DT runs no process: its processes still `running` in the
/// graph become `killed` at the transition.
pub const TERMINATED: &str = "terminated";

/// How deep a configuration may nest children; deeper ones are rejected.
pub const MAX_DEPTH: usize = 32;

impl Batch {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
            && self.configs.is_empty()
            && self.parents.is_empty()
            && self.transitions.is_empty()
            && self.commands.is_empty()
            && self.processes.is_empty()
    }

    /// Adds a lifecycle event that arrived on `dtaas.v1.evt.dt.<subject_dt>.<…>`.
    pub fn add_lifecycle(
        &mut self,
        subject_dt: &str,
        event: &LifecycleEvent,
    ) -> Result<(), Invalid> {
        if event.dt != subject_dt {
            return Err(Invalid(format!(
                "field `dt` is {:?} but the subject names DT {subject_dt:?}",
                event.dt
            )));
        }
        check_id("field `dt`", &event.dt)?;
        if let Some(parent) = &event.parent {
            check_id("field `parent`", parent)?;
        }
        if let Some(config) = &event.config {
            if config.id != event.dt {
                return Err(Invalid(format!(
                    "field `config.id` is {:?} but the event is about DT {:?}",
                    config.id, event.dt
                )));
            }
            // Validate the whole tree first so a bad child leaves nothing half-added.
            check_config(config, "config", 0)?;
        }
        let config_version = event.config_version.map(|v| v as i64);
        let owner = self.owner_of(event);
        self.states.push(StateRow {
            dt: event.dt.clone(),
            state: event.to.as_str().to_owned(),
            at: event.at,
            fork_of: event.fork_of.clone(),
            owner: owner.clone(),
        });
        self.transitions.push(TransitionRow {
            dt: event.dt.clone(),
            from: event.from.map(|s| s.as_str().to_owned()),
            to: event.to.as_str().to_owned(),
            at: event.at,
            user: event.user.clone(),
            config_version,
            detail: event.detail.clone(),
        });
        if let Some(parent) = &event.parent {
            self.parents.push(ParentRow {
                parent: parent.clone(),
                child: event.dt.clone(),
                at: event.at,
            });
        }
        if event.to == LifecycleState::Deleted {
            // A deleted DT uses, mirrors and includes nothing any more; its node and
            // its transitions stay as its history.
            let nothing = DtConfig {
                id: event.dt.clone(),
                ..DtConfig::default()
            };
            self.add_config(&nothing, event.at, config_version, &owner);
        } else if let Some(config) = &event.config {
            self.add_config(config, event.at, config_version, &owner);
        }
        Ok(())
    }

    /// The owner `event` names; an event from before owners were recorded names none,
    /// but its `created` was caused by the owner, and a later event of the same DT in
    /// this batch keeps the owner an earlier one named.
    fn owner_of(&self, event: &LifecycleEvent) -> Option<String> {
        event
            .owner
            .clone()
            .or_else(|| (event.to == LifecycleState::Created).then(|| event.user.clone()))
            .or_else(|| {
                self.states
                    .iter()
                    .rev()
                    .find(|s| s.dt == event.dt)
                    .and_then(|s| s.owner.clone())
            })
    }

    fn add_config(
        &mut self,
        config: &DtConfig,
        at: i64,
        config_version: Option<i64>,
        owner: &Option<String>,
    ) {
        let row = ConfigRow {
            dt: config.id.clone(),
            at,
            owner: owner.clone(),
            description: config.description.clone(),
            // The version number belongs to the top-level DT's configuration.
            config_version,
            assets: config
                .assets
                .iter()
                .map(|a| {
                    let (asset, version) = split_address(&a.asset);
                    UseRow {
                        name: a.name.clone(),
                        asset: asset.to_owned(),
                        version: version.to_owned(),
                        kind: None,
                    }
                })
                .collect(),
            pts: config
                .pt
                .iter()
                .map(|p| PtRow {
                    pt: p.id.clone(),
                    signals: p.signals.clone(),
                    commands: p.commands.clone(),
                })
                .collect(),
            children: config.children.iter().map(|c| c.id.clone()).collect(),
            exports: {
                let mut subjects = config.external.export_subjects(&config.id);
                subjects.sort();
                subjects.dedup();
                subjects
            },
            reads: reads(config),
        };
        match self.config_index.get(&config.id) {
            // Same or newer time wins; on a tie the later event in the stream wins.
            Some(&i) if self.configs[i].at <= at => self.configs[i] = row,
            Some(_) => {}
            None => {
                self.config_index
                    .insert(config.id.clone(), self.configs.len());
                self.configs.push(row);
            }
        }
        for child in &config.children {
            self.add_config(child, at, None, owner);
        }
    }

    /// Adds a command status event that arrived on `dtaas.v1.evt.cmd.<subject_id>.<…>`.
    pub fn add_command(
        &mut self,
        subject_id: &str,
        event: &CommandStatusEvent,
    ) -> Result<(), Invalid> {
        if event.id != subject_id {
            return Err(Invalid(format!(
                "field `id` is {:?} but the subject names command {subject_id:?}",
                event.id
            )));
        }
        check_id("field `pt`", &event.pt)?;
        check_id("field `command`", &event.command)?;
        self.commands.push(CommandRow {
            id: event.id.clone(),
            pt: event.pt.clone(),
            command: event.command.clone(),
            status: event.status.as_str().to_owned(),
            at: event.at,
            reason: event.reason.clone(),
        });
        Ok(())
    }

    /// Adds a process event that arrived on `dtaas.v1.evt.proc.<subject_dt>.<…>`.
    pub fn add_process(&mut self, subject_dt: &str, event: &ProcessEvent) -> Result<(), Invalid> {
        if event.dt != subject_dt {
            return Err(Invalid(format!(
                "field `dt` is {:?} but the subject names DT {subject_dt:?}",
                event.dt
            )));
        }
        check_id("field `dt`", &event.dt)?;
        check_id("field `role`", &event.role)?;
        check_id("field `node`", &event.node)?;
        let status = match event.status {
            // A restart is a new run: the process runs again.
            ProcessEventKind::Started | ProcessEventKind::Restarted => "running",
            other => other.as_str(),
        };
        let row = DtProcess {
            dt: event.dt.clone(),
            role: event.role.clone(),
            node: event.node.clone(),
            pid: event.pid,
            status: status.to_owned(),
            restarts: event.restarts,
            exit_code: event.exit_code,
            at: event.at,
        };
        let key = (row.dt.clone(), row.role.clone());
        match self.process_index.get(&key) {
            // Same or newer time wins; on a tie the later event in the stream wins.
            Some(&i) if self.processes[i].at <= row.at => self.processes[i] = row,
            Some(_) => {}
            None => {
                self.process_index.insert(key, self.processes.len());
                self.processes.push(row);
            }
        }
        Ok(())
    }

    /// Every asset use of the batch, to fill in kinds from the asset library.
    pub fn asset_uses_mut(&mut self) -> impl Iterator<Item = &mut UseRow> {
        self.configs.iter_mut().flat_map(|c| c.assets.iter_mut())
    }
}

/// `owner/name@version` → (`owner/name`, `version`); no `@` leaves the version empty.
fn split_address(address: &str) -> (&str, &str) {
    address.rsplit_once('@').unwrap_or((address, ""))
}

fn check_id(what: &'static str, id: &str) -> Result<(), Invalid> {
    validate_token(what, id).map_err(|e| Invalid(e.to_string()))
}

fn check_config(config: &DtConfig, path: &str, depth: usize) -> Result<(), Invalid> {
    if depth > MAX_DEPTH {
        return Err(Invalid(format!(
            "`{path}` nests children deeper than {MAX_DEPTH} levels"
        )));
    }
    validate_token("DT id", &config.id).map_err(|e| Invalid(format!("`{path}.id`: {e}")))?;
    for (i, asset) in config.assets.iter().enumerate() {
        let (id, version) = split_address(&asset.asset);
        if id.is_empty() || version.is_empty() {
            return Err(Invalid(format!(
                "`{path}.assets[{i}].asset` is {:?}; the graph needs a resolved address \
                 `owner/name@version`",
                asset.asset
            )));
        }
    }
    for (i, pt) in config.pt.iter().enumerate() {
        validate_token("PT id", &pt.id).map_err(|e| Invalid(format!("`{path}.pt[{i}]`: {e}")))?;
    }
    for (i, child) in config.children.iter().enumerate() {
        check_config(child, &format!("{path}.children[{i}]"), depth + 1)?;
    }
    Ok(())
}

/// The other DTs' outputs `config`'s inputs are wired to (`dtaas.v1.dt.<dt>.out.<output>`
/// of a DT other than itself), sorted, each once.
fn reads(config: &DtConfig) -> Vec<ReadRow> {
    let mut rows: Vec<ReadRow> = config
        .assets
        .iter()
        .flat_map(|u| u.inputs.values())
        .filter_map(|source| parse_dt_output(source).ok())
        .filter(|(dt, _)| *dt != config.id)
        .map(|(dt, output)| ReadRow {
            source: dt.to_owned(),
            output: output.to_owned(),
        })
        .collect();
    rows.sort();
    rows.dedup();
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use dtaas_schemas::codec::decode;

    fn created(config: &str, at: i64) -> LifecycleEvent {
        let body = format!(r#"{{"dt":"f","to":"created","at":{at},"user":"u","config":{config}}}"#);
        decode(None, body.as_bytes()).unwrap()
    }

    #[test]
    fn configs_flatten_and_newest_wins() {
        let mut batch = Batch::default();
        let tree = r#"{"id":"f","children":[{"id":"r1","children":[{"id":"g1"}]}]}"#;
        batch.add_lifecycle("f", &created(tree, 5)).unwrap();
        let ids: Vec<_> = batch.configs.iter().map(|c| c.dt.as_str()).collect();
        assert_eq!(ids, ["f", "r1", "g1"]);
        batch
            .add_lifecycle("f", &created(r#"{"id":"f"}"#, 3))
            .unwrap();
        assert_eq!(batch.configs[0].children, ["r1"], "older config ignored");
        batch
            .add_lifecycle("f", &created(r#"{"id":"f"}"#, 9))
            .unwrap();
        assert!(batch.configs[0].children.is_empty(), "newer config wins");
        assert_eq!(batch.transitions.len(), 3);
    }

    #[test]
    fn the_newest_process_event_of_a_role_wins() {
        let event = |status: &str, at: i64, node: &str| -> ProcessEvent {
            let body = format!(
                r#"{{"dt":"f","role":"r","node":"{node}","pid":7,"status":"{status}","restarts":0,"at":{at}}}"#
            );
            decode(None, body.as_bytes()).unwrap()
        };
        let mut batch = Batch::default();
        batch.add_process("f", &event("started", 5, "n1")).unwrap();
        batch.add_process("f", &event("killed", 9, "n1")).unwrap();
        batch
            .add_process("f", &event("restarted", 7, "n2"))
            .unwrap();
        assert_eq!(batch.processes.len(), 1);
        assert_eq!(batch.processes[0].status, "killed");
        assert_eq!(batch.processes[0].node, "n1", "older event ignored");
        batch
            .add_process("f", &event("restarted", 11, "n2"))
            .unwrap();
        assert_eq!(batch.processes[0].status, "running");
        let err = batch
            .add_process("g", &event("started", 1, "n1"))
            .unwrap_err();
        assert!(err.0.contains("subject"), "{err}");
        let err = batch
            .add_process("f", &event("started", 1, "n 1"))
            .unwrap_err();
        assert!(err.0.contains("node"), "{err}");
    }

    #[test]
    fn a_deleted_dt_loses_its_edges_but_not_its_history() {
        let mut batch = Batch::default();
        let tree = r#"{"id":"f","assets":[{"name":"a","asset":"u/x@1"}],"children":[{"id":"r1"}]}"#;
        batch.add_lifecycle("f", &created(tree, 5)).unwrap();
        let body = r#"{"dt":"f","from":"terminated","to":"deleted","at":9,"user":"u"}"#;
        let deleted: LifecycleEvent = decode(None, body.as_bytes()).unwrap();
        batch.add_lifecycle("f", &deleted).unwrap();
        let f = &batch.configs[0];
        assert_eq!((f.dt.as_str(), f.at), ("f", 9));
        assert!(f.assets.is_empty() && f.children.is_empty(), "{f:?}");
        assert_eq!(batch.states.last().unwrap().state, "deleted");
        assert_eq!(batch.transitions.len(), 2);
    }

    #[test]
    fn owners_come_from_the_event_or_its_created_user_and_reach_children() {
        let mut batch = Batch::default();
        let tree = r#"{"id":"f","children":[{"id":"r1"}]}"#;
        let mut event = created(tree, 5);
        event.user = "admin".into();
        event.owner = Some("alice".into());
        batch.add_lifecycle("f", &event).unwrap();
        let owners: Vec<_> = batch.configs.iter().map(|c| c.owner.as_deref()).collect();
        assert_eq!(owners, [Some("alice"), Some("alice")], "children too");
        let old = r#"{"dt":"g","to":"created","at":1,"user":"bob"}"#;
        batch
            .add_lifecycle("g", &decode(None, old.as_bytes()).unwrap())
            .unwrap();
        let later = r#"{"dt":"g","from":"created","to":"executing","at":2,"user":"root"}"#;
        batch
            .add_lifecycle("g", &decode(None, later.as_bytes()).unwrap())
            .unwrap();
        let g: Vec<_> = batch.states.iter().filter(|s| s.dt == "g").collect();
        assert_eq!(g[0].owner.as_deref(), Some("bob"), "old created: its user");
        assert_eq!(g[1].owner.as_deref(), Some("bob"), "kept within the batch");
    }

    #[test]
    fn invalid_events_are_named() {
        let mut batch = Batch::default();
        let err = batch.add_lifecycle("g", &created(r#"{"id":"f"}"#, 1));
        assert!(err.unwrap_err().0.contains("subject"));
        let bad = r#"{"id":"f","children":[{"id":"a b"}]}"#;
        let err = batch.add_lifecycle("f", &created(bad, 1)).unwrap_err();
        assert!(err.0.contains("config.children[0].id"), "{err}");
        assert!(batch.is_empty(), "nothing half-added");
    }
}
