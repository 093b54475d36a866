//! The dtaas historian worker.

use dtaas_runtime::Context;

/// The worker's name: `dtaas historian`, service `dtaas-historian`.
pub const WORKER: &str = "historian";

/// Environment variables this worker reads, for `dtaas historian --help`.
pub const ENV_HELP: &str = "";

/// Runs the worker until `ctx.shutdown` is cancelled.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let _ = ctx;
    anyhow::bail!("the historian worker is not implemented yet")
}
