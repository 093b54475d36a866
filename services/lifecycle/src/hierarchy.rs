//! A DT's tree as the registry holds it: the DT and every DT below it, each its own
//! entry. Verbs that act on a whole tree (`analyze`, `clean`, `delete`) walk it in
//! the order they need from this one list.

use dtaas_schemas::dt_config::DtState;

use crate::core::Core;
use crate::error::Result;

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
}
