//! Property-based fuzzing of the configurations people write: the worker configuration
//! (`deploy/dtaas.toml`, read by every worker) and a DT configuration (`C_dt`, decoded
//! and validated by the lifecycle worker). Mutated from the shipped examples, each is
//! accepted or refused with a message; nothing panics.
//!
//! Each property runs `PROPTEST_CASES` cases (proptest's default, 256, in CI); for a
//! long run: `PROPTEST_CASES=1000000 cargo test --release --test fuzz_config`.

use std::collections::HashMap;

use dtaas_lifecycle::validate::{validate, Catalog, Peer};
use dtaas_runtime::Config;
use dtaas_schemas::asset::{AssetMeta, ValueType};
use dtaas_schemas::dt_config::DtConfig;
use dtaas_schemas::exec::NodeInfo;
use dtaas_schemas::Encoding;
use dtaas_test_harness::mutate;
use proptest::prelude::*;

const WORKER_CONFIG: &str = include_str!("../deploy/dtaas.toml");

/// DT configurations in JSON: the issue's minimal one and one with every section.
const DT_CONFIGS: &[&str] = &[
    r#"{"id":"dbl-1","assets":[{"name":"doubler","asset":"alice/doubler",
        "inputs":{"x":"dtaas.v1.tel.pt9.val"},"params":{"factor":3}}]}"#,
    r#"{"id":"plant","assets":[{"name":"d","asset":"doubler","inputs":{"x":"dtaas.v1.tel.p.v"},
        "params":{"factor":2,"label":"x"},"restart":"always"},
        {"name":"e","asset":"alice/doubler@2","inputs":{"x":"d.y"},"params":{"factor":3},
        "outputs":{"y":"ey"}}],
        "external":{"exports":["ey"],"dashboards":["https://grafana.example.com/d/plant"]},
        "children":[{"id":"cell","assets":[{"name":"f","asset":"doubler",
        "inputs":{"x":"dtaas.v1.dt.plant.out.ey"},"params":{"factor":1}},
        {"name":"g","asset":"doubler","inputs":{"x":"dtaas.v1.dt.other.out.y"},
        "params":{"factor":1},"outputs":{"y":"gy"}}]}]}"#,
];

/// The worker configuration with random edits; every worker's section is loaded.
fn worker_configs() -> impl Strategy<Value = String> {
    mutate::edits().prop_map(|edits| {
        String::from_utf8_lossy(&mutate::apply(WORKER_CONFIG.as_bytes(), &edits)).into_owned()
    })
}

/// A DT configuration with random edits, as JSON or converted to MessagePack.
fn dt_configs() -> impl Strategy<Value = Vec<u8>> {
    mutate::json_or_msgpack(DT_CONFIGS)
}

/// Another user's DT `other`, exporting its output `y`.
fn wired_dts() -> HashMap<String, Peer> {
    let outputs = [("y".to_owned(), Some(ValueType::Number))].into();
    HashMap::from([(
        "other".to_owned(),
        Peer::Readable {
            own: false,
            outputs,
        },
    )])
}

/// The catalog DT configurations are validated against: one asset, one node.
fn catalog_parts() -> (
    HashMap<String, Result<AssetMeta, dtaas_lifecycle::error::Error>>,
    Vec<NodeInfo>,
) {
    let doubler: AssetMeta = serde_json::from_str(
        r#"{"name":"doubler","owner":"alice","version":2,"kind":"function",
            "interface":{"inputs":[{"name":"x","type":"number"}],
                         "outputs":[{"name":"y","type":"number"}],
                         "params":[{"name":"factor","type":"integer","min":1,"max":10},
                                   {"name":"label","type":"string","default":"d"}]},
            "run":{"command":["python3","doubler.py"]}}"#,
    )
    .unwrap();
    let assets = ["alice/doubler", "doubler", "alice/doubler@2"]
        .into_iter()
        .map(|a| (a.to_owned(), Ok(doubler.clone())))
        .collect();
    let node: NodeInfo = serde_json::from_str(
        r#"{"id":"n1","cpus":2.0,"memory_mb":512,"labels":{},"heartbeat_at":0}"#,
    )
    .unwrap();
    (assets, vec![node])
}

/// An error refusing a configuration must say something.
fn refused<T, E: std::fmt::Display>(result: Result<T, E>) -> Result<(), TestCaseError> {
    if let Err(e) = result {
        prop_assert!(!e.to_string().trim().is_empty());
    }
    Ok(())
}

#[test]
fn the_shipped_examples_are_valid() {
    let config = Config::from_toml(WORKER_CONFIG, "dtaas.toml", &|_| None).unwrap();
    dtaas_bridge::config::BridgeConfig::load(&config).unwrap();
    let (assets, nodes) = catalog_parts();
    for seed in DT_CONFIGS {
        let dt: DtConfig = serde_json::from_str(seed).unwrap();
        let dts = wired_dts();
        let catalog = Catalog {
            assets: &assets,
            nodes: &nodes,
            dts: &dts,
        };
        assert_eq!(validate(&dt, &catalog), [], "{seed}");
    }
}

proptest! {
    /// Any edit of `deploy/dtaas.toml` loads, or is refused with a message, in the
    /// common part and in every worker's section.
    #[test]
    fn worker_configurations_load_or_are_refused(text in worker_configs()) {
        if let Ok(config) = Config::from_toml(&text, "dtaas.toml", &|_| None) {
            refused(dtaas_bridge::config::BridgeConfig::load(&config))?;
            refused(dtaas_historian::config::HistorianConfig::load(&config))?;
            refused(dtaas_graph::config::GraphConfig::load(&config))?;
            refused(dtaas_assets::config::AssetsConfig::load(&config))?;
            refused(dtaas_lifecycle::config::LifecycleConfig::load(&config))?;
            refused(dtaas_exec::config::ExecConfig::load(&config))?;
        }
    }

    /// Any edit of a DT configuration decodes, or is refused; one that decodes
    /// validates to a list of problems, each named by a path.
    #[test]
    fn dt_configurations_decode_and_validate(body in dt_configs()) {
        let encoding = Encoding::sniff(&body);
        if let Ok(dt) = encoding.decode::<DtConfig>(&body) {
            let (assets, nodes) = catalog_parts();
            let dts = wired_dts();
            let catalog = Catalog { assets: &assets, nodes: &nodes, dts: &dts };
            for problem in validate(&dt, &catalog) {
                prop_assert!(!problem.message.is_empty(), "{problem}");
            }
        }
    }
}
