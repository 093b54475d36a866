//! The node's groups: `dtaas-exec-<pid>` in the cgroup v2 hierarchy (with the
//! controllers its parent hands down) and in each cgroup v1 hierarchy holding a
//! controller v2 does not cover; the runs' groups are made inside (`group.rs`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::placement::{NoCgroups, Placement};
use super::{mounts, sweep, v1, v2, Dir, Group, Limits, Serves, Version};

/// How exec keeps a node's runs apart: the node's group in each hierarchy it uses.
#[derive(Debug)]
pub struct Cgroups {
    /// v1 groups first, the v2 group (when there is one) last.
    dirs: Vec<Dir>,
    /// Hierarchies that could have served but did not, and why, for the log.
    pub skipped: Vec<String>,
    next: AtomicU64,
}

/// The reason a hierarchy is not used, for the log.
fn skip(hierarchy: &mounts::Hierarchy, why: impl std::fmt::Display) -> String {
    format!(
        "{} at {}: {why}",
        hierarchy.version,
        hierarchy.mount.display()
    )
}

/// Makes the node's group `name` in `hierarchy`, below `parent` (a path of the
/// hierarchy); answers its directory and path.
fn node_dir(
    hierarchy: &mounts::Hierarchy,
    parent: Option<&str>,
    name: &str,
) -> Result<(PathBuf, String), String> {
    let parent = parent.ok_or_else(|| skip(hierarchy, "this process is in none of its groups"))?;
    let dir = hierarchy.dir(parent).join(name);
    if dir.exists() {
        // A previous life with the same pid (PID 1 of a container) left it.
        sweep::sweep_node_dir(&dir, &mut BTreeSet::new());
    }
    std::fs::create_dir(&dir)
        .map_err(|e| skip(hierarchy, format!("cannot create {}: {e}", dir.display())))?;
    if hierarchy.version == Version::V1 {
        if let Err(e) = v1::prepare(&dir, &hierarchy.controllers) {
            let _ = std::fs::remove_dir(&dir);
            return Err(skip(
                hierarchy,
                format!("cannot set up {}: {e}", dir.display()),
            ));
        }
    }
    Ok((dir, mounts::join(parent, name)))
}

impl Cgroups {
    /// Sets up the node's groups as `placement` says. `Err` says why runs fall back to
    /// rlimits: no hierarchy took a group.
    pub fn create(placement: &Placement) -> Result<Self, NoCgroups> {
        let hierarchies = mounts::current();
        let parents = placement.parents(&hierarchies)?;
        // Gone nodes' empty groups, in every hierarchy a node may have used.
        for parent in &parents {
            let hierarchy = parent.hierarchy;
            let useful =
                hierarchy.version == Version::V2 || v1::serves(&hierarchy.controllers).any();
            if let (true, Some(path)) = (useful, &parent.path) {
                sweep::remove_empty_leftovers(&hierarchy.dir(path));
            }
        }
        let name = format!("dtaas-exec-{}", std::process::id());
        let mut skipped = Vec::new();
        let mut v2_dir = None;
        if let Some(parent) = parents
            .iter()
            .find(|p| p.used && p.hierarchy.version == Version::V2)
        {
            let hierarchy = parent.hierarchy;
            match node_dir(hierarchy, parent.path.as_deref(), &name) {
                Ok((path, in_hierarchy)) => {
                    let mut serves = v2::enable_controllers(&path);
                    serves.kill = path.join("cgroup.kill").exists();
                    v2_dir = Some(Dir {
                        version: Version::V2,
                        controllers: Vec::new(),
                        serves,
                        line: hierarchy.line(&in_hierarchy),
                        path,
                    });
                }
                Err(reason) => skipped.push(reason),
            }
        }
        let mut taken = v2_dir.as_ref().map(|d| d.serves).unwrap_or_default();
        let mut dirs = Vec::new();
        for parent in parents
            .iter()
            .filter(|p| p.used && p.hierarchy.version == Version::V1)
        {
            let hierarchy = parent.hierarchy;
            let serves = v1::serves(&hierarchy.controllers).beyond(taken);
            if !serves.any() {
                continue;
            }
            match node_dir(hierarchy, parent.path.as_deref(), &name) {
                Ok((path, in_hierarchy)) => {
                    taken = taken.with(serves);
                    dirs.push(Dir {
                        version: Version::V1,
                        controllers: hierarchy.controllers.clone(),
                        serves,
                        line: hierarchy.line(&in_hierarchy),
                        path,
                    });
                }
                Err(reason) => skipped.push(reason),
            }
        }
        dirs.extend(v2_dir);
        if dirs.is_empty() {
            return Err(NoCgroups::NoneUsable(if skipped.is_empty() {
                "none is mounted that exec would use".into()
            } else {
                skipped.join("; ")
            }));
        }
        Ok(Self {
            dirs,
            skipped,
            next: AtomicU64::new(1),
        })
    }

