//! Reading dtaas headers from NATS messages.

use async_nats::HeaderMap;
use dtaas_schemas::names::header;

/// The `Content-Type` of a message, if it has one; feed it to
/// `dtaas_schemas::codec::Encoding::detect` together with the body.
pub fn content_type(headers: Option<&HeaderMap>) -> Option<&str> {
    headers
        .and_then(|h| h.get(header::CONTENT_TYPE))
        .map(|v| v.as_str())
}
