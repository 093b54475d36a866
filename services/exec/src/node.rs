//! This node's entry in KV `dtaas-nodes`: written at start and every
//! `HEARTBEAT_INTERVAL_MS`, deleted at shutdown, so lifecycle sees a gone node at
//! once after a clean stop and after `NODE_STALE_AFTER_MS` after a crash.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use dtaas_schemas::exec::{NodeInfo, HEARTBEAT_INTERVAL_MS};
use dtaas_schemas::names::KV_NODES;
use dtaas_schemas::time;
use tokio_util::sync::CancellationToken;

use crate::config::ExecConfig;
use crate::error::{failed, timed_out, NatsError, RunError};
use crate::supervisor::Supervisor;

/// The node's entry now.
fn info(config: &ExecConfig, supervisor: &Supervisor) -> NodeInfo {
    let (processes, cpus_used, memory_mb_used) = supervisor.load();
    NodeInfo {
        id: config.node.clone(),
        cpus: config.cpus,
        memory_mb: config.memory_mb,
        labels: config.labels.clone(),
        heartbeat_at: time::now_ns(),
        started_at: supervisor.started_at,
        processes,
        cpus_used,
        memory_mb_used,
    }
}

async fn put(store: &kv::Store, info: &NodeInfo) -> Result<(), NatsError> {
    const WHAT: &str = "cannot store the node's entry";
    let wait = Duration::from_secs(5);
    let body = serde_json::to_vec(info)?;
    tokio::time::timeout(wait, store.put(&info.id, body.into()))
        .await
        .map_err(timed_out(WHAT, wait))?
        .map_err(failed(WHAT))?;
    Ok(())
}

/// Registers the node; errors if the bucket cannot be written at all.
pub async fn register(
    store: &kv::Store,
    config: &ExecConfig,
    supervisor: &Supervisor,
) -> Result<(), RunError> {
    if let Ok(Some(entry)) = store.get(&config.node).await {
        if let Ok(other) = serde_json::from_slice::<NodeInfo>(&entry) {
            if !other.is_stale(time::now_ns()) {
                tracing::warn!(node = %config.node, "Another exec node may run with this id (its heartbeat is fresh); give each node its own DTAAS_EXEC_NODE.");
            }
        }
    }
    put(store, &info(config, supervisor))
        .await
        .map_err(|e| RunError::Register {
            node: config.node.clone(),
            bucket: KV_NODES,
            source: e.into(),
        })
}

/// Rewrites the entry every heartbeat until `shutdown`, then deletes it.
pub async fn heartbeat(
    store: kv::Store,
    config: Arc<ExecConfig>,
    supervisor: Arc<Supervisor>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(HEARTBEAT_INTERVAL_MS));
    let mut failing = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        match put(&store, &info(&config, &supervisor)).await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!(node = %config.node, "Heartbeats are stored again.");
            }
            Ok(()) => {}
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(node = %config.node, %error, "Cannot store a heartbeat; lifecycle will consider this node gone if it lasts. Retrying.");
            }
            Err(_) => {}
        }
    }
    if let Err(error) = store.delete(&config.node).await {
        tracing::warn!(node = %config.node, %error, "Cannot remove the node from KV dtaas-nodes; it goes stale by itself.");
    }
}
