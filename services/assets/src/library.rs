//! The asset library's requests: put, get, list, share, unshare, delete.
//!
//! Versions are immutable: metadata is written with `create`, so of two requests
//! putting one version exactly one succeeds. The per-asset index (latest version,
//! shared flag) changes only by compare-and-set. Visibility: the owner, everyone once
//! shared, and the admins; anything else answers `not_found`, as if absent.

use std::sync::Arc;

use async_nats::jetstream::object_store::ObjectStore;
use dtaas_schemas::asset::AssetMeta;
use dtaas_schemas::asset_address::AssetAddress;
use dtaas_schemas::asset_api::{
    AssetSummary, DeleteReply, GetReply, ListReply, ListRequest, PutReply, PutRequest, ShareReply,
};
use dtaas_schemas::asset_store::{object_name, AssetIndex};
use dtaas_schemas::time::now_ns;
use dtaas_schemas::ErrorReply;

use crate::config::AssetsConfig;
use crate::error::{bad_request, conflict, forbidden, no_such_asset, not_found, unavailable};
use crate::in_use::DtRegistry;
use crate::store::{Created, MetaStore};
use crate::validate;

/// How many versions past the index's latest a put probes when earlier puts crashed
/// between writing a version and updating the index.
const PROBE_AHEAD: u64 = 100;

/// The library: metadata in KV, contents in the object store.
#[derive(Clone)]
pub struct Library {
    /// KV `dtaas-assets`.
    pub meta: MetaStore,
    /// Object store `dtaas-assets`: file contents by SHA-256.
    pub objects: ObjectStore,
    /// KV `dtaas-dts`, to refuse deleting what a DT uses.
    pub dts: DtRegistry,
    /// Readers parked between the chunks of sequential fetches.
    pub readers: Arc<crate::fetch::Readers>,
    pub config: Arc<AssetsConfig>,
}

fn summary(index: &AssetIndex) -> AssetSummary {
    AssetSummary {
        name: index.name.clone(),
        owner: index.owner.clone(),
        kind: index.kind,
        version: index.versions.last().copied().unwrap_or(index.latest),
        shared: index.shared,
        description: index.description.clone(),
        tags: index.tags.clone(),
    }
}

fn parse_address(text: &str) -> Result<AssetAddress, ErrorReply> {
    text.parse()
        .map_err(|e: dtaas_schemas::asset_address::AddressError| {
            bad_request(format!("`name`: {e}"))
        })
}

impl Library {
    fn visible(&self, index: &AssetIndex, user: &str) -> bool {
        index.owner == user || index.shared || self.config.is_admin(user)
    }

    /// The index of the asset `address` points at, when `user` may see it.
    async fn visible_index(
        &self,
        user: &str,
        address: &AssetAddress,
    ) -> Result<AssetIndex, ErrorReply> {
        let owner = address.owner_or(user);
        let shown = format!("{owner}/{}", address.name);
        match self.meta.index(owner, &address.name).await? {
            Some((index, _)) if !index.versions.is_empty() && self.visible(&index, user) => {
                Ok(index)
            }
            _ => Err(no_such_asset(&shown, user)),
        }
    }

    /// The index of an asset `user` may change (own, or any for an admin).
    async fn managed_index(
        &self,
        user: &str,
        address: &AssetAddress,
    ) -> Result<AssetIndex, ErrorReply> {
        let index = self.visible_index(user, address).await?;
        if index.owner != user && !self.config.is_admin(user) {
            return Err(forbidden(format!(
                "{}/{} belongs to {}; only its owner can change it",
                index.owner, index.name, index.owner
            )));
        }
        Ok(index)
    }

    /// The metadata of the version `address` resolves to, as `user` sees it.
    pub async fn resolve(
        &self,
        user: &str,
        address: &AssetAddress,
    ) -> Result<(AssetMeta, AssetIndex), ErrorReply> {
        let index = self.visible_index(user, address).await?;
        // The newest version that still exists; `latest` also counts deleted ones.
        let version = address
            .version
            .or(index.versions.last().copied())
            .unwrap_or(index.latest);
        let shown = format!("{}/{}@{version}", index.owner, index.name);
        if !index.versions.contains(&version) {
            return Err(not_found(format!(
                "{shown} does not exist; versions: {}",
                list_versions(&index.versions)
            )));
        }
        let mut meta = self
            .meta
            .meta(&index.owner, &index.name, version)
            .await?
            .ok_or_else(|| not_found(format!("{shown} does not exist")))?;
        meta.shared = index.shared;
        Ok((meta, index))
    }

    pub async fn get(&self, user: &str, name: &str) -> Result<GetReply, ErrorReply> {
        let (asset, index) = self.resolve(user, &parse_address(name)?).await?;
        Ok(GetReply {
            asset,
            versions: index.versions,
        })
    }

