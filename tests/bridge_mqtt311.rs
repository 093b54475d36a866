//! The bridge on MQTT 3.1.1: `auto` falls back to 3.1.1 against nats-server's MQTT
//! listener (3.1.1 only) for telemetry and commands; `3.1.1` forced against
//! mosquitto; QoS 2 telemetry arrives exactly once; a broker that is down at start
//! does not make `auto` fall back; a SIGKILL on 3.1.1 loses nothing.

mod bridge_support;

use std::collections::BTreeMap;
use std::time::Duration;

use bridge_support::*;
use dtaas_schemas::command::CommandStatus;
use dtaas_schemas::names::STREAM_TELEMETRY;
use dtaas_schemas::subject;
use dtaas_schemas::telemetry::{FieldValue, TelemetryRecord};
use rumqttc::QoS;

/// Every telemetry record of `pt`/`measurement` now in `DTAAS_TEL`.
async fn records(setup: &Setup, pt: &str, measurement: &str) -> Vec<TelemetryRecord> {
    let filter = subject::telemetry(pt, measurement).unwrap();
    read_all(&setup.js, STREAM_TELEMETRY, &filter)
        .await
        .iter()
        .map(|m| dtaas_schemas::codec::decode(None, &m.payload).unwrap())
        .collect()
}

