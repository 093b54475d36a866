//! Where the node's groups go, from `[exec] cgroup` / `DTAAS_EXEC_CGROUP`: below exec's
//! own group in each hierarchy (`auto`), in one version's hierarchies only (`v1`,
//! `v2`), nowhere (`off`), or below a configured directory. A directory in the v2
//! mount is the parent of the v2 group; one in a v1 mount names a path of the
//! hierarchy that is the parent in every v1 hierarchy (`/sys/fs/cgroup/memory/dtaas`:
//! `/dtaas` in each); the other version stays as `auto`.

use std::path::PathBuf;

use super::mounts::{Hierarchy, Version};

/// Where runs' cgroups go: `[exec] cgroup` / `DTAAS_EXEC_CGROUP`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// `off`: process groups and rlimits only.
    Off,
    /// `auto`: below exec's own group in every hierarchy it can write.
    Auto,
    /// `v1` or `v2`: like `auto`, in hierarchies of that version only.
    Only(Version),
    /// A directory in a cgroup mount: the parent of the node's group in that version's
    /// hierarchies (in v1, the same path in each); the other version as `auto`.
    Below(PathBuf),
}

/// A hierarchy with the group the node's group goes below (`None`: this process is
/// in none of its groups) and whether the placement uses it (else only its leftovers
/// are cleared).
#[derive(Debug, PartialEq, Eq)]
pub struct Parent<'a> {
    pub hierarchy: &'a Hierarchy,
    pub path: Option<String>,
    pub used: bool,
}

impl Placement {
    /// The setting's text: `off`, `auto` (or empty), `v1`, `v2`, or a directory.
    pub fn parse(text: &str) -> Self {
        match text.trim() {
            "off" => Self::Off,
            "auto" | "" => Self::Auto,
            "v1" => Self::Only(Version::V1),
            "v2" => Self::Only(Version::V2),
            dir => Self::Below(PathBuf::from(dir)),
        }
    }
}

/// Why runs fall back to process groups and rlimits: no cgroup for them.
#[derive(Debug, thiserror::Error)]
pub enum NoCgroups {
    #[error("cgroups are off ([exec] cgroup = \"off\")")]
    Off,
    #[error("no cgroup file system is mounted")]
    NoMount,
    #[error("{} is in no cgroup mount", dir.display())]
    Outside { dir: PathBuf },
    #[error("no cgroup hierarchy takes runs' groups: {0}")]
    NoneUsable(String),
}

impl Placement {
    /// Where the node's group goes in each of `hierarchies`.
    pub fn parents<'a>(&self, hierarchies: &'a [Hierarchy]) -> Result<Vec<Parent<'a>>, NoCgroups> {
        if *self == Self::Off {
            return Err(NoCgroups::Off);
        }
        if hierarchies.is_empty() {
            return Err(NoCgroups::NoMount);
        }
        let configured = match self {
            Self::Below(dir) => {
                let hierarchy = hierarchies
                    .iter()
                    .filter(|h| dir.starts_with(&h.mount))
                    .max_by_key(|h| h.mount.as_os_str().len())
                    .ok_or_else(|| NoCgroups::Outside { dir: dir.clone() })?;
                hierarchy.path(dir).map(|path| (hierarchy.version, path))
            }
            _ => None,
        };
        Ok(hierarchies
            .iter()
            .map(|hierarchy| Parent {
                hierarchy,
                path: configured
                    .as_ref()
                    .filter(|(version, _)| *version == hierarchy.version)
                    .map(|(_, path)| path.clone())
                    .or_else(|| hierarchy.own.clone()),
                used: match self {
                    Self::Only(only) => *only == hierarchy.version,
                    _ => true,
                },
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::mounts;

    const MOUNTS: &str = "\
32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
";
    const CGROUP: &str = "4:memory:/sandbox/a\n2:cpu,cpuacct:/\n0::/session\n";

    /// `(mount, parent, used)` of each hierarchy for `setting`.
    fn plan(setting: &str) -> Result<Vec<(String, Option<String>, bool)>, NoCgroups> {
        let hierarchies = mounts::parse(MOUNTS, CGROUP);
        let parents = Placement::parse(setting).parents(&hierarchies)?;
        Ok(parents
            .into_iter()
            .map(|p| (p.hierarchy.mount.display().to_string(), p.path, p.used))
            .collect())
    }

    fn row(mount: &str, parent: &str, used: bool) -> (String, Option<String>, bool) {
        (format!("/sys/fs/cgroup/{mount}"), Some(parent.into()), used)
    }

    #[test]
    fn each_setting_puts_the_node_group_where_it_says() {
        assert_eq!(
            plan("auto").unwrap(),
            [
                row("cpu", "/", true),
                row("memory", "/sandbox/a", true),
                row("unified", "/session", true)
            ]
        );
        assert_eq!(
            plan("v1").unwrap(),
            [
                row("cpu", "/", true),
                row("memory", "/sandbox/a", true),
                row("unified", "/session", false)
            ]
        );
        assert_eq!(
            plan("/sys/fs/cgroup/memory/dtaas").unwrap(),
            [
                row("cpu", "/dtaas", true),
                row("memory", "/dtaas", true),
                row("unified", "/session", true)
            ]
        );
        assert_eq!(
            plan("/sys/fs/cgroup/unified/svc/exec").unwrap(),
            [
                row("cpu", "/", true),
                row("memory", "/sandbox/a", true),
                row("unified", "/svc/exec", true)
            ]
        );
        assert!(matches!(plan("off"), Err(NoCgroups::Off)));
        let outside = plan("/tmp/x").unwrap_err();
        assert_eq!(outside.to_string(), "/tmp/x is in no cgroup mount");
        let none = Placement::Auto.parents(&[]).unwrap_err();
        assert!(matches!(none, NoCgroups::NoMount));
    }
}
