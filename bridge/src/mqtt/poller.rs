//! The task that polls the MQTT event loop: connects (choosing the protocol when
//! `auto`), subscribes, hands publishes to the uplink and wakes waiting commands;
//! around a reconnect it drops or updates the resend of a command whose broker
//! acknowledgement the dropped connection took with it (`BrokerAcks::before_resend`).

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use dtaas_runtime::backoff::Backoff;
use dtaas_schemas::time::now_ns;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;

use super::client::{self, Event};
use super::{BrokerAcks, Client, EventLoop, Message, Protocol, QoS, Settings};
use crate::config::MqttProtocol;
use crate::stats::Stats;

/// Everything the polling task works with besides its event loop.
pub struct Poller {
    pub settings: Settings,
    /// The client handle; on a protocol switch a new client is put behind it.
    pub client: Client,
    /// Topic filters, subscribed again on every connection.
    pub filters: Vec<(String, QoS)>,
    /// Where incoming publishes go (the uplink); bounded.
    pub incoming: mpsc::Sender<Message>,
    pub stats: Arc<Stats>,
    /// The command waiting for the broker's acknowledgement.
    pub acks: Arc<BrokerAcks>,
}

/// Polls the event loop until `stop` is cancelled or a clean disconnect was sent,
/// reconnecting with capped backoff.
///
/// With `auto`, each connection attempt until the first success starts with MQTT 5;
/// when the broker refuses it the way a 3.1.1-only broker does (see
/// `v5::refused_version`), the next attempt, right away, is MQTT 3.1.1, through a new
/// client behind `client`. The first protocol that connects is kept for the life of
/// the process. A network failure (broker down) retries MQTT 5 after the backoff.
pub async fn poll(poller: Poller, mut eventloop: EventLoop, stop: CancellationToken) {
    let Poller {
        settings,
        client,
        filters,
        incoming,
        stats,
        acks,
    } = poller;
    let mut backoff = Backoff::new();
    // The protocol is settled unless `auto` has not connected yet.
    let mut settled = settings.protocol != MqttProtocol::Auto;
    // True from a CONNACK to the next error: errors while false are connect failures.
    let mut connected = false;
    // Publishes the channel had no room for. The poller must never wait for the
    // uplink (which may itself wait for this poller to send its acks), so it parks
    // them here and hands them on whenever the loop comes round; every ack the
    // uplink sends comes back as an event, so the loop does come round.
    let mut overflow: VecDeque<Message> = VecDeque::new();
    loop {
        while let Some(message) = overflow.pop_front() {
            match incoming.try_send(message) {
                Ok(()) => {}
                Err(TrySendError::Full(message)) => {
                    overflow.push_front(message);
                    break;
                }
                Err(TrySendError::Closed(message)) => {
                    // The uplink stopped (shutdown): the message stays unacknowledged
                    // and the broker delivers it again to the next session.
                    if message.qos != QoS::AtMostOnce {
                        stats.in_flight.fetch_sub(1, Relaxed);
                    }
                }
            }
        }
        if !connected {
            // The next poll connects; once connected rumqttc resends what it queued.
            acks.before_resend(&mut eventloop, now_ns());
        }
        let event = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::ConnAck { session_present }) => {
                backoff.reset();
                connected = true;
                if !session_present {
                    // rumqttc dropped what it kept: nothing of before is resent.
                    acks.session_lost();
                }
                // rumqttc hands out the CONNACK before it sends anything it queued
                // (and has cleared its queue if the broker has no session for us):
                // the last moment to drop or update a command's resend.
                acks.before_resend(&mut eventloop, now_ns());
                settled = true;
                let protocol = eventloop.protocol();
                stats.set_protocol(Some(protocol));
                stats.mqtt_connected.send_replace(true);
                tracing::info!(
                    protocol = protocol.name(),
                    session_present,
                    "Connected to the MQTT broker."
                );
                for (filter, qos) in &filters {
                    if let Err(error) = client.try_subscribe(filter, *qos) {
                        tracing::warn!(%filter, %error, "Cannot subscribe.");
                    }
                }
            }
            Ok(Event::Publish(message)) => {
                stats.mqtt_in.fetch_add(1, Relaxed);
                if message.qos != QoS::AtMostOnce {
                    stats.in_flight.fetch_add(1, Relaxed);
                }
                overflow.push_back(message);
            }
            Ok(Event::SubAck) => stats.mqtt_subscribed.store(true, Relaxed),
            Ok(Event::PubAck { pkid }) => acks.acked(QoS::AtLeastOnce, pkid),
            Ok(Event::PubComp { pkid }) => acks.acked(QoS::ExactlyOnce, pkid),
            Ok(Event::Qos0Written) => acks.written(0),
            Ok(Event::PublishWritten { pkid }) => acks.written(pkid),
            Ok(Event::DisconnectSent) => break,
            Ok(Event::Disconnected(reason)) => {
                stats.mqtt_connected.send_replace(false);
                tracing::warn!(%reason, "The MQTT broker disconnected us.");
            }
            Ok(Event::Other) => {}
            Err(error) => {
                let connecting = !connected;
                connected = false;
                stats.mqtt_connected.send_replace(false);
                stats.mqtt_subscribed.store(false, Relaxed);
                if !settled && connecting {
                    match eventloop.protocol() {
                        Protocol::V5 if error.refused_version => {
                            tracing::info!(
                                %error,
                                detail = error.detail,
                                "The MQTT broker refused MQTT 5; trying MQTT 3.1.1."
                            );
                            eventloop = switch(&settings, &client, Protocol::V311);
                            continue;
                        }
                        Protocol::V311 => {
                            // 3.1.1 failed too: the next round starts with MQTT 5 again.
                            tracing::warn!(%error, "MQTT 3.1.1 connection failed as well.");
                            eventloop = switch(&settings, &client, Protocol::V5);
                        }
                        Protocol::V5 => {}
                    }
                }
                let delay = backoff.next_delay();
                if error.refused_credentials {
                    // Never the password: only the user name and the broker's answer.
                    match &settings.username {
                        Some(user) => tracing::error!(
                            %error,
                            retry_in = ?delay,
                            "The MQTT broker refused the credentials for user {user:?} \
                             (mqtt_username / mqtt_password); retrying."
                        ),
                        None => tracing::error!(
                            %error,
                            retry_in = ?delay,
                            "The MQTT broker refused the connection without credentials; \
                             set mqtt_username / mqtt_password. Retrying."
                        ),
                    }
                } else if error.tls {
                    tracing::error!(
                        %error,
                        retry_in = ?delay,
                        "TLS with the MQTT broker failed (is its certificate signed by a CA \
                         of mqtt_ca_file, for this host name?); retrying."
                    );
                } else {
                    tracing::warn!(%error, retry_in = ?delay, "MQTT connection failed; reconnecting.");
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    stats.mqtt_connected.send_replace(false);
}

/// Replaces the client behind `client` with a new one speaking `protocol`; returns
/// its event loop.
fn switch(settings: &Settings, client: &Client, protocol: Protocol) -> EventLoop {
    let (inner, eventloop) = client::connect(settings, protocol);
    client.replace(inner);
    eventloop
}
