//! The context a worker runs in: configuration, NATS, JetStream and the shutdown token.

use std::sync::Arc;

use async_nats::{jetstream, Client};
use tokio_util::sync::CancellationToken;

use crate::{nats, provision, Config};

/// A worker could not join NATS: no connection, or the streams and buckets it needs
/// cannot be provisioned.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error(transparent)]
    Connect(#[from] nats::ConnectError),
    #[error(transparent)]
    Provision(#[from] provision::ProvisionError),
}

/// Everything a worker needs from its surroundings; cheap to clone.
#[derive(Clone)]
pub struct Context {
    pub config: Arc<Config>,
    pub nats: Client,
    pub js: jetstream::Context,
    /// Cancelled when the process should stop; workers finish in-flight work and return.
    pub shutdown: CancellationToken,
}

impl Context {
    /// Connects to NATS as `dtaas-<worker>` and provisions the streams and buckets,
    /// waiting up to `nats_provision_timeout` while JetStream cannot answer.
    pub async fn connect(
        config: Arc<Config>,
        worker: &str,
        shutdown: CancellationToken,
    ) -> Result<Self, ContextError> {
        let nats = nats::connect(&config, &format!("dtaas-{worker}")).await?;
        let js = jetstream::new(nats.clone());
        let deadline = config.nats_provision_timeout;
        provision::all_within(&js, config.replicas, deadline, &shutdown).await?;
        Ok(Self {
            config,
            nats,
            js,
            shutdown,
        })
    }

    /// JetStream for publishing on hot paths: an ack that has not come within
    /// `nats_ack_timeout` (2 s) fails, so the caller sends again with the same
    /// `Nats-Msg-Id` and a stream leader change costs about that long, not the
    /// client's default 5 s per lost ack. JetStream drops the duplicates.
    pub fn publisher(&self) -> jetstream::Context {
        let mut js = jetstream::new(self.nats.clone());
        js.set_timeout(self.config.nats_ack_timeout);
        js
    }
}
