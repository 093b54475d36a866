//! Validation of a DT configuration on `create` and `evolve`: every problem at once,
//! each named by its path (`children[0].assets[2].inputs.temperature`), so a person
//! fixes them all in one pass. Nothing here talks to NATS: the assets, nodes and the
//! registered DTs inputs read from were looked up before.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use dtaas_schemas::asset::{AssetMeta, ValueType};
use dtaas_schemas::dt_config::{AssetUse, DtConfig, Resources};
use dtaas_schemas::exec::NodeInfo;
use dtaas_schemas::subject;

use crate::error::Error;

mod external;
pub use external::{event_sink, published, Peer};

/// How deep children may nest.
pub const MAX_DEPTH: usize = 16;

/// One thing wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where, e.g. `assets[2].inputs.temperature`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// What validation checks a configuration against.
pub struct Catalog<'a> {
    /// Address as written → the asset it resolved to for the caller, or why not.
    pub assets: &'a HashMap<String, Result<AssetMeta, Error>>,
    /// The registered exec nodes.
    pub nodes: &'a [NodeInfo],
    /// DT id → what the caller may read of that registered DT, for every DT outside
    /// the configuration tree an input is wired to (`dtaas.v1.dt.<dt>.out.<output>`);
    /// a DT missing here is not registered.
    pub dts: &'a HashMap<String, Peer>,
}

/// Every problem of `config` and its children; empty when it is valid.
pub fn validate(config: &DtConfig, catalog: &Catalog<'_>) -> Vec<Problem> {
    let mut v = Validator {
        catalog,
        problems: Vec::new(),
        seen: HashMap::new(),
        tree: external::tree_outputs(config, catalog.assets),
    };
    v.dt(config, "", &mut Vec::new());
    v.problems
}

struct Validator<'a, 'c> {
    catalog: &'c Catalog<'a>,
    problems: Vec<Problem>,
    /// DT id → the path of its first occurrence.
    seen: HashMap<String, String>,
    /// DT id → the outputs it publishes, for every DT of the configuration tree
    /// (`None` when one of its assets did not resolve).
    tree: HashMap<String, Option<BTreeMap<String, ValueType>>>,
}

/// The path of a field under `prefix` (`""` for the top-level DT).
fn at(prefix: &str, field: &str) -> String {
    format!("{prefix}{field}")
}

impl Validator<'_, '_> {
    fn problem(&mut self, path: String, message: impl Into<String>) {
        self.problems.push(Problem {
            path,
            message: message.into(),
        });
    }

    fn dt(&mut self, config: &DtConfig, prefix: &str, ancestors: &mut Vec<String>) {
        let id_path = at(prefix, "id");
        if let Err(e) = subject::validate_token("DT id", &config.id) {
            self.problem(id_path.clone(), e.to_string());
        }
        if ancestors.contains(&config.id) {
            self.problem(
                id_path.clone(),
                format!(
                    "DT {:?} includes itself (a cycle through {})",
                    config.id,
                    ancestors.join(" → ")
                ),
            );
        } else if let Some(first) = self.seen.get(&config.id) {
            let first = if first.is_empty() { "id" } else { first };
            self.problem(
                id_path.clone(),
                format!("DT id {:?} is used twice (also at {first})", config.id),
            );
        } else {
            self.seen.insert(config.id.clone(), id_path);
        }
        self.uses(config, prefix);
        self.external(config, prefix);
        for (i, pt) in config.pt.iter().enumerate() {
            if let Err(e) = subject::validate_token("PT id", &pt.id) {
                self.problem(at(prefix, &format!("pt[{i}].id")), e.to_string());
            }
        }
        if ancestors.len() + 1 > MAX_DEPTH && !config.children.is_empty() {
            self.problem(
                at(prefix, "children"),
                format!("children nest deeper than {MAX_DEPTH} levels"),
            );
            return;
        }
        ancestors.push(config.id.clone());
        for (i, child) in config.children.iter().enumerate() {
            self.dt(child, &at(prefix, &format!("children[{i}].")), ancestors);
        }
        ancestors.pop();
    }

    fn uses(&mut self, config: &DtConfig, prefix: &str) {
        let mut roles: HashMap<&str, usize> = HashMap::new();
        for (i, use_) in config.assets.iter().enumerate() {
            let path = at(prefix, &format!("assets[{i}].name"));
            if let Err(e) = subject::validate_token("role", &use_.name) {
                self.problem(path, e.to_string());
            } else if let Some(first) = roles.insert(&use_.name, i) {
                self.problem(
                    path,
                    format!("role {:?} is used twice (also assets[{first}])", use_.name),
                );
            }
        }
        // Output token → the role publishing it, to catch two uses on one subject.
        let mut tokens: BTreeMap<String, String> = BTreeMap::new();
        for (i, use_) in config.assets.iter().enumerate() {
            let path = at(prefix, &format!("assets[{i}]"));
            let meta = match self.catalog.assets.get(&use_.asset) {
                Some(Ok(meta)) => meta,
                Some(Err(why)) => {
                    self.problem(format!("{path}.asset"), why.to_string());
                    continue;
                }
                None => {
                    self.problem(
                        format!("{path}.asset"),
                        format!("asset {:?} was not looked up", use_.asset),
                    );
                    continue;
                }
            };
            self.inputs(config, use_, meta, &path);
            self.outputs(use_, meta, &path, &mut tokens);
            self.params(use_, meta, &path);
            self.placement(config, use_, meta, &path);
        }
    }

