//! Commands through the bridge: a device receives them and acknowledges them; a
//! command whose TTL passes while the broker is down expires and is never delivered,
//! and so does one whose TTL passes while its publish waits, unconfirmed, for a
//! reconnect (the bridge reaches the broker through a proxy that stalls and cuts).

mod bridge_support;

use std::time::Duration;

use futures::StreamExt;

use bridge_support::*;
use dtaas_schemas::command::CommandStatus;
use dtaas_schemas::names::header;
use dtaas_schemas::subject;
use rumqttc::QoS;

#[tokio::test(flavor = "multi_thread")]
async fn command_reaches_the_device_and_its_ack_is_recorded() {
    let setup = Setup::start(&[]).await;
    let Device {
        client: device_client,
        mut commands,
        ..
    } = device(setup.broker.port(), "dev1").await;

    // What a core NATS subscriber (`nats sub 'dtaas.v1.evt.cmd.>'`) sees: each status once.
    let mut live = setup
        .client
        .subscribe(subject::event_kind_all("cmd").unwrap())
        .await
        .unwrap();
    let id = send(&setup, "dev1", "heater", 60_000).await;
    let (topic, payload) = within(STEP, "command at the device", commands.recv())
        .await
        .unwrap();
    assert_eq!(topic, "dtaas/pt/dev1/cmd/heater");
    assert_eq!(payload.as_ref(), br#"{"on":true}"#);
    let sent = wait_for_status(&setup, &id, CommandStatus::Sent).await;
    assert_eq!(sent, Some(CommandStatus::Sent));

    let ack = serde_json::json!({ "id": id }).to_string();
    device_client
        .publish("dtaas/pt/dev1/cmd/heater/ack", QoS::AtLeastOnce, false, ack)
        .await
        .unwrap();
    let acked = wait_for_status(&setup, &id, CommandStatus::Acknowledged).await;
    assert_eq!(acked, Some(CommandStatus::Acknowledged));
    assert_eq!(
        ledger_statuses(&setup, &id).await,
        ["accepted", "sent", "acknowledged"]
    );
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("acknowledged") {
        let event = within(STEP, "live ledger events", live.next())
            .await
            .unwrap();
        if event.subject.contains(id.as_str()) {
            seen.push(event.subject.rsplit('.').next().unwrap().to_owned());
        }
    }
    assert_eq!(seen, ["accepted", "sent", "acknowledged"]);

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
async fn a_dts_commands_are_limited_to_its_c_pt() {
    let setup = Setup::start(&[]).await;
    // Registry entries as the lifecycle worker writes them (the bucket is provisioned).
    let kv = within(
        STEP,
        "registry",
        setup.js.get_key_value(dtaas_schemas::names::KV_DTS),
    )
    .await
    .unwrap();
    for (id, owner) in [("ctl-1", "alice"), ("bobs", "bob")] {
        let state = serde_json::json!({"id": id, "owner": owner, "state": "executing",
            "config_version": 1, "updated_at": 0,
            "config": {"id": id, "pt": [{"id": "dev1", "signals": [], "commands": ["heater"]}]}});
        within(STEP, "put", kv.put(id, state.to_string().into()))
            .await
            .unwrap();
    }
    let send = |dt: &str, pt: &str, command: &str| serde_json::json!({"pt": pt, "command": command, "payload": {}, "dt": dt});
    let reply = request(&setup, "send", send("ctl-1", "dev1", "heater")).await;
    let body: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert!(
        body["id"].is_string(),
        "an allowed command is accepted: {body}"
    );
    for (body, code, words) in [
        (send("ctl-1", "dev1", "fan"), "forbidden", "[\"heater\"]"),
        (
            send("ctl-1", "dev2", "heater"),
            "forbidden",
            "not in its C_pt",
        ),
        (send("bobs", "dev1", "heater"), "not_found", "bobs"),
        (send("nope", "dev1", "heater"), "not_found", "nope"),
    ] {
        let reply = request(&setup, "send", body.clone()).await;
        let answer: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
        assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(words), "{body}: {message}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn command_expiring_while_the_broker_is_down_is_never_delivered() {
    let mut setup = Setup::start(&[]).await;
    let mut dev = device(setup.broker.port(), "dev2").await;

    setup.broker.mosquitto_mut().stop();
    let down_since = std::time::Instant::now();
    poll_until(
        Duration::from_secs(30),
        || setup.stats(),
        |s| s["mqtt_connected"] == false,
    )
    .await;
    let id = send(&setup, "dev2", "valve", 2_000).await;
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(down_since.elapsed())).await;
    setup
        .broker
        .mosquitto_mut()
        .start_again()
        .expect("mosquitto restarts");

    let expired = wait_for_status(&setup, &id, CommandStatus::Expired).await;
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
    let sent = wait_for_status(&setup, &marker, CommandStatus::Sent).await;
    assert_eq!(sent, Some(CommandStatus::Sent));
    let stats = setup.stats().await;
    assert_eq!(stats["commands_expired"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn command_expiring_before_the_broker_confirmed_it_is_not_resent() {
    expiring_before_confirmed_is_not_resent(&[], "5", "dev3").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn command_expiring_before_the_broker_confirmed_it_is_not_resent_on_311() {
    let extra = [("DTAAS_MQTT_PROTOCOL", "3.1.1")];
    expiring_before_confirmed_is_not_resent(&extra, "3.1.1", "dev4").await;
}

/// The bridge reaches mosquitto through a proxy that stalls, so a 2 s TTL command is
/// written but not confirmed, and 3 s later cuts the connection: after the reconnect
/// (mosquitto kept the session, so rumqttc would resend it) the command is `expired`
/// and never reaches the device; a later one does.
async fn expiring_before_confirmed_is_not_resent(extra: &[(&str, &str)], protocol: &str, pt: &str) {
    let setup = Setup::start_through_proxy(extra).await;
    assert_eq!(setup.stats().await["mqtt_protocol"], protocol);
    let proxy = setup.proxy.as_ref().expect("proxy");
    // The device talks to mosquitto directly; only the bridge's link stalls.
    let mut dev = device(setup.broker.port(), pt).await;

    // The link stalls: the bridge writes the publish, the broker never sees it.
    proxy.pause();
    let id = send(&setup, pt, "valve", 2_000).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        status(&setup, &id).await,
        Some(CommandStatus::Accepted),
        "published, not yet confirmed"
    );
    // Then it drops; the bridge reconnects and mosquitto still has its session, so
    // rumqttc would resend the unconfirmed publish, now past its TTL.
    proxy.cut();
    proxy.resume();

    let expired = poll_until(
        Duration::from_secs(30),
        || status_event(&setup, &id),
        |e| e.as_ref().map(|e| e.status) == Some(CommandStatus::Expired),
    )
    .await;
    let Some(expired) = expired
        .clone()
        .filter(|e| e.status == CommandStatus::Expired)
    else {
        panic!(
            "not expired: {expired:?}; bridge log:\n{}",
            setup.bridge.log_tail()
        );
    };
    let reason = expired.reason.unwrap_or_default();
    assert!(reason.contains("not resent"), "reason: {reason}");
    setup.wait_ready().await;
    let nothing = tokio::time::timeout(Duration::from_secs(5), dev.commands.recv()).await;
    assert!(
        nothing.is_err(),
        "the expired command reached the device: {nothing:?}"
    );

    // The new connection works: a command with a long TTL goes through.
    let marker = send(&setup, pt, "marker", 60_000).await;
    let Ok(Some((topic, _))) = tokio::time::timeout(STEP, dev.commands.recv()).await else {
        panic!(
            "marker not at the device; status {:?}; bridge log:\n{}",
            status(&setup, &marker).await,
            setup.bridge.log_tail()
        );
    };
    assert_eq!(
        topic,
        format!("dtaas/pt/{pt}/cmd/marker"),
        "only the marker arrives"
    );
    let sent = wait_for_status(&setup, &marker, CommandStatus::Sent).await;
    assert_eq!(
        sent,
        Some(CommandStatus::Sent),
        "bridge log:\n{}",
        setup.bridge.log_tail()
    );
    let stats = setup.stats().await;
    assert_eq!(stats["commands_expired"], 1);
    assert_eq!(stats["commands_sent"], 1);
    assert_eq!(ledger_statuses(&setup, &id).await, ["accepted", "expired"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn command_resent_after_a_reconnect_carries_its_remaining_ttl() {
    let setup = Setup::start_through_proxy(&[]).await;
    assert_eq!(setup.stats().await["mqtt_protocol"], "5");
    let proxy = setup.proxy.as_ref().expect("proxy");
    let mut commands = device_v5(setup.broker.port(), "dev5").await;

    proxy.pause();
    let id = send(&setup, "dev5", "valve", 10_000).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(status(&setup, &id).await, Some(CommandStatus::Accepted));
    proxy.cut();
    proxy.resume();

    // Resent after the reconnect with what is left of the TTL (under 7 s, rounded
    // up), not the 10 s of the first attempt.
    let Ok(Some((topic, expiry))) = tokio::time::timeout(STEP, commands.recv()).await else {
        panic!(
            "command not at the device; status {:?}; bridge log:\n{}",
            status(&setup, &id).await,
            setup.bridge.log_tail()
        );
    };
    assert_eq!(topic, "dtaas/pt/dev5/cmd/valve");
    let expiry = expiry.expect("a message expiry interval");
    assert!((1..=7).contains(&expiry), "expiry interval {expiry} s");
    let sent = wait_for_status(&setup, &id, CommandStatus::Sent).await;
    assert_eq!(sent, Some(CommandStatus::Sent));
}

/// An MQTT 5 device: subscribes to its commands and forwards each with its message
/// expiry interval.
async fn device_v5(port: u16, pt: &str) -> tokio::sync::mpsc::Receiver<(String, Option<u32>)> {
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::mqttbytes::QoS as QoS5;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let options = MqttOptions::new(format!("device5-{pt}"), "127.0.0.1", port);
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    let (tx, rx) = tokio::sync::mpsc::channel(100);
    let (subscribed_tx, mut subscribed) = tokio::sync::watch::channel(false);
    let filter = format!("dtaas/pt/{pt}/cmd/+");
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let topic = String::from_utf8_lossy(&p.topic).into_owned();
                    let expiry = p.properties.and_then(|p| p.message_expiry_interval);
                    if tx.send((topic, expiry)).await.is_err() {
                        return;
                    }
                }
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.try_subscribe(filter.clone(), QoS5::AtLeastOnce);
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = subscribed_tx.send(true);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    within(
        STEP,
        "MQTT 5 device subscribed",
        subscribed.wait_for(|s| *s),
    )
    .await
    .unwrap();
    rx
}
