//! Names of streams, consumers' defaults, KV buckets, object stores and headers.

/// Telemetry from PTs and outputs of running DTs.
pub const STREAM_TELEMETRY: &str = "DTAAS_TEL";
/// Commands for PTs.
pub const STREAM_COMMANDS: &str = "DTAAS_CMD";
/// Lifecycle transitions, command status, anomalies.
pub const STREAM_EVENTS: &str = "DTAAS_EVT";
/// Input that could not be processed, with the reason in headers.
pub const STREAM_DLQ: &str = "DTAAS_DLQ";
/// Usage samples of DT processes (accounting), provisioned by exec.
pub const STREAM_USAGE: &str = "DTAAS_USAGE";

/// The registry of DTs: key = DT id, value = `DtState`.
pub const KV_DTS: &str = "dtaas-dts";
/// The command ledger: key = command id, value = `CommandStatusEvent`.
pub const KV_COMMANDS: &str = "dtaas-commands";
/// Asset metadata: keys `v.<owner>.<name>.<version>` and `i.<owner>.<name>`
/// (`asset_store`).
pub const KV_ASSETS: &str = "dtaas-assets";
/// Exec nodes: key = node id, value = `exec::NodeInfo`, rewritten every heartbeat.
pub const KV_NODES: &str = "dtaas-nodes";

/// Asset file contents, named `sha256/<hex>` (`asset_store`).
pub const OBJECT_ASSETS: &str = "dtaas-assets";
/// Saved DT snapshots.
pub const OBJECT_SNAPSHOTS: &str = "dtaas-snapshots";

/// Header names.
pub mod header {
    /// JetStream de-duplication id.
    pub const MSG_ID: &str = "Nats-Msg-Id";
    /// `application/msgpack` or `application/json`.
    pub const CONTENT_TYPE: &str = "Content-Type";
    /// Why a message went to the DLQ.
    pub const DLQ_REASON: &str = "Dtaas-Dlq-Reason";
    /// The worker that sent a message to the DLQ.
    pub const DLQ_SOURCE: &str = "Dtaas-Dlq-Source";
    /// The MQTT topic a DLQ message arrived on.
    pub const DLQ_TOPIC: &str = "Dtaas-Dlq-Topic";
    /// The NATS subject a DLQ message arrived on.
    pub const DLQ_SUBJECT: &str = "Dtaas-Dlq-Subject";
    /// The role (`DTAAS_ROLE`) of a process answering `dtaas.v1.dt.<dt>.ctl.save`.
    pub const ROLE: &str = "Dtaas-Role";
    /// Set when the DLQ keeps only a prefix of a payload too large for NATS: its size
    /// in bytes.
    pub const DLQ_TRUNCATED: &str = "Dtaas-Dlq-Truncated";
    /// Error status of a service reply (NATS service API).
    pub const SERVICE_ERROR: &str = "Nats-Service-Error";
    /// Error code of a service reply (NATS service API).
    pub const SERVICE_ERROR_CODE: &str = "Nats-Service-Error-Code";
}
