//! The exec worker's errors: a NATS write or read that did not complete, a label that
//! is no `key=value`, and why the worker stopped. Request handlers answer with
//! `ErrorReply`s; work directories fail with `WorkdirError` (`workdir.rs`).

use std::time::Duration;

/// A usage sample, heartbeat or process event was not stored, or the usage stream
/// could not be read; retrying may help unless it is `Subject` or `Encode`.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// A DT or user id is no subject token.
    #[error(transparent)]
    Subject(#[from] dtaas_schemas::SubjectError),
    #[error("cannot encode: {0}")]
    Encode(#[from] serde_json::Error),
    /// NATS or JetStream refused or failed.
    #[error("{what}: {source}")]
    Failed {
        what: &'static str,
        source: async_nats::Error,
    },
    /// No answer in time.
    #[error("{what}: no answer within {after:?}")]
    Timeout { what: &'static str, after: Duration },
}

/// `what` failed with `source`, for `map_err`.
pub fn failed<E: Into<async_nats::Error>>(what: &'static str) -> impl FnOnce(E) -> NatsError {
    move |source| NatsError::Failed {
        what,
        source: source.into(),
    }
}

/// `what` had no answer within `after`, for `map_err` on a timeout.
pub fn timed_out<E>(what: &'static str, after: Duration) -> impl FnOnce(E) -> NatsError {
    move |_| NatsError::Timeout { what, after }
}

/// A label of `DTAAS_EXEC_LABELS` that is no `key=value`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("label {0:?} is not `key=value`")]
pub struct BadLabel(pub String);

/// Why the exec worker stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] dtaas_runtime::ConfigError),
    /// Boxed: it is large, and every `Result` of the worker would carry its size.
    #[error(transparent)]
    Provision(Box<dtaas_runtime::provision::ProvisionError>),
    /// The node's directory cannot be prepared.
    #[error("cannot prepare {}: {source}", path.display())]
    Dir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// The node registry (KV) cannot be opened or written.
    #[error("cannot register node {node} in KV {bucket}: {source}")]
    Register {
        node: String,
        bucket: &'static str,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Service(#[from] dtaas_runtime::service::ServiceError),
    /// The heartbeat or the orphan reaping task panicked.
    #[error("a task of the node failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl From<dtaas_runtime::provision::ProvisionError> for RunError {
    fn from(error: dtaas_runtime::provision::ProvisionError) -> Self {
        Self::Provision(Box::new(error))
    }
}
