//! One run's group: a directory in every hierarchy of the node. It takes the run in
//! (the wrapper waits for the last directory), signals and kills its members (v2
//! `cgroup.kill`; v1 through the freezer; else signals until none is left), reads its
//! figures (CPU time, peak memory, memory-limit kills) and removes itself once empty.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{v1, v2, Dir, Version};

/// One run's group, in every hierarchy of the node.
#[derive(Debug)]
pub struct Group {
    /// In the node's order: the last is the one the wrapper waits for.
    pub(super) dirs: Vec<Dir>,
    /// The line of `/proc/self/cgroup` that shows a process is in every group.
    pub proc_line: String,
    /// Which version limits its memory (else the rlimit does).
    pub memory_limit: Option<Version>,
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
    pub(super) fn found(path: PathBuf) -> Self {
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

#[cfg(test)]
mod tests {
    use super::super::{mounts, Serves};
    use super::*;

    /// Without `cgroup.kill` and without a freezer, signals empty a group whose
    /// members keep forking. Uses a real v1 pids group; skips where there is none.
    #[test]
    fn signals_empty_a_forking_v1_group_without_a_freezer() {
        let hierarchies = mounts::current();
        let Some((pids, own)) = hierarchies
            .iter()
            .filter(|h| h.version == Version::V1 && h.has("pids"))
            .find_map(|h| Some((h, h.own.clone()?)))
        else {
            println!("SKIPPED: no cgroup v1 pids hierarchy here");
            return;
        };
        let path = pids
            .dir(&own)
            .join(format!("dtaas-unit-{}", std::process::id()));
        if let Err(e) = std::fs::create_dir(&path) {
            println!("SKIPPED: cannot create {}: {e}", path.display());
            return;
        }
        // Orphans of the killed shell come back here to be reaped.
        nix::sys::prctl::set_child_subreaper(true).unwrap();
        std::fs::write(path.join("pids.max"), "30").unwrap();
        // It forks only once it is inside (told so on its stdin).
        let mut shell = std::process::Command::new("/bin/sh")
            .args(["-c", "read go; while :; do sleep 600 & sleep 0.01; done"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::fs::write(path.join("cgroup.procs"), shell.id().to_string()).unwrap();
        let mut go = shell.stdin.take().unwrap();
        std::io::Write::write_all(&mut go, b"go\n").unwrap();
        let group = Group {
            dirs: vec![Dir {
                version: Version::V1,
                controllers: vec!["pids".into()],
                serves: Serves {
                    pids: true,
                    ..Serves::default()
                },
                path: path.clone(),
                line: String::new(),
            }],
            proc_line: String::new(),
            memory_limit: None,
        };
        std::thread::sleep(Duration::from_millis(300));
        let before = group.members().len();
        group.remove();
        let _ = shell.wait();
        assert!(before > 5, "the shell forked: {before} members");
        assert!(!path.exists(), "the group is empty and removed");
        // Every forked `sleep` was killed: reaping them all ends with "no child".
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "a child outlived its group"
                    );
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
}
