//! `dt.analyze` and `dt.clean`: the `analyze` and `clean` scripts of a DTaaS-layout
//! DT as verbs of their own, over the DT and every DT below it. Each DT's scripts run
//! in its own assets' work directories, as a recorded transition (`analysing`,
//! `cleaned`) that returns to the state the DT was in. A DT of the tree without such a
//! script is skipped; a tree where none has one is a `bad_request`. A script that
//! fails stops the walk and fails the request, but not the DT.
//!
//! Order: `analyze` runs children before their parent, so a parent's analysis can
//! read what its children's produced; `clean` runs a parent before its children, as
//! `terminate` stops them, and is refused while any DT of the tree executes.

use dtaas_schemas::asset::AssetMeta;
use dtaas_schemas::dt_config::DtState;
use dtaas_schemas::lifecycle::{DtScripts, LifecycleState, ScriptsReply};

use crate::core::Core;
use crate::error::{Error, Result};
use crate::scripts;

/// Where a tree verb starts: at the leaves or at the top.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Order {
    ChildrenFirst,
    ParentFirst,
}

impl Core {
    /// Runs the `analyze` scripts of the DT and its children (children first), in any state.
    pub async fn analyze(&self, user: &str, id: &str) -> Result<ScriptsReply> {
        self.script_verb(
            user,
            id,
            "analyze",
            LifecycleState::Analysing,
            Order::ChildrenFirst,
            |_| Ok(()),
        )
        .await
    }

    /// Runs the `clean` scripts of the DT and its children (the DT first); refused
    /// while one of them executes.
    pub async fn clean(&self, user: &str, id: &str) -> Result<ScriptsReply> {
        self.script_verb(
            user,
            id,
            "clean",
            LifecycleState::Cleaned,
            Order::ParentFirst,
            |dt| match dt.state {
                LifecycleState::Executing => Err(Error::Conflict(format!(
                    "DT {} is executing; terminate it before cleaning it",
                    dt.id
                ))),
                _ => Ok(()),
            },
        )
        .await
    }

    async fn script_verb(
        &self,
        user: &str,
        id: &str,
        phase: &str,
        recorded: LifecycleState,
        order: Order,
        allowed: impl Fn(&DtState) -> Result<()>,
    ) -> Result<ScriptsReply> {
        let mut tree = self.subtree(user, id).await?;
        if order == Order::ChildrenFirst {
            // The reverse of parents-before-children puts every child before its parent.
            tree.reverse();
        }
        // Nothing runs unless every DT of the tree allows it.
        for dt in &tree {
            allowed(dt)?;
        }
        let mut steps: Vec<(DtState, Vec<AssetMeta>)> = Vec::with_capacity(tree.len());
        for dt in tree {
            let metas = self.metas(&dt).await?;
            steps.push((dt, metas));
        }
        if !steps.iter().any(|(_, m)| scripts::has_phase(m, phase)) {
            let whose = if steps.len() > 1 {
                format!("neither DT {id} nor any of its children has")
            } else {
                format!("DT {id} has")
            };
            return Err(Error::BadRequest(format!(
                "{whose} no `{phase}` script: only DTaaS-layout assets (with \
                 `lifecycle/{phase}`) have one"
            )));
        }
        let mut ran: Vec<DtScripts> = Vec::with_capacity(steps.len());
        for (dt, metas) in &steps {
            let scripts = if scripts::has_phase(metas, phase) {
                self.run_scripts(user, dt, metas, phase, recorded, &allowed)
                    .await
                    .map_err(|e| e.within(&already(&dt.id, phase, &ran)))?
            } else {
                Vec::new()
            };
            ran.push(DtScripts {
                id: dt.id.clone(),
                scripts,
            });
        }
        let dt = self.registry.get_owned(user, id).await?.dt;
        Ok(ScriptsReply { dt, ran })
    }

    /// Runs the `phase` scripts of one DT while holding it; events `recorded`, then
    /// back to its state.
    async fn run_scripts(
        &self,
        user: &str,
        dt: &DtState,
        metas: &[AssetMeta],
        phase: &str,
        recorded: LifecycleState,
        allowed: &impl Fn(&DtState) -> Result<()>,
    ) -> Result<Vec<String>> {
        let id = dt.id.as_str();
        let claimed = self
            .registry
            .claim(id, phase, self.lease_ns(), allowed)
            .await?
            .dt;
        let ran = match scripts::run_phase(self, &claimed, metas, phase).await {
            Ok(ran) => ran,
            Err(e) => {
                self.abandon(user, id, &e, false).await;
                return Err(e);
            }
        };
        self.finish(
            user,
            id,
            &[recorded, claimed.state],
            false,
            None,
            |_| Ok(()),
        )
        .await?;
        Ok(ran)
    }
}

/// The context of a failure at DT `id`: which DTs of the tree ran their scripts before.
fn already(id: &str, phase: &str, ran: &[DtScripts]) -> String {
    let done: Vec<&str> = ran
        .iter()
        .filter(|r| !r.scripts.is_empty())
        .map(|r| r.id.as_str())
        .collect();
    if done.is_empty() {
        format!("{phase} of DT {id}")
    } else {
        format!(
            "{phase} of DT {id} (the scripts of {} ran before)",
            done.join(", ")
        )
    }
}
