//! Which JetStream API failures pass on their own (a meta leader election, too few
//! peers up for the replicas, a request that timed out) and which retrying cannot fix
//! (JetStream not enabled, replicas on a single server, a bad configuration).

use async_nats::jetstream::context::{
    CreateStreamError, CreateStreamErrorKind, GetStreamError, GetStreamErrorKind, RequestError,
    RequestErrorKind,
};
use async_nats::jetstream::stream::{ConsumerError, ConsumerErrorKind};
use async_nats::jetstream::{self, ErrorCode};

/// JetStream error codes of a cluster that cannot answer yet: incomplete (10004), no
/// suitable peers for placement (10005), not active (10006), not assigned (10007),
/// temporarily unavailable (10008: no meta leader), not the leader (10009).
const PASSING: [ErrorCode; 6] = [
    ErrorCode::CLUSTER_INCOMPLETE,
    ErrorCode::CLUSTER_NO_PEERS,
    ErrorCode::CLUSTER_NOT_ACTIVE,
    ErrorCode::CLUSTER_NOT_ASSIGNED,
    ErrorCode::CLUSTER_NOT_AVAILABLE,
    ErrorCode::CLUSTER_NOT_LEADER,
];

/// Whether JetStream answered with an error code that passes once the cluster has a
/// leader and enough peers again.
pub fn is_passing_code(code: u64) -> bool {
    PASSING.iter().any(|passing| passing.0 == code)
}

/// Whether `error` (or what caused it) is a failure that passes: a JetStream request
/// that timed out, or an error code of [`is_passing_code`]. No responders is not one:
/// a JetStream server always answers, so nobody answering means JetStream is off.
pub fn is_passing(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if passes(error) {
            return true;
        }
        next = error.source();
    }
    false
}

fn passes(error: &(dyn std::error::Error + 'static)) -> bool {
    let code = |e: &jetstream::Error| is_passing_code(e.error_code().0);
    if let Some(e) = error.downcast_ref::<RequestError>() {
        return e.kind() == RequestErrorKind::TimedOut;
    }
    if let Some(e) = error.downcast_ref::<jetstream::Error>() {
        return code(e);
    }
    if let Some(e) = error.downcast_ref::<GetStreamError>() {
        return matches!(e.kind(), GetStreamErrorKind::JetStream(j) if code(&j));
    }
    if let Some(e) = error.downcast_ref::<CreateStreamError>() {
        return match e.kind() {
            CreateStreamErrorKind::TimedOut => true,
            CreateStreamErrorKind::JetStream(j) => code(&j),
            _ => false,
        };
    }
    if let Some(e) = error.downcast_ref::<ConsumerError>() {
        return match e.kind() {
            ConsumerErrorKind::TimedOut => true,
            ConsumerErrorKind::JetStream(j) => code(&j),
            _ => false,
        };
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_elections_pass_and_configuration_does_not() {
        assert!(is_passing_code(10008));
        assert!(is_passing_code(10005));
        // Replicas > 1 on a single server; stream not found; JetStream not enabled.
        assert!(!is_passing_code(10074));
        assert!(!is_passing_code(10059));
        assert!(!is_passing_code(10076));
        let timed_out = RequestError::new(RequestErrorKind::TimedOut);
        assert!(is_passing(&timed_out));
        assert!(!is_passing(&RequestError::new(
            RequestErrorKind::NoResponders
        )));
        let wrapped = GetStreamError::with_source(GetStreamErrorKind::Request, timed_out);
        assert!(is_passing(&wrapped));
        assert!(is_passing(&CreateStreamError::new(
            CreateStreamErrorKind::TimedOut
        )));
        assert!(!is_passing(&CreateStreamError::new(
            CreateStreamErrorKind::JetStreamUnavailable
        )));
    }
}