    fn inputs(&mut self, config: &DtConfig, use_: &AssetUse, meta: &AssetMeta, path: &str) {
        let declared = &meta.interface.inputs;
        for (name, source) in &use_.inputs {
            let here = format!("{path}.inputs.{name}");
            let Some(port) = declared.iter().find(|p| &p.name == name) else {
                self.problem(
                    here,
                    format!(
                        "asset {} has no input {name:?}{}",
                        meta.address(),
                        listing(declared.iter().map(|p| p.name.as_str()))
                    ),
                );
                continue;
            };
            if source.starts_with(subject::PREFIX) {
                if let Ok((dt, output)) = subject::parse_dt_output(source) {
                    self.dt_output_input(here, source, (dt, output), (name, port.value_type));
                } else if let Ok((dt, _, _)) = subject::parse_dt_replay(source) {
                    if dt != config.id {
                        self.problem(
                            here,
                            format!(
                                "{source:?} is a replay subject of DT {dt:?}; a DT reads only \
                                 its own replays (dtaas.v1.dt.{}.replay.<pt>.<measurement>, \
                                 wired by `dt.fork`)",
                                config.id
                            ),
                        );
                    }
                } else if subject::parse_telemetry(source).is_err() {
                    self.problem(
                        here,
                        format!(
                            "{source:?} is neither a telemetry subject \
                             (dtaas.v1.tel.<pt>.<measurement>) nor a DT output \
                             (dtaas.v1.dt.<dt>.out.<output>)"
                        ),
                    );
                }
                continue;
            }
            let Some((role, output)) = source.split_once('.') else {
                self.problem(
                    here,
                    format!("{source:?} is neither a subject nor `<role>.<output>` of this DT"),
                );
                continue;
            };
            let Some(from) = config.assets.iter().find(|u| u.name == role) else {
                self.problem(
                    here,
                    format!(
                        "no role {role:?} in this DT{}",
                        listing(config.assets.iter().map(|u| u.name.as_str()))
                    ),
                );
                continue;
            };
            // An unresolved source asset has its own problem already.
            let Some(Ok(from_meta)) = self.catalog.assets.get(&from.asset) else {
                continue;
            };
            let outputs = &from_meta.interface.outputs;
            match outputs.iter().find(|p| p.name == output) {
                None => self.problem(
                    here,
                    format!(
                        "role {role:?} ({}) has no output {output:?}{}",
                        from_meta.address(),
                        listing(outputs.iter().map(|p| p.name.as_str()))
                    ),
                ),
                Some(out) if !compatible(out.value_type, port.value_type) => self.problem(
                    here,
                    format!(
                        "output {source} is {} but input {name} takes {}",
                        out.value_type.as_str(),
                        port.value_type.as_str()
                    ),
                ),
                Some(_) => {}
            }
        }
        for port in declared {
            if !use_.inputs.contains_key(&port.name) {
                self.problem(
                    format!("{path}.inputs.{}", port.name),
                    format!(
                        "input {:?} of {} is not wired (to dtaas.v1.tel.<pt>.<measurement>, \
                         <role>.<output> or dtaas.v1.dt.<dt>.out.<output>)",
                        port.name,
                        meta.address()
                    ),
                );
            }
        }
    }

    fn outputs(
        &mut self,
        use_: &AssetUse,
        meta: &AssetMeta,
        path: &str,
        tokens: &mut BTreeMap<String, String>,
    ) {
        for name in use_.outputs.keys() {
            if !meta.interface.outputs.iter().any(|p| &p.name == name) {
                self.problem(
                    format!("{path}.outputs.{name}"),
                    format!(
                        "asset {} has no output {name:?}{}",
                        meta.address(),
                        listing(meta.interface.outputs.iter().map(|p| p.name.as_str()))
                    ),
                );
            }
        }
        for port in &meta.interface.outputs {
            let token = output_token(use_, &port.name);
            let here = format!("{path}.outputs.{}", port.name);
            if let Err(e) = subject::validate_token("output", token) {
                self.problem(here, e.to_string());
            } else if let Some(other) = tokens.insert(token.to_owned(), use_.name.clone()) {
                self.problem(
                    here,
                    format!(
                        "role {other:?} publishes dtaas.v1.dt.<dt>.out.{token} already; \
                         give one of them another name in `outputs`"
                    ),
                );
            }
        }
    }

