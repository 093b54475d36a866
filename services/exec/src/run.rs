//! Watching one run of a process: its output lines, its usage, its end, and stopping it.
//!
//! A reaper thread waits for the run's leader to end without reaping it (`waitid`
//! with `WNOWAIT`), reads its final CPU time from the zombie, SIGKILLs whatever is
//! left of its process group (while the zombie still holds the group's id, so no
//! other group can have taken it), and only then reaps it. So when a run is over, no
//! process of its group remains, and its last CPU seconds are counted.

use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dtaas_runtime::Context;
use dtaas_schemas::exec::{LogStream, ProcessSpec, UsageSample};
use dtaas_schemas::time;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag};
use nix::unistd::Pid;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cgroup::Group;
use crate::config::ExecConfig;
use crate::logs::{self, LogHistory};
use crate::meter::RunMeter;
use crate::supervisor::Key;

/// How long a final usage sample is retried in the background when NATS is away.
const FINAL_SAMPLE_RETRIES: u32 = 120;

/// What one run needs to know.
pub struct Run<'a> {
    pub ctx: &'a Context,
    pub config: &'a ExecConfig,
    pub spec: &'a ProcessSpec,
    pub node: &'a str,
    pub started_at: i64,
    pub logs: &'a Arc<LogHistory>,
    pub key: &'a Key,
    pub stop: &'a CancellationToken,
    pub grace: &'a Mutex<Duration>,
    /// The node's directory, where running groups are recorded.
    pub root: &'a std::path::Path,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// On its own (or killed by someone else than exec).
    Ended {
        code: Option<i32>,
        signal: Option<i32>,
        /// The cgroup memory limit that killed a process of the run, if one did.
        memory_limit_kill: Option<&'static str>,
    },
    /// Because it was stopped.
    Stopped {
        code: Option<i32>,
        signal: Option<i32>,
    },
}

impl Outcome {
    pub fn code(self) -> Option<i32> {
        match self {
            Self::Ended { code, .. } | Self::Stopped { code, .. } => code,
        }
    }

    pub fn signal(self) -> Option<i32> {
        match self {
            Self::Ended { signal, .. } | Self::Stopped { signal, .. } => signal,
        }
    }
}

/// What the reaper thread saw.
struct Reaped {
    code: Option<i32>,
    signal: Option<i32>,
    /// The leader's CPU seconds read from its zombie, reaped children included.
    zombie_cpu: Option<f64>,
    /// The CPU seconds of the run's cgroup once all of it ended.
    group_cpu: Option<f64>,
    /// The highest memory use of the run's cgroup, KiB.
    group_peak_kib: Option<u64>,
    /// The cgroup memory limit that killed a process of the run, if one did.
    memory_limit_kill: Option<&'static str>,
}

fn reap(mut child: std::process::Child, group: Option<Arc<Group>>) -> Reaped {
    let pid = Pid::from_raw(child.id() as i32);
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
    while let Err(nix::errno::Errno::EINTR) = waitid(Id::Pid(pid), flags) {}
    let zombie_cpu = crate::meter::stat(child.id()).map(|s| s.total_cpu);
    let _ = killpg(pid, Signal::SIGKILL);
    if let Some(group) = &group {
        group.kill();
    }
    let status = crate::orphans::reap_leader(&mut child).ok();
    let (mut group_cpu, mut group_peak_kib, mut memory_limit_kill) = (None, None, None);
    if let Some(group) = &group {
        group.remove_after(|g| {
            group_cpu = g.cpu_seconds();
            group_peak_kib = g.peak_memory_kib();
            memory_limit_kill = g.memory_limit_kill();
        });
        if let Some(limit) = memory_limit_kill {
            tracing::info!(
                pid = child.id(),
                limit,
                "A process was killed by its memory limit."
            );
        }
    }
    Reaped {
        code: status.and_then(|s| s.code()),
        signal: status.and_then(|s| s.signal()),
        zombie_cpu,
        group_cpu,
        group_peak_kib,
        memory_limit_kill,
    }
}

