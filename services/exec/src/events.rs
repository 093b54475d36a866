//! Process events on `dtaas.v1.evt.proc.<dt>.<status>` (stream `DTAAS_EVT`).
//!
//! An event is published with a `Nats-Msg-Id` naming the node, run and status, and
//! retried a few times; one that still fails is logged (the process table, which
//! `list` answers, stays the truth).

use std::time::Duration;

use async_nats::jetstream;
use async_nats::HeaderMap;
use dtaas_runtime::backoff::Backoff;
use dtaas_schemas::exec::ProcessEvent;
use dtaas_schemas::names::header;

use crate::error::failed;

const ATTEMPTS: u32 = 5;
const WHAT: &str = "cannot publish a process event";

/// Publishes `event` and waits for JetStream's acknowledgement.
pub async fn publish(js: &jetstream::Context, event: &ProcessEvent) {
    let Ok(subject) = event.subject() else { return };
    let Ok(body) = serde_json::to_vec(event) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, "application/json");
    headers.insert(
        header::MSG_ID,
        format!(
            "proc.{}.{}.{}.{}.{}",
            event.node,
            event.pid,
            event.status.as_str(),
            event.restarts,
            event.at
        )
        .as_str(),
    );
    let mut backoff = Backoff::new();
    for attempt in 1..=ATTEMPTS {
        let sent = async {
            js.publish_with_headers(subject.clone(), headers.clone(), body.clone().into())
                .await
                .map_err(failed(WHAT))?
                .await
                .map_err(failed(WHAT))
        };
        match tokio::time::timeout(Duration::from_secs(5), sent).await {
            Ok(Ok(_)) => return,
            Ok(Err(error)) if attempt == ATTEMPTS => {
                tracing::error!(subject, %error, "Cannot publish a process event; it is lost.");
            }
            Err(_) if attempt == ATTEMPTS => {
                tracing::error!(
                    subject,
                    "Cannot publish a process event within 5s; it is lost."
                );
            }
            _ => {}
        }
        backoff.sleep().await;
    }
}
