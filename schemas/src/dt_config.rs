//! The DT configuration `C_dt = {C_a, C_i, C_e, C_pt, children}` and the DT state.
//!
//! People write it as YAML, TOML or JSON; `docs/dt-config.schema.json` is generated
//! from these types ([`json_schema`]; `DTAAS_BLESS=1 cargo test -p dtaas-schemas
//! dt_config` rewrites it, and the test fails while it is out of date).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::asset::ValueType;
pub use crate::exec::RestartPolicy;
use crate::lifecycle::{LifecycleState, ProcessState, SnapshotInfo};

/// The configuration of a DT. Field names map to the paper's parts:
/// `assets` = `C_a`, `infrastructure` = `C_i`, `external` = `C_e`, `pt` = `C_pt`,
/// `children` = the included DTs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DtConfig {
    /// The DT's id, unique on the platform; a subject token (no `.`, `*`, `>`, spaces).
    pub id: String,
    /// Free text for people.
    #[serde(default)]
    pub description: String,
    /// `C_a`: which assets, how they are wired, their parameters. Every use whose asset
    /// can run becomes one process of the DT.
    #[serde(default)]
    pub assets: Vec<AssetUse>,
    /// `C_i`: defaults for every process of the DT (a use may override them).
    #[serde(default)]
    pub infrastructure: Infrastructure,
    /// `C_e`: event sinks, dashboards, the outputs other users' DTs may read.
    #[serde(default)]
    pub external: External,
    /// `C_pt`: the physical twins this DT mirrors.
    #[serde(default)]
    pub pt: Vec<PtLink>,
    /// Included DTs (hierarchical twins), each with its own configuration. They start
    /// before this DT and stop after it.
    #[serde(default)]
    pub children: Vec<DtConfig>,
}

/// One asset used by a DT (`C_a`): one process when the asset can run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AssetUse {
    /// The role of the asset in this DT, e.g. `controller`: `DTAAS_ROLE` of its process
    /// and the name other uses wire to (`<role>.<output>`).
    pub name: String,
    /// `owner/name@version`, `owner/name` (latest visible version) or `name` (the
    /// caller's own). The legacy form `{"id": …, "version": …}` is read as `id@version`.
    #[serde(deserialize_with = "asset_address::deserialize")]
    #[schemars(with = "String")]
    pub asset: String,
    /// Input name → a telemetry subject (`dtaas.v1.tel.<pt>.<measurement>`), a DT
    /// output subject (`dtaas.v1.dt.<dt>.out.<output>`: of a DT of this configuration
    /// or of your own, or exported by another user's), or another use's output
    /// (`<role>.<output>`).
    #[serde(default)]
    pub inputs: BTreeMap<String, String>,
    /// Output name → the token it is published under (`dtaas.v1.dt.<dt>.out.<token>`);
    /// an output not listed uses its own name. Rename when two uses share an output name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, String>,
    /// Parameter name → value, checked against the asset's declared types and ranges
    /// (`DTAAS_PARAMS`, with the declared defaults filled in).
    #[serde(default)]
    pub params: BTreeMap<String, serde_json::Value>,
    /// When the process is started again after it ended [default: on-failure, or the
    /// DT's `infrastructure.restart`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartPolicy>,
    /// CPU and memory of this process [default: the DT's `infrastructure`].
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub resources: Resources,
    /// Node labels the process needs, added to the DT's `infrastructure.constraints`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub constraints: BTreeMap<String, String>,
}

/// CPU and memory a process may use; placement reserves them on a node.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPUs (fractions allowed), e.g. `0.5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    /// Memory limit in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
}

impl Resources {
    pub fn is_empty(&self) -> bool {
        self.cpu.is_none() && self.memory_mb.is_none()
    }

    /// `self`, with what it leaves open taken from `defaults`.
    pub fn or(self, defaults: Resources) -> Resources {
        Resources {
            cpu: self.cpu.or(defaults.cpu),
            memory_mb: self.memory_mb.or(defaults.memory_mb),
        }
    }
}

/// `C_i`: how and where the DT's processes run, unless a use says otherwise.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Infrastructure {
    /// Extra environment of every process (the process contract's variables win).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// CPUs of each process unless the use says otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    /// Memory (MiB) of each process unless the use says otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// Node labels every process needs (`gpu: "true"`, `site: lab-2`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub constraints: BTreeMap<String, String>,
    /// Restart policy of every use that names none [default: on-failure].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartPolicy>,
}

impl Infrastructure {
    /// The DT-wide resources.
    pub fn resources(&self) -> Resources {
        Resources {
            cpu: self.cpu,
            memory_mb: self.memory_mb,
        }
    }
}

/// `C_e`: what the DT exposes outside.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct External {
    /// Subjects that receive a copy of the DT's lifecycle events.
    #[serde(default)]
    pub event_sinks: Vec<String>,
    /// Dashboard URLs for people (absolute `http://` or `https://`); `dtaas dt get`
    /// shows them.
    #[serde(default)]
    pub dashboards: Vec<String>,
    /// Outputs other users' DTs may wire their inputs to: output tokens (the
    /// `<output>` of `dtaas.v1.dt.<dt>.out.<output>`) that some role of this DT
    /// publishes. The owner's own DTs may read every output without exporting it.
    #[serde(default)]
    pub exports: Vec<String>,
}

