//! Uplink: MQTT publishes → telemetry records in `DTAAS_TEL` (or the DLQ), then the
//! MQTT acknowledgement (the same for MQTT 5 and 3.1.1, see `mqtt::Message`).
//!
//! One task takes publishes from the bounded channel the MQTT poller fills, parses
//! them and starts their JetStream publishes; up to `in_flight` of them are in flight
//! at once (their PubAck futures resolve concurrently). Completed messages are
//! acknowledged to the broker in the order they arrived, only after JetStream (or the
//! DLQ stream) acknowledged everything the message produced. A publish that fails
//! because JetStream is unavailable goes to the backlog, or is retried with the
//! runtime's backoff; while NATS is down the window fills, the bridge stops
//! acknowledging and the broker holds back further messages. A message JetStream
//! refuses (`error::Failure::Rejected`) is retried in place `POISON_TRIES` times in
//! all, then dead-lettered, so it never holds up the messages behind it.
//!
//! A publish whose ack has not come within `nats_ack_timeout` (2 s; a stream leader
//! died) is sent again with the same `Nats-Msg-Id` (from `id_field`, else one from
//! `msg_id`), so JetStream stores it once, and a leader change stalls the uplink for
//! about that long rather than the client's default.

use std::collections::HashSet;
use std::future::IntoFuture;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::{self};
use async_nats::HeaderMap;
use bytes::Bytes;
use dtaas_runtime::backoff::Backoff;
use dtaas_schemas::command::{CommandIdError, CommandStatus};
use dtaas_schemas::excerpt::excerpt;
use dtaas_schemas::names::header;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::backlog::{Backlog, Entry};
use crate::error::{publish_failure, Failure, LedgerError, POISON_TRIES};
use crate::ledger::Ledger;
use crate::mqtt::{Client, Message, QoS};
use crate::msg_id::MsgIds;
use crate::outgoing::{self, Outgoing};
use crate::payload;
use crate::payload::stamp::Stamper;
use crate::stats::Stats;
use crate::topic_map::{Route, TopicMaps};
use crate::{warn_throttled, WORKER};

/// Backlog entries published together while draining.
const DRAIN_BATCH: usize = 256;

/// Room for a message's headers next to its body, when checking it against NATS's max
/// payload.
const HEADER_ROOM: usize = 1024;

/// How long shutdown waits for in-flight publishes before leaving them to redelivery.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything the uplink needs; shared by the per-message futures.
pub struct Uplink {
    pub js: jetstream::Context,
    pub client: Client,
    pub maps: TopicMaps,
    pub ledger: Ledger,
    pub stats: Arc<Stats>,
    /// PTs accepted when unknown PTs are rejected; `None` accepts every PT.
    pub known_pts: Option<HashSet<String>>,
    /// Most messages between receipt and acknowledgement.
    pub window: usize,
    /// Ids for messages without one, so a publish sent again is not stored twice.
    pub msg_ids: MsgIds,
    /// Where messages wait while JetStream cannot take them; `None`: turned off.
    pub backlog: Option<Arc<Backlog>>,
}

/// What becomes of one MQTT message.
enum Outcome {
    Records(Vec<Outgoing>),
    Dlq(String),
    /// A device's reply: the command id, and the PT and command of its topic.
    CommandAck {
        id: String,
        pt: String,
        command: String,
    },
}

