//! Requests to the other workers: the asset library (`asset.get`, on behalf of the
//! DT's user), exec nodes (`dtaas.v1.exec.<node>.<verb>`) and accounting (`usage.get`).

use std::time::Duration;

use async_nats::{Client, RequestErrorKind};
use dtaas_runtime::kv_keys;
use dtaas_schemas::asset_api::{self, GetReply, NameRequest};
use dtaas_schemas::codec::decode;
use dtaas_schemas::exec::{self, NodeInfo};
use dtaas_schemas::names::KV_NODES;
use dtaas_schemas::{subject, ErrorReply};
use serde::{de::DeserializeOwned, Serialize};

use crate::error::{Error, Result};

/// Sends `request` as JSON to `subject` and decodes the reply or its error reply.
/// `who` names the peer in errors (`exec node n1`).
pub async fn ask<Req: Serialize, Resp: DeserializeOwned>(
    nats: &Client,
    subject: String,
    request: &Req,
    timeout: Duration,
    who: &str,
) -> Result<Resp> {
    let body = serde_json::to_vec(request)
        .map_err(|e| Error::Internal(format!("cannot encode a request to {who}: {e}")))?;
    let reply = tokio::time::timeout(timeout, nats.request(subject.clone(), body.into()))
        .await
        .map_err(|_| Error::Unavailable(format!("{who} did not answer within {timeout:?}")))?
        .map_err(|e| match e.kind() {
            RequestErrorKind::NoResponders => {
                Error::Unavailable(format!("{who} is not running (no responders on {subject})"))
            }
            _ => Error::unavailable(format!("request to {who}"), e),
        })?;
    if let Ok(error) = decode::<ErrorReply>(None, &reply.payload) {
        return Err(error.into());
    }
    decode(None, &reply.payload)
        .map_err(|e| Error::Internal(format!("the reply of {who} is unreadable: {e}")))
}

/// `asset.get` of `address` as `user` sees it; `Err` says why it is not usable.
pub async fn asset_get(
    nats: &Client,
    user: &str,
    address: &str,
    timeout: Duration,
) -> Result<Result<GetReply>> {
    let subject = subject::request(user, asset_api::SERVICE, asset_api::VERB_GET)?;
    let request = NameRequest {
        name: address.to_owned(),
    };
    match ask(
        nats,
        subject,
        &request,
        timeout,
        "the asset library (dtaas assets)",
    )
    .await
    {
        Ok(reply) => Ok(Ok(reply)),
        Err(Error::Unavailable(e) | Error::Internal(e)) => Err(Error::Unavailable(e)),
        Err(e) => Ok(Err(e)),
    }
}

/// Every registered exec node (stale ones included; callers decide).
pub async fn nodes(js: &async_nats::jetstream::Context) -> Result<Vec<NodeInfo>> {
    let unavailable = |e: &dyn std::fmt::Display| {
        Error::unavailable(
            format!("the node registry (KV {KV_NODES}) does not answer"),
            e,
        )
    };
    let kv = js
        .get_key_value(KV_NODES)
        .await
        .map_err(|e| unavailable(&e))?;
    let keys = kv_keys::keys(&kv).await.map_err(|e| unavailable(&e))?;
    let mut nodes = Vec::with_capacity(keys.len());
    for key in keys {
        if let Some(value) = kv.get(&key).await.map_err(|e| unavailable(&e))? {
            match decode::<NodeInfo>(None, &value) {
                Ok(node) => nodes.push(node),
                Err(e) => {
                    tracing::warn!(node = %key, error = %e, "Skipping an unreadable node entry.")
                }
            }
        }
    }
    Ok(nodes)
}

/// A request to exec node `node`.
pub async fn exec_node<Req: Serialize, Resp: DeserializeOwned>(
    nats: &Client,
    node: &str,
    verb: &str,
    request: &Req,
    timeout: Duration,
) -> Result<Resp> {
    let subject = subject::exec_node(node, verb)?;
    ask(
        nats,
        subject,
        request,
        timeout,
        &format!("exec node {node}"),
    )
    .await
}

/// `usage.get` of the last 24 hours as `user`.
pub async fn usage_today(nats: &Client, user: &str, timeout: Duration) -> Result<exec::UsageReply> {
    let subject = subject::request(user, exec::USAGE_SERVICE, exec::USAGE_VERB_GET)?;
    let request = exec::UsageRequest {
        from: Some("-24h".into()),
        ..Default::default()
    };
    ask(
        nats,
        subject,
        &request,
        timeout,
        "accounting (dtaas exec, usage.get)",
    )
    .await
}
