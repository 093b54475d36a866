//! Foundation: the runtime, the contracts and the harness against real servers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::pull;
use dtaas_runtime::{provision, Config, Context, RequestInfo, WorkerService};
use dtaas_schemas::names::{self, header};
use dtaas_schemas::{subject, Encoding, ErrorCode, ErrorReply, FieldValue, TelemetryRecord};
use dtaas_test_harness::{Mosquitto, NatsServer, Process, VictoriaMetrics};
use futures::StreamExt;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

fn config_for(nats: &NatsServer) -> Arc<Config> {
    let url = nats.url();
    let env = move |name: &str| (name == "DTAAS_NATS_URL").then(|| url.clone());
    Arc::new(Config::from_toml("", "test", &env).unwrap())
}

async fn context(nats: &NatsServer, worker: &str) -> Context {
    timeout(
        WAIT,
        Context::connect(config_for(nats), worker, CancellationToken::new()),
    )
    .await
    .expect("connecting in time")
    .expect("connecting and provisioning")
}

fn record(value: f64) -> TelemetryRecord {
    TelemetryRecord {
        pt: "inc1".into(),
        measurement: "temperature".into(),
        ts: 1_764_000_000_000_000_000,
        tags: BTreeMap::new(),
        fields: BTreeMap::from([("temp".into(), FieldValue::F64(value))]),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn jetstream_publish_with_ack_then_consume() {
    let nats = NatsServer::start().unwrap();
    let ctx = context(&nats, "test").await;
    let subject = subject::telemetry("inc1", "temperature").unwrap();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, Encoding::MsgPack.content_type());
    headers.insert(header::MSG_ID, "inc1-1");
    let body = Encoding::MsgPack.encode(&record(21.5)).unwrap();
    let ack = timeout(WAIT, async {
        ctx.js
            .publish_with_headers(subject.clone(), headers.clone(), body.clone())
            .await?
            .await
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(ack.stream, names::STREAM_TELEMETRY);
    assert!(!ack.duplicate);
    // The same Nats-Msg-Id again is dropped by JetStream: at-least-once becomes once.
    let again = timeout(WAIT, async {
        ctx.js
            .publish_with_headers(subject, headers, body)
            .await?
            .await
    })
    .await
    .unwrap()
    .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.sequence, ack.sequence);

    let stream = ctx.js.get_stream(names::STREAM_TELEMETRY).await.unwrap();
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("foundation-test".into()),
            filter_subject: subject::telemetry_all(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.fetch().max_messages(10).messages().await.unwrap();
    let message = timeout(WAIT, messages.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let content_type = message
        .headers
        .as_ref()
        .and_then(|h| h.get(header::CONTENT_TYPE))
        .map(|v| v.as_str());
    let decoded: TelemetryRecord =
        dtaas_schemas::codec::decode(content_type, &message.payload).unwrap();
    assert_eq!(decoded, record(21.5));
    message.ack().await.unwrap();
    assert!(timeout(Duration::from_millis(500), messages.next())
        .await
        .ok()
        .flatten()
        .is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn kv_put_get_and_watch() {
    let nats = NatsServer::start().unwrap();
    let ctx = context(&nats, "test").await;
    let kv = ctx.js.get_key_value(names::KV_DTS).await.unwrap();
    let mut watch = kv.watch("incubator-1").await.unwrap();
    kv.put("incubator-1", r#"{"state":"created"}"#.into())
        .await
        .unwrap();
    let entry = kv.get("incubator-1").await.unwrap().unwrap();
    assert_eq!(&entry[..], br#"{"state":"created"}"#);
    kv.put("incubator-1", r#"{"state":"executing"}"#.into())
        .await
        .unwrap();
    let first = timeout(WAIT, watch.next()).await.unwrap().unwrap().unwrap();
    let second = timeout(WAIT, watch.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(&first.value[..], br#"{"state":"created"}"#);
    assert_eq!(&second.value[..], br#"{"state":"executing"}"#);
}

#[tokio::test(flavor = "multi_thread")]
async fn provisioning_is_idempotent_and_names_conflicts() {
    let nats = NatsServer::start().unwrap();
    let ctx = context(&nats, "test").await;
    provision::all(&ctx.js, 1)
        .await
        .expect("provisioning twice is no error");
    let mut edited = ctx
        .js
        .get_stream(names::STREAM_EVENTS)
        .await
        .unwrap()
        .cached_info()
        .config
        .clone();
    edited.max_age = Duration::from_secs(3600);
    ctx.js.update_stream(edited).await.unwrap();
    let error = provision::all(&ctx.js, 1).await.unwrap_err().to_string();
    assert!(
        error.contains("DTAAS_EVT") && error.contains("max_age"),
        "{error}"
    );
    assert!(error.contains("nats stream edit DTAAS_EVT"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn provisioning_fails_at_once_for_what_waiting_cannot_fix() {
    let nats = NatsServer::start().unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let started = std::time::Instant::now();
    // Three replicas on a single server: refused by the server, never retried for long.
    let error = provision::all(&js, 3).await.unwrap_err();
    assert!(!error.is_passing(), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("stream DTAAS_TEL") && message.contains("replicas"),
        "{message}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[derive(serde::Deserialize)]
struct Echo {
    text: String,
}

#[tokio::test(flavor = "multi_thread")]
async fn service_api_answers_ping_info_stats_and_requests() {
    let nats = NatsServer::start().unwrap();
    let ctx = context(&nats, "test").await;
    let stats = Arc::new(|| serde_json::json!({"messages_in": 7}));
    let mut service = WorkerService::start(&ctx, "test", "a test worker", Some(stats))
        .await
        .unwrap();
    service
        .endpoint(
            "echo",
            "say",
            |info: RequestInfo, request: Echo| async move {
                if request.text.is_empty() {
                    return Err(ErrorReply::new(
                        ErrorCode::BadRequest,
                        "field `text` is empty",
                    ));
                }
                Ok(serde_json::json!({"user": info.user, "text": request.text}))
            },
        )
        .await
        .unwrap();
    let running = tokio::spawn(service.run());
    let client = ctx.nats.clone();

    let ping = timeout(WAIT, client.request("$SRV.PING.dtaas-test", "".into()))
        .await
        .unwrap()
        .unwrap();
    let ping: serde_json::Value = serde_json::from_slice(&ping.payload).unwrap();
    assert_eq!(ping["name"], "dtaas-test");
    assert_eq!(ping["version"], env!("CARGO_PKG_VERSION"));

    let info = timeout(WAIT, client.request("$SRV.INFO.dtaas-test", "".into()))
        .await
        .unwrap()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.payload).unwrap();
    assert_eq!(info["endpoints"][0]["subject"], "dtaas.v1.*.echo.say");

    // JSON as typed at `nats req dtaas.v1.alice.echo.say '{"text":"hi"}'`.
    let subject = subject::request("alice", "echo", "say").unwrap();
    let reply = timeout(
        WAIT,
        client.request(subject.clone(), r#"{"text":"hi"}"#.into()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(&reply.payload[..], br#"{"text":"hi","user":"alice"}"#);

    // MessagePack in, MessagePack out.
    let body = Encoding::MsgPack
        .encode(&serde_json::json!({"text": "packed"}))
        .unwrap();
    let reply = timeout(WAIT, client.request(subject.clone(), body))
        .await
        .unwrap()
        .unwrap();
    let decoded: serde_json::Value = Encoding::MsgPack.decode(&reply.payload).unwrap();
    assert_eq!(decoded["text"], "packed");

    // Errors are bodies plus the service API headers, never a timeout.
    for (body, code, needle) in [
        (r#"{"text":""}"#, "400", "`text` is empty"),
        (r#"{"txt":"x"}"#, "400", "missing field `text`"),
        ("not json", "400", "invalid request body"),
    ] {
        let reply = timeout(WAIT, client.request(subject.clone(), body.into()))
            .await
            .unwrap()
            .unwrap();
        let error: ErrorReply = serde_json::from_slice(&reply.payload).unwrap();
        assert_eq!(error.error.code, ErrorCode::BadRequest);
        assert!(
            error.error.message.contains(needle),
            "{}",
            error.error.message
        );
        let headers = reply.headers.unwrap();
        assert_eq!(
            headers.get(header::SERVICE_ERROR_CODE).unwrap().as_str(),
            code
        );
    }

    let stats = timeout(WAIT, client.request("$SRV.STATS.dtaas-test", "".into()))
        .await
        .unwrap()
        .unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&stats.payload).unwrap();
    assert_eq!(stats["endpoints"][0]["num_requests"], 5);
    assert_eq!(stats["endpoints"][0]["data"]["messages_in"], 7);

    ctx.shutdown.cancel();
    timeout(WAIT, running).await.unwrap().unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn mosquitto_qos1_publish_and_subscribe() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let broker = Mosquitto::start().unwrap();
    let mut options = MqttOptions::new("foundation-sub", "127.0.0.1", broker.port);
    options.set_keep_alive(Duration::from_secs(5));
    let (subscriber, mut subscriber_loop) = AsyncClient::new(options, 16);
    subscriber
        .subscribe("dtaas/pt/+/tel/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    let received = tokio::spawn(async move {
        let mut subscribed = false;
        loop {
            match subscriber_loop.poll().await.unwrap() {
                Event::Incoming(Packet::SubAck(_)) => subscribed = true,
                Event::Incoming(Packet::Publish(p)) if subscribed => return p,
                _ => {}
            }
        }
    });
    let publisher_options = MqttOptions::new("foundation-pub", "127.0.0.1", broker.port);
    let (publisher, mut publisher_loop) = AsyncClient::new(publisher_options, 16);
    let acked = tokio::spawn(async move {
        loop {
            if let Event::Incoming(Packet::PubAck(_)) = publisher_loop.poll().await.unwrap() {
                return;
            }
        }
    });
    // Retry until the subscription is in place; QoS 1 publishes are acknowledged.
    tokio::time::sleep(Duration::from_millis(200)).await;
    publisher
        .publish(
            "dtaas/pt/inc1/tel/temperature",
            QoS::AtLeastOnce,
            false,
            r#"{"temp":21.5}"#,
        )
        .await
        .unwrap();
    timeout(WAIT, acked).await.unwrap().unwrap();
    let message = timeout(WAIT, received).await.unwrap().unwrap();
    assert_eq!(message.topic, "dtaas/pt/inc1/tel/temperature");
    assert_eq!(message.qos, QoS::AtLeastOnce);
    assert_eq!(&message.payload[..], br#"{"temp":21.5}"#);
}

#[test]
fn victoria_metrics_accepts_influx_line_protocol() {
    let vm = VictoriaMetrics::start().unwrap();
    let line = b"temperature,pt=inc1 temp=21.5 1764000000000000000\n";
    let (status, body) =
        dtaas_test_harness::http::request(vm.port, "POST", "/api/v2/write", line).unwrap();
    assert_eq!(status, 204, "{body}");
    let export = vm.export("temperature_temp").unwrap();
    assert!(
        export.contains("\"pt\":\"inc1\"") && export.contains("21.5"),
        "{export}"
    );
}

fn dtaas(args: &[&str], envs: &[(&str, &str)], dir: &tempfile::TempDir) -> Process {
    let program = std::path::Path::new(env!("CARGO_BIN_EXE_dtaas"));
    Process::spawn(
        "dtaas",
        program,
        args.iter().map(Into::into).collect(),
        envs.iter().map(|(k, v)| (k.into(), v.into())).collect(),
        dir.path().join("dtaas.log"),
    )
    .unwrap()
}

#[test]
fn help_lists_every_worker_and_up() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dtaas"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for command in [
        "bridge",
        "historian",
        "graph",
        "assets",
        "lifecycle",
        "exec",
        "up",
        "DTAAS_NATS_URL",
        "DTAAS_MQTT_URL",
        "DTAAS_DATA_DIR",
    ] {
        assert!(
            help.contains(command),
            "`dtaas --help` lacks {command}:\n{help}"
        );
    }
}

#[test]
fn unreachable_nats_is_a_clear_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "nats://127.0.0.1:{}",
        dtaas_test_harness::ports::free_port()
    );
    for worker in ["bridge", "historian", "graph"] {
        let mut process = dtaas(
            &[worker],
            &[
                ("DTAAS_NATS_URL", &url),
                ("DTAAS_NATS_CONNECT_TIMEOUT", "2s"),
                ("DTAAS_DATA_DIR", &dir.path().display().to_string()),
            ],
            &dir,
        );
        let code = process
            .wait(WAIT)
            .expect("the worker gives up instead of hanging");
        assert_eq!(code, Some(1));
        let log = process.log();
        assert!(
            log.contains(&format!("cannot reach NATS at {url}")),
            "{log}"
        );
        assert!(log.contains("DTAAS_NATS_URL"), "{log}");
    }
}

#[test]
fn bad_configuration_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dtaas.toml");
    std::fs::write(
        &config,
        "nats_url = \"nats://127.0.0.1:4222\"\nmqtt_ulr = \"mqtt://x:1\"\n",
    )
    .unwrap();
    let mut process = dtaas(&["--config", config.to_str().unwrap(), "bridge"], &[], &dir);
    assert_eq!(process.wait(WAIT).unwrap(), Some(1));
    assert!(
        process.log().contains("unknown key `mqtt_ulr`"),
        "{}",
        process.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn jetstream_delivery_survives_a_restart_of_nats() {
    let mut nats = NatsServer::start().unwrap();
    let ctx = context(&nats, "test").await;
    let subject = subject::telemetry("inc1", "temperature").unwrap();
    let body = Encoding::Json.encode(&record(1.0)).unwrap();
    timeout(WAIT, async {
        ctx.js.publish(subject.clone(), body.clone()).await?.await
    })
    .await
    .unwrap()
    .unwrap();
    nats.stop();
    nats.start_again().unwrap();
    // The client reconnects on its own; the stored message is still there.
    let info = timeout(WAIT, async {
        loop {
            match ctx.js.get_stream(names::STREAM_TELEMETRY).await {
                Ok(mut stream) => break stream.info().await.map(|i| i.state.messages),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(info, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_starting_together_all_provision() {
    // `dtaas up` and scaled-out deployments start several workers at once against a
    // fresh server; every one of them must come up.
    let nats = NatsServer::start().unwrap();
    let starts = (0..6).map(|i| {
        let config = config_for(&nats);
        tokio::spawn(async move {
            Context::connect(config, &format!("worker{i}"), CancellationToken::new()).await
        })
    });
    for start in futures::future::join_all(starts).await {
        timeout(WAIT, async { start.unwrap() })
            .await
            .unwrap()
            .expect("every worker provisions");
    }
}
