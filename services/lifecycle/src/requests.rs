//! The `dt.*` request endpoints: each verb's request type and its handler on the core;
//! the core's errors become error replies (`Error` → `ErrorReply`).

use dtaas_runtime::service::ServiceError;
use dtaas_runtime::WorkerService;
use dtaas_schemas::dt_config::DtState;
use dtaas_schemas::fork::ForkRequest;
use dtaas_schemas::lifecycle::{
    CreateRequest, DtReply, EvolveRequest, IdRequest, ListRequest, LogsReply, LogsRequest,
    RestoreRequest, SERVICE, VERB_ANALYZE, VERB_CLEAN, VERB_CREATE, VERB_DELETE, VERB_EVOLVE,
    VERB_EXECUTE, VERB_FORK, VERB_GET, VERB_LIST, VERB_LOGS, VERB_REPLAY, VERB_RESTORE, VERB_SAVE,
    VERB_TERMINATE,
};
use dtaas_schemas::ErrorReply;

use crate::core::Core;

/// Serves every `dt.*` verb with `core`; the caller is the request's user.
pub async fn register(service: &mut WorkerService, core: &Core) -> Result<(), ServiceError> {
    service
        .endpoint_with(core, SERVICE, VERB_CREATE, |c, info, r: CreateRequest| async move {
            Ok(reply(c.create(&info.user, r.config).await?))
        })
        .await?;
    service
        .endpoint_with(
            core,
            SERVICE,
            VERB_EXECUTE,
            |c, info, r: IdRequest| async move { Ok(reply(c.execute(&info.user, &r.id).await?)) },
        )
        .await?;
    service
        .endpoint_with(
            core,
            SERVICE,
            VERB_TERMINATE,
            |c, info, r: IdRequest| async move { Ok(reply(c.terminate(&info.user, &r.id).await?)) },
        )
        .await?;
    service
        .endpoint_with(
            core,
            SERVICE,
            VERB_ANALYZE,
            |c, info, r: IdRequest| async move {
                c.analyze(&info.user, &r.id).await.map_err(ErrorReply::from)
            },
        )
        .await?;
    service
        .endpoint_with(
            core,
            SERVICE,
            VERB_CLEAN,
            |c, info, r: IdRequest| async move {
                c.clean(&info.user, &r.id).await.map_err(ErrorReply::from)
            },
        )
        .await?;
    service
        .endpoint_with(
            core,
            SERVICE,
            VERB_DELETE,
            |c, info, r: IdRequest| async move {
                c.delete(&info.user, &r.id).await.map_err(ErrorReply::from)
            },
        )
        .await?;
    service
        .endpoint_with(
            core,
            SERVICE,
            VERB_SAVE,
            |c, info, r: IdRequest| async move { Ok(reply(c.save(&info.user, &r.id).await?)) },
        )
        .await?;
    service
        .endpoint_with(
            core,
            SERVICE,
            VERB_RESTORE,
            |c, info, r: RestoreRequest| async move {
                Ok(reply(c.restore(&info.user, &r.id, r.snapshot).await?))
            },
        )
        .await?;
    service
        .endpoint_with(
            core,
            SERVICE,
            VERB_EVOLVE,
            |c, info, r: EvolveRequest| async move {
                Ok(reply(c.evolve(&info.user, &r.id, r.config).await?))
            },
        )
        .await?;
    service
        .endpoint_with(
            core,
            SERVICE,
            VERB_FORK,
            |c, info, r: ForkRequest| async move { Ok(reply(c.fork(&info.user, r).await?)) },
        )
        .await?;
    service
        .endpoint_with(
            core,
            SERVICE,
            VERB_REPLAY,
            |c, info, r: IdRequest| async move { Ok(reply(c.replay(&info.user, &r.id).await?)) },
        )
        .await?;
    service
        .endpoint_with(
            core,
            SERVICE,
            VERB_GET,
            |c, info, r: IdRequest| async move {
                c.get(&info.user, &r.id).await.map_err(ErrorReply::from)
            },
        )
        .await?;
    service
        .endpoint_with(core, SERVICE, VERB_LIST, |c, info, _: ListRequest| async move {
            c.list(&info.user).await.map_err(ErrorReply::from)
        })
        .await?;
    service
        .endpoint_with(
            core,
            SERVICE,
            VERB_LOGS,
            |c, info, r: LogsRequest| async move {
                let lines = c.logs(&info.user, &r.id, r.lines).await?;
                Ok(LogsReply { lines })
            },
        )
        .await
}

/// A DT's state as the reply of a verb that changed it (logs only with `get`).
fn reply(dt: DtState) -> DtReply {
    DtReply::new(dt, Vec::new())
}
