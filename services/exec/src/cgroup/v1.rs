//! What cgroup v1 groups' files mean to exec. Each v1 hierarchy holds its own
//! controllers, so a run has a group in each: `memory` (`memory.limit_in_bytes`, and
//! `memory.memsw.limit_in_bytes` the same where swap is accounted, so the limit does
//! not just move memory to swap; `memory.oom_control` counts the kernel's kills,
//! `memory.max_usage_in_bytes` is the peak), `cpu` (`cpu.cfs_quota_us` per
//! `cpu.cfs_period_us`), `cpuacct` (`cpuacct.usage`, CPU nanoseconds of everything
//! that ever ran in the group), `pids` (`pids.max`) and `freezer` (`freezer.state`).
//!
//! v1 has no `cgroup.kill`: a group is emptied by signalling its members until none is
//! left. With the freezer the group is frozen first, so no member can fork while the
//! others are killed.

use std::path::Path;
use std::time::{Duration, Instant};

use super::{read_u64, read_u64_field, Limits, Serves};

/// How long a freeze may take before the members are killed anyway (a process in
/// uninterruptible sleep keeps a group `FREEZING`).
const FREEZE_WAIT: Duration = Duration::from_millis(100);

/// What a hierarchy holding `controllers` does for runs.
pub fn serves(controllers: &[String]) -> Serves {
    let has = |c: &str| controllers.iter().any(|h| h == c);
    Serves {
        memory: has("memory"),
        cpu: has("cpu"),
        pids: has("pids"),
        cpu_time: has("cpuacct"),
        kill: has("freezer"),
    }
}

/// Prepares the new group `dir`: a hierarchy that also holds `cpuset` admits no
/// process until the group has CPUs and memory nodes, so it gets its parent's.
pub fn prepare(dir: &Path, controllers: &[String]) -> std::io::Result<()> {
    if !controllers.iter().any(|c| c == "cpuset") {
        return Ok(());
    }
    let Some(parent) = dir.parent() else {
        return Ok(());
    };
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let value = std::fs::read_to_string(parent.join(file))?;
        std::fs::write(dir.join(file), value.trim())?;
    }
    Ok(())
}

/// Writes the limits `serves` covers into the run group `dir`.
pub fn limit(dir: &Path, serves: Serves, limits: &Limits) -> std::io::Result<()> {
    let set = |file: &str, value: String| std::fs::write(dir.join(file), value);
    if let (true, Some(bytes)) = (serves.memory, limits.memory_bytes()) {
        set("memory.limit_in_bytes", bytes.to_string())?;
        // Memory plus swap may not be below memory alone, so this comes second; the
        // file is missing where the kernel does not account swap.
        if dir.join("memory.memsw.limit_in_bytes").exists() {
            set("memory.memsw.limit_in_bytes", bytes.to_string())?;
        }
    }
    if let (true, Some((quota, period))) = (serves.cpu, limits.cpu_quota_us()) {
        set("cpu.cfs_period_us", period.to_string())?;
        match set("cpu.cfs_quota_us", quota.to_string()) {
            // v1 refuses a quota above an ancestor's; the ancestor's then limits the
            // run, which is all this node may give.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {}
            written => written?,
        }
    }
    if let (true, Some(pids)) = (serves.pids, limits.pids) {
        set("pids.max", pids.to_string())?;
    }
    Ok(())
}

/// Freezes the group and waits (up to `FREEZE_WAIT`) until it is frozen; answers
/// whether it is.
pub fn freeze(dir: &Path) -> bool {
    if std::fs::write(dir.join("freezer.state"), "FROZEN").is_err() {
        return false;
    }
    let deadline = Instant::now() + FREEZE_WAIT;
    loop {
        let state = std::fs::read_to_string(dir.join("freezer.state")).unwrap_or_default();
        if state.trim() == "FROZEN" {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Lets a frozen group run again: killed members then die.
pub fn thaw(dir: &Path) {
    let _ = std::fs::write(dir.join("freezer.state"), "THAWED");
}

/// Whether a process is still in the group (ended ones leave at once, zombies too).
pub fn populated(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .is_ok_and(|text| text.lines().any(|l| !l.trim().is_empty()))
}

/// CPU seconds of every process that ever ran in the group (`cpuacct.usage`, ns).
pub fn cpu_seconds(dir: &Path) -> Option<f64> {
    read_u64(&dir.join("cpuacct.usage")).map(|ns| ns as f64 / 1e9)
}

/// Whether the kernel killed a process of the group for its memory limit.
pub fn oom_killed(dir: &Path) -> bool {
    read_u64_field(&dir.join("memory.oom_control"), "oom_kill").is_some_and(|n| n > 0)
}

/// The group's highest memory use, KiB.
pub fn peak_kib(dir: &Path) -> Option<u64> {
    read_u64(&dir.join("memory.max_usage_in_bytes")).map(|bytes| bytes / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_go_to_the_files_of_each_controller() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            memory_mb: Some(32),
            cpu: Some(0.2),
            pids: Some(50),
        };
        std::fs::write(dir.path().join("memory.memsw.limit_in_bytes"), "").unwrap();
        let controllers: Vec<String> = vec!["memory".into(), "cpu".into(), "cpuacct".into()];
        let serves = serves(&controllers);
        assert!(serves.memory && serves.cpu && serves.cpu_time);
        assert!(!serves.pids && !serves.kill);
        limit(dir.path(), serves, &limits).unwrap();
        let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).ok();
        assert_eq!(read("memory.limit_in_bytes").as_deref(), Some("33554432"));
        assert_eq!(
            read("memory.memsw.limit_in_bytes").as_deref(),
            Some("33554432")
        );
        assert_eq!(read("cpu.cfs_quota_us").as_deref(), Some("20000"));
        assert_eq!(read("cpu.cfs_period_us").as_deref(), Some("100000"));
        assert_eq!(read("pids.max"), None);
        std::fs::write(
            dir.path().join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        )
        .unwrap();
        assert!(oom_killed(dir.path()));
        std::fs::write(dir.path().join("cpuacct.usage"), "610000000\n").unwrap();
        assert_eq!(cpu_seconds(dir.path()), Some(0.61));
        std::fs::write(dir.path().join("memory.max_usage_in_bytes"), "2097152\n").unwrap();
        assert_eq!(peak_kib(dir.path()), Some(2048));
        std::fs::write(dir.path().join("cgroup.procs"), "").unwrap();
        assert!(!populated(dir.path()));
    }
}
