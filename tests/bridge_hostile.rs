//! Hostile and careless input against the bridge, through real mosquitto and
//! nats-server with the embedded historian: each input ends refused or dead-lettered
//! with its reason, the good traffic sent right after it is stored in full (counted
//! through `ts.query`), and the bridge still answers `$SRV.PING`.

mod bridge_support;

use std::time::Duration;

use bridge_support::*;
use dtaas_schemas::codec::Encoding;
use dtaas_schemas::command::CommandStatus;
use dtaas_schemas::names::{header, STREAM_DLQ};
use dtaas_schemas::subject;
use dtaas_schemas::telemetry::{FieldValue, TelemetryRecord};
use rumqttc::QoS;

/// 5,001 line-protocol lines alternating between two measurements make 5,001 NATS
/// messages from one MQTT payload: more than the JetStream client's 5,000 in-flight
/// acknowledgements, which once stopped the uplink for good.
#[tokio::test(flavor = "multi_thread")]
async fn a_payload_of_more_messages_than_in_flight_acks_is_stored_whole() {
    let setup = Setup::start(&[]).await;
    let _historian = setup.start_historian();
    const LINES: i64 = 5_001;
    let lines: Vec<String> = (0..LINES)
        .map(|i| format!("{} n={i}i", ["even", "odd"][i as usize % 2]))
        .collect();
    mosquitto_pub(
        setup.broker.port(),
        "dtaas/pt/many/tel/lp",
        &lines.join("\n"),
    );
    let limit = Duration::from_secs(180);
    let even = setup.wait_stored("many", "even", "n", 2_501, limit).await;
    let odd = setup.wait_stored("many", "odd", "n", 2_500, limit).await;
    assert_eq!(int_values(&even), (0..LINES).step_by(2).collect::<Vec<_>>());
    assert_eq!(int_values(&odd), (1..LINES).step_by(2).collect::<Vec<_>>());
    assert_still_serving(&setup, "many").await;
}

/// The DLQ entries of `source` once there are at least `n`, with their reasons.
async fn dlq_reasons(setup: &Setup, source: &str, n: usize) -> Vec<String> {
    let filter = subject::dlq(source).unwrap();
    let messages = poll_until(
        Duration::from_secs(60),
        || read_all(&setup.js, STREAM_DLQ, &filter),
        |m| m.len() >= n,
    )
    .await;
    messages
        .iter()
        .map(|m| {
            let headers = m.headers.as_ref().expect("DLQ headers");
            headers.get(header::DLQ_REASON).unwrap().as_str().to_owned()
        })
        .collect()
}

/// A request to `dtaas.v1.alice.<service>.<verb>`: the reply's JSON, answered in time.
async fn ask_any(
    setup: &Setup,
    service: &str,
    verb: &str,
    body: &serde_json::Value,
) -> serde_json::Value {
    let subject = subject::request("alice", service, verb).unwrap();
    let request = setup
        .client
        .request(subject, serde_json::to_vec(body).unwrap().into());
    let reply = within(STEP, "a reply, not a timeout", request)
        .await
        .unwrap();
    serde_json::from_slice(&reply.payload).unwrap()
}

/// Like `ask_any`, for replies that must be short (errors quoting huge input).
async fn ask(
    setup: &Setup,
    service: &str,
    verb: &str,
    body: &serde_json::Value,
) -> serde_json::Value {
    let reply = ask_any(setup, service, verb, body).await;
    let size = reply.to_string().len();
    assert!(size < 4096, "a short reply: {size} bytes");
    reply
}

/// Asserts `reply` is a `bad_request` whose message contains every one of `needles`.
fn assert_bad_request(reply: &serde_json::Value, needles: &[&str]) {
    assert_eq!(reply["error"]["code"], "bad_request", "{reply}");
    let message = reply["error"]["message"].as_str().unwrap();
    for needle in needles {
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    }
}

