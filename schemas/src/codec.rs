//! MessagePack and JSON encoding, chosen by the `Content-Type` header or by sniffing.
//!
//! MessagePack with named fields is the default on hot paths; JSON is accepted
//! everywhere so that people can talk to dtaas from the `nats` CLI.

use bytes::Bytes;
use std::marker::PhantomData;

use serde::de::{DeserializeOwned, DeserializeSeed};
use serde::Serialize;

/// `Content-Type` of MessagePack bodies.
pub const CONTENT_TYPE_MSGPACK: &str = "application/msgpack";
/// `Content-Type` of JSON bodies.
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// The encoding of a message body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    #[default]
    MsgPack,
    Json,
}

/// A body could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("the message body is empty; send a JSON object or MessagePack map")]
    Empty,
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid MessagePack: {0}")]
    MsgPackDecode(#[from] rmp_serde::decode::Error),
    #[error("cannot encode MessagePack: {0}")]
    MsgPackEncode(#[from] rmp_serde::encode::Error),
    #[error("unsupported Content-Type {0:?}; use application/json or application/msgpack")]
    ContentType(String),
}

impl Encoding {
    /// The encoding a `Content-Type` header names; `None` when the header is absent.
    pub fn from_content_type(value: Option<&str>) -> Result<Option<Self>, CodecError> {
        let Some(value) = value else { return Ok(None) };
        let mime = value.split(';').next().unwrap_or("").trim();
        match mime.to_ascii_lowercase().as_str() {
            "" => Ok(None),
            "application/json" | "text/json" => Ok(Some(Self::Json)),
            "application/msgpack" | "application/x-msgpack" | "application/vnd.msgpack" => {
                Ok(Some(Self::MsgPack))
            }
            _ => Err(CodecError::ContentType(value.to_owned())),
        }
    }

    /// Guesses the encoding from the first byte: JSON text starts with printable ASCII
    /// or whitespace; a MessagePack map or array starts at 0x80 or above.
    pub fn sniff(body: &[u8]) -> Self {
        match body.first() {
            Some(&b) if b >= 0x80 => Self::MsgPack,
            _ => Self::Json,
        }
    }

    /// The encoding of a message: the header when present, else sniffed.
    pub fn detect(content_type: Option<&str>, body: &[u8]) -> Result<Self, CodecError> {
        Ok(Self::from_content_type(content_type)?.unwrap_or_else(|| Self::sniff(body)))
    }

    /// The `Content-Type` value of this encoding.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::MsgPack => CONTENT_TYPE_MSGPACK,
            Self::Json => CONTENT_TYPE_JSON,
        }
    }

    /// Decodes `body` in this encoding.
    pub fn decode<T: DeserializeOwned>(self, body: &[u8]) -> Result<T, CodecError> {
        self.decode_seed(body, PhantomData::<T>)
    }

    /// Decodes `body` in this encoding through `seed`, which may decode into a value it
    /// already holds (a batch's vector, say) instead of building a new one.
    pub fn decode_seed<'de, S: DeserializeSeed<'de>>(
        self,
        body: &'de [u8],
        seed: S,
    ) -> Result<S::Value, CodecError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(CodecError::Empty);
        }
        match self {
            Self::Json => {
                let mut deserializer = serde_json::Deserializer::from_slice(body);
                let value = seed.deserialize(&mut deserializer)?;
                deserializer.end()?;
                Ok(value)
            }
            Self::MsgPack => {
                let mut deserializer = rmp_serde::Deserializer::from_read_ref(body);
                deserializer.set_max_depth(MAX_MSGPACK_DEPTH);
                Ok(seed.deserialize(&mut deserializer)?)
            }
        }
    }

    /// Encodes `value` in this encoding (MessagePack with named fields).
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Bytes, CodecError> {
        let mut out = Vec::with_capacity(128);
        self.encode_into(value, &mut out)?;
        Ok(out.into())
    }

    /// Encodes `value` at the end of `out`, so hot paths can reuse a buffer.
    pub fn encode_into<T: Serialize + ?Sized>(
        self,
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        match self {
            Self::Json => serde_json::to_writer(out, value)?,
            Self::MsgPack => {
                value.serialize(&mut rmp_serde::Serializer::new(out).with_struct_map())?
            }
        }
        Ok(())
    }
}

/// The deepest nesting of MessagePack arrays and maps decoded. rmp-serde allows 1,024
/// levels, and decoding (and dropping) a value that deep overflows a task's stack, which
/// kills the whole process: a few kilobytes of `0x91` did. JSON has serde_json's own
/// limit (128).
pub const MAX_MSGPACK_DEPTH: usize = 64;

/// Decodes a message body, choosing the encoding from `content_type` or the body.
pub fn decode<T: DeserializeOwned>(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<T, CodecError> {
    Encoding::detect(content_type, body)?.decode(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Probe {
        pt: String,
        value: f64,
    }

    #[test]
    fn both_encodings_round_trip_and_are_sniffed() {
        let probe = Probe {
            pt: "inc1".into(),
            value: 21.5,
        };
        for encoding in [Encoding::Json, Encoding::MsgPack] {
            let body = encoding.encode(&probe).unwrap();
            assert_eq!(Encoding::sniff(&body), encoding);
            assert_eq!(decode::<Probe>(None, &body).unwrap(), probe);
            let ct = Some(encoding.content_type());
            assert_eq!(decode::<Probe>(ct, &body).unwrap(), probe);
        }
    }

    #[test]
    fn msgpack_uses_named_fields() {
        let body = Encoding::MsgPack
            .encode(&Probe {
                pt: "a".into(),
                value: 1.0,
            })
            .unwrap();
        let generic: std::collections::BTreeMap<String, serde_json::Value> =
            rmp_serde::from_slice(&body).unwrap();
        assert!(generic.contains_key("pt"));
    }

    #[test]
    fn content_type_parameters_and_errors() {
        assert_eq!(
            Encoding::from_content_type(Some("application/json; charset=utf-8")).unwrap(),
            Some(Encoding::Json)
        );
        let err = Encoding::from_content_type(Some("text/xml")).unwrap_err();
        assert!(err.to_string().contains("text/xml"));
        assert!(matches!(
            decode::<Probe>(None, b"  "),
            Err(CodecError::Empty)
        ));
        let err = decode::<Probe>(None, br#"{"pt":"inc1"}"#).unwrap_err();
        assert!(err.to_string().contains("missing field `value`"), "{err}");
    }

    #[test]
    fn deep_msgpack_is_refused_not_a_stack_overflow() {
        let mut body = vec![0x91u8; 100_000];
        body.push(0x01);
        let err = Encoding::MsgPack
            .decode::<serde_json::Value>(&body)
            .unwrap_err();
        assert!(err.to_string().contains("depth"), "{err}");
    }
}
