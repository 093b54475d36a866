//! The one JetStream consumer every worker that consumes a stream uses: a durable pull
//! consumer whose messages are decoded into batches, written to a store, and
//! acknowledged only after the store confirmed the write that holds them.
//!
//! A worker supplies a [`Handler`]: `decode` (one message into the batch, or the reason
//! it goes to the DLQ) and `write` (the batch into the store: done, *unavailable* —
//! retry later — or *rejected* — retrying cannot help). The consumer owns the rest:
//!
//! - **Start**: a durable it creates starts at the stream's first message, or with
//!   [`DeliverPolicy::New`] at the next one published.
//! - **Batching**: up to `batch_size` items, or `max_delay` after the first message;
//!   the next batch is collected while the previous one is written, so at most two
//!   batches are held. Pulls ask for at most twice a batch and `PULL_BYTES`, and
//!   `max_ack_pending` bounds what JetStream delivers ahead of the acknowledgements.
//! - **Order**: one batch is written at a time, in the order the messages came; with a
//!   `batch_size` of 1 every message is written (and acknowledged) before the next one.
//! - **Retry later**: an unavailable store is retried with capped backoff
//!   ([`crate::backoff`]) while progress acks keep JetStream from redelivering the batch;
//!   a store that is down grows a backlog in the stream, nothing is dropped.
//! - **Dead letters**: a message `decode` refuses, or that the store rejects, goes to
//!   `dtaas.v1.dlq.<source>` with the reason and is then acknowledged. A rejected batch
//!   is split in halves until the rejected messages are found, so the rest is stored. A
//!   DLQ that cannot be reached is retried like a store that is down.
//! - **Acknowledgement** after the store (or the DLQ) confirmed, by the [`AckPolicy`]:
//!   one ack per message, or one per move of the stored floor ([`ack_floor`]).
//! - **Stream or consumer gone** (deleted, or NATS lost it): a warning, then the durable
//!   is created again with the same settings, with backoff, and consuming goes on.
//! - **Shutdown**: the batch in hand is written and acknowledged (unless the store is
//!   down: then JetStream redelivers it later), then [`Consumer::run`] returns.

pub mod ack;
pub mod ack_floor;
mod writer;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{self, pull, PullConsumer};
use async_nats::jetstream::Message;
use dtaas_schemas::stats::ConsumerStats;
use futures::StreamExt;
use serde::Deserialize;
use tokio::task::JoinHandle;

use crate::backoff::Backoff;
use crate::Context;
use ack::Acker;
use writer::{Collected, Writer};

/// Most bytes of messages one pull request asks for (at least twice the server's
/// largest message): messages may carry many items, so a bound in messages alone would
/// let gigabytes wait in the client.
const PULL_BYTES: usize = 16 << 20;
/// Pull errors in a row (missed heartbeats, no responders) after which the durable is
/// looked up and created again: it may be gone without the server saying so.
pub const ERRORS_BEFORE_REBIND: usize = 3;
/// How often, while collecting, the `all` ack floor checks for deleted sequences.
const FLOOR_CHECK_EVERY: Duration = Duration::from_secs(1);

/// How a durable acknowledges; fixed when the durable is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckPolicy {
    /// One acknowledgement per stored batch, covering everything before it (JetStream
    /// `AckPolicy::All`): the fastest, but only one process may consume the durable.
    All,
    /// One acknowledgement per message (JetStream `AckPolicy::Explicit`): any number of
    /// processes may share the durable.
    Explicit,
}

impl AckPolicy {
    pub fn name(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Explicit => "explicit",
        }
    }

    fn jetstream(self) -> consumer::AckPolicy {
        match self {
            Self::All => consumer::AckPolicy::All,
            Self::Explicit => consumer::AckPolicy::Explicit,
        }
    }
}

/// Where a durable starts when it is created; an existing durable goes on from where it
/// is, whatever this says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DeliverPolicy {
    /// Everything the stream holds (JetStream `DeliverPolicy::All`): a sink that must
    /// store the whole stream, as historian and graph do.
    #[default]
    All,
    /// Only what is published after the durable was created (JetStream
    /// `DeliverPolicy::New`): a worker that reacts to events as they happen, such as
    /// lifecycle, whose new deployment must not replay the history of process events.
    New,
}

impl DeliverPolicy {
    fn jetstream(self) -> consumer::DeliverPolicy {
        match self {
            Self::All => consumer::DeliverPolicy::All,
            Self::New => consumer::DeliverPolicy::New,
        }
    }
}

/// `AckPolicy` was given a name other than `all` or `explicit`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown ack policy {0:?}; use all or explicit")]
pub struct UnknownAckPolicy(pub String);

