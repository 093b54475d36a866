//! Following the exec nodes: every heartbeat interval the nodes in `dtaas-nodes` are
//! read; the processes of an executing DT on a node whose heartbeat is older than
//! `NODE_STALE_AFTER_MS` (or that left the registry) are started on other nodes, with
//! an `executing` event saying which moved where. So a node that dies loses its DTs
//! within about 10 s + 2 s + the time to start them elsewhere (docs/lifecycle.md
//! promises 15 s). The processes' own events are taken in `consumer.rs`.

use std::collections::HashSet;
use std::time::Duration;

use dtaas_schemas::exec::HEARTBEAT_INTERVAL_MS;
use dtaas_schemas::lifecycle::LifecycleState;
use dtaas_schemas::time::now_ns;
use tokio_util::sync::CancellationToken;

use crate::core::{Core, ENDED};
use crate::error::Error;
use crate::peers;

/// A round of `replace_lost` longer than this is logged.
const SLOW_ROUND: Duration = Duration::from_secs(30);

/// Every heartbeat interval, moves the processes of nodes that went silent.
pub async fn watch_nodes(core: Core, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(HEARTBEAT_INTERVAL_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Every step is a bounded request; a round that still takes long is said, so
        // a stuck check is never silent (it once was: `kv::Store::keys()` can hang).
        let round = replace_lost(&core);
        tokio::pin!(round);
        let result = match tokio::time::timeout(SLOW_ROUND, &mut round).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(after = ?SLOW_ROUND, "The check for lost exec nodes is slow; still waiting for it.");
                round.await
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "Cannot check for lost exec nodes.");
        }
    }
}

async fn replace_lost(core: &Core) -> Result<(), Error> {
    let nodes = peers::nodes(&core.js).await?;
    let now = now_ns();
    let live: HashSet<&str> = nodes
        .iter()
        .filter(|n| !n.is_stale(now))
        .map(|n| n.id.as_str())
        .collect();
    let lost = |node: &str| !live.contains(node);
    for dt in core.registry.all().await? {
        let moving: Vec<_> = dt
            .processes
            .iter()
            .filter(|p| lost(&p.node) && !ENDED.contains(&p.status.as_str()))
            .cloned()
            .collect();
        if dt.state != LifecycleState::Executing || dt.busy.is_some() || moving.is_empty() {
            continue;
        }
        let claim = core
            .registry
            .claim(&dt.id, "re-place", core.lease_ns(), |d| match d.state {
                LifecycleState::Executing => Ok(()),
                _ => Err(Error::Conflict(String::new())),
            })
            .await;
        let claimed = match claim {
            Ok(claimed) => claimed,
            // Busy or changed under us: the next tick tries again. Said, so that a DT
            // whose processes never move shows why.
            Err(error) => {
                tracing::info!(dt = %dt.id, %error, "Cannot claim the DT to re-place its processes yet.");
                continue;
            }
        };
        let avoid: Vec<String> = nodes
            .iter()
            .filter(|n| lost(&n.id))
            .map(|n| n.id.clone())
            .collect();
        let moved = async {
            let (planned, _) = core.plan(&claimed.dt).await?;
            let planned: Vec<_> = planned
                .into_iter()
                .filter(|p| moving.iter().any(|m| m.role == p.spec.role))
                .collect();
            core.start(&dt.id, planned, &avoid).await
        }
        .await;
        let detail = match &moved {
            Ok(processes) => moving
                .iter()
                .map(|m| {
                    let to = processes
                        .iter()
                        .find(|p| p.role == m.role)
                        .map_or("?", |p| p.node.as_str());
                    format!(
                        "role {} moved from node {} (no heartbeat) to node {to}",
                        m.role, m.node
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
            Err(e) => format!("node lost and its processes could not move: {e}"),
        };
        tracing::warn!(dt = %dt.id, detail = %detail, "Re-placed the processes of a lost exec node.");
        let state = if moved.is_ok() {
            LifecycleState::Executing
        } else {
            LifecycleState::Failed
        };
        let user = dt.owner.clone();
        core.finish(&user, &dt.id, &[state], false, Some(detail.clone()), |d| {
            d.state = state;
            if state == LifecycleState::Failed {
                d.reason = Some(detail.clone());
            }
            Ok(())
        })
        .await?;
    }
    Ok(())
}
