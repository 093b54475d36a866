//! Property-based fuzzing of everything the bridge parses from the outside: MQTT
//! payloads in every format, topics, device acknowledgements, and what it builds from
//! them (NATS subjects and messages).
//!
//! Inputs are random bytes and text, and valid payloads with random bytes changed,
//! cut or inserted. Each property runs `PROPTEST_CASES` cases (proptest's default,
//! 256, in CI); for a long run: `PROPTEST_CASES=1000000 cargo test -p dtaas-bridge
//! --test fuzz_payloads --release`.

use dtaas_bridge::config::BridgeConfig;
use dtaas_bridge::outgoing;
use dtaas_bridge::payload::{self, line_protocol, stamp::Stamper};
use dtaas_bridge::topic_map::{Route, TopicMaps};
use dtaas_schemas::subject::MAX_TOKEN_BYTES;
use dtaas_schemas::telemetry_batch::{decode_records_into, MAX_BYTES_PER_MESSAGE};
use dtaas_schemas::Encoding;
use dtaas_test_harness::mutate;
use proptest::prelude::*;

/// Valid payloads of every format, the seeds the mutations start from.
const SEEDS: &[&str] = &[
    r#"{"temp":21.5,"heater":{"on":true,"power":40},"ts":1700000000123}"#,
    r#"[{"v":1,"ts":1700000000},{"v":2},{"pos":{"x":[1,2]},"s":"on"},3,true]"#,
    "42",
    "\"on\"",
    "weather,room=lab temp=19.5,count=3i,ok=t,msg=\"a b\" 1700000000000000000\nhum rh=55.5",
    "m,t=a\\ b f=1u\n# comment\n\nm g=-2.5e3",
    r#"{"ts":"2023-11-14T22:13:20Z","a":null,"b":[]}"#,
];

/// A seed with random edits (`dtaas_test_harness::mutate`).
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    (prop::sample::select(SEEDS), mutate::edits())
        .prop_map(|(seed, edits)| mutate::apply(seed.as_bytes(), &edits))
}

/// A payload: random bytes, random text, or a mutated seed.
fn any_payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        any::<String>().prop_map(String::into_bytes),
        mutated(),
        mutated(),
    ]
}

/// A topic: mostly the default map's shape with random levels, sometimes anything.
fn any_topic() -> impl Strategy<Value = String> {
    prop_oneof![
        ("[^/]{0,20}", "[^/]{0,20}").prop_map(|(pt, m)| format!("dtaas/pt/{pt}/tel/{m}")),
        ("[a-z]{1,8}", "[a-z/+#]{1,8}").prop_map(|(pt, c)| format!("dtaas/pt/{pt}/cmd/{c}/ack")),
        "(dtaas|pt|tel|cmd|ack|[^/]{0,4})(/(dtaas|pt|tel|cmd|ack|[^/]{0,4})){0,7}",
        ".{0,300}",
    ]
}

proptest! {
    /// Whatever arrives, parsing never panics, and what it accepts is storable: valid
    /// ids, a subject NATS takes, one arrival stamp each for readings without a time.
    #[test]
    fn any_payload_on_any_topic_is_parsed_or_refused(topic in any_topic(), body in any_payload()) {
        let maps = TopicMaps::new(&BridgeConfig::default());
        match maps.route(&topic) {
            Route::Telemetry(target) => {
                let mut stamps = Stamper::with_clock(|| 1_000);
                if let Ok(parsed) = payload::parse(&body, &target, &mut stamps) {
                    prop_assert!(!parsed.is_empty());
                    for p in &parsed {
                        prop_assert!(p.record.validate().is_ok());
                        let subject = p.record.subject().unwrap();
                        prop_assert!(subject.len() < 2 * MAX_TOKEN_BYTES + 16);
                    }
                    let messages = outgoing::messages(&parsed).unwrap();
                    let total: usize = messages.iter().map(|m| m.records).sum();
                    prop_assert_eq!(total, parsed.len());
                    let mut decoded = Vec::new();
                    for m in &messages {
                        decode_records_into(Encoding::MsgPack, &m.body, &mut decoded).unwrap();
                    }
                    let records: Vec<_> = parsed.iter().map(|p| p.record.clone()).collect();
                    prop_assert_eq!(decoded, records);
                }
            }
            Route::CommandAck { .. } => {
                if let Ok(id) = dtaas_bridge::uplink::command_id(&body) {
                    prop_assert!(dtaas_schemas::command::validate_id(&id).is_ok());
                }
            }
            Route::Unmapped(reason) => prop_assert!(reason.to_string().len() < 1024),
        }
    }

    /// Line protocol written from random values parses back to them; stamps of lines
    /// without a time are unique and increasing.
    #[test]
    fn line_protocol_round_trips(values in prop::collection::vec((any::<i64>(), any::<bool>()), 1..200)) {
        let text: Vec<String> = values
            .iter()
            .map(|(v, timed)| match timed {
                true => format!("m,t=x v={v}i {v}"),
                false => format!("m,t=x v={v}i"),
            })
            .collect();
        let lines = line_protocol::parse(&text.join("\n")).unwrap();
        for (line, (v, timed)) in lines.iter().zip(&values) {
            prop_assert_eq!(&line.fields["v"], &dtaas_schemas::FieldValue::I64(*v));
            prop_assert_eq!(line.timestamp, timed.then_some(*v));
        }
    }

    /// Line protocol never panics on mutated input, and errors stay short.
    #[test]
    fn line_protocol_refuses_with_a_short_reason(body in mutated()) {
        if let Ok(text) = std::str::from_utf8(&body) {
            if let Err(error) = line_protocol::parse(text) {
                let reason = error.to_string();
                prop_assert!(reason.len() < 1024, "{}", reason.len());
            }
        }
    }

    /// Readings without a time in one array never share a stamp; the messages built
    /// from them stay within the limits NATS takes.
    #[test]
    fn arrays_get_unique_stamps_and_bounded_messages(n in 1usize..3000, pad in 0usize..400) {
        let readings: Vec<String> = (0..n).map(|i| format!(r#"{{"n":{i},"p":"{}"}}"#, "x".repeat(pad))).collect();
        let body = format!("[{}]", readings.join(","));
        let maps = TopicMaps::new(&BridgeConfig::default());
        let Route::Telemetry(target) = maps.route("dtaas/pt/p/tel/m") else { unreachable!() };
        let parsed = payload::parse(body.as_bytes(), &target, &mut Stamper::with_clock(|| 5)).unwrap();
        let stamps: Vec<i64> = parsed.iter().map(|p| p.record.ts).collect();
        prop_assert!(stamps.windows(2).all(|w| w[0] < w[1]));
        for m in outgoing::messages(&parsed).unwrap() {
            prop_assert!(m.body.len() <= MAX_BYTES_PER_MESSAGE + 512 + pad);
        }
    }
}
