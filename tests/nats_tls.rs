//! Workers and NATS over TLS: a CA and a server certificate made with `openssl` at test
//! time (harness `Certs`), nats-server with TLS on its client port. A historian given
//! `tls://` and the CA file (`DTAAS_NATS_CA_FILE`) registers and stores a reading that
//! `ts.query` returns; given another CA's file it exits at once with an error that says
//! TLS failed, why (unknown issuer) and which setting to check; `tls://` to a server
//! without TLS fails at once too.

mod worker_support;

use std::path::Path;
use std::time::Duration;

use dtaas_test_harness::worker::{spawn_worker, WorkerEnv};
use dtaas_test_harness::{Certs, NatsServer, Process};
use tokio::time::timeout;
use worker_support::{request, wait_for_service};

const WAIT: Duration = Duration::from_secs(60);

fn historian(url: &str, ca_file: &Path, dir: &Path) -> Process {
    let env = WorkerEnv {
        nats_url: url.to_owned(),
        mqtt_url: "mqtt://127.0.0.1:1".into(),
        data_dir: dir.to_owned(),
        extra: vec![("DTAAS_NATS_CA_FILE".into(), ca_file.display().to_string())],
    };
    spawn_worker(Path::new(env!("CARGO_BIN_EXE_dtaas")), "historian", &env).unwrap()
}

/// Certificates in `dir` and a nats-server with TLS; returns them and its `tls://` URL.
fn tls_server(dir: &Path) -> (Certs, NatsServer, String) {
    let certs = Certs::make(dir).expect("certificates");
    let nats = NatsServer::options()
        .tls(&certs.cert, &certs.key)
        .start()
        .expect("nats-server with TLS");
    let url = format!("tls://127.0.0.1:{}", nats.port);
    (certs, nats, url)
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_connect_over_tls_with_the_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let (certs, _nats, url) = tls_server(dir.path());
    let worker = historian(&url, &certs.ca, &dir.path().join("data"));
    let client = timeout(
        WAIT,
        async_nats::ConnectOptions::new()
            .add_root_certificates(certs.ca.clone())
            .require_tls(true)
            .connect(url.as_str()),
    )
    .await
    .unwrap()
    .expect("the test connects over TLS");
    wait_for_service(&client, "dtaas-historian", &worker).await;
    let record = serde_json::json!({"pt": "tls", "measurement": "m", "ts": 1_767_225_600_000_000_000i64,
        "fields": {"v": 1.5}});
    let js = async_nats::jetstream::new(client.clone());
    let ack = js
        .publish("dtaas.v1.tel.tls.m", record.to_string().into())
        .await
        .unwrap();
    timeout(WAIT, ack).await.unwrap().unwrap();
    let query = serde_json::json!({"pt": "tls", "measurement": "m",
        "from": "2025-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"});
    let mut points = 0;
    for _ in 0..100 {
        let reply = request(&client, "ts", "query", query.clone()).await;
        points = reply
            .as_ref()
            .and_then(|r| r["series"][0]["points"].as_array().map(Vec::len))
            .unwrap_or(0);
        if points > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(points, 1, "{}", worker.log_tail());
    let log = worker.log();
    assert!(
        log.contains(&format!("Connected to NATS. url={url}")),
        "{log}"
    );
}

/// Waits for `worker` to exit non-zero with "TLS failed" in its log, within less than
/// the connect timeout (10 s) it would take were TLS retried as unreachable; its log.
fn exits_with_tls_failure(worker: &mut Process) -> String {
    let code = worker
        .wait(Duration::from_secs(8))
        .expect("the worker exits at once");
    let log = worker.log();
    assert_ne!(code, Some(0), "{log}");
    assert!(log.contains("TLS failed"), "{log}");
    assert!(!log.contains("Connected to NATS"), "{log}");
    log
}

#[test]
fn another_ca_is_a_clear_error_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (certs, _nats, url) = tls_server(dir.path());
    let mut worker = historian(&url, &certs.other_ca, &dir.path().join("data"));
    let log = exits_with_tls_failure(&mut worker);
    assert!(
        log.contains("UnknownIssuer") || log.contains("unknown issuer"),
        "the cause is named:\n{log}"
    );
    assert!(log.contains("nats_ca_file"), "the setting is named:\n{log}");
    assert_eq!(log.matches("UnknownIssuer").count(), 1, "said once:\n{log}");
}

#[test]
fn tls_to_a_server_without_tls_is_a_clear_error_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(dir.path()).expect("certificates");
    let nats = NatsServer::start().expect("nats-server without TLS");
    let url = format!("tls://127.0.0.1:{}", nats.port);
    let mut worker = historian(&url, &certs.ca, &dir.path().join("data"));
    exits_with_tls_failure(&mut worker);
}
