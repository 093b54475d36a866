//! `dt.evolve`: a new configuration for a DT. It is validated like on `create`; when
//! it is invalid nothing changes and the old configuration keeps running. Applied to
//! an executing DT, only the processes whose part changed are restarted (their spec
//! hash differs), removed ones are stopped and new ones started. Children are evolved
//! with their part of the configuration. Children it adds are registered (their ids
//! must be new on the platform, or name one of the caller's top-level DTs that runs
//! nothing, which is taken in: `adopt.rs`) and, when the DT executes, started before
//! the DT's own processes change; children it removes are detached and terminated
//! after.

use std::collections::HashMap;

use dtaas_schemas::dt_config::{DtConfig, DtState};
use dtaas_schemas::lifecycle::{LifecycleState, ProcessState};

use crate::core::{addresses, Assets, Core};
use crate::error::{Error, Result};
use crate::scripts;
use crate::spec::plan;
use crate::validate::{published, Problem};

impl Core {
    pub async fn evolve(&self, user: &str, id: &str, config: DtConfig) -> Result<DtState> {
        if config.id != id {
            return Err(Error::BadRequest(format!(
                "config.id is {:?} but the request evolves DT {id:?}; a DT keeps its id",
                config.id
            )));
        }
        let current = self.registry.get_owned(user, id).await?.dt;
        let top = self.top_of(&current).await?;
        let mut problems = Vec::new();
        self.taken_ids(user, &top, &current.config, &config, "", &mut problems)
            .await?;
        let assets = self.check_with(user, &config, problems).await?;
        Box::pin(self.evolve_tree(user, &config, &assets)).await
    }

    /// A problem for every child `new` adds (at any level, under a DT `old` has too)
    /// whose id another DT has on the platform already, unless that DT can be taken
    /// in (the caller's, top-level, not executing, not `top`, the tree's top DT).
    async fn taken_ids(
        &self,
        user: &str,
        top: &str,
        old: &DtConfig,
        new: &DtConfig,
        prefix: &str,
        problems: &mut Vec<Problem>,
    ) -> Result<()> {
        for (i, child) in new.children.iter().enumerate() {
            let path = format!("{prefix}children[{i}].");
            if let Some(kept) = old.children.iter().find(|c| c.id == child.id) {
                Box::pin(self.taken_ids(user, top, kept, child, &path, problems)).await?;
                continue;
            }
            match self.registry.get(&child.id).await? {
                Some(holder) => match adoption_refused(user, top, &holder.dt) {
                    // Its own children, against the configuration it has.
                    None => {
                        let had = &holder.dt.config;
                        Box::pin(self.taken_ids(user, top, had, child, &path, problems)).await?
                    }
                    Some(why) => problems.push(Problem {
                        path: format!("{path}id"),
                        message: why.to_string(),
                    }),
                },
                None => self.new_ids(child, &path, problems).await?,
            }
        }
        Ok(())
    }

    /// A problem for every DT below a new child whose id is registered already (only
    /// a DT that exists can take an existing DT in).
    async fn new_ids(
        &self,
        added: &DtConfig,
        prefix: &str,
        problems: &mut Vec<Problem>,
    ) -> Result<()> {
        for (i, child) in added.children.iter().enumerate() {
            let path = format!("{prefix}children[{i}].");
            if self.registry.get(&child.id).await?.is_some() {
                problems.push(Problem {
                    path: format!("{path}id"),
                    message: format!(
                        "DT id {:?} exists already; the children of a new child ({}) need new \
                         ids (an existing DT can be taken in only by a DT that exists)",
                        child.id, added.id
                    ),
                });
            }
            Box::pin(self.new_ids(child, &path, problems)).await?;
        }
        Ok(())
    }

    async fn evolve_tree(&self, user: &str, config: &DtConfig, assets: &Assets) -> Result<DtState> {
        let claimed = self
            .registry
            .claim(&config.id, "evolve", self.lease_ns(), |dt| match dt.state {
                LifecycleState::Terminated => Err(Error::Conflict(format!(
                    "DT {} is terminated; create a new one instead of evolving it",
                    dt.id
                ))),
                _ => Ok(()),
            })
            .await?
            .dt;
        self.evolve_claimed(user, claimed, config, assets).await
    }