    /// Checks that every file's content is stored with its size and checksum.
    async fn check_contents(&self, req: &PutRequest) -> Result<(), ErrorReply> {
        for file in &req.files {
            let info = match self.objects.info(object_name(&file.sha256)).await {
                Ok(info) => info,
                Err(e) if e.kind() == async_nats::jetstream::object_store::InfoErrorKind::NotFound => {
                    return Err(bad_request(format!(
                        "file {:?}: no content with sha256 {} was uploaded; send it with asset.upload first",
                        file.path, file.sha256
                    )))
                }
                Err(e) => return Err(unavailable("look up file contents", e)),
            };
            let expected = crate::upload::store_digest(&file.sha256);
            if info.size as u64 != file.size || info.digest.as_deref() != Some(expected.as_str()) {
                return Err(bad_request(format!(
                    "file {:?}: the content with sha256 {} has {} bytes, not {}",
                    file.path, file.sha256, info.size, file.size
                )));
            }
        }
        Ok(())
    }

    pub async fn put(&self, user: &str, mut req: PutRequest) -> Result<PutReply, ErrorReply> {
        if let Some((owner, name)) = req.name.split_once('/') {
            if owner != user {
                return Err(forbidden(format!(
                    "you ({user}) can only put your own assets; name it {name:?}"
                )));
            }
            req.name = name.to_owned();
        }
        validate::put(&mut req, self.config.max_file_size)?;
        self.check_contents(&req).await?;
        let digest = validate::content_digest(&req);
        let index = self.meta.index(user, &req.name).await?.map(|(i, _)| i);
        let latest = index.as_ref().map_or(0, |i| i.latest);
        let shown = |v: u64| format!("{user}/{}@{v}", req.name);
        let mut target = match req.version {
            Some(v) if v <= latest => {
                return match self.meta.meta(user, &req.name, v).await? {
                    Some(meta) if meta.digest == digest => self.answer_existing(meta).await,
                    Some(_) => Err(conflict(format!(
                        "{} exists with other content; versions never change, so put without `version` to add version {}",
                        shown(v),
                        latest + 1
                    ))),
                    None => Err(conflict(format!(
                        "{} was deleted; version numbers are not reused, the next is {}",
                        shown(v),
                        latest + 1
                    ))),
                };
            }
            Some(v) if v > latest + 1 => {
                return Err(bad_request(format!(
                    "`version` {v} skips versions; the next version of {user}/{} is {}",
                    req.name,
                    latest + 1
                )))
            }
            Some(v) => v,
            None => {
                if latest > 0 {
                    if let Some(meta) = self.meta.meta(user, &req.name, latest).await? {
                        if meta.digest == digest {
                            return self.answer_existing(meta).await;
                        }
                    }
                }
                latest + 1
            }
        };
        let mut meta = AssetMeta {
            name: req.name.clone(),
            owner: user.to_owned(),
            version: target,
            kind: req.kind,
            shared: false,
            description: req.description,
            tags: req.tags,
            created: now_ns(),
            files: req.files,
            interface: req.interface,
            run: req.run,
            original_name: req.original_name,
            digest,
        };
        let mut skipped = Vec::new();
        loop {
            meta.version = target;
            match self.meta.create_meta(&meta).await? {
                Created::Yes => break,
                Created::AlreadyExists => {
                    let existing = self.meta.meta(user, &meta.name, target).await?;
                    if let Some(existing) = existing.filter(|e| e.digest == meta.digest) {
                        self.record_versions(&existing, &[target]).await?;
                        return self.answer_existing(existing).await;
                    }
                    if req.version.is_some() {
                        return Err(conflict(format!(
                            "{} was just put by another request with other content; get it, or put without `version` to add the next one",
                            shown(target)
                        )));
                    }
                    skipped.push(target);
                    target += 1;
                    if target > latest + PROBE_AHEAD {
                        return Err(unavailable(
                            "find a free version number",
                            format!("versions {}..{target} are taken", latest + 1),
                        ));
                    }
                }
            }
        }
        skipped.push(target);
        let index = self.record_versions(&meta, &skipped).await?;
        meta.shared = index.shared;
        tracing::info!(asset = %meta.address(), files = meta.files.len(), "Asset version put.");
        Ok(PutReply {
            asset: meta,
            created: true,
        })
    }

