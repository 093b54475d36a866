//! Bridge uplink against real mosquitto and nats-server: payload formats from an
//! independent client, the DLQ, and a NATS outage while a QoS 1 publisher sends.

mod bridge_support;

use std::time::Duration;

use bridge_support::*;
use dtaas_schemas::codec::Encoding;
use dtaas_schemas::names::{header, STREAM_DLQ, STREAM_TELEMETRY};
use dtaas_schemas::subject;
use dtaas_schemas::telemetry::{FieldValue, TelemetryRecord};
use dtaas_schemas::telemetry_batch::decode_records_into;

/// The records in `messages`, one or an array of them in each.
fn records(messages: &[async_nats::jetstream::Message]) -> Vec<TelemetryRecord> {
    let mut records = Vec::new();
    for m in messages {
        let ct = m.headers.as_ref().and_then(|h| h.get(header::CONTENT_TYPE));
        assert_eq!(ct.map(|v| v.as_str()), Some("application/msgpack"));
        decode_records_into(Encoding::MsgPack, &m.payload, &mut records).unwrap();
    }
    records
}

#[tokio::test(flavor = "multi_thread")]
async fn mosquitto_pub_formats_become_records() {
    let setup = Setup::start(&[]).await;
    let port = setup.broker.port();
    let before = dtaas_schemas::time::now_ns();
    mosquitto_pub(
        port,
        "dtaas/pt/inc1/tel/env",
        r#"{"temp":21.5,"heater":{"on":true,"power":40},"ts":1700000000123}"#,
    );
    mosquitto_pub(port, "dtaas/pt/inc1/tel/level", "42");
    mosquitto_pub(port, "dtaas/pt/inc2/tel/lp", "weather,room=lab temp=19.5,count=3i 1700000000000000000\nhumidity rh=55.5 1700000000000000001");
    let filter = subject::telemetry_all();
    let messages = poll_until(
        Duration::from_secs(60),
        || read_all(&setup.js, STREAM_TELEMETRY, &filter),
        |m| m.len() >= 4,
    )
    .await;
    let records = records(&messages);
    assert_eq!(records.len(), 4, "{records:?}");
    let env = records.iter().find(|r| r.measurement == "env").unwrap();
    assert_eq!(env.pt, "inc1");
    assert_eq!(env.ts, 1_700_000_000_123_000_000);
    assert_eq!(env.fields["temp"], FieldValue::F64(21.5));
    assert_eq!(env.fields["heater_on"], FieldValue::Bool(true));
    assert_eq!(env.fields["heater_power"], FieldValue::I64(40));
    let level = records.iter().find(|r| r.measurement == "level").unwrap();
    assert_eq!(level.fields["value"], FieldValue::I64(42));
    assert!(
        level.ts >= before,
        "receive time is used when the payload has none"
    );
    let weather = records.iter().find(|r| r.measurement == "weather").unwrap();
    assert_eq!(weather.pt, "inc2");
    assert_eq!(weather.tags["room"], "lab");
    assert_eq!(weather.fields["count"], FieldValue::I64(3));
    assert_eq!(weather.ts, 1_700_000_000_000_000_000);
    let humidity = records
        .iter()
        .find(|r| r.measurement == "humidity")
        .unwrap();
    assert_eq!(humidity.fields["rh"], FieldValue::F64(55.5));
    assert_eq!(humidity.ts, 1_700_000_000_000_000_001);
    for message in &messages {
        let record: TelemetryRecord = dtaas_schemas::codec::decode(None, &message.payload).unwrap();
        assert_eq!(message.subject.as_str(), record.subject().unwrap());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_of_readings_travels_as_one_message() {
    let setup = Setup::start(&[]).await;
    let port = setup.broker.port();
    let lines: Vec<String> = (0..100)
        .map(|i| format!("batch,room=lab v={i}i {}", 1_700_000_000_000_000_000i64 + i))
        .collect();
    mosquitto_pub(port, "dtaas/pt/inc3/tel/lp", &lines.join("\n"));
    let readings: Vec<String> = (0..20)
        .map(|i| format!(r#"{{"v":{i},"ts":{}}}"#, 1_700_000_000_000i64 + i))
        .collect();
    mosquitto_pub(
        port,
        "dtaas/pt/inc3/tel/json",
        &format!("[{}]", readings.join(",")),
    );
    for (measurement, n) in [("batch", 100), ("json", 20)] {
        let filter = subject::telemetry("inc3", measurement).unwrap();
        let messages = poll_until(
            Duration::from_secs(60),
            || read_all(&setup.js, STREAM_TELEMETRY, &filter),
            |m| !m.is_empty(),
        )
        .await;
        assert_eq!(messages.len(), 1, "one message for the {n} readings");
        let records = records(&messages);
        let values: Vec<FieldValue> = records.iter().map(|r| r.fields["v"].clone()).collect();
        assert_eq!(values, (0..n).map(FieldValue::I64).collect::<Vec<_>>());
        assert!(records.iter().all(|r| r.pt == "inc3"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_payloads_go_to_the_dlq_and_the_bridge_goes_on() {
    let setup = Setup::start(&[]).await;
    let port = setup.broker.port();
    mosquitto_pub(port, "dtaas/pt/inc1/tel/env", r#"{"temp": 2"#);
    mosquitto_pub(port, "dtaas/pt/inc1/tel/env", "{}");
    mosquitto_pub(port, "dtaas/pt/inc1/tel/env", "not line protocol");
    mosquitto_pub(port, "dtaas/pt/inc1/tel/env", r#"{"temp":1}"#);
    let dlq = poll_until(
        Duration::from_secs(60),
        || read_all(&setup.js, STREAM_DLQ, "dtaas.v1.dlq.bridge"),
        |m| m.len() >= 3,
    )
    .await;
    assert_eq!(dlq.len(), 3);
    let reasons: Vec<String> = dlq
        .iter()
        .map(|m| {
            let h = m.headers.as_ref().unwrap();
            assert_eq!(
                h.get(header::DLQ_TOPIC).unwrap().as_str(),
                "dtaas/pt/inc1/tel/env"
            );
            assert_eq!(h.get(header::DLQ_SOURCE).unwrap().as_str(), "bridge");
            h.get(header::DLQ_REASON).unwrap().as_str().to_owned()
        })
        .collect();
    assert!(reasons[0].contains("not valid JSON"), "{reasons:?}");
    assert!(reasons[1].contains("no fields"), "{reasons:?}");
    assert!(reasons[2].contains("line protocol"), "{reasons:?}");
    assert_eq!(dlq[0].payload.as_ref(), br#"{"temp": 2"#);
    let good = poll_until(
        Duration::from_secs(60),
        || read_all(&setup.js, STREAM_TELEMETRY, "dtaas.v1.tel.inc1.env"),
        |m| !m.is_empty(),
    )
    .await;
    assert_eq!(good.len(), 1);
    let stats = setup.stats().await;
    assert_eq!(stats["dlq"], 3);
    assert_eq!(stats["in_flight"], 0);
    // Graceful shutdown on SIGTERM: drains, disconnects and exits 0.
    let mut setup = setup;
    let code = tokio::task::block_in_place(|| setup.bridge.stop());
    assert_eq!(code, Some(0), "{}", setup.bridge.log_tail());
    assert!(setup.bridge.log().contains("Bridge stopped."));
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_outage_of_five_seconds_loses_nothing() {
    let mut setup = Setup::start(&[]).await;
    let _historian = setup.start_historian();
    let port = setup.broker.port();
    const COUNT: u64 = 3000;
    let mut nats = Some(&mut setup.nats);
    let mut stopped_at = None;
    publish_sequence(port, "outage", COUNT, |i| {
        if i == 500 {
            nats.as_mut().unwrap().stop();
            stopped_at = Some(std::time::Instant::now());
        }
    })
    .await;
    // Keep NATS down for 5 s in total, then bring it back on the same port and store.
    let stopped_at = stopped_at.unwrap();
    let left = Duration::from_secs(5).saturating_sub(stopped_at.elapsed());
    tokio::time::sleep(left).await;
    setup.nats.start_again().expect("nats-server restarts");
    let client = within(STEP, "reconnect", async_nats::connect(setup.nats.url()))
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    let seqs = poll_until(
        Duration::from_secs(120),
        || sequences(&js, "outage"),
        |s| s.len() as u64 == COUNT,
    )
    .await;
    assert_eq!(seqs.len() as u64, COUNT, "{}", setup.bridge.log_tail());
    assert_eq!(seqs.first(), Some(&0));
    assert_eq!(seqs.last(), Some(&(COUNT as i64 - 1)));
    // The messages carry no timestamps: each record must still be a point of its own.
    assert_sequence_stored(&setup, &js, "outage", COUNT).await;
}
