//! A real SQLite store behind a wrapper that refuses records carrying a `poison` field,
//! the way InfluxDB answers 400 to a batch with one bad line, and the historian running
//! in the test process on any store.

use std::sync::Arc;

use dtaas_historian::query::Query;
use dtaas_historian::{EmbeddedStore, HistorianConfig, Sink, SinkError};
use dtaas_schemas::timeseries::{TsLatestReply, TsQueryReply};
use dtaas_schemas::TelemetryRecord;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::TIMEOUT;

/// Refuses every write that holds a record with a `poison` field; the historian then
/// splits the batch until the refused records are found.
#[derive(Clone)]
pub struct Picky(pub EmbeddedStore);

impl Sink for Picky {
    async fn write(&self, records: Arc<Vec<TelemetryRecord>>) -> Result<(), SinkError> {
        if records.iter().any(|r| r.fields.contains_key("poison")) {
            return Err(SinkError::Rejected("unsupported field poison".into()));
        }
        self.0.write(records).await
    }

    async fn query(&self, query: Query) -> Result<TsQueryReply, SinkError> {
        self.0.query(query).await
    }

    async fn latest(&self, pt: String) -> Result<TsLatestReply, SinkError> {
        self.0.latest(pt).await
    }
}

/// The historian running in this process.
pub struct InProcess {
    shutdown: CancellationToken,
    worker: JoinHandle<Result<(), dtaas_historian::RunError>>,
}

impl InProcess {
    /// Shuts the historian down and checks it ended without error.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(TIMEOUT, self.worker)
            .await
            .expect("the historian stops in time")
            .expect("the historian task joins")
            .expect("the historian ends without error");
    }
}

/// Runs the historian with its default configuration on `store`, in this process.
pub async fn run_in_process<S: Sink>(nats_url: &str, store: S) -> InProcess {
    let url = nats_url.to_owned();
    let config = dtaas_runtime::Config::from_toml("", "test", &move |name| {
        (name == "DTAAS_NATS_URL").then(|| url.clone())
    })
    .unwrap();
    let shutdown = CancellationToken::new();
    let ctx = tokio::time::timeout(
        TIMEOUT,
        dtaas_runtime::Context::connect(Arc::new(config), "historian", shutdown.clone()),
    )
    .await
    .expect("connect in time")
    .expect("connect");
    let worker = tokio::spawn(dtaas_historian::run_with(
        ctx,
        HistorianConfig::default(),
        store,
    ));
    InProcess { shutdown, worker }
}