    /// The node's group in each hierarchy, for the log and the leftovers record.
    pub fn dirs(&self) -> impl Iterator<Item = &Path> {
        self.dirs.iter().map(|d| d.path.as_path())
    }

    /// What runs get, for the log: `memory,cpu,pids (cgroup v1), kill via cgroup v2,
    /// CPU time via cgroup v2`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for version in [Version::V2, Version::V1] {
            let limits = self
                .dirs
                .iter()
                .filter(|d| d.version == version)
                .fold(Serves::default(), |all, d| all.with(d.serves))
                .limits();
            if !limits.is_empty() {
                parts.push(format!("{} ({version})", limits.join(",")));
            }
        }
        if parts.is_empty() {
            parts.push("rlimits only (no limiting controller)".into());
        }
        parts.push(match self.dirs.iter().find(|d| d.serves.kill) {
            Some(d) if d.version == Version::V2 => "kill via cgroup v2".into(),
            Some(_) => "kill via cgroup v1 freezer".into(),
            None => "kill by signalling members until none is left".into(),
        });
        parts.push(match self.dirs.iter().find(|d| d.serves.cpu_time) {
            Some(d) => format!("CPU time via {}", d.version),
            None => "CPU time from /proc".into(),
        });
        parts.join(", ")
    }

    /// A new group for one run, with `limits` where the controllers allow.
    pub fn group(&self, limits: Limits) -> std::io::Result<Group> {
        let name = format!("run-{}", self.next.fetch_add(1, Ordering::Relaxed));
        let mut group = Group {
            dirs: Vec::with_capacity(self.dirs.len()),
            proc_line: String::new(),
            memory_limit: None,
        };
        for node in &self.dirs {
            let path = node.path.join(&name);
            if let Err(e) = std::fs::create_dir(&path) {
                group.remove();
                return Err(e);
            }
            let dir = Dir {
                path,
                line: format!("{}/{name}", node.line),
                ..node.clone()
            };
            group.dirs.push(dir.clone());
            let applied = match dir.version {
                Version::V1 => v1::prepare(&dir.path, &dir.controllers)
                    .and_then(|()| v1::limit(&dir.path, dir.serves, &limits)),
                Version::V2 => v2::limit(&dir.path, dir.serves, &limits),
            };
            if let Err(e) = applied {
                group.remove();
                return Err(e);
            }
            if dir.serves.memory && limits.memory_mb.is_some() {
                group.memory_limit = Some(dir.version);
            }
            group.proc_line = dir.line;
        }
        Ok(group)
    }

    /// Removes the node's groups after its runs are gone (shutdown).
    pub fn remove(&self) {
        for dir in &self.dirs {
            let _ = std::fs::remove_dir(&dir.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn a_run_has_a_group_in_each_hierarchy_and_waits_for_the_last() {
        let v1_node = tempfile::tempdir().unwrap();
        let v2_node = tempfile::tempdir().unwrap();
        let dir = |version, serves, path: &Path, line: &str| Dir {
            version,
            controllers: vec!["memory".into()],
            serves,
            path: path.to_owned(),
            line: line.into(),
        };
        let memory = Serves {
            memory: true,
            ..Serves::default()
        };
        let v2 = Serves {
            cpu_time: true,
            kill: true,
            ..Serves::default()
        };
        let cgroups = Cgroups {
            dirs: vec![
                dir(
                    Version::V1,
                    memory,
                    v1_node.path(),
                    "4:memory:/x/dtaas-exec-1",
                ),
                dir(Version::V2, v2, v2_node.path(), "0::/dtaas-exec-1"),
            ],
            skipped: Vec::new(),
            next: AtomicU64::new(1),
        };
        assert_eq!(
            cgroups.describe(),
            "memory (cgroup v1), kill via cgroup v2, CPU time via cgroup v2"
        );
        let limits = Limits {
            memory_mb: Some(64),
            cpu: Some(0.5),
            pids: Some(10),
        };
        let group = cgroups.group(limits).unwrap();
        assert_eq!(group.proc_line, "0::/dtaas-exec-1/run-1");
        assert_eq!(group.dirs[0].line, "4:memory:/x/dtaas-exec-1/run-1");
        assert_eq!(group.memory_limit, Some(Version::V1));
        let read = |node: &Path, f: &str| std::fs::read_to_string(node.join("run-1").join(f)).ok();
        assert_eq!(
            read(v1_node.path(), "memory.limit_in_bytes").as_deref(),
            Some("67108864")
        );
        assert_eq!(read(v2_node.path(), "cpu.max"), None, "no cpu controller");
        let second = cgroups
            .group(Limits {
                memory_mb: None,
                ..limits
            })
            .unwrap();
        assert_eq!(second.memory_limit, None);
        assert_eq!(Placement::parse("v1"), Placement::Only(Version::V1));
        assert_eq!(Placement::parse(""), Placement::Auto);
        assert_eq!(
            Placement::parse("/sys/fs/cgroup/x"),
            Placement::Below("/sys/fs/cgroup/x".into())
        );
    }
}
