//! The MQTT 5 connection: options, and the task that polls the rumqttc event loop.
//!
//! The polling task never publishes, never awaits NATS and never waits for the
//! uplink: it hands incoming publishes to a bounded channel (parking the few that do
//! not fit, see `poll`) and signals broker acknowledgements of commands. The broker
//! should not have more than `in_flight` unacknowledged QoS≥1 messages out to us
//! (MQTT 5 receive maximum), which bounds what is parked; mosquitto 2.0 was seen to
//! exceed it briefly when it resumes a session.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dtaas_runtime::nats::backoff;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use rumqttc::Outgoing;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::BridgeConfig;
use crate::stats::Stats;

/// Converts 0/1/2 into a QoS.
pub fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// Wakes the one command publish waiting for the broker's acknowledgement. Commands
/// are published one at a time, so any PUBACK/PUBCOMP (or, at QoS 0, the write of
/// the packet) belongs to the waiting one.
#[derive(Default)]
pub struct BrokerAcks {
    waiting: Mutex<Option<(QoS, oneshot::Sender<()>)>>,
}

impl BrokerAcks {
    /// Registers the next publish; the receiver fires when the broker took it.
    pub fn expect(&self, qos: QoS) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        *self.waiting.lock().unwrap_or_else(|e| e.into_inner()) = Some((qos, tx));
        rx
    }

    fn fire(&self, kind: QoS) {
        let mut slot = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(&*slot, Some((qos, _)) if *qos == kind) {
            if let Some((_, tx)) = slot.take() {
                let _ = tx.send(());
            }
        }
    }
}

/// Builds the client options: persistent session, manual acks, receive maximum.
pub fn options(config: &dtaas_runtime::Config, bridge: &BridgeConfig) -> MqttOptions {
    let url = &config.mqtt_url;
    let mut options = MqttOptions::new(bridge.client_id(), url.host.clone(), url.port);
    options
        .set_clean_start(false)
        .set_session_expiry_interval(Some(bridge.session_expiry_secs))
        .set_manual_acks(true)
        .set_receive_maximum(Some(bridge.in_flight))
        .set_max_packet_size(Some(1024 * 1024))
        .set_keep_alive(Duration::from_secs(30));
    options
}

/// Creates the client; the request channel has room for every possible ack.
pub fn client(options: MqttOptions, bridge: &BridgeConfig) -> (AsyncClient, EventLoop) {
    AsyncClient::new(options, bridge.in_flight as usize + 64)
}

/// Polls the event loop until `stop` is cancelled or a clean disconnect was sent,
/// reconnecting with capped backoff.
pub async fn poll(
    mut eventloop: EventLoop,
    client: AsyncClient,
    filters: Vec<(String, QoS)>,
    incoming: mpsc::Sender<Publish>,
    stats: Arc<Stats>,
    acks: Arc<BrokerAcks>,
    stop: CancellationToken,
) {
    let mut attempt = 0;
    // Publishes the channel had no room for. The poller must never wait for the
    // uplink (which may itself wait for this poller to send its acks), so it parks
    // them here and hands them on whenever the loop comes round; every ack the
    // uplink sends comes back as an event, so the loop does come round.
    let mut overflow: VecDeque<Publish> = VecDeque::new();
    loop {
        while let Some(publish) = overflow.pop_front() {
            match incoming.try_send(publish) {
                Ok(()) => {}
                Err(TrySendError::Full(publish)) => {
                    overflow.push_front(publish);
                    break;
                }
                Err(TrySendError::Closed(publish)) => {
                    // The uplink stopped (shutdown): the message stays unacknowledged
                    // and the broker delivers it again to the next session.
                    if publish.qos != QoS::AtMostOnce {
                        stats.in_flight.fetch_sub(1, Relaxed);
                    }
                }
            }
        }
        let event = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                attempt = 0;
                stats.mqtt_connected.store(true, Relaxed);
                tracing::info!(
                    session_present = ack.session_present,
                    "Connected to the MQTT broker."
                );
                for (filter, qos) in &filters {
                    if let Err(error) = client.try_subscribe(filter.clone(), *qos) {
                        tracing::warn!(%filter, %error, "Cannot subscribe.");
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                stats.mqtt_in.fetch_add(1, Relaxed);
                if publish.qos != QoS::AtMostOnce {
                    stats.in_flight.fetch_add(1, Relaxed);
                }
                overflow.push_back(publish);
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => stats.mqtt_subscribed.store(true, Relaxed),
            Ok(Event::Incoming(Packet::PubAck(_))) => acks.fire(QoS::AtLeastOnce),
            Ok(Event::Incoming(Packet::PubComp(_))) => acks.fire(QoS::ExactlyOnce),
            Ok(Event::Outgoing(Outgoing::Publish(0))) => acks.fire(QoS::AtMostOnce),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
            Ok(Event::Incoming(Packet::Disconnect(d))) => {
                stats.mqtt_connected.store(false, Relaxed);
                tracing::warn!(reason = ?d.reason_code, "The MQTT broker disconnected us.");
            }
            Ok(_) => {}
            Err(error) => {
                stats.mqtt_connected.store(false, Relaxed);
                stats.mqtt_subscribed.store(false, Relaxed);
                let delay = backoff(attempt);
                attempt += 1;
                tracing::warn!(%error, retry_in = ?delay, "MQTT connection failed; reconnecting.");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    stats.mqtt_connected.store(false, Relaxed);
}
