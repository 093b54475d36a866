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
pub mod requests;
pub mod store;
pub mod upload;
pub mod validate;

use std::sync::Arc;

use dtaas_runtime::provision::{open_kv, open_object_store};
use dtaas_runtime::{Context, WorkerService};
use dtaas_schemas::names;

use crate::config::AssetsConfig;
pub use crate::error::RunError;
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
pub async fn run(ctx: Context) -> Result<(), RunError> {
    let config = Arc::new(AssetsConfig::load(&ctx.config)?);
    let library = Library {
        meta: MetaStore {
            kv: open_kv(&ctx.js, names::KV_ASSETS).await?,
        },
        objects: open_object_store(&ctx.js, names::OBJECT_ASSETS).await?,
        dts: DtRegistry {
            kv: open_kv(&ctx.js, names::KV_DTS).await?,
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
    requests::register(&mut service, &library).await?;
    tracing::info!("Asset library ready.");
    service.run().await?;
    tracing::info!("Assets worker stopped.");
    Ok(())
}
