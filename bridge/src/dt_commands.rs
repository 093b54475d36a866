//! A command sent on behalf of a DT (`cmd.send` with `dt`) passes only when that DT's
//! `C_pt` lists the command for the PT: the DT's registry entry (KV `dtaas-dts`,
//! written by the lifecycle worker) is read, and a refusal is an error reply naming
//! what the DT may send, never a silent drop.

use async_nats::jetstream;
use dtaas_schemas::dt_config::DtState;
use dtaas_schemas::names::KV_DTS;
use dtaas_schemas::{codec, subject, ErrorCode, ErrorReply};

/// Whether DT `dt` of `user` may send `command` to `pt`.
pub async fn check(
    js: &jetstream::Context,
    user: &str,
    dt: &str,
    pt: &str,
    command: &str,
) -> Result<(), ErrorReply> {
    subject::validate_token("DT id", dt)
        .map_err(|e| ErrorReply::new(ErrorCode::BadRequest, format!("field `dt`: {e}")))?;
    let unavailable =
        |e: String| ErrorReply::new(ErrorCode::Unavailable, format!("cannot read DT {dt}: {e}"));
    let not_found = || ErrorReply::new(ErrorCode::NotFound, format!("no DT named {dt:?}"));
    // No registry yet means no DT was ever created.
    let Ok(kv) = js.get_key_value(KV_DTS).await else {
        return Err(not_found());
    };
    let entry = kv.get(dt).await.map_err(|e| unavailable(e.to_string()))?;
    let Some(value) = entry else {
        return Err(not_found());
    };
    let state: DtState = codec::decode(None, &value).map_err(|e| unavailable(e.to_string()))?;
    // Another user's DT is not found, as everywhere on the platform.
    if state.owner != user {
        return Err(not_found());
    }
    allowed(&state, pt, command)
}

/// Whether `state`'s `C_pt` lets it send `command` to `pt`.
pub fn allowed(state: &DtState, pt: &str, command: &str) -> Result<(), ErrorReply> {
    let link = state.config.pt.iter().find(|p| p.id == pt);
    if link.is_some_and(|l| l.commands.iter().any(|c| c == command)) {
        return Ok(());
    }
    let may = match link {
        Some(l) => format!("its C_pt allows {:?} for PT {pt}", l.commands),
        None => format!("PT {pt} is not in its C_pt"),
    };
    Err(ErrorReply::new(
        ErrorCode::Forbidden,
        format!(
            "DT {} may not send command {command:?} to PT {pt}: {may}",
            state.id
        ),
    ))
}
