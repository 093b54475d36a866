//! Asset metadata: the reusable parts (data, models, functions, tools, DTs) of twins.
//!
//! One `AssetMeta` describes one immutable version of an asset (KV `dtaas-assets`,
//! key [`crate::asset_store::meta_key`]); its files live in the object store
//! `dtaas-assets`, named by their SHA-256 ([`crate::asset_store::object_name`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What an asset is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
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
    /// Every kind, in the order of the DTaaS layout.
    pub const ALL: [AssetKind; 5] = [
        Self::Data,
        Self::Model,
        Self::Function,
        Self::Tool,
        Self::Dt,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Data => "data",
            Self::Model => "model",
            Self::Function => "function",
            Self::Tool => "tool",
            Self::Dt => "dt",
        }
    }

    /// The top-level folder of the DTaaS layout that holds this kind.
    pub fn folder(self) -> &'static str {
        match self {
            Self::Data => "data",
            Self::Model => "models",
            Self::Function => "functions",
            Self::Tool => "tools",
            Self::Dt => "digital_twins",
        }
    }
}

/// A kind that is none of [`AssetKind::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown asset kind {0:?}; use data, model, function, tool or dt")]
pub struct UnknownKind(pub String);

impl std::str::FromStr for AssetKind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, UnknownKind> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownKind(s.to_owned()))
    }
}

impl std::fmt::Display for AssetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A pinned reference to one version of an asset (legacy form of an address).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetRef {
    pub id: String,
    pub version: String,
}

/// The metadata of one version of an asset (KV `dtaas-assets`). Everything but
/// `shared` is immutable once written; `shared` is the asset's current flag, the same
/// for all its versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetMeta {
    /// The asset's name, a token of `A–Z a–z 0–9 - _` (see `asset_address`).
    pub name: String,
    /// The user who owns it.
    pub owner: String,
    /// 1, 2, 3, … in the order versions were put; assigned by the library.
    pub version: u64,
    pub kind: AssetKind,
    /// Visible to every user, not only the owner (all versions at once).
    #[serde(default)]
    pub shared: bool,
    /// Free text for people.
    #[serde(default)]
    pub description: String,
    /// Labels to search by (`list {"tag"}`).
    #[serde(default)]
    pub tags: Vec<String>,
    /// When this version was put, nanoseconds since the Unix epoch.
    #[serde(default)]
    pub created: i64,
    /// The files, sorted by path.
    #[serde(default)]
    pub files: Vec<AssetFile>,
    /// What other parts wire to: inputs, outputs, parameters.
    #[serde(default, skip_serializing_if = "Interface::is_empty")]
    pub interface: Interface,
    /// How to run it (functions, tools, DTs); absent for data and plain models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<Run>,
    /// The entry's name in the DTaaS layout when it was not a valid token
    /// (`MassSpringDamper1.fmu` → name `MassSpringDamper1_fmu`); export writes it back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_name: Option<String>,
    /// SHA-256 (hex) over everything but `version`, `created` and `shared`: equal
    /// digests mean equal content, so putting the same content twice adds no version.
    #[serde(default)]
    pub digest: String,
}

impl AssetMeta {
    /// `owner/name@version`.
    pub fn address(&self) -> String {
        format!("{}/{}@{}", self.owner, self.name, self.version)
    }
}

/// One file of an asset version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetFile {
    /// Relative path with `/` separators, inside the asset (no `..`, no leading `/`,
    /// no backslash or NUL).
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256 of the content, lowercase hex; also its object's name in the store.
    pub sha256: String,
    /// Unix permission bits (`0o755` for an executable script); export restores them.
    #[serde(default = "default_mode")]
    pub mode: u32,
}

fn default_mode() -> u32 {
    0o644
}

/// The interface of an asset: what it reads, writes and can be tuned with.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    /// Signals it reads (`DTAAS_IN_<NAME>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<Port>,
    /// Signals it writes (`DTAAS_OUT_<NAME>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<Port>,
    /// Parameters (`DTAAS_PARAMS`), with types, defaults and ranges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<Param>,
}

