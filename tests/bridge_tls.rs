//! The bridge over TLS (`mqtts://`): a CA and a server certificate made with
//! `openssl` in a temporary directory (harness `Certs`), mosquitto with a TLS listener
//! next to its plain one (devices publish on the plain one). With `DTAAS_MQTT_CA_FILE` naming the CA the
//! bridge carries telemetry over TLS; with another CA it logs a clear TLS error,
//! retries, and never connects.

mod bridge_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bridge_support::*;
use dtaas_schemas::names::STREAM_TELEMETRY;
use dtaas_schemas::subject;
use dtaas_test_harness::{Certs, Mosquitto};

/// Certificates and a mosquitto with a TLS listener; returns the broker, the `mqtts`
/// URL, the right CA file and another CA's file.
fn tls_broker(dir: &Path) -> (Broker, String, PathBuf, PathBuf) {
    let certs = Certs::make(dir).expect("certificates");
    let mosquitto =
        Mosquitto::start_with_tls(&certs.ca, &certs.cert, &certs.key).expect("mosquitto with TLS");
    let url = format!("mqtts://127.0.0.1:{}", mosquitto.tls_port.unwrap());
    (Broker::Mosquitto(mosquitto), url, certs.ca, certs.other_ca)
}

#[tokio::test(flavor = "multi_thread")]
async fn mqtts_with_the_ca_file_carries_telemetry() {
    let certs = tempfile::tempdir().unwrap();
    let (broker, url, ca, _) = tls_broker(certs.path());
    let ca = ca.display().to_string();
    let setup = Setup::start_with(
        broker,
        &[("DTAAS_MQTT_URL", &url), ("DTAAS_MQTT_CA_FILE", &ca)],
        None,
    )
    .await;
    const COUNT: usize = 50;
    let lines: Vec<String> = (0..COUNT)
        .map(|i| format!("{{\"seq\":{i},\"v\":{i}.5}}"))
        .collect();
    mosquitto_pub_lines(
        setup.broker.port(),
        &["-q", "1"],
        "dtaas/pt/tls/tel/seq",
        &lines,
    );
    let filter = subject::telemetry("tls", "seq").unwrap();
    poll_until(
        Duration::from_secs(30),
        || async { read_all(&setup.js, STREAM_TELEMETRY, &filter).await.len() },
        |n| *n >= COUNT,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let records = read_all(&setup.js, STREAM_TELEMETRY, &filter).await.len();
    assert_eq!(records, COUNT, "bridge log:\n{}", setup.bridge.log_tail());
    let stats = setup.stats().await;
    assert_eq!(stats["mqtt_protocol"], "5", "{stats}");
    let log = setup.bridge.log();
    assert!(log.contains(&format!("broker={url}")), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn mqtts_with_another_ca_logs_a_tls_error_and_never_connects() {
    let certs = tempfile::tempdir().unwrap();
    let (broker, url, _, other_ca) = tls_broker(certs.path());
    let other_ca = other_ca.display().to_string();
    let mut setup = Setup::spawn(
        broker,
        &[("DTAAS_MQTT_URL", &url), ("DTAAS_MQTT_CA_FILE", &other_ca)],
        None,
    )
    .await;
    let failure = "TLS with the MQTT broker failed";
    let log = poll_until(
        Duration::from_secs(30),
        || async { setup.bridge.log() },
        |log| log.contains(failure),
    )
    .await;
    assert!(log.contains(failure), "no TLS error logged:\n{log}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(setup.bridge.is_running(), "the bridge stays up");
    let stats = setup.stats().await;
    assert_eq!(stats["mqtt_connected"], false, "{stats}");
    let log = setup.bridge.log();
    assert!(
        log.contains("UnknownIssuer") || log.contains("unknown issuer"),
        "the cause is named:\n{log}"
    );
    assert!(!log.contains("Connected to the MQTT broker"), "{log}");
    assert!(!log.contains("trying MQTT 3.1.1"), "{log}");
}