impl Uplink {
    /// Runs until `shutdown`, then finishes in-flight publishes and acknowledges them.
    pub async fn run(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<Message>,
        shutdown: CancellationToken,
    ) {
        let mut pending: FuturesOrdered<BoxFuture<'static, Message>> = FuturesOrdered::new();
        let mut batch = Vec::with_capacity(256);
        // Arrival stamps, handed out here in arrival order (see `payload::stamp`).
        let mut stamps = Stamper::default();
        loop {
            let room = self.window.saturating_sub(pending.len());
            tokio::select! {
                biased;
                Some(done) = pending.next(), if !pending.is_empty() => self.ack(done).await,
                _ = shutdown.cancelled() => break,
                n = rx.recv_many(&mut batch, room.min(256)), if room > 0 => {
                    if n == 0 {
                        break;
                    }
                    for publish in batch.drain(..) {
                        pending.push_back(self.clone().handle(publish, &mut stamps));
                    }
                }
            }
        }
        // Stop taking messages: what the poller still receives stays unacknowledged.
        drop(rx);
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while let Some(done) = pending.next().await {
                self.ack(done).await;
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                left = pending.len(),
                "In-flight publishes did not finish; the broker will deliver them again."
            );
        }
    }

    async fn ack(&self, publish: Message) {
        if publish.qos != QoS::AtMostOnce {
            self.stats.in_flight.fetch_sub(1, Relaxed);
            if let Err(error) = self.client.ack(&publish).await {
                tracing::debug!(%error, "Cannot acknowledge an MQTT message; it will be redelivered.");
            }
        }
    }

    /// Starts the work for one message; the future yields it back once it may be acked.
    fn handle(
        self: Arc<Self>,
        publish: Message,
        stamps: &mut Stamper,
    ) -> BoxFuture<'static, Message> {
        let outcome = self.outcome(&publish, stamps);
        async move {
            match outcome {
                Outcome::Records(mut messages) => {
                    for message in &mut messages {
                        self.msg_ids.ensure(&mut message.headers);
                    }
                    if self.backlog.as_ref().is_some_and(|b| !b.is_empty()) {
                        // Behind the messages already waiting, in order.
                        for message in &messages {
                            self.spill_or_publish(message, &publish).await;
                        }
                        return publish;
                    }
                    let mut acks = Vec::with_capacity(messages.len());
                    for message in &messages {
                        let sent = self
                            .publish_once(&message.subject, &message.headers, &message.body)
                            .await;
                        // Each acknowledgement is awaited in a task of its own: until
                        // it is, it holds one of the JetStream context's 5,000 in-flight
                        // permits, so a payload (or window) of more messages than that
                        // would wait here for a permit it holds itself, forever.
                        acks.push(sent.map(|ack| tokio::spawn(ack.into_future())));
                    }
                    for (message, first) in messages.iter().zip(acks) {
                        let first = match first {
                            Ok(ack) => ack.await.unwrap_or_else(|_| {
                                Err(PublishError::new(PublishErrorKind::BrokenPipe))
                            }),
                            Err(error) => Err(error),
                        };
                        match first {
                            Ok(_) => {
                                self.stats
                                    .records_out
                                    .fetch_add(message.records as u64, Relaxed);
                            }
                            // JetStream refused this message: retried in place (the
                            // backlog would only retry it in front of all the others).
                            // One too large for NATS is dead-lettered whole below.
                            Err(error)
                                if publish_failure(&error) == Failure::Rejected
                                    && error.kind() != PublishErrorKind::MaxPayloadExceeded =>
                            {
                                self.publish_or_dead_letter(message, &publish.topic, 1)
                                    .await
                            }
                            Err(_) => self.spill_or_publish(message, &publish).await,
                        }
                    }
                }
                Outcome::Dlq(reason) => self.dlq(&publish, &reason).await,
                Outcome::CommandAck { id, pt, command } => {
                    self.command_ack(&publish, &id, (&pt, &command)).await
                }
            }
            publish
        }
        .boxed()
    }

    fn outcome(&self, publish: &Message, stamps: &mut Stamper) -> Outcome {
        let Ok(topic) = std::str::from_utf8(&publish.topic) else {
            return Outcome::Dlq("topic is not UTF-8".into());
        };
        let target = match self.maps.route(topic) {
            Route::Telemetry(target) => target,
            Route::CommandAck { pt, command } => {
                return match command_id(&publish.payload) {
                    Ok(id) => Outcome::CommandAck {
                        id,
                        pt: pt.to_owned(),
                        command: command.to_owned(),
                    },
                    Err(error) => Outcome::Dlq(error.to_string()),
                }
            }
            Route::Unmapped(unmapped) => return Outcome::Dlq(unmapped.to_string()),
        };
        if let Some(known) = &self.known_pts {
            if !known.contains(target.pt) {
                return Outcome::Dlq(format!(
                    "unknown PT {:?} (reject_unknown_pts is on)",
                    target.pt
                ));
            }
        }
        let parsed = match payload::parse(&publish.payload, &target, stamps) {
            Ok(parsed) => parsed,
            Err(error) => return Outcome::Dlq(error.to_string()),
        };
        match outgoing::messages(&parsed) {
            Ok(messages) => Outcome::Records(messages),
            Err(error) => Outcome::Dlq(error.to_string()),
        }
    }

    /// Appends `message` to the backlog (synced) so its MQTT message can be acked;
    /// when there is no room, publishes it in place, retrying until JetStream takes it.
    async fn spill_or_publish(&self, message: &Outgoing, publish: &Message) {
        // A message NATS can never take is dead-lettered now: from the backlog it could
        // only be dropped.
        let max_payload = self.js.client().server_info().max_payload;
        if message.body.len() + HEADER_ROOM > max_payload {
            let reason = format!(
                "a record of {} bytes is too large for NATS (max payload {max_payload} bytes)",
                message.body.len()
            );
            return self.dlq(publish, &reason).await;
        }
        if let Some(backlog) = &self.backlog {
            match backlog.append(&Entry::from_outgoing(message)).await {
                Ok(()) => return,
                Err(error) => warn_throttled!(
                    %error,
                    "Cannot add to the bridge backlog; waiting for JetStream instead, the broker queues meanwhile."
                ),
            }
        }
        self.publish_or_dead_letter(message, &publish.topic, 0)
            .await;
    }

    /// Publishes `message` until JetStream takes it, or dead-letters it (its records,
    /// with the MQTT topic and the subject) once JetStream refused it `POISON_TRIES`
    /// times; `tried` publishes failed already.
    async fn publish_or_dead_letter(&self, message: &Outgoing, topic: &[u8], tried: u32) {
        let published = self
            .publish_retrying(&message.subject, &message.headers, &message.body, tried)
            .await;
        match published {
            Ok(()) => {
                self.stats
                    .records_out
                    .fetch_add(message.records as u64, Relaxed);
            }
            Err(error) => {
                let topic = String::from_utf8_lossy(topic);
                let context = [
                    (header::DLQ_TOPIC, topic.as_ref()),
                    (header::DLQ_SUBJECT, message.subject.as_str()),
                ];
                let reason = refused_reason(&error);
                self.dead_letter(message.body.clone(), &reason, &context)
                    .await;
            }
        }
    }

    /// Publishes what waits in the backlog, oldest first, until `shutdown`.
    pub async fn drain_backlog(
        self: Arc<Self>,
        backlog: Arc<Backlog>,
        shutdown: CancellationToken,
    ) {
        let mut second = tokio::time::Instant::now();
        let (mut drained_before, mut logged_size) = (backlog.stats.drained.load(Relaxed), 0u64);
        // Retries of a backlog file that cannot be read.
        let mut unreadable = Backoff::new();
        loop {
            if second.elapsed() >= Duration::from_secs(1) {
                let drained = backlog.stats.drained.load(Relaxed);
                backlog
                    .stats
                    .drain_rate
                    .store(drained - drained_before, Relaxed);
                drained_before = drained;
                second = tokio::time::Instant::now();
                let size = backlog.stats.messages.load(Relaxed);
                if size > logged_size.max(100) * 2 || (size > 0 && logged_size == 0) {
                    tracing::warn!(
                        messages = size,
                        bytes = backlog.stats.bytes.load(Relaxed),
                        age_ms = backlog.stats.age_ms(),
                        "JetStream is not taking messages in time; the bridge backlog grows."
                    );
                    logged_size = size;
                } else if size == 0 && logged_size > 0 {
                    tracing::info!("Bridge backlog drained.");
                    logged_size = 0;
                }
            }
            let batch = match backlog.peek(DRAIN_BATCH) {
                Ok(batch) => {
                    unreadable.reset();
                    batch
                }
                Err(error) => {
                    tracing::error!(%error, "Cannot read the bridge backlog; retrying.");
                    if !unreadable.wait(&shutdown).await {
                        return;
                    }
                    continue;
                }
            };
            if batch.is_empty() {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = backlog.appended.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
                continue;
            }
            // The batch's publishes go out together and are retried one by one; the
            // drain position moves on only once JetStream took all of them.
            let uplink = &self;
            let publishes = batch.iter().map(|(entry, _)| async move {
                let headers = entry.header_map();
                match uplink
                    .publish_retrying(&entry.subject, &headers, &entry.body, 0)
                    .await
                {
                    Ok(()) => entry.records,
                    Err(error) => {
                        let context = [(header::DLQ_SUBJECT, entry.subject.as_str())];
                        let reason = refused_reason(&error);
                        uplink
                            .dead_letter(entry.body.clone(), &reason, &context)
                            .await;
                        0
                    }
                }
            });
            tokio::select! {
                _ = shutdown.cancelled() => return,
                records = futures::future::join_all(publishes) => {
                    self.stats.records_out.fetch_add(records.iter().sum::<u64>(), Relaxed);
                }
            }
            let bytes = batch.iter().map(|(_, size)| size).sum();
            if let Err(error) = backlog.pop(batch.len() as u64, bytes) {
                tracing::error!(%error, "Cannot move the bridge backlog on; its messages may be published again.");
            }
        }
    }

    /// Publishes until JetStream acknowledges, waiting with backoff as long as it is
    /// unavailable. `Err`, with the last refusal, for a message JetStream refuses
    /// (`error::Failure::Rejected`) `POISON_TRIES` times in all, counting the `tried`
    /// failures before, or at once for one larger than NATS's max payload.
    async fn publish_retrying(
        &self,
        subject: &str,
        headers: &HeaderMap,
        body: &Bytes,
        tried: u32,
    ) -> Result<(), PublishError> {
        let mut backoff = Backoff::new();
        let mut refused = tried;
        loop {
            let result = match self.publish_once(subject, headers, body).await {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            let error = match result {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => return Err(e),
                Err(e) => e,
            };
            self.stats.publish_retries.fetch_add(1, Relaxed);
            match publish_failure(&error) {
                Failure::Rejected => {
                    refused += 1;
                    if refused >= POISON_TRIES {
                        return Err(error);
                    }
                    tracing::debug!(%subject, %error, refused, "JetStream refused a message; retrying.");
                }
                Failure::Unavailable => warn_throttled!(
                    %error,
                    "JetStream publish failed; retrying, MQTT messages stay unacknowledged."
                ),
            }
            backoff.sleep().await;
        }
    }

    /// Sends one publish; the future resolves with JetStream's acknowledgement.
    async fn publish_once(
        &self,
        subject: &str,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<jetstream::context::PublishAckFuture, jetstream::context::PublishError> {
        self.js
            .publish_with_headers(subject.to_owned(), headers.clone(), body.clone())
            .await
    }

    /// Sends the MQTT message to the DLQ, retrying until it is stored.
    async fn dlq(&self, publish: &Message, reason: &str) {
        let topic = String::from_utf8_lossy(&publish.topic);
        let context = [(header::DLQ_TOPIC, topic.as_ref())];
        self.dead_letter(publish.payload.clone(), reason, &context)
            .await;
    }

    /// Sends `payload` to the DLQ with `reason` and `context` headers, retrying with
    /// backoff until it is stored (a DLQ that cannot take it is an unavailable store).
    async fn dead_letter(&self, payload: Bytes, reason: &str, context: &[(&'static str, &str)]) {
        let mut backoff = Backoff::new();
        loop {
            let stored =
                dtaas_runtime::dlq::publish(&self.js, WORKER, payload.clone(), reason, context)
                    .await;
            match stored {
                Ok(()) => {
                    self.stats.dlq.fetch_add(1, Relaxed);
                    tracing::debug!(reason, "Sent a message to the DLQ.");
                    return;
                }
                Err(error) => {
                    warn_throttled!(%error, "DLQ publish failed; retrying.");
                    backoff.sleep().await;
                }
            }
        }
    }

    /// Moves a command to `acknowledged` after its device replied.
    /// Only a reply on the command's own topic counts: an id sent on another PT's or
    /// command's ack topic is a forgery (or a mistake) and goes to the DLQ. While the
    /// ledger is unavailable the reply waits (and the MQTT acknowledgements behind it);
    /// a ledger failure of this command's own (an unreadable entry) is tried
    /// `POISON_TRIES` times, then the reply is dead-lettered with it.
    async fn command_ack(&self, publish: &Message, id: &str, topic: (&str, &str)) {
        let mut backoff = Backoff::new();
        let mut refused = 0;
        loop {
            let error = match self.record_ack(id, topic).await {
                Ok(None) => return,
                Ok(Some(reason)) => return self.dlq(publish, &reason).await,
                Err(error) => error,
            };
            match error.failure() {
                Failure::Rejected => {
                    refused += 1;
                    if refused >= POISON_TRIES {
                        let reason =
                            format!("cannot record the acknowledgement ({refused} tries): {error}");
                        return self.dlq(publish, &reason).await;
                    }
                }
                Failure::Unavailable => warn_throttled!(
                    %error,
                    "Cannot record a command acknowledgement; retrying."
                ),
            }
            backoff.sleep().await;
        }
    }

    /// Records the device's reply; `Ok(Some(reason))` when it goes to the DLQ instead.
    async fn record_ack(
        &self,
        id: &str,
        topic: (&str, &str),
    ) -> Result<Option<String>, LedgerError> {
        let Some(current) = self.ledger.get(id).await? else {
            return Ok(Some(format!(
                "device acknowledged unknown command id {id:?}"
            )));
        };
        if (current.pt.as_str(), current.command.as_str()) != topic {
            return Ok(Some(format!(
                "acknowledgement of command {id:?} on the ack topic of PT {} command {}, \
                 but that command is {:?} for PT {:?}; a device acknowledges on its \
                 command's own topic",
                excerpt(topic.0),
                excerpt(topic.1),
                current.command,
                current.pt
            )));
        }
        if current.status != CommandStatus::Acknowledged {
            self.ledger
                .record(
                    id,
                    &current.pt,
                    &current.command,
                    CommandStatus::Acknowledged,
                    None,
                )
                .await?;
            self.stats.commands_acknowledged.fetch_add(1, Relaxed);
        }
        Ok(None)
    }
}

/// A device reply that names no command.
#[derive(Debug, thiserror::Error)]
pub enum AckIdError {
    #[error("command acknowledgement has no string field \"id\"")]
    NoId,
    #[error(transparent)]
    Id(#[from] CommandIdError),
}

/// The command id of a device reply: `{"id":"…"}`, a JSON string, or the bare id.
pub fn command_id(payload: &[u8]) -> Result<String, AckIdError> {
    let id = match serde_json::from_slice::<serde_json::Value>(payload) {
        Ok(serde_json::Value::Object(map)) => match map.get("id") {
            Some(serde_json::Value::String(s)) => s.clone(),
            _ => return Err(AckIdError::NoId),
        },
        Ok(serde_json::Value::String(s)) => s,
        _ => String::from_utf8_lossy(payload).trim().to_owned(),
    };
    dtaas_schemas::command::validate_id(&id)?;
    Ok(id)
}

/// The DLQ reason of a message JetStream would not take.
fn refused_reason(error: &PublishError) -> String {
    match error.kind() {
        PublishErrorKind::MaxPayloadExceeded => format!("record too large for NATS: {error}"),
        _ => format!("JetStream refused it {POISON_TRIES} times: {error}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn command_ids_in_every_form() {
        assert_eq!(super::command_id(br#"{"id":"c1"}"#).unwrap(), "c1");
        assert_eq!(super::command_id(br#""c2""#).unwrap(), "c2");
        assert_eq!(super::command_id(b" c3\n").unwrap(), "c3");
        assert!(super::command_id(br#"{"x":1}"#).is_err());
        assert!(super::command_id(b"")
            .unwrap_err()
            .to_string()
            .contains("command id"));
        assert!(super::command_id(b"a.b").is_err());
    }
}
