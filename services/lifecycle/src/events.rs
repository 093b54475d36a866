//! Lifecycle events `dtaas.v1.evt.dt.<dt>.<state>` into `DTAAS_EVT` (the graph worker
//! builds DTs, assets, PTs, children and transitions from them), copied to the DT's
//! `C_e` event sinks.

use async_nats::jetstream;
use async_nats::HeaderMap;
use dtaas_schemas::dt_config::{DtConfig, DtState};
use dtaas_schemas::lifecycle::{LifecycleEvent, LifecycleState};
use dtaas_schemas::names::header;
use dtaas_schemas::time::now_ns;

use crate::error::{Error, Result};
use crate::registry::Registry;

/// A transition of `dt` to `to`, caused by `user`.
pub fn event(
    dt: &DtState,
    from: Option<LifecycleState>,
    to: LifecycleState,
    user: &str,
) -> LifecycleEvent {
    LifecycleEvent {
        dt: dt.id.clone(),
        from,
        to,
        at: now_ns(),
        user: user.to_owned(),
        owner: Some(dt.owner.clone()),
        config: None,
        config_version: Some(dt.config_version),
        parent: dt.parent.clone(),
        fork_of: dt.fork_of.clone(),
        detail: None,
    }
}

/// `config` with every asset as the address it resolved to (what the graph records).
pub fn resolved_config(dt: &DtState) -> DtConfig {
    let mut config = dt.config.clone();
    for (use_, address) in config.assets.iter_mut().zip(&dt.resolved_assets) {
        use_.asset = address.clone();
    }
    // Children carry their own resolved assets in their own events.
    config.children.clear();
    config
}

/// `config` with every asset as the address it resolved to, children included (as
/// the registry has them now): a parent's configuration event then names all its
/// children, so the graph keeps the edges to children an evolution added.
pub async fn resolved_tree(registry: &Registry, dt: &DtState) -> Result<DtConfig> {
    let mut config = resolved_config(dt);
    for child in &dt.config.children {
        if let Some(entry) = registry.get(&child.id).await? {
            config
                .children
                .push(Box::pin(resolved_tree(registry, &entry.dt)).await?);
        }
    }
    Ok(config)
}

/// Publishes `event` and waits for JetStream's acknowledgement; then copies it to
/// the DT's event sinks (core NATS, best effort).
pub async fn publish(
    js: &jetstream::Context,
    event: &LifecycleEvent,
    sinks: &[String],
) -> Result<()> {
    let subject = event.subject()?;
    let body = bytes::Bytes::from(
        serde_json::to_vec(event)
            .map_err(|e| Error::Internal(format!("cannot encode event: {e}")))?,
    );
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, "application/json");
    headers.insert(
        header::MSG_ID,
        format!("{}.{}.{}", event.dt, event.to.as_str(), event.at).as_str(),
    );
    let unavailable = |e: &dyn std::fmt::Display| {
        Error::unavailable("cannot publish a lifecycle event to DTAAS_EVT", e)
    };
    js.publish_with_headers(subject, headers, body.clone())
        .await
        .map_err(|e| unavailable(&e))?
        .await
        .map_err(|e| unavailable(&e))?;
    for sink in sinks {
        // DTs registered before sinks were validated may name one that is not theirs.
        if let Err(why) = crate::validate::event_sink(sink) {
            tracing::warn!(dt = %event.dt, sink = %sink, %why, "Not copying a lifecycle event to an event sink it may not use.");
            continue;
        }
        if let Err(e) = js_client(js).publish(sink.clone(), body.clone()).await {
            tracing::warn!(sink = %sink, error = %e, "Cannot copy a lifecycle event to an event sink.");
        }
    }
    Ok(())
}

fn js_client(js: &jetstream::Context) -> async_nats::Client {
    js.client()
}
