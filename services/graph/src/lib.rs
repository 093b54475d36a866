//! The dtaas graph worker: DTs, assets, PTs, child DTs, commands and lifecycle
//! transitions from `DTAAS_EVT` into a graph store (embedded SQLite or Neo4j), and the
//! `graph.*` queries over it.

pub mod config;
pub mod consumer;
pub mod cypher;
pub mod embedded;
pub mod error;
pub mod model;
pub mod neo4j;
pub mod requests;
pub mod scope;
pub mod store;

use std::sync::Arc;

use dtaas_runtime::{Context, WorkerService};

use crate::config::{Backend, GraphConfig};
pub use crate::error::RunError;
use crate::requests::Queries;
use crate::store::GraphStore;

/// The worker's name: `dtaas graph`, service `dtaas-graph`.
pub const WORKER: &str = "graph";

/// Environment variables this worker reads, for `dtaas graph --help`.
pub const ENV_HELP: &str = "\
Graph worker environment:
  DTAAS_GRAPH_BACKEND   embedded (SQLite under DTAAS_DATA_DIR) or neo4j [default: embedded]
  DTAAS_GRAPH_DURABLE   durable consumer name on DTAAS_EVT [default: graph]
  DTAAS_NEO4J_URI       Neo4j Bolt URI [default: bolt://127.0.0.1:7687]
  DTAAS_NEO4J_USER      Neo4j user [default: neo4j]
  DTAAS_NEO4J_PASSWORD  Neo4j password (never logged)";

/// Runs the worker until `ctx.shutdown` is cancelled.
pub async fn run(ctx: Context) -> Result<(), RunError> {
    let config = GraphConfig::load(&ctx.config)?;
    let store: Arc<dyn GraphStore> = match config.backend {
        Backend::Embedded => Arc::new(embedded::EmbeddedStore::open(
            &ctx.config.data_dir,
            config.sqlite_busy,
        )?),
        Backend::Neo4j => Arc::new(neo4j::Neo4jStore::connect(&config).await?),
    };
    tracing::info!(backend = ?config.backend, "Graph store ready.");
    let consumer = consumer::new(&ctx, &config, store.clone()).await;
    let stats_fn = {
        let counters = consumer.counters();
        Arc::new(move || serde_json::json!(counters.snapshot()))
    };
    let mut service = WorkerService::start(
        &ctx,
        WORKER,
        "Relations of DTs, assets, PTs, commands and lifecycle transitions",
        Some(stats_fn),
    )
    .await?;
    let queries = Queries {
        store,
        admins: Arc::new(config.admins.clone()),
    };
    requests::register(&mut service, &queries).await?;
    let consumer = tokio::spawn(consumer.run(ctx.clone()));
    let result = consumer.await;
    // The service stops on its own once shutdown is cancelled; if the consumer failed
    // first, stop it so the process exits and can be restarted.
    ctx.shutdown.cancel();
    service.run().await?;
    result??;
    tracing::info!("Graph worker stopped.");
    Ok(())
}
