//! The `graph.*` request handlers: validate the request, ask the store, shape the reply;
//! and their registration with the service API.

use std::sync::Arc;

use dtaas_runtime::service::ServiceError;
use dtaas_runtime::{RequestInfo, WorkerService};
use dtaas_schemas::graph::{
    self, CommandsReply, CommandsRequest, CypherReply, CypherRequest, HistoryReply, HistoryRequest,
    ImpactReply, ImpactRequest, ProcessesReply, ProcessesRequest, TreeReply, TreeRequest,
};
use dtaas_schemas::subject::validate_token;
use dtaas_schemas::time::{now_ns, parse_time};
use dtaas_schemas::{ErrorCode, ErrorReply};

use crate::cypher_guard;
use crate::store::{assemble_commands, assemble_tree, GraphStore, StoreError};

/// Default and largest `limit` of history and commands requests.
pub const DEFAULT_LIMIT: u32 = 1000;
pub const MAX_LIMIT: u32 = 100_000;
/// `from` of a commands request without one: the epoch.
pub const DEFAULT_FROM: i64 = 0;
/// `to` of a commands request without one: the end of time.
pub const DEFAULT_TO: i64 = i64::MAX;

/// The request handlers, sharing one store.
#[derive(Clone)]
pub struct Queries {
    pub store: Arc<dyn GraphStore>,
    /// Users that may run writing Cypher.
    pub admins: Arc<Vec<String>>,
}

/// Serves every `graph.*` verb with `queries`.
pub async fn register(service: &mut WorkerService, queries: &Queries) -> Result<(), ServiceError> {
    use graph::{
        SERVICE, VERB_COMMANDS, VERB_CYPHER, VERB_HISTORY, VERB_IMPACT, VERB_PROCESSES, VERB_TREE,
    };
    service
        .endpoint_with(
            queries,
            SERVICE,
            VERB_TREE,
            |q, _, req: TreeRequest| async move { q.tree(req).await },
        )
        .await?;
    service
        .endpoint_with(
            queries,
            SERVICE,
            VERB_IMPACT,
            |q, _, req: ImpactRequest| async move { q.impact(req).await },
        )
        .await?;
    service
        .endpoint_with(
            queries,
            SERVICE,
            VERB_HISTORY,
            |q, _, req: HistoryRequest| async move { q.history(req).await },
        )
        .await?;
    service
        .endpoint_with(
            queries,
            SERVICE,
            VERB_COMMANDS,
            |q, _, req: CommandsRequest| async move { q.commands(req).await },
        )
        .await?;
    service
        .endpoint_with(
            queries,
            SERVICE,
            VERB_PROCESSES,
            |q, _, req: ProcessesRequest| async move { q.processes(req).await },
        )
        .await?;
    service
        .endpoint_with(
            queries,
            SERVICE,
            VERB_CYPHER,
            |q, info, req: CypherRequest| async move { q.cypher(info, req).await },
        )
        .await
}

fn bad(message: impl Into<String>) -> ErrorReply {
    ErrorReply::new(ErrorCode::BadRequest, message)
}

fn id(field: &'static str, value: &str) -> Result<(), ErrorReply> {
    validate_token(field, value).map_err(|e| bad(format!("field `{field}`: {e}")))
}

fn limit(value: Option<u32>) -> Result<u32, ErrorReply> {
    match value {
        None => Ok(DEFAULT_LIMIT),
        Some(0) => Err(bad("field `limit` must be at least 1")),
        Some(n) if n > MAX_LIMIT => Err(bad(format!("field `limit` must be at most {MAX_LIMIT}"))),
        Some(n) => Ok(n),
    }
}

fn store_error(error: StoreError) -> ErrorReply {
    match error {
        StoreError::Unavailable(_) => ErrorReply::new(ErrorCode::Unavailable, error.to_string()),
        StoreError::Unsupported(_) => ErrorReply::new(ErrorCode::BadRequest, error.to_string()),
        StoreError::Rejected(_) => ErrorReply::new(ErrorCode::BadRequest, error.to_string()),
    }
}

