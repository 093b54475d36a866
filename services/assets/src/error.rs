//! Error replies of the asset library, how store failures map onto them, and why the
//! worker stopped.

use dtaas_schemas::{ErrorCode, ErrorReply};

pub fn bad_request(message: impl Into<String>) -> ErrorReply {
    ErrorReply::new(ErrorCode::BadRequest, message)
}

pub fn not_found(message: impl Into<String>) -> ErrorReply {
    ErrorReply::new(ErrorCode::NotFound, message)
}

pub fn conflict(message: impl Into<String>) -> ErrorReply {
    ErrorReply::new(ErrorCode::Conflict, message)
}

pub fn forbidden(message: impl Into<String>) -> ErrorReply {
    ErrorReply::new(ErrorCode::Forbidden, message)
}

/// A JetStream store failed: the caller may retry; nothing was half-changed that a
/// retry would not finish.
pub fn unavailable(what: &str, error: impl std::fmt::Display) -> ErrorReply {
    tracing::warn!(%error, what, "Asset store request failed.");
    ErrorReply::new(
        ErrorCode::Unavailable,
        format!("the asset store could not {what}: {error}; retry later"),
    )
}

/// Something the library itself wrote cannot be read back.
pub fn internal(message: impl Into<String>) -> ErrorReply {
    let message = message.into();
    tracing::error!(%message, "Asset library inconsistency.");
    ErrorReply::new(ErrorCode::Internal, message)
}

/// The answer for an asset the caller cannot see, the same as for one that does not
/// exist, so that private assets cannot be discovered.
pub fn no_such_asset(address: &str, user: &str) -> ErrorReply {
    not_found(format!(
        "no asset {address} visible to {user}; `dtaas asset list` shows what you can use"
    ))
}

/// Why the assets worker stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] dtaas_runtime::ConfigError),
    /// A bucket of the library cannot be opened.
    #[error(transparent)]
    Open(#[from] dtaas_runtime::provision::ProvisionError),
    #[error(transparent)]
    Service(#[from] dtaas_runtime::service::ServiceError),
}
