//! KV buckets and object stores laid out exactly as a standard client creates them
//! (nats-py's `create_key_value` / `create_object_store`, the settings of `nats kv add`),
//! so any client's create-or-open finds the same configuration and succeeds.
//!
//! The stream configuration is sent as JSON so that it carries what async-nats' types
//! leave out on nats-server 2.11+ (`allow_msg_ttl`). A bucket that an older dtaas or
//! another client created with other flags is migrated to the standard ones with a log
//! line; when the server refuses that, the bucket is used as it is (also logged).
//! History and replicas that differ are a conflict the operator resolves.

use std::time::Duration;

use async_nats::jetstream::{self, kv, object_store, stream::StorageType};
use serde_json::{json, Value};

use crate::provision::{ConflictError, ProvisionError};

/// JetStream's duplicate window unless a bucket's TTL is shorter, as clients set it.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Flags a standard client sets and dtaas migrates an existing bucket to.
const STANDARD_FLAGS: [&str; 5] = [
    "allow_direct",
    "allow_msg_ttl",
    "allow_rollup_hdrs",
    "deny_delete",
    "discard",
];

/// A request to the JetStream API about a bucket failed.
#[derive(Debug, thiserror::Error)]
#[error("{action} {kind} {bucket}: {source}")]
pub struct BucketError {
    pub action: &'static str,
    pub kind: &'static str,
    pub bucket: String,
    pub source: ApiError,
}

/// Why a JetStream API request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No answer (or none that parses).
    #[error("{0}. Is JetStream enabled on the server (nats-server -js)?")]
    Request(#[from] jetstream::context::RequestError),
    /// The server answered with an error.
    #[error("{description} (code {code}, error code {err_code})")]
    Server {
        description: String,
        code: Value,
        err_code: Value,
    },
}

/// The stream behind KV bucket `kv`, as nats-py's `create_key_value` sends it.
pub fn kv_stream(kv: &kv::Config) -> Value {
    json!({
        "name": format!("KV_{}", kv.bucket),
        "description": kv.description,
        "subjects": [format!("$KV.{}.>", kv.bucket)],
        "retention": "limits",
        "allow_direct": false,
        "allow_rollup_hdrs": true,
        "allow_msg_ttl": true,
        "deny_delete": true,
        "discard": "new",
        "duplicate_window": nanos(duplicate_window(kv.max_age)),
        "max_age": nanos(kv.max_age),
        "max_bytes": limit(kv.max_bytes),
        "max_consumers": -1,
        "max_msg_size": limit(kv.max_value_size.into()),
        "max_msgs": -1,
        "max_msgs_per_subject": kv.history.max(1),
        "num_replicas": kv.num_replicas.max(1),
        "storage": storage(kv.storage),
    })
}

/// The stream behind object store `store`, as nats-py's `create_object_store` sends it.
pub fn object_stream(store: &object_store::Config) -> Value {
    json!({
        "name": format!("OBJ_{}", store.bucket),
        "description": store.description,
        "subjects": [format!("$O.{}.C.>", store.bucket), format!("$O.{}.M.>", store.bucket)],
        "retention": "limits",
        "allow_direct": true,
        "allow_rollup_hdrs": true,
        "discard": "new",
        "max_age": nanos(store.max_age),
        "max_bytes": limit(store.max_bytes),
        "max_consumers": -1,
        "num_replicas": store.num_replicas.max(1),
        "storage": storage(store.storage),
    })
}

fn duplicate_window(ttl: Duration) -> Duration {
    if ttl.is_zero() {
        DUPLICATE_WINDOW
    } else {
        ttl.min(DUPLICATE_WINDOW)
    }
}

fn nanos(duration: Duration) -> u64 {
    duration.as_nanos() as u64
}

/// A size limit as the API writes it: -1 for none.
fn limit(value: i64) -> i64 {
    if value > 0 {
        value
    } else {
        -1
    }
}

