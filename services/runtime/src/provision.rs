//! Idempotent provisioning of the streams, KV buckets and object stores of dtaas.
//!
//! Provisioning what exists with the same settings is a no-op; an existing stream or
//! bucket with conflicting settings is an error that says how to resolve it. While
//! JetStream cannot answer (a meta leader election, too few nodes up for the replicas,
//! timeouts) provisioning waits with backoff, up to `nats_provision_timeout`.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::{
    self, kv, object_store,
    stream::{Config as StreamConfig, DiscardPolicy, RetentionPolicy, StorageType},
};
use dtaas_schemas::{names, subject};
// Tokio's clock, so that a test with paused time sees the deadline pass.
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::buckets::{self, ApiError};
use crate::jetstream_errors::{is_passing, is_passing_code};

const DAY: Duration = Duration::from_secs(86_400);

/// How long [`all`] waits for JetStream when no deadline is given
/// (`nats_provision_timeout`'s default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long one JetStream API request of provisioning waits for its answer: they take
/// milliseconds when JetStream is healthy, and during an election the client's 10 s
/// default would only delay the next try (a create that was slow is found by it).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// The streams of dtaas with `replicas` replicas each.
pub fn streams(replicas: usize) -> Vec<StreamConfig> {
    let stream =
        |name: &str, description: &str, subjects: Vec<String>, max_age: Duration| StreamConfig {
            name: name.to_owned(),
            description: Some(description.to_owned()),
            subjects,
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            discard: DiscardPolicy::Old,
            max_age,
            num_replicas: replicas,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        };
    vec![
        stream(
            names::STREAM_TELEMETRY,
            "PT telemetry and DT outputs",
            vec![subject::telemetry_all(), subject::dt_output_all()],
            7 * DAY,
        ),
        stream(
            names::STREAM_COMMANDS,
            "Commands for PTs",
            vec![subject::command_all()],
            7 * DAY,
        ),
        stream(
            names::STREAM_EVENTS,
            "Lifecycle transitions, command status and other events",
            vec![subject::event_all()],
            30 * DAY,
        ),
        stream(
            names::STREAM_DLQ,
            "Input that could not be processed, with the reason in headers",
            vec![subject::dlq_all()],
            30 * DAY,
        ),
    ]
}

/// A stream or bucket exists with settings that differ from what dtaas needs.
#[derive(Debug, thiserror::Error)]
#[error(
    "{kind} {name} exists with {setting} = {actual} but dtaas needs {expected}. \
     Fix it with `nats stream edit {stream}` or remove it with `nats stream rm {stream}` \
     (this deletes its messages), then start again"
)]
pub struct ConflictError {
    pub kind: &'static str,
    pub name: String,
    pub stream: String,
    pub setting: &'static str,
    pub actual: String,
    pub expected: String,
}

/// Provisioning failed: a conflict the operator resolves, or JetStream did not answer.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// Exists with other settings; the message says how to fix it.
    #[error(transparent)]
    Conflict(#[from] Box<ConflictError>),
    #[error(
        "cannot look up stream {stream}: {source}. Is JetStream enabled on the server (nats-server -js)?"
    )]
    Lookup {
        stream: String,
        source: jetstream::context::GetStreamError,
    },
    #[error("cannot create stream {stream}: {source}")]
    Create {
        stream: String,
        source: jetstream::context::CreateStreamError,
    },
    /// A KV bucket or object store could not be looked up, created or migrated.
    #[error(transparent)]
    Bucket(Box<buckets::BucketError>),
    /// The bucket exists but cannot be opened.
    #[error("cannot open {kind} {bucket}: {source}")]
    Open {
        kind: &'static str,
        bucket: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// JetStream stayed unavailable (see [`ProvisionError::is_passing`]) for the whole
    /// of `nats_provision_timeout`.
    #[error(
        "JetStream was still unavailable after {waited:?} (nats_provision_timeout, \
         DTAAS_NATS_PROVISION_TIMEOUT): {last}. Are enough NATS nodes up for the replicas \
         (DTAAS_REPLICAS), and does the cluster have a JetStream meta leader \
         (nats server report jetstream)?"
    )]
    Deadline {
        waited: Duration,
        last: Box<ProvisionError>,
    },
    #[error("shut down while waiting for JetStream")]
    Cancelled,
}

