//! Exec as the reaper of what its runs leave: a process whose parent ended first is
//! re-parented to the nearest "child subreaper", else to PID 1. Some inits never reap
//! (the development sandbox's does not; `dtaas exec` as a container's PID 1 has the
//! duty itself), so the killed children of runs would stay zombies forever. Exec
//! makes itself a subreaper and reaps such orphans when they end.
//!
//! Only orphans of runs are reaped: zombie children of exec that are not a run's
//! leader (the run's reaper thread needs the leader's exit status) and are not in
//! exec's own process group (children other parts of `dtaas up` spawn stay there, and
//! theirs to wait for). Leaders are recorded under one lock while they are spawned and
//! while they are reaped, so the scan never takes a leader.

use std::collections::BTreeSet;
use std::process::{Child, ExitStatus};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// The pids of runs' leaders not reaped yet.
static LEADERS: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// A scan also runs this often, in case a SIGCHLD was merged with another.
const RESCAN: Duration = Duration::from_secs(5);

fn leaders() -> MutexGuard<'static, BTreeSet<u32>> {
    LEADERS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Spawns a run's leader with `spawn` and records it, as one step for the scan.
pub fn spawn_leader(spawn: impl FnOnce() -> std::io::Result<Child>) -> std::io::Result<Child> {
    let mut leaders = leaders();
    let child = spawn()?;
    leaders.insert(child.id());
    Ok(child)
}

/// Reaps a leader that has ended (its status is waiting) and forgets it, as one step.
pub fn reap_leader(child: &mut Child) -> std::io::Result<ExitStatus> {
    let mut leaders = leaders();
    let status = child.wait();
    leaders.remove(&child.id());
    status
}

/// Makes exec the subreaper of its runs' descendants and reaps them until shutdown.
pub async fn reap_orphans(shutdown: CancellationToken) {
    if let Err(error) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!(%error, "Cannot become the reaper of the runs' orphans; on a machine whose init does not reap, they stay zombies.");
        return;
    }
    let mut children_ended = signal(SignalKind::child()).ok();
    let mut tick = tokio::time::interval(RESCAN);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
            Some(()) = async { children_ended.as_mut()?.recv().await } => {}
        }
        let reaped = reap_now();
        if reaped > 0 {
            tracing::debug!(reaped, "Reaped orphans of runs.");
        }
    }
}

/// `(state, ppid, pgrp)` of `pid` from `/proc/<pid>/stat`.
fn state(pid: u32) -> Option<(char, u32, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = text[text.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, ppid, pgrp))
}

/// Reaps every zombie orphan of a run now; answers how many.
fn reap_now() -> usize {
    let me = std::process::id();
    let my_group = nix::unistd::getpgrp().as_raw() as u32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let leaders = leaders();
    let mut reaped = 0;
    for pid in entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
        let Some((state, ppid, pgrp)) = self::state(pid) else {
            continue;
        };
        if state == 'Z' && ppid == me && pgrp != my_group && !leaders.contains(&pid) {
            let pid = Pid::from_raw(pid as i32);
            if waitpid(pid, Some(WaitPidFlag::WNOHANG)).is_ok() {
                reaped += 1;
            }
        }
    }
    reaped
}
