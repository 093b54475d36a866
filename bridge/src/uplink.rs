//! Uplink: MQTT publishes → telemetry records in `DTAAS_TEL` (or the DLQ), then the
//! MQTT acknowledgement (the same for MQTT 5 and 3.1.1, see `mqtt::Message`).
//!
//! One task takes publishes from the bounded channel the MQTT poller fills, parses
//! them and starts their JetStream publishes; up to `in_flight` of them are in flight
//! at once (their PubAck futures resolve concurrently). Completed messages are
//! acknowledged to the broker in the order they arrived, only after JetStream (or the
//! DLQ stream) acknowledged everything the message produced. A failed publish is
//! retried with capped backoff; while NATS is down the window fills, the bridge stops
//! acknowledging and the broker holds back further messages.
//!
//! A publish whose ack has not come within `nats_ack_timeout` (2 s; a stream leader
//! died) is sent again with the same `Nats-Msg-Id` (from `id_field`, else one from
//! `msg_id`), so JetStream stores it once, and a leader change stalls the uplink for
//! about that long rather than the client's default.

use std::collections::HashSet;
use std::future::IntoFuture;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind};
use async_nats::HeaderMap;
use bytes::Bytes;
use dtaas_runtime::nats::backoff;
use dtaas_schemas::command::CommandStatus;
use dtaas_schemas::excerpt::excerpt;
use dtaas_schemas::names::header;
use dtaas_schemas::time::now_ns;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::backlog::{Backlog, Entry};
use crate::ledger::Ledger;
use crate::mqtt::{Client, Message, QoS};
use crate::msg_id::MsgIds;
use crate::outgoing::{self, Outgoing};
use crate::payload;
use crate::payload::stamp::Stamper;
use crate::stats::Stats;
use crate::topic_map::{Route, TopicMaps};
use crate::WORKER;

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
                        acks.push(sent.ok().map(|ack| tokio::spawn(ack.into_future())));
                    }
                    for (message, first) in messages.iter().zip(acks) {
                        let ok = match first {
                            Some(ack) => matches!(ack.await, Ok(Ok(_))),
                            None => false,
                        };
                        if ok {
                            self.stats
                                .records_out
                                .fetch_add(message.records as u64, Relaxed);
                        } else {
                            self.spill_or_publish(message, &publish).await;
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
                    Err(reason) => Outcome::Dlq(reason),
                }
            }
            Route::Unmapped(reason) => return Outcome::Dlq(reason),
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
            Err(reason) => return Outcome::Dlq(reason),
        };
        match outgoing::messages(&parsed) {
            Ok(messages) => Outcome::Records(messages),
            Err(reason) => Outcome::Dlq(reason),
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
                Err(error) => throttled_warn(&format!(
                    "{error}; waiting for JetStream instead, the broker queues meanwhile"
                )),
            }
        }
        match self
            .publish_retrying(&message.subject, &message.headers, &message.body)
            .await
        {
            Ok(()) => {
                self.stats
                    .records_out
                    .fetch_add(message.records as u64, Relaxed);
            }
            Err(reason) => self.dlq(publish, &reason).await,
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
                Ok(batch) => batch,
                Err(error) => {
                    tracing::error!(%error, "Cannot read the bridge backlog; retrying.");
                    Vec::new()
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
                match uplink.publish_retrying(&entry.subject, &headers, &entry.body).await {
                    Ok(()) => entry.records,
                    Err(reason) => {
                        tracing::error!(subject = %entry.subject, reason, "Dropped a backlog message JetStream can never take.");
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

    /// Publishes until JetStream acknowledges; `Err` only for a message it can never
    /// take (too large), which then goes to the DLQ.
    async fn publish_retrying(
        &self,
        subject: &str,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<(), String> {
        let mut attempt = 0;
        loop {
            let result = match self.publish_once(subject, headers, body).await {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match result {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                    return Err(format!("record too large for NATS: {e}"))
                }
                Err(error) => {
                    self.stats.publish_retries.fetch_add(1, Relaxed);
                    throttled_warn(&format!("JetStream publish failed ({error}); retrying, MQTT messages stay unacknowledged"));
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
            }
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

    /// Sends the message to the DLQ, retrying until it is stored.
    async fn dlq(&self, publish: &Message, reason: &str) {
        let topic = String::from_utf8_lossy(&publish.topic);
        let mut attempt = 0;
        loop {
            let context = [(header::DLQ_TOPIC, topic.as_ref())];
            match dtaas_runtime::dlq::publish(
                &self.js,
                WORKER,
                publish.payload.clone(),
                reason,
                &context,
            )
            .await
            {
                Ok(()) => {
                    self.stats.dlq.fetch_add(1, Relaxed);
                    tracing::debug!(%topic, reason, "Sent a message to the DLQ.");
                    return;
                }
                Err(error) => {
                    throttled_warn(&format!("DLQ publish failed ({error:#}); retrying"));
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }

    /// Moves a command to `acknowledged` after its device replied.
    /// Only a reply on the command's own topic counts: an id sent on another PT's or
    /// command's ack topic is a forgery (or a mistake) and goes to the DLQ.
    async fn command_ack(&self, publish: &Message, id: &str, topic: (&str, &str)) {
        let mut attempt = 0;
        loop {
            let result = async {
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
                Ok::<_, anyhow::Error>(None)
            }
            .await;
            match result {
                Ok(None) => return,
                Ok(Some(reason)) => return self.dlq(publish, &reason).await,
                Err(error) => {
                    throttled_warn(&format!(
                        "Cannot record a command acknowledgement ({error:#}); retrying"
                    ));
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }
}

/// The command id of a device reply: `{"id":"…"}`, a JSON string, or the bare id.
pub fn command_id(payload: &[u8]) -> Result<String, String> {
    let id = match serde_json::from_slice::<serde_json::Value>(payload) {
        Ok(serde_json::Value::Object(map)) => match map.get("id") {
            Some(serde_json::Value::String(s)) => s.clone(),
            _ => return Err("command acknowledgement has no string field \"id\"".into()),
        },
        Ok(serde_json::Value::String(s)) => s,
        _ => String::from_utf8_lossy(payload).trim().to_owned(),
    };
    dtaas_schemas::command::validate_id(&id).map_err(|e| e.to_string())?;
    Ok(id)
}

/// Logs a warning at most every 5 s, so an outage does not log once per message.
fn throttled_warn(message: &str) {
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = now_ns();
    let last = LAST.load(Relaxed);
    if now - last > 5_000_000_000 && LAST.compare_exchange(last, now, Relaxed, Relaxed).is_ok() {
        tracing::warn!("{message}.");
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
        assert!(super::command_id(b"").unwrap_err().contains("command id"));
        assert!(super::command_id(b"a.b").is_err());
    }
}
