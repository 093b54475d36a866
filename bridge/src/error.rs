//! The bridge's error types, and the one question its retry loops ask of a failure:
//! is the store or broker unavailable (wait and retry, as long as it takes), or does
//! this one message fail where others would not (retry a few times, then dead-letter
//! it, so it never blocks the messages behind it)?

use async_nats::jetstream::context::{
    GetStreamError, KeyValueError, PublishError, PublishErrorKind,
};
use async_nats::jetstream::kv::{EntryError, PutError};
use async_nats::jetstream::stream::ConsumerError;
use async_nats::jetstream::{self, ErrorCode};
use dtaas_runtime::dlq::DlqError;
use dtaas_schemas::command::CommandIdError;
use dtaas_schemas::{CodecError, SubjectError};

use crate::mqtt::ClientError;

/// How often a message that fails for a reason of its own (not an unavailable store)
/// is tried before it is dead-lettered: the first try and four retries, with the
/// runtime's backoff between them (about 1.5 s in all).
pub const POISON_TRIES: u32 = 5;

/// What a failure says about the message that met it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// NATS, JetStream, the KV bucket or the MQTT broker cannot take it now: waiting
    /// helps, and every other message would fail the same way.
    Unavailable,
    /// This message fails on its own account (JetStream refused it, the ledger holds
    /// something unreadable for it): tried [`POISON_TRIES`] times, then dead-lettered.
    Rejected,
}

/// JetStream API errors that speak of the server, not of the message: a cluster
/// without quorum, a full store, a stream that is offline.
const UNAVAILABLE_CODES: [ErrorCode; 7] = [
    ErrorCode::CLUSTER_NOT_AVAILABLE,
    ErrorCode::INSUFFICIENT_RESOURCES,
    ErrorCode::STORAGE_RESOURCES_EXCEEDED,
    ErrorCode::STREAM_STORE_FAILED,
    ErrorCode::JETSTREAM_NOT_ENABLED,
    ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT,
    ErrorCode::STREAM_OFFLINE,
];

/// Whether a JetStream publish failed for the server's reasons or the message's.
/// No answer (timeout, lost connection, no stream listening) is `Unavailable`; an
/// answer refusing this message (larger than the stream's `max_msg_size`, say) is
/// `Rejected`.
pub fn publish_failure(error: &PublishError) -> Failure {
    match error.kind() {
        PublishErrorKind::MaxPayloadExceeded
        | PublishErrorKind::WrongLastMessageId
        | PublishErrorKind::WrongLastSequence => Failure::Rejected,
        PublishErrorKind::Other => {
            let api = std::error::Error::source(error)
                .and_then(|source| source.downcast_ref::<jetstream::Error>());
            match api {
                Some(api) if !UNAVAILABLE_CODES.contains(&api.error_code()) => Failure::Rejected,
                _ => Failure::Unavailable,
            }
        }
        _ => Failure::Unavailable,
    }
}

/// A command status could not be read or recorded.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("cannot open KV dtaas-commands: {0}")]
    Open(#[source] KeyValueError),
    /// The id, PT or command makes no event subject (ids are checked before).
    #[error("no status event subject: {0}")]
    Subject(#[from] SubjectError),
    #[error("cannot encode the status event: {0}")]
    Encode(#[source] CodecError),
    #[error("cannot publish the status event: {0}")]
    Event(#[source] PublishError),
    #[error("cannot write KV dtaas-commands: {0}")]
    Put(#[source] PutError),
    #[error("cannot read KV dtaas-commands: {0}")]
    Get(#[source] EntryError),
    /// Someone wrote something else under a command id.
    #[error("the ledger entry of command {id:?} is not a command status: {source}")]
    Unreadable { id: String, source: CodecError },
}

impl LedgerError {
    pub fn failure(&self) -> Failure {
        match self {
            Self::Event(e) => publish_failure(e),
            Self::Open(_) | Self::Put(_) | Self::Get(_) => Failure::Unavailable,
            Self::Subject(_) | Self::Encode(_) | Self::Unreadable { .. } => Failure::Rejected,
        }
    }
}

/// Why a message from `DTAAS_CMD` is no command; it goes to the DLQ with this reason.
#[derive(Debug, thiserror::Error)]
pub enum InvalidCommand {
    #[error(transparent)]
    Subject(#[from] SubjectError),
    #[error("command body is not a command: {0}")]
    Body(#[source] CodecError),
    #[error(transparent)]
    Id(#[from] CommandIdError),
    /// A message without JetStream metadata (its id cannot be derived).
    #[error("command message has no JetStream metadata: {0}")]
    Metadata(String),
}

/// A command could not be handled this time; JetStream delivers it again.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The dead letter of an invalid (or given-up) command was not stored.
    #[error("cannot dead-letter the command: {0}")]
    Dlq(#[from] DlqError),
    #[error("cannot encode the command payload: {0}")]
    Payload(#[source] serde_json::Error),
    /// The MQTT client stopped (shutdown).
    #[error("cannot publish to MQTT: {0}")]
    Mqtt(#[from] ClientError),
}

impl CommandError {
    pub fn failure(&self) -> Failure {
        match self {
            Self::Ledger(e) => e.failure(),
            Self::Payload(_) => Failure::Rejected,
            Self::Dlq(_) | Self::Mqtt(_) => Failure::Unavailable,
        }
    }
}

/// The bridge could not start, or a task of it failed: `dtaas bridge` exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] crate::config::BridgeConfigError),
    #[error(transparent)]
    Tls(#[from] crate::mqtt::TlsError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Backlog(#[from] crate::backlog::BacklogError),
    #[error(transparent)]
    Service(#[from] dtaas_runtime::service::ServiceError),
    /// The uplink, downlink, backlog drain or MQTT poller panicked.
    #[error(transparent)]
    Task(#[from] dtaas_runtime::task::TaskFailed),
    /// The request endpoints' task panicked.
    #[error("the request endpoints failed: {0}")]
    Requests(#[from] tokio::task::JoinError),
}

/// The command consumer stopped; it is bound again after a backoff.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error("cannot find stream DTAAS_CMD: {0}")]
    Stream(#[source] GetStreamError),
    #[error("cannot bind the command consumer: {0}")]
    Consumer(#[source] ConsumerError),
    #[error("cannot pull commands: {0}")]
    Pull(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the command consumer ended")]
    Ended,
    #[error("cannot acknowledge a command: {0}")]
    Ack(#[source] async_nats::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_answer_is_unavailable_and_a_refusal_is_rejected() {
        let timeout = PublishError::new(PublishErrorKind::TimedOut);
        assert_eq!(publish_failure(&timeout), Failure::Unavailable);
        let too_large = PublishError::new(PublishErrorKind::MaxPayloadExceeded);
        assert_eq!(publish_failure(&too_large), Failure::Rejected);
        let refusal: jetstream::Error = serde_json::from_str(
            r#"{"code":400,"err_code":10054,"description":"message size exceeds maximum allowed"}"#,
        )
        .unwrap();
        let refused = PublishError::with_source(PublishErrorKind::Other, refusal);
        assert_eq!(publish_failure(&refused), Failure::Rejected);
        let full: jetstream::Error = serde_json::from_str(
            r#"{"code":503,"err_code":10047,"description":"insufficient storage resources"}"#,
        )
        .unwrap();
        let full = PublishError::with_source(PublishErrorKind::Other, full);
        assert_eq!(publish_failure(&full), Failure::Unavailable);
    }
}
