//! The error reply every service sends: `{"error":{"code":"…","message":"…"}}`.

use serde::{Deserialize, Serialize};

/// What kind of failure an error reply reports; the code a program can branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request body or subject is malformed; the message names the field.
    BadRequest,
    /// The named entity does not exist.
    NotFound,
    /// The entity exists or the state forbids the change.
    Conflict,
    /// The caller may not do this.
    Forbidden,
    /// A store or peer is down; retry later.
    Unavailable,
    /// A bug or an unexpected failure.
    Internal,
}

impl ErrorCode {
    /// The HTTP-like status that goes into the `Nats-Service-Error-Code` header.
    pub fn status(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::Conflict => 409,
            Self::Internal => 500,
            Self::Unavailable => 503,
        }
    }
}

/// The body of an error reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

/// An error reply: `{"error":{"code":"bad_request","message":"field `pt`: …"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub error: ErrorBody,
}

impl ErrorReply {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: ErrorBody {
                code,
                message: message.into(),
            },
        }
    }
}

impl std::fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.error.code, self.error.message)
    }
}

impl std::error::Error for ErrorReply {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_is_the_documented_one() {
        let reply = ErrorReply::new(ErrorCode::NotFound, "no DT named incubator-1");
        assert_eq!(
            serde_json::to_string(&reply).unwrap(),
            r#"{"error":{"code":"not_found","message":"no DT named incubator-1"}}"#
        );
    }
}
