//! Reading dtaas headers from NATS messages.

use async_nats::HeaderMap;
use dtaas_schemas::names::header;

/// The `Content-Type` of a message, if it has one; feed it to
/// `dtaas_schemas::codec::Encoding::detect` together with the body.
///
/// A scan of the message's few headers: `HeaderMap::get` parses, validates and hashes
/// the name on every call, which showed up in the historian's per-message profile.
pub fn content_type(headers: Option<&HeaderMap>) -> Option<&str> {
    headers?
        .iter()
        .find(|(name, _)| AsRef::<str>::as_ref(*name).eq_ignore_ascii_case(header::CONTENT_TYPE))
        .and_then(|(_, values)| values.first())
        .map(|value| value.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_content_type_in_any_case() {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", "m1");
        assert_eq!(content_type(Some(&headers)), None);
        headers.insert("content-type", "application/msgpack");
        assert_eq!(content_type(Some(&headers)), Some("application/msgpack"));
        assert_eq!(content_type(None), None);
    }
}
