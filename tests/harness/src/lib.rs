//! Real servers for dtaas tests: nats-server, mosquitto, victoria-metrics, FalkorDB,
//! and a TCP proxy that stalls and cuts connections.
//!
//! Each server gets a free port and its own temporary directory, is waited for until
//! it answers, and is killed and removed on drop. No test uses a standard port.

pub mod certs;
pub mod cluster;
pub mod falkordb;
pub mod http;
pub mod mosquitto;
pub mod mutate;
pub mod nats;
pub mod ports;
pub mod process;
pub mod proxy;
pub mod resp;
pub mod victoria;
pub mod worker;

pub use certs::Certs;
pub use cluster::NatsCluster;
pub use falkordb::FalkorDb;
pub use mosquitto::Mosquitto;
pub use nats::{NatsOptions, NatsServer};
pub use process::Process;
pub use proxy::TcpProxy;
pub use resp::{Resp, RespClient};
pub use victoria::VictoriaMetrics;
