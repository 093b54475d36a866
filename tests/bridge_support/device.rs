//! A device (an MQTT 3.1.1 client of rumqttc) that receives commands, and the
//! `cmd.send` / `cmd.status` requests.

use std::time::Duration;

use bytes::Bytes;
use dtaas_schemas::command::{CommandStatus, CommandStatusEvent};
use dtaas_schemas::subject;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

use super::{within, Setup, STEP};

/// A device: subscribes to its commands on every connection (a restarted broker may
/// have lost its session) and forwards what it receives; reconnects on its own.
/// `subscribed` counts the broker's SUBACKs.
pub struct Device {
    pub client: AsyncClient,
    pub commands: mpsc::Receiver<(String, Bytes)>,
    pub subscribed: tokio::sync::watch::Receiver<usize>,
}

pub async fn device(port: u16, pt: &str) -> Device {
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

pub async fn request(setup: &Setup, verb: &str, body: serde_json::Value) -> async_nats::Message {
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

pub async fn status(setup: &Setup, id: &str) -> Option<CommandStatus> {
    status_event(setup, id).await.map(|e| e.status)
}

/// Polls `cmd.status` for up to 30 s until the command has status `wanted`; returns
/// the last status seen.
pub async fn wait_for_status(
    setup: &Setup,
    id: &str,
    wanted: CommandStatus,
) -> Option<CommandStatus> {
    super::poll_until(
        Duration::from_secs(30),
        || status(setup, id),
        |s| *s == Some(wanted),
    )
    .await
}

/// The ledger entry of a command (`cmd.status`), with its reason.
pub async fn status_event(setup: &Setup, id: &str) -> Option<CommandStatusEvent> {
    let reply = request(setup, "status", serde_json::json!({ "id": id })).await;
    serde_json::from_slice::<CommandStatusEvent>(&reply.payload).ok()
}

/// The statuses of a command's ledger events in `DTAAS_EVT`, in order.
pub async fn ledger_statuses(setup: &Setup, id: &str) -> Vec<String> {
    let filter = subject::event_id_all("cmd", id).expect("event filter");
    super::read_all(&setup.js, dtaas_schemas::names::STREAM_EVENTS, &filter)
        .await
        .iter()
        .map(|m| m.subject.rsplit('.').next().unwrap_or_default().to_owned())
        .collect()
}

pub async fn send(setup: &Setup, pt: &str, command: &str, ttl_ms: u64) -> String {
    let body = serde_json::json!({"pt": pt, "command": command, "payload": {"on": true}, "ttl_ms": ttl_ms});
    let reply = request(setup, "send", body).await;
    let reply: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    reply["id"]
        .as_str()
        .expect("reply carries the id")
        .to_owned()
}
