//! `dt.save` and `dt.restore`. Save asks every process for its state on
//! `dtaas.v1.dt.<dt>.ctl.save` (each answers with its state as the body and its role
//! in the `Dtaas-Role` header; a process that does not answer within `save_timeout`
//! is saved without state) and stores the states with the configuration in the object
//! store `dtaas-snapshots` as `<dt>/<snapshot>/<role>` and `<dt>/<snapshot>/config.json`.
//! Restore starts the processes with `DTAAS_STATE` naming their saved state.

use std::collections::HashMap;

use bytes::Bytes;
use dtaas_schemas::dt_config::DtState;
use dtaas_schemas::lifecycle::{LifecycleState, SnapshotInfo};
use dtaas_schemas::names::header;
use dtaas_schemas::subject;
use dtaas_schemas::time::now_ns;
use futures::StreamExt;

use crate::core::Core;
use crate::error::{Error, Result};
use crate::scripts;

/// The object name of one role's state in a snapshot.
pub fn object_name(dt: &str, snapshot: &str, role: &str) -> String {
    format!("{dt}/{snapshot}/{role}")
}

/// The role of `running` (the roles of a DT's running processes) that sent `reply`
/// to a control request: its `Dtaas-Role` header, or the only role when a DT with one
/// process leaves the header out; `None` for a reply from no known role.
pub(crate) fn answering_role(reply: &async_nats::Message, running: &[&str]) -> Option<String> {
    let role = reply
        .headers
        .as_ref()
        .and_then(|h| h.get(header::ROLE))
        .map(|r| r.as_str().to_owned())
        .or_else(|| (running.len() == 1).then(|| running[0].to_owned()));
    role.filter(|r| running.contains(&r.as_str()))
}

impl Core {
    /// Saves `id` and its children under one snapshot name.
    pub async fn save(&self, user: &str, id: &str) -> Result<DtState> {
        self.registry.get_owned(user, id).await?;
        let name = format!("s-{}", now_ns());
        Box::pin(self.save_tree(user, id, &name)).await
    }