/// Row 3: a topic with a 5,000-character PT id goes to the DLQ; it never becomes a
/// subject (nats-server would drop the bridge's connection for its control line).
#[tokio::test(flavor = "multi_thread")]
async fn a_huge_topic_level_is_dead_lettered() {
    let setup = Setup::start(&[]).await;
    let _historian = setup.start_historian();
    let topic = format!("dtaas/pt/{}/tel/x", "p".repeat(5_000));
    mosquitto_pub(setup.broker.port(), &topic, r#"{"v":1}"#);
    let reasons = dlq_reasons(&setup, "bridge", 1).await;
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(
        reasons[0].contains("PT id") && reasons[0].contains("longer than 128 bytes"),
        "{reasons:?}"
    );
    assert!(
        reasons[0].len() < 300,
        "the reason quotes a prefix: {}",
        reasons[0]
    );
    assert_still_serving(&setup, "after-topic").await;
    assert!(!setup.bridge.log().contains("maximum control line"));
}

/// Rows 4, 5 and 8: PT ids and command names with control characters, `/`, or
/// thousands of characters are refused by `cmd.send` at once (never published to
/// MQTT, where a control character made mosquitto drop the bridge, or to NATS).
#[tokio::test(flavor = "multi_thread")]
async fn bad_identifiers_in_commands_are_refused() {
    let setup = Setup::start(&[]).await;
    let _historian = setup.start_historian();
    let cases: Vec<(String, String, &str)> = vec![
        ("a\u{1}b".into(), "c".into(), "control character"),
        ("a\u{0}b".into(), "c".into(), "control character"),
        ("a/b".into(), "c".into(), "'/'"),
        ("victim".into(), "stop/ack".into(), "'/'"),
        ("victim".into(), "c+".into(), "'+'"),
        ("victim".into(), "#".into(), "'#'"),
        ("p".repeat(5_000), "c".into(), "longer than 128 bytes"),
        ("p".repeat(70_000), "c".into(), "longer than 128 bytes"),
    ];
    for (pt, command, why) in cases {
        let field = if command == "c" {
            "field `pt`"
        } else {
            "field `command`"
        };
        let body = serde_json::json!({"pt": pt, "command": command, "ttl_ms": 30_000});
        let reply = ask(&setup, "cmd", "send", &body).await;
        assert_bad_request(&reply, &[field, why]);
    }
    // A good command right after reaches its device at once.
    let Device { mut commands, .. } = device(setup.broker.port(), "good").await;
    send(&setup, "good", "heater", 30_000).await;
    let (topic, _) = within(STEP, "the good command at its device", commands.recv())
        .await
        .unwrap();
    assert_eq!(topic, "dtaas/pt/good/cmd/heater");
    assert_eq!(setup.stats().await["mqtt_connected"], true);
    assert_still_serving(&setup, "after-commands").await;
}

/// Row 5: an acknowledgement only counts on the command's own ack topic; the victim's
/// id sent on another PT's ack topic is dead-lettered and changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn an_acknowledgement_on_another_topic_is_a_forgery() {
    let setup = Setup::start(&[]).await;
    let _historian = setup.start_historian();
    let Device {
        client: victim,
        mut commands,
        ..
    } = device(setup.broker.port(), "victim").await;
    let id = send(&setup, "victim", "stop", 60_000).await;
    within(STEP, "the command at the victim", commands.recv())
        .await
        .unwrap();
    assert_eq!(
        wait_for_status(&setup, &id, CommandStatus::Sent).await,
        Some(CommandStatus::Sent)
    );
    let forged = serde_json::json!({ "id": id }).to_string();
    mosquitto_pub(
        setup.broker.port(),
        "dtaas/pt/attacker/cmd/stop/ack",
        &forged,
    );
    mosquitto_pub(
        setup.broker.port(),
        "dtaas/pt/victim/cmd/other/ack",
        &forged,
    );
    let reasons = dlq_reasons(&setup, "bridge", 2).await;
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons.iter().all(|r| r.contains("own topic")),
        "{reasons:?}"
    );
    assert_eq!(status(&setup, &id).await, Some(CommandStatus::Sent));
    // The device's own acknowledgement still counts.
    victim
        .publish(
            "dtaas/pt/victim/cmd/stop/ack",
            QoS::AtLeastOnce,
            false,
            forged,
        )
        .await
        .unwrap();
    assert_eq!(
        wait_for_status(&setup, &id, CommandStatus::Acknowledged).await,
        Some(CommandStatus::Acknowledged)
    );
    assert_still_serving(&setup, "after-forgery").await;
}

/// Row 7: a megabyte of input in a request field gets a short `bad_request` that
/// quotes only a prefix (a reply repeating it could not be sent), from the bridge and
/// from the historian.
#[tokio::test(flavor = "multi_thread")]
async fn huge_request_fields_get_short_errors() {
    let setup = Setup::start(&[]).await;
    let _historian = setup.start_historian();
    let huge = "x".repeat(1_000_000);
    let reply = ask(&setup, "cmd", "status", &serde_json::json!({ "id": huge })).await;
    assert_bad_request(&reply, &["field `id`", "1000000 bytes"]);
    setup.wait_historian().await;
    for field in ["from", "to", "every"] {
        let mut body = serde_json::json!({"pt": "inc1", "measurement": "env", "agg": "mean"});
        body[field] = huge.clone().into();
        let reply = ask(&setup, "ts", "query", &body).await;
        assert_bad_request(&reply, &[&format!("field `{field}`")]);
    }
    let body = serde_json::json!({"pt": "inc1", "measurement": "env", "agg": huge});
    assert_bad_request(&ask(&setup, "ts", "query", &body).await, &["field `agg`"]);
    assert_still_serving(&setup, "after-huge-fields").await;
    let ping = setup.client.request("$SRV.PING.dtaas-historian", "".into());
    within(STEP, "historian ping", ping).await.unwrap();
}

