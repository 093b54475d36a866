//! Runs a dtaas worker (`dtaas <worker>`) as a separate process, for crash tests and
//! benchmarks.

use std::path::Path;

use crate::process::Process;

/// Where a worker connects and keeps its files.
#[derive(Debug, Clone)]
pub struct WorkerEnv {
    pub nats_url: String,
    pub mqtt_url: String,
    pub data_dir: std::path::PathBuf,
    /// More variables, such as `DTAAS_BRIDGE_IN_FLIGHT`.
    pub extra: Vec<(String, String)>,
}

/// Starts `binary <worker>` with `DTAAS_NATS_URL`, `DTAAS_MQTT_URL`, `DTAAS_DATA_DIR`
/// and `RUST_LOG` (info unless set), logging to `<data_dir>/<worker>.log`.
pub fn spawn_worker(binary: &Path, worker: &str, env: &WorkerEnv) -> anyhow::Result<Process> {
    std::fs::create_dir_all(&env.data_dir)?;
    let mut envs = vec![
        ("DTAAS_NATS_URL".to_owned(), env.nats_url.clone()),
        ("DTAAS_MQTT_URL".to_owned(), env.mqtt_url.clone()),
        (
            "DTAAS_DATA_DIR".to_owned(),
            env.data_dir.display().to_string(),
        ),
        (
            "RUST_LOG".to_owned(),
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        ),
    ];
    envs.extend(env.extra.iter().cloned());
    Process::spawn(
        worker,
        binary,
        vec![worker.into()],
        envs.into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect(),
        env.data_dir.join(format!("{worker}.log")),
    )
}
