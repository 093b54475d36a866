//! The historian end to end with the embedded store: 10,000 points through a store
//! outage, through a SIGKILL, DT outputs and invalid records.

mod historian_common;

use std::time::Duration;

use dtaas_schemas::names::{self, header};
use dtaas_schemas::subject;
use dtaas_test_harness::NatsServer;
use futures::StreamExt;
use historian_common::picky::{self, Picky};
use historian_common::*;

const N: i64 = 10_000;

#[tokio::test(flavor = "multi_thread")]
async fn a_locked_sqlite_store_loses_nothing_and_doubles_nothing() {
    let nats = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (client, js) = connect(&nats.url()).await;
    let mut historian = spawn_historian(&nats.url(), dir.path(), &[]);

    publish(&js, (0..3_000).map(|i| record("out1", "env", i))).await;
    let stored = wait_for_count(&client, "out1", "env", 3_000, TIMEOUT).await;
    assert_eq!(stored.len(), 3_000, "{}", historian.log_tail());

    // The outage: another process-level connection holds the write lock, as a backup
    // tool or a stuck writer would. Every write of the historian now fails.
    let db = dir.path().join("historian.sqlite");
    let lock = rusqlite::Connection::open(&db).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    publish(&js, (3_000..N).map(|i| record("out1", "env", i))).await;
    let failing = dtaas_test_harness::ports::wait_until(Duration::from_secs(60), || {
        historian.log().contains("Cannot write batch")
    });
    assert!(
        failing,
        "the historian never hit the lock:\n{}",
        historian.log_tail()
    );
    // Reads still work (WAL) and show that nothing was written while locked.
    assert_eq!(temps(&client, "out1", "env").await.len(), 3_000);

    lock.execute_batch("COMMIT").unwrap();
    drop(lock);
    let stored = wait_for_count(&client, "out1", "env", N as usize, Duration::from_secs(120)).await;
    assert_exactly_once(&stored, N);
    let rows: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM points WHERE field = 'temp'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rows, N);
    assert!(historian.log().contains("Time-series store is back"));
    assert_eq!(historian.stop(), Some(0), "{}", historian.log_tail());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_stream_then_restart_loses_nothing_and_doubles_nothing() {
    let nats = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (client, js) = connect(&nats.url()).await;
    // Small batches so that the kill lands between many writes.
    let mut historian = spawn_historian_with_config(
        &nats.url(),
        dir.path(),
        "[historian]\nbatch_size = 500\nmax_delay = \"50ms\"\n",
    );

    let publisher = {
        let js = js.clone();
        tokio::spawn(async move {
            for chunk in 0..20 {
                publish(
                    &js,
                    (chunk * 500..(chunk + 1) * 500).map(|i| record("kill1", "env", i)),
                )
                .await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    // Kill it once part of the stream is stored, while more is arriving.
    let partial = wait_for_count(&client, "kill1", "env", 2_000, TIMEOUT).await;
    assert!(partial.len() >= 2_000, "{}", historian.log_tail());
    historian.kill();
    let db = dir.path().join("historian.sqlite");
    let at_kill: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM points WHERE field = 'temp'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        at_kill < N,
        "the kill must land mid-stream, {at_kill} already stored"
    );

    historian.start().unwrap();
    tokio::time::timeout(Duration::from_secs(120), publisher)
        .await
        .expect("publisher done in time")
        .unwrap();
    let stored = wait_for_count(
        &client,
        "kill1",
        "env",
        N as usize,
        Duration::from_secs(120),
    )
    .await;
    assert_exactly_once(&stored, N);
    let rows: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM points WHERE field = 'temp'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rows, N, "one row per point");
    // The durable consumer has nothing left to deliver or acknowledge.
    assert_eq!(
        wait_all_acknowledged(&js, "historian-embedded").await,
        N as u64
    );
    let stream_info = js
        .get_stream(names::STREAM_TELEMETRY)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert_eq!(stream_info.state.messages, N as u64);
    assert_eq!(historian.stop(), Some(0), "{}", historian.log_tail());
}

#[tokio::test(flavor = "multi_thread")]
async fn dt_outputs_are_stored_and_invalid_records_go_to_the_dlq() {
    let nats = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (client, js) = connect(&nats.url()).await;
    let mut dlq = tokio::time::timeout(
        TIMEOUT,
        client.subscribe(subject::dlq("historian").unwrap()),
    )
    .await
    .unwrap()
    .unwrap();
    let mut historian = spawn_historian(&nats.url(), dir.path(), &[]);

    // Garbage, a record without fields, and a DT output among good records.
    let tel = subject::telemetry("bad1", "env").unwrap();
    let ack = js
        .publish(tel.clone(), "not a record".into())
        .await
        .unwrap();
    tokio::time::timeout(TIMEOUT, ack).await.unwrap().unwrap();
    let empty = br#"{"pt":"bad1","measurement":"env","ts":1,"fields":{}}"#;
    let ack = js.publish(tel, empty.to_vec().into()).await.unwrap();
    tokio::time::timeout(TIMEOUT, ack).await.unwrap().unwrap();
    let mut output = record("ignored", "ignored", 7);
    output.fields.remove("state");
    let body = serde_json::to_vec(&output).unwrap();
    let ack = js
        .publish(
            subject::dt_output("twin1", "estimate").unwrap(),
            body.into(),
        )
        .await
        .unwrap();
    tokio::time::timeout(TIMEOUT, ack).await.unwrap().unwrap();
    publish(&js, (0..10).map(|i| record("good1", "env", i))).await;

    let mut reasons = Vec::new();
    for _ in 0..2 {
        let message = tokio::time::timeout(TIMEOUT, dlq.next())
            .await
            .expect("DLQ message")
            .unwrap();
        let headers = message.headers.unwrap();
        reasons.push(headers.get(header::DLQ_REASON).unwrap().to_string());
        assert_eq!(
            headers.get(header::DLQ_SUBJECT).unwrap().as_str(),
            "dtaas.v1.tel.bad1.env"
        );
    }
    assert!(
        reasons.iter().any(|r| r.contains("cannot decode")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("no fields")),
        "{reasons:?}"
    );

    assert_exactly_once(
        &wait_for_count(&client, "good1", "env", 10, TIMEOUT).await,
        10,
    );
    let estimate = wait_for_count(&client, "twin1", "estimate", 1, TIMEOUT).await;
    assert_eq!(
        estimate,
        vec![7],
        "DT output stored under pt = DT, measurement = output"
    );
    assert!(temps(&client, "bad1", "env").await.is_empty());
    assert_eq!(historian.stop(), Some(0), "{}", historian.log_tail());
}

#[tokio::test(flavor = "multi_thread")]
async fn records_the_store_rejects_go_to_the_dlq_and_the_rest_is_stored() {
    let nats = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (client, js) = connect(&nats.url()).await;
    let mut dlq = tokio::time::timeout(
        TIMEOUT,
        client.subscribe(subject::dlq("historian").unwrap()),
    )
    .await
    .unwrap()
    .unwrap();
    let store = dtaas_historian::EmbeddedStore::open(&dir.path().join("ts.sqlite")).unwrap();
    let historian = picky::run_in_process(&nats.url(), Picky(store.clone())).await;

    // 1,000 records in one batch; three of them are refused by the store.
    let poisoned = [17, 500, 999];
    publish(
        &js,
        (0..1_000).map(|i| {
            let mut r = record("picky1", "env", i);
            if poisoned.contains(&i) {
                r.fields
                    .insert("poison".into(), dtaas_schemas::FieldValue::I64(1));
            }
            r
        }),
    )
    .await;
    let mut refused = Vec::new();
    for _ in 0..poisoned.len() {
        let message = tokio::time::timeout(TIMEOUT, dlq.next())
            .await
            .expect("DLQ message")
            .unwrap();
        let reason = message
            .headers
            .unwrap()
            .get(header::DLQ_REASON)
            .unwrap()
            .to_string();
        assert!(reason.contains("unsupported field poison"), "{reason}");
        let record: dtaas_schemas::TelemetryRecord =
            dtaas_schemas::codec::decode(None, &message.payload).unwrap();
        refused.push((record.ts - BASE_NS) / 1_000_000_000);
    }
    refused.sort_unstable();
    assert_eq!(refused, poisoned);

    let stored = wait_for_count(&client, "picky1", "env", 997, TIMEOUT).await;
    assert_eq!(stored.len(), 997);
    assert!(stored.iter().all(|v| !poisoned.contains(v)));
    historian.stop().await;
    // Every message was acknowledged, the refused ones after their DLQ publish.
    assert_eq!(
        wait_all_acknowledged(&js, "historian-embedded").await,
        1_000
    );
    drop(store);
}
