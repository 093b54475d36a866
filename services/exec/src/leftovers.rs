//! Process groups a previous life of this node left behind.
//!
//! Every run's group is recorded as `<dir>/groups/<pgid>` (holding the leader's start
//! time) while it runs. The parent-death signal kills a run's leader when its node is
//! killed, but not the children the leader forked; when the node starts again, it
//! kills the members of every recorded group that started no earlier than the
//! recorded leader (a later, unrelated group with the same id is spared unless it is
//! younger still and shares the id, which the kernel avoids while the group exists).

use std::path::{Path, PathBuf};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::meter;

fn dir(root: &Path) -> PathBuf {
    root.join("groups")
}

/// Records a run's group while it runs.
pub fn record(root: &Path, pid: u32) {
    let Some(stat) = meter::stat(pid) else { return };
    let dir = dir(root);
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join(pid.to_string()), stat.start_ticks.to_string()));
    if let Err(error) = written {
        tracing::warn!(pid, %error, "Cannot record a process group; if this node is killed, the group's children may outlive it.");
    }
}

/// Forgets a run's group once it is gone.
pub fn forget(root: &Path, pid: u32) {
    let _ = std::fs::remove_file(dir(root).join(pid.to_string()));
}

/// Kills what is left of the recorded groups; returns how many processes it killed.
pub fn sweep(root: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir(root)) else {
        return 0;
    };
    let groups: Vec<(u32, u64, PathBuf)> = entries
        .filter_map(|e| {
            let path = e.ok()?.path();
            let pgid = path.file_name()?.to_str()?.parse().ok()?;
            let start = std::fs::read_to_string(&path).ok()?.trim().parse().ok()?;
            Some((pgid, start, path))
        })
        .collect();
    let mut killed = 0;
    for (pgid, start, path) in groups {
        for (pid, stat) in meter::other_members(pgid)
            .into_iter()
            .chain(meter::stat(pgid).map(|s| (pgid, s)))
        {
            if stat.pgrp == pgid
                && stat.start_ticks >= start
                && kill(Pid::from_raw(pid as i32), Signal::SIGKILL).is_ok()
            {
                killed += 1;
            }
        }
        let _ = std::fs::remove_file(path);
    }
    killed
}
