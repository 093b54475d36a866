//! A real nats-server with JetStream in a temporary directory, optionally with its
//! built-in MQTT listener.

use std::time::Duration;

use tempfile::TempDir;

use crate::ports::{free_port, is_listening, wait_until};
use crate::process::{require_binary, Process};

/// A nats-server of the test's own; killed and removed on drop.
pub struct NatsServer {
    pub port: u16,
    /// The port of the `mqtt {}` listener, when started with one.
    pub mqtt_port: Option<u16>,
    process: Process,
    _dir: TempDir,
}

impl NatsServer {
    /// nats-server with JetStream on a free port.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(false)
    }

    /// nats-server with JetStream and its MQTT listener, each on a free port.
    pub fn start_with_mqtt() -> anyhow::Result<Self> {
        Self::start_with(true)
    }

    fn start_with(mqtt: bool) -> anyhow::Result<Self> {
        let binary = require_binary("nats-server", "nats-server")?;
        let dir = tempfile::Builder::new().prefix("dtaas-nats-").tempdir()?;
        let port = free_port();
        let mqtt_port = mqtt.then(free_port);
        let store = dir.path().join("jetstream");
        let mut config = format!(
            "listen: 127.0.0.1:{port}\nserver_name: dtaas-test-{port}\n\
             jetstream {{ store_dir: {store:?} }}\n"
        );
        if let Some(mqtt_port) = mqtt_port {
            config.push_str(&format!("mqtt {{ listen: 127.0.0.1:{mqtt_port} }}\n"));
        }
        let config_path = dir.path().join("nats.conf");
        std::fs::write(&config_path, config)?;
        let process = Process::spawn(
            "nats-server",
            &binary,
            vec!["-c".into(), config_path.into_os_string()],
            vec![],
            dir.path().join("nats.log"),
        )?;
        let mut server = Self {
            port,
            mqtt_port,
            process,
            _dir: dir,
        };
        server.wait_ready()?;
        Ok(server)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let (port, mqtt_port) = (self.port, self.mqtt_port);
        let ready = wait_until(Duration::from_secs(15), || {
            is_listening(port) && mqtt_port.is_none_or(is_listening)
        });
        anyhow::ensure!(
            ready && self.process.is_running(),
            "nats-server did not become ready on port {port}:\n{}",
            self.process.log_tail()
        );
        Ok(())
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops it gracefully (SIGTERM); `start` brings it back with the same data.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts it again on the same port with the same JetStream store.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        self.process.start()?;
        self.wait_ready()
    }

    pub fn process(&self) -> &Process {
        &self.process
    }
}
