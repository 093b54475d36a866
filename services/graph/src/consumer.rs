//! The durable pull consumer on `DTAAS_EVT`: events → batches → store, acknowledged
//! only after the store committed the batch that holds them.
//!
//! - Undecodable or invalid events go to `dtaas.v1.dlq.graph` with the reason, then are
//!   acknowledged; the rest of the batch goes on.
//! - Events of other kinds (anomalies, …) are acknowledged and skipped.
//! - A store that fails keeps the batch unacknowledged and is retried with capped
//!   backoff until it succeeds or the worker shuts down (then JetStream redelivers).
//!   While retrying, in-progress acks keep JetStream from redelivering the batch.
//! - A batch the store rejects as such (not a transient failure) is written again one
//!   event at a time; the events the store rejects go to the DLQ with its reason.
//! - The queue is bounded by `batch_size`: no new messages are pulled while a batch is
//!   being written.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, AckKind, Message};
use dtaas_runtime::{dlq, nats::backoff, Context};
use dtaas_schemas::asset::AssetMeta;
use dtaas_schemas::names::{header, KV_ASSETS, STREAM_EVENTS};
use dtaas_schemas::{codec, command, lifecycle, subject};
use futures::StreamExt;

use crate::config::GraphConfig;
use crate::model::{Batch, Invalid};
use crate::store::{GraphStore, StoreError};

/// Counters shown in `$SRV.STATS`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Events written to the store and acknowledged.
    pub events: AtomicU64,
    /// Store transactions committed.
    pub batches: AtomicU64,
    /// Events sent to `dtaas.v1.dlq.graph`.
    pub dlq: AtomicU64,
    /// Failed store writes (each retry counts).
    pub store_errors: AtomicU64,
}

