//! KV buckets and object stores as a standard client creates them: nats-py's
//! create-or-open succeeds on what dtaas provisioned, dtaas accepts what nats-py
//! created, and a bucket an older dtaas made is migrated. Runs against the
//! nats-server of `DTAAS_TEST_NATS_SERVER` (CI: Debian's 2.9.10 and a current 2.x).
//! Needs `python3` with nats-py (`pip install nats-py`, as `.ci/run` does).

use std::path::Path;
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream::DiscardPolicy};
use dtaas_runtime::provision;
use dtaas_test_harness::{NatsServer, Process};
use serde_json::json;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(60);

async fn connect(nats: &NatsServer) -> jetstream::Context {
    let client = timeout(WAIT, async_nats::connect(nats.url()))
        .await
        .unwrap()
        .unwrap();
    jetstream::new(client)
}

/// Runs the nats-py script on `kv` and `objects`; panics with its output on failure.
fn nats_py_create_or_open(nats: &NatsServer, kv: &[kv::Config], objects: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let spec = json!({
        "kv": kv.iter().map(|b| json!({
            "bucket": b.bucket, "history": b.history,
            "description": b.description, "replicas": b.num_replicas,
        })).collect::<Vec<_>>(),
        "objects": objects.iter().map(|(bucket, description)| json!({
            "bucket": bucket, "description": description, "replicas": 1,
        })).collect::<Vec<_>>(),
    });
    let spec_path = dir.path().join("spec.json");
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/nats_py_buckets.py");
    let mut python = Process::spawn(
        "python3 nats_py_buckets.py",
        Path::new("python3"),
        vec![script.into(), nats.url().into(), spec_path.into_os_string()],
        vec![],
        dir.path().join("python.log"),
    )
    .unwrap();
    let code = python.wait(WAIT).unwrap();
    let log = python.log();
    assert!(
        !log.contains("No module named 'nats'"),
        "nats-py is not installed: pip install nats-py"
    );
    assert_eq!(code, Some(0), "nats-py create-or-open failed:\n{log}");
    let expected = kv.len() + objects.len();
    assert_eq!(log.matches(" ok").count(), expected, "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_py_creates_or_opens_what_dtaas_provisioned() {
    let nats = NatsServer::start().unwrap();
    let js = connect(&nats).await;
    timeout(WAIT, provision::all(&js, 1))
        .await
        .unwrap()
        .unwrap();
    let objects: Vec<_> = provision::object_stores(1)
        .into_iter()
        .map(|o| (o.bucket, o.description.unwrap_or_default()))
        .collect();
    let objects: Vec<_> = objects
        .iter()
        .map(|(b, d)| (b.as_str(), d.as_str()))
        .collect();
    nats_py_create_or_open(&nats, &provision::kv_buckets(1), &objects);
}

#[tokio::test(flavor = "multi_thread")]
async fn dtaas_accepts_buckets_nats_py_created() {
    let nats = NatsServer::start().unwrap();
    let kv = provision::kv_buckets(1);
    nats_py_create_or_open(&nats, &kv, &[("dtaas-assets", "Asset contents")]);
    let js = connect(&nats).await;
    timeout(WAIT, provision::all(&js, 1))
        .await
        .unwrap()
        .unwrap();
    let store = timeout(WAIT, js.get_key_value(&kv[0].bucket))
        .await
        .unwrap()
        .unwrap();
    timeout(WAIT, store.put("k", "v".into()))
        .await
        .unwrap()
        .unwrap();
    let value = timeout(WAIT, store.get("k")).await.unwrap().unwrap();
    assert_eq!(value.as_deref(), Some(&b"v"[..]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bucket_of_an_older_dtaas_is_migrated() {
    let nats = NatsServer::start().unwrap();
    let js = connect(&nats).await;
    let wanted = provision::kv_buckets(1).remove(0);
    // What dtaas created before: the KV layout with direct gets on.
    let old = jetstream::stream::Config {
        name: format!("KV_{}", wanted.bucket),
        description: Some(wanted.description.clone()),
        subjects: vec![format!("$KV.{}.>", wanted.bucket)],
        max_messages_per_subject: wanted.history,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: 1,
        discard: DiscardPolicy::New,
        ..Default::default()
    };
    timeout(WAIT, js.create_stream(old)).await.unwrap().unwrap();
    let store = timeout(WAIT, provision::ensure_kv(&js, wanted.clone()))
        .await
        .unwrap()
        .unwrap();
    timeout(WAIT, store.put("kept", "yes".into()))
        .await
        .unwrap()
        .unwrap();
    let mut stream = timeout(WAIT, js.get_stream(format!("KV_{}", wanted.bucket)))
        .await
        .unwrap()
        .unwrap();
    let info = timeout(WAIT, stream.info()).await.unwrap().unwrap();
    assert!(!info.config.allow_direct, "migrated to the standard flags");
    nats_py_create_or_open(&nats, &[wanted], &[]);
}
