//! Errors of lifecycle operations, each of which becomes an error reply with its code,
//! and why the worker stopped.

use dtaas_schemas::{ErrorCode, ErrorReply};

/// Why an operation on a DT did not happen. The message says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The request or the configuration is wrong; the message lists every problem.
    #[error("{0}")]
    BadRequest(String),
    /// No such DT (or it belongs to another user).
    #[error("{0}")]
    NotFound(String),
    /// The DT's state forbids it, or another operation holds it.
    #[error("{0}")]
    Conflict(String),
    /// A quota refuses it.
    #[error("{0}")]
    Forbidden(String),
    /// NATS, the registry, an exec node or the asset library is not reachable.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::BadRequest(_) => ErrorCode::BadRequest,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::Conflict(_) => ErrorCode::Conflict,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The same error with `context` before its message (e.g. which DT of a tree).
    pub fn within(self, context: &str) -> Self {
        let put = |m: String| format!("{context}: {m}");
        match self {
            Self::BadRequest(m) => Self::BadRequest(put(m)),
            Self::NotFound(m) => Self::NotFound(put(m)),
            Self::Conflict(m) => Self::Conflict(put(m)),
            Self::Forbidden(m) => Self::Forbidden(put(m)),
            Self::Unavailable(m) => Self::Unavailable(put(m)),
            Self::Internal(m) => Self::Internal(put(m)),
        }
    }

    /// An unreachable store or peer, with what failed.
    pub fn unavailable(what: impl std::fmt::Display, e: impl std::fmt::Display) -> Self {
        Self::Unavailable(format!("{what}: {e}; retry later"))
    }
}

impl From<Error> for ErrorReply {
    fn from(e: Error) -> Self {
        ErrorReply::new(e.code(), e.to_string())
    }
}

impl From<ErrorReply> for Error {
    fn from(reply: ErrorReply) -> Self {
        let message = reply.error.message;
        match reply.error.code {
            ErrorCode::BadRequest => Self::BadRequest(message),
            ErrorCode::NotFound => Self::NotFound(message),
            ErrorCode::Conflict => Self::Conflict(message),
            ErrorCode::Forbidden => Self::Forbidden(message),
            ErrorCode::Unavailable => Self::Unavailable(message),
            ErrorCode::Internal => Self::Internal(message),
        }
    }
}

impl From<dtaas_schemas::SubjectError> for Error {
    fn from(e: dtaas_schemas::SubjectError) -> Self {
        Self::BadRequest(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why the lifecycle worker stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] dtaas_runtime::ConfigError),
    /// The DT registry or the snapshot store cannot be opened.
    #[error(transparent)]
    Open(#[from] dtaas_runtime::provision::ProvisionError),
    #[error(transparent)]
    Service(#[from] dtaas_runtime::service::ServiceError),
    /// The process-event consumer cannot go on (its durable has another ack policy).
    #[error(transparent)]
    Consumer(#[from] dtaas_runtime::consumer::ConsumerError),
    /// The process-event filter is not a valid subject.
    #[error("cannot build the process-event consumer: {0}")]
    Subject(#[from] dtaas_schemas::SubjectError),
    /// The process-event consumer, the node watcher or the quota watch panicked.
    #[error("a lifecycle task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}
