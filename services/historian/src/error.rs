//! The historian's errors: why the worker stopped, a configuration that cannot work,
//! and a store that cannot be opened. A store's failures while running are
//! `SinkError`s (`sink.rs`), which the consumer retries or dead-letters.

use std::path::PathBuf;

/// `[historian]` or its environment cannot work; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or an environment variable cannot be read into the table.
    #[error(transparent)]
    Load(#[from] dtaas_runtime::ConfigError),
    /// A setting is out of its range.
    #[error("[historian] {0}")]
    Invalid(String),
    /// The durable name is no subject token.
    #[error("[historian] durable: {0}")]
    Durable(#[from] dtaas_schemas::SubjectError),
}

/// A `backend` that is neither `embedded` nor `influxdb`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown time-series backend {0:?}; use embedded or influxdb")]
pub struct UnknownBackend(pub String);

/// A store cannot be opened at start-up.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create data directory {}: {source}", path.display())]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open {}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    /// `DTAAS_INFLUXDB_URL` is no http(s) URL.
    #[error("DTAAS_INFLUXDB_URL {url:?} {problem}")]
    InfluxUrl { url: String, problem: String },
    #[error("cannot build the InfluxDB client: {0}")]
    InfluxClient(#[from] influxdb2::BuildError),
}

/// Why the historian worker stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Service(#[from] dtaas_runtime::service::ServiceError),
    #[error(transparent)]
    Consumer(#[from] dtaas_runtime::consumer::ConsumerError),
    /// The consumer task panicked.
    #[error("the consumer task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}