    /// Evolves `claimed` (held by this operation) to `config`.
    pub(crate) async fn evolve_claimed(
        &self,
        user: &str,
        claimed: DtState,
        config: &DtConfig,
        assets: &Assets,
    ) -> Result<DtState> {
        let id = config.id.as_str();
        let had = |child: &DtConfig| claimed.config.children.iter().any(|c| c.id == child.id);
        let executing = claimed.state == LifecycleState::Executing;
        let mut next = claimed.clone();
        next.config = config.clone();
        next.resolved_assets = addresses(assets, config);
        next.outputs = Some(published(config, assets));
        // Added children that exist are taken in; validation let only those through.
        let mut adopted = Vec::new();
        for child in config.children.iter().filter(|c| !had(c)) {
            if self.registry.get(&child.id).await?.is_some() {
                adopted.push(child.id.as_str());
            }
        }
        let applied = async {
            // Added children first: the DT's processes may read from them.
            for child in config.children.iter().filter(|c| !had(c)) {
                if adopted.contains(&child.id.as_str()) {
                    self.adopt(user, id, child, assets).await?;
                } else {
                    self.register_tree(user, child, Some(id), assets).await?;
                }
                if executing {
                    self.execute_child(user, &child.id).await?;
                }
            }
            let metas = self.metas(&next).await?;
            if executing {
                self.apply_processes(&claimed, &next, &metas).await?;
            }
            scripts::run_phase(self, &next, &metas, "evolve").await
        }
        .await;
        if let Err(e) = applied {
            for child in &adopted {
                self.release_child(id, child).await;
            }
            self.abandon(user, id, &e, executing).await;
            return Err(e);
        }
        let back = claimed.state;
        let dt = self
            .finish(
                user,
                id,
                &[LifecycleState::Evolving, back],
                true,
                None,
                |dt| {
                    dt.config = next.config.clone();
                    dt.resolved_assets = next.resolved_assets.clone();
                    dt.outputs = next.outputs.clone();
                    dt.config_version += 1;
                    Ok(())
                },
            )
            .await?;
        for child in config.children.iter().filter(|c| had(c)) {
            Box::pin(self.evolve_tree(user, child, assets)).await?;
        }
        // Removed children last: the DT no longer reads from them.
        let kept = |old: &&DtConfig| config.children.iter().any(|c| c.id == old.id);
        for gone in claimed.config.children.iter().filter(|c| !kept(c)) {
            self.registry
                .modify(&gone.id, |dt| {
                    dt.parent = None;
                    Ok(())
                })
                .await?;
            match Box::pin(self.terminate_tree(user, &gone.id, None)).await {
                Ok(_) | Err(Error::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(dt)
    }

    /// Restarts the processes of executing `old` whose spec changed in `new`, stops
    /// the ones `new` drops and starts the ones it adds.
    async fn apply_processes(
        &self,
        old: &DtState,
        new: &DtState,
        metas: &[dtaas_schemas::asset::AssetMeta],
    ) -> Result<()> {
        let id = old.id.as_str();
        let planned: Vec<_> = plan(&new.owner, &new.config, metas)?
            .into_iter()
            .filter(|p| !p.spec.argv.is_empty())
            .collect();
        let before: HashMap<&str, &ProcessState> =
            old.processes.iter().map(|p| (p.role.as_str(), p)).collect();
        for p in &old.processes {
            let kept = planned
                .iter()
                .any(|n| n.spec.role == p.role && n.hash == p.spec_hash);
            if !kept {
                self.stop_on(id, &p.node, Some(&p.role)).await;
            }
        }
        let gone: Vec<String> = old
            .processes
            .iter()
            .filter(|p| !planned.iter().any(|n| n.spec.role == p.role))
            .map(|p| p.role.clone())
            .collect();
        self.registry
            .modify(id, |dt| {
                dt.processes.retain(|p| !gone.contains(&p.role));
                Ok(())
            })
            .await?;
        let changed: Vec<_> = planned
            .into_iter()
            .filter(|n| {
                before
                    .get(n.spec.role.as_str())
                    .is_none_or(|o| o.spec_hash != n.hash)
            })
            .collect();
        self.start(id, changed, &[]).await?;
        Ok(())
    }
}

/// Why `holder` cannot be taken in as a child by an evolve in the tree whose top DT
/// is `top`: which DT holds the id and what to do (a DT has one parent, ids are
/// unique on the platform); `None` when it can.
pub(crate) fn adoption_refused(user: &str, top: &str, holder: &DtState) -> Option<String> {
    let id = &holder.id;
    if holder.owner != user {
        return Some(format!(
            "DT id {id:?} is taken on the platform (not by one of your DTs); pick another id"
        ));
    }
    if let Some(parent) = &holder.parent {
        return Some(format!(
            "DT id {id:?} exists already as a child of DT {parent}; a DT has one parent: \
             evolve {parent} without {id} first (it becomes a DT of its own), then add it \
             here, or pick another id"
        ));
    }
    if id == top {
        return Some(format!(
            "DT {id} is the top of this tree; a DT cannot include itself"
        ));
    }
    if holder.state == LifecycleState::Executing {
        return Some(format!(
            "DT id {id:?} exists already as a DT of its own that is executing; terminate \
             {id} first to take it in as a child, delete it, or pick another id"
        ));
    }
    None
}
