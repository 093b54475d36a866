//! The DT registry in KV `dtaas-dts` (key = DT id, value = `DtState` as JSON).
//!
//! Every write is a compare-and-set on the entry's revision: a writer that lost the
//! race reads again and re-applies its change, so concurrent requests on one DT never
//! interleave half-way. Long operations first take the DT with a `busy` mark in one
//! such write; a second operation sees the mark and is refused with `conflict`.

use async_nats::jetstream::kv::{self, CreateErrorKind, UpdateErrorKind};
use dtaas_runtime::kv_keys;
use dtaas_schemas::dt_config::{Busy, DtState};
use dtaas_schemas::names::KV_DTS;
use dtaas_schemas::time::now_ns;
use futures::StreamExt;

use crate::error::{Error, Result};

/// A registry entry and the revision it was read at.
#[derive(Debug, Clone)]
pub struct Versioned {
    pub dt: DtState,
    pub revision: u64,
}

/// The registry; cheap to clone.
#[derive(Clone)]
pub struct Registry {
    kv: kv::Store,
}

fn unavailable(e: impl std::fmt::Display) -> Error {
    Error::unavailable(format!("the DT registry (KV {KV_DTS}) does not answer"), e)
}

impl Registry {
    pub fn new(kv: kv::Store) -> Self {
        Self { kv }
    }

    /// The entry of `id`, whoever owns it.
    pub async fn get(&self, id: &str) -> Result<Option<Versioned>> {
        let Some(entry) = self.kv.entry(id).await.map_err(unavailable)? else {
            return Ok(None);
        };
        if entry.operation != kv::Operation::Put {
            return Ok(None);
        }
        let dt = serde_json::from_slice(&entry.value)
            .map_err(|e| Error::Internal(format!("registry entry {id} is unreadable: {e}")))?;
        Ok(Some(Versioned {
            dt,
            revision: entry.revision,
        }))
    }

    /// The entry of `id` when `user` owns it; `not_found` otherwise (another user's
    /// DT is not to be seen).
    pub async fn get_owned(&self, user: &str, id: &str) -> Result<Versioned> {
        match self.get(id).await? {
            Some(v) if v.dt.owner == user => Ok(v),
            _ => Err(Error::NotFound(format!(
                "no DT {id:?} of user {user}; `dtaas dt list` shows yours"
            ))),
        }
    }

    /// Adds a new entry; `conflict` when the id is taken.
    pub async fn create(&self, dt: &DtState) -> Result<u64> {
        match self.kv.create(&dt.id, encode(dt)?).await {
            Ok(revision) => Ok(revision),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Err(Error::Conflict(format!(
                "a DT {:?} exists already; DT ids are unique on the platform, pick another",
                dt.id
            ))),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Removes an entry: to undo a half-done create, and by `delete` (the id is free
    /// again; `create` takes it anew).
    pub async fn remove(&self, id: &str) -> Result<()> {
        self.kv.purge(id).await.map_err(unavailable)
    }

    /// Applies `change` to the newest entry of `id` and writes it if the entry did not
    /// change meanwhile; otherwise reads again and re-applies. `change` may refuse.
    pub async fn modify<F>(&self, id: &str, mut change: F) -> Result<Versioned>
    where
        F: FnMut(&mut DtState) -> Result<()>,
    {
        loop {
            let Some(current) = self.get(id).await? else {
                return Err(Error::NotFound(format!("no DT {id:?}")));
            };
            let mut dt = current.dt;
            change(&mut dt)?;
            dt.updated_at = now_ns();
            match self.kv.update(id, encode(&dt)?, current.revision).await {
                Ok(revision) => return Ok(Versioned { dt, revision }),
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(unavailable(e)),
            }
        }
    }

    /// Marks `id` busy with `op` when `allowed` accepts its state and no other
    /// operation holds it (or that one's lease ran out).
    pub async fn claim<F>(&self, id: &str, op: &str, lease_ns: i64, allowed: F) -> Result<Versioned>
    where
        F: Fn(&DtState) -> Result<()>,
    {
        self.modify(id, |dt| {
            if let Some(busy) = &dt.busy {
                if now_ns() - busy.since < lease_ns {
                    return Err(Error::Conflict(format!(
                        "DT {id} is busy with {} (state {}); try again when it is done",
                        busy.op,
                        dt.state.as_str()
                    )));
                }
            }
            allowed(dt)?;
            dt.busy = Some(Busy {
                op: op.to_owned(),
                since: now_ns(),
            });
            Ok(())
        })
        .await
    }

    /// Every entry (all users).
    pub async fn all(&self) -> Result<Vec<DtState>> {
        let keys = kv_keys::keys(&self.kv).await.map_err(unavailable)?;
        let entries: Vec<Result<Option<Versioned>>> = futures::stream::iter(keys)
            .map(|key| async move { self.get(&key).await })
            .buffered(32)
            .collect()
            .await;
        let mut dts = Vec::with_capacity(entries.len());
        for entry in entries {
            if let Some(v) = entry? {
                dts.push(v.dt);
            }
        }
        Ok(dts)
    }
}

fn encode(dt: &DtState) -> Result<bytes::Bytes> {
    serde_json::to_vec(dt)
        .map(Into::into)
        .map_err(|e| Error::Internal(format!("cannot encode DT {}: {e}", dt.id)))
}
