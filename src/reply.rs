//! Replies of dtaas services as the CLI reads them: the expected type, or the service's
//! `{"error":{"code","message"}}` turned into an error that names the code.

use dtaas_schemas::ErrorReply;

/// Decodes a JSON or MessagePack reply; an error reply becomes an `Err`.
pub fn decode<T: serde::de::DeserializeOwned>(payload: &[u8]) -> anyhow::Result<T> {
    if let Ok(error) = dtaas_schemas::codec::decode::<ErrorReply>(None, payload) {
        let code = serde_json::to_value(error.error.code)?;
        anyhow::bail!(
            "{}: {}",
            code.as_str().unwrap_or("error"),
            error.error.message
        );
    }
    Ok(dtaas_schemas::codec::decode(None, payload)?)
}
