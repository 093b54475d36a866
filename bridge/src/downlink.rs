//! Downlink: commands from the durable consumer on `DTAAS_CMD` → MQTT
//! `dtaas/pt/<pt>/cmd/<command>`, with TTL checks and ledger updates.
//!
//! Commands are published one at a time and the JetStream message is acknowledged
//! only once the broker acknowledged the MQTT publish (`sent`) or the command expired
//! (`expired`). While the broker is unreachable a command waits, unacknowledged in
//! JetStream, until the broker is back or its TTL passes; an expired command is never
//! published. With MQTT 5 the remaining TTL travels as the message expiry interval;
//! MQTT 3.1.1 has none, so there the TTL is only enforced by the bridge. If the
//! connection drops before the broker confirmed a publish, rumqttc resends it after
//! the reconnect; the poller drops that resend when the TTL passed meanwhile (the
//! command becomes `expired`) and otherwise updates its expiry interval (MQTT 5).
//!
//! A command that cannot be handled is handed back to JetStream with a delay, so the
//! ones behind it go first. While the store is unavailable that goes on (its TTL ends
//! it); a command that fails on its own account is dead-lettered at its
//! `POISON_TRIES`th delivery and recorded `failed` (see `Downlink::failed`).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, AckKind};
use bytes::Bytes;
use dtaas_runtime::backoff::{self, Backoff};
use dtaas_schemas::codec::Encoding;
use dtaas_schemas::command::{Command, CommandStatus};
use dtaas_schemas::names::{self, header};
use dtaas_schemas::subject;
use dtaas_schemas::time::now_ns;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::error::{CommandError, ConsumeError, Failure, InvalidCommand, POISON_TRIES};
use crate::ledger::Ledger;
use crate::mqtt::{remaining_secs, BrokerAck, BrokerAcks, Client, QoS};
use crate::stats::Stats;
use crate::topic_map::command_topic;
use crate::{warn_throttled, WORKER};

/// How long a published command may wait for the broker's acknowledgement.
const BROKER_ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a waiting command tells JetStream it is still being worked on.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// The command sender.
pub struct Downlink {
    pub js: jetstream::Context,
    pub client: Client,
    pub ledger: Ledger,
    pub stats: Arc<Stats>,
    pub acks: Arc<BrokerAcks>,
    pub qos: QoS,
    pub consumer: String,
}

/// What became of a command message.
enum Done {
    /// Finished; acknowledge it in JetStream.
    Ack,
    /// Shutdown interrupted it; hand it back for redelivery.
    Nak,
}

