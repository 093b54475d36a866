//! What every lifecycle operation shares: the registry, NATS, the snapshot store and
//! the steps they are made of (resolve and check a configuration, start and stop a
//! DT's own processes, settle its state from its processes).

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::jetstream::{self, object_store::ObjectStore};
use async_nats::Client;
use dtaas_schemas::asset::AssetMeta;
use dtaas_schemas::dt_config::{DtConfig, DtState};
use dtaas_schemas::exec::{self, StartReply, StopReply, StopRequest};
use dtaas_schemas::lifecycle::{LifecycleEvent, LifecycleState, ProcessState};
use dtaas_schemas::time::now_ns;
use futures::StreamExt;

use crate::config::LifecycleConfig;
use crate::error::{Error, Result};
use crate::placement::{place, Demand};
use crate::registry::Registry;
use crate::spec::{plan, Planned};
use crate::validate::{validate, Catalog, Problem};
use crate::{events, peers};

/// Each asset address of a configuration tree → the asset it resolved to for the
/// caller, or why it did not.
pub type Assets = HashMap<String, Result<AssetMeta>>;

/// The addresses the asset uses of `config` (not its children) resolved to, in use order.
pub fn addresses(assets: &Assets, config: &DtConfig) -> Vec<String> {
    config
        .assets
        .iter()
        .filter_map(|u| assets.get(&u.asset)?.as_ref().ok())
        .map(|m| m.address())
        .collect()
}

/// The `bad_request` refusing the configuration of DT `id` for `problems`, one a line.
pub fn refusal(id: &str, problems: &[Problem]) -> Error {
    let lines: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
    Error::BadRequest(format!(
        "the configuration of DT {id:?} has {} problem(s):\n{}",
        problems.len(),
        lines.join("\n")
    ))
}

/// Process statuses after which a process runs no more.
pub const ENDED: [&str; 4] = ["exited", "failed", "killed", INTERRUPTED];
/// A process its node stopped when it shut down; lifecycle starts it again
/// (`monitor.rs`).
pub const INTERRUPTED: &str = "interrupted";

/// The lifecycle worker's shared state; cheap to clone.
#[derive(Clone)]
pub struct Core {
    pub nats: Client,
    pub js: jetstream::Context,
    pub registry: Registry,
    pub config: Arc<LifecycleConfig>,
    pub snapshots: ObjectStore,
}

/// Every DT of a configuration tree with the id of its parent, parents first.
pub fn flatten<'a>(
    config: &'a DtConfig,
    parent: Option<&'a str>,
    out: &mut Vec<(&'a DtConfig, Option<&'a str>)>,
) {
    out.push((config, parent));
    for child in &config.children {
        flatten(child, Some(&config.id), out);
    }
}

/// Sets `state` from the processes when they all ended: `completed` when every one
/// exited with success, `failed` when one failed. Answers the new state if it changed.
pub fn settle(dt: &mut DtState) -> Option<LifecycleState> {
    if dt.state != LifecycleState::Executing || dt.processes.is_empty() {
        return None;
    }
    let ended = |p: &ProcessState| p.status == "exited" || p.status == "failed";
    if !dt.processes.iter().all(ended) {
        return None;
    }
    let failed: Vec<&str> = dt
        .processes
        .iter()
        .filter(|p| p.status == "failed")
        .map(|p| p.role.as_str())
        .collect();
    dt.state = if failed.is_empty() {
        LifecycleState::Completed
    } else {
        dt.reason = Some(format!(
            "process {} failed; `dtaas dt logs {}` shows why",
            failed.join(", "),
            dt.id
        ));
        LifecycleState::Failed
    };
    Some(dt.state)
}

impl Core {
    pub fn lease_ns(&self) -> i64 {
        self.config.busy_lease.as_nanos() as i64
    }