impl From<buckets::BucketError> for ProvisionError {
    fn from(error: buckets::BucketError) -> Self {
        Self::Bucket(Box::new(error))
    }
}

impl ProvisionError {
    /// Whether the failure passes on its own, so provisioning waits for it: no meta
    /// leader, too few peers up for the replicas, a request that timed out. JetStream
    /// not enabled, replicas on a single server and conflicts do not.
    pub fn is_passing(&self) -> bool {
        match self {
            Self::Lookup { source, .. } => is_passing(source),
            Self::Create { source, .. } => is_passing(source),
            Self::Bucket(error) => match &error.source {
                ApiError::Request(source) => is_passing(source),
                ApiError::Server { err_code, .. } => err_code.as_u64().is_some_and(is_passing_code),
            },
            Self::Open { source, .. } => is_passing(source.as_ref()),
            Self::Conflict(_) | Self::Deadline { .. } | Self::Cancelled => false,
        }
    }

    /// What provisioning was at: `stream DTAAS_TEL`, `KV bucket dtaas-dts`, ….
    pub fn what(&self) -> String {
        match self {
            Self::Lookup { stream, .. } | Self::Create { stream, .. } => format!("stream {stream}"),
            Self::Bucket(error) => format!("{} {}", error.kind, error.bucket),
            Self::Open { kind, bucket, .. } => format!("{kind} {bucket}"),
            Self::Conflict(conflict) => format!("{} {}", conflict.kind, conflict.name),
            Self::Deadline { last, .. } => last.what(),
            Self::Cancelled => "provisioning".into(),
        }
    }
}