/// Runs the consumer until shutdown; recreates it with backoff when NATS fails.
pub async fn run(
    ctx: Context,
    config: GraphConfig,
    store: Arc<dyn GraphStore>,
    stats: Arc<Stats>,
) -> anyhow::Result<()> {
    let mut kinds = AssetKinds::new(&ctx).await;
    let mut attempt = 0;
    while !ctx.shutdown.is_cancelled() {
        match consume(&ctx, &config, store.as_ref(), &stats, &mut kinds).await {
            Ok(()) => break,
            Err(error) => {
                let delay = backoff(attempt);
                tracing::warn!(error = %format!("{error:#}"), retry_in = ?delay, "Event consumer failed; restarting it.");
                attempt += 1;
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    Ok(())
}

async fn consume(
    ctx: &Context,
    config: &GraphConfig,
    store: &dyn GraphStore,
    stats: &Stats,
    kinds: &mut AssetKinds,
) -> anyhow::Result<()> {
    let stream = ctx.js.get_stream(STREAM_EVENTS).await?;
    let consumer = stream
        .get_or_create_consumer(
            &config.durable,
            pull::Config {
                durable_name: Some(config.durable.clone()),
                description: Some("dtaas graph worker".into()),
                filter_subject: subject::event_all(),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: config.ack_wait(),
                max_ack_pending: (config.batch_size * 4) as i64,
                ..Default::default()
            },
        )
        .await?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(config.batch_size)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await?;
    tracing::info!(durable = %config.durable, "Consuming events.");
    let mut pending: Vec<Message> = Vec::with_capacity(config.batch_size);
    loop {
        let first = tokio::select! {
            _ = ctx.shutdown.cancelled() => return Ok(()),
            next = messages.next() => next,
        };
        match first {
            Some(Ok(message)) => pending.push(message),
            Some(Err(error)) => {
                tracing::warn!(%error, "Error on the event stream.");
                continue;
            }
            None => anyhow::bail!("the event message stream ended"),
        }
        let deadline = tokio::time::Instant::now() + config.batch_delay();
        while pending.len() < config.batch_size {
            match tokio::time::timeout_at(deadline, messages.next()).await {
                Ok(Some(Ok(message))) => pending.push(message),
                Ok(Some(Err(error))) => tracing::warn!(%error, "Error on the event stream."),
                Ok(None) | Err(_) => break,
            }
        }
        if !process(ctx, store, stats, kinds, &mut pending).await? {
            return Ok(()); // shutdown while the store was failing: JetStream redelivers
        }
    }
}

/// Decodes, writes and acknowledges one batch. Returns `false` when shutdown came
/// before the store accepted it.
async fn process(
    ctx: &Context,
    store: &dyn GraphStore,
    stats: &Stats,
    kinds: &mut AssetKinds,
    pending: &mut Vec<Message>,
) -> anyhow::Result<bool> {
    let mut batch = Batch::default();
    let mut to_ack: Vec<Message> = Vec::with_capacity(pending.len());
    for message in pending.drain(..) {
        match add_event(&mut batch, &message) {
            Ok(()) => to_ack.push(message),
            Err(Invalid(reason)) => {
                tracing::trace!(subject = %message.subject, %reason, "Event sent to the DLQ.");
                // The DLQ publish must land before the ack, or the event could vanish.
                dead_letter(ctx, stats, &message, &reason).await?;
                ack(&message).await;
            }
        }
    }
    if !batch.is_empty() {
        kinds.fill(&mut batch).await;
        match write(ctx, store, stats, &batch, &to_ack).await {
            Written::Yes => {}
            Written::Shutdown => return Ok(false),
            Written::Rejected(reason) => {
                tracing::warn!(%reason, events = to_ack.len(), "The graph store rejected a batch; writing its events one by one.");
                if !one_by_one(ctx, store, stats, kinds, &to_ack).await? {
                    return Ok(false);
                }
            }
        }
        stats.batches.fetch_add(1, Ordering::Relaxed);
    }
    stats
        .events
        .fetch_add(to_ack.len() as u64, Ordering::Relaxed);
    for message in &to_ack {
        ack(message).await;
    }
    Ok(true)
}

/// How a write with retries ended.
enum Written {
    Yes,
    /// The store refuses this batch itself; retrying cannot help.
    Rejected(String),
    Shutdown,
}

/// Writes `batch`, retrying with capped backoff while the store is unavailable.
async fn write(
    ctx: &Context,
    store: &dyn GraphStore,
    stats: &Stats,
    batch: &Batch,
    messages: &[Message],
) -> Written {
    let mut attempt = 0;
    loop {
        let error = match store.write(batch).await {
            Ok(()) => return Written::Yes,
            Err(StoreError::Unavailable(error)) => error,
            Err(other) => return Written::Rejected(other.to_string()),
        };
        stats.store_errors.fetch_add(1, Ordering::Relaxed);
        let delay = backoff(attempt);
        tracing::warn!(%error, events = messages.len(), retry_in = ?delay, "Cannot write to the graph store; retrying.");
        attempt += 1;
        for message in messages {
            let _ = message.ack_with(AckKind::Progress).await;
        }
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return Written::Shutdown,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// After a rejected batch: each event alone, so only the one the store refuses goes to
/// the DLQ. Returns `false` on shutdown.
async fn one_by_one(
    ctx: &Context,
    store: &dyn GraphStore,
    stats: &Stats,
    kinds: &mut AssetKinds,
    messages: &[Message],
) -> anyhow::Result<bool> {
    for message in messages {
        let mut single = Batch::default();
        if add_event(&mut single, message).is_err() || single.is_empty() {
            continue; // decoded fine before; nothing to write
        }
        kinds.fill(&mut single).await;
        match write(ctx, store, stats, &single, std::slice::from_ref(message)).await {
            Written::Yes => {}
            Written::Shutdown => return Ok(false),
            Written::Rejected(reason) => dead_letter(ctx, stats, message, &reason).await?,
        }
    }
    Ok(true)
}

async fn ack(message: &Message) {
    // A lost ack means a redelivery, which the idempotent writes absorb.
    if let Err(error) = message.ack().await {
        tracing::trace!(%error, "Cannot acknowledge an event.");
    }
}

/// Adds one message to the batch, or says why it cannot be added.
fn add_event(batch: &mut Batch, message: &Message) -> Result<(), Invalid> {
    let (kind, id, _event) = subject::parse_event(&message.subject)
        .map_err(|e| Invalid(format!("unexpected subject: {e}")))?;
    let content_type = dtaas_runtime::headers::content_type(message.headers.as_ref());
    match kind {
        lifecycle::EVENT_KIND => {
            let event: lifecycle::LifecycleEvent = codec::decode(content_type, &message.payload)
                .map_err(|e| Invalid(format!("cannot decode lifecycle event: {e}")))?;
            batch.add_lifecycle(id, &event)
        }
        command::EVENT_KIND => {
            let event: command::CommandStatusEvent = codec::decode(content_type, &message.payload)
                .map_err(|e| Invalid(format!("cannot decode command status event: {e}")))?;
            batch.add_command(id, &event)
        }
        _ => Ok(()), // not the graph's business
    }
}

/// Asset kinds from the asset library (KV `dtaas-assets`, key `<id>.<version>`),
/// cached: an asset version's kind never changes.
struct AssetKinds {
    kv: Option<jetstream::kv::Store>,
    cache: HashMap<(String, String), String>,
}

impl AssetKinds {
    async fn new(ctx: &Context) -> Self {
        Self {
            kv: ctx.js.get_key_value(KV_ASSETS).await.ok(),
            cache: HashMap::new(),
        }
    }

    async fn fill(&mut self, batch: &mut Batch) {
        let Some(kv) = &self.kv else { return };
        for row in batch.asset_uses_mut() {
            let key = (row.asset.clone(), row.version.clone());
            if let Some(kind) = self.cache.get(&key) {
                row.kind = Some(kind.clone());
                continue;
            }
            // A missing or unreadable entry leaves the kind unknown (null); the graph
            // must not stall on the asset library.
            let entry = kv.get(format!("{}.{}", row.asset, row.version)).await;
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

/// Sends `message` to `dtaas.v1.dlq.graph` with `reason` and counts it; returns once
/// JetStream stored it, so the caller may acknowledge the original.
async fn dead_letter(
    ctx: &Context,
    stats: &Stats,
    message: &Message,
    reason: &str,
) -> anyhow::Result<()> {
    dlq::publish(
        &ctx.js,
        crate::WORKER,
        message.payload.clone(),
        reason,
        &[(header::DLQ_SUBJECT, message.subject.as_str())],
    )
    .await?;
    stats.dlq.fetch_add(1, Ordering::Relaxed);
    Ok(())
}
