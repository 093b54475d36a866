//! Talking to `dtaas <worker>` processes as a user does: requests under the test user
//! and `$SRV.PING`, each under a timeout.
// Each test file uses a different part of this module.
#![allow(dead_code)]

use std::time::Duration;

use dtaas_test_harness::Process;
use tokio::time::timeout;

/// How long `wait_for_service` waits for a worker's first answer.
const SERVICE_WAIT: Duration = Duration::from_secs(60);

/// Asks `dtaas.v1.test.<service>.<verb>`; `None` without a JSON answer in 5 s.
pub async fn request(
    client: &async_nats::Client,
    service: &str,
    verb: &str,
    body: serde_json::Value,
) -> Option<serde_json::Value> {
    let subject = dtaas_schemas::subject::request("test", service, verb).unwrap();
    let reply = timeout(
        Duration::from_secs(5),
        client.request(subject, body.to_string().into()),
    )
    .await
    .ok()?
    .ok()?;
    serde_json::from_slice(&reply.payload).ok()
}

/// Waits until `$SRV.PING.<service>` is answered through `client`; `worker`'s log
/// explains a failure.
pub async fn wait_for_service(client: &async_nats::Client, service: &str, worker: &Process) {
    let subject = format!("$SRV.PING.{service}");
    let answered = async {
        loop {
            let reply = timeout(
                Duration::from_secs(2),
                client.request(subject.clone(), "".into()),
            )
            .await;
            if matches!(reply, Ok(Ok(_))) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    if timeout(SERVICE_WAIT, answered).await.is_err() {
        panic!("{service} did not register in time:\n{}", worker.log());
    }
}
