//! The `ts.query` and `ts.latest` request endpoints.

use std::sync::Arc;

use dtaas_runtime::consumer::Counters;
use dtaas_runtime::service::{ServiceError, StatsFn};
use dtaas_runtime::{Context, WorkerService};
use dtaas_schemas::timeseries::{
    TsLatestRequest, TsQueryRequest, SERVICE, VERB_LATEST, VERB_QUERY,
};
use dtaas_schemas::{subject, time, ErrorCode, ErrorReply};

use crate::query::Query;
use crate::sink::{Sink, SinkError};
use crate::WORKER;

fn reply_error(error: SinkError) -> ErrorReply {
    match error {
        SinkError::Unavailable(m) => ErrorReply::new(ErrorCode::Unavailable, m),
        SinkError::Rejected(m) => ErrorReply::new(ErrorCode::BadRequest, m),
    }
}

/// Registers `dtaas-historian` and its endpoints; `run` the result until shutdown.
pub async fn start<S: Sink>(
    ctx: &Context,
    store: S,
    stats: Arc<Counters>,
) -> Result<WorkerService, ServiceError> {
    let stats_fn: StatsFn = Arc::new(move || serde_json::json!(stats.snapshot()));
    let mut service = WorkerService::start(
        ctx,
        WORKER,
        "Telemetry history: time-series queries",
        Some(stats_fn),
    )
    .await?;
    service
        .endpoint_with(
            &store,
            SERVICE,
            VERB_QUERY,
            |store, _, request: TsQueryRequest| async move {
                let query = Query::parse(request, time::now_ns())?;
                store.query(query).await.map_err(reply_error)
            },
        )
        .await?;
    service
        .endpoint_with(
            &store,
            SERVICE,
            VERB_LATEST,
            |store, _, request: TsLatestRequest| async move {
                subject::validate_token("PT id", &request.pt).map_err(|e| {
                    ErrorReply::new(ErrorCode::BadRequest, format!("field `pt`: {e}"))
                })?;
                store.latest(request.pt).await.map_err(reply_error)
            },
        )
        .await?;
    Ok(service)
}
