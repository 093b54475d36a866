//! Requests and replies of the asset library, `dtaas.v1.<user>.asset.<verb>`.
//!
//! `name` fields take an address (`owner/name@version`, `owner/name`, `name`; see
//! `asset_address`). Files travel in chunks: `upload` sends one chunk of a file's
//! content (named by its SHA-256), `put` then names the files of a version, `fetch`
//! reads one chunk. Chunk `data` is MessagePack binary, or base64 text in JSON.

use serde::{Deserialize, Serialize};

use crate::asset::{AssetFile, AssetKind, AssetMeta, Interface, Run};

/// The service name in request subjects: `dtaas.v1.<user>.asset.<verb>`.
pub const SERVICE: &str = "asset";
/// Create an asset or add a version.
pub const VERB_PUT: &str = "put";
/// Upload one chunk of a file.
pub const VERB_UPLOAD: &str = "upload";
/// Metadata and file list of one version.
pub const VERB_GET: &str = "get";
/// One chunk of a file's content.
pub const VERB_FETCH: &str = "fetch";
/// Search the visible assets.
pub const VERB_LIST: &str = "list";
/// Share all versions with every user.
pub const VERB_SHARE: &str = "share";
/// Make all versions private again.
pub const VERB_UNSHARE: &str = "unshare";
/// Delete one version, or all of them.
pub const VERB_DELETE: &str = "delete";

/// The default and largest chunk of file content in one message: half of
/// nats-server's default 1 MiB `max_payload`, which leaves room for base64 in JSON.
pub const CHUNK_SIZE: u64 = 512 * 1024;

/// `asset.put`: a new version of the caller's asset `name` (a bare name). The files
/// must have been uploaded (`asset.upload`) first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutRequest {
    pub name: String,
    /// The version to create: absent means the next one; an existing version with
    /// the same content is answered as is, with other content it is a `conflict`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    pub kind: AssetKind,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub files: Vec<AssetFile>,
    #[serde(default, skip_serializing_if = "Interface::is_empty")]
    pub interface: Interface,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<Run>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_name: Option<String>,
}

/// Reply to `asset.put`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PutReply {
    pub asset: AssetMeta,
    /// False when the content equalled an existing version, which is returned.
    pub created: bool,
}

/// `asset.upload`: bytes `offset..offset+data.len()` of the file whose whole content
/// has `sha256` and `size`. Chunks go in order from offset 0; the last one completes
/// the file, after its checksum was checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadRequest {
    pub sha256: String,
    pub size: u64,
    #[serde(default)]
    pub offset: u64,
    #[serde(default)]
    pub data: Chunk,
}

/// Reply to `asset.upload`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadReply {
    /// Bytes the library holds of this file; send the next chunk from here.
    pub received: u64,
    /// The file is stored (now, or it was already): no more chunks needed.
    pub complete: bool,
}

/// `asset.get`, `asset.share`, `asset.unshare`, `asset.delete`: `{"name": "<address>"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameRequest {
    pub name: String,
}

/// Reply to `asset.get`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GetReply {
    pub asset: AssetMeta,
    /// Every version of the asset, ascending.
    pub versions: Vec<u64>,
}

/// `asset.fetch`: up to `length` bytes (at most [`CHUNK_SIZE`]) of file `path` of the
/// asset `name`, from `offset`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchRequest {
    pub name: String,
    pub path: String,
    #[serde(default)]
    pub offset: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
}

/// Reply to `asset.fetch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FetchReply {
    /// The file, with its whole size, SHA-256 and mode, so the caller can check it.
    pub file: AssetFile,
    pub offset: u64,
    pub data: Chunk,
    /// This chunk ends the file.
    pub eof: bool,
}

/// `asset.list`: every filter is optional; without `owner`, the caller's own assets
/// and everything shared with them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<AssetKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<bool>,
    /// Case-insensitive substring of the name or description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// Reply to `asset.list`, sorted by owner then name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListReply {
    pub assets: Vec<AssetSummary>,
}

/// One asset in a list: its latest version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssetSummary {
    pub name: String,
    pub owner: String,
    pub kind: AssetKind,
    /// The latest version.
    pub version: u64,
    pub shared: bool,
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// Reply to `asset.share` and `asset.unshare`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShareReply {
    pub asset: AssetSummary,
}

/// Reply to `asset.delete`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeleteReply {
    /// The versions deleted, `owner/name@version`.
    pub deleted: Vec<String>,
}

/// Bytes of file content: MessagePack binary, or base64 text in JSON (by hand).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Chunk(pub Vec<u8>);

impl std::fmt::Debug for Chunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Chunk({} bytes)", self.0.len())
    }
}

impl Serialize for Chunk {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine;
        if s.is_human_readable() {
            s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Chunk {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Chunk;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes, or a base64 string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Chunk, E> {
                Ok(Chunk(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Chunk, E> {
                Ok(Chunk(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Chunk, E> {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD
                    .decode(v)
                    .map(Chunk)
                    .map_err(|e| E::custom(format!("data is not valid base64: {e}")))
            }
        }
        if d.is_human_readable() {
            d.deserialize_str(Visitor)
        } else {
            d.deserialize_bytes(Visitor)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, Encoding};

    #[test]
    fn chunks_are_binary_in_msgpack_and_base64_in_json() {
        let req = UploadRequest {
            sha256: "ab".into(),
            size: 3,
            offset: 0,
            data: Chunk(vec![0, 1, 255]),
        };
        let json = Encoding::Json.encode(&req).unwrap();
        assert!(std::str::from_utf8(&json)
            .unwrap()
            .contains(r#""data":"AAH/""#));
        let packed = Encoding::MsgPack.encode(&req).unwrap();
        assert!(packed.len() < json.len());
        for body in [json, packed] {
            assert_eq!(decode::<UploadRequest>(None, &body).unwrap(), req);
        }
        let err = decode::<UploadRequest>(None, br#"{"sha256":"a","size":1,"data":"!!"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("base64"), "{err}");
    }

    #[test]
    fn requests_by_hand() {
        let put: PutRequest = decode(
            None,
            br#"{"name":"doubler","kind":"function","files":[{"path":"d.py","size":1,"sha256":"ab"}]}"#,
        )
        .unwrap();
        assert_eq!(put.files[0].mode, 0o644);
        let list: ListRequest = decode(None, br#"{"kind":"model","shared":true}"#).unwrap();
        assert_eq!(list.kind, Some(AssetKind::Model));
        assert!(decode::<NameRequest>(None, br#"{"nmae":"x"}"#)
            .unwrap_err()
            .to_string()
            .contains("nmae"));
    }
}
