//! The servers a demo needs: nats-server (JetStream) and an MQTT broker. What answers at
//! the configured URLs is used; when nothing does and the URL is local, the server is
//! started here (its files under the data directory) and stopped with the demo. A server
//! that is neither reachable nor installed is an error saying what to install.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dtaas_runtime::Config;

/// Servers started by the demo; stopped (SIGTERM, then SIGKILL) on drop.
#[derive(Debug, Default)]
pub struct Servers {
    started: Vec<(String, Child)>,
}

impl Servers {
    /// Makes sure NATS and MQTT answer, starting what is missing.
    pub fn ensure(config: &Config) -> anyhow::Result<Self> {
        let mut servers = Self::default();
        let seed = config
            .nats_url
            .servers()
            .first()
            .ok_or_else(|| anyhow::anyhow!("no NATS URL is configured (DTAAS_NATS_URL)"))?;
        let (host, port) = (seed.host().to_owned(), seed.port());
        let dir = config.data_dir.join("servers");
        if !reachable(&host, port) {
            let store = dir.join("nats");
            std::fs::create_dir_all(&store)?;
            let args = [
                "-js".to_owned(),
                "-a".to_owned(),
                host.clone(),
                "-p".to_owned(),
                port.to_string(),
                "-sd".to_owned(),
                store.display().to_string(),
            ];
            servers.start("nats-server", &args, &dir, &host, port)?;
        }
        let mqtt = &config.mqtt_url;
        if !reachable(&mqtt.host, mqtt.port) {
            let args = ["-p".to_owned(), mqtt.port.to_string()];
            servers.start("mosquitto", &args, &dir, &mqtt.host, mqtt.port)?;
        }
        Ok(servers)
    }

    fn start(
        &mut self,
        program: &str,
        args: &[String],
        dir: &Path,
        host: &str,
        port: u16,
    ) -> anyhow::Result<()> {
        if !is_local(host) {
            anyhow::bail!(
                "nothing answers at {host}:{port} for {program}, and it is not on this machine; \
                 start it there or point the URL (DTAAS_NATS_URL / DTAAS_MQTT_URL) at a running one"
            );
        }
        let Some(binary) = find(program) else {
            anyhow::bail!(
                "nothing listens on {host}:{port} and {program} is not installed; install it with \
                 `sudo apt-get install nats-server mosquitto` (deploy/run-local does so), \
                 or point DTAAS_NATS_URL / DTAAS_MQTT_URL at running servers"
            );
        };
        std::fs::create_dir_all(dir)?;
        let log = std::fs::File::create(dir.join(format!("{program}.log")))?;
        let child = Command::new(&binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", binary.display()))?;
        tracing::info!(
            program,
            port,
            pid = child.id(),
            "Started a server for the demo."
        );
        self.started.push((program.to_owned(), child));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !reachable(host, port) {
            if Instant::now() > deadline {
                anyhow::bail!(
                    "{program} did not listen on {host}:{port} within 10 s; see {}",
                    dir.join(format!("{program}.log")).display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Stops the servers started here, each with SIGTERM and, after 5 s, SIGKILL.
    pub fn stop(&mut self) {
        for (program, mut child) in self.started.drain(..).rev() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            let _ = child.kill();
            let _ = child.wait();
            tracing::info!(program, "Stopped.");
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop();
    }
}

fn reachable(host: &str, port: u16) -> bool {
    let Ok(addresses) = (host, port).to_socket_addrs() else {
        return false;
    };
    addresses
        .into_iter()
        .any(|a| TcpStream::connect_timeout(&a, Duration::from_millis(300)).is_ok())
}

fn is_local(host: &str) -> bool {
    matches!(
        host,
        "127.0.0.1" | "localhost" | "::1" | "[::1]" | "0.0.0.0"
    )
}

/// `program` on PATH or in /usr/sbin (where Debian puts mosquitto).
fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}
