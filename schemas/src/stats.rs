//! What workers report in `$SRV.STATS` (`nats micro stats dtaas-<worker>`), the `data`
//! of each endpoint.

use serde::{Deserialize, Serialize};

/// What an exec node runs now (`nats micro stats dtaas-exec`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecStats {
    /// The node's id.
    pub node: String,
    /// Live DT processes.
    pub processes: u32,
    /// CPUs the live processes asked for.
    pub cpus_used: f64,
    /// Memory the live processes asked for, MiB.
    pub memory_mb_used: u64,
}

/// The counters of a worker's JetStream consumer (`services/runtime/src/consumer`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerStats {
    /// Messages stored (or holding nothing to store) and acknowledged.
    pub messages: u64,
    /// Items (records, events) in those messages.
    pub items: u64,
    /// Successful store writes.
    pub batches: u64,
    /// Messages sent to the DLQ.
    pub dead_lettered: u64,
    /// Failed write attempts that were retried.
    pub retries: u64,
}
