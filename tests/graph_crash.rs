//! The `dtaas graph` binary killed with SIGKILL mid-stream and started again:
//! every command status event ends up in the graph exactly once.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use dtaas_runtime::{Config, Context};
use dtaas_schemas::codec::Encoding;
use dtaas_schemas::command::{CommandStatus, CommandStatusEvent};
use dtaas_schemas::names::header;
use dtaas_schemas::subject;
use dtaas_test_harness::{NatsServer, Process};
use serde_json::{json, Value};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(30);
const N: usize = 3000;

async fn count(ctx: &Context) -> Option<(usize, usize)> {
    let subject = subject::request("alice", "graph", "commands").unwrap();
    let body = json!({"pt": "lathe", "limit": 100000}).to_string();
    let reply = timeout(
        Duration::from_secs(5),
        ctx.nats.request(subject, body.into()),
    )
    .await
    .ok()?
    .ok()?;
    let reply: Value = serde_json::from_slice(&reply.payload).ok()?;
    let commands = reply["commands"].as_array()?;
    let statuses = commands
        .iter()
        .map(|c| c["history"].as_array().map_or(0, Vec::len))
        .sum();
    Some((commands.len(), statuses))
}

async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_stream_loses_and_doubles_nothing() {
    let nats = NatsServer::start().unwrap();
    let data = tempfile::tempdir().unwrap();
    let env = |name: &str| (name == "DTAAS_NATS_URL").then(|| nats.url());
    let config = Config::from_toml("", "test", &env).unwrap();
    let ctx = timeout(
        T,
        Context::connect(Arc::new(config), "test", CancellationToken::new()),
    )
    .await
    .unwrap()
    .unwrap();

    // A short ack wait, so the events in flight at the kill come back quickly.
    let config_file = data.path().join("dtaas.toml");
    std::fs::write(&config_file, "[graph]\nack_wait = \"3s\"\n").unwrap();
    let mut worker = Process::spawn(
        "dtaas-graph",
        env!("CARGO_BIN_EXE_dtaas").as_ref(),
        vec!["graph".into()],
        vec![
            ("DTAAS_NATS_URL".into(), nats.url().into()),
            ("DTAAS_DATA_DIR".into(), data.path().as_os_str().to_owned()),
            ("DTAAS_CONFIG".into(), config_file.into_os_string()),
            ("RUST_LOG".into(), "info".into()),
        ],
        data.path().join("graph.log"),
    )
    .unwrap();

    // Two statuses per command, published while the worker runs.
    let publisher = {
        let js = ctx.js.clone();
        tokio::spawn(async move {
            for i in 0..N {
                for (k, status) in [CommandStatus::Accepted, CommandStatus::Sent]
                    .into_iter()
                    .enumerate()
                {
                    let event = CommandStatusEvent {
                        id: format!("k{i:05}"),
                        pt: "lathe".into(),
                        command: "cut".into(),
                        status,
                        at: 1_000 + (i * 10 + k) as i64,
                        reason: None,
                    };
                    let mut headers = HeaderMap::new();
                    headers.insert(header::CONTENT_TYPE, Encoding::MsgPack.content_type());
                    let body = Encoding::MsgPack.encode(&event).unwrap();
                    let ack = js
                        .publish_with_headers(event.subject().unwrap(), headers, body)
                        .await
                        .unwrap();
                    timeout(T, ack).await.unwrap().unwrap();
                }
            }
        })
    };

    wait_for("part of the stream is in the graph", || async {
        count(&ctx).await.is_some_and(|(n, _)| n > 0)
    })
    .await;
    worker.kill();
    let (before, _) = count(&ctx).await.unwrap_or((0, 0));
    assert!(before < N, "the kill came mid-stream ({before} of {N})");
    worker.start().unwrap();
    timeout(Duration::from_secs(120), publisher)
        .await
        .unwrap()
        .unwrap();
    wait_for("every command is in the graph", || async {
        count(&ctx).await == Some((N, 2 * N))
    })
    .await;
    assert_eq!(
        count(&ctx).await,
        Some((N, 2 * N)),
        "nothing missing, nothing doubled"
    );
    assert_eq!(
        worker.stop(),
        Some(0),
        "graceful stop:\n{}",
        worker.log_tail()
    );
}
