//! Taking an existing DT in as a child: an evolve that adds a child whose id names
//! one of the caller's top-level DTs that runs nothing (any state but `executing`,
//! not the top of the evolving tree) makes that DT the child instead of refusing the
//! id. The DT keeps its entry, snapshots and history; it gets `parent`, the
//! configuration the evolve gives it (evolved as any DT: its own children added,
//! kept, removed), `config_version` + 1 and an `evolving` event naming the parent.
//! So a DT moves between parents in two evolves: out of the old one (it becomes a
//! terminated DT of its own), into the new one.

use dtaas_schemas::dt_config::DtConfig;

use crate::core::{Assets, Core};
use crate::error::{Error, Result};
use crate::evolve::adoption_refused;

impl Core {
    /// Takes top-level DT `config.id` in as a child of `parent`, with `config`. On a
    /// failure it is a top-level DT again.
    pub(crate) async fn adopt(
        &self,
        user: &str,
        parent: &str,
        config: &DtConfig,
        assets: &Assets,
    ) -> Result<()> {
        let id = config.id.as_str();
        let holder = self
            .registry
            .get(parent)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no DT {parent:?}")))?;
        let top = self.top_of(&holder.dt).await?;
        let refused = |dt: &_| match adoption_refused(user, &top, dt) {
            Some(why) => Err(Error::Conflict(why)),
            None => Ok(()),
        };
        self.registry
            .claim(id, "evolve", self.lease_ns(), refused)
            .await?;
        // Held, so nothing else moves it meanwhile.
        let claimed = self
            .registry
            .modify(id, |dt| {
                dt.parent = Some(parent.to_owned());
                Ok(())
            })
            .await?
            .dt;
        if let Err(e) = Box::pin(self.evolve_claimed(user, claimed, config, assets)).await {
            self.release_child(parent, id).await;
            return Err(e);
        }
        Ok(())
    }

    /// Makes `child` a top-level DT again if `parent` holds it (an evolve that took
    /// it in failed); logged when the registry does not answer.
    pub(crate) async fn release_child(&self, parent: &str, child: &str) {
        let released = self
            .registry
            .modify(child, |dt| {
                if dt.parent.as_deref() == Some(parent) {
                    dt.parent = None;
                }
                Ok(())
            })
            .await;
        if let Err(e) = released {
            tracing::warn!(dt = %child, parent = %parent, error = %e, "Cannot release a DT an evolve failed to take in.");
        }
    }
}