    /// Adds `versions` (written already) to the index of `meta`'s asset; the newest
    /// gives the index its kind, description and tags.
    async fn record_versions(
        &self,
        meta: &AssetMeta,
        versions: &[u64],
    ) -> Result<AssetIndex, ErrorReply> {
        self.meta
            .update_index(&meta.owner, &meta.name, |current| {
                let mut index = current.unwrap_or_else(|| AssetIndex {
                    owner: meta.owner.clone(),
                    name: meta.name.clone(),
                    kind: meta.kind,
                    latest: 0,
                    versions: Vec::new(),
                    shared: false,
                    description: String::new(),
                    tags: Vec::new(),
                    updated: 0,
                });
                index.versions.extend_from_slice(versions);
                index.versions.sort_unstable();
                index.versions.dedup();
                if meta.version >= index.latest {
                    index.latest = meta.version;
                    index.kind = meta.kind;
                    index.description = meta.description.clone();
                    index.tags = meta.tags.clone();
                }
                index.latest = index
                    .latest
                    .max(versions.iter().copied().max().unwrap_or(0));
                index.updated = now_ns();
                Ok(index)
            })
            .await
    }

    async fn answer_existing(&self, mut meta: AssetMeta) -> Result<PutReply, ErrorReply> {
        if let Some((index, _)) = self.meta.index(&meta.owner, &meta.name).await? {
            meta.shared = index.shared;
        }
        Ok(PutReply {
            asset: meta,
            created: false,
        })
    }

    pub async fn list(&self, user: &str, req: ListRequest) -> Result<ListReply, ErrorReply> {
        let text = req.text.as_ref().map(|t| t.to_lowercase());
        let mut assets: Vec<AssetSummary> = self
            .meta
            .all_indexes()
            .await?
            .into_iter()
            .filter(|i| !i.versions.is_empty() && self.visible(i, user))
            .filter(|i| match &req.owner {
                Some(owner) => &i.owner == owner,
                None => i.owner == user || i.shared,
            })
            .filter(|i| req.kind.is_none_or(|k| i.kind == k))
            .filter(|i| req.shared.is_none_or(|s| i.shared == s))
            .filter(|i| req.tag.as_ref().is_none_or(|t| i.tags.contains(t)))
            .filter(|i| {
                text.as_ref().is_none_or(|t| {
                    i.name.to_lowercase().contains(t) || i.description.to_lowercase().contains(t)
                })
            })
            .map(|i| summary(&i))
            .collect();
        assets.sort_by(|a, b| (&a.owner, &a.name).cmp(&(&b.owner, &b.name)));
        Ok(ListReply { assets })
    }

    pub async fn set_shared(
        &self,
        user: &str,
        name: &str,
        shared: bool,
    ) -> Result<ShareReply, ErrorReply> {
        let address = parse_address(name)?;
        if address.version.is_some() {
            return Err(bad_request(
                "`name`: sharing applies to every version; name the asset without @version",
            ));
        }
        let index = self.managed_index(user, &address).await?;
        let index = self
            .meta
            .update_index(&index.owner, &index.name, |current| {
                let mut index = current.ok_or_else(|| no_such_asset(name, user))?;
                index.shared = shared;
                index.updated = now_ns();
                Ok(index)
            })
            .await?;
        Ok(ShareReply {
            asset: summary(&index),
        })
    }

    pub async fn delete(&self, user: &str, name: &str) -> Result<DeleteReply, ErrorReply> {
        let address = parse_address(name)?;
        let index = self.managed_index(user, &address).await?;
        let versions: Vec<u64> = match address.version {
            Some(v) if index.versions.contains(&v) => vec![v],
            Some(v) => {
                return Err(not_found(format!(
                    "{}/{}@{v} does not exist; versions: {}",
                    index.owner,
                    index.name,
                    list_versions(&index.versions)
                )))
            }
            None => index.versions.clone(),
        };
        let addresses: Vec<String> = versions
            .iter()
            .map(|v| format!("{}/{}@{v}", index.owner, index.name))
            .collect();
        if let Some((dt, address)) = self.dts.first_user(&addresses).await? {
            // Another user's DT ids are theirs: a shared asset's owner learns only that
            // someone uses it.
            return Err(conflict(if dt.owner == user {
                format!(
                    "{address} is used by DT {}; terminate or delete that DT first \
                     (or delete another version)",
                    dt.id
                )
            } else {
                format!(
                    "{address} is used by a DT of another user; it stays while they use it \
                     (unshare it so that no new DT takes it)"
                )
            }));
        }
        // The index first, so nobody resolves a version whose metadata is going.
        self.meta
            .update_index(&index.owner, &index.name, |current| {
                let mut index = current.ok_or_else(|| no_such_asset(name, user))?;
                index.versions.retain(|v| !versions.contains(v));
                index.updated = now_ns();
                Ok(index)
            })
            .await?;
        for v in &versions {
            self.meta.purge_meta(&index.owner, &index.name, *v).await?;
        }
        tracing::info!(asset = %format!("{}/{}", index.owner, index.name), ?versions, "Asset versions deleted.");
        Ok(DeleteReply { deleted: addresses })
    }
}

fn list_versions(versions: &[u64]) -> String {
    if versions.is_empty() {
        return "none".into();
    }
    versions
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
