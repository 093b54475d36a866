//! What a cgroup v2 group's files mean to exec: which controllers a node's group hands
//! down to runs (`cgroup.subtree_control`), limits (`memory.max` with
//! `memory.swap.max` 0, `cpu.max`, `pids.max`), killing everything at once
//! (`cgroup.kill`, Linux 5.14+), whether anything is left (`cgroup.events`), CPU time
//! (`cpu.stat`, there with or without the cpu controller), memory-limit kills
//! (`memory.events`) and peak memory (`memory.peak`, Linux 5.19+).

use std::path::Path;

use super::{read_u64, read_u64_field, Limits, Serves};

/// Enables for the node group `dir`'s children whichever of memory, cpu and pids its
/// parent hands down; answers what runs below it get.
pub fn enable_controllers(dir: &Path) -> Serves {
    let offered = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let offered: Vec<&str> = offered.split_whitespace().collect();
    let enable = |controller: &str| {
        offered.contains(&controller)
            && std::fs::write(dir.join("cgroup.subtree_control"), format!("+{controller}")).is_ok()
    };
    Serves {
        memory: enable("memory"),
        cpu: enable("cpu"),
        pids: enable("pids"),
        cpu_time: true,
        kill: true,
    }
}

/// Writes the limits `serves` covers into the run group `dir`.
pub fn limit(dir: &Path, serves: Serves, limits: &Limits) -> std::io::Result<()> {
    let set = |file: &str, value: String| std::fs::write(dir.join(file), value);
    if let (true, Some(bytes)) = (serves.memory, limits.memory_bytes()) {
        set("memory.max", bytes.to_string())?;
        // No swap, or the limit only moves memory to disk.
        let _ = set("memory.swap.max", "0".into());
    }
    if let (true, Some((quota, period))) = (serves.cpu, limits.cpu_quota_us()) {
        set("cpu.max", format!("{quota} {period}"))?;
    }
    if let (true, Some(pids)) = (serves.pids, limits.pids) {
        set("pids.max", pids.to_string())?;
    }
    Ok(())
}

/// SIGKILLs every process of the group at once; `false` where `cgroup.kill` is missing.
pub fn kill(dir: &Path) -> bool {
    std::fs::write(dir.join("cgroup.kill"), "1").is_ok()
}

/// Whether a process is still in the group (an unreadable state counts as empty).
pub fn populated(dir: &Path) -> bool {
    read_u64_field(&dir.join("cgroup.events"), "populated").is_some_and(|n| n > 0)
}

/// CPU seconds of every process that ever ran in the group (`usage_usec`).
pub fn cpu_seconds(dir: &Path) -> Option<f64> {
    read_u64_field(&dir.join("cpu.stat"), "usage_usec").map(|usec| usec as f64 / 1e6)
}

/// Whether the kernel killed a process of the group for its memory limit.
pub fn oom_killed(dir: &Path) -> bool {
    read_u64_field(&dir.join("memory.events"), "oom_kill").is_some_and(|n| n > 0)
}

/// The group's highest memory use, KiB, where the kernel keeps it.
pub fn peak_kib(dir: &Path) -> Option<u64> {
    read_u64(&dir.join("memory.peak")).map(|bytes| bytes / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_go_to_the_controllers_there_are() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            memory_mb: Some(64),
            cpu: Some(0.5),
            pids: Some(10),
        };
        let serves = Serves {
            memory: true,
            cpu: true,
            ..Serves::default()
        };
        limit(dir.path(), serves, &limits).unwrap();
        let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).ok();
        assert_eq!(read("memory.max").as_deref(), Some("67108864"));
        assert_eq!(read("memory.swap.max").as_deref(), Some("0"));
        assert_eq!(read("cpu.max").as_deref(), Some("50000 100000"));
        assert_eq!(read("pids.max"), None);
        std::fs::write(
            dir.path().join("memory.events"),
            "low 0\noom 1\noom_kill 2\n",
        )
        .unwrap();
        assert!(oom_killed(dir.path()));
        std::fs::write(
            dir.path().join("cpu.stat"),
            "usage_usec 1500000\nuser_usec 1\n",
        )
        .unwrap();
        assert_eq!(cpu_seconds(dir.path()), Some(1.5));
        std::fs::write(dir.path().join("cgroup.events"), "populated 0\nfrozen 0\n").unwrap();
        assert!(!populated(dir.path()));
    }
}
