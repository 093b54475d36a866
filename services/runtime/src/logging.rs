//! Logging through `tracing`, filtered by `RUST_LOG` (default `info` for workers,
//! `warn` for the people's commands, whose output is their answer).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber at `info` unless `RUST_LOG` says otherwise.
pub fn init() {
    init_with_default("info");
}

/// Installs the global subscriber, writing to stderr, filtered by `RUST_LOG` or else
/// `default`; colours only on a terminal, so log files and journald get plain text.
/// Safe to call more than once.
pub fn init_with_default(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
