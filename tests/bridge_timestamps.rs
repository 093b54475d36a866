//! Readings without a timestamp of their own, through real mosquitto, nats-server, the
//! bridge and the embedded historian: every reading is a stored point of its own,
//! counted through `ts.query`, whether the readings come as a burst of separate QoS 1
//! messages, as one JSON array or as the lines of one line-protocol payload.

mod bridge_support;

use std::time::Duration;

use bridge_support::*;

/// Asserts `points` hold the values 0..n, each once, in arrival (= time) order, with
/// strictly increasing timestamps.
fn assert_each_once_in_order(what: &str, points: &[(i64, dtaas_schemas::FieldValue)], n: i64) {
    let values = int_values(points);
    assert_eq!(
        values.len() as i64,
        n,
        "{what}: {} points stored for {n} readings",
        values.len()
    );
    assert_eq!(
        values,
        (0..n).collect::<Vec<_>>(),
        "{what}: values in time order"
    );
    assert!(
        points.windows(2).all(|w| w[0].0 < w[1].0),
        "{what}: timestamps strictly increasing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_timestamp_less_reading_is_a_point_of_its_own() {
    let setup = Setup::start(&[]).await;
    let _historian = setup.start_historian();
    let port = setup.broker.port();
    let before = dtaas_schemas::time::now_ns();

    // A JSON array of 300 readings and a line-protocol payload of 100 lines, none with
    // a timestamp: each becomes one NATS message, all its readings arrive at once.
    let array: Vec<String> = (0..300).map(|i| format!(r#"{{"n":{i}}}"#)).collect();
    mosquitto_pub(
        port,
        "dtaas/pt/stamp-array/tel/env",
        &format!("[{}]", array.join(",")),
    );
    let lines: Vec<String> = (0..100).map(|i| format!("env,room=lab n={i}i")).collect();
    mosquitto_pub(port, "dtaas/pt/stamp-lp/tel/lp", &lines.join("\n"));
    // A burst of 5,000 separate QoS 1 messages from one independent client.
    const BURST: i64 = 5_000;
    let burst: Vec<String> = (0..BURST).map(|i| format!(r#"{{"n":{i}}}"#)).collect();
    tokio::task::block_in_place(|| {
        mosquitto_pub_lines(port, &["-q", "1"], "dtaas/pt/stamp-burst/tel/env", &burst)
    });

    let limit = Duration::from_secs(120);
    let points = setup
        .wait_stored("stamp-array", "env", "n", 300, limit)
        .await;
    assert_each_once_in_order("JSON array", &points, 300);
    let points = setup.wait_stored("stamp-lp", "env", "n", 100, limit).await;
    assert_each_once_in_order("line protocol", &points, 100);
    let points = setup
        .wait_stored("stamp-burst", "env", "n", BURST as usize, limit)
        .await;
    assert_each_once_in_order("burst of messages", &points, BURST);
    assert!(points[0].0 >= before, "stamps are arrival times");
    assert!(points[points.len() - 1].0 <= dtaas_schemas::time::now_ns());
}
