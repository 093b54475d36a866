//! `dt.evolve`: a new configuration for a DT. It is validated like on `create`; when
//! it is invalid nothing changes and the old configuration keeps running. Applied to
//! an executing DT, only the processes whose part changed are restarted (their spec
//! hash differs), removed ones are stopped and new ones started. Children are evolved
//! with their part of the configuration; adding or removing children is refused.

use std::collections::HashMap;

use dtaas_schemas::dt_config::{DtConfig, DtState};
use dtaas_schemas::lifecycle::{LifecycleState, ProcessState};

use crate::core::Core;
use crate::error::{Error, Result};
use crate::scripts;
use crate::spec::plan;

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
        same_children(&current.config, &config, "", &mut problems);
        if !problems.is_empty() {
            return Err(Error::BadRequest(format!(
                "the configuration of DT {id:?} has {} problem(s):\n  {}",
                problems.len(),
                problems.join("\n  ")
            )));
        }
        let assets = self.check(user, &config).await?;
        let resolved = |c: &DtConfig| -> Vec<String> {
            c.assets
                .iter()
                .filter_map(|u| assets.get(&u.asset)?.as_ref().ok())
                .map(|m| m.address())
                .collect()
        };
        Box::pin(self.evolve_tree(user, &config, &resolved)).await
    }

    async fn evolve_tree(
        &self,
        user: &str,
        config: &DtConfig,
        resolved: &(dyn Fn(&DtConfig) -> Vec<String> + Sync),
    ) -> Result<DtState> {
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
        let mut next = claimed.clone();
        next.config = config.clone();
        next.resolved_assets = resolved(config);
        let applied = async {
            let metas = self.metas(&next).await?;
            if claimed.state == LifecycleState::Executing {
                let planned: Vec<_> = plan(&next.owner, &next.config, &metas)
                    .map_err(Error::BadRequest)?
                    .into_iter()
                    .filter(|p| !p.spec.argv.is_empty())
                    .collect();
                let old: HashMap<&str, &ProcessState> = claimed
                    .processes
                    .iter()
                    .map(|p| (p.role.as_str(), p))
                    .collect();
                for p in &claimed.processes {
                    let kept = planned
                        .iter()
                        .any(|n| n.spec.role == p.role && n.hash == p.spec_hash);
                    if !kept {
                        self.stop_on(id, &p.node, Some(&p.role)).await;
                    }
                }
                let gone: Vec<String> = claimed
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
                        old.get(n.spec.role.as_str())
                            .is_none_or(|o| o.spec_hash != n.hash)
                    })
                    .collect();
                self.start(id, changed, &[]).await?;
            }
            scripts::run_phase(self, &next, &metas, "evolve").await
        }
        .await;
        if let Err(e) = applied {
            self.abandon(user, id, &e, claimed.state == LifecycleState::Executing)
                .await;
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
                    dt.config_version += 1;
                    Ok(())
                },
            )
            .await?;
        for child in &config.children {
            Box::pin(self.evolve_tree(user, child, resolved)).await?;
        }
        Ok(dt)
    }
}

/// Evolve keeps the hierarchy: the same children, by id, at every level.
fn same_children(old: &DtConfig, new: &DtConfig, prefix: &str, problems: &mut Vec<String>) {
    let ids = |c: &DtConfig| c.children.iter().map(|c| c.id.clone()).collect::<Vec<_>>();
    if ids(old) != ids(new) {
        problems.push(format!(
            "{prefix}children: evolve keeps the children ({:?}) but this names {:?}; create or \
             terminate DTs to change the hierarchy",
            ids(old),
            ids(new)
        ));
        return;
    }
    for (i, (o, n)) in old.children.iter().zip(&new.children).enumerate() {
        same_children(o, n, &format!("{prefix}children[{i}]."), problems);
    }
}
