//! A DT's tree as the registry holds it: the DT and every DT below it, each its own
//! entry. Verbs that act on a whole tree (`analyze`, `clean`, `delete`) walk it in
//! the order they need from this one list.

use dtaas_schemas::dt_config::DtState;

use crate::core::Core;
use crate::error::{Error, Result};

/// How many parents up `top_of` follows before it calls the registry broken (a
/// configuration nests at most this deep too, see the graph's `MAX_DEPTH`).
const MAX_DEPTH: usize = 64;

impl Core {
    /// `user`'s DT `id` and its descendants, parents before their children (depth
    /// first, children in configuration order). A child the configuration names but
    /// the registry does not hold as this DT's child (a half-done delete) is left out.
    pub async fn subtree(&self, user: &str, id: &str) -> Result<Vec<DtState>> {
        let root = self.registry.get_owned(user, id).await?.dt;
        let mut tree = Vec::new();
        let mut pending = vec![root];
        while let Some(dt) = pending.pop() {
            let mut children = Vec::with_capacity(dt.config.children.len());
            for child in &dt.config.children {
                if let Some(entry) = self.registry.get(&child.id).await? {
                    if entry.dt.parent.as_deref() == Some(dt.id.as_str()) {
                        children.push(entry.dt);
                    }
                }
            }
            tree.push(dt);
            // Popped in configuration order.
            pending.extend(children.into_iter().rev());
        }
        Ok(tree)
    }

    /// The id of the top DT of `dt`'s tree (`dt` itself when it has no parent).
    pub async fn top_of(&self, dt: &DtState) -> Result<String> {
        let mut top = dt.id.clone();
        let mut parent = dt.parent.clone();
        for _ in 0..MAX_DEPTH {
            let Some(id) = parent else {
                return Ok(top);
            };
            parent = self.registry.get(&id).await?.and_then(|v| v.dt.parent);
            top = id;
        }
        Err(Error::Internal(format!(
            "DT {} has more than {MAX_DEPTH} parents above it; the registry is inconsistent",
            dt.id
        )))
    }
}
