//! The dtaas lifecycle worker: the DT registry (KV `dtaas-dts`), validation of DT
//! configurations, the lifecycle state machine with its events, hierarchy, placement
//! of processes on exec nodes, save/restore, evolve, delete and what-if forks fed by
//! recorded data —
//! `dtaas.v1.<user>.dt.<verb>`.

pub mod adopt;
pub mod config;
pub mod consumer;
pub mod core;
pub mod delete;
pub mod error;
pub mod events;
pub mod evolve;
pub mod fork;
pub mod hierarchy;
pub mod monitor;
pub mod ops;
pub mod peers;
pub mod placement;
pub mod quota;
pub mod quota_watch;
pub mod read;
pub mod registry;
pub mod replay;
pub mod requests;
pub mod script_verbs;
pub mod scripts;
pub mod snapshots;
pub mod spec;
pub mod validate;
pub mod wired_dts;

use std::sync::Arc;

use dtaas_runtime::provision::{open_kv, open_object_store};
use dtaas_runtime::{Context, WorkerService};
use dtaas_schemas::names::{KV_DTS, OBJECT_SNAPSHOTS};

use crate::config::LifecycleConfig;
use crate::core::Core;
pub use crate::error::RunError;
use crate::registry::Registry;

/// The worker's name: `dtaas lifecycle`, service `dtaas-lifecycle`.
pub const WORKER: &str = "lifecycle";

/// Environment variables this worker reads, for `dtaas lifecycle --help`.
pub const ENV_HELP: &str = "\
Lifecycle worker environment:
  DTAAS_LIFECYCLE_DURABLE    durable consumer of process events on DTAAS_EVT [default: lifecycle]
  DTAAS_QUOTA_MAX_EXECUTING  DTs one user may execute at once [default: no limit]
  DTAAS_QUOTA_CPU_SECONDS    CPU seconds one user may use per 24 hours [default: no limit]
  DTAAS_QUOTA_CHECK_INTERVAL how often executing DTs' users are checked against it [default: 15s]
  DTAAS_REPLAY_DELAY         wait after a fork's process that does not answer ctl.ready ran, before its replay [default: 2s]
  DTAAS_REPLAY_READY_TIMEOUT how long a replay asks a fork's processes whether they are ready [default: 30s]
  DTAAS_REPLAY_PAGE          points per field a replay reads in one ts.query [default: 5000]";

/// Runs the worker until `ctx.shutdown` is cancelled.
pub async fn run(ctx: Context) -> Result<(), RunError> {
    let config = LifecycleConfig::load(&ctx.config)?;
    let registry = open_kv(&ctx.js, KV_DTS).await?;
    let snapshots = open_object_store(&ctx.js, OBJECT_SNAPSHOTS).await?;
    let core = Core {
        nats: ctx.nats.clone(),
        js: ctx.js.clone(),
        registry: Registry::new(registry),
        config: Arc::new(config),
        snapshots,
    };
    let follower = consumer::new(core.clone())?;
    let stats_fn = {
        let counters = follower.counters();
        Arc::new(move || serde_json::json!(counters.snapshot()))
    };
    let mut service = WorkerService::start(
        &ctx,
        WORKER,
        "DT registry, validation, lifecycle, hierarchy, placement, save/restore, evolve, delete",
        Some(stats_fn),
    )
    .await?;
    requests::register(&mut service, &core).await?;
    let follower = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let result = follower.run(ctx.clone()).await;
            // A worker that cannot follow the processes stops, so it is restarted
            // (and says why) instead of serving with a stale registry.
            if result.is_err() {
                ctx.shutdown.cancel();
            }
            result
        })
    };
    let watcher = tokio::spawn(monitor::watch_nodes(core.clone(), ctx.shutdown.clone()));
    let quotas = tokio::spawn(quota_watch::watch_cpu_quotas(
        core.clone(),
        ctx.shutdown.clone(),
    ));
    tracing::info!("Lifecycle worker ready.");
    service.run().await?;
    follower.await??;
    watcher.await?;
    quotas.await?;
    tracing::info!("Lifecycle worker stopped.");
    Ok(())
}
