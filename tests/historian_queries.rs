//! `ts.query` and `ts.latest` checked against known data: one hour at 1 Hz.

mod historian_common;

use async_nats::HeaderMap;
use dtaas_schemas::names::header;
use dtaas_schemas::time::now_ns;
use dtaas_schemas::{subject, FieldValue, TelemetryRecord};
use dtaas_test_harness::NatsServer;
use historian_common::*;
use serde_json::{json, Value};

fn points(reply: &Value, series: usize) -> Vec<(i64, f64)> {
    reply["series"][series]["points"]
        .as_array()
        .unwrap_or_else(|| panic!("no series {series} in {reply}"))
        .iter()
        .map(|p| (p[0].as_i64().unwrap(), p[1].as_f64().unwrap()))
        .collect()
}

fn error_message(reply: &Value) -> String {
    assert_eq!(reply["error"]["code"], "bad_request", "{reply}");
    reply["error"]["message"].as_str().unwrap().to_owned()
}

const S: i64 = 1_000_000_000;

#[tokio::test(flavor = "multi_thread")]
async fn queries_answer_known_data() {
    let nats = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (client, js) = connect(&nats.url()).await;
    let mut historian = spawn_historian(&nats.url(), dir.path(), &[]);

    // One hour at 1 Hz from 2026-01-01T00:00:00Z: temp = i, state = "s<i>".
    publish(&js, (0..3_600).map(|i| record("q1", "env", i))).await;
    // Ten recent points for relative ranges.
    let now = now_ns();
    publish(
        &js,
        (0..10).map(|i| TelemetryRecord {
            ts: now - (i + 1) * 60 * S,
            ..record("recent1", "env", i)
        }),
    )
    .await;
    assert_eq!(
        wait_for_count(&client, "q1", "env", 3_600, TIMEOUT)
            .await
            .len(),
        3_600
    );
    assert_eq!(
        wait_for_count(&client, "recent1", "env", 10, TIMEOUT)
            .await
            .len(),
        10
    );

    // A range is inclusive at both ends.
    let reply = ts(
        &client,
        "query",
        json!({"pt":"q1","measurement":"env","fields":["temp"],
        "from":"2026-01-01T00:00:10Z","to":"2026-01-01T00:00:19Z"}),
    )
    .await;
    let expected: Vec<(i64, f64)> = (10..20).map(|i| (BASE_NS + i * S, i as f64)).collect();
    assert_eq!(points(&reply, 0), expected);
    assert_eq!(reply["series"][0]["field"], "temp");

    // Mean over 10-minute windows: window k holds 600k..600k+599.
    let reply = ts(
        &client,
        "query",
        json!({"pt":"q1","measurement":"env","fields":["temp"],
        "from":"2026-01-01T00:00:00Z","to":"2026-01-01T00:59:59Z","every":"10m","agg":"mean"}),
    )
    .await;
    let expected: Vec<(i64, f64)> = (0..6)
        .map(|k| (BASE_NS + k * 600 * S, (600 * k) as f64 + 299.5))
        .collect();
    assert_eq!(points(&reply, 0), expected);
    for (agg, first) in [
        ("min", 0.0),
        ("max", 599.0),
        ("last", 599.0),
        ("count", 600.0),
    ] {
        let reply = ts(
            &client,
            "query",
            json!({"pt":"q1","measurement":"env","fields":["temp"],
            "from":"2026-01-01T00:00:00Z","to":"2026-01-01T00:59:59Z","every":"10m","agg":agg}),
        )
        .await;
        let got = points(&reply, 0);
        assert_eq!(got.len(), 6, "{agg}");
        assert_eq!(got[0], (BASE_NS, first), "{agg}");
    }
    // `every` alone means mean; windows are aligned to the epoch, not to `from`.
    let reply = ts(
        &client,
        "query",
        json!({"pt":"q1","measurement":"env","fields":["temp"],
        "from":"2026-01-01T00:00:05Z","to":"2026-01-01T00:00:24Z","every":"10s"}),
    )
    .await;
    assert_eq!(
        points(&reply, 0),
        vec![
            (BASE_NS, 7.0),
            (BASE_NS + 10 * S, 14.5),
            (BASE_NS + 20 * S, 22.0)
        ]
    );

    // Limit: the earliest points first.
    let reply = ts(
        &client,
        "query",
        json!({"pt":"q1","measurement":"env","fields":["temp"],
        "from":"2026-01-01T00:00:00Z","to":"2026-01-01T01:00:00Z","limit":5}),
    )
    .await;
    assert_eq!(
        points(&reply, 0).iter().map(|p| p.1).collect::<Vec<_>>(),
        [0.0, 1.0, 2.0, 3.0, 4.0]
    );

    // No `fields`: every field, in name order; strings come back as strings.
    let reply = ts(
        &client,
        "query",
        json!({"pt":"q1","measurement":"env",
        "from":"2026-01-01T00:00:00Z","to":"2026-01-01T00:00:01Z"}),
    )
    .await;
    assert_eq!(reply["series"][0]["field"], "state");
    assert_eq!(reply["series"][0]["points"][1][1], "s1");
    assert_eq!(reply["series"][1]["field"], "temp");

    // Relative range: the default is the last hour.
    let reply = ts(
        &client,
        "query",
        json!({"pt":"recent1","measurement":"env","fields":["temp"]}),
    )
    .await;
    assert_eq!(points(&reply, 0).len(), 10);
    let reply = ts(
        &client,
        "query",
        json!({"pt":"recent1","measurement":"env","fields":["temp"],
        "from":"-5m30s","to":"now"}),
    )
    .await;
    let first = error_message(&reply);
    assert!(first.contains("`from`"), "{first}");
    let reply = ts(
        &client,
        "query",
        json!({"pt":"recent1","measurement":"env","fields":["temp"],
        "from":"-330s","to":"now"}),
    )
    .await;
    assert_eq!(points(&reply, 0).len(), 5, "{reply}");

    // An unknown PT is an empty result, not an error.
    let reply = ts(&client, "query", json!({"pt":"nobody","measurement":"env"})).await;
    assert_eq!(reply, json!({"series": []}));
    let reply = ts(
        &client,
        "query",
        json!({"pt":"nobody","measurement":"env","fields":["temp"]}),
    )
    .await;
    assert_eq!(reply, json!({"series": [{"field":"temp","points":[]}]}));
    let reply = ts(&client, "latest", json!({"pt":"nobody"})).await;
    assert_eq!(reply, json!({"latest": []}));

    // Malformed requests name the field.
    for (body, field) in [
        (json!({"measurement":"env"}), "`pt`"),
        (json!({"pt":"q1","measurement":7}), "`measurement`"),
        (
            json!({"pt":"q1","measurement":"env","fields":"temp"}),
            "`fields`",
        ),
        (json!({"pt":"q1","measurement":"env","agg":"avg"}), "`agg`"),
        (
            json!({"pt":"q1","measurement":"env","from":"yesterday"}),
            "`from`",
        ),
        (
            json!({"pt":"q1","measurement":"env","every":"ten"}),
            "`every`",
        ),
        (json!({"pt":"q1","measurement":"env","limit":0}), "`limit`"),
        (
            json!({"pt":"q1","measurement":"env","limit":"many"}),
            "`limit`",
        ),
        (
            json!({"pt":"q1","measurement":"env","colour":"red"}),
            "colour",
        ),
        (json!({"pt":"q 1","measurement":"env"}), "`pt`"),
    ] {
        let reply = ts(&client, "query", body.clone()).await;
        let message = error_message(&reply);
        assert!(message.contains(field), "{body}: {message}");
    }
    let message = error_message(&ts(&client, "latest", json!({})).await);
    assert!(message.contains("pt"), "{message}");

    // ts.latest: the last value of every field of every measurement.
    publish(
        &js,
        (0..3).map(|i| TelemetryRecord {
            fields: [("rpm".to_owned(), FieldValue::I64(100 + i))].into(),
            ..record("q1", "motor", i)
        }),
    )
    .await;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let latest = loop {
        let latest = ts(&client, "latest", json!({"pt":"q1"})).await;
        if latest["latest"].as_array().map_or(0, Vec::len) == 3
            || tokio::time::Instant::now() > deadline
        {
            break latest;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(
        latest,
        json!({"latest": [
            {"measurement":"env","field":"state","ts": BASE_NS + 3_599 * S, "value":"s3599"},
            {"measurement":"env","field":"temp","ts": BASE_NS + 3_599 * S, "value":3599.0},
            {"measurement":"motor","field":"rpm","ts": BASE_NS + 2 * S, "value":102},
        ]})
    );

    // MessagePack in, MessagePack out.
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, "application/msgpack");
    let body = rmp_serde::to_vec_named(&json!({"pt":"q1","measurement":"motor","fields":["rpm"],
        "from":"2026-01-01T00:00:00Z","to":"2026-01-01T00:01:00Z","agg":"max"}))
    .unwrap();
    let reply = tokio::time::timeout(
        TIMEOUT,
        client.request_with_headers(
            subject::request("test", "ts", "query").unwrap(),
            headers,
            body.into(),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    let reply: Value = rmp_serde::from_slice(&reply.payload).unwrap();
    assert_eq!(
        reply,
        json!({"series":[{"field":"rpm","points":[[BASE_NS, 102]]}]})
    );

    assert_eq!(historian.stop(), Some(0), "{}", historian.log_tail());
}
