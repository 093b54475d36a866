//! The dtaas exec worker: one exec node. It registers in KV `dtaas-nodes` with a
//! heartbeat, runs DT processes on `dtaas.v1.exec.<node>.{start,stop,list,logs}`
//! (own process group, limits, restart policy, logs to NATS), meters their usage into
//! `DTAAS_USAGE`, and answers `dtaas.v1.<user>.usage.get`. See `docs/exec.md`.

pub mod config;
pub mod events;
pub mod leftovers;
pub mod logs;
pub mod meter;
pub mod node;
pub mod run;
pub mod spawn;
pub mod supervisor;
pub mod usage;
pub mod workdir;

use std::sync::Arc;

use dtaas_runtime::{Context, WorkerService};
use dtaas_schemas::exec::{
    ListRequest, LogsRequest, ProcessSpec, StopRequest, UsageRequest, USAGE_SERVICE,
    USAGE_VERB_GET, VERB_LIST, VERB_LOGS, VERB_START, VERB_STOP,
};
use dtaas_schemas::names::KV_NODES;
use dtaas_schemas::subject;

use crate::config::ExecConfig;
use crate::spawn::RunAs;
use crate::supervisor::Supervisor;
use crate::workdir::Workdirs;

/// The worker's name: `dtaas exec`, service `dtaas-exec`.
pub const WORKER: &str = "exec";

/// Environment variables this worker reads, for `dtaas exec --help`.
pub const ENV_HELP: &str = "\
Exec worker environment:
  DTAAS_EXEC_NODE       this node's id [default: the host name]
  DTAAS_EXEC_CPUS       CPUs offered to DT processes [default: the machine's]
  DTAAS_EXEC_MEMORY_MB  memory offered to DT processes, MiB [default: the machine's]
  DTAAS_EXEC_LABELS     labels for placement constraints: k=v,k2=v2
  DTAAS_EXEC_DIR        work directories and asset cache [default: DTAAS_DATA_DIR/exec/<node>]
  DTAAS_EXEC_RUN_AS     user DT processes run as when exec runs as root [default: nobody]
  DTAAS_EXEC_GRACE      between SIGTERM and SIGKILL on stop [default: 5s]
  DTAAS_EXEC_ADMINS     users who may read every user's usage (comma-separated)";

/// Runs the node until `ctx.shutdown` is cancelled; then stops its processes.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let config = Arc::new(ExecConfig::load(&ctx.config)?);
    usage::provision(&ctx.js, ctx.config.replicas, config.usage_retention).await?;
    let root = config.dir(&ctx.config);
    prepare_root(&root)?;
    let killed = leftovers::sweep(&root);
    if killed > 0 {
        tracing::warn!(
            killed,
            "Killed processes a previous run of this node left behind."
        );
    }
    let run_as = RunAs::resolve(&config.run_as);
    let workdirs = Workdirs {
        root,
        js: ctx.js.clone(),
        run_as,
    };
    let supervisor = Arc::new(Supervisor::new(ctx.clone(), config.clone(), workdirs));
    let nodes = ctx
        .js
        .get_key_value(KV_NODES)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open KV {KV_NODES}: {e}"))?;

    let stats = {
        let supervisor = supervisor.clone();
        Arc::new(move || {
            let (processes, cpus, memory_mb) = supervisor.load();
            serde_json::json!({"node": supervisor.node, "processes": processes, "cpus_used": cpus, "memory_mb_used": memory_mb})
        })
    };
    let mut service = WorkerService::start(
        &ctx,
        WORKER,
        "Runs DT processes on this node and meters their usage",
        Some(stats),
    )
    .await?;
    let node = &config.node;
    let s = supervisor.clone();
    service
        .endpoint_at(
            &format!("exec-{VERB_START}"),
            subject::exec_node(node, VERB_START)?,
            move |_, spec: ProcessSpec| {
                let s = s.clone();
                async move { s.start(spec).await }
            },
        )
        .await?;
    let s = supervisor.clone();
    service
        .endpoint_at(
            &format!("exec-{VERB_STOP}"),
            subject::exec_node(node, VERB_STOP)?,
            move |_, request: StopRequest| {
                let s = s.clone();
                async move { s.stop(request).await }
            },
        )
        .await?;
    let s = supervisor.clone();
    service
        .endpoint_at(
            &format!("exec-{VERB_LIST}"),
            subject::exec_node(node, VERB_LIST)?,
            move |_, request: ListRequest| {
                let s = s.clone();
                async move { Ok(s.list(request.dt.as_deref())) }
            },
        )
        .await?;
    let s = supervisor.clone();
    service
        .endpoint_at(
            &format!("exec-{VERB_LOGS}"),
            subject::exec_node(node, VERB_LOGS)?,
            move |_, request: LogsRequest| {
                let s = s.clone();
                async move { Ok(s.logs(&request)) }
            },
        )
        .await?;
    let (js, admins) = (ctx.js.clone(), Arc::new(config.admins.clone()));
    service
        .endpoint(
            USAGE_SERVICE,
            USAGE_VERB_GET,
            move |info, request: UsageRequest| {
                let (js, admins) = (js.clone(), admins.clone());
                async move { usage::get(&js, &admins, info, request).await }
            },
        )
        .await?;

    node::register(&nodes, &config, &supervisor).await?;
    tracing::info!(node = %config.node, cpus = config.cpus, memory_mb = config.memory_mb, run_as = ?run_as.map(|r| r.uid), "Exec node registered.");
    let heartbeat = tokio::spawn(node::heartbeat(
        nodes,
        config.clone(),
        supervisor.clone(),
        ctx.shutdown.clone(),
    ));
    service.run().await?;
    supervisor.shutdown().await;
    heartbeat.await?;
    tracing::info!(node = %config.node, "Exec node stopped.");
    Ok(())
}

/// Creates the node's directory, traversable (not readable) by the user processes
/// run as, so they can reach their own work directories.
fn prepare_root(root: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let work = root.join("work");
    std::fs::create_dir_all(&work)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", work.display()))?;
    for dir in [root, work.as_path()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
            .map_err(|e| anyhow::anyhow!("cannot set the permissions of {}: {e}", dir.display()))?;
    }
    Ok(())
}
