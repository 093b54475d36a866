//! What every dtaas worker shares: configuration, NATS connection, provisioning of
//! streams and buckets, the NATS service API, the JetStream batch consumer, capped
//! backoff, DLQ publishing, logging and shutdown, and KV key listing that cannot hang.

pub mod backoff;
pub mod buckets;
pub mod config;
pub mod consumer;
pub mod context;
pub mod dlq;
pub mod headers;
pub mod jetstream_errors;
pub mod kv_keys;
pub mod logging;
pub mod mqtt_url;
pub mod nats;
pub mod nats_auth;
pub mod nats_url;
pub mod provision;
pub mod secret;
pub mod service;
pub mod shutdown;
pub mod task;
pub mod userinfo;

pub use config::{Config, ConfigError, MqttUrl};
pub use context::Context;
pub use service::{RequestInfo, WorkerService};