/// Watches `child` until it ended (and, if stopped, until it was terminated).
pub async fn watch(run: Run<'_>, mut child: std::process::Child, group: Option<Group>) -> Outcome {
    let group = group.map(Arc::new);
    let pid = child.id();
    crate::leftovers::record(run.root, pid);
    let mut readers = Vec::new();
    for (pipe, stream) in [
        (child.stdout.take().map(OwnedFd::from), LogStream::Stdout),
        (child.stderr.take().map(OwnedFd::from), LogStream::Stderr),
    ] {
        let Some(pipe) = pipe else { continue };
        match tokio::net::unix::pipe::Receiver::from_owned_fd(pipe) {
            Ok(pipe) => readers.push(tokio::spawn(logs::forward(
                pipe,
                stream,
                run.key.clone(),
                run.ctx.nats.clone(),
                run.logs.clone(),
            ))),
            Err(error) => tracing::warn!(%error, pid, "Cannot read a process's output."),
        }
    }
    let (reaped_tx, mut reaped_rx) = oneshot::channel();
    let reaper_group = group.clone();
    let reaper = std::thread::Builder::new()
        .name("dtaas-exec-reap".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            let _ = reaped_tx.send(reap(child, reaper_group));
        });
    if let Err(error) = reaper {
        tracing::error!(%error, pid, "Cannot start a thread to wait for a process; it is killed.");
        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        if let Some(group) = &group {
            group.kill();
        }
        return Outcome::Ended {
            code: None,
            signal: Some(Signal::SIGKILL as i32),
            memory_limit_kill: None,
        };
    }
    let mut meter = RunMeter::new(pid, run.started_at);
    let mut tick = tokio::time::interval(run.config.meter_interval);
    let mut next_report = Instant::now() + run.config.usage_interval;
    let mut stopped = false;
    let mut kill_at: Option<Instant> = None;
    let leader_group = Pid::from_raw(pid as i32);
    let reaped = loop {
        tokio::select! {
            reaped = &mut reaped_rx => break reaped.ok(),
            _ = run.stop.cancelled(), if !stopped => {
                stopped = true;
                let _ = killpg(leader_group, Signal::SIGTERM);
                if let Some(group) = &group {
                    group.signal(Signal::SIGTERM);
                }
                let grace = *run.grace.lock().unwrap_or_else(|e| e.into_inner());
                kill_at = Some(Instant::now() + grace);
            }
            _ = tokio::time::sleep_until(kill_at.unwrap_or_else(Instant::now)), if kill_at.is_some() => {
                let _ = killpg(leader_group, Signal::SIGKILL);
                if let Some(group) = group.clone() {
                    // On cgroup v1 the kill freezes the group first and waits for it
                    // (up to 100 ms): not on the threads that serve every other run.
                    tokio::task::spawn_blocking(move || group.kill());
                }
                kill_at = None;
            }
            _ = tick.tick() => {
                meter.sample();
                if let Some(group) = &group {
                    meter.cpu = meter.cpu.max(group.cpu_seconds().unwrap_or(0.0));
                    meter.peak_kib = meter.peak_kib.max(group.peak_memory_kib().unwrap_or(0));
                }
                if Instant::now() >= next_report {
                    report(&run, &mut meter, false).await;
                    next_report = Instant::now() + run.config.usage_interval;
                }
            }
        }
    };
    let (code, signal, memory_limit_kill) = match reaped {
        Some(reaped) => {
            for cpu in [reaped.zombie_cpu, reaped.group_cpu].into_iter().flatten() {
                meter.cpu = meter.cpu.max(cpu);
            }
            meter.peak_kib = meter.peak_kib.max(reaped.group_peak_kib.unwrap_or(0));
            (reaped.code, reaped.signal, reaped.memory_limit_kill)
        }
        None => (None, None, None),
    };
    crate::leftovers::forget(run.root, pid);
    report(&run, &mut meter, true).await;
    for reader in readers {
        // Every writer of the pipes is gone (the group was killed), so they end.
        let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
    }
    if stopped {
        Outcome::Stopped { code, signal }
    } else {
        Outcome::Ended {
            code,
            signal,
            memory_limit_kill,
        }
    }
}

/// Stores the usage since the last sample; a final one that cannot be stored now is
/// retried in the background.
async fn report(run: &Run<'_>, meter: &mut RunMeter, ended: bool) {
    let delta = meter.delta();
    let sample = UsageSample {
        user: run.spec.owner.clone(),
        dt: run.spec.dt.clone(),
        role: run.spec.role.clone(),
        node: run.node.to_owned(),
        pid: meter.pid,
        run_started_at: meter.started_at,
        at: time::now_ns(),
        cpu_seconds: delta.cpu_seconds,
        wall_seconds: delta.wall_seconds,
        peak_memory_kib: delta.peak_kib,
        ended,
    };
    match crate::usage::publish(&run.ctx.js, &sample).await {
        Ok(()) => meter.reported(&delta),
        Err(error) if ended => {
            tracing::warn!(dt = %sample.dt, %error, "Cannot store a final usage sample; retrying in the background.");
            let js = run.ctx.js.clone();
            tokio::spawn(async move {
                let mut backoff = dtaas_runtime::backoff::Backoff::new();
                for _ in 0..FINAL_SAMPLE_RETRIES {
                    backoff.sleep().await;
                    if crate::usage::publish(&js, &sample).await.is_ok() {
                        return;
                    }
                }
                tracing::error!(dt = %sample.dt, user = %sample.user, cpu_seconds = sample.cpu_seconds, "Usage sample lost: NATS did not take it for 10 minutes.");
            });
        }
        // Not stored: its usage goes into the next sample.
        Err(error) => {
            tracing::debug!(%error, "Cannot store a usage sample.")
        }
    }
}
