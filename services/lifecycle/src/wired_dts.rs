//! The registered DTs a configuration's inputs read from: every
//! `dtaas.v1.dt.<dt>.out.<output>` source whose DT is outside the configuration's own
//! tree, looked up before validation (which talks to no one) as what the caller may
//! read of it.

use std::collections::{HashMap, HashSet};

use dtaas_schemas::dt_config::DtConfig;
use dtaas_schemas::subject;

use crate::core::{flatten, Core};
use crate::error::Result;
use crate::validate::Peer;

impl Core {
    /// DT id → what `user` may read of it, for every registered DT outside `config`'s
    /// tree that one of the tree's inputs is wired to.
    pub async fn wired_dts(&self, user: &str, config: &DtConfig) -> Result<HashMap<String, Peer>> {
        let mut tree = Vec::new();
        flatten(config, None, &mut tree);
        let inside: HashSet<&str> = tree.iter().map(|(c, _)| c.id.as_str()).collect();
        let mut ids: Vec<&str> = tree
            .iter()
            .flat_map(|(c, _)| &c.assets)
            .flat_map(|u| u.inputs.values())
            .filter_map(|source| subject::parse_dt_output(source).ok())
            .map(|(dt, _)| dt)
            .filter(|dt| !inside.contains(dt))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let mut wired = HashMap::new();
        for id in ids {
            if let Some(entry) = self.registry.get(id).await? {
                wired.insert(id.to_owned(), Peer::of(&entry.dt, user));
            }
        }
        Ok(wired)
    }
}