impl std::str::FromStr for AckPolicy {
    type Err = UnknownAckPolicy;

    fn from_str(s: &str) -> Result<Self, UnknownAckPolicy> {
        match s {
            "all" => Ok(Self::All),
            "explicit" => Ok(Self::Explicit),
            other => Err(UnknownAckPolicy(other.to_owned())),
        }
    }
}

/// What the consumer consumes and how; a worker builds it from its configuration.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The stream, e.g. `DTAAS_TEL`.
    pub stream: String,
    /// The durable consumer's name; instances of a worker with the same name share it.
    pub durable: String,
    /// Shown by `nats consumer info`.
    pub description: String,
    /// Only these subjects of the stream (`None`: all of them).
    pub filter_subject: Option<String>,
    /// Where a durable created by this consumer starts.
    pub deliver_policy: DeliverPolicy,
    /// How stored messages are acknowledged.
    pub ack_policy: AckPolicy,
    /// Where an operator sets the ack policy, named in the error when an existing
    /// durable has the other one, e.g. `DTAAS_HISTORIAN_ACK_POLICY`.
    pub ack_policy_setting: String,
    /// How long JetStream waits for an acknowledgement before redelivering; progress
    /// acks are sent every third of it while a batch waits or is retried.
    pub ack_wait: Duration,
    /// Most messages delivered and not yet acknowledged.
    pub max_ack_pending: usize,
    /// Most items (what `decode` counts) in one batch.
    pub batch_size: usize,
    /// How long a batch waits for more messages after its first one.
    pub max_delay: Duration,
    /// The `<source>` of `dtaas.v1.dlq.<source>`: the worker's name.
    pub dlq_source: String,
}

/// A message `decode` cannot accept, with the reason that goes into the DLQ header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// Why a write failed; decides between retrying and dead-lettering.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The store is down, locked, full or unreachable: the same batch is retried later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store refused the data: retrying would fail again, so the batch is split
    /// until the refused messages are found, and those go to the DLQ with this reason.
    #[error("store rejected the data: {0}")]
    Rejected(String),
}

/// What a worker plugs into the consumer: how messages become a batch and how a batch
/// is stored.
pub trait Handler: Send + Sync + 'static {
    /// What `decode` fills and `write` stores, e.g. a list of records.
    type Batch: Default + Send + 'static;

    /// The store, as logs name it: capitalised, e.g. `"Time-series store"`.
    const STORE: &'static str;

    /// Decodes `message` into `batch` and returns how many items it added (counted
    /// against `batch_size`; 0 when the message holds nothing to store, it is then
    /// acknowledged with the batch). On `Err` nothing may have been added.
    fn decode(&self, message: &Message, batch: &mut Self::Batch) -> Result<usize, Invalid>;

    /// Stores `batch`; `Ok` means durably. Called again with the same batch after
    /// `Unavailable`, so it must be idempotent.
    fn write(&self, batch: &mut Self::Batch)
        -> impl Future<Output = Result<(), WriteError>> + Send;
}

/// The consumer cannot go on; anything else it retries.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// The durable exists with the other ack policy: acknowledging under ours would
    /// lose or repeat messages.
    #[error(
        "durable consumer {durable} on {stream} was created with ack policy {existing}, \
         but {setting} is {wanted}: set it to {existing}, use another durable name, or \
         delete the consumer (nats consumer rm {stream} {durable}) to recreate it"
    )]
    AckPolicyMismatch {
        stream: String,
        durable: String,
        existing: &'static str,
        wanted: &'static str,
        setting: String,
    },
    /// A write task panicked; its messages are redelivered after `ack_wait`.
    #[error("a write task of the {durable} consumer failed: {source}")]
    WriterFailed {
        durable: String,
        source: tokio::task::JoinError,
    },
}

