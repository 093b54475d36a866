//! The Neo4j backend (`neo4rs`, Bolt 4.x): batched `UNWIND … MERGE` writes in one
//! transaction, the statements of `cypher.rs`, and `graph.cypher` (graph admins only,
//! committed).

use std::collections::HashMap;

use dtaas_schemas::graph::{AssetUser, DtProcess, Transition};
use futures::future::BoxFuture;
use neo4rs::{query, BoltList, BoltMap, BoltNull, BoltType, ConfigBuilder, Graph, Query};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::GraphConfig;
use crate::cypher;
use crate::error::Neo4jError;
use crate::model::Batch;
use crate::store::{CommandStatusRow, GraphStore, StoreError, TreeRows};

/// A pool of Bolt connections to Neo4j.
pub struct Neo4jStore {
    graph: Graph,
}

fn unavailable(e: neo4rs::Error) -> StoreError {
    StoreError::Unavailable(format!("neo4j: {e}"))
}

/// A write error: Neo4j client errors (constraint violations, type errors) come back
/// the same on every retry, so they are `Rejected`; the rest is worth retrying.
fn write_error(e: neo4rs::Error) -> StoreError {
    use neo4rs::{Neo4jClientErrorKind as Client, Neo4jErrorKind as Kind};
    match &e {
        neo4rs::Error::Neo4j(inner)
            if matches!(inner.kind(), Kind::Client(Client::Other | Client::Unknown)) =>
        {
            StoreError::Rejected(format!("neo4j: {e}"))
        }
        _ => unavailable(e),
    }
}

impl Neo4jStore {
    /// Connects and creates the constraints. The password goes only to neo4rs and
    /// never into an error or log.
    pub async fn connect(config: &GraphConfig) -> Result<Self, Neo4jError> {
        let bolt = ConfigBuilder::default()
            .uri(config.neo4j_uri.as_str())
            .user(config.neo4j_user.as_str())
            .password(config.neo4j_password.expose())
            .db(config.neo4j_database.as_str())
            .build()
            .map_err(Neo4jError::Settings)?;
        let graph = Graph::connect(bolt)
            .await
            .map_err(|source| Neo4jError::Connect {
                uri: config.neo4j_uri.clone(),
                user: config.neo4j_user.clone(),
                source,
            })?;
        for statement in cypher::CONSTRAINTS {
            // Older or restricted servers may refuse a constraint; MERGE stays correct
            // without it (only slower and open to races between instances), so warn.
            if let Err(error) = graph.run(query(statement)).await {
                tracing::warn!(%error, statement, "Cannot create a Neo4j constraint.");
            }
        }
        Ok(Self { graph })
    }

    async fn rows<T: DeserializeOwned>(
        &self,
        statement: &str,
        params: Value,
    ) -> Result<Vec<T>, StoreError> {
        let mut stream = self
            .graph
            .execute(with_params(query(statement), params))
            .await
            .map_err(unavailable)?;
        let mut out = Vec::new();
        while let Some(row) = stream.next().await.map_err(unavailable)? {
            out.push(
                row.to::<T>()
                    .map_err(|e| StoreError::Rejected(format!("unexpected result row: {e}")))?,
            );
        }
        Ok(out)
    }
}

/// `params`, a JSON object, as query parameters.
fn with_params(mut q: Query, params: Value) -> Query {
    if let Value::Object(map) = params {
        for (key, value) in map {
            q = q.param(&key, bolt(value));
        }
    }
    q
}

/// JSON → Bolt (integers stay integers).
fn bolt(value: Value) -> BoltType {
    match value {
        Value::Null => BoltType::Null(BoltNull),
        Value::Bool(b) => b.into(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.into(),
            None => n.as_f64().unwrap_or(f64::NAN).into(),
        },
        Value::String(s) => s.into(),
        Value::Array(items) => BoltType::List(BoltList {
            value: items.into_iter().map(bolt).collect(),
        }),
        Value::Object(map) => {
            let mut out = BoltMap::with_capacity(map.len());
            for (key, value) in map {
                out.put(key.into(), bolt(value));
            }
            BoltType::Map(out)
        }
    }
}

