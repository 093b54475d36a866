//! The bridge against a mosquitto without anonymous access (`allow_anonymous false`,
//! a `password_file`): with the right credentials (environment, or the userinfo of
//! `DTAAS_MQTT_URL` on MQTT 3.1.1) it carries telemetry; with a wrong password it logs
//! the refusal, retries with backoff, stays up, does not fall back to MQTT 3.1.1, and
//! never writes the password to its log.

mod bridge_support;

use std::time::Duration;

use bridge_support::*;
use dtaas_schemas::names::STREAM_TELEMETRY;
use dtaas_schemas::subject;
use dtaas_test_harness::Mosquitto;

const BRIDGE_USER: &str = "bridge";
const BRIDGE_PASSWORD: &str = "Br1dge-s3cret";
const DEVICE_USER: &str = "device";
const DEVICE_PASSWORD: &str = "dev1ce-pw";

fn broker() -> Broker {
    Broker::Mosquitto(
        Mosquitto::start_with_users(&[
            (BRIDGE_USER, BRIDGE_PASSWORD),
            (DEVICE_USER, DEVICE_PASSWORD),
        ])
        .expect("mosquitto with a password file"),
    )
}

/// Publishes `count` numbered QoS 1 messages as the device user; waits until they
/// are all in `DTAAS_TEL` (and a moment longer, for duplicates); returns the count.
async fn carry(setup: &Setup, pt: &str, count: usize) -> usize {
    let lines: Vec<String> = (0..count)
        .map(|i| format!("{{\"seq\":{i},\"v\":{i}.5}}"))
        .collect();
    mosquitto_pub_lines(
        setup.broker.port(),
        &["-q", "1", "-u", DEVICE_USER, "-P", DEVICE_PASSWORD],
        &format!("dtaas/pt/{pt}/tel/seq"),
        &lines,
    );
    let filter = subject::telemetry(pt, "seq").unwrap();
    poll_until(
        Duration::from_secs(30),
        || async { read_all(&setup.js, STREAM_TELEMETRY, &filter).await.len() },
        |n| *n >= count,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    read_all(&setup.js, STREAM_TELEMETRY, &filter).await.len()
}

#[tokio::test(flavor = "multi_thread")]
async fn right_credentials_from_the_environment_carry_telemetry() {
    let setup = Setup::start_with(
        broker(),
        &[
            ("DTAAS_MQTT_USERNAME", BRIDGE_USER),
            ("DTAAS_MQTT_PASSWORD", BRIDGE_PASSWORD),
        ],
        None,
    )
    .await;
    assert_eq!(carry(&setup, "auth5", 50).await, 50);
    let stats = setup.stats().await;
    assert_eq!(stats["mqtt_protocol"], "5", "{stats}");
    let log = setup.bridge.log();
    assert!(
        !log.contains(BRIDGE_PASSWORD),
        "password in the log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_in_the_url_work_on_mqtt311() {
    let broker = broker();
    let url = format!(
        "mqtt://{BRIDGE_USER}:{}@127.0.0.1:{}",
        BRIDGE_PASSWORD.replace('-', "%2D"),
        broker.port()
    );
    let setup = Setup::start_with(
        broker,
        &[("DTAAS_MQTT_URL", &url), ("DTAAS_MQTT_PROTOCOL", "3.1.1")],
        None,
    )
    .await;
    assert_eq!(carry(&setup, "auth311", 50).await, 50);
    let stats = setup.stats().await;
    assert_eq!(stats["mqtt_protocol"], "3.1.1", "{stats}");
    let log = setup.bridge.log();
    assert!(
        !log.contains(BRIDGE_PASSWORD),
        "password in the log:\n{log}"
    );
    assert!(!log.contains("%2D"), "URL password in the log:\n{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_is_logged_retried_and_never_shown() {
    const WRONG: &str = "Wr0ng-passw0rd";
    let mut setup = Setup::spawn(
        broker(),
        &[
            ("DTAAS_MQTT_USERNAME", BRIDGE_USER),
            ("DTAAS_MQTT_PASSWORD", WRONG),
        ],
        None,
    )
    .await;
    let refusal = format!("The MQTT broker refused the credentials for user \"{BRIDGE_USER}\"");
    let log = poll_until(
        Duration::from_secs(30),
        || async { setup.bridge.log() },
        |log| log.contains(&refusal),
    )
    .await;
    assert!(log.contains(&refusal), "no refusal logged:\n{log}");
    // Some more attempts, with backoff (100 ms doubling to 5 s): a handful in 4 s.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(setup.bridge.is_running(), "the bridge stays up");
    let stats = setup.stats().await;
    assert_eq!(stats["mqtt_connected"], false, "{stats}");
    let log = setup.bridge.log();
    let attempts = log.matches(&refusal).count();
    assert!(
        (2..=10).contains(&attempts),
        "{attempts} refusals in about 4 s: retried, but with backoff:\n{log}"
    );
    assert!(
        !log.contains("trying MQTT 3.1.1"),
        "a refused login is not a refused protocol:\n{log}"
    );
    assert!(!log.contains(WRONG), "password in the log:\n{log}");
    let broker_log = setup.broker.log();
    assert!(
        broker_log.contains("not authorised"),
        "mosquitto refused the login:\n{broker_log}"
    );
}
