//! The dtaas lifecycle worker: the DT registry (KV `dtaas-dts`), validation of DT
//! configurations, the lifecycle state machine with its events, hierarchy, placement
//! of processes on exec nodes, save/restore and evolve — `dtaas.v1.<user>.dt.<verb>`.

pub mod config;
pub mod core;
pub mod error;
pub mod events;
pub mod evolve;
pub mod monitor;
pub mod ops;
pub mod peers;
pub mod placement;
pub mod quota;
pub mod read;
pub mod registry;
pub mod scripts;
pub mod snapshots;
pub mod spec;
pub mod validate;

use std::sync::Arc;

use dtaas_runtime::{Context, WorkerService};
use dtaas_schemas::lifecycle::{
    self as api, CreateRequest, DtReply, EvolveRequest, IdRequest, ListRequest, LogsReply,
    LogsRequest, RestoreRequest,
};
use dtaas_schemas::names::{KV_DTS, OBJECT_SNAPSHOTS};
use dtaas_schemas::ErrorReply;

use crate::config::LifecycleConfig;
use crate::core::Core;
use crate::registry::Registry;

/// The worker's name: `dtaas lifecycle`, service `dtaas-lifecycle`.
pub const WORKER: &str = "lifecycle";

/// Environment variables this worker reads, for `dtaas lifecycle --help`.
pub const ENV_HELP: &str = "\
Lifecycle worker environment:
  DTAAS_LIFECYCLE_DURABLE    durable consumer of process events on DTAAS_EVT [default: lifecycle]
  DTAAS_QUOTA_MAX_EXECUTING  DTs one user may execute at once [default: no limit]
  DTAAS_QUOTA_CPU_SECONDS    CPU seconds one user may use per 24 hours [default: no limit]";

/// Runs the worker until `ctx.shutdown` is cancelled.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let config = LifecycleConfig::load(&ctx.config)?;
    let core = Core {
        nats: ctx.nats.clone(),
        js: ctx.js.clone(),
        registry: Registry::new(ctx.js.get_key_value(KV_DTS).await?),
        config: Arc::new(config),
        snapshots: ctx.js.get_object_store(OBJECT_SNAPSHOTS).await?,
    };
    let mut service = WorkerService::start(
        &ctx,
        WORKER,
        "DT registry, validation, lifecycle, hierarchy, placement, save/restore, evolve",
        None,
    )
    .await?;
    macro_rules! endpoint {
        ($verb:expr, |$core:ident, $user:ident, $req:ident: $ty:ty| $body:expr) => {{
            let c = core.clone();
            service
                .endpoint(api::SERVICE, $verb, move |info, $req: $ty| {
                    let $core = c.clone();
                    async move {
                        let $user = info.user.as_str();
                        $body.map_err(ErrorReply::from)
                    }
                })
                .await?;
        }};
    }
    endpoint!(api::VERB_CREATE, |c, user, req: CreateRequest| c
        .create(user, req.config)
        .await
        .map(reply));
    endpoint!(api::VERB_EXECUTE, |c, user, req: IdRequest| c
        .execute(user, &req.id)
        .await
        .map(reply));
    endpoint!(api::VERB_TERMINATE, |c, user, req: IdRequest| c
        .terminate(user, &req.id)
        .await
        .map(reply));
    endpoint!(api::VERB_SAVE, |c, user, req: IdRequest| c
        .save(user, &req.id)
        .await
        .map(reply));
    endpoint!(api::VERB_RESTORE, |c, user, req: RestoreRequest| c
        .restore(user, &req.id, req.snapshot)
        .await
        .map(reply));
    endpoint!(api::VERB_EVOLVE, |c, user, req: EvolveRequest| c
        .evolve(user, &req.id, req.config)
        .await
        .map(reply));
    endpoint!(api::VERB_GET, |c, user, req: IdRequest| c
        .get(user, &req.id)
        .await);
    endpoint!(api::VERB_LIST, |c, user, _req: ListRequest| c
        .list(user)
        .await);
    endpoint!(api::VERB_LOGS, |c, user, req: LogsRequest| c
        .logs(user, &req.id, req.lines)
        .await
        .map(|lines| LogsReply { lines }));
    let follower = tokio::spawn(monitor::follow_processes(
        core.clone(),
        ctx.shutdown.clone(),
    ));
    let watcher = tokio::spawn(monitor::watch_nodes(core.clone(), ctx.shutdown.clone()));
    tracing::info!("Lifecycle worker ready.");
    service.run().await?;
    follower.await?;
    watcher.await?;
    tracing::info!("Lifecycle worker stopped.");
    Ok(())
}

fn reply(dt: dtaas_schemas::dt_config::DtState) -> DtReply {
    DtReply {
        dt,
        logs: Vec::new(),
    }
}
