//! A real victoria-metrics: the InfluxDB v2 write API peer of the historian's tests.

use std::time::Duration;

use tempfile::TempDir;

use crate::http;
use crate::ports::{free_port, wait_until};
use crate::process::{require_binary, Process};

/// A victoria-metrics of the test's own; killed and removed on drop.
pub struct VictoriaMetrics {
    pub port: u16,
    process: Process,
    _dir: TempDir,
}

impl VictoriaMetrics {
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with_args(&[])
    }

    /// Like `start`, with extra command-line flags such as
    /// `-dedup.minScrapeInterval=1ms` (one sample per series and timestamp, as InfluxDB
    /// overwrites a point written twice).
    pub fn start_with_args(extra: &[&str]) -> anyhow::Result<Self> {
        let binary = require_binary("victoria-metrics", "victoria-metrics")?;
        let dir = tempfile::Builder::new().prefix("dtaas-vm-").tempdir()?;
        let port = free_port();
        let process = Process::spawn(
            "victoria-metrics",
            &binary,
            vec![
                format!("-httpListenAddr=127.0.0.1:{port}").into(),
                format!("-storageDataPath={}", dir.path().join("data").display()).into(),
                "-retentionPeriod=100y".into(),
                "-search.disableCache".into(),
                "-loggerLevel=WARN".into(),
            ]
            .into_iter()
            .chain(extra.iter().map(|arg| (*arg).into()))
            .collect(),
            vec![],
            dir.path().join("victoria-metrics.log"),
        )?;
        let mut server = Self {
            port,
            process,
            _dir: dir,
        };
        server.wait_ready()?;
        Ok(server)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let port = self.port;
        let ready = wait_until(Duration::from_secs(20), || {
            matches!(http::get(port, "/health"), Ok((200, _)))
        });
        anyhow::ensure!(
            ready && self.process.is_running(),
            "victoria-metrics did not become ready on port {port}:\n{}",
            self.process.log_tail()
        );
        Ok(())
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Makes recent writes visible to queries and exports.
    pub fn flush(&self) -> anyhow::Result<()> {
        let (status, body) = http::get(self.port, "/internal/force_flush")?;
        anyhow::ensure!(status == 200, "force_flush answered {status}: {body}");
        Ok(())
    }

    /// `/api/v1/export` for `match[]` = `selector`: one JSON line per series.
    pub fn export(&self, selector: &str) -> anyhow::Result<String> {
        self.flush()?;
        let path = format!("/api/v1/export?match[]={}", percent_encode(selector));
        let (status, body) = http::get(self.port, &path)?;
        anyhow::ensure!(status == 200, "export answered {status}: {body}");
        Ok(body)
    }

    /// Stops it gracefully; `start_again` brings it back with the same data.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    pub fn start_again(&mut self) -> anyhow::Result<()> {
        self.process.start()?;
        self.wait_ready()
    }
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
