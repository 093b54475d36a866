//! The bridge's own request, `dtaas.v1.<user>.bridge.stats`, and its reply. (Its
//! command requests, `cmd.send` and `cmd.status`, are in [`crate::command`].)

use serde::{Deserialize, Serialize};

/// The service name in request subjects: `dtaas.v1.<user>.bridge.<verb>`.
pub const SERVICE: &str = "bridge";
/// Verb of the counters request.
pub const VERB_STATS: &str = "stats";

/// Request `dtaas.v1.<user>.bridge.stats`: no fields (`{}` or an empty body).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeStatsRequest {}

/// Reply to `bridge.stats`, also the `data` of the bridge's `$SRV.STATS`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BridgeStats {
    /// MQTT messages received.
    pub mqtt_in: u64,
    /// Telemetry records stored in `DTAAS_TEL`.
    pub records_out: u64,
    /// Messages sent to the DLQ (MQTT messages, commands and backlog entries).
    pub dlq: u64,
    /// MQTT messages received and not yet acknowledged.
    pub in_flight: u64,
    /// JetStream publishes that failed and were retried.
    pub publish_retries: u64,
    /// Commands taken from `DTAAS_CMD` and not yet finished.
    pub commands_pending: u64,
    /// Commands the broker acknowledged.
    pub commands_sent: u64,
    /// Commands whose TTL passed before they could be sent.
    pub commands_expired: u64,
    /// Device acknowledgements recorded.
    pub commands_acknowledged: u64,
    /// Commands given up on (`failed`): not acknowledged by the broker in time, or
    /// failing on every try (then also dead-lettered).
    #[serde(default)]
    pub commands_failed: u64,
    /// True while the MQTT connection is up.
    pub mqtt_connected: bool,
    /// True once the broker acknowledged the subscriptions of the current connection.
    pub mqtt_subscribed: bool,
    /// `"5"` or `"3.1.1"` once connected.
    pub mqtt_protocol: Option<String>,
    /// Messages in the durable backlog, waiting for JetStream.
    #[serde(default)]
    pub backlog_messages: u64,
    /// Their bytes on disk.
    #[serde(default)]
    pub backlog_bytes: u64,
    /// Age of the oldest, in milliseconds (0 when empty).
    #[serde(default)]
    pub backlog_age_ms: u64,
    /// Backlog messages published in the last second.
    #[serde(default)]
    pub backlog_drain_rate: u64,
    /// Backlog messages published since start.
    #[serde(default)]
    pub backlog_drained: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::decode;

    #[test]
    fn stats_request_takes_nothing_but_an_empty_object() {
        assert_eq!(
            decode::<BridgeStatsRequest>(None, b"{}").unwrap(),
            BridgeStatsRequest {}
        );
        assert!(decode::<BridgeStatsRequest>(None, br#"{"x":1}"#).is_err());
    }

    #[test]
    fn stats_from_an_older_bridge_still_decode() {
        let old = r#"{"mqtt_in":1,"records_out":2,"dlq":0,"in_flight":0,"publish_retries":0,
            "commands_pending":0,"commands_sent":0,"commands_expired":0,
            "commands_acknowledged":0,"mqtt_connected":true,"mqtt_subscribed":true,
            "mqtt_protocol":"5"}"#;
        let stats: BridgeStats = serde_json::from_str(old).unwrap();
        assert_eq!((stats.records_out, stats.commands_failed), (2, 0));
    }
}
