//! A cgroup v2 group per run, where exec can create groups.
//!
//! At start the node makes `dtaas-exec-<pid>` below its own cgroup (or below
//! `DTAAS_EXEC_CGROUP`) and enables there whichever of the `memory`, `cpu` and `pids`
//! controllers its parent hands down. Each run gets `run-<n>` inside it with
//! `memory.max` (no swap), `cpu.max` and `pids.max` when those controllers are there.
//! The run is moved into its group right after spawn, and its `/bin/sh` wrapper waits
//! until it is inside before it `exec`s the program, so nothing the program forks
//! starts outside. Stopping signals every member of the group, and killing writes
//! `cgroup.kill`: a process that left the process group with `setsid` is stopped too.
//! Without a writable cgroup v2, runs are process groups with rlimits (`spawn.rs`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Why runs fall back to process groups and rlimits: no cgroup v2 group for them.
#[derive(Debug, thiserror::Error)]
pub enum NoCgroups {
    #[error("cgroups are off ([exec] cgroup = \"off\")")]
    Off,
    #[error("no cgroup v2 file system is mounted")]
    NoMount,
    #[error("{} is not inside the cgroup v2 mount {}", dir.display(), mount.display())]
    Outside { dir: PathBuf, mount: PathBuf },
    #[error("this process is in no cgroup v2 group")]
    NoOwnGroup,
    #[error("cannot create the cgroup {}: {source}", path.display())]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How exec keeps a node's runs apart.
#[derive(Debug)]
pub struct Cgroups {
    /// `<mount>/<own cgroup>/dtaas-exec-<pid>` on the file system.
    base: PathBuf,
    /// The same as a path of the hierarchy, as `/proc/<pid>/cgroup` shows it.
    base_in_hierarchy: String,
    /// Controllers enabled for runs: memory, cpu, pids.
    pub memory: bool,
    pub cpu: bool,
    pub pids: bool,
    next: AtomicU64,
}

/// One run's group.
#[derive(Debug)]
pub struct Group {
    pub(crate) path: PathBuf,
    /// `0::<path in the hierarchy>`, the line of `/proc/self/cgroup` inside it.
    pub proc_line: String,
    /// Whether `memory.max` limits it (else the rlimit does).
    pub memory_limited: bool,
}

/// Limits of one run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    pub memory_mb: Option<u64>,
    pub cpu: Option<f64>,
    pub pids: Option<u64>,
}

/// The cgroup v2 mount (mount point, root of the hierarchy it shows) from mountinfo.
fn cgroup2_mount() -> Option<(PathBuf, String)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let fields: Vec<&str> = left.split_whitespace().collect();
        Some((PathBuf::from(fields.get(4)?), (*fields.get(3)?).to_owned()))
    })
}

/// This process's cgroup v2 path (`0::<path>` in `/proc/self/cgroup`).
fn own_cgroup() -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

fn join(parent: &str, child: &str) -> String {
    format!("{}/{child}", parent.trim_end_matches('/'))
}

impl Cgroups {
    /// Sets up the node's group: below `configured` (a directory in a cgroup v2 mount)
    /// or below exec's own cgroup. `Err` says why runs fall back to rlimits.
    pub fn create(configured: Option<&Path>) -> Result<Self, NoCgroups> {
        let (mount, mount_root) = cgroup2_mount().ok_or(NoCgroups::NoMount)?;
        let parent_in_hierarchy = match configured {
            Some(dir) => {
                let inside = dir.strip_prefix(&mount).map_err(|_| NoCgroups::Outside {
                    dir: dir.to_owned(),
                    mount: mount.clone(),
                })?;
                join(&mount_root, &inside.display().to_string())
            }
            None => own_cgroup().ok_or(NoCgroups::NoOwnGroup)?,
        };
        let relative = parent_in_hierarchy
            .strip_prefix(mount_root.trim_end_matches('/'))
            .unwrap_or(&parent_in_hierarchy)
            .trim_start_matches('/');
        let name = format!("dtaas-exec-{}", std::process::id());
        let parent = mount.join(relative);
        remove_empty_leftovers(&parent);
        let base = parent.join(&name);
        std::fs::create_dir(&base).map_err(|source| NoCgroups::Create {
            path: base.clone(),
            source,
        })?;
        let offered = std::fs::read_to_string(base.join("cgroup.controllers")).unwrap_or_default();
        let offered: Vec<&str> = offered.split_whitespace().collect();
        let mut cgroups = Self {
            base,
            base_in_hierarchy: join(&parent_in_hierarchy, &name),
            memory: false,
            cpu: false,
            pids: false,
            next: AtomicU64::new(1),
        };
        for controller in ["memory", "cpu", "pids"] {
            let enabled = offered.contains(&controller)
                && std::fs::write(
                    cgroups.base.join("cgroup.subtree_control"),
                    format!("+{controller}"),
                )
                .is_ok();
            match controller {
                "memory" => cgroups.memory = enabled,
                "cpu" => cgroups.cpu = enabled,
                _ => cgroups.pids = enabled,
            }
        }
        Ok(cgroups)
    }

    /// Where the node's groups are, for the log and the leftovers record.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// The controllers runs get, for the log (`memory,cpu,pids` or `none`).
    pub fn controllers(&self) -> String {
        let on: Vec<&str> = [
            (self.memory, "memory"),
            (self.cpu, "cpu"),
            (self.pids, "pids"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, name)| *name)
        .collect();
        if on.is_empty() {
            "none".into()
        } else {
            on.join(",")
        }
    }

