//! A cgroup per run, in every cgroup hierarchy exec can write: v2, v1, or both.
//!
//! At start the node makes `dtaas-exec-<pid>` below its own group (or below
//! `[exec] cgroup`) in each hierarchy it uses: the cgroup v2 one, where it enables
//! whichever of `memory`, `cpu` and `pids` its parent hands down and kills with
//! `cgroup.kill`; and the cgroup v1 ones holding a controller v2 does not cover
//! (`memory`, `cpu`, `pids`; `cpuacct` for CPU time and `freezer` for killing when there
//! is no v2 group). Each run gets `run-<n>` inside every one of them, with its limits
//! where a controller is there. Right after spawn the run is written into its v1
//! groups and then into its last group (v2 when there is one); its `/bin/sh` wrapper
//! waits until `/proc/self/cgroup` shows it in that last group, so it is in all of them
//! before it `exec`s the program and nothing the program forks starts outside.
//! Stopping signals every member, and killing empties the groups (`cgroup.kill`, else
//! the freezer and signals, else signals until none is left): a process that left the
//! process group with `setsid` is stopped too. Without any writable hierarchy runs
//! are process groups with rlimits (`spawn.rs`).

pub mod mounts;
mod sweep;
mod v1;
mod v2;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub use mounts::Version;
pub use sweep::{record, sweep_recorded};

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

impl Placement {
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

/// What one group directory does for runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Serves {
    /// Memory limit, memory-limit kills and peak memory.
    pub memory: bool,
    /// CPU share limit.
    pub cpu: bool,
    /// Process count limit.
    pub pids: bool,
    /// CPU time of everything that ran in the group.
    pub cpu_time: bool,
    /// Killing everything at once: `cgroup.kill` (v2) or the freezer (v1).
    pub kill: bool,
}

impl Serves {
    fn any(self) -> bool {
        self.memory || self.cpu || self.pids || self.cpu_time || self.kill
    }

    /// What `self` offers that `taken` does not already cover.
    fn beyond(self, taken: Self) -> Self {
        Self {
            memory: self.memory && !taken.memory,
            cpu: self.cpu && !taken.cpu,
            pids: self.pids && !taken.pids,
            cpu_time: self.cpu_time && !taken.cpu_time,
            kill: self.kill && !taken.kill,
        }
    }

    fn with(self, other: Self) -> Self {
        Self {
            memory: self.memory || other.memory,
            cpu: self.cpu || other.cpu,
            pids: self.pids || other.pids,
            cpu_time: self.cpu_time || other.cpu_time,
            kill: self.kill || other.kill,
        }
    }

    /// The limiting controllers, for the log.
    fn limits(self) -> Vec<&'static str> {
        [
            (self.memory, "memory"),
            (self.cpu, "cpu"),
            (self.pids, "pids"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }
}

/// Limits of one run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    pub memory_mb: Option<u64>,
    pub cpu: Option<f64>,
    pub pids: Option<u64>,
}

impl Limits {
    fn memory_bytes(&self) -> Option<u64> {
        self.memory_mb.map(|mb| mb.saturating_mul(1024 * 1024))
    }

    /// `(quota, period)` in µs for the `cpu` share; the kernel takes no quota below 1 ms.
    fn cpu_quota_us(&self) -> Option<(u64, u64)> {
        let period = 100_000u64;
        self.cpu
            .map(|cpu| (((cpu * period as f64) as u64).max(1_000), period))
    }
}

/// One group: a directory in one hierarchy.
#[derive(Debug, Clone)]
struct Dir {
    version: Version,
    /// The controllers of its v1 hierarchy (empty for v2).
    controllers: Vec<String>,
    serves: Serves,
    path: PathBuf,
    /// The line `/proc/<pid>/cgroup` shows for a process inside.
    line: String,
}

