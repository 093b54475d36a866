//! Commands for PTs, their status events, the command requests and the command-id rule.

use serde::{Deserialize, Serialize};

use crate::excerpt::excerpt;

/// The service name in request subjects: `dtaas.v1.<user>.cmd.<verb>`.
pub const SERVICE: &str = "cmd";
/// Verb of the request that sends a command.
pub const VERB_SEND: &str = "send";
/// Verb of the request that reads a command's status.
pub const VERB_STATUS: &str = "status";

/// Longest command id, in bytes.
pub const MAX_ID_BYTES: usize = 128;

/// A command id that breaks the rule of [`validate_id`]; `id` is an excerpt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandIdError {
    #[error("command id {id} must have 1 to 128 characters")]
    Length { id: String },
    #[error("command id {id} may only contain letters, digits, '-' and '_'")]
    Characters { id: String },
}

/// Command ids become subject tokens (`dtaas.v1.evt.cmd.<id>.<status>`) and KV keys:
/// 1 to 128 ASCII letters, digits, `-` and `_`.
pub fn validate_id(id: &str) -> Result<(), CommandIdError> {
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(CommandIdError::Length { id: excerpt(id) });
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(CommandIdError::Characters { id: excerpt(id) });
    }
    Ok(())
}

/// A command on its way to a PT, as stored in `DTAAS_CMD`.
///
/// A plain publish to `dtaas.v1.cmd.<pt>.<command>` may carry just
/// `{"payload":{"on":true},"ttl_ms":5000}`; the bridge fills in the id and the rest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// Unique id; generated (UUID v7) when absent.
    #[serde(default)]
    pub id: String,
    /// Taken from the subject when absent.
    #[serde(default)]
    pub pt: String,
    /// Taken from the subject when absent.
    #[serde(default)]
    pub command: String,
    /// What the device receives; a string is sent as-is, anything else as JSON.
    #[serde(default)]
    pub payload: serde_json::Value,
    /// Time to live in milliseconds from `issued_at`; none means no expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// Nanoseconds since the Unix epoch; the publish time when absent.
    #[serde(default)]
    pub issued_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_by: Option<String>,
}

impl Command {
    /// When the command expires (ns since the epoch), if it has a TTL.
    pub fn expires_at(&self) -> Option<i64> {
        self.ttl_ms.map(|ttl| {
            self.issued_at
                .saturating_add((ttl as i64).saturating_mul(1_000_000))
        })
    }
}

/// Where a command is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandStatus {
    /// Taken into `DTAAS_CMD`.
    Accepted,
    /// Acknowledged by the MQTT broker.
    Sent,
    /// The device replied on `dtaas/pt/<pt>/cmd/<command>/ack`.
    Acknowledged,
    /// Its TTL passed before it could be sent.
    Expired,
    /// It could not be sent; the reason says why.
    Failed,
}

impl CommandStatus {
    /// The last token of the status event subject.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Sent => "sent",
            Self::Acknowledged => "acknowledged",
            Self::Expired => "expired",
            Self::Failed => "failed",
        }
    }

    /// No later status follows.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Acknowledged | Self::Expired | Self::Failed)
    }
}

/// The event kind of command status events: `dtaas.v1.evt.cmd.<id>.<status>`.
pub const EVENT_KIND: &str = "cmd";

/// A status change of a command, published on `dtaas.v1.evt.cmd.<id>.<status>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandStatusEvent {
    pub id: String,
    pub pt: String,
    pub command: String,
    pub status: CommandStatus,
    /// Nanoseconds since the Unix epoch.
    pub at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl CommandStatusEvent {
    pub fn subject(&self) -> Result<String, crate::SubjectError> {
        crate::subject::event(EVENT_KIND, &self.id, self.status.as_str())
    }
}

/// Request `dtaas.v1.<user>.cmd.send`:
/// `{"pt":"inc1","command":"heater","payload":{"on":true},"ttl_ms":5000}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendCommandRequest {
    pub pt: String,
    pub command: String,
    #[serde(default)]
    pub payload: serde_json::Value,
    #[serde(default)]
    pub ttl_ms: Option<u64>,
    /// The DT on whose behalf the command is sent (a DT process passes its
    /// `DTAAS_DT`): then only the commands that DT's `C_pt` lists for the PT pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dt: Option<String>,
}

/// Reply to `cmd.send`: `{"id":"…"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendCommandReply {
    pub id: String,
}

/// Request `dtaas.v1.<user>.cmd.status`: `{"id":"…"}`; the reply is a `CommandStatusEvent`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandStatusRequest {
    pub id: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, Encoding};

    #[test]
    fn plain_publish_body_is_enough() {
        let cmd: Command = decode(None, br#"{"payload":{"on":true},"ttl_ms":5000}"#).unwrap();
        assert!(cmd.id.is_empty());
        assert_eq!(cmd.ttl_ms, Some(5000));
        let cmd = Command {
            issued_at: 1_000_000_000,
            ..cmd
        };
        assert_eq!(cmd.expires_at(), Some(6_000_000_000));
    }

    #[test]
    fn status_event_round_trip_and_subject() {
        let event = CommandStatusEvent {
            id: "0193a".into(),
            pt: "inc1".into(),
            command: "heater".into(),
            status: CommandStatus::Acknowledged,
            at: 5,
            reason: None,
        };
        for encoding in [Encoding::Json, Encoding::MsgPack] {
            let body = encoding.encode(&event).unwrap();
            assert_eq!(decode::<CommandStatusEvent>(None, &body).unwrap(), event);
        }
        assert_eq!(
            event.subject().unwrap(),
            "dtaas.v1.evt.cmd.0193a.acknowledged"
        );
        let json = serde_json::to_string(&event).unwrap();
        assert!(json.contains(r#""status":"acknowledged""#));
    }

    #[test]
    fn command_ids_follow_the_rule() {
        assert!(validate_id("0193a-b_c").is_ok());
        assert!(matches!(
            validate_id(""),
            Err(CommandIdError::Length { .. })
        ));
        assert!(matches!(
            validate_id(&"a".repeat(129)),
            Err(CommandIdError::Length { .. })
        ));
        let err = validate_id("a.b").unwrap_err();
        assert!(matches!(err, CommandIdError::Characters { .. }));
        assert!(err.to_string().contains("command id \"a.b\""), "{err}");
    }

    #[test]
    fn send_request_rejects_unknown_fields() {
        let ok: SendCommandRequest = decode(
            None,
            br#"{"pt":"inc1","command":"heater","payload":1,"ttl_ms":2000}"#,
        )
        .unwrap();
        assert_eq!(ok.ttl_ms, Some(2000));
        let err = decode::<SendCommandRequest>(None, br#"{"pt":"inc1","command":"h","tll":1}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("tll"), "{err}");
    }
}
