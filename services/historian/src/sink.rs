//! The trait every time-series backend implements: batch writes, queries, latest values.

use std::future::Future;
use std::sync::Arc;

use dtaas_schemas::timeseries::{TsLatestReply, TsQueryReply};
use dtaas_schemas::TelemetryRecord;

use crate::query::Query;

/// Why a write or query failed; decides between retrying and dead-lettering.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The store is down, locked, full or unreachable: retry the same batch later.
    #[error("time-series store unavailable: {0}")]
    Unavailable(String),
    /// The store refused the data as invalid: retrying would fail again.
    #[error("time-series store rejected the data: {0}")]
    Rejected(String),
}

/// A time-series store. Writes are idempotent: the same record written twice leaves
/// one point per field (same PT, measurement, tags, field and timestamp).
pub trait Sink: Clone + Send + Sync + 'static {
    /// Writes every field of every record; `Ok` means the store has them durably.
    fn write(
        &self,
        records: Arc<Vec<TelemetryRecord>>,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Answers `ts.query`; an unknown PT gives an empty reply.
    fn query(&self, query: Query) -> impl Future<Output = Result<TsQueryReply, SinkError>> + Send;

    /// Answers `ts.latest` for `pt`; an unknown PT gives an empty reply.
    fn latest(&self, pt: String) -> impl Future<Output = Result<TsLatestReply, SinkError>> + Send;
}
