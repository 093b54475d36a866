//! CPU time and memory of a process group, read from `/proc`.
//!
//! A run's CPU time is its leader's user + system time plus that of the children it
//! reaped (`cutime`, `cstime`), plus the user + system time of the other live members
//! of its process group. At the end, the leader is read as a zombie (before it is
//! reaped), so nothing the run used after the last periodic sample is missed.
//! Peak memory is the highest of the leader's `VmHWM` and the group's summed `VmRSS`
//! at each sample (and, with a memory cgroup, its peak: `run.rs`).

use std::time::Instant;

/// `/proc` counts CPU time in USER_HZ, which Linux fixes at 100 for user space.
const TICKS_PER_SECOND: f64 = 100.0;

/// The fields of `/proc/<pid>/stat` that metering needs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stat {
    /// Process group id.
    pub pgrp: u32,
    /// User + system time of the process itself, seconds.
    pub own_cpu: f64,
    /// `own_cpu` plus the time of the children it reaped, seconds.
    pub total_cpu: f64,
    /// When it started, in clock ticks after boot: with the pid, names one process.
    pub start_ticks: u64,
}

/// Reads `/proc/<pid>/stat`; `None` when the process is gone.
pub fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses; the fields after
    // the last `)` are plain numbers, field 3 (state) first.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let number = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    let pgrp = number(2)? as u32;
    let (utime, stime, cutime, cstime) = (number(11)?, number(12)?, number(13)?, number(14)?);
    Some(Stat {
        pgrp,
        own_cpu: (utime + stime) as f64 / TICKS_PER_SECOND,
        total_cpu: (utime + stime + cutime + cstime) as f64 / TICKS_PER_SECOND,
        start_ticks: number(19)?,
    })
}

/// A `VmXXX:` line of `/proc/<pid>/status`, KiB.
fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// The pids of the processes in group `pgid` other than its leader.
pub fn other_members(pgid: u32) -> Vec<(u32, Stat)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != pgid)
        .filter_map(|pid| stat(pid).map(|s| (pid, s)))
        .filter(|(_, s)| s.pgrp == pgid)
        .collect()
}

/// What one run of a process used so far.
#[derive(Debug, Clone)]
pub struct RunMeter {
    pub pid: u32,
    /// When the run started (ns since the epoch), part of the run's name.
    pub started_at: i64,
    started: Instant,
    /// CPU seconds measured so far (never decreases).
    pub cpu: f64,
    /// Highest resident memory so far, KiB.
    pub peak_kib: u64,
    /// CPU seconds and time already reported in usage samples.
    reported_cpu: f64,
    reported_at: Instant,
}

/// The usage of a run since the last report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Delta {
    pub cpu_seconds: f64,
    pub wall_seconds: f64,
    pub peak_kib: u64,
}

impl RunMeter {
    pub fn new(pid: u32, started_at: i64) -> Self {
        let now = Instant::now();
        Self {
            pid,
            started_at,
            started: now,
            cpu: 0.0,
            peak_kib: 0,
            reported_cpu: 0.0,
            reported_at: now,
        }
    }

    /// Reads the group's CPU time and memory now.
    pub fn sample(&mut self) {
        let Some(leader) = stat(self.pid) else { return };
        let members = other_members(self.pid);
        let cpu = leader.total_cpu + members.iter().map(|(_, s)| s.own_cpu).sum::<f64>();
        self.cpu = self.cpu.max(cpu);
        let rss: u64 = std::iter::once(self.pid)
            .chain(members.iter().map(|(pid, _)| *pid))
            .filter_map(|pid| status_kib(pid, "VmRSS:"))
            .sum();
        let hwm = status_kib(self.pid, "VmHWM:").unwrap_or(0);
        self.peak_kib = self.peak_kib.max(rss).max(hwm);
    }

    /// Reads the leader after it ended and before it is reaped: its final CPU time,
    /// the children it reaped included.
    pub fn sample_zombie(&mut self) {
        if let Some(leader) = stat(self.pid) {
            self.cpu = self.cpu.max(leader.total_cpu);
        }
    }

    /// Seconds since the run started.
    pub fn wall_seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// The usage since the last `reported`.
    pub fn delta(&self) -> Delta {
        Delta {
            cpu_seconds: (self.cpu - self.reported_cpu).max(0.0),
            wall_seconds: self.reported_at.elapsed().as_secs_f64(),
            peak_kib: self.peak_kib,
        }
    }

    /// `delta` was stored: the next one starts where it ended.
    pub fn reported(&mut self, delta: &Delta) {
        self.reported_cpu += delta.cpu_seconds;
        self.reported_at += std::time::Duration::from_secs_f64(delta.wall_seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_process() {
        let me = std::process::id();
        let s = stat(me).unwrap();
        assert!(s.total_cpu >= s.own_cpu);
        let mut meter = RunMeter::new(me, 0);
        meter.sample();
        assert!(meter.peak_kib > 0);
        let delta = meter.delta();
        meter.reported(&delta);
        assert!(meter.delta().cpu_seconds <= f64::EPSILON);
        assert!(stat(u32::MAX).is_none());
    }
}
