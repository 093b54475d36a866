//! `dtaas pt`: physical-twin side tools — the incubator simulator and sending commands.

pub mod controller;
pub mod incubator;
pub mod refused;
mod send;
pub mod sim;
pub mod thermal;

use std::time::Duration;

use clap::{Args, Subcommand};
use dtaas_runtime::Config;

/// `dtaas pt …`
#[derive(Debug, Clone, PartialEq, Args)]
pub struct PtArgs {
    #[command(subcommand)]
    pub command: PtCommand,
}

#[derive(Debug, Clone, PartialEq, Subcommand)]
pub enum PtCommand {
    /// Simulated INTO-CPS incubator speaking MQTT on the default topic map.
    ///
    /// One JSON sample per period on dtaas/pt/<pt>/tel/state; commands `controller`
    /// (new parameters), `lid` ({"open":true|false}) and `room` ({"temperature":°C})
    /// on dtaas/pt/<pt>/cmd/<command>, acknowledged on …/cmd/<command>/ack.
    Sim(SimArgs),
    /// Sends a command to a PT through `cmd.send` and waits for its ledger status.
    Send(SendArgs),
}

/// Options of the simulator.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct SimArgs {
    /// PT id the simulator plays.
    #[arg(long, default_value = "inc1", env = "DTAAS_PT_ID")]
    pub pt: String,
    /// Simulated time between samples (e.g. 3s, 500ms).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub period: Duration,
    /// How many times faster than the wall clock simulated time runs (tests use 20–100).
    #[arg(long, default_value_t = 1.0, value_parser = parse_time_scale)]
    pub time_scale: f64,
    /// Room temperature, °C (the `room` command changes it).
    #[arg(long, default_value_t = 21.0)]
    pub room: f64,
    /// Standard deviation of each temperature sensor's noise, °C.
    #[arg(long, default_value_t = 0.1)]
    pub noise: f64,
    /// Seed of the sensor noise, for repeatable runs [default: the start time].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop after this many samples [default: run until Ctrl-C].
    #[arg(long)]
    pub samples: Option<u64>,
}

/// Options of `dtaas pt send`.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct SendArgs {
    /// The PT, e.g. inc1.
    pub pt: String,
    /// The command, e.g. lid.
    pub command: String,
    /// The payload as JSON, e.g. '{"open":true}'.
    pub payload: String,
    /// Time to live of the command.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub ttl: Duration,
    /// How long to wait for a final ledger status (acknowledged, expired, failed); 0 to not wait.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub wait: Duration,
}

pub async fn run(args: PtArgs, config: &Config) -> anyhow::Result<()> {
    let shutdown = dtaas_runtime::shutdown::on_signals();
    match args.command {
        PtCommand::Sim(sim) => sim::run(sim, config, shutdown).await,
        PtCommand::Send(send) => send::run(send, config).await,
    }
}

fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let ns = dtaas_schemas::time::parse_duration_ns(text)?;
    if ns < 0 {
        anyhow::bail!("duration {text:?} must not be negative");
    }
    Ok(Duration::from_nanos(ns as u64))
}

fn parse_time_scale(text: &str) -> anyhow::Result<f64> {
    let scale: f64 = text
        .parse()
        .map_err(|_| anyhow::anyhow!("time scale {text:?} is not a number"))?;
    if !(0.001..=10_000.0).contains(&scale) {
        anyhow::bail!("time scale must lie in 0.001..=10000, got {scale}");
    }
    Ok(scale)
}
