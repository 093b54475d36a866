//! The dtaas graph worker.

use dtaas_runtime::Context;

/// The worker's name: `dtaas graph`, service `dtaas-graph`.
pub const WORKER: &str = "graph";

/// Environment variables this worker reads, for `dtaas graph --help`.
pub const ENV_HELP: &str = "";

/// Runs the worker until `ctx.shutdown` is cancelled.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let _ = ctx;
    anyhow::bail!("the graph worker is not implemented yet")
}