    fn params(&mut self, use_: &AssetUse, meta: &AssetMeta, path: &str) {
        let declared = &meta.interface.params;
        for (name, value) in &use_.params {
            let here = format!("{path}.params.{name}");
            let Some(param) = declared.iter().find(|p| &p.name == name) else {
                self.problem(
                    here,
                    format!(
                        "asset {} has no parameter {name:?}{}",
                        meta.address(),
                        listing(declared.iter().map(|p| p.name.as_str()))
                    ),
                );
                continue;
            };
            if !param.value_type.accepts(value) {
                self.problem(
                    here,
                    format!("{value} is not of type {}", param.value_type.as_str()),
                );
                continue;
            }
            if let Some(x) = value.as_f64() {
                let below = param.min.filter(|&min| x < min);
                let above = param.max.filter(|&max| x > max);
                if below.is_some() || above.is_some() {
                    self.problem(here, format!("{value} is not within {}", range(param)));
                }
            }
        }
        for param in declared {
            if param.default.is_none() && !use_.params.contains_key(&param.name) {
                self.problem(
                    format!("{path}.params.{}", param.name),
                    format!(
                        "parameter {:?} ({}) has no default and needs a value",
                        param.name,
                        param.value_type.as_str()
                    ),
                );
            }
        }
    }

    fn placement(&mut self, config: &DtConfig, use_: &AssetUse, meta: &AssetMeta, path: &str) {
        let resources = use_.resources.or(config.infrastructure.resources());
        if let Some(cpu) = resources.cpu.filter(|c| !(c.is_finite() && *c > 0.0)) {
            self.problem(format!("{path}.resources.cpu"), format!("{cpu} is not > 0"));
            return;
        }
        if resources.memory_mb == Some(0) {
            self.problem(format!("{path}.resources.memory_mb"), "0 is not > 0");
            return;
        }
        if !runnable(meta) {
            return;
        }
        let labels = constraints(config, use_);
        // Without any demand a DT may be created before the first node registers.
        if labels.is_empty() && resources.is_empty() {
            return;
        }
        if !self
            .catalog
            .nodes
            .iter()
            .any(|n| fits(n, &labels, resources))
        {
            let nodes: Vec<String> = self
                .catalog
                .nodes
                .iter()
                .map(|n| {
                    format!(
                        "{} ({} cpus, {} MiB, {:?})",
                        n.id, n.cpus, n.memory_mb, n.labels
                    )
                })
                .collect();
            self.problem(
                format!("{path}.constraints"),
                format!(
                    "no registered exec node offers labels {labels:?}, cpu {} and memory {} MiB; \
                     registered: {}",
                    resources.cpu.unwrap_or(0.0),
                    resources.memory_mb.unwrap_or(0),
                    if nodes.is_empty() {
                        "none".into()
                    } else {
                        nodes.join(", ")
                    }
                ),
            );
        }
    }
}

/// A value of type `from` may feed an input of type `to`.
fn compatible(from: ValueType, to: ValueType) -> bool {
    from == to || (from == ValueType::Integer && to == ValueType::Number)
}

fn range(param: &dtaas_schemas::asset::Param) -> String {
    let show = |b: Option<f64>| b.map_or_else(|| "…".to_owned(), |b| b.to_string());
    format!("{}..={}", show(param.min), show(param.max))
}

fn listing<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    if names.is_empty() {
        " (it declares none)".into()
    } else {
        format!(" (there are: {})", names.join(", "))
    }
}

/// Whether an asset runs as a process: a command, or DTaaS lifecycle scripts.
pub fn runnable(meta: &AssetMeta) -> bool {
    meta.run
        .as_ref()
        .is_some_and(|r| !r.command.is_empty() || !r.lifecycle.is_empty())
}

/// The token an output of `use_` is published under: renamed in `outputs`, or its name.
pub fn output_token<'a>(use_: &'a AssetUse, output: &'a str) -> &'a str {
    use_.outputs.get(output).map_or(output, String::as_str)
}

/// The node labels a use needs: the DT's and its own.
pub fn constraints(config: &DtConfig, use_: &AssetUse) -> BTreeMap<String, String> {
    let mut labels = config.infrastructure.constraints.clone();
    labels.extend(use_.constraints.clone());
    labels
}

/// Whether `node` has the labels and the total capacity for one process.
pub fn fits(node: &NodeInfo, labels: &BTreeMap<String, String>, resources: Resources) -> bool {
    labels.iter().all(|(k, v)| node.labels.get(k) == Some(v))
        && resources.cpu.is_none_or(|c| c <= node.cpus)
        && resources.memory_mb.is_none_or(|m| m <= node.memory_mb)
}

#[cfg(test)]
mod tests;
