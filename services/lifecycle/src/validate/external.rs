//! `C_e` and wiring across DTs: exports name outputs the DT publishes, dashboards
//! are absolute http(s) URLs, and an input wired to `dtaas.v1.dt.<dt>.out.<output>`
//! reads an output that DT publishes — any output of a DT of the same configuration
//! tree or of the caller's own, only an exported one of another user's DT. A refusal
//! about another user's DT reads the same whether the DT exists or not, so nothing
//! it does not export is revealed.

use std::collections::{BTreeMap, HashMap};

use dtaas_schemas::asset::{AssetMeta, ValueType};
use dtaas_schemas::dt_config::{DtConfig, DtState};
use dtaas_schemas::subject;

use super::{at, compatible, listing, runnable, Validator};
use crate::error::Error;

/// What the caller may read of a registered DT outside the configuration tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Peer {
    /// The caller's own DT, registered before DTs recorded their outputs: any output
    /// is accepted.
    Unrecorded,
    /// The outputs the caller may read, token → type (`None`: not recorded): every
    /// output of the caller's own DT, only the exported ones of another user's.
    Readable {
        own: bool,
        outputs: BTreeMap<String, Option<ValueType>>,
    },
}

impl Peer {
    /// What `user` may read of `dt`.
    pub fn of(dt: &DtState, user: &str) -> Peer {
        let recorded = dt.outputs.as_ref();
        if dt.owner == user {
            return match recorded {
                None => Peer::Unrecorded,
                Some(outputs) => Peer::Readable {
                    own: true,
                    outputs: outputs.iter().map(|(k, t)| (k.clone(), Some(*t))).collect(),
                },
            };
        }
        let exported = dt.config.external.exports.iter().filter_map(|export| {
            let value_type = match recorded {
                None => None,
                Some(outputs) => Some(*outputs.get(export)?),
            };
            Some((export.clone(), value_type))
        });
        Peer::Readable {
            own: false,
            outputs: exported.collect(),
        }
    }
}

/// Output token → type of every output the processes of `config` (not its children)
/// publish: the declared outputs of its runnable uses, renamed as `outputs` says.
pub fn published(
    config: &DtConfig,
    assets: &HashMap<String, Result<AssetMeta, Error>>,
) -> BTreeMap<String, ValueType> {
    let mut tokens = BTreeMap::new();
    for use_ in &config.assets {
        let Some(Ok(meta)) = assets.get(&use_.asset) else {
            continue;
        };
        if !runnable(meta) {
            continue;
        }
        for port in &meta.interface.outputs {
            let token = super::output_token(use_, &port.name);
            tokens.insert(token.to_owned(), port.value_type);
        }
    }
    tokens
}

/// What `config` publishes, or `None` when one of its assets did not resolve (that
/// has a problem of its own; checking against a partial list would add false ones).
fn known_outputs(
    config: &DtConfig,
    assets: &HashMap<String, Result<AssetMeta, Error>>,
) -> Option<BTreeMap<String, ValueType>> {
    let resolved = config
        .assets
        .iter()
        .all(|u| matches!(assets.get(&u.asset), Some(Ok(_))));
    resolved.then(|| published(config, assets))
}

/// DT id → what it publishes (see [`known_outputs`]), for every DT of the tree; the
/// first of two DTs with one id counts (the second has a problem of its own).
pub(super) fn tree_outputs(
    config: &DtConfig,
    assets: &HashMap<String, Result<AssetMeta, Error>>,
) -> HashMap<String, Option<BTreeMap<String, ValueType>>> {
    let mut tree = HashMap::new();
    let mut pending = vec![config];
    while let Some(dt) = pending.pop() {
        tree.entry(dt.id.clone())
            .or_insert_with(|| known_outputs(dt, assets));
        pending.extend(dt.children.iter().rev());
    }
    tree
}

