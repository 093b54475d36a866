//! The durable pull consumer on `DTAAS_TEL`: batches, writes, acknowledges.
//!
//! Messages are collected into a batch (up to `batch_size` records, or `max_delay` after
//! the first one arrived), decoded (a message carries one record or an array of them),
//! and handed to a writer task; while it writes, the next batch is collected, so
//! fetching and writing overlap. A message is acknowledged only
//! after the store confirmed the write that contains it. A store that fails is retried
//! with capped backoff and progress acks (so JetStream does not redeliver what is being
//! retried); records that cannot be stored go to `dtaas.v1.dlq.historian` with the
//! reason and are then acknowledged. Under the `all` ack policy one acknowledgement per
//! batch covers everything stored (see `ack_floor`). At most two batches are held in
//! memory; what is pulled ahead is bounded by `PULL_BYTES`, and `max_ack_pending` bounds
//! what JetStream delivers ahead of the acknowledgements.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::stream::Stream;
use async_nats::jetstream::{self, AckKind, Message};
use dtaas_runtime::Context;
use dtaas_schemas::codec::Encoding;
use dtaas_schemas::excerpt::excerpt;
use dtaas_schemas::names::{self, header};
use dtaas_schemas::telemetry_batch::decode_records_into;
use dtaas_schemas::{subject, TelemetryRecord};
use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::acker::Acker;
use crate::config::{self, HistorianConfig};
use crate::sink::{Sink, SinkError};
use crate::WORKER;

/// Most bytes of messages one pull request asks for (at least twice the server's
/// largest message): with arrays of up to 1,000 records per message, a bound in
/// messages alone would let gigabytes wait in the client.
const PULL_BYTES: usize = 16 << 20;

/// Counters for `$SRV.STATS`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Messages written and acknowledged.
    pub written: AtomicU64,
    /// Records in those messages.
    pub records: AtomicU64,
    /// Messages sent to the DLQ.
    pub dead_lettered: AtomicU64,
    /// Failed write attempts that were retried.
    pub retries: AtomicU64,
}

impl Stats {
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "written": self.written.load(Ordering::Relaxed),
            "records": self.records.load(Ordering::Relaxed),
            "dead_lettered": self.dead_lettered.load(Ordering::Relaxed),
            "retries": self.retries.load(Ordering::Relaxed),
        })
    }
}

/// A collected batch: the records that can be written with the messages they came in,
/// and the messages that cannot be stored with the reason.
#[derive(Default)]
struct Batch {
    records: Vec<TelemetryRecord>,
    messages: Vec<Message>,
    /// How many of `records` each of `messages` carries, in order.
    counts: Vec<usize>,
    invalid: Vec<(Message, String)>,
}

impl Batch {
    /// The size that `batch_size` bounds: records, plus the messages that had none.
    fn len(&self) -> usize {
        self.records.len() + self.invalid.len()
    }

    fn push(&mut self, message: Message) {
        match decode_into(&message, &mut self.records) {
            Ok(count) => {
                self.messages.push(message);
                self.counts.push(count);
            }
            Err(reason) => self.invalid.push((message, reason)),
        }
    }
}

