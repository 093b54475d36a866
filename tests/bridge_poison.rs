//! Poison messages (issue #16): a message that fails on every try for a reason of its
//! own, not because a store is down, is dead-lettered with its reason after a bounded
//! number of tries (`POISON_TRIES`, 5), and never blocks what comes after it. Through
//! real mosquitto and nats-server with the embedded historian: after each poison the
//! good command or telemetry sent behind it arrives, and the bridge answers
//! `$SRV.PING`.

mod bridge_support;

use std::time::Duration;

use bridge_support::*;
use dtaas_schemas::command::CommandStatus;
use dtaas_schemas::names::{header, KV_COMMANDS, STREAM_DLQ, STREAM_TELEMETRY};
use dtaas_schemas::subject;

/// The headers of the bridge's DLQ entries, once there are at least `n`.
async fn dead_letters(setup: &Setup, n: usize) -> Vec<async_nats::HeaderMap> {
    let filter = subject::dlq("bridge").unwrap();
    let messages = poll_until(
        Duration::from_secs(60),
        || read_all(&setup.js, STREAM_DLQ, &filter),
        |m| m.len() >= n,
    )
    .await;
    assert_eq!(
        messages.len(),
        n,
        "dead letters of the bridge; bridge log:\n{}",
        setup.bridge.log_tail()
    );
    messages
        .iter()
        .map(|m| m.headers.clone().expect("DLQ headers"))
        .collect()
}

fn value<'a>(headers: &'a async_nats::HeaderMap, name: &str) -> &'a str {
    headers.get(name).map(|v| v.as_str()).unwrap_or_default()
}

/// Writes something that is no command status under `id` in the command ledger.
async fn damage_ledger_entry(setup: &Setup, id: &str) {
    let kv = within(
        STEP,
        "the ledger bucket",
        setup.js.get_key_value(KV_COMMANDS),
    )
    .await
    .unwrap();
    within(STEP, "a damaged entry", kv.put(id, "not a status".into()))
        .await
        .unwrap();
}

/// Sets `DTAAS_TEL`'s `max_msg_size`, as an operator may.
async fn limit_telemetry_message_size(setup: &Setup, bytes: i32) {
    let stream = within(STEP, "DTAAS_TEL", setup.js.get_stream(STREAM_TELEMETRY))
        .await
        .unwrap();
    let mut config = within(STEP, "its configuration", stream.get_info())
        .await
        .unwrap()
        .config;
    config.max_message_size = bytes;
    within(
        STEP,
        "a smaller max_msg_size",
        setup.js.update_stream(config),
    )
    .await
    .unwrap();
}

