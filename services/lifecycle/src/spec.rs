//! From a DT's configuration and its resolved assets to the process specs exec runs:
//! the process contract's environment (`DTAAS_PARAMS`, `DTAAS_IN_<NAME>`,
//! `DTAAS_OUT_<NAME>`), argv, restart policy, resources and node constraints.

use std::collections::BTreeMap;

use dtaas_schemas::asset::AssetMeta;
use dtaas_schemas::dt_config::{AssetUse, DtConfig, Resources};
use dtaas_schemas::exec::ProcessSpec;
use dtaas_schemas::subject;
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::validate::{constraints, output_token, runnable};

/// One process to run, with what placement needs.
#[derive(Debug, Clone)]
pub struct Planned {
    pub spec: ProcessSpec,
    /// SHA-256 of the spec: evolve restarts a process only when it changes.
    pub hash: String,
    pub resources: Resources,
    pub labels: BTreeMap<String, String>,
}

/// `DTAAS_IN_<NAME>` / `DTAAS_OUT_<NAME>`: the name upper-cased, every character
/// other than A–Z and 0–9 as `_`.
pub fn env_name(prefix: &str, name: &str) -> String {
    let mut var = String::with_capacity(prefix.len() + name.len());
    var.push_str(prefix);
    var.extend(name.chars().map(|c| {
        let c = c.to_ascii_uppercase();
        if c.is_ascii_uppercase() || c.is_ascii_digit() {
            c
        } else {
            '_'
        }
    }));
    var
}

/// The argv of an asset: its command, or for a DTaaS-layout DT its `execute` script.
pub fn argv(meta: &AssetMeta) -> Vec<String> {
    let run = meta.run.clone().unwrap_or_default();
    if !run.command.is_empty() {
        return run.command;
    }
    run.lifecycle
        .get("execute")
        .map(|script| vec!["bash".to_owned(), script.clone()])
        .unwrap_or_default()
}

/// The processes of DT `config` (its own uses, not its children's) owned by `owner`;
/// `metas[i]` is the resolved asset of `config.assets[i]`. A DTaaS-layout use without
/// an `execute` script is planned with an empty argv: it runs no process, but its
/// other scripts run with this environment.
pub fn plan(owner: &str, config: &DtConfig, metas: &[AssetMeta]) -> Result<Vec<Planned>, Error> {
    let mut planned = Vec::new();
    for (use_, meta) in config.assets.iter().zip(metas) {
        if !runnable(meta) {
            continue;
        }
        let resources = use_.resources.or(config.infrastructure.resources());
        let mut env = config.infrastructure.env.clone();
        env.insert("DTAAS_PARAMS".into(), params(use_, meta).to_string());
        for (input, source) in &use_.inputs {
            env.insert(env_name("DTAAS_IN_", input), input_subject(config, source)?);
        }
        for port in &meta.interface.outputs {
            let token = output_token(use_, &port.name);
            let out = subject::dt_output(&config.id, token)?;
            env.insert(env_name("DTAAS_OUT_", &port.name), out);
        }
        let spec = ProcessSpec {
            dt: config.id.clone(),
            role: use_.name.clone(),
            owner: owner.to_owned(),
            asset: meta.address(),
            digest: Some(meta.digest.clone()).filter(|d| !d.is_empty()),
            argv: argv(meta),
            env,
            restart: use_
                .restart
                .or(config.infrastructure.restart)
                .unwrap_or_default(),
            cpu: resources.cpu,
            memory_mb: resources.memory_mb,
            cpu_seconds_max: None,
            state: None,
        };
        let hash = hash(&spec);
        planned.push(Planned {
            spec,
            hash,
            resources,
            labels: constraints(config, use_),
        });
    }
    Ok(planned)
}

fn hash(spec: &ProcessSpec) -> String {
    let body = serde_json::to_vec(spec).unwrap_or_default();
    let digest = Sha256::digest(&body);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The parameters with the declared defaults filled in.
fn params(use_: &AssetUse, meta: &AssetMeta) -> serde_json::Value {
    let mut params = serde_json::Map::new();
    for param in &meta.interface.params {
        if let Some(default) = &param.default {
            params.insert(param.name.clone(), default.clone());
        }
    }
    for (name, value) in &use_.params {
        params.insert(name.clone(), value.clone());
    }
    serde_json::Value::Object(params)
}

/// A subject as written, or `<role>.<output>` as that role's output subject.
fn input_subject(config: &DtConfig, source: &str) -> Result<String, Error> {
    if source.starts_with(subject::PREFIX) {
        return Ok(source.to_owned());
    }
    let (role, output) = source.split_once('.').ok_or_else(|| {
        Error::BadRequest(format!("input source {source:?} is not `<role>.<output>`"))
    })?;
    let from = config
        .assets
        .iter()
        .find(|u| u.name == role)
        .ok_or_else(|| Error::BadRequest(format!("no role {role:?}")))?;
    Ok(subject::dt_output(&config.id, output_token(from, output))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_follow_the_contract() {
        assert_eq!(env_name("DTAAS_IN_", "x"), "DTAAS_IN_X");
        assert_eq!(env_name("DTAAS_OUT_", "temp-c.2"), "DTAAS_OUT_TEMP_C_2");
    }
}
