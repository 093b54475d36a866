//! `dtaas`: runs one worker (`dtaas bridge`, …) or all of them in one process (`dtaas up`).

mod asset_cli;
mod cli;
mod demo;
mod dt;
mod plot;
mod pt;
mod reply;
mod usage;
mod workers;

use clap::Parser;

/// jemalloc instead of the system allocator: the hot paths allocate per message (NATS
/// and MQTT frames, decoded records). It raised the historian's ingest by 10–25 % and
/// kept the bridge's peak RSS at 36–39 MiB; mimalloc was faster still but pushed that
/// RSS over 50 MB (`docs/benchmarks-historian.md`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let default_level = if cli.command.is_client() {
        "warn"
    } else {
        "info"
    };
    dtaas_runtime::logging::init_with_default(default_level);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(workers::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(e.exit_code())
        }
    }
}