/// A command whose ledger entry cannot be read fails on every delivery. It is
/// dead-lettered at its fifth (with the reason), recorded `failed`, never reaches the
/// device, and the command sent right after it is delivered first.
#[tokio::test(flavor = "multi_thread")]
async fn a_command_that_keeps_failing_is_dead_lettered_and_the_next_is_delivered() {
    let setup = Setup::start(&[]).await;
    let _historian = setup.start_historian();
    let Device { mut commands, .. } = device(setup.broker.port(), "dev").await;
    damage_ledger_entry(&setup, "poison-1").await;
    let poison = subject::command("dev", "heater").unwrap();
    let publish = setup
        .js
        .publish(poison.clone(), r#"{"id":"poison-1","payload":"x"}"#.into());
    within(STEP, "the poison command stored", async {
        publish.await.unwrap().await.unwrap()
    })
    .await;
    let good = send(&setup, "dev", "light", 60_000).await;

    let (topic, _) = within(STEP, "the good command at its device", commands.recv())
        .await
        .unwrap();
    assert_eq!(topic, "dtaas/pt/dev/cmd/light", "the poison is never sent");
    assert_eq!(
        wait_for_status(&setup, &good, CommandStatus::Sent).await,
        Some(CommandStatus::Sent)
    );

    let letters = dead_letters(&setup, 1).await;
    let reason = value(&letters[0], header::DLQ_REASON);
    assert!(
        reason.contains("failed 5 times") && reason.contains("not a command status"),
        "{reason}"
    );
    assert_eq!(value(&letters[0], header::DLQ_SUBJECT), poison);
    let failed = poll_until(
        Duration::from_secs(30),
        || status_event(&setup, "poison-1"),
        |e| {
            e.as_ref()
                .is_some_and(|e| e.status == CommandStatus::Failed)
        },
    )
    .await
    .expect("the poison command has a status again");
    assert_eq!(failed.status, CommandStatus::Failed);
    assert!(
        failed
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("failed 5 times"),
        "{failed:?}"
    );
    let stats = setup.stats().await;
    assert_eq!(stats["commands_failed"], 1, "{stats}");
    assert_eq!(stats["commands_pending"], 0, "{stats}");
    // Nothing more arrives: the poison was not sent after all.
    assert!(
        tokio::time::timeout(Duration::from_secs(2), commands.recv())
            .await
            .is_err(),
        "no further command reaches the device"
    );
    assert_still_serving(&setup, "after-poison-command").await;
}

/// A device's reply for a command whose ledger entry cannot be read: tried five times,
/// then dead-lettered with the reason; the telemetry behind it is stored.
#[tokio::test(flavor = "multi_thread")]
async fn a_reply_the_ledger_cannot_take_is_dead_lettered_and_telemetry_flows() {
    let setup = Setup::start(&[]).await;
    let _historian = setup.start_historian();
    damage_ledger_entry(&setup, "poison-2").await;
    mosquitto_pub(
        setup.broker.port(),
        "dtaas/pt/dev/cmd/heater/ack",
        r#"{"id":"poison-2"}"#,
    );
    assert_still_serving(&setup, "after-poison-reply").await;
    let letters = dead_letters(&setup, 1).await;
    let reason = value(&letters[0], header::DLQ_REASON);
    assert!(
        reason.contains("cannot record the acknowledgement (5 tries)")
            && reason.contains("not a command status"),
        "{reason}"
    );
    assert_eq!(
        value(&letters[0], header::DLQ_TOPIC),
        "dtaas/pt/dev/cmd/heater/ack"
    );
    assert_eq!(setup.stats().await["in_flight"], 0);
}

/// A record JetStream refuses (larger than `DTAAS_TEL`'s `max_msg_size`, which an
/// operator set): tried five times, then dead-lettered with JetStream's answer. It
/// does not go to the backlog, where it would hold up everything behind it.
#[tokio::test(flavor = "multi_thread")]
async fn a_record_jetstream_refuses_is_dead_lettered_and_the_records_behind_it_are_stored() {
    let setup = Setup::start(&[]).await;
    let _historian = setup.start_historian();
    setup.wait_historian().await;
    limit_telemetry_message_size(&setup, 4096).await;

    let big = format!(r#"{{"s":"{}"}}"#, "x".repeat(8000));
    mosquitto_pub(setup.broker.port(), "dtaas/pt/big/tel/blob", &big);
    assert_still_serving(&setup, "big").await;

    let letters = dead_letters(&setup, 1).await;
    let reason = value(&letters[0], header::DLQ_REASON);
    assert!(
        reason.contains("JetStream refused it 5 times") && reason.contains("maximum"),
        "{reason}"
    );
    assert_eq!(
        value(&letters[0], header::DLQ_SUBJECT),
        subject::telemetry("big", "blob").unwrap()
    );
    assert_eq!(
        value(&letters[0], header::DLQ_TOPIC),
        "dtaas/pt/big/tel/blob"
    );
    let stats = setup.stats().await;
    assert_eq!(stats["backlog_messages"], 0, "{stats}");
    assert_eq!(stats["in_flight"], 0, "{stats}");
    assert_eq!(setup.stored("big", "blob", "s").await, Some(Vec::new()));
}

/// The same refused record taken while NATS is down: it waits in the backlog between
/// good readings. Once NATS is back the backlog drains: the refused record is
/// dead-lettered after five tries, every good reading before and after it is stored.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_record_in_the_backlog_does_not_hold_up_the_rest() {
    let mut setup = Setup::start(&[]).await;
    let _historian = setup.start_historian();
    setup.wait_historian().await;
    limit_telemetry_message_size(&setup, 4096).await;
    let backlog_dir = setup.env.data_dir.join("bridge-backlog");
    setup.nats.stop();
    let port = setup.broker.port();
    let readings = |from: i64| -> Vec<String> {
        (from..from + 10)
            .map(|n| format!(r#"{{"n":{n}}}"#))
            .collect()
    };
    let topic = "dtaas/pt/spill/tel/env";
    tokio::task::block_in_place(|| {
        mosquitto_pub_lines(port, &["-q", "1"], topic, &readings(0));
        mosquitto_pub_with(
            port,
            &["-q", "1"],
            topic,
            &format!(r#"{{"n":-1,"s":"{}"}}"#, "x".repeat(8000)),
        );
        mosquitto_pub_lines(port, &["-q", "1"], topic, &readings(10));
    });
    let waiting = poll_until(
        Duration::from_secs(60),
        || async { dtaas_bridge::backlog::entries_in(&backlog_dir).unwrap_or(0) },
        |n| *n == 21,
    )
    .await;
    assert_eq!(waiting, 21, "bridge log:\n{}", setup.bridge.log_tail());
    setup.nats.start_again().expect("nats-server restarts");

    let points = setup
        .wait_stored("spill", "env", "n", 20, Duration::from_secs(60))
        .await;
    assert_eq!(int_values(&points), (0..20).collect::<Vec<_>>());
    let letters = dead_letters(&setup, 1).await;
    let reason = value(&letters[0], header::DLQ_REASON);
    assert!(reason.contains("JetStream refused it 5 times"), "{reason}");
    assert_eq!(
        value(&letters[0], header::DLQ_SUBJECT),
        subject::telemetry("spill", "env").unwrap()
    );
    // From the backlog (an entry keeps no MQTT topic), not from the first publish.
    assert_eq!(value(&letters[0], header::DLQ_TOPIC), "");
    assert_still_serving(&setup, "after-spill").await;
    assert_eq!(setup.stats().await["backlog_messages"], 0);
}
