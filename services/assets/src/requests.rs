//! The `asset.*` request endpoints: each verb's request type and its handler on the
//! library.

use dtaas_runtime::service::ServiceError;
use dtaas_runtime::WorkerService;
use dtaas_schemas::asset_api::{
    FetchRequest, ListRequest, NameRequest, PutRequest, UploadRequest, SERVICE, VERB_DELETE,
    VERB_FETCH, VERB_GET, VERB_LIST, VERB_PUT, VERB_SHARE, VERB_UNSHARE, VERB_UPLOAD,
};

use crate::library::Library;

/// Serves every `asset.*` verb with `library`; the caller is the request's user.
pub async fn register(service: &mut WorkerService, library: &Library) -> Result<(), ServiceError> {
    service
        .endpoint_with(
            library,
            SERVICE,
            VERB_UPLOAD,
            |l, info, r: UploadRequest| async move { l.upload(&info.user, r).await },
        )
        .await?;
    service
        .endpoint_with(
            library,
            SERVICE,
            VERB_PUT,
            |l, info, r: PutRequest| async move { l.put(&info.user, r).await },
        )
        .await?;
    service
        .endpoint_with(
            library,
            SERVICE,
            VERB_GET,
            |l, info, r: NameRequest| async move { l.get(&info.user, &r.name).await },
        )
        .await?;
    service
        .endpoint_with(
            library,
            SERVICE,
            VERB_FETCH,
            |l, info, r: FetchRequest| async move { l.fetch(&info.user, r).await },
        )
        .await?;
    service
        .endpoint_with(
            library,
            SERVICE,
            VERB_LIST,
            |l, info, r: ListRequest| async move { l.list(&info.user, r).await },
        )
        .await?;
    service
        .endpoint_with(
            library,
            SERVICE,
            VERB_SHARE,
            |l, info, r: NameRequest| async move { l.set_shared(&info.user, &r.name, true).await },
        )
        .await?;
    service
        .endpoint_with(
            library,
            SERVICE,
            VERB_UNSHARE,
            |l, info, r: NameRequest| async move { l.set_shared(&info.user, &r.name, false).await },
        )
        .await?;
    service
        .endpoint_with(
            library,
            SERVICE,
            VERB_DELETE,
            |l, info, r: NameRequest| async move { l.delete(&info.user, &r.name).await },
        )
        .await
}
