//! Work directories: `<dir>/work/<dt>/<role>` holds a fresh copy of the asset's files
//! for every start (restarts keep it as the process left it), fetched from the asset
//! library's object store and cached by SHA-256 under `<dir>/cache`, so a file shared
//! by many assets, versions or DTs is fetched once per node.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use async_nats::jetstream::{self, object_store::ObjectStore};
use dtaas_schemas::asset::AssetMeta;
use dtaas_schemas::asset_store::{hex, is_sha256, meta_key, object_name};
use dtaas_schemas::exec::ProcessSpec;
use dtaas_schemas::names::{KV_ASSETS, OBJECT_ASSETS, OBJECT_SNAPSHOTS};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::spawn::RunAs;

/// Why a work directory could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum WorkdirError {
    /// The spec names something that does not exist or is malformed.
    #[error("{0}")]
    Invalid(String),
    /// The library or the disk failed; retrying may help.
    #[error("{0}")]
    Unavailable(String),
}

fn unavailable(what: impl std::fmt::Display) -> impl FnOnce(async_nats::Error) -> WorkdirError {
    move |e| WorkdirError::Unavailable(format!("{what}: {e}"))
}

/// The file name `DTAAS_STATE` names when a snapshot is restored.
pub const STATE_FILE: &str = ".dtaas-state";

/// Prepares the work directory of one process.
#[derive(Debug, Clone)]
pub struct Workdirs {
    pub root: PathBuf,
    pub js: jetstream::Context,
    pub run_as: Option<RunAs>,
}

impl Workdirs {
    /// The work directory of `(dt, role)`.
    pub fn path(&self, dt: &str, role: &str) -> PathBuf {
        self.root.join("work").join(dt).join(role)
    }

    /// Empties the work directory, copies the asset's files into it and writes the
    /// snapshot to restore, if any. Returns the state file when there is one.
    pub async fn prepare(&self, spec: &ProcessSpec) -> Result<Option<PathBuf>, WorkdirError> {
        let dir = self.path(&spec.dt, &spec.role);
        let _ = tokio::fs::remove_dir_all(&dir).await;
        tokio::fs::create_dir_all(&dir).await.map_err(|e| {
            WorkdirError::Unavailable(format!("cannot create {}: {e}", dir.display()))
        })?;
        if let Some(meta) = self.asset_meta(spec).await? {
            let store = self.store(OBJECT_ASSETS).await?;
            for file in &meta.files {
                let target = safe_join(&dir, &file.path)?;
                let cached = self.cached(&store, &file.sha256).await?;
                if let Some(parent) = target.parent() {
                    tokio::fs::create_dir_all(parent)
                        .await
                        .map_err(io(&target))?;
                }
                tokio::fs::copy(&cached, &target)
                    .await
                    .map_err(io(&target))?;
                tokio::fs::set_permissions(
                    &target,
                    std::fs::Permissions::from_mode(file.mode & 0o777),
                )
                .await
                .map_err(io(&target))?;
            }
        }
        let state = match &spec.state {
            Some(name) => {
                let store = self.store(OBJECT_SNAPSHOTS).await?;
                let bytes = read_object(&store, name).await.map_err(|e| match e {
                    ReadError::NotFound => WorkdirError::Invalid(format!(
                        "field `state`: no snapshot {name:?} in object store {OBJECT_SNAPSHOTS}"
                    )),
                    ReadError::Other(e) => {
                        WorkdirError::Unavailable(format!("cannot read snapshot {name:?}: {e:#}"))
                    }
                })?;
                let path = dir.join(STATE_FILE);
                tokio::fs::write(&path, bytes).await.map_err(io(&path))?;
                Some(path)
            }
            None => None,
        };
        if let Some(run_as) = self.run_as {
            chown_tree(&dir, run_as).map_err(io(&dir))?;
        }
        Ok(state)
    }

    /// Removes the work directory of a stopped process.
    pub async fn remove(&self, dt: &str, role: &str) {
        let _ = tokio::fs::remove_dir_all(self.path(dt, role)).await;
        let _ = tokio::fs::remove_dir(self.root.join("work").join(dt)).await;
    }