impl Validator<'_, '_> {
    /// `C_e` of `config`: its exports and dashboards.
    pub(super) fn external(&mut self, config: &DtConfig, prefix: &str) {
        let outputs = known_outputs(config, self.catalog.assets);
        let mut first: HashMap<&str, usize> = HashMap::new();
        for (i, export) in config.external.exports.iter().enumerate() {
            let here = at(prefix, &format!("external.exports[{i}]"));
            if let Ok((_, token)) = subject::parse_dt_output(export) {
                self.problem(
                    here,
                    format!("{export:?} is a subject; write only its output token {token:?}"),
                );
                continue;
            }
            if let Err(e) = subject::validate_token("export", export) {
                self.problem(here, e.to_string());
                continue;
            }
            if let Some(j) = first.get(export.as_str()) {
                self.problem(
                    here,
                    format!("{export:?} is exported twice (also external.exports[{j}])"),
                );
                continue;
            }
            first.insert(export, i);
            if let Some(outputs) = &outputs {
                if !outputs.contains_key(export) {
                    self.problem(
                        here,
                        format!(
                            "no role of DT {:?} publishes an output {export:?}{}",
                            config.id,
                            listing(outputs.keys().map(String::as_str))
                        ),
                    );
                }
            }
        }
        for (i, sink) in config.external.event_sinks.iter().enumerate() {
            if let Err(why) = event_sink(sink) {
                self.problem(at(prefix, &format!("external.event_sinks[{i}]")), why);
            }
        }
        for (i, url) in config.external.dashboards.iter().enumerate() {
            if let Err(why) = dashboard(url) {
                self.problem(at(prefix, &format!("external.dashboards[{i}]")), why);
            }
        }
    }

    /// An input `input` (of type `takes`) wired to `source` =
    /// `dtaas.v1.dt.<dt>.out.<output>`.
    pub(super) fn dt_output_input(
        &mut self,
        here: String,
        source: &str,
        (dt, output): (&str, &str),
        (input, takes): (&str, ValueType),
    ) {
        let value_type = if let Some(known) = self.tree.get(dt) {
            // An unresolved asset of that DT has its problem already.
            let Some(outputs) = known else { return };
            match outputs.get(output) {
                Some(t) => Some(*t),
                None => {
                    let there = listing(outputs.keys().map(String::as_str));
                    self.problem(
                        here,
                        format!(
                            "DT {dt:?} of this configuration publishes no output {output:?}{there}"
                        ),
                    );
                    return;
                }
            }
        } else {
            match self.catalog.dts.get(dt) {
                Some(Peer::Unrecorded) => return,
                Some(Peer::Readable { own: true, outputs }) => match outputs.get(output) {
                    Some(t) => *t,
                    None => {
                        let there = listing(outputs.keys().map(String::as_str));
                        self.problem(
                            here,
                            format!("your DT {dt:?} publishes no output {output:?}{there}"),
                        );
                        return;
                    }
                },
                other => {
                    let exported = match other {
                        Some(Peer::Readable { outputs, .. }) => outputs.clone(),
                        _ => BTreeMap::new(),
                    };
                    match exported.get(output) {
                        Some(t) => *t,
                        None => {
                            let exports = if exported.is_empty() {
                                String::new()
                            } else {
                                let names: Vec<&str> =
                                    exported.keys().map(String::as_str).collect();
                                format!(" (DT {dt} exports: {})", names.join(", "))
                            };
                            self.problem(
                                here,
                                format!(
                                    "no DT {dt:?} of yours, and no DT exports {source}{exports}"
                                ),
                            );
                            return;
                        }
                    }
                }
            }
        };
        if let Some(from) = value_type.filter(|&t| !compatible(t, takes)) {
            self.problem(
                here,
                format!(
                    "output {source} is {} but input {input} takes {}",
                    from.as_str(),
                    takes.as_str()
                ),
            );
        }
    }
}

/// Whether lifecycle may publish copies of a DT's events on `sink`: a subject to
/// publish on (tokens without wildcards or spaces) outside what the platform and the
/// server own. Lifecycle publishes with the platform's credentials, so a sink in
/// `dtaas.` could put a DT's events where commands, telemetry or other users'
/// requests go, and `$…` or `_INBOX.…` where the server's APIs and replies go.
pub fn event_sink(sink: &str) -> Result<(), String> {
    if sink.is_empty()
        || sink
            .split('.')
            .any(|token| subject::validate_token("event sink", token).is_err())
    {
        return Err(format!(
            "{sink:?} is not a subject to publish on: dot-separated tokens, without `*`, \
             `>` or spaces (e.g. \"alerts.my-dt\")"
        ));
    }
    let reserved = ["dtaas.", "$", "_INBOX."];
    if let Some(prefix) = reserved.iter().find(|p| sink.starts_with(**p)) {
        return Err(format!(
            "{sink:?} is in {prefix}…, which the platform or the server owns; the DT's \
             events are on dtaas.v1.evt.dt.<dt>.<state> already, and a sink is a subject \
             of yours (e.g. \"alerts.my-dt\")"
        ));
    }
    Ok(())
}

/// Whether `url` is an absolute http(s) URL with a host.
fn dashboard(url: &str) -> Result<(), String> {
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(()),
        Ok(_) => Err(format!(
            "{url:?} is not an http:// or https:// URL with a host"
        )),
        Err(e) => Err(format!("{url:?} is not an absolute http(s) URL: {e}")),
    }
}

#[cfg(test)]
mod tests;