/// Runs `step` until it succeeds. While it fails with what passes on its own
/// ([`ProvisionError::is_passing`]) it is retried with backoff, logging what it waits
/// for, for at most `deadline`; any other failure is retried once (a worker that lost a
/// race to create a stream finds the winner's on the second pass), then returned.
pub async fn retrying<F, Fut>(
    deadline: Duration,
    shutdown: &CancellationToken,
    mut step: F,
) -> Result<(), ProvisionError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), ProvisionError>>,
{
    let started = Instant::now();
    let mut backoff = Backoff::new();
    let mut failed = false;
    loop {
        let error = match step().await {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        let waited = started.elapsed();
        let delay = if error.is_passing() {
            if waited >= deadline {
                return Err(ProvisionError::Deadline {
                    // Whole seconds: the error says "after 60s", not "after 60.000213s".
                    waited: Duration::from_secs(waited.as_secs_f64().round() as u64),
                    last: Box::new(error),
                });
            }
            let delay = backoff.next_delay().min(deadline - waited);
            tracing::warn!(waiting_for = %error.what(), %error, ?waited, retry_in = ?delay, "Waiting for JetStream to provision.");
            delay
        } else if !failed {
            failed = true;
            tracing::debug!(%error, "Provisioning failed once; checking again.");
            Duration::from_millis(250)
        } else {
            return Err(error);
        };
        tokio::select! {
            _ = shutdown.cancelled() => return Err(ProvisionError::Cancelled),
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Creates `wanted` unless it exists; checks the settings of an existing one.
pub async fn ensure_stream(
    js: &jetstream::Context,
    wanted: StreamConfig,
) -> Result<(), ProvisionError> {
    match js.get_stream(&wanted.name).await {
        Ok(stream) => {
            compare(
                "stream",
                &wanted.name,
                &stream.cached_info().config,
                &wanted,
            )?;
            Ok(())
        }
        Err(e) if is_not_found(&e) => {
            let name = wanted.name.clone();
            match js.create_stream(wanted.clone()).await {
                Ok(_) => {
                    tracing::info!(stream = %name, "created stream");
                    Ok(())
                }
                // Workers starting at the same moment race to create it; whoever lost
                // checks what the winner created.
                Err(create_error) => match js.get_stream(&name).await {
                    Ok(stream) => {
                        compare("stream", &name, &stream.cached_info().config, &wanted)?;
                        Ok(())
                    }
                    Err(_) => Err(ProvisionError::Create {
                        stream: name,
                        source: create_error,
                    }),
                },
            }
        }
        Err(source) => Err(ProvisionError::Lookup {
            stream: wanted.name,
            source,
        }),
    }
}

fn compare(
    kind: &'static str,
    name: &str,
    actual: &StreamConfig,
    wanted: &StreamConfig,
) -> Result<(), Box<ConflictError>> {
    let conflict = |setting, actual: String, expected: String| {
        Box::new(ConflictError {
            kind,
            name: name.to_owned(),
            stream: name.to_owned(),
            setting,
            actual,
            expected,
        })
    };
    let mut actual_subjects = actual.subjects.clone();
    let mut wanted_subjects = wanted.subjects.clone();
    actual_subjects.sort();
    wanted_subjects.sort();
    if actual_subjects != wanted_subjects {
        return Err(conflict(
            "subjects",
            format!("{actual_subjects:?}"),
            format!("{wanted_subjects:?}"),
        ));
    }
    if actual.retention != wanted.retention {
        return Err(conflict(
            "retention",
            format!("{:?}", actual.retention),
            format!("{:?}", wanted.retention),
        ));
    }
    if actual.storage != wanted.storage {
        return Err(conflict(
            "storage",
            format!("{:?}", actual.storage),
            format!("{:?}", wanted.storage),
        ));
    }
    if actual.num_replicas != wanted.num_replicas {
        return Err(conflict(
            "replicas",
            actual.num_replicas.to_string(),
            wanted.num_replicas.to_string(),
        ));
    }
    if actual.max_age != wanted.max_age {
        return Err(conflict(
            "max_age",
            format!("{:?}", actual.max_age),
            format!("{:?}", wanted.max_age),
        ));
    }
    Ok(())
}

fn is_not_found(error: &jetstream::context::GetStreamError) -> bool {
    matches!(
        error.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(e)
            if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

/// Creates the KV bucket as a standard client would, unless it exists; checks history
/// and replicas of an existing one and migrates its flags (see `buckets`).
pub async fn ensure_kv(
    js: &jetstream::Context,
    wanted: kv::Config,
) -> Result<kv::Store, ProvisionError> {
    const KIND: &str = "KV bucket";
    buckets::ensure(js, KIND, &wanted.bucket, buckets::kv_stream(&wanted)).await?;
    js.get_key_value(&wanted.bucket)
        .await
        .map_err(|e| open_error(KIND, &wanted.bucket, e))
}

fn open_error(
    kind: &'static str,
    bucket: &str,
    source: impl std::error::Error + Send + Sync + 'static,
) -> ProvisionError {
    ProvisionError::Open {
        kind,
        bucket: bucket.to_owned(),
        source: Box::new(source),
    }
}

/// Creates the object store as a standard client would, unless it exists; checks
/// replicas of an existing one.
pub async fn ensure_object_store(
    js: &jetstream::Context,
    wanted: object_store::Config,
) -> Result<object_store::ObjectStore, ProvisionError> {
    const KIND: &str = "object store";
    let stream = buckets::object_stream(&wanted);
    buckets::ensure(js, KIND, &wanted.bucket, stream).await?;
    js.get_object_store(&wanted.bucket)
        .await
        .map_err(|e| open_error(KIND, &wanted.bucket, e))
}

/// Opens KV bucket `bucket` (provisioned by `Context::connect`).
pub async fn open_kv(js: &jetstream::Context, bucket: &str) -> Result<kv::Store, ProvisionError> {
    js.get_key_value(bucket)
        .await
        .map_err(|e| open_error("KV bucket", bucket, e))
}

/// Opens object store `bucket` (provisioned by `Context::connect`).
pub async fn open_object_store(
    js: &jetstream::Context,
    bucket: &str,
) -> Result<object_store::ObjectStore, ProvisionError> {
    js.get_object_store(bucket)
        .await
        .map_err(|e| open_error("object store", bucket, e))
}

/// The KV buckets of dtaas.
pub fn kv_buckets(replicas: usize) -> Vec<kv::Config> {
    let bucket = |name: &str, description: &str, history: i64| kv::Config {
        bucket: name.to_owned(),
        description: description.to_owned(),
        history,
        storage: StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    };
    vec![
        bucket(names::KV_DTS, "DT registry", 10),
        bucket(names::KV_COMMANDS, "Command ledger", 5),
        bucket(names::KV_ASSETS, "Asset metadata", 1),
        bucket(names::KV_NODES, "Exec nodes and their heartbeats", 1),
    ]
}

/// The object stores of dtaas.
pub fn object_stores(replicas: usize) -> Vec<object_store::Config> {
    let store = |name: &str, description: &str| object_store::Config {
        bucket: name.to_owned(),
        description: Some(description.to_owned()),
        storage: StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    };
    vec![
        store(names::OBJECT_ASSETS, "Asset contents"),
        store(names::OBJECT_SNAPSHOTS, "Saved DT snapshots"),
    ]
}

/// Provisions every stream, KV bucket and object store of dtaas, waiting up to
/// [`DEFAULT_TIMEOUT`] for JetStream (see [`all_within`]).
pub async fn all(js: &jetstream::Context, replicas: usize) -> Result<(), ProvisionError> {
    all_within(js, replicas, DEFAULT_TIMEOUT, &CancellationToken::new()).await
}

/// Provisions every stream, KV bucket and object store of dtaas; while JetStream cannot
/// answer, waits with backoff for at most `deadline` (see [`retrying`]).
pub async fn all_within(
    js: &jetstream::Context,
    replicas: usize,
    deadline: Duration,
    shutdown: &CancellationToken,
) -> Result<(), ProvisionError> {
    let mut js = js.clone();
    js.set_timeout(REQUEST_TIMEOUT);
    retrying(deadline, shutdown, || all_once(&js, replicas)).await
}

async fn all_once(js: &jetstream::Context, replicas: usize) -> Result<(), ProvisionError> {
    for stream in streams(replicas) {
        ensure_stream(js, stream).await?;
    }
    for bucket in kv_buckets(replicas) {
        ensure_kv(js, bucket).await?;
    }
    for store in object_stores(replicas) {
        ensure_object_store(js, store).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::jetstream::context::{CreateStreamError, CreateStreamErrorKind};

    fn timed_out() -> ProvisionError {
        ProvisionError::Create {
            stream: "DTAAS_TEL".into(),
            source: CreateStreamError::new(CreateStreamErrorKind::TimedOut),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waits_while_jetstream_cannot_answer_then_names_the_deadline() {
        let mut tries = 0;
        let error = retrying(Duration::from_secs(30), &CancellationToken::new(), || {
            tries += 1;
            async { Err(timed_out()) }
        })
        .await
        .unwrap_err();
        assert!(tries > 5, "{tries} tries");
        let message = error.to_string();
        assert!(message.contains("after 30s"), "{message}");
        assert!(message.contains("nats_provision_timeout"), "{message}");
        assert!(
            message.contains("cannot create stream DTAAS_TEL"),
            "{message}"
        );
        assert_eq!(error.what(), "stream DTAAS_TEL");
    }

    #[tokio::test(start_paused = true)]
    async fn succeeds_once_jetstream_answers_and_stops_at_shutdown() {
        let mut tries = 0;
        let ok = retrying(Duration::from_secs(30), &CancellationToken::new(), || {
            tries += 1;
            let result = if tries < 4 { Err(timed_out()) } else { Ok(()) };
            async move { result }
        })
        .await;
        assert!(ok.is_ok() && tries == 4);
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let stopped = retrying(Duration::from_secs(30), &shutdown, || async {
            Err(timed_out())
        });
        assert!(matches!(stopped.await, Err(ProvisionError::Cancelled)));
    }

    #[tokio::test(start_paused = true)]
    async fn what_waiting_cannot_fix_is_tried_twice() {
        let mut tries = 0;
        let error = retrying(Duration::from_secs(30), &CancellationToken::new(), || {
            tries += 1;
            async {
                Err(ProvisionError::Create {
                    stream: "DTAAS_TEL".into(),
                    source: CreateStreamError::new(CreateStreamErrorKind::JetStreamUnavailable),
                })
            }
        })
        .await
        .unwrap_err();
        assert_eq!(tries, 2);
        assert!(!error.is_passing());
    }
}
