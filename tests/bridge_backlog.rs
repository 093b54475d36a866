//! The bridge's durable backlog: while JetStream is down the bridge keeps taking QoS 1
//! messages off a broker with mosquitto's default limits (which drops what exceeds
//! 1,000 queued messages) and acknowledges each once it is synced to disk; killed with
//! SIGKILL with a full backlog and started again once NATS is back, it drains it:
//! every message is in `DTAAS_TEL` once and stored once, and the broker dropped none.

mod bridge_support;

use std::time::Duration;

use bridge_support::*;
use dtaas_test_harness::Mosquitto;

#[tokio::test(flavor = "multi_thread")]
async fn a_backlog_left_by_a_killed_bridge_is_drained_once() {
    let broker = Mosquitto::start_with_default_limits().expect("mosquitto");
    let mut setup = Setup::start_with(Broker::Mosquitto(broker), &[], None).await;
    let _historian = setup.start_historian();
    // More than the broker queues (1,000) and has in flight (20) for a client.
    const COUNT: u64 = 2000;
    let backlog_dir = setup.env.data_dir.join("bridge-backlog");
    setup.nats.stop();
    // The broker acknowledges all of them to the device; the bridge takes them all
    // although JetStream is gone.
    publish_sequence(setup.broker.port(), "backlog", COUNT, |_| {}).await;
    let waiting = poll_until(
        Duration::from_secs(120),
        || async { dtaas_bridge::backlog::entries_in(&backlog_dir).unwrap_or(0) },
        |n| *n == COUNT,
    )
    .await;
    assert_eq!(waiting, COUNT, "bridge log:\n{}", setup.bridge.log_tail());
    // Let the last MQTT acknowledgements reach the broker before the crash.
    tokio::time::sleep(Duration::from_secs(2)).await;
    setup.bridge.kill();
    setup.nats.start_again().expect("nats-server restarts");
    setup.bridge.start().expect("bridge restarts");
    let filter = dtaas_schemas::subject::telemetry("backlog", "seq").unwrap();
    let messages = poll_until(
        Duration::from_secs(120),
        || read_all(&setup.js, "DTAAS_TEL", &filter),
        |m| m.len() as u64 >= COUNT,
    )
    .await;
    assert_eq!(
        messages.len() as u64,
        COUNT,
        "every message once in DTAAS_TEL; bridge log:\n{}",
        setup.bridge.log_tail()
    );
    assert_sequence_stored(&setup, &setup.js, "backlog", COUNT).await;
    let stats = setup.stats().await;
    assert_eq!(stats["backlog_messages"], 0, "{stats}");
    if let Broker::Mosquitto(mosquitto) = &setup.broker {
        let log = mosquitto.process().log();
        assert!(!log.contains("being dropped"), "the broker dropped:\n{log}");
    }
    assert!(
        stats["backlog_drained"].as_u64().unwrap() >= COUNT,
        "{stats}"
    );
}
