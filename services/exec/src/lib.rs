//! The dtaas exec worker: one exec node. It registers in KV `dtaas-nodes` with a
//! heartbeat, runs DT processes on `dtaas.v1.exec.<node>.{start,stop,list,logs}`
//! (own process group and cgroup, limits, restart policy, logs to NATS, reaping of
//! their orphans), meters their usage into
//! `DTAAS_USAGE`, and answers `dtaas.v1.<user>.usage.get`. See `docs/exec.md`.

pub mod cgroup;
pub mod config;
pub mod error;
pub mod events;
pub mod leftovers;
pub mod logs;
pub mod meter;
pub mod node;
pub mod orphans;
pub mod requests;
pub mod run;
pub mod spawn;
pub mod supervisor;
pub mod usage;
pub mod workdir;

use std::sync::Arc;

use dtaas_runtime::{Context, WorkerService};
use dtaas_schemas::names::KV_NODES;

use crate::config::ExecConfig;
pub use crate::error::RunError;
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
  DTAAS_EXEC_CGROUP     auto | off | v1 | v2 | a cgroup directory for runs' groups [default: auto]
  DTAAS_EXEC_PIDS_MAX   pids.max of each run's cgroup [default: 4096]
  DTAAS_EXEC_ADMINS     users who may read every user's usage (comma-separated)";

/// Runs the node until `ctx.shutdown` is cancelled; then stops its processes.
pub async fn run(ctx: Context) -> Result<(), RunError> {
    let config = Arc::new(ExecConfig::load(&ctx.config)?);
    usage::provision(&ctx, config.usage_retention).await?;
    let root = config.dir(&ctx.config);
    prepare_root(&root)?;
    let killed = leftovers::sweep(&root);
    if killed > 0 {
        tracing::warn!(
            killed,
            "Killed processes a previous run of this node left behind."
        );
    }
    let cgroups = isolation(&config, &root);
    let reaper = tokio::spawn(orphans::reap_orphans(ctx.shutdown.clone()));
    let run_as = RunAs::resolve(&config.run_as);
    let workdirs = Workdirs {
        root,
        js: ctx.js.clone(),
        run_as,
    };
    let supervisor = Arc::new(Supervisor::new(
        ctx.clone(),
        config.clone(),
        workdirs,
        cgroups.clone(),
    ));
    let nodes = dtaas_runtime::provision::open_kv(&ctx.js, KV_NODES).await?;

    let mut service = WorkerService::start(
        &ctx,
        WORKER,
        "Runs DT processes on this node and meters their usage",
        Some(requests::stats(&supervisor)),
    )
    .await?;
    let accounting = requests::Accounting {
        js: ctx.js.clone(),
        admins: Arc::new(config.admins.clone()),
    };
    requests::register(&mut service, &config.node, &supervisor, accounting).await?;

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
    if let Some(cgroups) = &cgroups {
        cgroups.remove();
    }
    heartbeat.await?;
    reaper.await?;
    tracing::info!(node = %config.node, "Exec node stopped.");
    Ok(())
}

/// The node's cgroups, unless `[exec] cgroup` is `off` or none can be made; kills
/// what a previous life of the node left in its own (recorded in `<root>/cgroup`).
/// Says in one line which isolation is in effect.
fn isolation(config: &ExecConfig, root: &std::path::Path) -> Option<Arc<cgroup::Cgroups>> {
    let record = root.join("cgroup");
    let killed = cgroup::sweep_recorded(&record);
    if killed > 0 {
        tracing::warn!(
            killed,
            "Killed processes a previous run of this node left in its cgroups."
        );
    }
    match cgroup::Cgroups::create(&cgroup::Placement::parse(&config.cgroup)) {
        Ok(cgroups) => {
            if let Err(error) = cgroup::record(&record, &cgroups) {
                tracing::warn!(%error, file = %record.display(), "Cannot record the node's cgroups; if this node is killed, its next start cannot clear them.");
            }
            let dirs: Vec<String> = cgroups.dirs().map(|d| d.display().to_string()).collect();
            if !cgroups.skipped.is_empty() {
                tracing::info!(skipped = %cgroups.skipped.join("; "), "Some cgroup hierarchies hold no groups of runs.");
            }
            tracing::info!(cgroups = %dirs.join(" "), limits = %cgroups.describe(), "Process isolation: a cgroup per run (stop kills all of it, setsid included) and a process group; rlimits for what no controller limits.");
            Some(Arc::new(cgroups))
        }
        Err(reason) => {
            tracing::info!(reason = %reason, "Process isolation: process groups and rlimits (no cgroup per run).");
            None
        }
    }
}

/// Creates the node's directory, traversable (not readable) by the user processes
/// run as, so they can reach their own work directories.
fn prepare_root(root: &std::path::Path) -> Result<(), RunError> {
    use std::os::unix::fs::PermissionsExt;
    let work = root.join("work");
    let failed = |path: &std::path::Path| {
        let path = path.to_owned();
        move |source| RunError::Dir { path, source }
    };
    std::fs::create_dir_all(&work).map_err(failed(&work))?;
    for dir in [root, work.as_path()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
            .map_err(failed(dir))?;
    }
    Ok(())
}
