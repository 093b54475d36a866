//! `dt.evolve`: a new configuration for a DT. It is validated like on `create`; when
//! it is invalid nothing changes and the old configuration keeps running. Applied to
//! an executing DT, only the processes whose part changed are restarted (their spec
//! hash differs), removed ones are stopped and new ones started. Children are evolved
//! with their part of the configuration. Children it adds are registered (their ids
//! must be new on the platform) and, when the DT executes, started before the DT's
//! own processes change; children it removes are detached and terminated after.

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
        let mut problems = Vec::new();
        self.taken_ids(user, &current.config, &config, "", &mut problems)
            .await?;
        let assets = self.check_with(user, &config, problems).await?;
        Box::pin(self.evolve_tree(user, &config, &assets)).await
    }

    /// A problem for every child `new` adds (at any level, under a DT `old` has too)
    /// whose id another DT has on the platform already.
    async fn taken_ids(
        &self,
        user: &str,
        old: &DtConfig,
        new: &DtConfig,
        prefix: &str,
        problems: &mut Vec<Problem>,
    ) -> Result<()> {
        for (i, child) in new.children.iter().enumerate() {
            let path = format!("{prefix}children[{i}].");
            match old.children.iter().find(|c| c.id == child.id) {
                Some(kept) => Box::pin(self.taken_ids(user, kept, child, &path, problems)).await?,
                None => self.new_ids(user, child, &path, problems).await?,
            }
        }
        Ok(())
    }

    /// A problem for every DT of an added subtree whose id is registered already.
    async fn new_ids(
        &self,
        user: &str,
        added: &DtConfig,
        prefix: &str,
        problems: &mut Vec<Problem>,
    ) -> Result<()> {
        if let Some(holder) = self.registry.get(&added.id).await? {
            problems.push(Problem {
                path: format!("{prefix}id"),
                message: taken(user, &holder.dt),
            });
        }
        for (i, child) in added.children.iter().enumerate() {
            let path = format!("{prefix}children[{i}].");
            Box::pin(self.new_ids(user, child, &path, problems)).await?;
        }
        Ok(())
    }

    async fn evolve_tree(&self, user: &str, config: &DtConfig, assets: &Assets) -> Result<DtState> {
        let id = config.id.as_str();
        let claimed = self
            .registry
            .claim(id, "evolve", self.lease_ns(), |dt| match dt.state {
                LifecycleState::Terminated => Err(Error::Conflict(format!(
                    "DT {} is terminated; create a new one instead of evolving it",
                    dt.id
                ))),
                _ => Ok(()),
            })
            .await?
            .dt;
        let had = |child: &DtConfig| claimed.config.children.iter().any(|c| c.id == child.id);
        let executing = claimed.state == LifecycleState::Executing;
        let mut next = claimed.clone();
        next.config = config.clone();
        next.resolved_assets = addresses(assets, config);
        next.outputs = Some(published(config, assets));
        let applied = async {
            // Added children first: the DT's processes may read from them.
            for child in config.children.iter().filter(|c| !had(c)) {
                self.register_tree(user, child, Some(id), assets).await?;
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

/// Why a child an evolve adds cannot have the id `holder` has: which DT holds it and
/// what to do (a DT has one parent, and ids are unique on the platform).
fn taken(user: &str, holder: &DtState) -> String {
    let id = &holder.id;
    if holder.owner != user {
        return format!(
            "DT id {id:?} is taken on the platform (not by one of your DTs); pick another id"
        );
    }
    match &holder.parent {
        Some(parent) => format!(
            "DT id {id:?} exists already as a child of DT {parent}; a DT has one parent: \
             evolve {parent} without {id} first, then delete {id} (`dtaas dt delete {id}`) \
             and add it here, or pick another id"
        ),
        None => format!(
            "DT id {id:?} exists already as a DT of its own ({}); a child added by evolve \
             needs a new id: delete {id} first (`dtaas dt delete {id}`), or pick another id",
            holder.state.as_str()
        ),
    }
}