/// Row 9: a record whose body names another PT than its subject is dead-lettered by
/// the historian, not stored under the other PT.
#[tokio::test(flavor = "multi_thread")]
async fn a_record_naming_another_pt_than_its_subject_is_refused() {
    let setup = Setup::start(&[]).await;
    let _historian = setup.start_historian();
    let forged = serde_json::json!({"pt": "other", "measurement": "y", "ts": 1,
        "fields": {"v": 1}});
    let subject = subject::telemetry("x", "y").unwrap();
    let publish = setup
        .js
        .publish(subject, serde_json::to_vec(&forged).unwrap().into());
    within(STEP, "publish", async {
        publish.await.unwrap().await.unwrap()
    })
    .await;
    let reasons = dlq_reasons(&setup, "historian", 1).await;
    assert!(
        reasons[0].contains("\"other\"") && reasons[0].contains("subject"),
        "{reasons:?}"
    );
    assert_still_serving(&setup, "after-forged-record").await;
    assert_eq!(setup.stored("other", "y", "v").await, Some(Vec::new()));
    let ping = setup.client.request("$SRV.PING.dtaas-historian", "".into());
    within(STEP, "historian ping", ping).await.unwrap();
}

/// The number of points of `field` stored for `pt`/`measurement`, by `ts.query`'s
/// `count` aggregate (the points themselves would not fit in a reply).
async fn count_stored(setup: &Setup, pt: &str, measurement: &str, field: &str) -> i64 {
    let body = serde_json::json!({"pt": pt, "measurement": measurement, "fields": [field],
        "from": "-1d", "to": "2100-01-01T00:00:00Z", "agg": "count"});
    let reply = ask(setup, "ts", "query", &body).await;
    reply["series"][0]["points"][0][1].as_i64().unwrap_or(0)
}

