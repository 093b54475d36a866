//! Connecting to NATS: retries with capped backoff, then a clear error naming the URL.

use std::time::{Duration, Instant};

use async_nats::{Client, ConnectOptions, Event};

use crate::Config;

/// The first connection failed for longer than the configured timeout.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot reach NATS at {url} after {elapsed:?}: {last_error}. \
     Is nats-server running there? Set DTAAS_NATS_URL (or nats_url in the config file) \
     to its address, e.g. nats://127.0.0.1:4222"
)]
pub struct ConnectError {
    pub url: String,
    pub elapsed: Duration,
    pub last_error: String,
}

/// The delay before reconnect attempt `attempt`: 100 ms doubling up to 5 s.
pub fn backoff(attempt: usize) -> Duration {
    let exponent = attempt.min(6) as u32;
    Duration::from_millis(100 * 2u64.pow(exponent)).min(Duration::from_secs(5))
}

/// Connects as `name`, retrying until `config.nats_connect_timeout` has passed. Once
/// connected, the client reconnects on its own forever, with the same backoff.
pub async fn connect(config: &Config, name: &str) -> Result<Client, ConnectError> {
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        let options = options(config, name).await;
        let result = match options {
            Ok(options) => options
                .connect(config.nats_url.as_str())
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        match result {
            Ok(client) => {
                tracing::info!(url = %config.nats_url, "connected to NATS");
                return Ok(client);
            }
            Err(error) => {
                let elapsed = started.elapsed();
                if elapsed >= config.nats_connect_timeout {
                    return Err(ConnectError {
                        url: config.nats_url.clone(),
                        elapsed,
                        last_error: error,
                    });
                }
                let delay = backoff(attempt).min(config.nats_connect_timeout - elapsed);
                tracing::warn!(url = %config.nats_url, %error, retry_in = ?delay, "NATS is not reachable yet");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
        }
    }
}

async fn options(config: &Config, name: &str) -> Result<ConnectOptions, String> {
    let mut options = ConnectOptions::new();
    if let Some(creds) = &config.nats_creds {
        options = options
            .credentials_file(creds)
            .await
            .map_err(|e| format!("cannot read NATS credentials {}: {e}", creds.display()))?;
    }
    Ok(options
        .name(name)
        .connection_timeout(Duration::from_secs(2))
        .max_reconnects(None)
        .reconnect_delay_callback(backoff)
        .event_callback(|event| async move {
            match event {
                Event::Connected => tracing::info!("NATS connection restored"),
                Event::Disconnected => tracing::warn!("NATS connection lost; reconnecting"),
                Event::Closed | Event::Draining => {
                    tracing::debug!(event = %event, "NATS connection closing")
                }
                Event::SlowConsumer(sid) => {
                    tracing::warn!(sid, "slow consumer on NATS subscription")
                }
                other => tracing::warn!(event = %other, "NATS event"),
            }
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped() {
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(3), Duration::from_millis(800));
        assert_eq!(backoff(100), Duration::from_secs(5));
    }
}