impl GraphStore for Neo4jStore {
    fn write(&self, batch: &Batch) -> BoxFuture<'_, Result<(), StoreError>> {
        let statements = cypher::write_statements(batch);
        Box::pin(async move {
            let mut txn = self.graph.start_txn().await.map_err(unavailable)?;
            for (statement, rows) in statements {
                txn.run(query(statement).param("rows", bolt(rows)))
                    .await
                    .map_err(write_error)?;
            }
            txn.commit().await.map_err(write_error)
        })
    }

    fn owners(
        &self,
        dts: Vec<String>,
    ) -> BoxFuture<'_, Result<HashMap<String, String>, StoreError>> {
        Box::pin(async move {
            let rows = self
                .rows::<cypher::OwnerCols>(cypher::OWNERS, cypher::owners_params(&dts))
                .await?;
            Ok(cypher::owners(rows))
        })
    }

    fn tree(&self, dt: String) -> BoxFuture<'_, Result<Option<TreeRows>, StoreError>> {
        Box::pin(async move {
            let params = cypher::tree_params(&dt);
            let dts = self.rows(cypher::TREE_DTS, params.clone()).await?;
            if dts.is_empty() {
                return Ok(None);
            }
            let edges = self.rows(cypher::TREE_EDGES, params.clone()).await?;
            let assets = self.rows(cypher::TREE_ASSETS, params.clone()).await?;
            let pts = self.rows(cypher::TREE_PTS, params.clone()).await?;
            let processes = self.rows(cypher::TREE_PROCESSES, params.clone()).await?;
            let reads = self.rows(cypher::TREE_READS, params).await?;
            Ok(cypher::tree_rows(dts, edges, assets, pts, processes, reads))
        })
    }

    fn impact(
        &self,
        asset: String,
        version: Option<String>,
    ) -> BoxFuture<'_, Result<Vec<AssetUser>, StoreError>> {
        Box::pin(async move {
            let params = cypher::impact_params(&asset, version.as_deref());
            self.rows::<cypher::ImpactCols>(cypher::IMPACT, params)
                .await
        })
    }

    fn history(
        &self,
        dt: String,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<Transition>, StoreError>> {
        Box::pin(async move {
            let params = cypher::history_params(&dt, limit);
            let rows = self
                .rows::<cypher::HistoryCols>(cypher::HISTORY, params)
                .await?;
            Ok(rows.into_iter().map(Into::into).collect())
        })
    }

    fn processes(
        &self,
        dt: Option<String>,
        node: Option<String>,
        owner: Option<String>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<DtProcess>, StoreError>> {
        Box::pin(async move {
            let params =
                cypher::processes_params(dt.as_deref(), node.as_deref(), owner.as_deref(), limit);
            self.rows::<cypher::ProcessCols>(cypher::PROCESSES, params)
                .await
        })
    }

    fn commands(
        &self,
        pt: String,
        from: i64,
        to: i64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<CommandStatusRow>, StoreError>> {
        Box::pin(async move {
            let params = cypher::commands_params(&pt, from, to, limit);
            self.rows::<CommandStatusRow>(cypher::COMMANDS, params)
                .await
        })
    }

    fn cypher(
        &self,
        statement: String,
        params: serde_json::Map<String, Value>,
    ) -> BoxFuture<'_, Result<Vec<Value>, StoreError>> {
        Box::pin(async move {
            let mut txn = self.graph.start_txn().await.map_err(unavailable)?;
            let q = with_params(query(&statement), Value::Object(params));
            let mut stream = txn
                .execute(q)
                .await
                .map_err(|e| StoreError::Rejected(e.to_string()))?;
            let mut rows = Vec::new();
            while let Some(row) = stream
                .next(txn.handle())
                .await
                .map_err(|e| StoreError::Rejected(e.to_string()))?
            {
                let row = row
                    .to::<serde_json::Map<String, Value>>()
                    .map_err(|e| StoreError::Rejected(format!("cannot convert a row: {e}")))?;
                rows.push(Value::Object(row));
            }
            txn.commit().await.map_err(unavailable)?;
            Ok(rows)
        })
    }
}