/// A failure to bind to the durable, retried with backoff unless it is a
/// [`ConsumerError`].
#[derive(Debug, thiserror::Error)]
enum BindError {
    #[error("cannot open stream {stream}: {source}")]
    Stream {
        stream: String,
        source: async_nats::jetstream::context::GetStreamError,
    },
    #[error("cannot create durable consumer {durable}: {source}")]
    Create {
        durable: String,
        source: async_nats::jetstream::stream::ConsumerError,
    },
    #[error("cannot pull from {durable}: {source}")]
    Pull {
        durable: String,
        source: async_nats::jetstream::consumer::StreamError,
    },
    #[error(transparent)]
    Fatal(#[from] ConsumerError),
}

/// Counters of one consumer, shown in `$SRV.STATS` as [`ConsumerStats`].
#[derive(Debug, Default)]
pub struct Counters {
    /// Messages stored (or holding nothing to store) and acknowledged.
    pub messages: AtomicU64,
    /// Items in those messages.
    pub items: AtomicU64,
    /// Successful store writes.
    pub batches: AtomicU64,
    /// Messages sent to the DLQ.
    pub dead_lettered: AtomicU64,
    /// Failed write attempts that were retried.
    pub retries: AtomicU64,
}

impl Counters {
    pub fn snapshot(&self) -> ConsumerStats {
        ConsumerStats {
            messages: self.messages.load(Ordering::Relaxed),
            items: self.items.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
        }
    }
}

/// A durable pull consumer feeding a [`Handler`].
pub struct Consumer<H> {
    config: ConsumerConfig,
    handler: Arc<H>,
    counters: Arc<Counters>,
}

/// The durable as bound now: its messages and how to acknowledge them.
struct Binding {
    messages: pull::Stream,
    acker: Arc<Acker>,
}

impl<H: Handler> Consumer<H> {
    pub fn new(config: ConsumerConfig, handler: H) -> Self {
        Self {
            config,
            handler: Arc::new(handler),
            counters: Arc::default(),
        }
    }

    /// The counters, for the worker's stats handler.
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// Consumes until `ctx.shutdown` is cancelled, then finishes the batch in hand and
    /// returns. Fails only for what retrying cannot fix (see [`ConsumerError`]).
    pub async fn run(self, ctx: Context) -> Result<(), ConsumerError> {
        let config = &self.config;
        let Some(mut binding) = self.bind_retrying(&ctx).await? else {
            return Ok(());
        };
        let writer = Writer {
            handler: self.handler.clone(),
            js: ctx.js.clone(),
            counters: self.counters.clone(),
            shutdown: ctx.shutdown.clone(),
            progress_every: config.ack_wait / 3,
            dlq_source: config.dlq_source.clone(),
        };
        // While the stream is quiet, a deleted message must not hold back the
        // acknowledgement of everything after it (`all` ack policy).
        let mut floor_check = tokio::time::interval(FLOOR_CHECK_EVERY);
        floor_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pull_errors = Backoff::new();
        let mut in_flight: Option<JoinHandle<()>> = None;
        tracing::info!(stream = %config.stream, durable = %config.durable, ack_policy = config.ack_policy.name(), batch_size = config.batch_size, "Consuming.");
        loop {
            let mut batch = Collected::<H::Batch>::default();
            let mut rebind = false;
            // One timer per batch (not per message): armed when the first message arrives.
            let deadline = tokio::time::sleep(Duration::MAX);
            tokio::pin!(deadline);
            let mut armed = false;
            while batch.size < config.batch_size {
                let item = tokio::select! {
                    biased;
                    _ = ctx.shutdown.cancelled() => break,
                    _ = &mut deadline, if armed => break,
                    item = binding.messages.next() => item,
                    _ = floor_check.tick() => {
                        binding.acker.pass_missing().await;
                        continue;
                    }
                };
                match item {
                    Some(Ok(message)) => {
                        pull_errors.reset();
                        batch.push(self.handler.as_ref(), message);
                        if !armed {
                            deadline
                                .as_mut()
                                .reset(tokio::time::Instant::now() + config.max_delay);
                            armed = true;
                        }
                    }
                    Some(Err(error)) if gone(error.kind()) => {
                        tracing::warn!(durable = %config.durable, %error, "The durable consumer is gone; creating it again.");
                        rebind = true;
                        break;
                    }
                    Some(Err(error)) => {
                        // Missed heartbeats or a NATS outage: the client re-pulls on
                        // its own; pause so a persistent error does not spin.
                        tracing::warn!(durable = %config.durable, %error, attempt = pull_errors.attempt(), "Pulling failed; retrying.");
                        if pull_errors.attempt() + 1 >= ERRORS_BEFORE_REBIND {
                            rebind = true;
                            break;
                        }
                        if !pull_errors.wait(&ctx.shutdown).await {
                            break;
                        }
                    }
                    None => {
                        tracing::warn!(durable = %config.durable, "The durable consumer's message stream ended; creating it again.");
                        rebind = true;
                        break;
                    }
                }
            }
            if let Some(previous) = in_flight.take() {
                self.wait_with_progress(previous, &batch, &writer).await?;
            }
            if !batch.is_empty() {
                let writer = writer.clone();
                let acker = binding.acker.clone();
                in_flight = Some(tokio::spawn(
                    async move { writer.write(batch, acker).await },
                ));
            }
            if ctx.shutdown.is_cancelled() {
                break;
            }
            if rebind {
                // Not reset until a message arrives: a durable that keeps failing
                // (limits the server refuses) is rebound at the backoff's pace.
                if !pull_errors.wait(&ctx.shutdown).await {
                    break;
                }
                match self.bind_retrying(&ctx).await? {
                    Some(bound) => binding = bound,
                    None => break,
                }
            }
        }
        if let Some(last) = in_flight {
            last.await.map_err(|source| self.writer_failed(source))?;
        }
        tracing::info!(durable = %config.durable, "Consumer stopped.");
        Ok(())
    }

