//! Starting workers: alone, or all together for `dtaas up`.

use std::sync::Arc;

use dtaas_runtime::{shutdown, Config, Context};
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command};

/// A failure that ends the process; the exit code tells scripts what went wrong.
#[derive(Debug)]
pub struct Failure {
    error: anyhow::Error,
    code: u8,
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        self.code
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if f.alternate() {
            write!(f, "{:#}", self.error)
        } else {
            write!(f, "{}", self.error)
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Self { error, code: 1 }
    }
}

/// Every worker; `up` runs them all.
const WORKERS: [Command; 6] = [
    Command::Bridge,
    Command::Historian,
    Command::Graph,
    Command::Exec,
    Command::Assets,
    Command::Lifecycle,
];

pub async fn run(cli: Cli) -> Result<(), Failure> {
    let config = Arc::new(Config::load(cli.config.as_deref()).map_err(anyhow::Error::from)?);
    match cli.command {
        Command::Pt(args) => crate::pt::run(args, &config).await.map_err(Failure::from),
        Command::Asset(args) => crate::asset_cli::run(args, &config)
            .await
            .map_err(Failure::from),
        Command::Dt(args) => crate::dt::run(args, &config).await.map_err(Failure::from),
        Command::Plot(args) => crate::plot::run(args, &config).await.map_err(Failure::from),
        Command::Up(args) if args.demo.is_some() => {
            crate::demo::run(args, config).await.map_err(Failure::from)
        }
        Command::Up(_) => up(config).await,
        Command::Usage(args) => crate::usage::run(&config, args)
            .await
            .map_err(Failure::from),
        worker => {
            let shutdown = shutdown::on_signals();
            run_one(worker, config, shutdown)
                .await
                .map_err(Failure::from)
        }
    }
}

fn name(command: &Command) -> &'static str {
    match command {
        Command::Bridge => dtaas_bridge::WORKER,
        Command::Historian => dtaas_historian::WORKER,
        Command::Graph => dtaas_graph::WORKER,
        Command::Assets => dtaas_assets::WORKER,
        Command::Lifecycle => dtaas_lifecycle::WORKER,
        Command::Exec => dtaas_exec::WORKER,
        Command::Up(_) => "up",
        Command::Pt(_) => "pt",
        Command::Usage(_) => "usage",
        Command::Asset(_) => "asset",
        Command::Dt(_) => "dt",
        Command::Plot(_) => "plot",
    }
}

async fn run_one(
    command: Command,
    config: Arc<Config>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let worker = name(&command);
    let ctx = Context::connect(config, worker, shutdown).await?;
    tracing::info!(worker, "started");
    let result: anyhow::Result<()> = match command {
        Command::Bridge => dtaas_bridge::run(ctx).await.map_err(Into::into),
        Command::Historian => dtaas_historian::run(ctx).await.map_err(Into::into),
        Command::Graph => dtaas_graph::run(ctx).await.map_err(Into::into),
        Command::Exec => dtaas_exec::run(ctx).await.map_err(Into::into),
        Command::Assets => dtaas_assets::run(ctx).await.map_err(Into::into),
        Command::Lifecycle => dtaas_lifecycle::run(ctx).await.map_err(Into::into),
        _ => unreachable!("only workers reach run_one"),
    };
    result.map_err(|e| e.context(format!("{worker} worker failed")))?;
    tracing::info!(worker, "stopped");
    Ok(())
}

/// Runs every worker; when one fails, the others are shut down too.
async fn up(config: Arc<Config>) -> Result<(), Failure> {
    let shutdown = shutdown::on_signals();
    let workers = spawn_all(config, shutdown.clone());
    join_all(workers, shutdown).await.map_err(Failure::from)
}

/// Starts every worker; they stop when `shutdown` is cancelled.
pub fn spawn_all(
    config: Arc<Config>,
    shutdown: CancellationToken,
) -> tokio::task::JoinSet<anyhow::Result<()>> {
    let mut workers = tokio::task::JoinSet::new();
    for command in WORKERS {
        let (config, shutdown) = (config.clone(), shutdown.clone());
        workers.spawn(async move { run_one(command, config, shutdown).await });
    }
    let names = WORKERS.map(|c| name(&c)).join(", ");
    tracing::info!(workers = %names, "dtaas up: running the workers.");
    workers
}

/// Waits for every worker; when one fails, the others are shut down too.
pub async fn join_all(
    mut workers: tokio::task::JoinSet<anyhow::Result<()>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut first_error = None;
    while let Some(result) = workers.join_next().await {
        let result = result.map_err(anyhow::Error::from).and_then(|r| r);
        if let Err(error) = result {
            shutdown.cancel();
            first_error.get_or_insert(error);
        }
    }
    first_error.map_or(Ok(()), Err)
}