    /// A new group for one run, with `limits` where the controllers allow.
    pub fn group(&self, limits: Limits) -> std::io::Result<Group> {
        let name = format!("run-{}", self.next.fetch_add(1, Ordering::Relaxed));
        let path = self.base.join(&name);
        std::fs::create_dir(&path)?;
        let mut group = Group {
            proc_line: format!("0::{}", join(&self.base_in_hierarchy, &name)),
            path,
            memory_limited: false,
        };
        let set = |file: &str, value: String| std::fs::write(group.path.join(file), value);
        let mut memory_limited = false;
        let applied = (|| {
            if let (true, Some(mb)) = (self.memory, limits.memory_mb) {
                set("memory.max", (mb * 1024 * 1024).to_string())?;
                // No swap, or the limit only moves memory to disk.
                let _ = set("memory.swap.max", "0".into());
                memory_limited = true;
            }
            if let (true, Some(cpu)) = (self.cpu, limits.cpu) {
                let period = 100_000u64;
                let quota = ((cpu * period as f64) as u64).max(1_000);
                set("cpu.max", format!("{quota} {period}"))?;
            }
            if let (true, Some(pids)) = (self.pids, limits.pids) {
                set("pids.max", pids.to_string())?;
            }
            Ok(())
        })();
        if let Err(e) = applied {
            group.remove();
            return Err(e);
        }
        group.memory_limited = memory_limited;
        Ok(group)
    }

    /// Removes the node's group after its runs are gone (shutdown).
    pub fn remove(&self) {
        let _ = std::fs::remove_dir(&self.base);
    }
}

impl Group {
    /// Moves `pid` into the group.
    pub fn adopt(&self, pid: u32) -> std::io::Result<()> {
        std::fs::write(self.path.join("cgroup.procs"), pid.to_string())
    }

    /// The pids in the group now.
    pub fn members(&self) -> Vec<u32> {
        std::fs::read_to_string(self.path.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Sends `signal` to every member.
    pub fn signal(&self, signal: Signal) {
        for pid in self.members() {
            let _ = kill(Pid::from_raw(pid as i32), signal);
        }
    }

    /// SIGKILLs every member: `cgroup.kill` (Linux 5.14+), else one by one.
    pub fn kill(&self) {
        if std::fs::write(self.path.join("cgroup.kill"), "1").is_err() {
            self.signal(Signal::SIGKILL);
        }
    }

    /// CPU seconds of every process that ever ran in the group (`usage_usec` of
    /// `cpu.stat`, there with or without the cpu controller): a `setsid` child and
    /// orphans exec reaped included.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let text = std::fs::read_to_string(self.path.join("cpu.stat")).ok()?;
        let usec: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec "))?
            .trim()
            .parse()
            .ok()?;
        Some(usec as f64 / 1e6)
    }

    /// Whether a process is still in the group (or its state is unreadable: no).
    fn populated(&self) -> bool {
        std::fs::read_to_string(self.path.join("cgroup.events"))
            .is_ok_and(|t| t.lines().any(|l| l.trim() == "populated 1"))
    }

    /// Whether the run was killed by its memory limit.
    pub fn oom_killed(&self) -> bool {
        std::fs::read_to_string(self.path.join("memory.events"))
            .unwrap_or_default()
            .lines()
            .any(|l| l.strip_prefix("oom_kill ").is_some_and(|n| n.trim() != "0"))
    }

    /// Kills what is left and removes the group once it is empty (up to 2 s).
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
                if std::fs::remove_dir(&self.path).is_ok() || !self.path.exists() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        tracing::warn!(cgroup = %self.path.display(), "Cannot remove a run's cgroup; its processes did not end.");
    }
}

/// Removes the empty groups of exec nodes that are gone (a node killed with SIGKILL
/// cannot remove its own). Only empty ones: a group with processes is not ours to
/// judge (another pid namespace may run it); its node's next life sweeps it.
fn remove_empty_leftovers(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("dtaas-exec-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let base = entry.path();
        if let Ok(runs) = std::fs::read_dir(&base) {
            for run in runs.flatten().filter(|r| r.path().is_dir()) {
                // Fails while the group has processes.
                let _ = std::fs::remove_dir(run.path());
            }
        }
        let _ = std::fs::remove_dir(&base);
    }
}

/// Kills and removes the groups a previous life of this node left (`base` as it
/// recorded it); answers how many processes were in them.
pub fn sweep(base: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(base) else {
        return 0;
    };
    let mut killed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let group = Group {
            path,
            proc_line: String::new(),
            memory_limited: false,
        };
        killed += group.members().len();
        group.remove();
    }
    let _ = std::fs::remove_dir(base);
    killed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_go_to_the_controllers_there_are() {
        let dir = tempfile::tempdir().unwrap();
        let mut cgroups = Cgroups {
            base: dir.path().to_owned(),
            base_in_hierarchy: "/x/dtaas-exec-1".into(),
            memory: true,
            cpu: true,
            pids: false,
            next: AtomicU64::new(1),
        };
        let limits = Limits {
            memory_mb: Some(64),
            cpu: Some(0.5),
            pids: Some(10),
        };
        let group = cgroups.group(limits).unwrap();
        assert_eq!(group.proc_line, "0::/x/dtaas-exec-1/run-1");
        assert!(group.memory_limited);
        let read = |f: &str| std::fs::read_to_string(dir.path().join("run-1").join(f)).ok();
        assert_eq!(read("memory.max").as_deref(), Some("67108864"));
        assert_eq!(read("memory.swap.max").as_deref(), Some("0"));
        assert_eq!(read("cpu.max").as_deref(), Some("50000 100000"));
        assert_eq!(read("pids.max"), None);
        cgroups.memory = false;
        let second = cgroups.group(limits).unwrap();
        assert!(!second.memory_limited);
        assert_eq!(cgroups.controllers(), "cpu");
    }
}
