//! The dtaas assets worker: the library of reusable data, models, functions, tools
//! and DTs (`asset.*` requests), plus the client side the CLI uses (uploads,
//! downloads, the DTaaS folder layout).

pub mod client;
pub mod config;
pub mod error;
pub mod fetch;
pub mod in_use;
pub mod layout;
pub mod library;
pub mod store;
pub mod upload;
pub mod validate;

use std::sync::Arc;

use dtaas_runtime::{Context, WorkerService};
use dtaas_schemas::asset_api::{
    self as api, FetchRequest, ListRequest, NameRequest, PutRequest, UploadRequest,
};
use dtaas_schemas::names;

use crate::config::AssetsConfig;
use crate::in_use::DtRegistry;
use crate::library::Library;
use crate::store::MetaStore;

/// The worker's name: `dtaas assets`, service `dtaas-assets`.
pub const WORKER: &str = "assets";

/// Environment variables this worker reads, for `dtaas assets --help`.
pub const ENV_HELP: &str = "\
Assets worker environment:
  DTAAS_ASSETS_MAX_FILE_SIZE  largest file an asset may hold, bytes [default: 1073741824]";

/// Runs the worker until `ctx.shutdown` is cancelled.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let config = Arc::new(AssetsConfig::load(&ctx.config)?);
    let library = Library {
        meta: MetaStore {
            kv: ctx.js.get_key_value(names::KV_ASSETS).await?,
        },
        objects: ctx.js.get_object_store(names::OBJECT_ASSETS).await?,
        dts: DtRegistry {
            kv: ctx.js.get_key_value(names::KV_DTS).await?,
        },
        readers: Arc::new(fetch::Readers::new(config.fetch_readers)),
        config,
    };
    let mut service = WorkerService::start(
        &ctx,
        WORKER,
        "Library of reusable assets: private and shared, versioned",
        None,
    )
    .await?;
    macro_rules! serve {
        ($verb:expr, $req:ty, |$lib:ident, $user:ident, $r:ident| $body:expr) => {{
            let library = library.clone();
            service
                .endpoint(api::SERVICE, $verb, move |info, $r: $req| {
                    let $lib = library.clone();
                    async move {
                        let $user = info.user.as_str();
                        $body.await
                    }
                })
                .await?;
        }};
    }
    serve!(api::VERB_UPLOAD, UploadRequest, |l, u, r| l.upload(u, r));
    serve!(api::VERB_PUT, PutRequest, |l, u, r| l.put(u, r));
    serve!(api::VERB_GET, NameRequest, |l, u, r| l.get(u, &r.name));
    serve!(api::VERB_FETCH, FetchRequest, |l, u, r| l.fetch(u, r));
    serve!(api::VERB_LIST, ListRequest, |l, u, r| l.list(u, r));
    serve!(api::VERB_SHARE, NameRequest, |l, u, r| l
        .set_shared(u, &r.name, true));
    serve!(api::VERB_UNSHARE, NameRequest, |l, u, r| l
        .set_shared(u, &r.name, false));
    serve!(api::VERB_DELETE, NameRequest, |l, u, r| l
        .delete(u, &r.name));
    tracing::info!("Asset library ready.");
    service.run().await?;
    tracing::info!("Assets worker stopped.");
    Ok(())
}