impl External {
    /// The subjects others wire to: `dtaas.v1.dt.<dt>.out.<export>`, for each export
    /// that makes a valid subject.
    pub fn export_subjects(&self, dt: &str) -> Vec<String> {
        self.exports
            .iter()
            .filter_map(|export| crate::subject::dt_output(dt, export).ok())
            .collect()
    }
}

/// `C_pt`: one PT this DT mirrors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PtLink {
    /// The PT id, as in `dtaas.v1.tel.<pt>.…`.
    pub id: String,
    /// Measurements the DT reads.
    #[serde(default)]
    pub signals: Vec<String>,
    /// Commands the DT may send.
    #[serde(default)]
    pub commands: Vec<String>,
}

/// The registry entry of a DT (KV `dtaas-dts`, key = DT id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DtState {
    pub id: String,
    /// The user who created it; other users get `not_found`.
    pub owner: String,
    pub state: LifecycleState,
    /// 1 at creation, one more per evolve.
    pub config_version: u64,
    /// The configuration as written (children included), assets as written.
    pub config: DtConfig,
    /// The DT that includes this one, when it is a child.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// For what-if forks: the DT this one was forked from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fork_of: Option<String>,
    /// For forks fed by recorded data: the range replayed on every execute and how
    /// far the latest replay got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<crate::fork::Replay>,
    /// Every asset this DT's own uses resolved to, `owner/name@version`, in use order;
    /// the asset library refuses to delete these.
    #[serde(default)]
    pub resolved_assets: Vec<String>,
    /// Output token → value type of every output this DT's processes publish
    /// (`dtaas.v1.dt.<dt>.out.<token>`), recorded on create and evolve: other DTs'
    /// inputs wired to it are checked against it. `None` in entries written before it
    /// was recorded; wiring to those is not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<BTreeMap<String, ValueType>>,
    /// The processes of the current run (empty before the first execute).
    #[serde(default)]
    pub processes: Vec<ProcessState>,
    /// Saved snapshots, oldest first.
    #[serde(default)]
    pub snapshots: Vec<SnapshotInfo>,
    /// An operation in progress (`execute`, `terminate`, …); others wait for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy: Option<Busy>,
    /// Why the DT failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Nanoseconds since the Unix epoch.
    pub updated_at: i64,
}

/// An operation that holds a DT; stale after a while so a crashed worker does not
/// hold it forever.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Busy {
    /// The verb, e.g. `execute`.
    pub op: String,
    /// Nanoseconds since the Unix epoch.
    pub since: i64,
}

/// The JSON Schema of [`DtConfig`], pretty-printed, as in `docs/dt-config.schema.json`.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(DtConfig);
    serde_json::to_string_pretty(&schema).expect("a schema always serializes") + "\n"
}

/// Reads an asset address: a string, or the legacy `{"id","version"}` map.
mod asset_address {
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Address {
        Text(String),
        Pinned { id: String, version: String },
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        Ok(match Address::deserialize(d)? {
            Address::Text(text) => text,
            Address::Pinned { id, version } => format!("{id}@{version}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, Encoding};

    const FACTORY: &str = r#"{
        "id": "factory",
        "assets": [{"name": "planner", "asset": {"id": "scheduler", "version": "2.0"}}],
        "children": [{
            "id": "robot-1",
            "pt": [{"id": "robot1", "signals": ["joints"], "commands": ["stop"]}],
            "infrastructure": {"cpu": 0.5, "restart": "always"},
            "assets": [{"name": "ctl", "asset": "alice/pid@1.2.0", "restart": "never",
                        "resources": {"memory_mb": 64}, "constraints": {"site": "lab"}}],
            "children": [{"id": "gripper-1"}]
        }]
    }"#;

    #[test]
    fn hierarchical_config_round_trips() {
        let config: DtConfig = decode(None, FACTORY.as_bytes()).unwrap();
        assert_eq!(config.children[0].children[0].id, "gripper-1");
        assert_eq!(config.children[0].pt[0].commands, ["stop"]);
        assert_eq!(config.assets[0].asset, "scheduler@2.0");
        let ctl = &config.children[0].assets[0];
        assert_eq!(ctl.restart, Some(RestartPolicy::Never));
        assert_eq!(
            ctl.resources
                .or(config.children[0].infrastructure.resources()),
            Resources {
                cpu: Some(0.5),
                memory_mb: Some(64)
            }
        );
        for encoding in [Encoding::Json, Encoding::MsgPack] {
            let body = encoding.encode(&config).unwrap();
            assert_eq!(decode::<DtConfig>(None, &body).unwrap(), config);
        }
    }

    #[test]
    fn json_schema_in_docs_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/dt-config.schema.json");
        let schema = json_schema();
        if std::env::var_os("DTAAS_BLESS").is_some() {
            std::fs::write(path, &schema).unwrap();
        }
        let written = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            written == schema,
            "{path} is out of date: run `DTAAS_BLESS=1 cargo test -p dtaas-schemas dt_config`"
        );
        assert!(schema.contains("on-failure") && schema.contains("memory_mb"));
    }

    #[test]
    fn unknown_parts_are_named() {
        let err = decode::<DtConfig>(None, br#"{"id":"x","asets":[]}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("asets"), "{err}");
        let err = decode::<DtConfig>(
            None,
            br#"{"id":"x","assets":[{"name":"a","asset":"b","restart":"sometimes"}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("sometimes"), "{err}");
    }
}
