//! Asset metadata: the reusable parts (data, models, functions, tools, DTs) of twins.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What an asset is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssetKind {
    Data,
    Model,
    Function,
    Tool,
    /// Another DT, reused as a part.
    Dt,
}

impl AssetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Data => "data",
            Self::Model => "model",
            Self::Function => "function",
            Self::Tool => "tool",
            Self::Dt => "dt",
        }
    }
}

/// A pinned reference to one version of an asset.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetRef {
    pub id: String,
    pub version: String,
}

/// The metadata of one version of an asset (KV `dtaas-assets`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetMeta {
    pub id: String,
    pub version: String,
    pub kind: AssetKind,
    pub owner: String,
    /// Visible to every user, not only the owner.
    #[serde(default)]
    pub shared: bool,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Nanoseconds since the Unix epoch.
    #[serde(default)]
    pub created_at: i64,
    /// Size of the content in the object store, when there is content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// SHA-256 of the content, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, Encoding};

    #[test]
    fn asset_meta_round_trip() {
        let typed = r#"{"id":"pid-controller","version":"1.2.0","kind":"function",
            "owner":"alice","shared":true,"tags":["control"]}"#;
        let meta: AssetMeta = decode(None, typed.as_bytes()).unwrap();
        assert_eq!(meta.kind, AssetKind::Function);
        let body = Encoding::MsgPack.encode(&meta).unwrap();
        assert_eq!(decode::<AssetMeta>(None, &body).unwrap(), meta);
        let err = decode::<AssetMeta>(
            None,
            br#"{"id":"x","version":"1","kind":"gadget","owner":"a"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("gadget"), "{err}");
    }
}
