//! What a node that was killed (SIGKILL, a crash) leaves in the cgroup hierarchies, and
//! how its next life clears it.
//!
//! A node records its groups in `<dir>/cgroup`, one directory per line (the node's
//! group in each hierarchy; a record from before v1 support holds one line, the v2
//! group, and reads the same). At start it kills and removes the runs' groups in every
//! recorded directory, then the directories. Empty groups of other gone nodes below the
//! same parents are removed too; a group with processes is not ours to judge (another
//! pid namespace may run it), its node's next life sweeps it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::{Cgroups, Group};

/// Writes the node's groups to `file`, so its next life finds them.
pub fn record(file: &Path, cgroups: &Cgroups) -> std::io::Result<()> {
    let lines: Vec<String> = cgroups.dirs().map(|d| d.display().to_string()).collect();
    std::fs::write(file, lines.join("\n") + "\n")
}

/// Kills and removes what a previous life recorded in `file`, and forgets the record;
/// answers how many processes were left.
pub fn sweep_recorded(file: &Path) -> usize {
    let Ok(text) = std::fs::read_to_string(file) else {
        return 0;
    };
    let mut killed = BTreeSet::new();
    for dir in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        sweep_node_dir(Path::new(dir), &mut killed);
    }
    let _ = std::fs::remove_file(file);
    killed.len()
}

/// Kills the processes of every run group in the node group `base` (adding their pids
/// to `killed`) and removes the groups and `base`.
pub(super) fn sweep_node_dir(base: &Path, killed: &mut BTreeSet<u32>) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    let runs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    for run in runs {
        let group = Group::found(run);
        killed.extend(group.members());
        group.remove();
    }
    let _ = std::fs::remove_dir(base);
}

/// Removes the empty groups below `parent` of exec nodes that are gone.
pub(super) fn remove_empty_leftovers(parent: &Path) {
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
