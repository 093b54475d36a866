//! `dtaas up --demo incubator`: the whole platform and the incubator DT from one
//! command. Starts nats-server and mosquitto when none answers, every worker with the
//! embedded stores, imports the incubator's assets, creates and executes the DT, starts
//! the simulated PT (`--pt sim`) and shows a live view. Ctrl-C terminates the DT, stops
//! the PT and the workers, then the servers it started.

mod library;
mod servers;
mod view;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use dtaas_runtime::{shutdown, Config};
use dtaas_schemas::dt_config::DtConfig;
use dtaas_schemas::lifecycle::{CreateRequest, DtReply, IdRequest, LifecycleState};
use tokio_util::sync::CancellationToken;

use crate::pt::SimArgs;

/// Options of `dtaas up`.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct UpArgs {
    /// Also set up and run a demo digital twin.
    #[arg(long, value_enum)]
    pub demo: Option<Demo>,
    /// The demo's physical twin: `sim` runs the simulator; with `none` any MQTT client
    /// may play PT inc1.
    #[arg(long, value_enum, default_value = "sim", requires = "demo")]
    pub pt: PtMode,
    /// How many times faster than real time the simulated PT runs (tests).
    #[arg(long, default_value_t = 1.0, requires = "demo")]
    pub time_scale: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Demo {
    /// The INTO-CPS incubator: Kalman filter, lid-open detector, supervisor.
    Incubator,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PtMode {
    Sim,
    None,
}

/// The demo's PT and DT.
const PT: &str = "inc1";
const DT: &str = "incubator";
/// Services that must answer before the demo is set up.
const SERVICES: [&str; 5] = [
    "dtaas-assets",
    "dtaas-lifecycle",
    "dtaas-exec",
    "dtaas-bridge",
    "dtaas-historian",
];
/// Bound of each setup step.
const STEP: Duration = Duration::from_secs(60);

pub async fn run(args: UpArgs, config: Arc<Config>) -> anyhow::Result<()> {
    let signal = shutdown::on_signals();
    let mut servers = servers::Servers::ensure(&config)?;
    let stop_workers = CancellationToken::new();
    let mut workers = crate::workers::spawn_all(config.clone(), stop_workers.clone());
    let client = dtaas_runtime::nats::connect(&config, "dtaas-demo").await?;
    let stop_rest = CancellationToken::new();
    let result = tokio::select! {
        result = demo(&args, &config, &client, &stop_rest) => result,
        _ = signal.cancelled() => Ok(()),
        Some(result) = workers.join_next() => Err(result
            .map_err(anyhow::Error::from)
            .and_then(|r| r)
            .err()
            .unwrap_or_else(|| anyhow::anyhow!("a worker stopped"))),
    };
    stop_rest.cancel();
    tracing::info!("Stopping the demo: terminating the DT, then the workers.");
    if let Err(error) = terminate(&client, &config.user).await {
        tracing::warn!(error = ?error, "Cannot terminate the DT.");
    }
    stop_workers.cancel();
    let joined = crate::workers::join_all(workers, stop_workers).await;
    servers.stop();
    result.and(joined)
}

/// Sets up the DT and runs PT and view until `stop`.
async fn demo(
    args: &UpArgs,
    config: &Arc<Config>,
    client: &async_nats::Client,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    wait_for_services(client).await?;
    let root = library::write(&config.data_dir.join("demo"))?;
    let assets = dtaas_assets::client::AssetClient::new(client.clone(), config.user.clone());
    crate::asset_cli::import(&assets, &root, false)
        .await
        .context("importing the incubator's assets")?;
    let mut dt: DtConfig = serde_yaml::from_str(library::config())?;
    for asset in &mut dt.assets {
        if asset.name == "supervisor" {
            asset
                .params
                .insert("user".into(), config.user.clone().into());
        }
    }
    execute(client, &config.user, dt).await?;
    let mut tasks = tokio::task::JoinSet::new();
    if args.pt == PtMode::Sim {
        let sim = SimArgs {
            pt: PT.into(),
            period: Duration::from_secs(3),
            time_scale: args.time_scale,
            room: 21.0,
            noise: 0.1,
            seed: None,
            samples: None,
        };
        let (config, stop) = (config.clone(), stop.clone());
        tasks.spawn(async move { crate::pt::sim::run(sim, &config, stop).await });
    } else {
        tracing::info!(
            pt = PT,
            "No simulator: any MQTT client may play the PT (dtaas/pt/inc1/tel/state)."
        );
    }
    tasks.spawn(view::run(client.clone(), PT, DT, stop.clone()));
    tracing::info!(
        "The incubator DT runs. Open the lid: dtaas pt send inc1 lid '{{\"open\":true}}'"
    );
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    Ok(())
}

async fn wait_for_services(client: &async_nats::Client) -> anyhow::Result<()> {
    let deadline = Instant::now() + STEP;
    for service in SERVICES {
        loop {
            let ping = client.request(format!("$SRV.PING.{service}"), "".into());
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), ping).await {
                break;
            }
            if Instant::now() > deadline {
                anyhow::bail!("the {service} worker did not answer within {STEP:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// Creates the DT (or takes the one a previous demo left) and executes it.
async fn execute(client: &async_nats::Client, user: &str, config: DtConfig) -> anyhow::Result<()> {
    let get: anyhow::Result<DtReply> = ask(client, user, "get", &IdRequest { id: DT.into() }).await;
    match get {
        Ok(existing) if existing.dt.state == LifecycleState::Executing => {
            let _: DtReply = ask(client, user, "terminate", &IdRequest { id: DT.into() }).await?;
        }
        Ok(_) => {}
        Err(_) => {
            let _: DtReply = ask(client, user, "create", &CreateRequest { config }).await?;
        }
    }
    // The exec node may still be registering: retry for a while.
    let deadline = Instant::now() + STEP;
    let mut backoff = dtaas_runtime::backoff::Backoff::new();
    loop {
        match ask::<_, DtReply>(client, user, "execute", &IdRequest { id: DT.into() }).await {
            Ok(reply) => {
                tracing::info!(
                    dt = DT,
                    processes = reply.dt.processes.len(),
                    "The DT executes."
                );
                return Ok(());
            }
            Err(error) if Instant::now() < deadline => {
                tracing::info!(error = ?error, "The DT cannot execute yet; retrying.");
                backoff.sleep().await;
            }
            Err(error) => return Err(error.context("executing the incubator DT")),
        }
    }
}

async fn terminate(client: &async_nats::Client, user: &str) -> anyhow::Result<()> {
    let _: DtReply = ask(client, user, "terminate", &IdRequest { id: DT.into() }).await?;
    Ok(())
}

async fn ask<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(
    client: &async_nats::Client,
    user: &str,
    verb: &str,
    body: &Req,
) -> anyhow::Result<Resp> {
    crate::reply::request(client, user, "dt", verb, body, STEP).await
}