    async fn save_tree(&self, user: &str, id: &str, name: &str) -> Result<DtState> {
        let claimed = self
            .registry
            .claim(id, "save", self.lease_ns(), |dt| match dt.state {
                LifecycleState::Executing => Ok(()),
                other => Err(Error::Conflict(format!(
                    "DT {} is {}; only an executing DT can be saved",
                    dt.id,
                    other.as_str()
                ))),
            })
            .await?
            .dt;
        let saved = async {
            let states = self.collect_states(&claimed).await?;
            let config = serde_json::to_vec_pretty(&claimed.config)
                .map_err(|e| Error::Internal(e.to_string()))?;
            self.put(&format!("{id}/{name}/config.json"), config.into())
                .await?;
            let mut roles: Vec<String> = Vec::new();
            for (role, state) in states {
                self.put(&object_name(id, name, &role), state).await?;
                roles.push(role);
            }
            roles.sort();
            let metas = self.metas(&claimed).await?;
            scripts::run_phase(self, &claimed, &metas, "save").await?;
            Ok::<_, Error>(roles)
        }
        .await;
        let roles = match saved {
            Ok(roles) => roles,
            Err(e) => {
                self.abandon(user, id, &e, false).await;
                return Err(e);
            }
        };
        let info = SnapshotInfo {
            name: name.to_owned(),
            at: now_ns(),
            config_version: claimed.config_version,
            roles,
        };
        let detail = Some(format!("snapshot {name}"));
        let dt = self
            .finish(
                user,
                id,
                &[LifecycleState::Saved, LifecycleState::Executing],
                false,
                detail,
                |dt| {
                    dt.snapshots.push(info.clone());
                    Ok(())
                },
            )
            .await?;
        for child in &claimed.config.children {
            match Box::pin(self.save_tree(user, &child.id, name)).await {
                Ok(_) | Err(Error::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(dt)
    }

    async fn put(&self, object: &str, body: Bytes) -> Result<()> {
        let mut reader = std::io::Cursor::new(body.to_vec());
        self.snapshots
            .put(object, &mut reader)
            .await
            .map_err(|e| Error::unavailable("cannot store a snapshot in dtaas-snapshots", e))?;
        Ok(())
    }

    /// Role → state of every process that answered within `save_timeout`.
    async fn collect_states(&self, dt: &DtState) -> Result<HashMap<String, Bytes>> {
        let running: Vec<&str> = dt
            .processes
            .iter()
            .filter(|p| !crate::core::ENDED.contains(&p.status.as_str()))
            .map(|p| p.role.as_str())
            .collect();
        let mut states = HashMap::new();
        if running.is_empty() {
            return Ok(states);
        }
        let unavailable =
            |e: &dyn std::fmt::Display| Error::unavailable("cannot ask for states", e);
        let inbox = self.nats.new_inbox();
        let mut replies = self
            .nats
            .subscribe(inbox.clone())
            .await
            .map_err(|e| unavailable(&e))?;
        self.nats
            .publish_with_reply(
                subject::dt_control(&dt.id, "save")?,
                inbox,
                Bytes::from_static(b"{}"),
            )
            .await
            .map_err(|e| unavailable(&e))?;
        let deadline = tokio::time::Instant::now() + self.config.save_timeout;
        while states.len() < running.len() {
            let Ok(Some(reply)) = tokio::time::timeout_at(deadline, replies.next()).await else {
                break;
            };
            // The server's "no responders" status: no process listens (yet).
            if reply
                .status
                .is_some_and(|s| s == async_nats::StatusCode::NO_RESPONDERS)
            {
                break;
            }
            match answering_role(&reply, &running) {
                Some(role) => {
                    states.insert(role, reply.payload);
                }
                None => {
                    tracing::warn!(dt = %dt.id, "A save reply without a known Dtaas-Role header was ignored.")
                }
            }
        }
        Ok(states)
    }

    /// Starts `id` (children first) from snapshot `name`, or its newest.
    pub async fn restore(&self, user: &str, id: &str, name: Option<String>) -> Result<DtState> {
        let dt = self.registry.get_owned(user, id).await?.dt;
        let snapshot = match &name {
            Some(name) => dt.snapshots.iter().find(|s| &s.name == name),
            None => dt.snapshots.last(),
        };
        let Some(snapshot) = snapshot.cloned() else {
            return Err(Error::NotFound(match name {
                Some(name) => {
                    format!("DT {id} has no snapshot {name:?}; `dtaas dt get {id}` lists them")
                }
                None => format!("DT {id} has no snapshot; `dtaas dt save {id}` makes one"),
            }));
        };
        if dt.state != LifecycleState::Executing {
            self.check_quota(user, &dt).await?;
        }
        Box::pin(self.restore_tree(user, id, &snapshot.name)).await
    }

    async fn restore_tree(&self, user: &str, id: &str, name: &str) -> Result<DtState> {
        let claimed = self
            .registry
            .claim(id, "restore", self.lease_ns(), |_| Ok(()))
            .await?
            .dt;
        for child in &claimed.config.children {
            let has = self
                .registry
                .get(&child.id)
                .await?
                .is_some_and(|c| c.dt.snapshots.iter().any(|s| s.name == name));
            let result = if has {
                Box::pin(self.restore_tree(user, &child.id, name))
                    .await
                    .map(drop)
            } else {
                Box::pin(self.execute_child(user, &child.id)).await
            };
            if let Err(e) = result {
                self.abandon(user, id, &e, false).await;
                return Err(e);
            }
        }
        let snapshot = claimed.snapshots.iter().find(|s| s.name == name).cloned();
        let started = async {
            if claimed.state == LifecycleState::Executing {
                self.stop_all(&claimed).await?;
            }
            let (mut planned, _) = self.plan(&claimed).await?;
            if let Some(snapshot) = &snapshot {
                for p in &mut planned {
                    if snapshot.roles.contains(&p.spec.role) {
                        p.spec.state = Some(object_name(id, name, &p.spec.role));
                    }
                }
            }
            self.start(id, planned, &[]).await
        }
        .await;
        if let Err(e) = started {
            self.abandon(user, id, &e, true).await;
            return Err(e);
        }
        self.finish(
            user,
            id,
            &[LifecycleState::Restored, LifecycleState::Executing],
            false,
            Some(format!("snapshot {name}")),
            |dt| {
                dt.state = LifecycleState::Executing;
                dt.reason = None;
                Ok(())
            },
        )
        .await
    }
}
