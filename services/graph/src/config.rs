//! The `[graph]` table of the configuration file and the graph worker's environment.

use std::time::Duration;

use dtaas_runtime::config::{duration, env_override};
use dtaas_runtime::{Config, ConfigError};
use serde::Deserialize;

/// Which store keeps the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// SQLite file `graph.sqlite` under `DTAAS_DATA_DIR`.
    #[default]
    Embedded,
    /// Neo4j over Bolt (`neo4rs`).
    Neo4j,
}

impl std::str::FromStr for Backend {
    type Err = crate::error::UnknownBackend;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "embedded" => Ok(Self::Embedded),
            "neo4j" => Ok(Self::Neo4j),
            other => Err(crate::error::UnknownBackend(other.to_owned())),
        }
    }
}

pub use dtaas_runtime::secret::Secret;

/// The `[graph]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GraphConfig {
    /// `embedded` (default) or `neo4j`; env `DTAAS_GRAPH_BACKEND`.
    pub backend: Backend,
    /// Durable consumer name on `DTAAS_EVT`; env `DTAAS_GRAPH_DURABLE`.
    pub durable: String,
    /// Most events written in one store transaction.
    pub batch_size: usize,
    /// Longest wait for a batch to fill before it is written anyway [default: 100ms].
    #[serde(deserialize_with = "duration")]
    pub max_delay: Duration,
    /// How long JetStream waits for an event's ack before redelivering it (at least
    /// 1s) [default: 30s]: after a crash, the events that were in flight come back this late.
    /// Writes that take longer are not a problem while the store is failing (the worker
    /// sends in-progress acks then), but a single write must finish within it.
    #[serde(deserialize_with = "duration")]
    pub ack_wait: Duration,
    /// How long an embedded store write waits for a SQLite lock before it counts as
    /// a failed (and retried) write [default: 1s].
    #[serde(deserialize_with = "duration")]
    pub sqlite_busy: Duration,
    /// Users that may run writing Cypher through `graph.cypher`.
    pub admins: Vec<String>,
    /// Bolt URI of Neo4j, e.g. `bolt://127.0.0.1:7687`; env `DTAAS_NEO4J_URI`.
    pub neo4j_uri: String,
    /// Neo4j user; env `DTAAS_NEO4J_USER`.
    pub neo4j_user: String,
    /// Neo4j password; env `DTAAS_NEO4J_PASSWORD`. Never logged.
    pub neo4j_password: Secret,
    /// Neo4j database name.
    pub neo4j_database: String,
}

impl Default for GraphConfig {
    fn default() -> Self {
        Self {
            backend: Backend::Embedded,
            durable: "graph".into(),
            batch_size: 500,
            max_delay: Duration::from_millis(100),
            ack_wait: Duration::from_secs(30),
            sqlite_busy: Duration::from_secs(1),
            admins: Vec::new(),
            neo4j_uri: "bolt://127.0.0.1:7687".into(),
            neo4j_user: "neo4j".into(),
            neo4j_password: Secret::default(),
            neo4j_database: "neo4j".into(),
        }
    }
}

impl GraphConfig {
    /// The `[graph]` table of `config` with the environment applied.
    pub fn load(config: &Config) -> Result<Self, ConfigError> {
        let mut graph: Self = config.section(crate::WORKER)?;
        env_override(&mut graph.backend, "DTAAS_GRAPH_BACKEND")?;
        env_override(&mut graph.durable, "DTAAS_GRAPH_DURABLE")?;
        env_override(&mut graph.neo4j_uri, "DTAAS_NEO4J_URI")?;
        env_override(&mut graph.neo4j_user, "DTAAS_NEO4J_USER")?;
        env_override(&mut graph.neo4j_password, "DTAAS_NEO4J_PASSWORD")?;
        graph.batch_size = graph.batch_size.clamp(1, 10_000);
        Ok(graph)
    }

    /// `max_delay`, the longest a batch waits to fill.
    pub fn batch_delay(&self) -> Duration {
        self.max_delay
    }

    /// `ack_wait`, at least one second.
    pub fn ack_wait(&self) -> Duration {
        self.ack_wait.max(Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_never_prints() {
        let config = GraphConfig {
            neo4j_password: Secret::new("hunter2"),
            ..GraphConfig::default()
        };
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn table_is_read_and_typos_named() {
        let text = "[graph]\nbackend = \"neo4j\"\nadmins = [\"root\"]\n";
        let config = Config::from_toml(text, "t.toml", &|_| None).unwrap();
        let graph: GraphConfig = config.section("graph").unwrap();
        assert_eq!(graph.backend, Backend::Neo4j);
        assert_eq!(graph.admins, ["root"]);
        let config = Config::from_toml("[graph]\nbakend = 1", "t.toml", &|_| None).unwrap();
        let err = config.section::<GraphConfig>("graph").unwrap_err();
        assert!(err.to_string().contains("bakend"), "{err}");
    }
}
