//! The `graph.*` request handlers: validate the request, ask the store, shape the reply;
//! and their registration with the service API.

use std::collections::HashMap;
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

use crate::scope::{self, Viewer};
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
            |q, info, req: TreeRequest| async move { q.tree(&info.user, req).await },
        )
        .await?;
    service
        .endpoint_with(
            queries,
            SERVICE,
            VERB_IMPACT,
            |q, info, req: ImpactRequest| async move { q.impact(&info.user, req).await },
        )
        .await?;
    service
        .endpoint_with(
            queries,
            SERVICE,
            VERB_HISTORY,
            |q, info, req: HistoryRequest| async move { q.history(&info.user, req).await },
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
            |q, info, req: ProcessesRequest| async move { q.processes(&info.user, req).await },
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

/// The reply to a DT that does not exist, or that is not the caller's: the two look
/// the same, so nobody learns which other users' DT ids exist.
fn not_found(dt: &str) -> ErrorReply {
    ErrorReply::new(
        ErrorCode::NotFound,
        format!("no DT named {dt:?} in the graph"),
    )
}

impl Queries {
    fn viewer(&self, user: &str) -> Viewer {
        Viewer::new(user, &self.admins)
    }

    /// The recorded owners of the DTs among `dts` that `viewer` needs checked.
    async fn owners<'a>(
        &self,
        viewer: &Viewer,
        dts: impl IntoIterator<Item = &'a str>,
    ) -> Result<HashMap<String, String>, ErrorReply> {
        let ids = viewer.to_check(dts);
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        self.store.owners(ids).await.map_err(store_error)
    }

    /// `not_found` unless `viewer` sees `dt`.
    async fn check_sees(&self, viewer: &Viewer, dt: &str) -> Result<(), ErrorReply> {
        let owners = self.owners(viewer, [dt]).await?;
        if viewer.sees(&owners, dt) {
            Ok(())
        } else {
            Err(not_found(dt))
        }
    }

    /// `graph.tree`: the composition tree; `not_found` for an unknown DT or another
    /// user's.
    pub async fn tree(&self, user: &str, req: TreeRequest) -> Result<TreeReply, ErrorReply> {
        id("dt", &req.dt)?;
        let viewer = self.viewer(user);
        self.check_sees(&viewer, &req.dt).await?;
        let rows = self
            .store
            .tree(req.dt.clone())
            .await
            .map_err(store_error)?
            .ok_or_else(|| not_found(&req.dt))?;
        let owners = self
            .owners(&viewer, rows.dts.iter().map(|d| d.id.as_str()))
            .await?;
        Ok(TreeReply {
            tree: assemble_tree(&req.dt, scope::tree(&viewer, &owners, rows)),
        })
    }

    /// `graph.impact`: the caller's DTs using an asset; empty for an unused asset.
    pub async fn impact(&self, user: &str, req: ImpactRequest) -> Result<ImpactReply, ErrorReply> {
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
        let viewer = self.viewer(user);
        let owners = self
            .owners(&viewer, users.iter().map(|u| u.dt.as_str()))
            .await?;
        let users = scope::impact(&viewer, &owners, users);
        Ok(ImpactReply {
            asset: req.asset,
            version: req.version,
            users,
        })
    }

    /// `graph.history`: transitions oldest first; `not_found` for another user's DT
    /// or (to a user; an admin gets no transitions) an unknown one.
    pub async fn history(
        &self,
        user: &str,
        req: HistoryRequest,
    ) -> Result<HistoryReply, ErrorReply> {
        id("dt", &req.dt)?;
        let limit = limit(req.limit)?;
        self.check_sees(&self.viewer(user), &req.dt).await?;
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

    /// `graph.processes`: the processes of a DT and/or an exec node, only the
    /// caller's DTs'; `not_found` for another user's DT.
    pub async fn processes(
        &self,
        user: &str,
        req: ProcessesRequest,
    ) -> Result<ProcessesReply, ErrorReply> {
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
        let viewer = self.viewer(user);
        if let Some(dt) = &req.dt {
            self.check_sees(&viewer, dt).await?;
        }
        // Filtered in the store, so `limit` counts only the caller's processes.
        let processes = self
            .store
            .processes(req.dt, req.node, scope::owner_filter(&viewer), limit)
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

    /// `graph.cypher`: raw Cypher, for graph admins only: a query sees every user's
    /// DTs, and no filter can cut an arbitrary answer down to the caller's.
    pub async fn cypher(
        &self,
        info: RequestInfo,
        req: CypherRequest,
    ) -> Result<CypherReply, ErrorReply> {
        if req.query.trim().is_empty() {
            return Err(bad("field `query` must not be empty"));
        }
        if self.viewer(&info.user) != Viewer::Admin {
            return Err(ErrorReply::new(
                ErrorCode::Forbidden,
                "graph.cypher reads every user's DTs; only graph admins ([graph] admins) may run it",
            ));
        }
        let rows = self
            .store
            .cypher(req.query, req.params)
            .await
            .map_err(store_error)?;
        Ok(CypherReply { rows })
    }
}
