//! Sending input that could not be processed to `dtaas.v1.dlq.<source>`.

use async_nats::jetstream;
use async_nats::HeaderMap;
use bytes::Bytes;
use dtaas_schemas::names::header;

/// Publishes `payload` to the DLQ of `source` with `reason` (and `context` headers such
/// as the original topic) and waits for JetStream's acknowledgement, so the caller may
/// then acknowledge the original.
pub async fn publish(
    js: &jetstream::Context,
    source: &str,
    payload: Bytes,
    reason: &str,
    context: &[(&'static str, &str)],
) -> anyhow::Result<()> {
    let subject = dtaas_schemas::subject::dlq(source)?;
    let mut headers = HeaderMap::new();
    headers.insert(header::DLQ_SOURCE, source);
    headers.insert(header::DLQ_REASON, single_line(reason).as_str());
    for (name, value) in context {
        headers.insert(*name, single_line(value).as_str());
    }
    js.publish_with_headers(subject, headers, payload)
        .await?
        .await?;
    Ok(())
}

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