impl Interface {
    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty() && self.outputs.is_empty() && self.params.is_empty()
    }
}

/// The type of a signal or parameter value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    /// A float (`f64`).
    Number,
    /// A whole number (`i64`).
    Integer,
    Bool,
    String,
}

impl ValueType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Number => "number",
            Self::Integer => "integer",
            Self::Bool => "bool",
            Self::String => "string",
        }
    }

    /// Whether `value` (JSON) is of this type; an integer is also a number.
    pub fn accepts(self, value: &serde_json::Value) -> bool {
        match self {
            Self::Number => value.is_number(),
            Self::Integer => value.is_i64() || value.is_u64(),
            Self::Bool => value.is_boolean(),
            Self::String => value.is_string(),
        }
    }
}

/// An input or output signal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Port {
    /// A token; `DTAAS_IN_<NAME>` / `DTAAS_OUT_<NAME>` derive from it.
    pub name: String,
    #[serde(rename = "type")]
    pub value_type: ValueType,
    /// Unit for people, e.g. `degC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// A parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Param {
    pub name: String,
    #[serde(rename = "type")]
    pub value_type: ValueType,
    /// Used when a DT configuration gives no value; of `type`, within `min`..=`max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<serde_json::Value>,
    /// Smallest allowed value (number and integer parameters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Largest allowed value (number and integer parameters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// The lifecycle scripts of a DTaaS-layout DT, in the order DTaaS runs them.
pub const LIFECYCLE_PHASES: [&str; 7] = [
    "create",
    "execute",
    "save",
    "analyze",
    "evolve",
    "terminate",
    "clean",
];

/// How to run an asset.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Run {
    /// argv, run with the asset's files as working directory (`DTAAS_WORKDIR`), e.g.
    /// `["python3", "doubler.py"]` or `["./run.sh"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// What the node needs to run it, e.g. `python3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// DTaaS lifecycle phase (one of [`LIFECYCLE_PHASES`]) → script path among the
    /// files, e.g. `"execute": "lifecycle/execute"`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub lifecycle: BTreeMap<String, String>,
}

impl Run {
    pub fn is_empty(&self) -> bool {
        self.command.is_empty() && self.platform.is_none() && self.lifecycle.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, Encoding};

    #[test]
    fn asset_meta_round_trip() {
        let typed = r#"{"name":"pid","version":3,"kind":"function","owner":"alice",
            "shared":true,"tags":["control"],
            "files":[{"path":"pid.py","size":10,"sha256":"ab","mode":493}],
            "interface":{"inputs":[{"name":"x","type":"number","unit":"degC"}],
                         "params":[{"name":"kp","type":"number","default":1.0,"min":0.0}]},
            "run":{"command":["python3","pid.py"],"platform":"python3"}}"#;
        let meta: AssetMeta = decode(None, typed.as_bytes()).unwrap();
        assert_eq!(meta.kind, AssetKind::Function);
        assert_eq!(meta.files[0].mode, 0o755);
        assert_eq!(meta.address(), "alice/pid@3");
        for encoding in [Encoding::Json, Encoding::MsgPack] {
            let body = encoding.encode(&meta).unwrap();
            assert_eq!(decode::<AssetMeta>(None, &body).unwrap(), meta);
        }
        let err = decode::<AssetMeta>(
            None,
            br#"{"name":"x","version":1,"kind":"gadget","owner":"a"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("gadget"), "{err}");
    }

    #[test]
    fn kinds_and_types() {
        assert_eq!("tool".parse::<AssetKind>().unwrap(), AssetKind::Tool);
        assert!("gadget"
            .parse::<AssetKind>()
            .unwrap_err()
            .to_string()
            .contains("gadget"));
        assert_eq!(AssetKind::Dt.folder(), "digital_twins");
        assert!(ValueType::Number.accepts(&serde_json::json!(2)));
        assert!(!ValueType::Integer.accepts(&serde_json::json!(2.5)));
    }
}
