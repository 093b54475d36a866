//! Counters shared by the bridge tasks, reported by `$SRV.STATS` and `bridge.stats`
//! (as `dtaas_schemas::bridge::BridgeStats`).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};

use std::sync::Arc;

use dtaas_schemas::bridge::BridgeStats;

use crate::backlog::BacklogStats;

use crate::mqtt::Protocol;

/// Live counters; cheap atomic increments on the hot path.
#[derive(Debug, Default)]
pub struct Stats {
    /// MQTT messages received.
    pub mqtt_in: AtomicU64,
    /// Telemetry records stored in `DTAAS_TEL`.
    pub records_out: AtomicU64,
    /// Messages sent to the DLQ.
    pub dlq: AtomicU64,
    /// MQTT messages received and not yet acknowledged.
    pub in_flight: AtomicU64,
    /// JetStream publishes that failed and were retried.
    pub publish_retries: AtomicU64,
    /// Commands taken from `DTAAS_CMD` and not yet finished.
    pub commands_pending: AtomicU64,
    /// Commands the broker acknowledged.
    pub commands_sent: AtomicU64,
    /// Commands whose TTL passed before they could be sent.
    pub commands_expired: AtomicU64,
    /// Device acknowledgements received.
    pub commands_acknowledged: AtomicU64,
    /// Commands that ended `failed`.
    pub commands_failed: AtomicU64,
    /// True while the MQTT connection is up; the downlink waits on its changes.
    pub mqtt_connected: tokio::sync::watch::Sender<bool>,
    /// True once the broker acknowledged the subscriptions of the current connection.
    pub mqtt_subscribed: AtomicBool,
    /// MQTT version of the last connection: 0 none yet, 5, or 4 (3.1.1).
    mqtt_protocol: AtomicU8,
    /// The durable backlog's size, age and drain rate.
    pub backlog: Arc<BacklogStats>,
}

impl Stats {
    /// Records the MQTT version of the current connection.
    pub fn set_protocol(&self, protocol: Option<Protocol>) {
        let level = match protocol {
            None => 0,
            Some(Protocol::V5) => 5,
            Some(Protocol::V311) => 4,
        };
        self.mqtt_protocol.store(level, Relaxed);
    }

    /// The MQTT version of the current connection, if any yet.
    pub fn protocol(&self) -> Option<Protocol> {
        match self.mqtt_protocol.load(Relaxed) {
            5 => Some(Protocol::V5),
            4 => Some(Protocol::V311),
            _ => None,
        }
    }

    /// The current values.
    pub fn snapshot(&self) -> BridgeStats {
        BridgeStats {
            mqtt_in: self.mqtt_in.load(Relaxed),
            records_out: self.records_out.load(Relaxed),
            dlq: self.dlq.load(Relaxed),
            in_flight: self.in_flight.load(Relaxed),
            publish_retries: self.publish_retries.load(Relaxed),
            commands_pending: self.commands_pending.load(Relaxed),
            commands_sent: self.commands_sent.load(Relaxed),
            commands_expired: self.commands_expired.load(Relaxed),
            commands_acknowledged: self.commands_acknowledged.load(Relaxed),
            commands_failed: self.commands_failed.load(Relaxed),
            mqtt_connected: *self.mqtt_connected.borrow(),
            mqtt_subscribed: self.mqtt_subscribed.load(Relaxed),
            mqtt_protocol: self.protocol().map(|p| p.name().to_owned()),
            backlog_messages: self.backlog.messages.load(Relaxed),
            backlog_bytes: self.backlog.bytes.load(Relaxed),
            backlog_age_ms: self.backlog.age_ms(),
            backlog_drain_rate: self.backlog.drain_rate.load(Relaxed),
            backlog_drained: self.backlog.drained.load(Relaxed),
        }
    }
}
