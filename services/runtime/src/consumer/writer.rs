//! Writing one collected batch: retry while the store is unavailable, bisect a
//! rejected batch down to the rejected messages, dead-letter those, acknowledge the rest
//! once stored.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, Message};
use dtaas_schemas::names::header;
use tokio_util::sync::CancellationToken;

use super::ack::{self, Acker};
use super::{Counters, Handler, WriteError};
use crate::backoff::Backoff;

/// A batch being collected: what the decoded messages hold, the messages, and those
/// that could not be decoded.
pub(super) struct Collected<B> {
    batch: B,
    /// Messages whose content is in `batch`, in order.
    messages: Vec<Message>,
    /// Items in `batch`.
    items: usize,
    /// Messages `decode` refused, with the reason.
    invalid: Vec<(Message, String)>,
    /// What `batch_size` bounds: items, counting every message as at least one.
    pub size: usize,
}

impl<B: Default> Default for Collected<B> {
    fn default() -> Self {
        Self {
            batch: B::default(),
            messages: Vec::new(),
            items: 0,
            invalid: Vec::new(),
            size: 0,
        }
    }
}

impl<B> Collected<B> {
    pub fn push<H: Handler<Batch = B>>(&mut self, handler: &H, message: Message) {
        match handler.decode(&message, &mut self.batch) {
            Ok(items) => {
                self.items += items;
                self.size += items.max(1);
                self.messages.push(message);
            }
            Err(invalid) => {
                self.size += 1;
                self.invalid.push((message, invalid.0));
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty() && self.invalid.is_empty()
    }

    pub fn all_messages(&self) -> impl Iterator<Item = &Message> {
        self.messages
            .iter()
            .chain(self.invalid.iter().map(|(message, _)| message))
    }
}

/// Writes batches and acknowledges them; one batch is written at a time.
pub(super) struct Writer<H> {
    pub handler: Arc<H>,
    pub js: jetstream::Context,
    pub counters: Arc<Counters>,
    pub shutdown: CancellationToken,
    /// How often messages waiting or retried get a progress ack.
    pub progress_every: Duration,
    pub dlq_source: String,
}

impl<H> Clone for Writer<H> {
    fn clone(&self) -> Self {
        Self {
            handler: self.handler.clone(),
            js: self.js.clone(),
            counters: self.counters.clone(),
            shutdown: self.shutdown.clone(),
            progress_every: self.progress_every,
            dlq_source: self.dlq_source.clone(),
        }
    }
}

impl<H: Handler> Writer<H> {
    pub async fn write(&self, collected: Collected<H::Batch>, acker: Arc<Acker>) {
        let Collected {
            batch,
            messages,
            items,
            invalid,
            ..
        } = collected;
        for (message, reason) in invalid {
            self.dead_letter(&message, &reason, &acker).await;
        }
        self.write_range(batch, items, &messages, &acker, 0).await;
    }

    /// Writes `batch` (`items` items from `messages`), retrying while the store is
    /// unavailable; a rejected batch is split in halves until the rejected messages are
    /// found and dead-lettered. Returns without acknowledging on shutdown.
    async fn write_range(
        &self,
        mut batch: H::Batch,
        items: usize,
        messages: &[Message],
        acker: &Acker,
        depth: u32,
    ) {
        if messages.is_empty() {
            return;
        }
        if items == 0 {
            // Nothing to store (e.g. events of kinds this worker ignores).
            self.stored(messages, 0, acker).await;
            return;
        }
        let mut backoff = Backoff::new();
        let mut last_progress = Instant::now();
        loop {
            match self.handler.write(&mut batch).await {
                Ok(()) => {
                    self.counters.batches.fetch_add(1, Ordering::Relaxed);
                    self.stored(messages, items, acker).await;
                    if backoff.attempt() > 0 {
                        tracing::info!(
                            items,
                            attempts = backoff.attempt() + 1,
                            "{} is back; batch written.",
                            H::STORE
                        );
                    }
                    return;
                }
                Err(WriteError::Rejected(reason)) if messages.len() == 1 => {
                    self.dead_letter(&messages[0], &reason, acker).await;
                    return;
                }
                Err(WriteError::Rejected(reason)) => {
                    tracing::debug!(items, depth, %reason, "Store rejected a batch; splitting it to find the rejected messages.");
                    drop(batch);
                    let (left, right) = messages.split_at(messages.len() / 2);
                    for half in [left, right] {
                        let (batch, items) = self.decode_again(half);
                        Box::pin(self.write_range(batch, items, half, acker, depth + 1)).await;
                    }
                    return;
                }
                Err(WriteError::Unavailable(error)) => {
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                    let attempt = backoff.attempt();
                    // One warning per burst, not one per retry.
                    if attempt % 20 == 0 {
                        tracing::warn!(store = H::STORE, %error, items, attempt, "Cannot write batch; keeping it unacknowledged and retrying.");
                    }
                    self.progress_if_due(messages, &mut last_progress).await;
                    if !backoff.wait(&self.shutdown).await {
                        tracing::warn!(
                            items,
                            "Shutting down with an unwritten batch; JetStream redelivers it later."
                        );
                        return;
                    }
                    self.progress_if_due(messages, &mut last_progress).await;
                }
            }
        }
    }

    /// A batch of `messages` alone; they decoded before, so they decode again.
    fn decode_again(&self, messages: &[Message]) -> (H::Batch, usize) {
        let mut batch = H::Batch::default();
        let mut items = 0;
        for message in messages {
            items += self.handler.decode(message, &mut batch).unwrap_or(0);
        }
        (batch, items)
    }

    async fn stored(&self, messages: &[Message], items: usize, acker: &Acker) {
        acker.stored(messages).await;
        self.counters
            .messages
            .fetch_add(messages.len() as u64, Ordering::Relaxed);
        self.counters
            .items
            .fetch_add(items as u64, Ordering::Relaxed);
    }

    async fn progress_if_due(&self, messages: &[Message], last: &mut Instant) {
        if last.elapsed() >= self.progress_every {
            ack::progress(messages).await;
            *last = Instant::now();
        }
    }

    /// Sends `message` to the DLQ with `reason`, then acknowledges it. A DLQ that
    /// cannot be reached is retried like a store that is down; on shutdown the message
    /// stays unacknowledged and comes back later.
    async fn dead_letter(&self, message: &Message, reason: &str, acker: &Acker) {
        let context = [(header::DLQ_SUBJECT, message.subject.as_str())];
        let mut backoff = Backoff::new();
        let mut last_progress = Instant::now();
        loop {
            let published = crate::dlq::publish(
                &self.js,
                &self.dlq_source,
                message.payload.clone(),
                reason,
                &context,
            )
            .await;
            match published {
                Ok(()) => {
                    self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(subject = %message.subject, %reason, "Sent a message to the DLQ.");
                    acker.stored([message]).await;
                    return;
                }
                Err(error) => {
                    if backoff.attempt() % 20 == 0 {
                        tracing::warn!(subject = %message.subject, %error, "Cannot publish to the DLQ; retrying.");
                    }
                    self.progress_if_due(std::slice::from_ref(message), &mut last_progress)
                        .await;
                    if !backoff.wait(&self.shutdown).await {
                        return;
                    }
                }
            }
        }
    }
}
