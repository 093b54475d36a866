//! `dt.create`, `dt.execute`, `dt.terminate`: the registry entries of a configuration
//! tree, and running and stopping them in hierarchy order (children start before
//! their parent; the parent stops before its children).

use dtaas_schemas::dt_config::{DtConfig, DtState};
use dtaas_schemas::lifecycle::LifecycleState;
use dtaas_schemas::time::now_ns;

use crate::core::{addresses, flatten, Assets, Core};
use crate::error::{Error, Result};
use crate::scripts;
use crate::validate::published;

impl Core {
    /// Validates `config` and registers it and its children as `created`.
    pub async fn create(&self, user: &str, config: DtConfig) -> Result<DtState> {
        let assets = self.check(user, &config).await?;
        self.register_tree(user, &config, None, &assets).await
    }

    /// Registers `config` and its children as `created` (all or nothing, under
    /// `parent`), publishes their `created` events and runs their `create` scripts,
    /// children first. `config` was validated.
    pub(crate) async fn register_tree(
        &self,
        user: &str,
        config: &DtConfig,
        parent: Option<&str>,
        assets: &Assets,
    ) -> Result<DtState> {
        self.register(user, tree_states(user, config, parent, assets))
            .await
    }

    /// Registers `states` (a tree, parents first) as `register_tree` does.
    pub(crate) async fn register(&self, user: &str, states: Vec<DtState>) -> Result<DtState> {
        let mut created: Vec<&str> = Vec::new();
        for dt in &states {
            if let Err(e) = self.registry.create(dt).await {
                // All or nothing: a tree with one id taken is not half-registered.
                for id in created {
                    let _ = self.registry.remove(id).await;
                }
                return Err(e);
            }
            created.push(&dt.id);
        }
        for dt in &states {
            let mut event = crate::events::event(dt, None, LifecycleState::Created, user);
            event.config = Some(crate::events::resolved_config(dt));
            self.publish(dt, &event).await?;
        }
        for dt in states.iter().rev() {
            let metas = self.metas(dt).await?;
            if let Err(e) = scripts::run_phase(self, dt, &metas, "create").await {
                self.abandon(user, &dt.id, &e, true).await;
                return Err(e);
            }
        }
        Ok(states.into_iter().next().expect("a tree has a root"))
    }

    /// Executes `id` and, first, its children.
    pub async fn execute(&self, user: &str, id: &str) -> Result<DtState> {
        let dt = self.registry.get_owned(user, id).await?.dt;
        if dt.state == LifecycleState::Executing {
            return Err(executing_already(&dt));
        }
        self.check_quota(user, &dt).await?;
        Box::pin(self.execute_tree(user, id)).await
    }

    async fn execute_tree(&self, user: &str, id: &str) -> Result<DtState> {
        let claimed = self
            .registry
            .claim(id, "execute", self.lease_ns(), |dt| match dt.state {
                LifecycleState::Executing => Err(executing_already(dt)),
                _ => Ok(()),
            })
            .await?
            .dt;
        for child in &claimed.config.children {
            if let Err(e) = Box::pin(self.execute_child(user, &child.id)).await {
                let e = Error::Conflict(format!("child DT {} did not start: {e}", child.id));
                self.abandon(user, id, &e, false).await;
                return Err(e);
            }
        }
        let started = async {
            let (planned, _) = self.plan(&claimed).await?;
            self.start(id, planned, &[]).await
        }
        .await;
        if let Err(e) = started {
            self.abandon(user, id, &e, true).await;
            return Err(e);
        }
        let dt = self
            .finish(user, id, &[LifecycleState::Executing], false, None, |dt| {
                dt.state = LifecycleState::Executing;
                dt.reason = None;
                Ok(())
            })
            .await?;
        // A fork fed by recorded data gets its window on every execute.
        if let Err(e) = self.start_replay(&dt).await {
            tracing::warn!(dt = %id, error = %e, "Cannot start the replay of a fork.");
        }
        Ok(dt)
    }

    /// Executes child `id` unless it executes already.
    pub(crate) async fn execute_child(&self, user: &str, id: &str) -> Result<()> {
        match self.registry.get(id).await? {
            Some(c) if c.dt.state == LifecycleState::Executing => Ok(()),
            _ => self.execute_tree(user, id).await.map(drop),
        }
    }

    /// Terminates `id` and then its children; refused for a child whose parent executes.
    pub async fn terminate(&self, user: &str, id: &str) -> Result<DtState> {
        let dt = self.registry.get_owned(user, id).await?.dt;
        if let Some(parent) = &dt.parent {
            if let Some(p) = self.registry.get(parent).await? {
                if p.dt.state == LifecycleState::Executing {
                    return Err(Error::Conflict(format!(
                        "DT {id} is a child of {parent}, which is executing; terminate \
                         {parent} (it stops its children after itself)"
                    )));
                }
            }
        }
        Box::pin(self.terminate_tree(user, id, None)).await
    }

    /// Terminates `id` and its children, recording `reason` on each (in the DT and
    /// its `terminated` event): the platform stopping a DT, e.g. over a quota.
    pub async fn terminate_tree_because(
        &self,
        user: &str,
        id: &str,
        reason: &str,
    ) -> Result<DtState> {
        Box::pin(self.terminate_tree(user, id, Some(reason))).await
    }

    pub(crate) async fn terminate_tree(
        &self,
        user: &str,
        id: &str,
        reason: Option<&str>,
    ) -> Result<DtState> {
        let claimed = self
            .registry
            .claim(id, "terminate", self.lease_ns(), |dt| match dt.state {
                LifecycleState::Terminated => Err(Error::Conflict(format!(
                    "DT {} is terminated already",
                    dt.id
                ))),
                _ => Ok(()),
            })
            .await?
            .dt;
        let stopped = async {
            self.stop_all(&claimed).await?;
            let metas = self.metas(&claimed).await?;
            scripts::run_phase(self, &claimed, &metas, "terminate").await
        }
        .await;
        if let Err(e) = stopped {
            self.abandon(user, id, &e, true).await;
            return Err(e);
        }
        let dt = self
            .finish(
                user,
                id,
                &[LifecycleState::Terminated],
                false,
                reason.map(str::to_owned),
                |dt| {
                    dt.state = LifecycleState::Terminated;
                    if let Some(reason) = reason {
                        dt.reason = Some(reason.to_owned());
                    }
                    Ok(())
                },
            )
            .await?;
        for child in &claimed.config.children {
            match Box::pin(self.terminate_tree(user, &child.id, reason)).await {
                Ok(_) | Err(Error::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(dt)
    }
}

/// The registry entries of a validated configuration tree (parents first), `created`.
pub(crate) fn tree_states(
    user: &str,
    config: &DtConfig,
    parent: Option<&str>,
    assets: &Assets,
) -> Vec<DtState> {
    let mut tree = Vec::new();
    flatten(config, parent, &mut tree);
    let now = now_ns();
    tree.iter()
        .map(|(c, parent)| DtState {
            id: c.id.clone(),
            owner: user.to_owned(),
            state: LifecycleState::Created,
            config_version: 1,
            config: (*c).clone(),
            parent: parent.map(str::to_owned),
            fork_of: None,
            replay: None,
            resolved_assets: addresses(assets, c),
            outputs: Some(published(c, assets)),
            processes: Vec::new(),
            snapshots: Vec::new(),
            busy: None,
            reason: None,
            updated_at: now,
        })
        .collect()
}

fn executing_already(dt: &DtState) -> Error {
    Error::Conflict(format!(
        "DT {} is executing already; terminate it first to execute it again",
        dt.id
    ))
}
