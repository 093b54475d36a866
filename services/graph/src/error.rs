//! The graph worker's errors: why the worker stopped, and a backend name that is
//! unknown. A store's failures are `StoreError`s (`store.rs`).

/// A `backend` that is neither `embedded` nor `neo4j`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown graph backend {0:?}; expected `embedded` or `neo4j`")]
pub struct UnknownBackend(pub String);

/// Neo4j cannot be used with the configured settings.
#[derive(Debug, thiserror::Error)]
pub enum Neo4jError {
    #[error("invalid Neo4j settings: {0}")]
    Settings(neo4rs::Error),
    #[error("cannot connect to Neo4j at {uri} as {user}: {source}")]
    Connect {
        uri: String,
        user: String,
        source: neo4rs::Error,
    },
}

/// Why the graph worker stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] dtaas_runtime::ConfigError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Neo4j(#[from] Neo4jError),
    #[error(transparent)]
    Service(#[from] dtaas_runtime::service::ServiceError),
    #[error(transparent)]
    Consumer(#[from] dtaas_runtime::consumer::ConsumerError),
    /// The consumer task panicked.
    #[error("the consumer task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}