    /// Looks up every asset address of the tree as `user` sees it.
    pub async fn resolve(&self, user: &str, config: &DtConfig) -> Result<Assets> {
        let mut tree = Vec::new();
        flatten(config, None, &mut tree);
        let mut addresses: Vec<String> = tree
            .iter()
            .flat_map(|(c, _)| c.assets.iter().map(|u| u.asset.clone()))
            .collect();
        addresses.sort_unstable();
        addresses.dedup();
        let timeout = self.config.request_timeout;
        let looked_up: Vec<_> = futures::stream::iter(addresses)
            .map(|address| {
                let (nats, user) = (self.nats.clone(), user.to_owned());
                async move {
                    let reply = peers::asset_get(&nats, &user, &address, timeout).await?;
                    Ok::<_, Error>((address, reply.map(|r| r.asset)))
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        looked_up.into_iter().collect()
    }

    /// Resolves and validates `config`; every problem in one `bad_request`.
    pub async fn check(&self, user: &str, config: &DtConfig) -> Result<Assets> {
        self.check_with(user, config, Vec::new()).await
    }

    /// `check`, with `found`: problems the caller found already.
    pub async fn check_with(
        &self,
        user: &str,
        config: &DtConfig,
        found: Vec<Problem>,
    ) -> Result<Assets> {
        let (assets, problems) = self.problems(user, config, found).await?;
        if problems.is_empty() {
            return Ok(assets);
        }
        Err(refusal(&config.id, &problems))
    }

    /// Resolves `config`'s assets and lists its problems after `found`.
    pub async fn problems(
        &self,
        user: &str,
        config: &DtConfig,
        found: Vec<Problem>,
    ) -> Result<(Assets, Vec<Problem>)> {
        let assets = self.resolve(user, config).await?;
        let nodes = peers::nodes(&self.js).await?;
        let dts = self.wired_dts(user, config).await?;
        let mut problems = found;
        problems.extend(validate(
            config,
            &Catalog {
                assets: &assets,
                nodes: &nodes,
                dts: &dts,
            },
        ));
        Ok((assets, problems))
    }

    /// The assets `dt` resolved to, fetched again as its owner (in use order).
    pub async fn metas(&self, dt: &DtState) -> Result<Vec<AssetMeta>> {
        let timeout = self.config.request_timeout;
        let mut metas = Vec::with_capacity(dt.resolved_assets.len());
        for address in &dt.resolved_assets {
            match peers::asset_get(&self.nats, &dt.owner, address, timeout).await? {
                Ok(reply) => metas.push(reply.asset),
                Err(why) => {
                    return Err(Error::Conflict(format!(
                        "DT {} uses asset {address}, which is no longer usable: {why}",
                        dt.id
                    )))
                }
            }
        }
        Ok(metas)
    }

    /// The processes `dt` runs: its runnable asset uses.
    pub async fn plan(&self, dt: &DtState) -> Result<(Vec<Planned>, Vec<AssetMeta>)> {
        let metas = self.metas(dt).await?;
        let planned = plan(&dt.owner, &dt.config, &metas)?;
        let planned = planned
            .into_iter()
            .filter(|p| !p.spec.argv.is_empty())
            .collect();
        Ok((planned, metas))
    }

    /// Places `planned` on live nodes (avoiding `avoid`), records them as `starting`
    /// (so a process that ends at once is still attributed), then asks each node to
    /// start its process. On a failure the ones started are stopped again.
    pub async fn start(
        &self,
        dt_id: &str,
        planned: Vec<Planned>,
        avoid: &[String],
    ) -> Result<Vec<ProcessState>> {
        if planned.is_empty() {
            return Ok(Vec::new());
        }
        let nodes = peers::nodes(&self.js).await?;
        let demands: Vec<Demand<'_>> = planned
            .iter()
            .map(|p| Demand {
                role: &p.spec.role,
                labels: &p.labels,
                resources: p.resources,
            })
            .collect();
        let placed = place(&nodes, now_ns(), &demands, avoid)?;
        let life = |node: &str| {
            nodes
                .iter()
                .find(|n| n.id == node)
                .map_or(0, |n| n.started_at)
        };
        let fresh: Vec<ProcessState> = planned
            .iter()
            .zip(&placed)
            .map(|(p, node)| ProcessState {
                role: p.spec.role.clone(),
                asset: p.spec.asset.clone(),
                node: node.clone(),
                node_started_at: life(node),
                pid: None,
                status: "starting".into(),
                restarts: 0,
                exit_code: None,
                spec_hash: p.hash.clone(),
            })
            .collect();
        self.registry
            .modify(dt_id, |dt| {
                dt.processes
                    .retain(|old| !fresh.iter().any(|f| f.role == old.role));
                dt.processes.extend(fresh.iter().cloned());
                Ok(())
            })
            .await?;
        let timeout = self.config.request_timeout;
        let replies: Vec<Result<StartReply>> =
            futures::future::join_all(planned.iter().zip(&placed).map(|(p, node)| {
                peers::exec_node(&self.nats, node, exec::VERB_START, &p.spec, timeout)
            }))
            .await;
        if let Some(e) = replies.iter().find_map(|r| r.as_ref().err()) {
            let e = e.clone();
            for (p, node) in planned.iter().zip(&placed) {
                self.stop_on(dt_id, node, Some(&p.spec.role)).await;
            }
            return Err(e);
        }
        let pids: HashMap<&str, u32> = planned
            .iter()
            .zip(&replies)
            .filter_map(|(p, r)| r.as_ref().ok().map(|r| (p.spec.role.as_str(), r.pid)))
            .collect();
        let updated = self
            .registry
            .modify(dt_id, |dt| {
                for process in &mut dt.processes {
                    if let Some(&pid) = pids.get(process.role.as_str()) {
                        process.pid.get_or_insert(pid);
                        if process.status == "starting" {
                            process.status = "running".into();
                        }
                    }
                }
                Ok(())
            })
            .await?;
        Ok(updated.dt.processes)
    }

    /// Stops one role (or all) of `dt_id` on `node`; a node that does not answer is
    /// logged, not an error (a dead node runs nothing).
    pub async fn stop_on(&self, dt_id: &str, node: &str, role: Option<&str>) {
        let request = StopRequest {
            dt: dt_id.to_owned(),
            role: role.map(str::to_owned),
            grace_ms: None,
        };
        let stopped: Result<StopReply> = peers::exec_node(
            &self.nats,
            node,
            exec::VERB_STOP,
            &request,
            self.config.request_timeout,
        )
        .await;
        if let Err(e) = stopped {
            tracing::warn!(dt = %dt_id, node = %node, error = %e, "Cannot stop processes on a node.");
        }
    }

    /// Stops every process of `dt` (each node once) and marks them killed.
    pub async fn stop_all(&self, dt: &DtState) -> Result<()> {
        let mut nodes: Vec<&str> = dt.processes.iter().map(|p| p.node.as_str()).collect();
        nodes.sort_unstable();
        nodes.dedup();
        futures::future::join_all(nodes.iter().map(|node| self.stop_on(&dt.id, node, None))).await;
        self.registry
            .modify(&dt.id, |dt| {
                for p in &mut dt.processes {
                    if !ENDED.contains(&p.status.as_str()) || p.status == INTERRUPTED {
                        p.status = "killed".into();
                    }
                }
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// Ends an operation: applies `change`, clears the busy mark, publishes the events
    /// for each state the DT went through.
    pub async fn finish<F>(
        &self,
        user: &str,
        id: &str,
        through: &[LifecycleState],
        with_config: bool,
        detail: Option<String>,
        mut change: F,
    ) -> Result<DtState>
    where
        F: FnMut(&mut DtState) -> Result<()>,
    {
        let mut before = None;
        let mut settled = None;
        let v = self
            .registry
            .modify(id, |dt| {
                before = Some(dt.state);
                change(dt)?;
                dt.busy = None;
                settled = settle(dt);
                Ok(())
            })
            .await?;
        let mut from = before;
        for (i, &to) in through.iter().chain(settled.iter()).enumerate() {
            let mut event = events::event(&v.dt, from, to, user);
            if with_config && i == 0 {
                event.config = Some(events::resolved_tree(&self.registry, &v.dt).await?);
            }
            event.detail = detail.clone();
            self.publish(&v.dt, &event).await?;
            from = Some(to);
        }
        Ok(v.dt)
    }

    /// Releases a DT after a failed operation, recording why when `failed`.
    pub async fn abandon(&self, user: &str, id: &str, error: &Error, failed: bool) {
        let reason = error.to_string();
        let result = if failed {
            self.finish(
                user,
                id,
                &[LifecycleState::Failed],
                false,
                Some(reason.clone()),
                |dt| {
                    dt.state = LifecycleState::Failed;
                    dt.reason = Some(reason.clone());
                    Ok(())
                },
            )
            .await
            .map(drop)
        } else {
            self.registry
                .modify(id, |dt| {
                    dt.busy = None;
                    Ok(())
                })
                .await
                .map(drop)
        };
        if let Err(e) = result {
            tracing::warn!(dt = %id, error = %e, "Cannot release a DT after a failed operation.");
        }
    }

    pub async fn publish(&self, dt: &DtState, event: &LifecycleEvent) -> Result<()> {
        events::publish(&self.js, event, &dt.config.external.event_sinks).await
    }
}