/// Waits for `count` records of `pt`/`measurement`, then a moment longer for
/// duplicates, and returns them.
async fn wait_records(
    setup: &Setup,
    pt: &str,
    measurement: &str,
    count: usize,
) -> Vec<TelemetryRecord> {
    poll_until(
        Duration::from_secs(60),
        || records(setup, pt, measurement),
        |r| r.len() >= count,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    records(setup, pt, measurement).await
}

/// `seq` → `v` of numbered records; panics on a record without them.
fn by_seq(records: &[TelemetryRecord]) -> BTreeMap<i64, f64> {
    records
        .iter()
        .map(|r| match (&r.fields["seq"], &r.fields["v"]) {
            (FieldValue::I64(seq), FieldValue::F64(v)) => (*seq, *v),
            other => panic!("unexpected fields {other:?}"),
        })
        .collect()
}

/// Lines `{"seq":i,"v":i.5}` for i in 0..count.
fn numbered(count: usize) -> Vec<String> {
    (0..count)
        .map(|i| format!("{{\"seq\":{i},\"v\":{i}.5}}"))
        .collect()
}

/// Asserts `records` are exactly the `numbered(count)` messages, once each.
fn assert_numbered(records: &[TelemetryRecord], count: usize) {
    assert_eq!(
        records.len(),
        count,
        "one record per message, no duplicates"
    );
    let seqs = by_seq(records);
    assert_eq!(seqs.len(), count);
    for (i, (seq, v)) in seqs.into_iter().enumerate() {
        assert_eq!(seq, i as i64);
        assert_eq!(v, i as f64 + 0.5);
    }
}

/// A command to `pt` reaches a 3.1.1 device, is `sent`, and its ack is recorded.
async fn command_round_trip(setup: &Setup, pt: &str) {
    let mut dev = device(setup.broker.port(), pt).await;
    let id = send(setup, pt, "heater", 60_000).await;
    let (topic, payload) = within(STEP, "command at the device", dev.commands.recv())
        .await
        .unwrap();
    assert_eq!(topic, format!("dtaas/pt/{pt}/cmd/heater"));
    assert_eq!(payload.as_ref(), br#"{"on":true}"#);
    let sent = wait_for_status(setup, &id, CommandStatus::Sent).await;
    assert_eq!(
        sent,
        Some(CommandStatus::Sent),
        "{}",
        setup.bridge.log_tail()
    );
    let ack = serde_json::json!({ "id": id }).to_string();
    dev.client
        .publish(
            format!("dtaas/pt/{pt}/cmd/heater/ack"),
            QoS::AtLeastOnce,
            false,
            ack,
        )
        .await
        .unwrap();
    let acked = wait_for_status(setup, &id, CommandStatus::Acknowledged).await;
    assert_eq!(acked, Some(CommandStatus::Acknowledged));
    assert!(dev.commands.try_recv().is_err(), "the command arrived once");
}

#[tokio::test(flavor = "multi_thread")]
async fn auto_falls_back_to_311_on_nats_mqtt_for_telemetry_and_commands() {
    let setup = Setup::start_with(Broker::nats_mqtt(), &[], None).await;
    let stats = setup.stats().await;
    assert_eq!(stats["mqtt_protocol"], "3.1.1", "{stats}");
    let log = setup.bridge.log();
    assert!(
        log.contains("The MQTT broker refused MQTT 5; trying MQTT 3.1.1."),
        "{log}"
    );

    let port = setup.broker.port();
    // An independent 3.1.1 client, then 200 numbered QoS 1 messages from rumqttc (3.1.1).
    mosquitto_pub_with(
        port,
        &["-V", "mqttv311", "-q", "1"],
        "dtaas/pt/nm1/tel/env",
        r#"{"temp":21.5,"ts":1700000000123}"#,
    );
    publish_sequence(port, "nm311", 200, |_| {}).await;
    let env = wait_records(&setup, "nm1", "env", 1).await;
    assert_eq!(env.len(), 1);
    assert_eq!(env[0].ts, 1_700_000_000_123_000_000);
    assert_eq!(env[0].fields["temp"], FieldValue::F64(21.5));
    let seqs = wait_records(&setup, "nm311", "seq", 200).await;
    assert_eq!(seqs.len(), 200, "{}", setup.bridge.log_tail());
    let seqs = by_seq(&seqs);
    assert_eq!(seqs.len(), 200);
    for (seq, v) in seqs {
        assert_eq!(v, (seq % 100) as f64 + 0.5);
    }

    command_round_trip(&setup, "nmdev").await;
    let stats = setup.stats().await;
    assert_eq!(stats["mqtt_in"], 202, "{stats}"); // 201 telemetry + 1 device ack
    assert_eq!(stats["records_out"], 201, "{stats}");
    assert_eq!(stats["dlq"], 0, "{stats}");
    assert_eq!(stats["in_flight"], 0, "{stats}");
    assert_eq!(stats["commands_sent"], 1, "{stats}");
}

#[tokio::test(flavor = "multi_thread")]
async fn qos2_telemetry_arrives_exactly_once_over_mqtt5() {
    let config = "[bridge]\nqos = 2\n";
    let extra = [("DTAAS_BRIDGE_CLIENT_ID", "bridge-q2-v5")];
    let setup = Setup::start_with(Broker::mosquitto(), &extra, Some(config)).await;
    assert_eq!(setup.stats().await["mqtt_protocol"], "5");
    assert!(setup.broker.log().contains("as bridge-q2-v5 (p5"));
    mosquitto_pub_lines(
        setup.broker.port(),
        &["-q", "2"],
        "dtaas/pt/q2v5/tel/seq",
        &numbered(100),
    );
    let records = wait_records(&setup, "q2v5", "seq", 100).await;
    assert_numbered(&records, 100);
    let stats = setup.stats().await;
    assert_eq!(
        (stats["mqtt_in"].as_u64(), stats["in_flight"].as_u64()),
        (Some(100), Some(0))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn forced_311_on_mosquitto_qos2_telemetry_and_commands() {
    let config = "[bridge]\nqos = 2\ncommand_qos = 2\n";
    let extra = [
        ("DTAAS_BRIDGE_CLIENT_ID", "bridge-q2-v311"),
        ("DTAAS_MQTT_PROTOCOL", "3.1.1"),
    ];
    let setup = Setup::start_with(Broker::mosquitto(), &extra, Some(config)).await;
    assert_eq!(setup.stats().await["mqtt_protocol"], "3.1.1");
    let broker_log = setup.broker.log();
    assert!(broker_log.contains("as bridge-q2-v311 (p2"), "{broker_log}");
    assert!(
        !broker_log.contains("as bridge-q2-v311 (p5"),
        "no MQTT 5 attempt"
    );
    mosquitto_pub_lines(
        setup.broker.port(),
        &["-V", "mqttv311", "-q", "2"],
        "dtaas/pt/q2v311/tel/seq",
        &numbered(100),
    );
    let records = wait_records(&setup, "q2v311", "seq", 100).await;
    assert_numbered(&records, 100);
    command_round_trip(&setup, "q2dev").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_down_at_start_does_not_make_auto_fall_back() {
    let mut broker = Broker::mosquitto();
    broker.mosquitto_mut().stop();
    let extra = [("DTAAS_BRIDGE_CLIENT_ID", "bridge-late-broker")];
    let mut setup = Setup::spawn(broker, &extra, None).await;
    let failed = poll_until(
        Duration::from_secs(30),
        || async { setup.bridge.log().matches("MQTT connection failed").count() },
        |n| *n >= 3,
    )
    .await;
    assert!(failed >= 3, "{}", setup.bridge.log_tail());
    setup
        .broker
        .mosquitto_mut()
        .start_again()
        .expect("mosquitto starts");
    setup.wait_ready().await;
    assert_eq!(setup.stats().await["mqtt_protocol"], "5");
    let log = setup.bridge.log();
    assert!(!log.contains("3.1.1"), "{log}");
    assert!(setup.broker.log().contains("as bridge-late-broker (p5"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_on_311_loses_nothing() {
    let extra = [("DTAAS_MQTT_PROTOCOL", "3.1.1")];
    let mut setup = Setup::start_with(Broker::mosquitto(), &extra, None).await;
    let port = setup.broker.port();
    const COUNT: u64 = 1000;
    let bridge = &mut setup.bridge;
    publish_sequence(port, "crash311", COUNT, |i| {
        if i == 300 {
            bridge.kill();
        }
        if i == 600 {
            bridge.start().expect("bridge restarts");
        }
    })
    .await;
    let seqs = poll_until(
        Duration::from_secs(120),
        || sequences(&setup.js, "crash311"),
        |s| s.len() as u64 == COUNT,
    )
    .await;
    let missing: Vec<i64> = (0..COUNT as i64).filter(|i| !seqs.contains(i)).collect();
    assert!(
        missing.is_empty(),
        "{} sequence numbers missing, first {:?}; bridge log:\n{}",
        missing.len(),
        &missing[..missing.len().min(20)],
        setup.bridge.log_tail()
    );
    assert_eq!(setup.stats().await["mqtt_protocol"], "3.1.1");
}
