//! The `influxdb` backend against a real InfluxDB v2 write API: victoria-metrics,
//! read back through its `/api/v1/export`. victoria-metrics names a series
//! `<measurement>_<field>` with the tags (and `pt`) as labels, keeps milliseconds, and
//! runs with `-dedup.minScrapeInterval=1ms` so that, as in InfluxDB, a point written
//! twice (same series and timestamp) is one point.

mod historian_common;

use std::sync::Arc;
use std::time::Duration;

use dtaas_historian::config::{InfluxConfig, Secret};
use dtaas_historian::{InfluxStore, Sink, SinkError};
use dtaas_test_harness::{NatsServer, VictoriaMetrics};
use historian_common::*;

const N: i64 = 10_000;
const TOKEN: &str = "t0ps3cret-token-value";

/// The `temp` values of `pt` in victoria-metrics, one per stored sample.
fn exported_temps(vm: &VictoriaMetrics, pt: &str) -> Vec<i64> {
    let body = vm.export(&format!("env_temp{{pt=\"{pt}\"}}")).unwrap();
    let mut values = Vec::new();
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        let series: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(
            series["metric"]["site"], "lab",
            "tags become labels: {line}"
        );
        for (value, ts) in series["values"]
            .as_array()
            .unwrap()
            .iter()
            .zip(series["timestamps"].as_array().unwrap())
        {
            let value = value.as_f64().unwrap() as i64;
            assert_eq!(
                ts.as_i64().unwrap(),
                (BASE_NS / 1_000_000) + value * 1_000,
                "timestamp of {value}"
            );
            values.push(value);
        }
    }
    values
}

async fn wait_exported(vm: &VictoriaMetrics, pt: &str, n: usize, timeout: Duration) -> Vec<i64> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let values = exported_temps(vm, pt);
        if values.len() >= n || tokio::time::Instant::now() >= deadline {
            return values;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn influxdb_backend_survives_a_stopped_store() {
    let nats = NatsServer::start().unwrap();
    let mut vm = VictoriaMetrics::start_with_args(&["-dedup.minScrapeInterval=1ms"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_client, js) = connect(&nats.url()).await;
    let url = vm.url();
    let mut historian = spawn_historian(
        &nats.url(),
        dir.path(),
        &[
            ("DTAAS_TS_BACKEND", "influxdb"),
            ("DTAAS_INFLUXDB_URL", &url),
            ("DTAAS_INFLUXDB_ORG", "dtaas"),
            ("DTAAS_INFLUXDB_BUCKET", "telemetry"),
            ("DTAAS_INFLUXDB_TOKEN", TOKEN),
        ],
    );

    publish(&js, (0..3_000).map(|i| record("vm1", "env", i))).await;
    let stored = wait_exported(&vm, "vm1", 3_000, TIMEOUT).await;
    assert_exactly_once(&stored, 3_000);

    vm.stop();
    publish(&js, (3_000..N).map(|i| record("vm1", "env", i))).await;
    let failing = dtaas_test_harness::ports::wait_until(Duration::from_secs(60), || {
        historian.log().contains("Cannot write batch")
    });
    assert!(
        failing,
        "the historian never noticed the outage:\n{}",
        historian.log_tail()
    );
    vm.start_again().unwrap();

    let stored = wait_exported(&vm, "vm1", N as usize, Duration::from_secs(120)).await;
    assert_exactly_once(&stored, N);
    assert_eq!(historian.stop(), Some(0), "{}", historian.log_tail());
    assert!(
        !historian.log().contains(TOKEN),
        "the token must never be logged"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn influx_store_writes_are_idempotent_and_errors_hide_the_token() {
    let vm = VictoriaMetrics::start_with_args(&["-dedup.minScrapeInterval=1ms"]).unwrap();
    let config = InfluxConfig {
        url: vm.url(),
        token: Secret::new(TOKEN),
        ..Default::default()
    };
    let store = InfluxStore::new(&config).unwrap();
    let records = Arc::new(
        (0..100)
            .map(|i| record("idem1", "env", i))
            .collect::<Vec<_>>(),
    );
    for _ in 0..2 {
        tokio::time::timeout(TIMEOUT, store.write(records.clone()))
            .await
            .unwrap()
            .unwrap();
    }
    assert_exactly_once(&wait_exported(&vm, "idem1", 100, TIMEOUT).await, 100);

    // A store that is not there is `Unavailable` (retried), and says so without the token.
    let down = InfluxStore::new(&InfluxConfig {
        url: format!(
            "http://127.0.0.1:{}",
            dtaas_test_harness::ports::free_port()
        ),
        token: Secret::new(TOKEN),
        ..Default::default()
    })
    .unwrap();
    let err = tokio::time::timeout(TIMEOUT, down.write(records))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, SinkError::Unavailable(_)), "{err}");
    assert!(!err.to_string().contains(TOKEN), "{err}");
}
