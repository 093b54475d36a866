//! Connecting to NATS: any of the seeds, with the configured login; retries with capped
//! backoff while no seed answers, then a clear error naming the URLs (passwords masked).

use std::time::{Duration, Instant};

use async_nats::{Client, ConnectErrorKind, ConnectOptions, Event};

use crate::backoff::Backoff;
use crate::nats_auth::{Login, LoginError};
use crate::Config;

/// The first connection failed: the settings cannot work, or no seed answered in time.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Retrying cannot help: the login settings contradict each other or name a file
    /// that cannot be used.
    #[error("cannot connect to NATS at {url}: {source}")]
    Login { url: String, source: LoginError },
    /// The CA file of `nats_ca_file` does not exist.
    #[error("cannot connect to NATS at {url}: the CA file {} (nats_ca_file) does not exist", path.display())]
    CaFile {
        url: String,
        path: std::path::PathBuf,
    },
    /// The server turned the login down; no retry changes that.
    #[error(
        "cannot connect to NATS at {url}: the server refused the login ({login}): {source}. \
         Check nats_user / nats_password (or the token, nkey or credentials) against the \
         server's authorization"
    )]
    Refused {
        url: String,
        login: String,
        source: async_nats::ConnectError,
    },
    /// The TLS handshake failed: the server's certificate is not trusted or not valid
    /// for the host, or the port does not speak TLS. No retry changes that.
    #[error(
        "cannot connect to NATS at {url}: TLS failed: {error}. Is the server's \
         certificate signed by the CA in nats_ca_file (DTAAS_NATS_CA_FILE; default: the \
         system's) and valid for the host in the URL, and does the server have TLS on?"
    )]
    Tls {
        url: String,
        /// Not the error's `source`: the message names it once, not again as a cause.
        error: async_nats::ConnectError,
    },
    #[error(
        "cannot reach NATS at {url} after {elapsed:?}: {last_error}. \
         Is nats-server running there? Set DTAAS_NATS_URL (or nats_url in the config file) \
         to its address, e.g. nats://127.0.0.1:4222, or several: nats://a:4222,nats://b:4222"
    )]
    Unreachable {
        url: String,
        elapsed: Duration,
        last_error: String,
    },
}

/// Connects as `name` to any of the seeds, retrying until `config.nats_connect_timeout`
/// has passed. Once connected, the client reconnects on its own forever, to any server
/// of the cluster, with the same backoff.
pub async fn connect(config: &Config, name: &str) -> Result<Client, ConnectError> {
    let url = config.nats_url.to_string();
    let setup = |source: LoginError| ConnectError::Login {
        url: url.clone(),
        source,
    };
    let login = config.nats_auth.login(&config.nats_url).map_err(setup)?;
    if let Some(ca) = &config.nats_auth.ca_file {
        if !ca.is_file() {
            return Err(ConnectError::CaFile {
                url,
                path: ca.clone(),
            });
        }
    }
    let started = Instant::now();
    let mut backoff = Backoff::new();
    loop {
        let options = options(config, &login, name).await.map_err(setup)?;
        match options.connect(config.nats_url.servers()).await {
            Ok(client) => {
                tracing::info!(%url, login = %login.describe(), "Connected to NATS.");
                return Ok(client);
            }
            Err(source) if refused(&source) => {
                return Err(ConnectError::Refused {
                    url,
                    login: login.describe(),
                    source,
                });
            }
            Err(error) if tls_failed(&error) => return Err(ConnectError::Tls { url, error }),
            Err(error) => {
                let elapsed = started.elapsed();
                if elapsed >= config.nats_connect_timeout {
                    return Err(ConnectError::Unreachable {
                        url,
                        elapsed,
                        last_error: error.to_string(),
                    });
                }
                let delay = backoff
                    .next_delay()
                    .min(config.nats_connect_timeout - elapsed);
                tracing::warn!(%url, %error, retry_in = ?delay, "NATS is not reachable yet.");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Whether the server turned the login down, which no retry changes.
fn refused(error: &async_nats::ConnectError) -> bool {
    matches!(
        error.kind(),
        ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication
    )
}

/// Whether the TLS handshake failed (rustls refused the certificate, or the server
/// answered something that is not TLS), which no retry changes.
fn tls_failed(error: &async_nats::ConnectError) -> bool {
    if error.kind() == ConnectErrorKind::Tls {
        return true;
    }
    let mut next = std::error::Error::source(error);
    while let Some(cause) = next {
        let rustls = cause
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .is_some_and(|inner| inner.is::<async_nats::rustls::Error>());
        if rustls || cause.is::<async_nats::rustls::Error>() {
            return true;
        }
        next = cause.source();
    }
    false
}

async fn options(config: &Config, login: &Login, name: &str) -> Result<ConnectOptions, LoginError> {
    let mut options = login.apply(ConnectOptions::new()).await?;
    if let Some(ca) = &config.nats_auth.ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    // Replies come to `_INBOX.<user>`, the only inbox the deploy's authorization lets a
    // user subscribe to (deploy/nats/auth.conf), so the CLI works with it on.
    Ok(options
        .name(name)
        .custom_inbox_prefix(format!("_INBOX.{}", config.user))
        .connection_timeout(Duration::from_secs(2))
        .max_reconnects(None)
        .reconnect_delay_callback(crate::backoff::delay)
        .event_callback(|event| async move {
            match event {
                Event::Connected => tracing::info!("NATS connection restored."),
                Event::Disconnected => tracing::warn!("NATS connection lost; reconnecting."),
                Event::Closed | Event::Draining => {
                    tracing::debug!(event = %event, "NATS connection closing.")
                }
                Event::SlowConsumer(sid) => {
                    tracing::warn!(sid, "Slow consumer on a NATS subscription.")
                }
                other => tracing::warn!(event = %other, "NATS event."),
            }
        }))
}
