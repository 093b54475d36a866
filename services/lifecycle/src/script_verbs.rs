//! `dt.analyze` and `dt.clean`: the `analyze` and `clean` scripts of a DTaaS-layout
//! DT as verbs of their own. Each is a recorded transition (`analysing`, `cleaned`)
//! that returns to the state the DT was in; a DT without such a script is a
//! `bad_request`, and a script that fails fails the request but not the DT.

use dtaas_schemas::dt_config::DtState;
use dtaas_schemas::lifecycle::LifecycleState;

use crate::core::Core;
use crate::error::{Error, Result};
use crate::scripts;

impl Core {
    /// Runs the DT's `analyze` scripts, in any state.
    pub async fn analyze(&self, user: &str, id: &str) -> Result<DtState> {
        self.script_verb(user, id, "analyze", LifecycleState::Analysing, |_| Ok(()))
            .await
    }

    /// Runs the DT's `clean` scripts; refused while it executes.
    pub async fn clean(&self, user: &str, id: &str) -> Result<DtState> {
        self.script_verb(user, id, "clean", LifecycleState::Cleaned, |dt| {
            match dt.state {
                LifecycleState::Executing => Err(Error::Conflict(format!(
                    "DT {} is executing; terminate it before cleaning it",
                    dt.id
                ))),
                _ => Ok(()),
            }
        })
        .await
    }

    async fn script_verb(
        &self,
        user: &str,
        id: &str,
        phase: &str,
        recorded: LifecycleState,
        allowed: impl Fn(&DtState) -> Result<()>,
    ) -> Result<DtState> {
        let current = self.registry.get_owned(user, id).await?.dt;
        allowed(&current)?;
        let metas = self.metas(&current).await?;
        if !scripts::has_phase(&metas, phase) {
            return Err(Error::BadRequest(format!(
                "DT {id} has no `{phase}` script: only DTaaS-layout assets (with \
                 `lifecycle/{phase}`) have one"
            )));
        }
        let claimed = self
            .registry
            .claim(id, phase, self.lease_ns(), &allowed)
            .await?
            .dt;
        if let Err(e) = scripts::run_phase(self, &claimed, &metas, phase).await {
            self.abandon(user, id, &e, false).await;
            return Err(e);
        }
        self.finish(
            user,
            id,
            &[recorded, claimed.state],
            false,
            None,
            |_| Ok(()),
        )
        .await
    }
}
