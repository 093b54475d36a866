//! Telemetry messages that carry an array of records (PT telemetry and DT outputs):
//! stored whole and acknowledged as one message; a message with one bad record goes to
//! the DLQ whole, the record named.

mod historian_common;

use dtaas_schemas::codec::Encoding;
use dtaas_schemas::names::{self, header};
use dtaas_schemas::{subject, TelemetryRecord};
use dtaas_test_harness::NatsServer;
use futures::StreamExt;
use historian_common::picky::{self, Picky};
use historian_common::*;

/// A nats-server with the streams, a data directory, a client and its subscription to
/// the historian's DLQ.
async fn start() -> (
    NatsServer,
    tempfile::TempDir,
    async_nats::Client,
    async_nats::jetstream::Context,
    async_nats::Subscriber,
) {
    let nats = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (client, js) = connect(&nats.url()).await;
    let dlq = client
        .subscribe(subject::dlq("historian").unwrap())
        .await
        .unwrap();
    (nats, dir, client, js, dlq)
}

/// Publishes `body` as it is on the telemetry subject of `pt`/env.
async fn publish_body(js: &async_nats::jetstream::Context, pt: &str, body: Vec<u8>) {
    let ack = js
        .publish(subject::telemetry(pt, "env").unwrap(), body.into())
        .await
        .unwrap();
    tokio::time::timeout(TIMEOUT, ack).await.unwrap().unwrap();
}

/// The next `n` DLQ messages: reason and payload.
async fn dead_letters(dlq: &mut async_nats::Subscriber, n: usize) -> Vec<(String, bytes::Bytes)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let message = tokio::time::timeout(TIMEOUT, dlq.next())
            .await
            .expect("DLQ message")
            .unwrap();
        let reason = message.headers.as_ref().unwrap().get(header::DLQ_REASON);
        out.push((reason.unwrap().to_string(), message.payload));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn arrays_of_records_are_stored_and_a_bad_one_goes_to_the_dlq_whole() {
    let (nats, dir, client, js, mut dlq) = start().await;
    let mut historian = spawn_historian(&nats.url(), dir.path(), &[]);

    // 1,000 records in 100 MessagePack arrays of ten.
    let records: Vec<TelemetryRecord> = (0..1_000).map(|i| record("arr1", "env", i)).collect();
    publish_in_arrays(&js, &records, 10).await;
    // An array typed by hand in JSON.
    let typed = format!(
        r#"[{{"pt":"arr2","measurement":"env","ts":{},"fields":{{"temp":1}}}},
            {{"pt":"arr2","measurement":"env","ts":{},"fields":{{"temp":2}}}}]"#,
        BASE_NS,
        BASE_NS + 1
    );
    publish_body(&js, "arr2", typed.into_bytes()).await;
    // Record 1 of three has no fields: the whole message is refused.
    let mut spoiled: Vec<TelemetryRecord> = (0..3).map(|i| record("arr3", "env", i)).collect();
    spoiled[1].fields.clear();
    publish_body(
        &js,
        "arr3",
        Encoding::MsgPack.encode(&spoiled).unwrap().to_vec(),
    )
    .await;
    publish_body(&js, "arr3", b"[]".to_vec()).await;
    // A DT's outputs as an array: stored under pt = the DT, measurement = the output.
    let outputs: Vec<TelemetryRecord> = (0..2).map(|i| record("ignored", "ignored", i)).collect();
    let subject = subject::dt_output("twin2", "estimate").unwrap();
    let body = Encoding::MsgPack.encode(&outputs).unwrap();
    let ack = js.publish(subject, body).await.unwrap();
    tokio::time::timeout(TIMEOUT, ack).await.unwrap().unwrap();

    let mut reasons: Vec<String> = dead_letters(&mut dlq, 2)
        .await
        .into_iter()
        .map(|(reason, _)| reason)
        .collect();
    reasons.sort();
    assert!(
        reasons[0].contains("empty") && reasons[1].contains("record 1 of the array"),
        "{reasons:?}"
    );
    assert!(reasons[1].contains("no fields"), "{reasons:?}");
    assert_exactly_once(
        &wait_for_count(&client, "arr1", "env", 1_000, TIMEOUT).await,
        1_000,
    );
    let mut typed = wait_for_count(&client, "arr2", "env", 2, TIMEOUT).await;
    typed.sort_unstable();
    assert_eq!(typed, vec![1, 2]);
    assert!(temps(&client, "arr3", "env").await.is_empty());
    let mut outputs = wait_for_count(&client, "twin2", "estimate", 2, TIMEOUT).await;
    outputs.sort_unstable();
    assert_eq!(outputs, vec![0, 1]);
    // 100 + 1 + 2 + 1 messages, every one acknowledged.
    assert_eq!(wait_all_acknowledged(&js, "historian-embedded").await, 104);
    assert_eq!(historian.stop(), Some(0), "{}", historian.log_tail());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_the_store_refuses_sends_its_whole_message_to_the_dlq() {
    let (nats, dir, client, js, mut dlq) = start().await;
    let store = dtaas_historian::EmbeddedStore::open(&dir.path().join("ts.sqlite")).unwrap();
    let historian = picky::run_in_process(&nats.url(), Picky(store.clone())).await;

    // 100 messages of ten; records 17 and 555 are refused by the store, so messages 1
    // (records 10..20) and 55 (550..560) go to the DLQ as they are.
    let records: Vec<TelemetryRecord> = (0..1_000)
        .map(|i| {
            let mut r = record("picky2", "env", i);
            if i == 17 || i == 555 {
                r.fields
                    .insert("poison".into(), dtaas_schemas::FieldValue::I64(1));
            }
            r
        })
        .collect();
    publish_in_arrays(&js, &records, 10).await;
    let mut refused = Vec::new();
    for (reason, payload) in dead_letters(&mut dlq, 2).await {
        assert!(reason.contains("unsupported field poison"), "{reason}");
        let array: Vec<TelemetryRecord> = Encoding::MsgPack.decode(&payload).unwrap();
        refused.extend(array.iter().map(|r| (r.ts - BASE_NS) / 1_000_000_000));
    }
    refused.sort_unstable();
    let expected: Vec<i64> = (10..20).chain(550..560).collect();
    assert_eq!(refused, expected);
    let stored = wait_for_count(&client, "picky2", "env", 980, TIMEOUT).await;
    assert_eq!(stored.len(), 980);
    assert!(stored.iter().all(|v| !expected.contains(v)));
    assert_eq!(wait_all_acknowledged(&js, "historian-embedded").await, 100);
    let consumer: async_nats::jetstream::consumer::PullConsumer = js
        .get_consumer_from_stream("historian-embedded", names::STREAM_TELEMETRY)
        .await
        .unwrap();
    assert_eq!(consumer.cached_info().num_redelivered, 0);
    historian.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn arrays_of_the_largest_size_flow_through() {
    let (nats, dir, client, js, _dlq) = start().await;
    // Arrays of 1,000 records (the most a writer puts in one message): the pull is
    // bounded in bytes, and batches of 5,000 records take five messages each.
    let records: Vec<TelemetryRecord> = (0..20_000).map(|i| record("big1", "env", i)).collect();
    publish_in_arrays(&js, &records, 1_000).await;
    let mut historian = spawn_historian(&nats.url(), dir.path(), &[]);
    assert_exactly_once(
        &wait_for_count(&client, "big1", "env", 20_000, TIMEOUT).await,
        20_000,
    );
    assert_eq!(wait_all_acknowledged(&js, "historian-embedded").await, 20);
    assert_eq!(historian.stop(), Some(0), "{}", historian.log_tail());
}
