//! Who sees which DT: a user sees the DTs they own, a graph admin sees every DT. The
//! store answers with every DT; these filters cut the answer down to the caller's.

use std::collections::HashMap;

use dtaas_schemas::graph::AssetUser;

use crate::store::TreeRows;

/// The caller of a graph query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Viewer {
    /// A graph admin (`[graph] admins`): sees every DT, owned or not.
    Admin,
    /// Any other user: sees only the DTs recorded as theirs.
    User(String),
}

impl Viewer {
    /// `user` as a viewer: an admin when `admins` names them.
    pub fn new(user: &str, admins: &[String]) -> Self {
        if admins.iter().any(|a| a == user) {
            Self::Admin
        } else {
            Self::User(user.to_owned())
        }
    }

    /// Whether the viewer sees `dt`, whose recorded owners are `owners`. A DT without
    /// a recorded owner (known from before owners were recorded) only admins see.
    pub fn sees(&self, owners: &HashMap<String, String>, dt: &str) -> bool {
        match self {
            Self::Admin => true,
            Self::User(user) => owners.get(dt) == Some(user),
        }
    }

    /// The DTs among `dts` whose owner the store must be asked for: none for an admin.
    pub fn to_check<'a>(&self, dts: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        match self {
            Self::Admin => Vec::new(),
            Self::User(_) => {
                let mut ids: Vec<String> = dts.into_iter().map(str::to_owned).collect();
                ids.sort();
                ids.dedup();
                ids
            }
        }
    }
}

/// `rows` without the DTs `viewer` does not see and without what hangs off them; a
/// child the viewer does not see is left out with its whole subtree. What a seen DT
/// reads stays: the edge names only the source DT and output its own configuration
/// wires, none of the source's internals.
pub fn tree(viewer: &Viewer, owners: &HashMap<String, String>, rows: TreeRows) -> TreeRows {
    let sees = |dt: &String| viewer.sees(owners, dt);
    TreeRows {
        dts: rows.dts.into_iter().filter(|d| sees(&d.id)).collect(),
        edges: rows
            .edges
            .into_iter()
            .filter(|(parent, child)| sees(parent) && sees(child))
            .collect(),
        assets: rows.assets.into_iter().filter(|(d, _)| sees(d)).collect(),
        pts: rows.pts.into_iter().filter(|(d, _)| sees(d)).collect(),
        processes: rows
            .processes
            .into_iter()
            .filter(|(d, _)| sees(d))
            .collect(),
        exports: rows.exports.into_iter().filter(|(d, _)| sees(d)).collect(),
        reads: rows.reads.into_iter().filter(|(d, _)| sees(d)).collect(),
    }
}

/// The asset users `viewer` sees.
pub fn impact(
    viewer: &Viewer,
    owners: &HashMap<String, String>,
    users: Vec<AssetUser>,
) -> Vec<AssetUser> {
    users
        .into_iter()
        .filter(|u| viewer.sees(owners, &u.dt))
        .collect()
}

/// The owner whose DTs a store query must be limited to: none for an admin.
pub fn owner_filter(viewer: &Viewer) -> Option<String> {
    match viewer {
        Viewer::Admin => None,
        Viewer::User(user) => Some(user.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_see_their_own_and_admins_everything() {
        let owners: HashMap<String, String> = [("a".into(), "alice".into())].into();
        let alice = Viewer::new("alice", &["root".into()]);
        let bob = Viewer::new("bob", &["root".into()]);
        let root = Viewer::new("root", &["root".into()]);
        assert!(alice.sees(&owners, "a"));
        assert!(!bob.sees(&owners, "a"));
        assert!(!alice.sees(&owners, "unowned"), "no owner: admins only");
        assert!(root.sees(&owners, "unowned") && root.sees(&owners, "a"));
        assert!(root.to_check(["a"]).is_empty(), "admins need no lookup");
        assert_eq!(bob.to_check(["b", "a", "b"]), ["a", "b"]);
    }
}
