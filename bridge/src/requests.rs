//! Request endpoints: `cmd.send`, `cmd.status` and `bridge.stats`.

use std::sync::Arc;

use async_nats::jetstream;
use async_nats::HeaderMap;
use dtaas_runtime::service::{RequestInfo, ServiceError, WorkerService};
use dtaas_schemas::bridge::{self, BridgeStats, BridgeStatsRequest};
use dtaas_schemas::codec::Encoding;
use dtaas_schemas::command::{
    self, Command, CommandStatus, CommandStatusEvent, CommandStatusRequest, SendCommandReply,
    SendCommandRequest,
};
use dtaas_schemas::names::header;
use dtaas_schemas::time::now_ns;
use dtaas_schemas::{subject, ErrorCode, ErrorReply};

use crate::ledger::Ledger;
use crate::stats::Stats;

/// Limits `cmd.send` enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_payload: usize,
    pub max_ttl_ms: u64,
}

fn bad(message: impl Into<String>) -> ErrorReply {
    ErrorReply::new(ErrorCode::BadRequest, message.into())
}

/// Checks a send request and turns it into the command to store.
pub fn validate(
    req: SendCommandRequest,
    user: &str,
    limits: Limits,
) -> Result<Command, ErrorReply> {
    subject::validate_token("PT id", &req.pt).map_err(|e| bad(format!("field `pt`: {e}")))?;
    subject::validate_token("command", &req.command)
        .map_err(|e| bad(format!("field `command`: {e}")))?;
    if let Some(ttl) = req.ttl_ms {
        if ttl == 0 || ttl > limits.max_ttl_ms {
            return Err(bad(format!(
                "ttl_ms {ttl} must be between 1 and {} (max_command_ttl_ms)",
                limits.max_ttl_ms
            )));
        }
    }
    let size = serde_json::to_vec(&req.payload)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > limits.max_payload {
        return Err(bad(format!(
            "payload has {size} bytes; at most {} are allowed (max_command_payload)",
            limits.max_payload
        )));
    }
    Ok(Command {
        id: uuid::Uuid::now_v7().simple().to_string(),
        pt: req.pt,
        command: req.command,
        payload: req.payload,
        ttl_ms: req.ttl_ms,
        issued_at: now_ns(),
        issued_by: Some(user.to_owned()),
    })
}

/// Registers the endpoints on `svc`.
pub async fn register(
    svc: &mut WorkerService,
    js: jetstream::Context,
    ledger: Ledger,
    stats: Arc<Stats>,
    limits: Limits,
) -> Result<(), ServiceError> {
    let send_ledger = ledger.clone();
    svc.endpoint(
        command::SERVICE,
        command::VERB_SEND,
        move |info: RequestInfo, req: SendCommandRequest| {
            let (js, ledger) = (js.clone(), send_ledger.clone());
            async move {
                if let Some(dt) = &req.dt {
                    crate::dt_commands::check(&js, &info.user, dt, &req.pt, &req.command).await?;
                }
                let command = validate(req, &info.user, limits)?;
                let unavailable = |e: String| ErrorReply::new(ErrorCode::Unavailable, e);
                let subject = subject::command(&command.pt, &command.command)
                    .map_err(|e| bad(e.to_string()))?;
                let body = Encoding::MsgPack
                    .encode(&command)
                    .map_err(|e| ErrorReply::new(ErrorCode::Internal, e.to_string()))?;
                let mut headers = HeaderMap::new();
                headers.insert(header::CONTENT_TYPE, Encoding::MsgPack.content_type());
                headers.insert(header::MSG_ID, command.id.as_str());
                // Recorded before the command is stored: the downlink may take the
                // command at once, and it records `accepted` itself when the ledger
                // has nothing — a second `accepted` for core subscribers, and a late
                // one here could overwrite its `sent` in KV.
                ledger
                    .record(
                        &command.id,
                        &command.pt,
                        &command.command,
                        CommandStatus::Accepted,
                        None,
                    )
                    .await
                    .map_err(|e| unavailable(format!("cannot record the command status: {e:#}")))?;
                let stored =
                    async { js.publish_with_headers(subject, headers, body).await?.await }.await;
                if let Err(e) = stored {
                    let reason = format!("cannot store the command in DTAAS_CMD: {e}");
                    let failed = ledger.record(
                        &command.id,
                        &command.pt,
                        &command.command,
                        CommandStatus::Failed,
                        Some(reason.clone()),
                    );
                    if let Err(e) = failed.await {
                        tracing::warn!(id = %command.id, error = %e, "A command that could not be stored stays `accepted` in the ledger.");
                    }
                    return Err(unavailable(reason));
                }
                Ok(SendCommandReply { id: command.id })
            }
        },
    )
    .await?;
    svc.endpoint(
        command::SERVICE,
        command::VERB_STATUS,
        move |_info: RequestInfo, req: CommandStatusRequest| {
            let ledger = ledger.clone();
            async move {
                command::validate_id(&req.id).map_err(|e| bad(format!("field `id`: {e}")))?;
                match ledger.get(&req.id).await {
                    Ok(Some(event)) => Ok::<CommandStatusEvent, _>(event),
                    Ok(None) => Err(ErrorReply::new(
                        ErrorCode::NotFound,
                        format!("no command with id {:?}", req.id),
                    )),
                    Err(e) => Err(ErrorReply::new(
                        ErrorCode::Unavailable,
                        format!("cannot read the command ledger: {e:#}"),
                    )),
                }
            }
        },
    )
    .await?;
    svc.endpoint(
        bridge::SERVICE,
        bridge::VERB_STATS,
        move |_info: RequestInfo, _req: BridgeStatsRequest| {
            let snapshot = stats.snapshot();
            async move { Ok::<BridgeStats, ErrorReply>(snapshot) }
        },
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_payload: 10,
        max_ttl_ms: 1000,
    };

    fn req(pt: &str, ttl: Option<u64>, payload: serde_json::Value) -> SendCommandRequest {
        SendCommandRequest {
            dt: None,
            pt: pt.into(),
            command: "heat".into(),
            payload,
            ttl_ms: ttl,
        }
    }

    #[test]
    fn send_requests_are_validated() {
        let ok = validate(
            req("inc1", Some(500), serde_json::json!(1)),
            "alice",
            LIMITS,
        )
        .unwrap();
        assert_eq!(ok.issued_by.as_deref(), Some("alice"));
        assert!(command::validate_id(&ok.id).is_ok());
        let err = validate(req("in c1", None, serde_json::json!(1)), "a", LIMITS).unwrap_err();
        assert!(err.error.message.contains("PT id"));
        let err = validate(req("inc1", Some(5000), serde_json::json!(1)), "a", LIMITS).unwrap_err();
        assert!(err.error.message.contains("ttl_ms"));
        let err = validate(
            req("inc1", None, serde_json::json!("a long text")),
            "a",
            LIMITS,
        )
        .unwrap_err();
        assert!(err.error.message.contains("max_command_payload"));
    }
}
