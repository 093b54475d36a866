//! Command-line interface: one subcommand per worker, plus `up`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

const COMMON_ENV: &str = "\
Environment (overrides the config file):
  DTAAS_CONFIG                config file, same as --config
  DTAAS_NATS_URL              NATS server(s) [default: nats://127.0.0.1:4222]
  DTAAS_NATS_CREDS            NATS credentials file
  DTAAS_NATS_CONNECT_TIMEOUT  how long to retry the first NATS connection [default: 10s]
  DTAAS_NATS_PROVISION_TIMEOUT  how long to wait for JetStream to provision streams and
                              buckets (no meta leader, too few nodes up) [default: 60s]
  DTAAS_MQTT_URL              MQTT broker: mqtt://[user:password@]host:port, mqtts:// for TLS
                              [default: mqtt://127.0.0.1:1883]
  DTAAS_DATA_DIR              directory of the embedded stores [default: ./data]
  DTAAS_USER                  identity used in request subjects [default: dtaas]
  DTAAS_REPLICAS              JetStream replicas of streams and buckets [default: 1]
  RUST_LOG                    log filter, e.g. info or dtaas_bridge=debug [default: info]";

/// dtaas: Digital Twin as a Service.
///
/// Digital twins are composed from reusable assets (data, models, functions, tools,
/// other twins) and run as a service. Physical twins speak MQTT; the workers speak
/// NATS. Run one worker per process to scale out, or all of them with `dtaas up`.
#[derive(Debug, Parser)]
#[command(name = "dtaas", version, after_help = COMMON_ENV)]
pub struct Cli {
    /// TOML configuration file (see deploy/dtaas.toml); environment variables override it.
    #[arg(long, global = true, env = "DTAAS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, PartialEq, Subcommand)]
pub enum Command {
    /// MQTT <-> NATS bridge: PT telemetry in, DT commands out, command ledger.
    #[command(after_help = const_format(COMMON_ENV, dtaas_bridge::ENV_HELP))]
    Bridge,
    /// Telemetry into the time-series store (InfluxDB 2 or embedded SQLite); ts queries.
    #[command(after_help = const_format(COMMON_ENV, dtaas_historian::ENV_HELP))]
    Historian,
    /// Relations of DTs, assets, PTs, commands and lifecycle events into a graph store.
    #[command(after_help = const_format(COMMON_ENV, dtaas_graph::ENV_HELP))]
    Graph,
    /// Library of reusable assets: private and shared, versioned, DTaaS layout.
    #[command(after_help = const_format(COMMON_ENV, dtaas_assets::ENV_HELP))]
    Assets,
    /// DT registry, configuration validation, lifecycle, hierarchy, placement on exec nodes.
    #[command(after_help = const_format(COMMON_ENV, dtaas_lifecycle::ENV_HELP))]
    Lifecycle,
    /// An exec node: runs DT processes (limits, restarts, logs) and meters their usage.
    #[command(after_help = const_format(COMMON_ENV, dtaas_exec::ENV_HELP))]
    Exec,
    /// Runs every worker in one process: a whole platform on one machine.
    #[command(after_help = COMMON_ENV)]
    Up(crate::demo::UpArgs),
    /// Physical-twin tools: the simulated incubator, sending a PT a command.
    #[command(after_help = COMMON_ENV)]
    Pt(crate::pt::PtArgs),
    /// What your DTs used (CPU seconds, wall time, peak memory), per DT and in total.
    #[command(after_help = COMMON_ENV)]
    Usage(crate::usage::UsageArgs),
    /// The asset library: list, show, put, fetch, share, unshare, delete, import, export.
    #[command(after_help = COMMON_ENV)]
    Asset(crate::asset_cli::AssetArgs),
    /// Your digital twins: create -f FILE, execute, save, restore, evolve -f FILE,
    /// terminate, get, list, logs -f (as DTAAS_USER).
    #[command(after_help = COMMON_ENV)]
    Dt(crate::dt::DtArgs),
    /// A PNG or SVG of stored series (the incubator demo's by default), anomalies shaded.
    #[command(after_help = COMMON_ENV)]
    Plot(crate::plot::PlotArgs),
}

impl Command {
    /// Whether this is one of the people's commands, whose output is their answer: their
    /// logs stay below warnings unless `RUST_LOG` asks for more.
    pub fn is_client(&self) -> bool {
        match self {
            Self::Asset(_) | Self::Dt(_) | Self::Usage(_) | Self::Plot(_) => true,
            Self::Pt(args) => matches!(args.command, crate::pt::PtCommand::Send(_)),
            _ => false,
        }
    }
}

/// Help text: the shared environment, then the worker's own.
fn const_format(common: &'static str, own: &'static str) -> String {
    if own.is_empty() {
        common.to_owned()
    } else {
        format!("{common}\n\n{own}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative times start with `-`; the documented commands must parse them as values.
    #[test]
    fn relative_times_parse_as_values() {
        let fork = Cli::try_parse_from([
            "dtaas",
            "dt",
            "fork",
            "dbl-1",
            "--as",
            "dbl-x5",
            "--replay-from",
            "-2h",
            "--replay-to",
            "-1h",
        ])
        .expect("the README's fork command parses");
        let Command::Dt(args) = fork.command else {
            panic!("not dt: {fork:?}")
        };
        let crate::dt::DtCommand::Fork {
            replay_from,
            replay_to,
            ..
        } = args.command
        else {
            panic!("not fork: {:?}", args.command)
        };
        assert_eq!(
            (replay_from.as_deref(), replay_to.as_str()),
            (Some("-2h"), "-1h")
        );
        Cli::try_parse_from(["dtaas", "usage", "--from", "-7d"]).expect("usage --from -7d");
    }
}
