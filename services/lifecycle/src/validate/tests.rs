//! Validation against assets and nodes made here: every problem with its path.

use std::collections::HashMap;

use dtaas_schemas::asset::AssetMeta;
use dtaas_schemas::codec::decode;
use dtaas_schemas::dt_config::DtConfig;
use dtaas_schemas::exec::NodeInfo;

use super::{validate, Catalog, Peer};
use crate::error::Error;

pub(super) fn meta(json: &str) -> AssetMeta {
    decode(None, json.as_bytes()).unwrap()
}

pub(super) fn assets() -> HashMap<String, Result<AssetMeta, Error>> {
    let doubler = meta(
        r#"{"name":"doubler","owner":"alice","version":2,"kind":"function",
            "interface":{"inputs":[{"name":"x","type":"number"}],
                         "outputs":[{"name":"y","type":"number"}],
                         "params":[{"name":"factor","type":"integer","min":1,"max":10},
                                   {"name":"label","type":"string","default":"d"}]},
            "run":{"command":["python3","doubler.py"]}}"#,
    );
    let flag = meta(
        r#"{"name":"flag","owner":"bob","version":1,"kind":"function",
            "interface":{"inputs":[{"name":"on","type":"bool"}]},
            "run":{"command":["./flag"]}}"#,
    );
    HashMap::from([
        ("alice/doubler".to_string(), Ok(doubler.clone())),
        ("doubler".to_string(), Ok(doubler)),
        ("bob/flag@1".to_string(), Ok(flag)),
        (
            "carol/secret".to_string(),
            Err(Error::NotFound(
                "not_found: no asset carol/secret visible to alice".to_string(),
            )),
        ),
    ])
}

pub(super) fn config(yaml_like_json: &str) -> DtConfig {
    decode(None, yaml_like_json.as_bytes()).unwrap()
}

fn node(labels: &str) -> NodeInfo {
    decode(
        None,
        format!(r#"{{"id":"n1","cpus":2.0,"memory_mb":512,"labels":{labels},"heartbeat_at":0}}"#)
            .as_bytes(),
    )
    .unwrap()
}

fn problems(config: &DtConfig, nodes: &[NodeInfo]) -> Vec<String> {
    problems_with(config, nodes, &HashMap::new())
}

/// The problems of `config` with `dts` as the registered DTs its inputs read from.
pub(super) fn problems_with(
    config: &DtConfig,
    nodes: &[NodeInfo],
    dts: &HashMap<String, Peer>,
) -> Vec<String> {
    let assets = assets();
    validate(
        config,
        &Catalog {
            assets: &assets,
            nodes,
            dts,
        },
    )
    .iter()
    .map(ToString::to_string)
    .collect()
}

#[test]
fn the_minimal_configuration_is_valid() {
    let c = config(
        r#"{"id":"dbl-1","assets":[{"name":"doubler","asset":"alice/doubler",
            "inputs":{"x":"dtaas.v1.tel.pt9.val"},"params":{"factor":3}}]}"#,
    );
    assert_eq!(problems(&c, &[]), Vec::<String>::new());
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let c = config(
        r#"{"id":"plant","assets":[
            {"name":"a","asset":"doubler","inputs":{"x":"dtaas.v1.tel.pt9.val","z":"dtaas.v1.tel.p.m"},
             "params":{"factor":30,"colour":1}},
            {"name":"b","asset":"bob/flag@1","inputs":{"on":"a.y"}},
            {"name":"c","asset":"carol/secret"},
            {"name":"a","asset":"alice/doubler","inputs":{"x":"nowhere.y"},"params":{"factor":"3"},
             "constraints":{"gpu":"yes"}}
           ],
           "children":[{"id":"kid","children":[{"id":"plant"}]},{"id":"kid"}]}"#,
    );
    let found = problems(&c, &[node(r#"{"site":"lab"}"#)]);
    let expected = [
        "assets[0].inputs.z: asset alice/doubler@2 has no input \"z\"",
        "assets[0].params.factor: 30 is not within 1..=10",
        "assets[0].params.colour: asset alice/doubler@2 has no parameter \"colour\"",
        "assets[1].inputs.on: output a.y is number but input on takes bool",
        "assets[2].asset: not_found: no asset carol/secret",
        "assets[3].name: role \"a\" is used twice",
        "assets[3].inputs.x: no role \"nowhere\"",
        "assets[3].params.factor: \"3\" is not of type integer",
        "assets[3].outputs.y: role \"a\" publishes dtaas.v1.dt.<dt>.out.y already",
        "assets[3].constraints: no registered exec node offers labels {\"gpu\": \"yes\"}",
        "children[0].children[0].id: DT \"plant\" includes itself",
        "children[1].id: DT id \"kid\" is used twice (also at children[0].id)",
    ];
    for want in expected {
        assert!(
            found.iter().any(|p| p.starts_with(want)),
            "missing {want:?} in {found:#?}"
        );
    }
    assert_eq!(found.len(), expected.len(), "{found:#?}");
}

#[test]
fn unwired_inputs_and_missing_params_are_named() {
    let c = config(r#"{"id":"d","assets":[{"name":"dbl","asset":"doubler"}]}"#);
    let found = problems(&c, &[]);
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("assets[0].inputs.x: input \"x\"")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("assets[0].params.factor: parameter")),
        "{found:?}"
    );
    assert_eq!(found.len(), 2, "the defaulted parameter is fine: {found:?}");
}
