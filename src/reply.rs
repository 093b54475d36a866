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

/// One JSON request to `dtaas.v1.<user>.<service>.<verb>`, its reply decoded; no reply
/// within `limit` is an error that says which worker should be running.
pub async fn request<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(
    client: &async_nats::Client,
    user: &str,
    service: &str,
    verb: &str,
    body: &Req,
    limit: std::time::Duration,
) -> anyhow::Result<Resp> {
    use anyhow::Context as _;
    let subject = dtaas_schemas::subject::request(user, service, verb)?;
    let payload = serde_json::to_vec(body)?;
    let message = tokio::time::timeout(limit, client.request(subject.clone(), payload.into()))
        .await
        .map_err(|_| anyhow::anyhow!("no reply on {subject} within {limit:?}"))?
        .with_context(|| format!("no reply on {subject}; is dtaas up running?"))?;
    decode(&message.payload).with_context(|| format!("{service}.{verb}"))
}
