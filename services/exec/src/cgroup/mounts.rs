//! Where the cgroup hierarchies are mounted and where a process sits in each, read from
//! `/proc/self/mountinfo` and `/proc/self/cgroup`.
//!
//! A host has a cgroup v2 hierarchy, cgroup v1 hierarchies (each holding one controller
//! or several mounted together, such as `cpu,cpuacct`), or both (a hybrid host: v2
//! mounted at `/sys/fs/cgroup/unified`, often without controllers, next to v1). A mount
//! may show only part of its hierarchy (a container sees its own subtree), so a group's
//! directory is the mount point joined with the group's path below the mount's root.

use std::fmt;
use std::path::{Path, PathBuf};

/// The cgroup version of a hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V1 => "cgroup v1",
            Self::V2 => "cgroup v2",
        })
    }
}

/// The controllers a kernel can have in v1; everything else in a v1 mount's options
/// is a flag (`rw`, `noprefix`) or a name (`name=systemd`).
const V1_CONTROLLERS: &[&str] = &[
    "cpuset",
    "cpu",
    "cpuacct",
    "blkio",
    "io",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "net_prio",
    "perf_event",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// One cgroup hierarchy this process sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub version: Version,
    /// The controllers of a v1 hierarchy (several when they are mounted together);
    /// empty for v2, where each group lists what it offers in `cgroup.controllers`.
    pub controllers: Vec<String>,
    /// Where it is mounted.
    pub mount: PathBuf,
    /// The group of the hierarchy the mount shows (`/` unless it shows a subtree).
    pub mount_root: String,
    /// This process's group, as `/proc/self/cgroup` names it; `None` when that file
    /// has no line for the hierarchy.
    pub own: Option<String>,
    /// How this hierarchy's line in `/proc/<pid>/cgroup` starts: `0::` (v2),
    /// `4:memory:` or `2:cpu,cpuacct:` (v1).
    pub line_prefix: String,
}

impl Hierarchy {
    /// Whether this v1 hierarchy holds `controller`.
    pub fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }

    /// The directory of the group `path` (a path of the hierarchy).
    pub fn dir(&self, path: &str) -> PathBuf {
        let root = self.mount_root.trim_end_matches('/');
        let relative = path
            .strip_prefix(root)
            .filter(|rest| rest.is_empty() || rest.starts_with('/'))
            .unwrap_or(path);
        self.mount.join(relative.trim_start_matches('/'))
    }

    /// The path in the hierarchy of `dir`, a directory below the mount; `None` when
    /// it lies outside.
    pub fn path(&self, dir: &Path) -> Option<String> {
        let inside = dir.strip_prefix(&self.mount).ok()?;
        Some(join(&self.mount_root, &inside.display().to_string()))
    }

    /// The line `/proc/<pid>/cgroup` shows for a process in group `path`.
    pub fn line(&self, path: &str) -> String {
        format!("{}{path}", self.line_prefix)
    }
}

/// `parent/child` as a path of a hierarchy (`/` stays the root).
pub fn join(parent: &str, child: &str) -> String {
    let child = child.trim_matches('/');
    if child.is_empty() {
        return parent.to_owned();
    }
    format!("{}/{child}", parent.trim_end_matches('/'))
}

/// The hierarchies this process sees now.
pub fn current() -> Vec<Hierarchy> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    parse(&mountinfo, &cgroup)
}

/// The cgroup hierarchies of a `mountinfo` text, each with the group a
/// `/proc/<pid>/cgroup` text puts the process in. A hierarchy mounted twice counts
/// once (its first mount); named v1 hierarchies without controllers are left out.
pub fn parse(mountinfo: &str, cgroup: &str) -> Vec<Hierarchy> {
    let mut found: Vec<Hierarchy> = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut right = right.split_whitespace();
        let (Some(fstype), Some(_source), Some(options)) =
            (right.next(), right.next(), right.next())
        else {
            continue;
        };
        let left: Vec<&str> = left.split_whitespace().collect();
        let (Some(root), Some(point)) = (left.get(3), left.get(4)) else {
            continue;
        };
        let (version, controllers) = match fstype {
            "cgroup2" => (Version::V2, Vec::new()),
            "cgroup" => {
                let controllers: Vec<String> = options
                    .split(',')
                    .filter(|o| V1_CONTROLLERS.contains(o))
                    .map(str::to_owned)
                    .collect();
                if controllers.is_empty() {
                    continue;
                }
                (Version::V1, controllers)
            }
            _ => continue,
        };
        if found
            .iter()
            .any(|h| h.version == version && h.controllers == controllers)
        {
            continue;
        }
        let own_line = cgroup
            .lines()
            .find_map(|l| own_group(l, version, &controllers));
        let (line_prefix, own) = match own_line {
            Some((prefix, path)) => (prefix, Some(path)),
            None if version == Version::V2 => ("0::".to_owned(), None),
            None => (format!("?:{}:", controllers.join(",")), None),
        };
        found.push(Hierarchy {
            version,
            controllers,
            mount: PathBuf::from(unescape(point)),
            mount_root: unescape(root),
            own,
            line_prefix,
        });
    }
    found
}

