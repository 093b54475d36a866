//! Reading and writing the library's KV entries: immutable version metadata and the
//! per-asset index, which changes only by compare-and-set on its revision.

use async_nats::jetstream::kv::{self, CreateErrorKind, UpdateErrorKind};
use dtaas_runtime::kv_keys;
use dtaas_schemas::asset::AssetMeta;
use dtaas_schemas::asset_store::{index_key, meta_key, AssetIndex};
use dtaas_schemas::codec::{decode, Encoding};
use dtaas_schemas::ErrorReply;

use crate::error::{internal, unavailable};

/// How often an index update is retried when another request changed it meanwhile.
const CAS_ATTEMPTS: usize = 50;

/// The KV bucket `dtaas-assets`.
#[derive(Clone)]
pub struct MetaStore {
    pub kv: kv::Store,
}

/// What became of a `create`.
pub enum Created {
    Yes,
    AlreadyExists,
}

impl MetaStore {
    /// An asset's index and its revision; `None` when the asset never existed.
    pub async fn index(
        &self,
        owner: &str,
        name: &str,
    ) -> Result<Option<(AssetIndex, u64)>, ErrorReply> {
        let key = index_key(owner, name);
        let entry = self
            .kv
            .entry(key.clone())
            .await
            .map_err(|e| unavailable("read the asset index", e))?;
        match entry {
            Some(entry) if entry.operation == kv::Operation::Put => {
                let index = decode(None, &entry.value)
                    .map_err(|e| internal(format!("KV entry {key} is unreadable: {e}")))?;
                Ok(Some((index, entry.revision)))
            }
            _ => Ok(None),
        }
    }

    /// One version's metadata; `None` when it does not exist (or was deleted).
    pub async fn meta(
        &self,
        owner: &str,
        name: &str,
        version: u64,
    ) -> Result<Option<AssetMeta>, ErrorReply> {
        let key = meta_key(owner, name, version);
        let value = self
            .kv
            .get(key.clone())
            .await
            .map_err(|e| unavailable("read asset metadata", e))?;
        value
            .map(|v| {
                decode(None, &v).map_err(|e| internal(format!("KV entry {key} is unreadable: {e}")))
            })
            .transpose()
    }

    /// Writes a version's metadata unless that version exists: of two concurrent
    /// writers of one version exactly one gets `Created::Yes`.
    pub async fn create_meta(&self, meta: &AssetMeta) -> Result<Created, ErrorReply> {
        let body = Encoding::Json
            .encode(meta)
            .map_err(|e| internal(e.to_string()))?;
        match self
            .kv
            .create(meta_key(&meta.owner, &meta.name, meta.version), body)
            .await
        {
            Ok(_) => Ok(Created::Yes),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(Created::AlreadyExists),
            Err(e) => Err(unavailable("write asset metadata", e)),
        }
    }

    /// Removes a version's metadata.
    pub async fn purge_meta(
        &self,
        owner: &str,
        name: &str,
        version: u64,
    ) -> Result<(), ErrorReply> {
        self.kv
            .purge(meta_key(owner, name, version))
            .await
            .map_err(|e| unavailable("delete asset metadata", e))
    }

    /// Applies `change` to the asset's index (`None` when it has none yet) and writes
    /// the result with compare-and-set, reading again when another request won.
    pub async fn update_index<F>(
        &self,
        owner: &str,
        name: &str,
        mut change: F,
    ) -> Result<AssetIndex, ErrorReply>
    where
        F: FnMut(Option<AssetIndex>) -> Result<AssetIndex, ErrorReply>,
    {
        let key = index_key(owner, name);
        for _ in 0..CAS_ATTEMPTS {
            let current = self.index(owner, name).await?;
            let revision = current.as_ref().map(|(_, r)| *r);
            let next = change(current.map(|(i, _)| i))?;
            let body = Encoding::Json
                .encode(&next)
                .map_err(|e| internal(e.to_string()))?;
            let written = match revision {
                Some(revision) => match self.kv.update(&key, body, revision).await {
                    Ok(_) => true,
                    Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => false,
                    Err(e) => return Err(unavailable("update the asset index", e)),
                },
                None => match self.kv.create(&key, body).await {
                    Ok(_) => true,
                    Err(e) if e.kind() == CreateErrorKind::AlreadyExists => false,
                    Err(e) => return Err(unavailable("create the asset index", e)),
                },
            };
            if written {
                return Ok(next);
            }
        }
        Err(unavailable(
            "update the asset index",
            format!("{key} kept changing under {CAS_ATTEMPTS} attempts"),
        ))
    }

    /// Every asset index in the bucket.
    pub async fn all_indexes(&self) -> Result<Vec<AssetIndex>, ErrorReply> {
        let keys = kv_keys::keys(&self.kv)
            .await
            .map_err(|e| unavailable("list assets", e))?;
        let mut indexes = Vec::new();
        for key in keys.iter().filter(|k| k.starts_with("i.")) {
            let Some(value) = self
                .kv
                .get(key.clone())
                .await
                .map_err(|e| unavailable("list assets", e))?
            else {
                continue;
            };
            match decode::<AssetIndex>(None, &value) {
                Ok(index) => indexes.push(index),
                Err(e) => tracing::warn!(%key, error = %e, "Skipping an unreadable asset index."),
            }
        }
        Ok(indexes)
    }
}
