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
    if cli.command.is_client() {
        quiet_on_closed_pipe();
    }
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

/// People pipe the answers of the client commands into `head` or `grep -q`: end quietly
/// when the reader goes, with the status a shell shows for SIGPIPE (141), as other
/// command-line tools do, instead of a panic and a backtrace from `println!` on the
/// closed pipe. (Restoring SIGPIPE's default action would need `unsafe`.)
fn quiet_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(128 + 13);
        }
        default(info);
    }));
}