/// `(prefix, path)` of a `/proc/<pid>/cgroup` line (`N:<controllers>:<path>`) when it
/// is the line of the hierarchy with `version` and `controllers`.
fn own_group(line: &str, version: Version, controllers: &[String]) -> Option<(String, String)> {
    let mut parts = line.splitn(3, ':');
    let (id, listed, path) = (parts.next()?, parts.next()?, parts.next()?);
    let matches = match version {
        Version::V2 => id == "0" && listed.is_empty(),
        Version::V1 => {
            let mut listed: Vec<&str> = listed
                .split(',')
                .filter(|c| V1_CONTROLLERS.contains(c))
                .collect();
            let mut wanted: Vec<&str> = controllers.iter().map(String::as_str).collect();
            listed.sort_unstable();
            wanted.sort_unstable();
            !wanted.is_empty() && listed == wanted
        }
    };
    matches.then(|| (format!("{id}:{listed}:"), path.to_owned()))
}

/// Undoes mountinfo's octal escapes (`\040` for a space) in a path.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)))
            .and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok());
        match octal {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTS: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_CGROUP: &str = "\
9:name=systemd:/
8:pids:/
6:freezer:/
4:memory:/process_api/92a1
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
";

    fn by<'a>(found: &'a [Hierarchy], controller: &str) -> &'a Hierarchy {
        found.iter().find(|h| h.has(controller)).unwrap()
    }

    #[test]
    fn hybrid_host() {
        let found = parse(HYBRID_MOUNTS, HYBRID_CGROUP);
        assert_eq!(found.len(), 7, "{found:#?}");
        let v2 = found.iter().find(|h| h.version == Version::V2).unwrap();
        assert_eq!(v2.mount, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(v2.own.as_deref(), Some("/"));
        assert_eq!(v2.line("/dtaas-exec-7/run-1"), "0::/dtaas-exec-7/run-1");
        let memory = by(&found, "memory");
        assert_eq!(memory.own.as_deref(), Some("/process_api/92a1"));
        assert_eq!(
            memory.dir("/process_api/92a1/dtaas-exec-7"),
            Path::new("/sys/fs/cgroup/memory/process_api/92a1/dtaas-exec-7")
        );
        assert_eq!(memory.line("/x"), "4:memory:/x");
        assert_eq!(by(&found, "pids").line_prefix, "8:pids:");
        assert!(!found.iter().any(|h| h.mount.ends_with("systemd")));
    }

    #[test]
    fn v1_only_host_with_cpu_and_cpuacct_together() {
        let mounts = "\
25 24 0:22 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
26 24 0:23 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
27 24 0:24 /docker/abc /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids
28 24 0:23 / /mnt/memory\\040again rw,nosuid - cgroup cgroup rw,memory
";
        let cgroup = "\
5:pids:/docker/abc/svc
4:memory:/system.slice/dtaas.service
3:cpuacct,cpu:/system.slice/dtaas.service
1:name=systemd:/system.slice/dtaas.service
";
        let found = parse(mounts, cgroup);
        assert_eq!(
            found.len(),
            3,
            "memory mounted twice counts once: {found:#?}"
        );
        assert!(found.iter().all(|h| h.version == Version::V1));
        let cpu = by(&found, "cpu");
        assert!(cpu.has("cpuacct"));
        assert_eq!(cpu.line_prefix, "3:cpuacct,cpu:");
        assert_eq!(
            cpu.dir("/system.slice/dtaas.service"),
            Path::new("/sys/fs/cgroup/cpu,cpuacct/system.slice/dtaas.service")
        );
        let pids = by(&found, "pids");
        assert_eq!(
            pids.dir("/docker/abc/svc"),
            Path::new("/sys/fs/cgroup/pids/svc")
        );
        assert_eq!(
            pids.path(Path::new("/sys/fs/cgroup/pids/svc/dtaas-exec-1"))
                .as_deref(),
            Some("/docker/abc/svc/dtaas-exec-1")
        );
        assert_eq!(pids.path(Path::new("/elsewhere")), None);
        assert_eq!(unescape("/mnt/memory\\040again"), "/mnt/memory again");
    }

    #[test]
    fn v2_only_host() {
        let mounts = "\
29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";
        let found = parse(mounts, "0::/user.slice/user-1000.slice/session-2.scope\n");
        assert_eq!(found.len(), 1);
        let v2 = &found[0];
        assert_eq!(v2.version, Version::V2);
        assert!(v2.controllers.is_empty());
        assert_eq!(
            v2.dir(v2.own.as_deref().unwrap()),
            Path::new("/sys/fs/cgroup/user.slice/user-1000.slice/session-2.scope")
        );
        assert_eq!(
            v2.path(Path::new("/sys/fs/cgroup")).as_deref(),
            Some("/"),
            "the mount itself is the root"
        );
        assert_eq!(join("/", "dtaas-exec-1"), "/dtaas-exec-1");
        // No cgroup mount at all: nothing.
        assert!(parse("22 1 0:21 / /proc rw - proc proc rw\n", "0::/\n").is_empty());
    }
}
