//! Sending input that could not be processed to `dtaas.v1.dlq.<source>`.

use async_nats::jetstream::{self, context::PublishErrorKind};
use async_nats::HeaderMap;
use bytes::Bytes;
use dtaas_schemas::names::header;
use dtaas_schemas::subject::SubjectError;

/// A dead letter was not stored: keep the original unacknowledged and try again.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// The source is no valid subject token (a programming error of the caller).
    #[error("no DLQ subject for this source: {0}")]
    Subject(#[from] SubjectError),
    /// JetStream did not take it (no connection, no stream, timeout).
    #[error("cannot publish to the DLQ: {0}")]
    Publish(#[from] jetstream::context::PublishError),
}

/// Publishes `payload` to the DLQ of `source` with `reason` (and `context` headers such
/// as the original topic) and waits for JetStream's acknowledgement, so the caller may
/// then acknowledge the original. A payload too large for NATS is kept by its first
/// 64 KiB, with its full size in `Dtaas-Dlq-Truncated`.
pub async fn publish(
    js: &jetstream::Context,
    source: &str,
    payload: Bytes,
    reason: &str,
    context: &[(&'static str, &str)],
) -> Result<(), DlqError> {
    let subject = dtaas_schemas::subject::dlq(source)?;
    let mut headers = HeaderMap::new();
    headers.insert(header::DLQ_SOURCE, source);
    headers.insert(header::DLQ_REASON, single_line(reason).as_str());
    for (name, value) in context {
        headers.insert(*name, single_line(value).as_str());
    }
    let sent = js
        .publish_with_headers(subject.clone(), headers.clone(), payload.clone())
        .await;
    let ack = match sent {
        // Input larger than NATS takes (a big MQTT payload) is kept by its prefix:
        // retrying it whole would fail forever and block what comes after it.
        Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
            headers.insert(header::DLQ_TRUNCATED, payload.len().to_string().as_str());
            let kept = payload.slice(..payload.len().min(KEPT_WHEN_TOO_LARGE));
            js.publish_with_headers(subject, headers, kept).await?
        }
        sent => sent?,
    };
    ack.await?;
    Ok(())
}

/// How much of a payload too large for NATS the DLQ keeps.
const KEPT_WHEN_TOO_LARGE: usize = 64 * 1024;

/// Header values cannot hold line breaks; long reasons are cut.
fn single_line(text: &str) -> String {
    let mut line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(1024)
        .collect();
    line.truncate(line.trim_end().len());
    line
}

#[cfg(test)]
mod tests {
    #[test]
    fn reasons_become_one_line() {
        assert_eq!(super::single_line("bad\nvalue\r"), "bad value");
    }
}
