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

mod group;
pub mod mounts;
mod node;
mod placement;
mod sweep;
mod v1;
mod v2;

use std::path::{Path, PathBuf};

pub use group::Group;
pub use mounts::Version;
pub use node::Cgroups;
pub use placement::{NoCgroups, Placement};
pub use sweep::{record, sweep_recorded};

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

/// The number after `key ` in a `key value` file (`cpu.stat`, `memory.events`).
/// The number a file of one value holds (`memory.peak`, `cpuacct.usage`).
fn read_u64(file: &Path) -> Option<u64> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

fn read_u64_field(file: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        (name == key).then(|| value.trim().parse().ok())?
    })
}
