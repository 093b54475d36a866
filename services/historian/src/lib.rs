//! The dtaas historian worker: telemetry from `DTAAS_TEL` into a time-series store
//! (embedded SQLite or InfluxDB 2), and the `ts.query` / `ts.latest` requests.

pub mod config;
pub mod consumer;
pub mod embedded;
pub mod error;
pub mod influx;
pub mod query;
pub mod requests;
pub mod sink;

use dtaas_runtime::Context;

pub use config::{AckPolicy, Backend, HistorianConfig};
pub use embedded::EmbeddedStore;
pub use error::RunError;
pub use influx::InfluxStore;
pub use sink::{Sink, SinkError};

/// The worker's name: `dtaas historian`, service `dtaas-historian`.
pub const WORKER: &str = "historian";

/// Environment variables this worker reads, for `dtaas historian --help`.
pub const ENV_HELP: &str = "\
Historian environment:
  DTAAS_TS_BACKEND            time-series store: embedded or influxdb [default: embedded]
  DTAAS_HISTORIAN_DURABLE     durable consumer name on DTAAS_TEL [default: historian-<backend>]
  DTAAS_HISTORIAN_ACK_POLICY  all (one ack per batch, one historian per durable) or explicit
                              (one ack per message, historians may share the durable)
                              [default: all with embedded, explicit with influxdb]
  DTAAS_INFLUXDB_URL          InfluxDB 2 URL [default: http://127.0.0.1:8086]
  DTAAS_INFLUXDB_ORG          InfluxDB 2 organization [default: dtaas]
  DTAAS_INFLUXDB_BUCKET       InfluxDB 2 bucket [default: dtaas]
  DTAAS_INFLUXDB_TOKEN        InfluxDB 2 API token (never logged)";

/// Runs the worker until `ctx.shutdown` is cancelled.
pub async fn run(ctx: Context) -> Result<(), RunError> {
    let config = HistorianConfig::load(&ctx.config)?;
    match config.backend {
        Backend::Embedded => {
            let path = config.sqlite_path.clone().unwrap_or_default();
            let store = EmbeddedStore::open(&path)?;
            tracing::info!(path = %path.display(), "Historian writes to the embedded SQLite store.");
            run_with(ctx, config, store).await
        }
        Backend::Influxdb => {
            let store = InfluxStore::new(&config.influxdb)?;
            tracing::info!(url = %config.influxdb.url, org = %config.influxdb.org, bucket = %config.influxdb.bucket, "Historian writes to InfluxDB.");
            run_with(ctx, config, store).await
        }
    }
}

/// Runs the consumer and the query service on `store` until shutdown.
pub async fn run_with<S: Sink>(
    ctx: Context,
    config: HistorianConfig,
    store: S,
) -> Result<(), RunError> {
    let consumer = consumer::new(&config, store.clone());
    let service = requests::start(&ctx, store, consumer.counters()).await?;
    let consumer = tokio::spawn(consumer.run(ctx.clone()));
    let result = consumer.await;
    // The service stops on its own once shutdown is cancelled; if the consumer failed
    // first, stop it so the process exits and can be restarted.
    ctx.shutdown.cancel();
    service.run().await?;
    // Acknowledgements are fire-and-forget publishes: make sure the last ones left.
    if let Err(error) = ctx.nats.flush().await {
        tracing::warn!(%error, "Cannot flush the last acknowledgements; JetStream will redeliver them.");
    }
    Ok(result??)
}