/// Decodes and checks one message's records, appending them to `records`; a message
/// with one bad record is refused whole (it is acknowledged as a unit). A record on
/// `dtaas.v1.tel.<pt>.<measurement>` must be for that PT and measurement, so that who
/// may publish for one PT cannot write into another's series. DT outputs
/// (`dtaas.v1.dt.<dt>.out.<output>`) are stored under pt = the DT and measurement =
/// the output, whatever the records say.
fn decode_into(message: &Message, records: &mut Vec<TelemetryRecord>) -> Result<usize, String> {
    let content_type = dtaas_runtime::headers::content_type(message.headers.as_ref());
    let start = records.len();
    let count = Encoding::detect(content_type, &message.payload)
        .and_then(|encoding| decode_records_into(encoding, &message.payload, records))
        .map_err(|e| format!("cannot decode telemetry: {e}"))?;
    let dt_output = subject::parse_dt_output(&message.subject).ok();
    let telemetry = subject::parse_telemetry(&message.subject).ok();
    let mut fault = None;
    for (index, record) in records[start..].iter_mut().enumerate() {
        if let Some((dt, output)) = dt_output {
            dt.clone_into(&mut record.pt);
            output.clone_into(&mut record.measurement);
        }
        let error = match telemetry {
            Some(names) if names != (record.pt.as_str(), record.measurement.as_str()) => {
                Some(format!(
                    "the record is for PT {} measurement {}, but its subject is for PT {:?} \
                     measurement {:?}; publish each record on its own PT's subject",
                    excerpt(&record.pt),
                    excerpt(&record.measurement),
                    names.0,
                    names.1
                ))
            }
            _ => record.validate().err().map(|e| e.to_string()),
        };
        if let Some(error) = error {
            fault = Some(match count {
                1 => error,
                _ => format!("record {index} of the array: {error}"),
            });
            break;
        }
    }
    match fault {
        Some(reason) => {
            records.truncate(start);
            Err(reason)
        }
        None => Ok(count),
    }
}

