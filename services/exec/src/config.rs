//! The `[exec]` table of the configuration file and the exec worker's environment.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use dtaas_runtime::config::{duration, env_override};
use dtaas_runtime::{Config, ConfigError};
use serde::Deserialize;

use crate::error::BadLabel;

/// The `[exec]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecConfig {
    /// This node's id in `dtaas-nodes` and in `dtaas.v1.exec.<node>.*`; env
    /// `DTAAS_EXEC_NODE` [default: the host name].
    pub node: String,
    /// CPUs offered to DT processes; env `DTAAS_EXEC_CPUS` [default: the machine's].
    pub cpus: f64,
    /// Memory offered to DT processes, MiB; env `DTAAS_EXEC_MEMORY_MB` [default: the
    /// machine's total].
    pub memory_mb: u64,
    /// Labels placement constraints match; env `DTAAS_EXEC_LABELS` (`k=v,k2=v2`).
    pub labels: BTreeMap<String, String>,
    /// Where work directories and the asset cache live; env `DTAAS_EXEC_DIR`
    /// [default: `<DTAAS_DATA_DIR>/exec/<node>`].
    pub dir: Option<PathBuf>,
    /// The unprivileged user DT processes run as when exec runs as root; env
    /// `DTAAS_EXEC_RUN_AS` [default: nobody]. Empty: keep root (not advised).
    pub run_as: String,
    /// Between SIGTERM and SIGKILL of a process group [default: 5s]; env
    /// `DTAAS_EXEC_GRACE`.
    #[serde(deserialize_with = "duration")]
    pub grace: Duration,
    /// Longest wait between restarts; the wait doubles from 500 ms [default: 30s].
    #[serde(deserialize_with = "duration")]
    pub restart_backoff_max: Duration,
    /// How often usage is measured (peak memory) [default: 1s].
    #[serde(deserialize_with = "duration")]
    pub meter_interval: Duration,
    /// How often usage samples go to `DTAAS_USAGE` for a running process [default: 10s].
    #[serde(deserialize_with = "duration")]
    pub usage_interval: Duration,
    /// Lines of output kept per process for `logs` [default: 1000].
    pub log_history: usize,
    /// How long usage samples are kept in `DTAAS_USAGE` [default: 400d].
    #[serde(deserialize_with = "duration")]
    pub usage_retention: Duration,
    /// Users whose `usage.get` may name another user or `*`; env
    /// `DTAAS_EXEC_ADMINS` (comma-separated).
    pub admins: Vec<String>,
    /// Where runs' cgroups go: `auto` (below exec's own group in every cgroup v1 and
    /// v2 hierarchy it can write), `v1` or `v2` (only hierarchies of that version),
    /// `off` (process groups and rlimits only), or a directory in a cgroup mount that
    /// exec may write (the parent in that version's hierarchies; in v1 the same path in
    /// each); env `DTAAS_EXEC_CGROUP` [default: auto].
    pub cgroup: String,
    /// `pids.max` of each run's cgroup; env `DTAAS_EXEC_PIDS_MAX` [default: 4096].
    pub pids_max: u64,
}

impl Default for ExecConfig {
    fn default() -> Self {
        Self {
            node: String::new(),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()) as f64,
            memory_mb: total_memory_mb().unwrap_or(1024),
            labels: BTreeMap::new(),
            dir: None,
            run_as: "nobody".into(),
            grace: Duration::from_secs(5),
            restart_backoff_max: Duration::from_secs(30),
            meter_interval: Duration::from_secs(1),
            usage_interval: Duration::from_secs(10),
            log_history: 1000,
            usage_retention: Duration::from_secs(400 * 86_400),
            admins: Vec::new(),
            cgroup: "auto".into(),
            pids_max: 4096,
        }
    }
}

impl ExecConfig {
    /// The `[exec]` table of `config` with the environment applied.
    pub fn load(config: &Config) -> Result<Self, ConfigError> {
        let mut exec: Self = config.section(crate::WORKER)?;
        env_override(&mut exec.node, "DTAAS_EXEC_NODE")?;
        env_override(&mut exec.cpus, "DTAAS_EXEC_CPUS")?;
        env_override(&mut exec.memory_mb, "DTAAS_EXEC_MEMORY_MB")?;
        env_override(&mut exec.run_as, "DTAAS_EXEC_RUN_AS")?;
        env_override(&mut exec.cgroup, "DTAAS_EXEC_CGROUP")?;
        env_override(&mut exec.pids_max, "DTAAS_EXEC_PIDS_MAX")?;
        if let Ok(text) = std::env::var("DTAAS_EXEC_GRACE") {
            let ns = dtaas_schemas::time::parse_duration_ns(&text)
                .map_err(|e| invalid("DTAAS_EXEC_GRACE", e.to_string()))?;
            exec.grace = Duration::from_nanos(ns.max(0) as u64);
        }
        if let Ok(dir) = std::env::var("DTAAS_EXEC_DIR") {
            exec.dir = Some(dir.into());
        }
        if let Ok(labels) = std::env::var("DTAAS_EXEC_LABELS") {
            exec.labels =
                parse_labels(&labels).map_err(|e| invalid("DTAAS_EXEC_LABELS", e.to_string()))?;
        }
        if let Ok(admins) = std::env::var("DTAAS_EXEC_ADMINS") {
            exec.admins = admins
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect();
        }
        if exec.node.is_empty() {
            exec.node = host_name();
        }
        dtaas_schemas::subject::validate_node_id(&exec.node)
            .map_err(|e| invalid("[exec] node / DTAAS_EXEC_NODE", e.to_string()))?;
        exec.log_history = exec.log_history.clamp(1, 100_000);
        exec.meter_interval = exec.meter_interval.max(Duration::from_millis(100));
        exec.usage_interval = exec.usage_interval.max(exec.meter_interval);
        Ok(exec)
    }

    /// Where this node keeps work directories and its asset cache.
    pub fn dir(&self, config: &Config) -> PathBuf {
        self.dir
            .clone()
            .unwrap_or_else(|| config.data_dir.join("exec").join(&self.node))
    }
}

fn invalid(origin: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        origin: origin.to_owned(),
        message: message.into(),
    }
}

/// `k=v,k2=v2` into a map.
fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, BadLabel> {
    text.split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| BadLabel(pair.to_owned()))
        })
        .collect()
}

/// The host name, as a node id (dots become `-`, so it is one subject token).
fn host_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|n| n.trim().to_owned())
        .unwrap_or_default();
    let name = name.replace(['.', '*', '>', ' '], "-");
    if name.is_empty() {
        "node".into()
    } else {
        name
    }
}

/// `MemTotal` of `/proc/meminfo`, MiB.
fn total_memory_mb() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_labels() {
        let text = "[exec]\nnode = \"n1\"\ngrace = \"2s\"\nlabels = {gpu = \"yes\"}\n";
        let config = Config::from_toml(text, "t.toml", &|_| None).unwrap();
        let exec: ExecConfig = config.section("exec").unwrap();
        assert_eq!(exec.node, "n1");
        assert_eq!(exec.grace, Duration::from_secs(2));
        assert_eq!(exec.labels["gpu"], "yes");
        assert_eq!(parse_labels("a=1, b=2").unwrap().len(), 2);
        assert!(parse_labels("a").unwrap_err().to_string().contains("\"a\""));
        let config = Config::from_toml("[exec]\ngrase = \"1s\"", "t.toml", &|_| None).unwrap();
        let err = config.section::<ExecConfig>("exec").unwrap_err();
        assert!(err.to_string().contains("grase"), "{err}");
    }
}
