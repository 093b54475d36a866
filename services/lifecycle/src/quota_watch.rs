//! The CPU quota while DTs run. `execute` refuses once a user's day is used up
//! (`quota.rs`), but a DT that started within the quota can keep using CPU past it. So
//! every `quota_check_interval` each user with a CPU quota and an executing DT is asked
//! from accounting; a user over the limit has their executing DTs terminated (a tree
//! from its top executing DT, parent before children), each with the reason recorded
//! and in its `terminated` event. Accounting stores usage every `usage_interval` of
//! exec, so a DT is stopped within about that plus this interval after the limit.
//!
//! Several lifecycle workers may run this at once: the registry's compare-and-set
//! lets one terminate a DT, the others find it terminated (or held) and move on.

use std::collections::{BTreeMap, BTreeSet};

use dtaas_schemas::dt_config::DtState;
use dtaas_schemas::lifecycle::LifecycleState;
use tokio_util::sync::CancellationToken;

use crate::core::Core;
use crate::error::Error;
use crate::peers;

/// Checks the users' CPU quotas every `quota_check_interval` until shutdown; does
/// nothing when no user has a CPU quota.
pub async fn watch_cpu_quotas(core: Core, shutdown: CancellationToken) {
    if !core.config.any_cpu_quota() {
        return;
    }
    let mut tick = tokio::time::interval(core.config.quota_check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(error) = check_all(&core).await {
            tracing::warn!(%error, "Cannot check the users' CPU quotas; trying again at the next interval.");
        }
    }
}

/// One pass over every user with an executing DT.
async fn check_all(core: &Core) -> Result<(), Error> {
    let all = core.registry.all().await?;
    for (user, tops) in executing_tops(&all) {
        let Some(limit) = core.config.quota_of(user).cpu_seconds_per_day else {
            continue;
        };
        let usage = match peers::usage_today(&core.nats, user, core.config.request_timeout).await {
            Ok(usage) => usage,
            Err(error) => {
                tracing::warn!(%user, %error, "Cannot check a user's CPU quota: accounting did not answer.");
                continue;
            }
        };
        let used = usage.total.cpu_seconds;
        if used < limit {
            continue;
        }
        let reason = format!(
            "quota: user {user} used {used:.1} CPU seconds in the last 24 hours, the limit \
             is {limit}; the DT was terminated. `dtaas usage` shows where they went"
        );
        for id in tops {
            match core.terminate_tree_because(user, id, &reason).await {
                Ok(_) => {
                    tracing::warn!(%user, dt = %id, used, limit, "Terminated a DT: its user is over the CPU quota.")
                }
                // Terminated or held by another operation meanwhile: the next pass sees.
                Err(Error::Conflict(_)) => {}
                Err(error) => {
                    tracing::warn!(%user, dt = %id, %error, "Cannot terminate a DT whose user is over the CPU quota.")
                }
            }
        }
    }
    Ok(())
}

/// Per user, the executing DTs whose parent does not execute (terminating them stops
/// the rest of their tree).
fn executing_tops(all: &[DtState]) -> BTreeMap<&str, Vec<&str>> {
    let executing: BTreeSet<&str> = all
        .iter()
        .filter(|d| d.state == LifecycleState::Executing)
        .map(|d| d.id.as_str())
        .collect();
    let mut tops: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for dt in all {
        let parent_executes = dt.parent.as_deref().is_some_and(|p| executing.contains(p));
        if executing.contains(dt.id.as_str()) && !parent_executes {
            tops.entry(dt.owner.as_str()).or_default().push(&dt.id);
        }
    }
    tops
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dt(id: &str, owner: &str, state: &str, parent: Option<&str>) -> DtState {
        serde_json::from_value(serde_json::json!({
            "id": id, "owner": owner, "state": state, "config_version": 1,
            "config": {"id": id}, "parent": parent, "updated_at": 0,
        }))
        .unwrap()
    }

    #[test]
    fn only_the_top_of_each_executing_tree_is_terminated() {
        let all = [
            dt("plant", "alice", "executing", None),
            dt("robot", "alice", "executing", Some("plant")),
            dt("arm", "alice", "executing", Some("robot")),
            // A child executed on its own while its parent is created.
            dt("spare", "alice", "executing", Some("idle")),
            dt("idle", "alice", "created", None),
            dt("done", "bob", "completed", None),
            dt("solo", "bob", "executing", None),
        ];
        let tops = executing_tops(&all);
        assert_eq!(tops["alice"], ["plant", "spare"]);
        assert_eq!(tops["bob"], ["solo"]);
    }
}