/// Creates (or binds to) the durable consumer named by the configuration.
pub async fn durable(
    js: &jetstream::Context,
    config: &HistorianConfig,
) -> anyhow::Result<(PullConsumer, Stream)> {
    let name = config.durable_name();
    let policy = config.ack_policy();
    let stream = js
        .get_stream(names::STREAM_TELEMETRY)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open stream {}: {e}", names::STREAM_TELEMETRY))?;
    let consumer: PullConsumer = stream
        .get_or_create_consumer(
            &name,
            pull::Config {
                durable_name: Some(name.clone()),
                description: Some("dtaas historian: telemetry into the time-series store".into()),
                deliver_policy: DeliverPolicy::All,
                ack_policy: match policy {
                    config::AckPolicy::All => AckPolicy::All,
                    config::AckPolicy::Explicit => AckPolicy::Explicit,
                },
                ack_wait: config.ack_wait,
                max_ack_pending: config.max_ack_pending as i64,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot create durable consumer {name}: {e}"))?;
    let existing = match consumer.cached_info().config.ack_policy {
        AckPolicy::All => config::AckPolicy::All,
        _ => config::AckPolicy::Explicit,
    };
    anyhow::ensure!(
        existing == policy,
        "durable consumer {name} on {stream} was created with ack policy {existing}, but \
         [historian] ack_policy is {policy}: set ack_policy = \"{existing}\" \
         (DTAAS_HISTORIAN_ACK_POLICY), use another durable name, or delete the consumer \
         (nats consumer rm {stream} {name}) to recreate it",
        stream = names::STREAM_TELEMETRY,
        existing = existing.name(),
        policy = policy.name(),
    );
    Ok((consumer, stream))
}

/// Consumes `DTAAS_TEL` into `sink` until shutdown, then finishes the write in flight.
pub async fn run<S: Sink>(
    ctx: Context,
    config: HistorianConfig,
    sink: S,
    stats: Arc<Stats>,
) -> anyhow::Result<()> {
    let (consumer, stream) = durable(&ctx.js, &config).await?;
    let ack_floor = &consumer.cached_info().ack_floor;
    let acker = Acker::new(
        config.ack_policy(),
        ctx.nats.clone(),
        stream,
        (ack_floor.stream_sequence, ack_floor.consumer_sequence),
    );
    // Messages may carry arrays of records, so what is pulled ahead is bounded in
    // bytes as well as in messages; the bound must let the largest message through.
    let pull_bytes = PULL_BYTES.max(2 * ctx.nats.server_info().max_payload);
    let mut messages = consumer
        .stream()
        // Pull up to two batches ahead, so the next batch is already arriving while one
        // is written; `max_ack_pending` still bounds what is outstanding.
        .max_messages_per_batch((2 * config.batch_size).min(config.max_ack_pending))
        .max_bytes_per_batch(pull_bytes)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .map_err(|e| anyhow::anyhow!("cannot pull from {}: {e}", names::STREAM_TELEMETRY))?;
    let progress_every = config.ack_wait / 3;
    let writer = Writer {
        js: ctx.js.clone(),
        sink,
        stats,
        acker: Arc::new(acker),
        shutdown: ctx.shutdown.clone(),
        progress_every,
    };
    // While the stream is quiet, a deleted message must not hold back the
    // acknowledgement of everything after it (`all` ack policy).
    let mut floor_check = tokio::time::interval(Duration::from_secs(1));
    floor_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut in_flight: Option<JoinHandle<()>> = None;
    let mut pull_errors = 0;
    tracing::info!(durable = %config.durable_name(), ack_policy = config.ack_policy().name(), batch_size = config.batch_size, "Historian consuming telemetry.");
    loop {
        let mut batch = Batch::default();
        // One timer per batch (not per message): armed when the first message arrives.
        let deadline = tokio::time::sleep(Duration::MAX);
        tokio::pin!(deadline);
        let mut armed = false;
        let mut ended = false;
        while batch.len() < config.batch_size {
            let item = tokio::select! {
                biased;
                _ = ctx.shutdown.cancelled() => { ended = true; break }
                _ = &mut deadline, if armed => break,
                item = messages.next() => item,
                _ = floor_check.tick() => {
                    writer.acker.pass_missing().await;
                    continue;
                }
            };
            match item {
                Some(Ok(message)) => {
                    pull_errors = 0;
                    batch.push(message);
                    if !armed {
                        deadline
                            .as_mut()
                            .reset(tokio::time::Instant::now() + config.max_delay);
                        armed = true;
                    }
                }
                Some(Err(error)) => {
                    // Missed heartbeats or a NATS outage: the client re-pulls on its
                    // own; pause so a persistent error does not spin.
                    tracing::warn!(%error, "Pulling telemetry failed; retrying.");
                    tokio::time::sleep(dtaas_runtime::nats::backoff(pull_errors)).await;
                    pull_errors += 1;
                }
                None => {
                    ended = true;
                    tracing::error!(
                        "The telemetry consumer ended; stopping so the process restarts it."
                    );
                    break;
                }
            }
        }
        if let Some(previous) = in_flight.take() {
            wait_with_progress(previous, &batch, progress_every).await;
        }
        // On shutdown the batch already collected is still written (and acknowledged),
        // unless the store is down, in which case JetStream redelivers it later.
        if batch.len() > 0 {
            let writer = writer.clone();
            in_flight = Some(tokio::spawn(async move { writer.write(batch).await }));
        }
        if ended || ctx.shutdown.is_cancelled() {
            break;
        }
    }
    if let Some(last) = in_flight {
        let _ = last.await;
    }
    tracing::info!("Historian consumer stopped.");
    if ctx.shutdown.is_cancelled() {
        Ok(())
    } else {
        anyhow::bail!("the telemetry consumer ended unexpectedly")
    }
}

/// Waits for the write in flight while keeping the next batch's messages from being
/// redelivered.
async fn wait_with_progress(mut write: JoinHandle<()>, batch: &Batch, every: Duration) {
    loop {
        tokio::select! {
            _ = &mut write => return,
            _ = tokio::time::sleep(every) => progress(batch.messages.iter().chain(batch.invalid.iter().map(|(m, _)| m))).await,
        }
    }
}

async fn progress<'a>(messages: impl Iterator<Item = &'a Message>) {
    for message in messages {
        let _ = message.ack_with(AckKind::Progress).await;
    }
}

/// Writes batches and acknowledges them; one runs at a time.
#[derive(Clone)]
struct Writer<S> {
    js: jetstream::Context,
    sink: S,
    stats: Arc<Stats>,
    acker: Arc<Acker>,
    shutdown: CancellationToken,
    progress_every: Duration,
}

impl<S: Sink> Writer<S> {
    async fn write(&self, batch: Batch) {
        let Batch {
            records,
            messages,
            counts,
            invalid,
        } = batch;
        for (message, reason) in invalid {
            self.dead_letter(&message, &reason).await;
        }
        self.write_range(Arc::new(records), &messages, &counts, 0)
            .await;
    }

    /// Writes `records` (which came in `messages`, `counts[i]` of them in message `i`),
    /// retrying while the store is unavailable; a rejected batch is split in halves until
    /// the messages with invalid records are found and dead-lettered. Returns without
    /// acknowledging on shutdown.
    async fn write_range(
        &self,
        records: Arc<Vec<TelemetryRecord>>,
        messages: &[Message],
        counts: &[usize],
        depth: u32,
    ) {
        if records.is_empty() {
            return;
        }
        let mut attempt = 0;
        let mut last_progress = Instant::now();
        loop {
            match self.sink.write(records.clone()).await {
                Ok(()) => {
                    self.acker.stored(messages).await;
                    self.stats
                        .written
                        .fetch_add(messages.len() as u64, Ordering::Relaxed);
                    self.stats
                        .records
                        .fetch_add(records.len() as u64, Ordering::Relaxed);
                    if attempt > 0 {
                        tracing::info!(
                            records = records.len(),
                            attempts = attempt + 1,
                            "Time-series store is back; batch written."
                        );
                    }
                    return;
                }
                Err(SinkError::Rejected(reason)) if messages.len() == 1 => {
                    self.dead_letter(&messages[0], &reason).await;
                    return;
                }
                Err(SinkError::Rejected(reason)) => {
                    tracing::debug!(records = records.len(), depth, %reason, "Store rejected a batch; splitting it to find the invalid records.");
                    let half = messages.len() / 2;
                    let (left, right) = records.split_at(counts[..half].iter().sum());
                    let (left, right) = (Arc::new(left.to_vec()), Arc::new(right.to_vec()));
                    let (left_counts, right_counts) = counts.split_at(half);
                    Box::pin(self.write_range(left, &messages[..half], left_counts, depth + 1))
                        .await;
                    Box::pin(self.write_range(right, &messages[half..], right_counts, depth + 1))
                        .await;
                    return;
                }
                Err(SinkError::Unavailable(error)) => {
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    let delay = dtaas_runtime::nats::backoff(attempt);
                    if attempt == 0 || attempt % 20 == 0 {
                        tracing::warn!(%error, records = records.len(), attempt, retry_in = ?delay, "Cannot write batch; keeping it unacknowledged and retrying.");
                    }
                    attempt += 1;
                    if last_progress.elapsed() >= self.progress_every {
                        progress(messages.iter()).await;
                        last_progress = Instant::now();
                    }
                    tokio::select! {
                        _ = self.shutdown.cancelled() => {
                            tracing::warn!(records = records.len(), "Shutting down with an unwritten batch; JetStream redelivers it later.");
                            return;
                        }
                        _ = tokio::time::sleep(delay) => {}
                    }
                    if last_progress.elapsed() >= self.progress_every {
                        progress(messages.iter()).await;
                        last_progress = Instant::now();
                    }
                }
            }
        }
    }

    /// Sends `message` to the DLQ with `reason`, then acknowledges it; if the DLQ is
    /// unreachable the message stays unacknowledged and comes back later.
    async fn dead_letter(&self, message: &Message, reason: &str) {
        let context = [(header::DLQ_SUBJECT, message.subject.as_str())];
        match dtaas_runtime::dlq::publish(
            &self.js,
            WORKER,
            message.payload.clone(),
            reason,
            &context,
        )
        .await
        {
            Ok(()) => {
                self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(subject = %message.subject, %reason, "Sent an invalid record to the DLQ.");
                self.acker.stored([message]).await;
            }
            Err(error) => {
                tracing::warn!(subject = %message.subject, %error, "Cannot publish to the DLQ; the message will be redelivered.");
            }
        }
    }
}