    /// The asset's metadata, read from KV `dtaas-assets`; `None` for an asset without
    /// files (an empty `asset`, or one whose program is on the node already).
    async fn asset_meta(&self, spec: &ProcessSpec) -> Result<Option<AssetMeta>, WorkdirError> {
        if spec.asset.is_empty() {
            return Ok(None);
        }
        let bad = |why: &str| {
            WorkdirError::Invalid(format!(
                "field `asset`: {:?} {why}; expected the resolved `owner/name@version`",
                spec.asset
            ))
        };
        let (owner, rest) = spec
            .asset
            .split_once('/')
            .ok_or_else(|| bad("has no owner"))?;
        let (name, version) = rest.split_once('@').ok_or_else(|| bad("has no version"))?;
        let version: u64 = version
            .parse()
            .map_err(|_| bad("has a version that is not a number"))?;
        let kv =
            self.js.get_key_value(KV_ASSETS).await.map_err(|e| {
                WorkdirError::Unavailable(format!("cannot open KV {KV_ASSETS}: {e}"))
            })?;
        let key = meta_key(owner, name, version);
        let entry = kv
            .get(&key)
            .await
            .map_err(|e| {
                WorkdirError::Unavailable(format!("cannot read KV {KV_ASSETS} {key}: {e}"))
            })?
            .ok_or_else(|| bad("is not in the asset library"))?;
        let meta: AssetMeta = serde_json::from_slice(&entry).map_err(|e| {
            WorkdirError::Unavailable(format!("asset metadata {key} does not decode: {e}"))
        })?;
        if let Some(digest) = &spec.digest {
            if digest != &meta.digest {
                return Err(bad("has another digest than the spec's `digest`"));
            }
        }
        Ok(Some(meta))
    }

    async fn store(&self, bucket: &str) -> Result<ObjectStore, WorkdirError> {
        self.js.get_object_store(bucket).await.map_err(|e| {
            WorkdirError::Unavailable(format!("cannot open object store {bucket}: {e}"))
        })
    }

    /// The cached copy of the content `sha256`, fetched first when missing.
    async fn cached(&self, store: &ObjectStore, sha256: &str) -> Result<PathBuf, WorkdirError> {
        if !is_sha256(sha256) {
            return Err(WorkdirError::Invalid(format!(
                "asset file digest {sha256:?} is not a SHA-256"
            )));
        }
        let path = self.root.join("cache").join(sha256);
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(path);
        }
        let bytes = read_object(store, &object_name(sha256))
            .await
            .map_err(|e| match e {
                ReadError::NotFound => WorkdirError::Invalid(format!(
                    "asset file {sha256} is missing from object store {OBJECT_ASSETS}"
                )),
                ReadError::Other(e) => unavailable(format!("cannot fetch asset file {sha256}"))(e),
            })?;
        let actual = hex(&Sha256::digest(&bytes));
        if actual != sha256 {
            return Err(WorkdirError::Unavailable(format!(
                "asset file {sha256} in object store {OBJECT_ASSETS} has the SHA-256 {actual}; the library is damaged"
            )));
        }
        // Written under a temporary name and renamed, so a crash never leaves a
        // partial file under the digest's name.
        let partial = path.with_extension(format!("part{}", std::process::id()));
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(io(parent))?;
        }
        tokio::fs::write(&partial, &bytes)
            .await
            .map_err(io(&partial))?;
        tokio::fs::rename(&partial, &path)
            .await
            .map_err(io(&path))?;
        Ok(path)
    }
}

enum ReadError {
    NotFound,
    Other(async_nats::Error),
}

async fn read_object(store: &ObjectStore, name: &str) -> Result<Vec<u8>, ReadError> {
    use async_nats::jetstream::object_store::GetErrorKind;
    let mut object = match store.get(name).await {
        Ok(object) => object,
        Err(e) if matches!(e.kind(), GetErrorKind::NotFound) => return Err(ReadError::NotFound),
        Err(e) => return Err(ReadError::Other(e.into())),
    };
    let mut bytes = Vec::new();
    object
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| ReadError::Other(e.into()))?;
    Ok(bytes)
}

/// `dir/path`, refusing paths that leave `dir`.
fn safe_join(dir: &Path, path: &str) -> Result<PathBuf, WorkdirError> {
    let relative = Path::new(path);
    let escapes = relative.is_absolute()
        || relative
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)));
    if escapes || path.is_empty() {
        return Err(WorkdirError::Invalid(format!(
            "asset file path {path:?} leaves the asset"
        )));
    }
    Ok(dir.join(relative))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WorkdirError + '_ {
    move |e| WorkdirError::Unavailable(format!("{}: {e}", path.display()))
}

/// Hands the work directory to the user the process runs as.
fn chown_tree(dir: &Path, run_as: RunAs) -> std::io::Result<()> {
    std::os::unix::fs::chown(dir, Some(run_as.uid), Some(run_as.gid))?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            chown_tree(&entry.path(), run_as)?;
        } else {
            std::os::unix::fs::chown(entry.path(), Some(run_as.uid), Some(run_as.gid))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside() {
        let dir = Path::new("/w");
        assert_eq!(safe_join(dir, "a/b.sh").unwrap(), Path::new("/w/a/b.sh"));
        for bad in ["../x", "/etc/passwd", "a/../../x", ""] {
            assert!(safe_join(dir, bad).is_err(), "{bad}");
        }
    }
}
