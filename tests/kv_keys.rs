//! Listing the keys of a KV bucket while its entries are rewritten all the time (history
//! 1, like exec nodes' heartbeats in `dtaas-nodes`): `dtaas_runtime::kv_keys` answers
//! every time, where `kv::Store::keys()` could wait forever.

use std::time::Duration;

use async_nats::jetstream;
use dtaas_runtime::{kv_keys, provision};
use dtaas_schemas::names::KV_NODES;
use dtaas_test_harness::NatsServer;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_listed_while_entries_are_rewritten() {
    let nats = NatsServer::start().expect("nats-server starts");
    let client = timeout(WAIT, async_nats::connect(nats.url()))
        .await
        .unwrap()
        .unwrap();
    let js = jetstream::new(client);
    // The bucket as dtaas provisions `dtaas-nodes`.
    let config = provision::kv_buckets(1)
        .into_iter()
        .find(|b| b.bucket == KV_NODES)
        .unwrap();
    let store = timeout(WAIT, provision::ensure_kv(&js, config))
        .await
        .unwrap()
        .unwrap();
    for key in ["gone", "live", "removed"] {
        store.put(key, "0".into()).await.unwrap();
    }
    store.delete("removed").await.unwrap();
    // A live node: its entry is replaced every 20 ms while the keys are listed.
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0u64.. {
                let _ = store.put("live", i.to_string().into()).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // `kv::Store::keys()` hung in about one call of 30 here (then, 8 s without an answer).
    for _ in 0..200 {
        let keys = timeout(Duration::from_secs(5), kv_keys::keys(&store))
            .await
            .expect("the keys within 5 s")
            .unwrap();
        // A deleted key is listed; its `get` answers `None`.
        assert_eq!(keys, ["gone", "live", "removed"]);
    }
    assert_eq!(store.get("removed").await.unwrap(), None);
    writer.abort();
}