impl Queries {
    /// `graph.tree`: the composition tree; `not_found` for an unknown DT.
    pub async fn tree(&self, req: TreeRequest) -> Result<TreeReply, ErrorReply> {
        id("dt", &req.dt)?;
        match self.store.tree(req.dt.clone()).await.map_err(store_error)? {
            Some(rows) => Ok(TreeReply {
                tree: assemble_tree(&req.dt, rows),
            }),
            None => Err(ErrorReply::new(
                ErrorCode::NotFound,
                format!("no DT named {:?} in the graph", req.dt),
            )),
        }
    }

    /// `graph.impact`: the DTs using an asset; empty for an unused asset.
    pub async fn impact(&self, req: ImpactRequest) -> Result<ImpactReply, ErrorReply> {
        if req.asset.is_empty() {
            return Err(bad("field `asset` must not be empty"));
        }
        if req.version.as_deref() == Some("") {
            return Err(bad(
                "field `version` must not be empty; omit it for every version",
            ));
        }
        let users = self
            .store
            .impact(req.asset.clone(), req.version.clone())
            .await
            .map_err(store_error)?;
        Ok(ImpactReply {
            asset: req.asset,
            version: req.version,
            users,
        })
    }

    /// `graph.history`: transitions oldest first; empty for an unknown DT.
    pub async fn history(&self, req: HistoryRequest) -> Result<HistoryReply, ErrorReply> {
        id("dt", &req.dt)?;
        let limit = limit(req.limit)?;
        let transitions = self
            .store
            .history(req.dt.clone(), limit)
            .await
            .map_err(store_error)?;
        Ok(HistoryReply {
            dt: req.dt,
            transitions,
        })
    }

    /// `graph.processes`: the processes of a DT and/or an exec node.
    pub async fn processes(&self, req: ProcessesRequest) -> Result<ProcessesReply, ErrorReply> {
        if req.dt.is_none() && req.node.is_none() {
            return Err(bad("give field `dt`, field `node`, or both"));
        }
        if let Some(dt) = &req.dt {
            id("dt", dt)?;
        }
        if let Some(node) = &req.node {
            id("node", node)?;
        }
        let limit = limit(req.limit)?;
        let processes = self
            .store
            .processes(req.dt, req.node, limit)
            .await
            .map_err(store_error)?;
        Ok(ProcessesReply { processes })
    }

    /// `graph.commands`: commands to a PT first seen in `[from, to)`.
    pub async fn commands(&self, req: CommandsRequest) -> Result<CommandsReply, ErrorReply> {
        id("pt", &req.pt)?;
        let now = now_ns();
        let time = |field: &str, value: &Option<String>, default: i64| match value {
            None => Ok(default),
            Some(text) => parse_time(text, now).map_err(|e| bad(format!("field `{field}`: {e}"))),
        };
        let from = time("from", &req.from, DEFAULT_FROM)?;
        let to = time("to", &req.to, DEFAULT_TO)?;
        if from > to {
            return Err(bad("field `from` lies after field `to`"));
        }
        let limit = limit(req.limit)?;
        let rows = self
            .store
            .commands(req.pt.clone(), from, to, limit)
            .await
            .map_err(store_error)?;
        Ok(CommandsReply {
            pt: req.pt,
            commands: assemble_commands(rows),
        })
    }

    /// `graph.cypher`: raw Cypher, read-only unless the caller is an admin.
    pub async fn cypher(
        &self,
        info: RequestInfo,
        req: CypherRequest,
    ) -> Result<CypherReply, ErrorReply> {
        if req.query.trim().is_empty() {
            return Err(bad("field `query` must not be empty"));
        }
        let admin = self.admins.iter().any(|a| a == &info.user);
        if !admin {
            if let Some(clause) = cypher_guard::write_clause(&req.query) {
                return Err(ErrorReply::new(
                    ErrorCode::Forbidden,
                    format!("field `query` contains the write clause {clause}; only graph admins may write"),
                ));
            }
        }
        let rows = self
            .store
            .cypher(req.query, req.params, admin)
            .await
            .map_err(store_error)?;
        Ok(CypherReply { rows })
    }
}