/// Row 2: MQTT payloads over 1 MiB are taken (up to `max_payload`, 16 MiB by default):
/// a JSON array of 1.7 MB is split into NATS messages and stored whole; a payload
/// that is no telemetry, and a single record too large for NATS, go to the DLQ with
/// their reason and their first 64 KiB. Nothing is dropped silently by the broker.
#[tokio::test(flavor = "multi_thread")]
async fn payloads_over_a_mebibyte_are_stored_or_dead_lettered() {
    let setup = Setup::start(&[]).await;
    let _historian = setup.start_historian();
    let port = setup.broker.port();
    const READINGS: i64 = 40_000;
    let array: Vec<String> = (0..READINGS)
        .map(|i| format!(r#"{{"n":{i},"pad":"{}"}}"#, "p".repeat(24)))
        .collect();
    let array = format!("[{}]", array.join(","));
    assert!(array.len() > 1_600_000);
    mosquitto_pub_bytes(port, "dtaas/pt/big/tel/env", array.as_bytes());
    mosquitto_pub_bytes(port, "dtaas/pt/big/tel/junk", &vec![b'x'; 1_049_000]);
    let huge_record = format!(r#"{{"text":"{}"}}"#, "t".repeat(2_000_000));
    mosquitto_pub_bytes(port, "dtaas/pt/big/tel/text", huge_record.as_bytes());

    setup.wait_historian().await;
    let count = poll_until(
        Duration::from_secs(180),
        || count_stored(&setup, "big", "env", "n"),
        |n| *n >= READINGS,
    )
    .await;
    assert_eq!(count, READINGS, "every reading of the 1.7 MB array stored");
    let filter = subject::dlq("bridge").unwrap();
    let dlq = poll_until(
        Duration::from_secs(60),
        || read_all(&setup.js, STREAM_DLQ, &filter),
        |m| m.len() >= 2,
    )
    .await;
    assert_eq!(dlq.len(), 2);
    let mut sizes = Vec::new();
    for message in &dlq {
        let headers = message.headers.as_ref().unwrap();
        let reason = headers.get(header::DLQ_REASON).unwrap().as_str();
        assert!(!reason.is_empty());
        assert_eq!(message.payload.len(), 64 * 1024, "{reason}");
        sizes.push(
            headers
                .get(header::DLQ_TRUNCATED)
                .unwrap()
                .as_str()
                .to_owned(),
        );
    }
    sizes.sort();
    assert_eq!(sizes, ["1049000", huge_record.len().to_string().as_str()]);
    assert_still_serving(&setup, "after-big").await;
}

/// Row 6: a `ts.query` whose reply would exceed the server's max payload gets a
/// `bad_request` saying so and how to ask for less, not a timeout; a smaller `limit`
/// works.
#[tokio::test(flavor = "multi_thread")]
async fn a_reply_over_the_max_payload_is_an_error_saying_how_to_page() {
    let setup = Setup::start(&[]).await;
    let _historian = setup.start_historian();
    let base = dtaas_schemas::time::now_ns() - 3_600_000_000_000;
    let records: Vec<TelemetryRecord> = (0..10_000)
        .map(|i| TelemetryRecord {
            pt: "wide".into(),
            measurement: "env".into(),
            ts: base + i,
            tags: Default::default(),
            fields: [("s".to_owned(), FieldValue::Str(format!("{i:0>120}")))].into(),
        })
        .collect();
    let subject = subject::telemetry("wide", "env").unwrap();
    for chunk in records.chunks(1_000) {
        let body = Encoding::MsgPack.encode(&chunk).unwrap();
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, Encoding::MsgPack.content_type());
        let publish = setup
            .js
            .publish_with_headers(subject.clone(), headers, body);
        within(STEP, "publish", async {
            publish.await.unwrap().await.unwrap()
        })
        .await;
    }
    setup.wait_historian().await;
    let stored = poll_until(
        Duration::from_secs(120),
        || count_stored(&setup, "wide", "env", "s"),
        |n| *n >= 10_000,
    )
    .await;
    assert_eq!(stored, 10_000);
    let body = serde_json::json!({"pt": "wide", "measurement": "env", "from": "-1d",
        "limit": 1_000_000});
    let reply = ask(&setup, "ts", "query", &body).await;
    assert_bad_request(&reply, &["max payload", "`limit`"]);
    let body = serde_json::json!({"pt": "wide", "measurement": "env", "from": "-1d",
        "limit": 1_000});
    let reply = ask_any(&setup, "ts", "query", &body).await;
    assert_eq!(
        reply["series"][0]["points"].as_array().unwrap().len(),
        1_000
    );
    assert_still_serving(&setup, "after-wide").await;
}

/// Row 10: an empty (or blank) MQTT payload is dead-lettered as empty, not as bad line
/// protocol; JSON behind a UTF-8 byte order mark is stored; an empty body published
/// straight to a telemetry subject is dead-lettered by the historian as empty.
#[tokio::test(flavor = "multi_thread")]
async fn empty_payloads_and_byte_order_marks_are_told_apart() {
    let setup = Setup::start(&[]).await;
    let _historian = setup.start_historian();
    let port = setup.broker.port();
    mosquitto_pub_bytes(port, "dtaas/pt/bom/tel/env", b"");
    mosquitto_pub_bytes(port, "dtaas/pt/bom/tel/env", b" \n\t\n");
    mosquitto_pub_bytes(port, "dtaas/pt/bom/tel/env", b"\xEF\xBB\xBF{\"temp\":21}");
    let reasons = dlq_reasons(&setup, "bridge", 2).await;
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    for reason in &reasons {
        assert!(reason.starts_with("payload is empty"), "{reason}");
    }
    let stored = setup
        .wait_stored("bom", "env", "temp", 1, Duration::from_secs(60))
        .await;
    assert_eq!(
        int_values(&stored),
        [21],
        "the JSON behind the BOM is stored"
    );

    let subject = subject::telemetry("bom", "raw").unwrap();
    let publish = setup.js.publish(subject, "".into());
    within(STEP, "publish", async {
        publish.await.unwrap().await.unwrap()
    })
    .await;
    let reasons = dlq_reasons(&setup, "historian", 1).await;
    assert!(reasons[0].contains("body is empty"), "{reasons:?}");
    assert_still_serving(&setup, "after-empty").await;
}

/// Row 11: `ts.query` with `fields` naming the same field 10,000 times answers one
/// series per distinct field, in the order first named.
#[tokio::test(flavor = "multi_thread")]
async fn a_field_named_many_times_is_one_series() {
    let setup = Setup::start(&[]).await;
    let _historian = setup.start_historian();
    let readings: Vec<String> = (0..5).map(|i| format!(r#"{{"a":{i},"b":{i}}}"#)).collect();
    mosquitto_pub_lines(
        setup.broker.port(),
        &["-q", "1"],
        "dtaas/pt/dup/tel/env",
        &readings,
    );
    setup
        .wait_stored("dup", "env", "a", 5, Duration::from_secs(60))
        .await;
    let mut fields = vec!["b"; 10_000];
    fields.push("a");
    let body = serde_json::json!({"pt": "dup", "measurement": "env", "fields": fields,
        "from": "-1d", "to": "2100-01-01T00:00:00Z"});
    let reply = ask(&setup, "ts", "query", &body).await;
    let series = reply["series"].as_array().unwrap();
    let names: Vec<&str> = series
        .iter()
        .map(|s| s["field"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["b", "a"], "{reply}");
    for s in series {
        assert_eq!(s["points"].as_array().unwrap().len(), 5, "{reply}");
    }
    assert_still_serving(&setup, "after-dup").await;
}
