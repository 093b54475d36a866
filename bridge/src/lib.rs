//! The dtaas bridge worker.

use dtaas_runtime::Context;

/// The worker's name: `dtaas bridge`, service `dtaas-bridge`.
pub const WORKER: &str = "bridge";

/// Environment variables this worker reads, for `dtaas bridge --help`.
pub const ENV_HELP: &str = "";

/// Runs the worker until `ctx.shutdown` is cancelled.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let _ = ctx;
    anyhow::bail!("the bridge worker is not implemented yet")
}