impl Dir {
    /// A group found on disk (a leftover), its kind told by its files.
    fn found(path: PathBuf) -> Self {
        let v2 = path.join("cgroup.controllers").exists();
        let serves = Serves {
            kill: path
                .join(if v2 { "cgroup.kill" } else { "freezer.state" })
                .exists(),
            ..Serves::default()
        };
        Self {
            version: if v2 { Version::V2 } else { Version::V1 },
            controllers: Vec::new(),
            serves,
            path,
            line: String::new(),
        }
    }

    fn populated(&self) -> bool {
        match self.version {
            Version::V1 => v1::populated(&self.path),
            Version::V2 => v2::populated(&self.path),
        }
    }
}

/// How exec keeps a node's runs apart: the node's group in each hierarchy it uses.
#[derive(Debug)]
pub struct Cgroups {
    /// v1 groups first, the v2 group (when there is one) last.
    dirs: Vec<Dir>,
    /// Hierarchies that could have served but did not, and why, for the log.
    pub skipped: Vec<String>,
    next: AtomicU64,
}

/// One run's group, in every hierarchy of the node.
#[derive(Debug)]
pub struct Group {
    /// In the node's order: the last is the one the wrapper waits for.
    dirs: Vec<Dir>,
    /// The line of `/proc/self/cgroup` that shows a process is in every group.
    pub proc_line: String,
    /// Which version limits its memory (else the rlimit does).
    pub memory_limit: Option<Version>,
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
    let parent = parent
        .or(hierarchy.own.as_deref())
        .ok_or_else(|| skip(hierarchy, "this process is in none of its groups"))?;
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
        if *placement == Placement::Off {
            return Err(NoCgroups::Off);
        }
        let hierarchies = mounts::current();
        if hierarchies.is_empty() {
            return Err(NoCgroups::NoMount);
        }
        let configured = match placement {
            Placement::Below(dir) => {
                let hierarchy = hierarchies
                    .iter()
                    .filter(|h| dir.starts_with(&h.mount))
                    .max_by_key(|h| h.mount.as_os_str().len())
                    .ok_or_else(|| NoCgroups::Outside { dir: dir.clone() })?;
                hierarchy.path(dir).map(|path| (hierarchy.version, path))
            }
            _ => None,
        };
        let wanted = |version: Version| match placement {
            Placement::Only(only) => *only == version,
            _ => true,
        };
        let parent = |version: Version| {
            configured
                .as_ref()
                .filter(|(v, _)| *v == version)
                .map(|(_, path)| path.as_str())
        };
        // Gone nodes' empty groups, in every hierarchy a node may have used.
        for hierarchy in &hierarchies {
            let useful =
                hierarchy.version == Version::V2 || v1::serves(&hierarchy.controllers).any();
            if let Some(parent) = parent(hierarchy.version).or(hierarchy.own.as_deref()) {
                if useful {
                    sweep::remove_empty_leftovers(&hierarchy.dir(parent));
                }
            }
        }
        let name = format!("dtaas-exec-{}", std::process::id());
        let mut skipped = Vec::new();
        let mut v2_dir = None;
        if let Some(hierarchy) = hierarchies
            .iter()
            .find(|h| h.version == Version::V2 && wanted(Version::V2))
        {
            match node_dir(hierarchy, parent(Version::V2), &name) {
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
        for hierarchy in hierarchies
            .iter()
            .filter(|h| h.version == Version::V1 && wanted(Version::V1))
        {
            let serves = v1::serves(&hierarchy.controllers).beyond(taken);
            if !serves.any() {
                continue;
            }
            match node_dir(hierarchy, parent(Version::V1), &name) {
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

impl Group {
    /// A group with no directory: what spawning needs of one, for its tests.
    #[cfg(test)]
    pub(crate) fn without_dirs(proc_line: &str, memory_limit: Option<Version>) -> Self {
        Self {
            dirs: Vec::new(),
            proc_line: proc_line.into(),
            memory_limit,
        }
    }

    /// A group a previous life of the node left in `path`.
    fn found(path: PathBuf) -> Self {
        Self {
            dirs: vec![Dir::found(path)],
            proc_line: String::new(),
            memory_limit: None,
        }
    }

    /// Moves `pid` into every group, the one the wrapper waits for last.
    pub fn adopt(&self, pid: u32) -> std::io::Result<()> {
        for dir in &self.dirs {
            std::fs::write(dir.path.join("cgroup.procs"), pid.to_string())?;
        }
        Ok(())
    }

    /// The pids in the groups now.
    pub fn members(&self) -> BTreeSet<u32> {
        self.dirs
            .iter()
            .filter_map(|d| std::fs::read_to_string(d.path.join("cgroup.procs")).ok())
            .flat_map(|text| {
                text.lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<u32>>()
            })
            .collect()
    }

    /// Sends `signal` to every member.
    pub fn signal(&self, signal: Signal) {
        for pid in self.members() {
            let _ = kill(Pid::from_raw(pid as i32), signal);
        }
    }

    /// SIGKILLs every member: `cgroup.kill`; else frozen, so none can fork, and
    /// signalled; else signalled (callers repeat until the group is empty).
    pub fn kill(&self) {
        let with_kill = self.dirs.iter().find(|d| d.serves.kill);
        match with_kill {
            Some(dir) if dir.version == Version::V2 && v2::kill(&dir.path) => {}
            Some(dir) if dir.version == Version::V1 => {
                v1::freeze(&dir.path);
                self.signal(Signal::SIGKILL);
                v1::thaw(&dir.path);
            }
            _ => self.signal(Signal::SIGKILL),
        }
    }

    /// CPU seconds of every process that ever ran in the group: a `setsid` child and
    /// orphans exec reaped included.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let dir = self.dirs.iter().find(|d| d.serves.cpu_time)?;
        match dir.version {
            Version::V1 => v1::cpu_seconds(&dir.path),
            Version::V2 => v2::cpu_seconds(&dir.path),
        }
    }

    /// The group's highest memory use so far, KiB, where the kernel keeps it.
    pub fn peak_memory_kib(&self) -> Option<u64> {
        let dir = self.dirs.iter().find(|d| d.serves.memory)?;
        match dir.version {
            Version::V1 => v1::peak_kib(&dir.path),
            Version::V2 => v2::peak_kib(&dir.path),
        }
    }

    /// When the run's memory limit killed a process of it: which limit, for the
    /// process's event (`memory.limit_in_bytes of its cgroup v1`).
    pub fn memory_limit_kill(&self) -> Option<&'static str> {
        let dir = self.dirs.iter().find(|d| d.serves.memory)?;
        self.memory_limit?;
        match dir.version {
            Version::V1 if v1::oom_killed(&dir.path) => {
                Some("memory.limit_in_bytes of its cgroup v1")
            }
            Version::V2 if v2::oom_killed(&dir.path) => Some("memory.max of its cgroup v2"),
            _ => None,
        }
    }

    /// Whether a process is still in any of the groups.
    fn populated(&self) -> bool {
        self.dirs.iter().any(Dir::populated)
    }

    /// Kills what is left and removes the groups once they are empty (up to 2 s).
    pub fn remove(&self) {
        self.remove_after(|_| {});
    }

    /// Like `remove`, letting `last` read the group once it is empty (final figures).
    pub fn remove_after(&self, last: impl FnOnce(&Self)) {
        let mut last = Some(last);
        for _ in 0..200 {
            self.kill();
            if !self.populated() {
                if let Some(last) = last.take() {
                    last(self);
                }
                let gone = self
                    .dirs
                    .iter()
                    .filter(|d| std::fs::remove_dir(&d.path).is_err() && d.path.exists())
                    .count();
                if gone == 0 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let dirs: Vec<String> = self
            .dirs
            .iter()
            .map(|d| d.path.display().to_string())
            .collect();
        tracing::warn!(cgroups = %dirs.join(" "), "Cannot remove a run's cgroups; its processes did not end.");
    }
}

/// The number after `key ` in a `key value` file (`cpu.stat`, `memory.events`).
fn read_u64_field(file: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        (name == key).then(|| value.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