impl Downlink {
    /// Consumes commands until `shutdown`, binding the consumer again after errors.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new();
        while !shutdown.is_cancelled() {
            if let Err(error) = self.consume(&shutdown, &mut backoff).await {
                tracing::warn!(%error, attempt = backoff.attempt(), "Command consumer failed; binding it again.");
                if !backoff.wait(&shutdown).await {
                    return;
                }
            }
        }
    }

    async fn consume(
        &self,
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
    ) -> Result<(), ConsumeError> {
        let stream = self
            .js
            .get_stream(names::STREAM_COMMANDS)
            .await
            .map_err(ConsumeError::Stream)?;
        let consumer = stream
            .get_or_create_consumer(
                &self.consumer,
                pull::Config {
                    durable_name: Some(self.consumer.clone()),
                    filter_subject: subject::command_all(),
                    ack_wait: Duration::from_secs(30),
                    ..Default::default()
                },
            )
            .await
            .map_err(ConsumeError::Consumer)?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(16)
            .messages()
            .await
            .map_err(|e| ConsumeError::Pull(e.into()))?;
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                message = messages.next() => match message {
                    Some(message) => message.map_err(|e| ConsumeError::Pull(e.into()))?,
                    None => return Err(ConsumeError::Ended),
                },
            };
            backoff.reset();
            self.stats.commands_pending.fetch_add(1, Relaxed);
            let done = self.handle(&message, shutdown).await;
            let kind = match done {
                Ok(Done::Ack) => AckKind::Ack,
                Ok(Done::Nak) => AckKind::Nak(None),
                Err(error) => self.failed(&message, error).await,
            };
            self.stats.commands_pending.fetch_sub(1, Relaxed);
            message.ack_with(kind).await.map_err(ConsumeError::Ack)?;
        }
    }

    /// What to tell JetStream about a command that could not be handled this time.
    ///
    /// It is handed back for redelivery after the runtime's backoff for its delivery
    /// count, so the commands behind it go first. While the store or broker is
    /// unavailable that goes on as long as it takes (its TTL still ends it, see
    /// `handle`); a command that fails on its own account is dead-lettered at its
    /// `POISON_TRIES`th delivery and recorded `failed` with the reason.
    async fn failed(&self, message: &jetstream::Message, error: CommandError) -> AckKind {
        let delivered = message.info().map(|i| i.delivered).unwrap_or(1).max(1) as u32;
        let subject = message.subject.as_str();
        let failure = error.failure();
        if failure == Failure::Rejected && delivered >= POISON_TRIES {
            match self.give_up(message, &error, delivered).await {
                Ok(()) => return AckKind::Ack,
                Err(dlq) => {
                    warn_throttled!(%subject, error = %dlq, "Cannot dead-letter a failing command; it will be redelivered.")
                }
            }
        } else {
            match failure {
                Failure::Unavailable => {
                    warn_throttled!(%subject, %error, "Cannot handle a command now; it will be redelivered.")
                }
                Failure::Rejected => {
                    tracing::warn!(%subject, %error, delivered, "A command failed; it will be redelivered.")
                }
            }
        }
        AckKind::Nak(Some(backoff::delay(delivered as usize - 1)))
    }

    /// Dead-letters a command that failed `tries` times, then records it `failed` (the
    /// ledger write may be what keeps failing: it is only tried once). The DLQ comes
    /// first: a command recorded `failed` is not handled again.
    async fn give_up(
        &self,
        message: &jetstream::Message,
        error: &CommandError,
        tries: u32,
    ) -> Result<(), CommandError> {
        let reason = format!("failed {tries} times: {error}");
        self.dead_letter(message, &reason).await?;
        tracing::warn!(subject = %message.subject, %error, tries, "Dead-lettered a command that keeps failing.");
        if let Ok(command) = self.command(message) {
            let recorded = self
                .ledger
                .record(
                    &command.id,
                    &command.pt,
                    &command.command,
                    CommandStatus::Failed,
                    Some(reason),
                )
                .await;
            match recorded {
                Ok(_) => {
                    self.stats.commands_failed.fetch_add(1, Relaxed);
                }
                Err(error) => {
                    tracing::warn!(id = %command.id, %error, "Cannot record a dead-lettered command as failed.")
                }
            }
        }
        Ok(())
    }

    /// Sends the command message to the DLQ with `reason`.
    async fn dead_letter(
        &self,
        message: &jetstream::Message,
        reason: &str,
    ) -> Result<(), CommandError> {
        let subject = message.subject.to_string();
        let context = [(header::DLQ_SUBJECT, subject.as_str())];
        dtaas_runtime::dlq::publish(&self.js, WORKER, message.payload.clone(), reason, &context)
            .await?;
        self.stats.dlq.fetch_add(1, Relaxed);
        Ok(())
    }

    async fn handle(
        &self,
        message: &jetstream::Message,
        shutdown: &CancellationToken,
    ) -> Result<Done, CommandError> {
        let command = match self.command(message) {
            Ok(command) => command,
            Err(invalid) => {
                self.dead_letter(message, &invalid.to_string()).await?;
                return Ok(Done::Ack);
            }
        };
        let (id, pt, name) = (&command.id, &command.pt, &command.command);
        match self.ledger.get(id).await? {
            None => {
                self.ledger
                    .record(id, pt, name, CommandStatus::Accepted, None)
                    .await?;
            }
            Some(current) if current.status != CommandStatus::Accepted => {
                // Delivered again after it was already handled.
                return Ok(Done::Ack);
            }
            Some(_) => {}
        }
        let expires_at = command.expires_at();
        let expired = || expires_at.is_some_and(|at| now_ns() >= at);
        let mut last_progress = tokio::time::Instant::now();
        let mut connected = self.stats.mqtt_connected.subscribe();
        loop {
            if expired() {
                let reason = "its TTL passed before the MQTT broker could take it".to_owned();
                self.ledger
                    .record(id, pt, name, CommandStatus::Expired, Some(reason))
                    .await?;
                self.stats.commands_expired.fetch_add(1, Relaxed);
                return Ok(Done::Ack);
            }
            if shutdown.is_cancelled() {
                return Ok(Done::Nak);
            }
            if *connected.borrow_and_update() {
                break;
            }
            if last_progress.elapsed() >= PROGRESS_EVERY {
                last_progress = tokio::time::Instant::now();
                dtaas_runtime::consumer::ack::progress([message]).await;
            }
            // Wake when the connection comes up, at shutdown, for the next progress
            // ack, or when the TTL passes.
            let mut wake = last_progress + PROGRESS_EVERY;
            if let Some(at) = expires_at {
                let left = Duration::from_nanos(at.saturating_sub(now_ns()).max(0) as u64);
                wake = wake.min(tokio::time::Instant::now() + left);
            }
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = connected.changed() => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
        // Whole seconds, rounded up, so the broker never drops it early. Only MQTT 5
        // carries it; with 3.1.1 the TTL check above is all there is (and the check
        // before a resend, see `BrokerAcks::before_resend`).
        let expiry_secs = expires_at.map(|at| remaining_secs(at, now_ns()));
        let content_type = if command.payload.is_string() {
            "text/plain"
        } else {
            "application/json"
        };
        let payload = match &command.payload {
            serde_json::Value::String(s) => Bytes::from(s.clone().into_bytes()),
            other => Bytes::from(serde_json::to_vec(other).map_err(CommandError::Payload)?),
        };
        let broker_ack = self.acks.expect(self.qos, expires_at);
        self.client
            .publish(
                command_topic(pt, name),
                self.qos,
                payload,
                expiry_secs,
                content_type,
                id,
            )
            .await?;
        match tokio::time::timeout(BROKER_ACK_TIMEOUT, broker_ack).await {
            Ok(Ok(BrokerAck::Taken)) => {
                self.ledger
                    .record(id, pt, name, CommandStatus::Sent, None)
                    .await?;
                self.stats.commands_sent.fetch_add(1, Relaxed);
            }
            Ok(Ok(BrokerAck::ExpiredUnsent)) => {
                let reason = "the MQTT connection dropped before the broker confirmed it and \
                              its TTL passed before the reconnect; it was not resent"
                    .to_owned();
                self.ledger
                    .record(id, pt, name, CommandStatus::Expired, Some(reason))
                    .await?;
                self.stats.commands_expired.fetch_add(1, Relaxed);
            }
            _ => {
                let reason =
                    format!("the MQTT broker did not acknowledge it within {BROKER_ACK_TIMEOUT:?}");
                self.ledger
                    .record(id, pt, name, CommandStatus::Failed, Some(reason))
                    .await?;
                self.stats.commands_failed.fetch_add(1, Relaxed);
            }
        }
        Ok(Done::Ack)
    }

    /// Decodes the command and fills in what a plain publish may leave out.
    fn command(&self, message: &jetstream::Message) -> Result<Command, InvalidCommand> {
        let (pt, name) = subject::parse_command(&message.subject)?;
        // A plain publish skips `cmd.send`'s checks: a control character or `/` here
        // would reach MQTT (a malformed packet, or a topic aliasing an ack topic).
        subject::validate_token("PT id", pt)?;
        subject::validate_token("command", name)?;
        let headers = message.headers.as_ref();
        let content_type = dtaas_runtime::headers::content_type(headers);
        let mut command: Command = if message.payload.iter().all(u8::is_ascii_whitespace) {
            Command::default()
        } else {
            Encoding::detect(content_type, &message.payload)
                .and_then(|e| e.decode(&message.payload))
                .map_err(InvalidCommand::Body)?
        };
        command.pt = pt.to_owned();
        command.command = name.to_owned();
        if command.id.is_empty() {
            command.id = match headers.and_then(|h| h.get(header::MSG_ID)) {
                Some(id) => id.as_str().to_owned(),
                None => {
                    // Derived from the stream position so a redelivery keeps its id.
                    let info = message
                        .info()
                        .map_err(|e| InvalidCommand::Metadata(e.to_string()))?;
                    let key = format!(
                        "{}/{}/{}",
                        info.stream, info.stream_sequence, info.published
                    );
                    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, key.as_bytes()).to_string()
                }
            };
        }
        dtaas_schemas::command::validate_id(&command.id)?;
        if command.issued_at == 0 {
            command.issued_at = now_ns();
        }
        Ok(command)
    }
}