fn storage(storage: StorageType) -> &'static str {
    match storage {
        StorageType::File => "file",
        StorageType::Memory => "memory",
    }
}

/// Creates the stream `wanted` of a `kind` ("KV bucket", "object store") named
/// `bucket`, or checks and migrates the existing one.
pub async fn ensure(
    js: &jetstream::Context,
    kind: &'static str,
    bucket: &str,
    wanted: Value,
) -> Result<(), ProvisionError> {
    let stream = wanted["name"].as_str().unwrap_or_default().to_owned();
    let error = |action, source: ApiError| BucketError {
        action,
        kind,
        bucket: bucket.to_owned(),
        source,
    };
    let info = api(js, &format!("STREAM.INFO.{stream}"), &json!({}))
        .await
        .map_err(|m| error("cannot look up", m))?;
    let Some(info) = info else {
        // Losing a creation race to another worker is an error here; provisioning's
        // second pass then finds the bucket and checks it.
        api(js, &format!("STREAM.CREATE.{stream}"), &wanted)
            .await
            .map_err(|m| error("cannot create", m))?;
        tracing::info!(%bucket, kind, "Created the bucket.");
        return Ok(());
    };
    let actual = &info["config"];
    for (key, setting) in [
        ("max_msgs_per_subject", "history"),
        ("num_replicas", "replicas"),
    ] {
        if !wanted[key].is_null() && actual[key] != wanted[key] {
            return Err(Box::new(ConflictError {
                kind,
                name: bucket.to_owned(),
                stream: stream.clone(),
                setting,
                actual: actual[key].to_string(),
                expected: wanted[key].to_string(),
            })
            .into());
        }
    }
    let differing: Vec<&str> = STANDARD_FLAGS
        .into_iter()
        // A server that does not know a flag (allow_msg_ttl before 2.11) omits it.
        .filter(|key| !wanted[*key].is_null() && !actual[*key].is_null())
        .filter(|key| actual[*key] != wanted[*key])
        .collect();
    if differing.is_empty() {
        return Ok(());
    }
    let mut migrated = actual.clone();
    for key in &differing {
        migrated[*key] = wanted[*key].clone();
    }
    let settings = differing.join(", ");
    match api(js, &format!("STREAM.UPDATE.{stream}"), &migrated).await {
        Ok(_) => {
            tracing::info!(%bucket, kind, %settings, "Migrated the bucket to the settings standard clients create it with.")
        }
        Err(error) => {
            tracing::warn!(%bucket, kind, %settings, %error, "The bucket differs from what standard clients create and cannot be migrated; using it as it is.")
        }
    }
    Ok(())
}

/// Sends a JetStream API request; `Ok(None)` when the stream does not exist.
async fn api(
    js: &jetstream::Context,
    subject: &str,
    body: &Value,
) -> Result<Option<Value>, ApiError> {
    let response: Value = js.request(subject.to_owned(), body).await?;
    match response.get("error") {
        None => Ok(Some(response)),
        // 10059: stream not found.
        Some(error) if error["err_code"] == 10059 => Ok(None),
        Some(error) => Err(ApiError::Server {
            description: error["description"]
                .as_str()
                .unwrap_or("unknown error")
                .to_owned(),
            code: error["code"].clone(),
            err_code: error["err_code"].clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_layout_matches_the_standard_clients() {
        let stream = kv_stream(&kv::Config {
            bucket: "b".into(),
            history: 5,
            num_replicas: 3,
            max_age: Duration::from_secs(30),
            ..Default::default()
        });
        assert_eq!(stream["name"], "KV_b");
        assert_eq!(stream["subjects"], json!(["$KV.b.>"]));
        assert_eq!(stream["allow_direct"], false);
        assert_eq!(stream["max_msgs_per_subject"], 5);
        assert_eq!(stream["duplicate_window"], 30_000_000_000u64);
        assert_eq!(stream["max_bytes"], -1);
    }
}
