//! Hostile and careless input against the bridge, through real mosquitto and
//! nats-server with the embedded historian: each input ends refused or dead-lettered
//! with its reason, the good traffic sent right after it is stored in full (counted
//! through `ts.query`), and the bridge still answers `$SRV.PING`.

mod bridge_support;

use std::time::Duration;

use bridge_support::*;

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
