//! A real mosquitto broker with its own configuration and persistence directory.

use std::path::Path;
use std::time::Duration;

use tempfile::TempDir;

use crate::ports::{free_port, is_listening, wait_until};
use crate::process::{require_binary, Process};

/// A mosquitto of the test's own; killed and removed on drop.
pub struct Mosquitto {
    pub port: u16,
    /// The TLS listener's port (`start_with_tls`).
    pub tls_port: Option<u16>,
    process: Process,
    dir: TempDir,
}

impl Mosquitto {
    /// mosquitto on a free port, anonymous access, persistent sessions, no limit on
    /// queued messages (so a stopped subscriber loses nothing).
    pub fn start() -> anyhow::Result<Self> {
        Self::launch(None, None, true)
    }

    /// Like `start`, but with mosquitto's default queue limits, as a site's existing
    /// broker has them: at most 20 unacknowledged QoS 1 messages in flight to a client
    /// and 1,000 more queued, beyond which it drops.
    pub fn start_with_default_limits() -> anyhow::Result<Self> {
        Self::launch(None, None, false)
    }

    /// Like `start`, plus a TLS listener on `tls_port` with the server certificate
    /// and key (PEM) and the CA file it announces.
    pub fn start_with_tls(
        ca_file: &Path,
        cert_file: &Path,
        key_file: &Path,
    ) -> anyhow::Result<Self> {
        Self::launch(None, Some([ca_file, cert_file, key_file]), true)
    }

    /// Like `start`, but without anonymous access: only the `(user, password)` pairs
    /// log in (`allow_anonymous false`, a `password_file` made with
    /// `mosquitto_passwd -b`).
    pub fn start_with_users(users: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::launch(Some(users), None, true)
    }

    fn launch(
        users: Option<&[(&str, &str)]>,
        tls: Option<[&Path; 3]>,
        unlimited_queue: bool,
    ) -> anyhow::Result<Self> {
        let binary = require_binary("mosquitto", "mosquitto")?;
        let dir = tempfile::Builder::new()
            .prefix("dtaas-mosquitto-")
            .tempdir()?;
        let port = free_port();
        let access = match users {
            None => "allow_anonymous true\n".to_owned(),
            Some(users) => {
                let passwd = require_binary("mosquitto_passwd", "mosquitto")?;
                let file = dir.path().join("passwords");
                for (i, (user, password)) in users.iter().enumerate() {
                    let mut command = std::process::Command::new(&passwd);
                    command.arg("-b");
                    if i == 0 {
                        command.arg("-c");
                    }
                    let status = command
                        .arg(&file)
                        .args([user, password])
                        .stdout(std::process::Stdio::null())
                        .status()?;
                    anyhow::ensure!(status.success(), "mosquitto_passwd failed for {user}");
                }
                format!("allow_anonymous false\npassword_file {}\n", file.display())
            }
        };
        // One set of security settings (allow_anonymous, password_file) for every
        // listener.
        let mut listeners = format!("per_listener_settings false\nlistener {port} 127.0.0.1\n");
        let tls_port = match tls {
            None => None,
            Some(files) => {
                // mosquitto started as root drops to the `mosquitto` user before it
                // loads certificates: copies it can read, in a directory it can enter.
                use std::os::unix::fs::PermissionsExt;
                let tls_dir = dir.path().join("tls");
                std::fs::create_dir(&tls_dir)?;
                let mut copies = Vec::new();
                for (file, name) in files.iter().zip(["ca.pem", "server.pem", "server.key"]) {
                    let copy = tls_dir.join(name);
                    std::fs::copy(file, &copy)?;
                    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o644))?;
                    copies.push(copy);
                }
                for d in [dir.path(), tls_dir.as_path()] {
                    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
                }
                let tls_port = free_port();
                listeners.push_str(&format!(
                    "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n",
                    copies[0].display(),
                    copies[1].display(),
                    copies[2].display()
                ));
                Some(tls_port)
            }
        };
        // As root, mosquitto would drop to the `mosquitto` user, which cannot write its
        // persistence file into this private directory, and sessions would not survive
        // a restart; it keeps running as the user that started it.
        let run_as = if nix::unistd::geteuid().is_root() {
            "user root\n"
        } else {
            ""
        };
        let queue = if unlimited_queue {
            "max_queued_messages 0\nmax_queued_bytes 0\n"
        } else {
            ""
        };
        let config = format!(
            "{listeners}\
             {access}\
             {run_as}\
             {queue}\
             persistence true\n\
             persistence_location {}/\n\
             autosave_interval 1\n\
             log_type error\nlog_type warning\nlog_type notice\n",
            dir.path().display()
        );
        let config_path = dir.path().join("mosquitto.conf");
        std::fs::write(&config_path, config)?;
        let process = Process::spawn(
            "mosquitto",
            &binary,
            vec!["-c".into(), config_path.into_os_string()],
            vec![],
            dir.path().join("mosquitto.log"),
        )?;
        let mut broker = Self {
            port,
            tls_port,
            process,
            dir,
        };
        broker.wait_ready()?;
        Ok(broker)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let (port, tls_port) = (self.port, self.tls_port);
        let ready = wait_until(Duration::from_secs(10), || {
            is_listening(port) && tls_port.is_none_or(is_listening)
        });
        anyhow::ensure!(
            ready && self.process.is_running(),
            "mosquitto did not become ready on port {port}:\n{}",
            self.process.log_tail()
        );
        Ok(())
    }

    /// `mqtt://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Stops it gracefully (SIGTERM), saving its persistence file.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Starts it again on the same port with the same persistence.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        self.process.start()?;
        self.wait_ready()
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn process(&self) -> &Process {
        &self.process
    }
}
