//! The DT configuration `C_dt = {C_a, C_i, C_e, C_pt, children}` and the DT state.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::asset::AssetRef;
use crate::lifecycle::LifecycleState;

/// The configuration of a DT. Field names map to the paper's parts:
/// `assets` = `C_a`, `infrastructure` = `C_i`, `external` = `C_e`, `pt` = `C_pt`,
/// `children` = the included DTs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DtConfig {
    pub id: String,
    #[serde(default)]
    pub description: String,
    /// `C_a`: which assets, how they are wired, their parameters.
    #[serde(default)]
    pub assets: Vec<AssetUse>,
    /// `C_i`: where and how the DT runs.
    #[serde(default)]
    pub infrastructure: Infrastructure,
    /// `C_e`: event sinks, dashboards, exported subjects.
    #[serde(default)]
    pub external: External,
    /// `C_pt`: the physical twins this DT mirrors.
    #[serde(default)]
    pub pt: Vec<PtLink>,
    /// Included DTs (hierarchical twins), each with its own configuration.
    #[serde(default)]
    pub children: Vec<DtConfig>,
}

/// One asset used by a DT (`C_a`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetUse {
    /// The role of the asset in this DT, e.g. `controller`.
    pub name: String,
    pub asset: AssetRef,
    /// Input name → subject or `<asset>.<output>` it is wired to.
    #[serde(default)]
    pub inputs: BTreeMap<String, String>,
    /// Output name → subject it is published on.
    #[serde(default)]
    pub outputs: BTreeMap<String, String>,
    #[serde(default)]
    pub params: BTreeMap<String, serde_json::Value>,
}

/// `C_i`: how and where a DT runs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Infrastructure {
    /// The program and its arguments; empty when the DT has no process of its own.
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// Placement constraints (node labels).
    #[serde(default)]
    pub constraints: BTreeMap<String, String>,
}

/// `C_e`: what the DT exposes outside.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct External {
    /// Subjects that receive the DT's events.
    #[serde(default)]
    pub event_sinks: Vec<String>,
    #[serde(default)]
    pub dashboards: Vec<String>,
    /// Subjects the DT publishes for others.
    #[serde(default)]
    pub exports: Vec<String>,
}

/// `C_pt`: one PT this DT mirrors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PtLink {
    pub id: String,
    /// Measurements the DT reads.
    #[serde(default)]
    pub signals: Vec<String>,
    /// Commands the DT may send.
    #[serde(default)]
    pub commands: Vec<String>,
}

/// The registry entry of a DT (KV `dtaas-dts`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DtState {
    pub id: String,
    pub owner: String,
    pub state: LifecycleState,
    pub config_version: u64,
    pub config: DtConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// For what-if forks: the DT this one was forked from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fork_of: Option<String>,
    /// Nanoseconds since the Unix epoch.
    pub updated_at: i64,
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
            "infrastructure": {"command": ["python3", "robot.py"], "cpu": 0.5},
            "children": [{"id": "gripper-1"}]
        }]
    }"#;

    #[test]
    fn hierarchical_config_round_trips() {
        let config: DtConfig = decode(None, FACTORY.as_bytes()).unwrap();
        assert_eq!(config.children[0].children[0].id, "gripper-1");
        assert_eq!(config.children[0].pt[0].commands, ["stop"]);
        for encoding in [Encoding::Json, Encoding::MsgPack] {
            let body = encoding.encode(&config).unwrap();
            assert_eq!(decode::<DtConfig>(None, &body).unwrap(), config);
        }
    }

    #[test]
    fn unknown_parts_are_named() {
        let err = decode::<DtConfig>(None, br#"{"id":"x","asets":[]}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("asets"), "{err}");
    }
}
