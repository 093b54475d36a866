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

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, AckKind};
use bytes::Bytes;
use dtaas_runtime::nats::backoff;
use dtaas_schemas::codec::Encoding;
use dtaas_schemas::command::{Command, CommandStatus};
use dtaas_schemas::names::{self, header};
use dtaas_schemas::subject;
use dtaas_schemas::time::now_ns;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::ledger::Ledger;
use crate::mqtt::{remaining_secs, BrokerAck, BrokerAcks, Client, QoS};
use crate::stats::Stats;
use crate::topic_map::command_topic;
use crate::WORKER;

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
    /// Consumes commands until `shutdown`, re-creating the consumer after errors.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut attempt = 0;
        while !shutdown.is_cancelled() {
            if let Err(error) = self.consume(&shutdown, &mut attempt).await {
                let delay = backoff(attempt);
                attempt += 1;
                tracing::warn!(error = %format!("{error:#}"), retry_in = ?delay, "Command consumer failed; retrying.");
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }

    async fn consume(
        &self,
        shutdown: &CancellationToken,
        attempt: &mut usize,
    ) -> anyhow::Result<()> {
        let stream = self.js.get_stream(names::STREAM_COMMANDS).await?;
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
            .await?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(16)
            .messages()
            .await?;
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                message = messages.next() => match message {
                    Some(message) => message?,
                    None => anyhow::bail!("command consumer ended"),
                },
            };
            *attempt = 0;
            self.stats.commands_pending.fetch_add(1, Relaxed);
            let done = self.handle(&message, shutdown).await;
            self.stats.commands_pending.fetch_sub(1, Relaxed);
            let kind = match done {
                Ok(Done::Ack) => AckKind::Ack,
                Ok(Done::Nak) => AckKind::Nak(None),
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), subject = %message.subject, "Cannot handle a command; it will be redelivered.");
                    AckKind::Nak(Some(Duration::from_secs(1)))
                }
            };
            message
                .ack_with(kind)
                .await
                .map_err(|e| anyhow::anyhow!("cannot acknowledge a command: {e}"))?;
        }
    }

    async fn handle(
        &self,
        message: &jetstream::Message,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Done> {
        let command = match self.command(message) {
            Ok(command) => command,
            Err(reason) => {
                let subject = message.subject.to_string();
                let context = [(header::DLQ_SUBJECT, subject.as_str())];
                dtaas_runtime::dlq::publish(
                    &self.js,
                    WORKER,
                    message.payload.clone(),
                    &reason,
                    &context,
                )
                .await?;
                self.stats.dlq.fetch_add(1, Relaxed);
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
                let _ = message.ack_with(AckKind::Progress).await;
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
            other => Bytes::from(serde_json::to_vec(other)?),
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
    fn command(&self, message: &jetstream::Message) -> Result<Command, String> {
        let (pt, name) = subject::parse_command(&message.subject).map_err(|e| e.to_string())?;
        // A plain publish skips `cmd.send`'s checks: a control character or `/` here
        // would reach MQTT (a malformed packet, or a topic aliasing an ack topic).
        subject::validate_token("PT id", pt).map_err(|e| e.to_string())?;
        subject::validate_token("command", name).map_err(|e| e.to_string())?;
        let headers = message.headers.as_ref();
        let content_type = dtaas_runtime::headers::content_type(headers);
        let mut command: Command = if message.payload.iter().all(u8::is_ascii_whitespace) {
            serde_json::from_str("{}").map_err(|e| e.to_string())?
        } else {
            Encoding::detect(content_type, &message.payload)
                .and_then(|e| e.decode(&message.payload))
                .map_err(|e| format!("command body is not a command: {e}"))?
        };
        command.pt = pt.to_owned();
        command.command = name.to_owned();
        if command.id.is_empty() {
            command.id = match headers.and_then(|h| h.get(header::MSG_ID)) {
                Some(id) => id.as_str().to_owned(),
                None => {
                    // Derived from the stream position so a redelivery keeps its id.
                    let info = message.info().map_err(|e| e.to_string())?;
                    let key = format!(
                        "{}/{}/{}",
                        info.stream, info.stream_sequence, info.published
                    );
                    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, key.as_bytes()).to_string()
                }
            };
        }
        dtaas_schemas::command::validate_id(&command.id).map_err(|e| e.to_string())?;
        if command.issued_at == 0 {
            command.issued_at = now_ns();
        }
        Ok(command)
    }
}
