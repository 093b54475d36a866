//! MessagePack payloads: decoded into the same value tree as JSON.

use dtaas_schemas::Encoding;

use super::error::PayloadError;

/// Decodes a MessagePack payload into a JSON value, at most `MAX_MSGPACK_DEPTH` levels
/// deep (deeper ones would overflow the stack).
pub fn parse(payload: &[u8]) -> Result<serde_json::Value, PayloadError> {
    Encoding::MsgPack
        .decode(payload)
        .map_err(PayloadError::Msgpack)
}

/// True when the first byte starts a MessagePack map (fixmap, map16, map32) or array
/// (fixarray, array16, array32): bytes that never start UTF-8 text.
pub fn looks_like_map_or_array(payload: &[u8]) -> bool {
    matches!(
        payload.first(),
        Some(0x80..=0x9f | 0xdc | 0xdd | 0xde | 0xdf)
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn map_round_trip() {
        let body = rmp_serde::to_vec_named(&serde_json::json!({"t": 1.5, "n": {"a": 2}})).unwrap();
        assert!(super::looks_like_map_or_array(&body));
        let array = rmp_serde::to_vec_named(&serde_json::json!([{"t": 1}])).unwrap();
        assert!(super::looks_like_map_or_array(&array));
        assert!(!super::looks_like_map_or_array(b"{\"t\":1}"));
        assert_eq!(super::parse(&body).unwrap()["n"]["a"], 2);
        assert!(super::parse(&[0xc1]).is_err());
        let mut deep = vec![0x91u8; 10_000];
        deep.push(0x01);
        assert!(super::parse(&deep)
            .unwrap_err()
            .to_string()
            .contains("depth"));
    }
}