    /// Waits for the write in flight while keeping the next batch's messages from
    /// being redelivered.
    async fn wait_with_progress(
        &self,
        mut write: JoinHandle<()>,
        batch: &Collected<H::Batch>,
        writer: &Writer<H>,
    ) -> Result<(), ConsumerError> {
        loop {
            tokio::select! {
                done = &mut write => return done.map_err(|source| self.writer_failed(source)),
                _ = tokio::time::sleep(writer.progress_every) => ack::progress(batch.all_messages()).await,
            }
        }
    }

    fn writer_failed(&self, source: tokio::task::JoinError) -> ConsumerError {
        ConsumerError::WriterFailed {
            durable: self.config.durable.clone(),
            source,
        }
    }

    /// Binds to the durable, retrying with backoff; `None` on shutdown.
    async fn bind_retrying(&self, ctx: &Context) -> Result<Option<Binding>, ConsumerError> {
        let mut backoff = Backoff::new();
        loop {
            match self.bind(ctx).await {
                Ok(binding) => return Ok(Some(binding)),
                Err(BindError::Fatal(error)) => return Err(error),
                Err(error) => {
                    tracing::warn!(durable = %self.config.durable, %error, attempt = backoff.attempt(), "Cannot bind to the durable consumer; retrying.");
                    if !backoff.wait(&ctx.shutdown).await {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Creates the durable (or binds to the existing one) and starts pulling.
    async fn bind(&self, ctx: &Context) -> Result<Binding, BindError> {
        let config = &self.config;
        let stream =
            ctx.js
                .get_stream(&config.stream)
                .await
                .map_err(|source| BindError::Stream {
                    stream: config.stream.clone(),
                    source,
                })?;
        let consumer: PullConsumer = stream
            .get_or_create_consumer(
                &config.durable,
                pull::Config {
                    durable_name: Some(config.durable.clone()),
                    description: Some(config.description.clone()),
                    deliver_policy: config.deliver_policy.jetstream(),
                    filter_subject: config.filter_subject.clone().unwrap_or_default(),
                    ack_policy: config.ack_policy.jetstream(),
                    ack_wait: config.ack_wait,
                    max_ack_pending: config.max_ack_pending as i64,
                    ..Default::default()
                },
            )
            .await
            .map_err(|source| BindError::Create {
                durable: config.durable.clone(),
                source,
            })?;
        let info = consumer.cached_info();
        let existing = match info.config.ack_policy {
            consumer::AckPolicy::All => AckPolicy::All,
            _ => AckPolicy::Explicit,
        };
        if existing != config.ack_policy {
            return Err(ConsumerError::AckPolicyMismatch {
                stream: config.stream.clone(),
                durable: config.durable.clone(),
                existing: existing.name(),
                wanted: config.ack_policy.name(),
                setting: config.ack_policy_setting.clone(),
            }
            .into());
        }
        let floor = (
            info.ack_floor.stream_sequence,
            info.ack_floor.consumer_sequence,
        );
        let acker = Acker::new(config.ack_policy, ctx.nats.clone(), stream, floor);
        let pull_bytes = PULL_BYTES.max(2 * ctx.nats.server_info().max_payload);
        let messages = consumer
            .stream()
            // Pull up to two batches ahead, so the next batch is already arriving while
            // one is written; `max_ack_pending` still bounds what is outstanding.
            .max_messages_per_batch((2 * config.batch_size).min(config.max_ack_pending).max(1))
            .max_bytes_per_batch(pull_bytes)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(|source| BindError::Pull {
                durable: config.durable.clone(),
                source,
            })?;
        Ok(Binding {
            messages,
            acker: Arc::new(acker),
        })
    }
}

/// Pull errors after which the message stream delivers nothing more.
fn gone(kind: pull::MessagesErrorKind) -> bool {
    matches!(
        kind,
        pull::MessagesErrorKind::ConsumerDeleted
            | pull::MessagesErrorKind::PushBasedConsumer
            | pull::MessagesErrorKind::RequestLimitExceeded
    )
}
