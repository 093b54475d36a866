//! The dtaas graph worker: DTs, assets, PTs, child DTs, commands and lifecycle
//! transitions from `DTAAS_EVT` into a graph store (embedded SQLite or Neo4j), and the
//! `graph.*` queries over it.

pub mod config;
pub mod consumer;
pub mod cypher;
pub mod cypher_guard;
pub mod embedded;
pub mod model;
pub mod neo4j;
pub mod queries;
pub mod store;

use std::sync::Arc;

use dtaas_runtime::{Context, WorkerService};
use dtaas_schemas::graph::{
    self, CommandsRequest, CypherRequest, HistoryRequest, ImpactRequest, TreeRequest,
};

use crate::config::{Backend, GraphConfig};
use crate::queries::Queries;
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
pub async fn run(ctx: Context) -> anyhow::Result<()> {
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
        store: store.clone(),
        admins: Arc::new(config.admins.clone()),
    };
    let q = queries.clone();
    service
        .endpoint(
            graph::SERVICE,
            graph::VERB_TREE,
            move |_, req: TreeRequest| {
                let q = q.clone();
                async move { q.tree(req).await }
            },
        )
        .await?;
    let q = queries.clone();
    service
        .endpoint(
            graph::SERVICE,
            graph::VERB_IMPACT,
            move |_, req: ImpactRequest| {
                let q = q.clone();
                async move { q.impact(req).await }
            },
        )
        .await?;
    let q = queries.clone();
    service
        .endpoint(
            graph::SERVICE,
            graph::VERB_HISTORY,
            move |_, req: HistoryRequest| {
                let q = q.clone();
                async move { q.history(req).await }
            },
        )
        .await?;
    let q = queries.clone();
    service
        .endpoint(
            graph::SERVICE,
            graph::VERB_COMMANDS,
            move |_, req: CommandsRequest| {
                let q = q.clone();
                async move { q.commands(req).await }
            },
        )
        .await?;
    let q = queries;
    service
        .endpoint(
            graph::SERVICE,
            graph::VERB_CYPHER,
            move |info, req: CypherRequest| {
                let q = q.clone();
                async move { q.cypher(info, req).await }
            },
        )
        .await?;
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
