//! Which DTs use an asset version: the `resolved_assets` of the DTs in KV `dtaas-dts`.
//!
//! Lifecycle writes `owner/name@version` of every asset a DT resolved; the library
//! refuses to delete a version that a DT still lists. Terminated DTs use nothing, and
//! a deleted DT (`dt.delete`) has no entry left.
//! The check and the deletion are not atomic: a DT created from the version in the
//! same instant may still list it (it then fails to fetch its files, loudly).

use async_nats::jetstream::kv;
use dtaas_runtime::kv_keys;
use dtaas_schemas::codec::decode;
use dtaas_schemas::dt_config::DtState;
use dtaas_schemas::lifecycle::LifecycleState;
use dtaas_schemas::ErrorReply;

use crate::error::unavailable;

/// A DT that uses an asset version: its id and its owner.
pub struct DtUse {
    pub id: String,
    pub owner: String,
}

/// The DT registry, read-only.
#[derive(Clone)]
pub struct DtRegistry {
    pub kv: kv::Store,
}

impl DtRegistry {
    /// The first DT that uses one of `addresses`, and which one.
    pub async fn first_user(
        &self,
        addresses: &[String],
    ) -> Result<Option<(DtUse, String)>, ErrorReply> {
        let keys = kv_keys::keys(&self.kv)
            .await
            .map_err(|e| unavailable("read the DT registry", e))?;
        for key in keys {
            let Some(value) = self
                .kv
                .get(key.clone())
                .await
                .map_err(|e| unavailable("read the DT registry", e))?
            else {
                continue;
            };
            let state: DtState = match decode(None, &value) {
                Ok(state) => state,
                Err(e) => {
                    tracing::warn!(dt = %key, error = %e, "Skipping an unreadable DT registry entry.");
                    continue;
                }
            };
            if state.state == LifecycleState::Terminated {
                continue;
            }
            if let Some(used) = state.resolved_assets.iter().find(|a| addresses.contains(a)) {
                let user = DtUse {
                    id: state.id,
                    owner: state.owner,
                };
                return Ok(Some((user, used.clone())));
            }
        }
        Ok(None)
    }
}
