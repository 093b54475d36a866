//! Events from `DTAAS_EVT` into the graph store, through the runtime's batch consumer
//! (`dtaas_runtime::consumer`): this file says how an event becomes graph rows and how
//! a batch is written (in one store transaction).
//!
//! - Undecodable or invalid events go to `dtaas.v1.dlq.graph` with the reason, then are
//!   acknowledged; the rest of the batch goes on.
//! - Events of other kinds (anomalies, …) hold nothing to store: acknowledged and
//!   skipped.
//! - A store that fails keeps the batch unacknowledged and is retried with capped
//!   backoff, with in-progress acks, until it succeeds or the worker shuts down (then
//!   JetStream redelivers). A batch the store rejects is split until the events it
//!   rejects are found; those go to the DLQ with its reason.

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::jetstream::{self, Message};
use dtaas_runtime::consumer::{
    self, AckPolicy, ConsumerConfig, DeliverPolicy, Handler, Invalid, WriteError,
};
use dtaas_runtime::Context;
use dtaas_schemas::asset::AssetMeta;
use dtaas_schemas::names::{KV_ASSETS, STREAM_EVENTS};
use dtaas_schemas::{codec, command, exec, lifecycle, subject};
use tokio::sync::Mutex;

use crate::config::GraphConfig;
use crate::model::Batch;
use crate::store::{GraphStore, StoreError};

/// The graph worker's consumer.
pub type Consumer = consumer::Consumer<Events>;

/// Builds the consumer the configuration describes.
pub async fn new(ctx: &Context, config: &GraphConfig, store: Arc<dyn GraphStore>) -> Consumer {
    let events = Events {
        store,
        kinds: Mutex::new(AssetKinds::new(ctx).await),
    };
    consumer::Consumer::new(consumer_config(config), events)
}

/// The durable on `DTAAS_EVT` the configuration names.
pub fn consumer_config(config: &GraphConfig) -> ConsumerConfig {
    ConsumerConfig {
        stream: STREAM_EVENTS.into(),
        durable: config.durable.clone(),
        description: "dtaas graph worker".into(),
        filter_subject: Some(subject::event_all()),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_policy_setting: "the graph worker's ack policy (always explicit)".into(),
        ack_wait: config.ack_wait(),
        max_ack_pending: config.batch_size * 4,
        batch_size: config.batch_size,
        max_delay: config.batch_delay(),
        dlq_source: crate::WORKER.into(),
    }
}

/// Decodes events into graph rows and writes them to the store.
pub struct Events {
    store: Arc<dyn GraphStore>,
    kinds: Mutex<AssetKinds>,
}

impl Handler for Events {
    type Batch = Batch;
    const STORE: &'static str = "Graph store";

    fn decode(&self, message: &Message, batch: &mut Batch) -> Result<usize, Invalid> {
        let (kind, id, event) = subject::parse_event(&message.subject)
            .map_err(|e| Invalid(format!("unexpected subject: {e}")))?;
        let content_type = dtaas_runtime::headers::content_type(message.headers.as_ref());
        match kind {
            // A DT's own events (`anomaly`, …) share the kind but are no transitions.
            lifecycle::EVENT_KIND if !is_lifecycle_state(event) => Ok(0),
            lifecycle::EVENT_KIND => {
                let event: lifecycle::LifecycleEvent =
                    codec::decode(content_type, &message.payload)
                        .map_err(|e| Invalid(format!("cannot decode lifecycle event: {e}")))?;
                batch.add_lifecycle(id, &event)?;
                Ok(1)
            }
            command::EVENT_KIND => {
                let event: command::CommandStatusEvent =
                    codec::decode(content_type, &message.payload)
                        .map_err(|e| Invalid(format!("cannot decode command status event: {e}")))?;
                batch.add_command(id, &event)?;
                Ok(1)
            }
            exec::EVENT_KIND => {
                let event: exec::ProcessEvent = codec::decode(content_type, &message.payload)
                    .map_err(|e| Invalid(format!("cannot decode process event: {e}")))?;
                batch.add_process(id, &event)?;
                Ok(1)
            }
            _ => Ok(0), // not the graph's business
        }
    }

    async fn write(&self, batch: &mut Batch) -> Result<(), WriteError> {
        self.kinds.lock().await.fill(batch).await;
        self.store.write(batch).await.map_err(|e| match e {
            StoreError::Unavailable(reason) => WriteError::Unavailable(reason),
            other => WriteError::Rejected(other.to_string()),
        })
    }
}

/// The KV key of an asset version: the library's `v.<owner>.<name>.<version>` for an
/// address `owner/name@version`, else the older `<id>.<version>`.
fn asset_key(asset: &str, version: &str) -> String {
    use dtaas_schemas::asset_address::AssetAddress;
    match format!("{asset}@{version}").parse::<AssetAddress>() {
        Ok(AssetAddress {
            owner: Some(owner),
            name,
            version: Some(v),
        }) => dtaas_schemas::asset_store::meta_key(&owner, &name, v),
        _ => format!("{asset}.{version}"),
    }
}

/// Asset kinds from the asset library (KV `dtaas-assets`, `asset_key`),
/// cached: an asset version's kind never changes.
struct AssetKinds {
    js: jetstream::Context,
    /// Opened on first use, and again after a failure (JetStream in a leader election).
    kv: Option<jetstream::kv::Store>,
    cache: HashMap<(String, String), String>,
}

impl AssetKinds {
    async fn new(ctx: &Context) -> Self {
        Self {
            js: ctx.js.clone(),
            kv: ctx.js.get_key_value(KV_ASSETS).await.ok(),
            cache: HashMap::new(),
        }
    }

    async fn fill(&mut self, batch: &mut Batch) {
        if self.kv.is_none() && batch.asset_uses_mut().next().is_some() {
            self.kv = self.js.get_key_value(KV_ASSETS).await.ok();
        }
        let Some(kv) = &self.kv else { return };
        for row in batch.asset_uses_mut() {
            let key = (row.asset.clone(), row.version.clone());
            if let Some(kind) = self.cache.get(&key) {
                row.kind = Some(kind.clone());
                continue;
            }
            // A missing or unreadable entry leaves the kind unknown (null); the graph
            // must not stall on the asset library.
            let entry = kv.get(asset_key(&row.asset, &row.version)).await;
            if let Ok(Some(value)) = entry {
                if let Ok(meta) = codec::decode::<AssetMeta>(None, &value) {
                    let kind = meta.kind.as_str().to_owned();
                    self.cache.insert(key, kind.clone());
                    row.kind = Some(kind);
                }
            }
        }
    }
}

/// Whether `event` names a lifecycle state (the last token of a transition event).
fn is_lifecycle_state(event: &str) -> bool {
    serde_json::from_value::<lifecycle::LifecycleState>(serde_json::Value::from(event)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lifecycle_states_are_transitions() {
        assert!(is_lifecycle_state("executing"));
        assert!(is_lifecycle_state("terminated"));
        assert!(!is_lifecycle_state("anomaly"));
        assert!(!is_lifecycle_state("anomaly_cleared"));
    }

    #[test]
    fn asset_keys_follow_the_library_layout() {
        assert_eq!(asset_key("alice/pid", "2"), "v.alice.pid.2");
        assert_eq!(asset_key("pid", "1.2.0"), "pid.1.2.0");
    }
}
