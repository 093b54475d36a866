//! Commands through the bridge: a device receives them and acknowledges them; a
//! command whose TTL passes while the broker is down expires and is never delivered.

mod bridge_support;

use std::time::Duration;

use bridge_support::*;
use bytes::Bytes;
use dtaas_schemas::command::{CommandStatus, CommandStatusEvent};
use dtaas_schemas::names::{header, STREAM_EVENTS};
use dtaas_schemas::subject;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

/// A device: subscribes to its commands on every connection (a restarted broker may
/// have lost its session) and forwards what it receives; reconnects on its own.
/// `subscribed` counts the broker's SUBACKs.
struct Device {
    client: AsyncClient,
    commands: mpsc::Receiver<(String, Bytes)>,
    subscribed: tokio::sync::watch::Receiver<usize>,
}

async fn device(port: u16, pt: &str) -> Device {
    let mut options = MqttOptions::new(format!("device-{pt}"), "127.0.0.1", port);
    options.set_clean_session(false);
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    let (tx, commands) = mpsc::channel(100);
    let (subscribed_tx, mut subscribed) = tokio::sync::watch::channel(0usize);
    let filter = format!("dtaas/pt/{pt}/cmd/+");
    let subscriber = client.clone();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx.send((p.topic.clone(), p.payload)).await.is_err() {
                        return;
                    }
                }
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = subscriber.try_subscribe(filter.clone(), QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => subscribed_tx.send_modify(|n| *n += 1),
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    within(STEP, "device subscribed", subscribed.wait_for(|n| *n >= 1))
        .await
        .unwrap();
    Device {
        client,
        commands,
        subscribed,
    }
}

async fn request(setup: &Setup, verb: &str, body: serde_json::Value) -> async_nats::Message {
    let subject = subject::request("alice", "cmd", verb).unwrap();
    within(
        STEP,
        "request",
        setup
            .client
            .request(subject, serde_json::to_vec(&body).unwrap().into()),
    )
    .await
    .unwrap()
}

async fn status(setup: &Setup, id: &str) -> Option<CommandStatus> {
    let reply = request(setup, "status", serde_json::json!({ "id": id })).await;
    serde_json::from_slice::<CommandStatusEvent>(&reply.payload)
        .ok()
        .map(|e| e.status)
}

async fn send(setup: &Setup, pt: &str, command: &str, ttl_ms: u64) -> String {
    let body = serde_json::json!({"pt": pt, "command": command, "payload": {"on": true}, "ttl_ms": ttl_ms});
    let reply = request(setup, "send", body).await;
    let reply: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    reply["id"]
        .as_str()
        .expect("reply carries the id")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn command_reaches_the_device_and_its_ack_is_recorded() {
    let setup = Setup::start(&[]).await;
    let Device {
        client: device_client,
        mut commands,
        ..
    } = device(setup.mosquitto.port, "dev1").await;

    let id = send(&setup, "dev1", "heater", 60_000).await;
    let (topic, payload) = within(STEP, "command at the device", commands.recv())
        .await
        .unwrap();
    assert_eq!(topic, "dtaas/pt/dev1/cmd/heater");
    assert_eq!(payload.as_ref(), br#"{"on":true}"#);
    let sent = poll_until(
        Duration::from_secs(30),
        || status(&setup, &id),
        |s| *s == Some(CommandStatus::Sent),
    )
    .await;
    assert_eq!(sent, Some(CommandStatus::Sent));

    let ack = serde_json::json!({ "id": id }).to_string();
    device_client
        .publish("dtaas/pt/dev1/cmd/heater/ack", QoS::AtLeastOnce, false, ack)
        .await
        .unwrap();
    let acked = poll_until(
        Duration::from_secs(30),
        || status(&setup, &id),
        |s| *s == Some(CommandStatus::Acknowledged),
    )
    .await;
    assert_eq!(acked, Some(CommandStatus::Acknowledged));
    let events = read_all(
        &setup.js,
        STREAM_EVENTS,
        &format!("dtaas.v1.evt.cmd.{id}.*"),
    )
    .await;
    let statuses: Vec<&str> = events
        .iter()
        .map(|m| m.subject.rsplit('.').next().unwrap())
        .collect();
    assert_eq!(statuses, ["accepted", "sent", "acknowledged"]);

    // A plain publish by hand, without an id: the bridge fills it in and delivers it.
    within(
        STEP,
        "plain publish",
        setup.js.publish(
            subject::command("dev1", "light").unwrap(),
            r#"{"payload":"on"}"#.into(),
        ),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let (topic, payload) = within(STEP, "plain command at the device", commands.recv())
        .await
        .unwrap();
    assert_eq!(
        (topic.as_str(), payload.as_ref()),
        ("dtaas/pt/dev1/cmd/light", b"on".as_ref())
    );

    // Invalid requests get error replies naming the problem.
    let reply = request(
        &setup,
        "send",
        serde_json::json!({"pt": "dev 1", "command": "x"}),
    )
    .await;
    let headers = reply.headers.expect("error headers");
    assert!(headers
        .get(header::SERVICE_ERROR)
        .unwrap()
        .as_str()
        .contains("PT id"));
    let reply = request(
        &setup,
        "send",
        serde_json::json!({"pt": "dev1", "command": "x", "ttl_ms": 0}),
    )
    .await;
    assert!(String::from_utf8_lossy(&reply.payload).contains("ttl_ms"));
    let reply = request(&setup, "status", serde_json::json!({"id": "nope"})).await;
    assert!(String::from_utf8_lossy(&reply.payload).contains("not_found"));
}

#[tokio::test(flavor = "multi_thread")]
async fn command_expiring_while_the_broker_is_down_is_never_delivered() {
    let mut setup = Setup::start(&[]).await;
    let mut dev = device(setup.mosquitto.port, "dev2").await;

    setup.mosquitto.stop();
    let down_since = std::time::Instant::now();
    poll_until(
        Duration::from_secs(30),
        || setup.stats(),
        |s| s["mqtt_connected"] == false,
    )
    .await;
    let id = send(&setup, "dev2", "valve", 2_000).await;
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(down_since.elapsed())).await;
    setup.mosquitto.start_again().expect("mosquitto restarts");

    let expired = poll_until(
        Duration::from_secs(30),
        || status(&setup, &id),
        |s| *s == Some(CommandStatus::Expired),
    )
    .await;
    assert_eq!(expired, Some(CommandStatus::Expired));

    // A later command with a long TTL marks the point by which the expired one would
    // have arrived had it been sent.
    setup.wait_ready().await;
    within(
        STEP,
        "device subscribed again",
        dev.subscribed.wait_for(|n| *n >= 2),
    )
    .await
    .unwrap();
    let commands = &mut dev.commands;
    let marker = send(&setup, "dev2", "marker", 60_000).await;
    let Ok(Some((topic, _))) = tokio::time::timeout(Duration::from_secs(60), commands.recv()).await
    else {
        panic!(
            "marker not at the device; status {:?}; bridge log:\n{}",
            status(&setup, &marker).await,
            setup.bridge.log_tail()
        );
    };
    assert_eq!(topic, "dtaas/pt/dev2/cmd/marker", "only the marker arrives");
    assert!(commands.try_recv().is_err());
    let sent = poll_until(
        Duration::from_secs(30),
        || status(&setup, &marker),
        |s| *s == Some(CommandStatus::Sent),
    )
    .await;
    assert_eq!(sent, Some(CommandStatus::Sent));
    let stats = setup.stats().await;
    assert_eq!(stats["commands_expired"], 1);
}
