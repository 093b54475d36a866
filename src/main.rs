//! `dtaas`: runs one worker (`dtaas bridge`, …) or all of them in one process (`dtaas up`).

mod cli;
mod workers;

use clap::Parser;

/// mimalloc instead of the system allocator: the hot paths allocate per message (MQTT
/// and NATS frames, decoded records), and it raised the historian's ingest rate by
/// about 30 % in `benches/historian.rs`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    dtaas_runtime::logging::init();
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
