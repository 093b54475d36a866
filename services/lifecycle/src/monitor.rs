//! Following the exec nodes: every heartbeat interval the nodes in `dtaas-nodes` are
//! read; the processes of an executing DT on a node whose heartbeat is older than
//! `NODE_STALE_AFTER_MS` (or that left the registry) are started on other nodes, with
//! an `executing` event saying which moved where. So a node that dies loses its DTs
//! within about 10 s + 2 s + the time to start them elsewhere (docs/lifecycle.md
//! promises 15 s). Processes a node stopped as it shut down (`interrupted`), and
//! processes of a node that came back under its id with a new life (a crash and a
//! restart within the stale time), are started again the same way; with no node to
//! take them they wait for one instead of failing the DT. The processes' own events
//! are taken in `consumer.rs`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use dtaas_schemas::exec::HEARTBEAT_INTERVAL_MS;
use dtaas_schemas::lifecycle::{LifecycleState, ProcessState};
use dtaas_schemas::time::now_ns;
use tokio_util::sync::CancellationToken;

use crate::core::{Core, ENDED, INTERRUPTED};
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
    // The life of each live node: a node back under its id after a crash (within
    // the stale time, so never seen lost) has a new one; its earlier processes died.
    let life: HashMap<&str, i64> = nodes
        .iter()
        .filter(|n| !n.is_stale(now))
        .map(|n| (n.id.as_str(), n.started_at))
        .collect();
    let earlier_life = |p: &ProcessState| {
        life.get(p.node.as_str())
            .is_some_and(|&now| now != 0 && p.node_started_at != 0 && now != p.node_started_at)
    };
    for dt in core.registry.all().await? {
        let moving: Vec<_> = dt
            .processes
            .iter()
            .filter(|p| {
                p.status == INTERRUPTED
                    || ((lost(&p.node) || earlier_life(p)) && !ENDED.contains(&p.status.as_str()))
            })
            .cloned()
            .collect();
        // Interrupted by a clean stop of their node, or on a node that came back: they
        // wait for a node rather than fail the DT. Only processes of a node that
        // vanished, with nowhere to go, fail it (the bound docs/lifecycle.md states).
        let can_wait = moving
            .iter()
            .all(|p| !lost(&p.node) || p.status == INTERRUPTED);
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
        if let (Err(e), true) = (&moved, can_wait) {
            tracing::info!(dt = %dt.id, error = %e, "Processes whose node stopped wait for a node to start them on.");
            // A start that failed half-way left them `starting`; as they were, the
            // next round finds them again.
            let restored = core
                .registry
                .modify(&dt.id, |d| {
                    for p in &mut d.processes {
                        if let Some(m) = moving.iter().find(|m| m.role == p.role) {
                            *p = m.clone();
                        }
                    }
                    Ok(())
                })
                .await;
            if let Err(error) = restored {
                tracing::warn!(dt = %dt.id, %error, "Cannot record that a DT's processes still wait for a node.");
            }
            core.abandon(&dt.owner, &dt.id, e, false).await;
            continue;
        }
        let detail = match &moved {
            Ok(processes) => moving
                .iter()
                .map(|m| {
                    let to = processes
                        .iter()
                        .find(|p| p.role == m.role)
                        .map_or("?", |p| p.node.as_str());
                    let why = if m.status == INTERRUPTED {
                        "interrupted when it shut down"
                    } else if lost(&m.node) {
                        "no heartbeat"
                    } else {
                        "started again, its processes gone"
                    };
                    format!(
                        "role {} moved from node {} ({why}) to node {to}",
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
