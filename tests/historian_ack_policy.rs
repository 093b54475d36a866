//! The historian's ack policies: `all` (one acknowledgement per batch) gets past
//! messages deleted or purged from the stream, `explicit` survives a SIGKILL like `all` does, and
//! a durable created under the other policy is refused with a clear error.

mod historian_common;

use dtaas_schemas::names;
use dtaas_test_harness::NatsServer;
use historian_common::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_message_does_not_hold_back_the_acknowledgements() {
    let nats = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (client, js) = connect(&nats.url()).await;
    publish(&js, (0..100).map(|i| record("gap1", "env", i))).await;
    let stream = js.get_stream(names::STREAM_TELEMETRY).await.unwrap();
    // Record 49 is stream sequence 50: delete it before the historian starts.
    assert!(stream.delete_message(50).await.unwrap());

    let mut historian = spawn_historian(&nats.url(), dir.path(), &[]);
    let stored = wait_for_count(&client, "gap1", "env", 99, TIMEOUT).await;
    let expected: Vec<i64> = (0..100).filter(|i| *i != 49).collect();
    let mut sorted = stored.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, expected, "{}", historian.log_tail());
    // One acknowledgement per batch, and the floor passed the hole at 50.
    assert_eq!(wait_all_acknowledged(&js, "historian-embedded").await, 100);
    assert!(
        historian.log().contains("ack_policy=\"all\""),
        "{}",
        historian.log_tail()
    );
    assert_eq!(historian.stop(), Some(0), "{}", historian.log_tail());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_of_deleted_messages_is_passed_in_one_go() {
    let nats = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (client, js) = connect(&nats.url()).await;
    publish(&js, (0..200).map(|i| record("gap2", "env", i))).await;
    let stream = js.get_stream(names::STREAM_TELEMETRY).await.unwrap();
    // Stream sequences 101..=160 (records 100..=159), as a purge would leave them.
    // Passed one look-up after another, not one every few seconds: sixty of those
    // would take longer than TIMEOUT.
    for seq in 101..=160 {
        assert!(stream.delete_message(seq).await.unwrap());
    }

    let mut historian = spawn_historian(&nats.url(), dir.path(), &[]);
    let stored = wait_for_count(&client, "gap2", "env", 140, TIMEOUT).await;
    let expected: Vec<i64> = (0..200).filter(|i| !(100..160).contains(i)).collect();
    let mut sorted = stored.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, expected, "{}", historian.log_tail());
    assert_eq!(wait_all_acknowledged(&js, "historian-embedded").await, 200);
    assert_eq!(historian.stop(), Some(0), "{}", historian.log_tail());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_sink_on_a_purged_stream_acknowledges_at_once() {
    let nats = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (client, js) = connect(&nats.url()).await;
    // The stream starts at sequence 20,001, as after a purge or once messages aged out;
    // a new durable reports an ack floor of 0 there.
    let old: Vec<_> = (0..20_000).map(|i| record("old1", "env", i)).collect();
    publish_in_arrays(&js, &old, 1).await;
    let stream = js.get_stream(names::STREAM_TELEMETRY).await.unwrap();
    stream.purge().await.unwrap();
    publish(&js, (0..100).map(|i| record("new1", "env", i))).await;

    let mut historian = spawn_historian(&nats.url(), dir.path(), &[]);
    assert_exactly_once(
        &wait_for_count(&client, "new1", "env", 100, TIMEOUT).await,
        100,
    );
    // Passed in one step, not twenty thousand look-ups of sequences that are gone.
    let acknowledged = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        wait_all_acknowledged(&js, "historian-embedded"),
    )
    .await
    .expect("acknowledged within 10 s of being stored");
    assert_eq!(acknowledged, 20_100);
    assert_eq!(historian.stop(), Some(0), "{}", historian.log_tail());
}

#[tokio::test(flavor = "multi_thread")]
async fn explicit_acks_survive_a_sigkill_too() {
    let nats = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (client, js) = connect(&nats.url()).await;
    let mut historian = spawn_historian_with_config(
        &nats.url(),
        dir.path(),
        "[historian]\nack_policy = \"explicit\"\nbatch_size = 200\nmax_delay = \"20ms\"\nack_wait = \"3s\"\n",
    );
    publish(&js, (0..5_000).map(|i| record("kill2", "env", i))).await;
    let partial = wait_for_count(&client, "kill2", "env", 1_000, TIMEOUT).await;
    assert!(partial.len() >= 1_000, "{}", historian.log_tail());
    historian.kill();
    historian.start().unwrap();
    let stored = wait_for_count(&client, "kill2", "env", 5_000, TIMEOUT).await;
    assert_exactly_once(&stored, 5_000);
    assert_eq!(
        wait_all_acknowledged(&js, "historian-embedded").await,
        5_000
    );
    assert_eq!(historian.stop(), Some(0), "{}", historian.log_tail());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_durable_of_the_other_policy_is_refused_with_what_to_do() {
    let nats = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (client, js) = connect(&nats.url()).await;
    let mut historian = spawn_historian(&nats.url(), dir.path(), &[]);
    publish(&js, (0..10).map(|i| record("pol1", "env", i))).await;
    assert_eq!(
        wait_for_count(&client, "pol1", "env", 10, TIMEOUT)
            .await
            .len(),
        10
    );
    assert_eq!(historian.stop(), Some(0), "{}", historian.log_tail());

    // The same durable (historian-embedded, created with `all`), now asked for explicit.
    let mut historian = spawn_historian(
        &nats.url(),
        dir.path(),
        &[("DTAAS_HISTORIAN_ACK_POLICY", "explicit")],
    );
    let code = historian.wait(TIMEOUT).unwrap();
    assert!(
        matches!(code, Some(c) if c != 0),
        "{}",
        historian.log_tail()
    );
    let log = historian.log();
    assert!(
        log.contains("created with ack policy all")
            && log.contains("nats consumer rm DTAAS_TEL historian-embedded"),
        "{log}"
    );
}
