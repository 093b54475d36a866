//! The MQTT side: a protocol-neutral client over rumqttc's MQTT 5 (`v5`) and MQTT
//! 3.1.1 (root) APIs, and the task that polls its event loop.
//!
//! The polling task never publishes, never awaits NATS and never waits for the
//! uplink: it hands incoming publishes to a bounded channel (parking the few that do
//! not fit, see `poll`) and signals broker acknowledgements of commands. Around a
//! reconnect it may also drop or edit a command publish rumqttc queued for resending
//! (`BrokerAcks::before_resend`): that only edits rumqttc's queue and fires a
//! oneshot. With MQTT 5 the broker should not have more than `in_flight`
//! unacknowledged QoS≥1 messages out to us (receive maximum), which bounds what is
//! parked; mosquitto 2.0 was seen to exceed it briefly when it resumes a session.
//! MQTT 3.1.1 has no receive maximum: there the broker's own per-client in-flight
//! limit bounds it.
//!
//! Files: `client` (the neutral client, message and events), `v5` and `v311` (the
//! two rumqttc APIs behind it), `poller` (the polling task and protocol selection),
//! `broker_acks` (the command waiting for the broker), `tls`.

mod broker_acks;
mod client;
mod poller;
pub mod tls;
mod v311;
mod v5;

use std::sync::Arc;
use std::time::Duration;

use dtaas_runtime::secret::Secret;

use crate::config::{BridgeConfig, MqttProtocol};

pub use broker_acks::{remaining_secs, BrokerAck, BrokerAcks};
pub use client::{Client, ClientError, EventLoop, Message, Protocol};
pub use poller::{poll, Poller};
/// The neutral QoS (rumqttc's 3.1.1 type; the MQTT 5 side converts).
pub use rumqttc::QoS;
pub use tls::TlsError;
pub use v5::COMMAND_ID_PROPERTY;

/// Room in a packet beside its payload: fixed header, topic (at most 64 KiB in MQTT)
/// and properties.
const PACKET_OVERHEAD: usize = 65_536;
/// Keep-alive interval of the MQTT connection.
const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// Converts 0/1/2 into a QoS.
pub fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// What the client options of either protocol are built from.
#[derive(Debug, Clone)]
pub struct Settings {
    pub client_id: String,
    pub host: String,
    pub port: u16,
    /// The configured protocol; `auto` is resolved by the poller.
    pub protocol: MqttProtocol,
    /// Most received but unacknowledged messages (MQTT 5 receive maximum).
    pub in_flight: u16,
    /// Largest packet the bridge accepts or sends: `max_payload` and room for the
    /// topic. Announced to an MQTT 5 broker, which drops larger ones for the bridge.
    pub max_packet: usize,
    /// MQTT 5 session expiry interval, seconds.
    pub session_expiry_secs: u32,
    /// The user name the bridge logs in with, if any.
    pub username: Option<String>,
    /// Its password (empty: none).
    pub password: Secret,
    /// TLS (`mqtts://`): the rustls client configuration.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Settings {
    /// Fails when TLS is asked for and its CA file cannot be used.
    pub fn new(config: &dtaas_runtime::Config, bridge: &BridgeConfig) -> Result<Self, TlsError> {
        let tls = if config.mqtt_url.tls {
            Some(tls::client_config(bridge.mqtt_ca_file.as_deref())?)
        } else {
            if bridge.mqtt_ca_file.is_some() {
                return Err(TlsError::NotTls {
                    url: config.mqtt_url.to_string(),
                });
            }
            None
        };
        Ok(Self {
            client_id: bridge.client_id().to_owned(),
            host: config.mqtt_url.host.clone(),
            port: config.mqtt_url.port,
            protocol: bridge.mqtt_protocol,
            in_flight: bridge.in_flight,
            max_packet: bridge.max_payload + PACKET_OVERHEAD,
            session_expiry_secs: bridge.session_expiry_secs,
            username: bridge.mqtt_username.clone(),
            password: bridge.mqtt_password.clone().unwrap_or_default(),
            tls,
        })
    }

    /// The protocol the first connection attempt uses (`auto` starts with MQTT 5).
    pub fn first_protocol(&self) -> Protocol {
        match self.protocol {
            MqttProtocol::Auto | MqttProtocol::V5 => Protocol::V5,
            MqttProtocol::V311 => Protocol::V311,
        }
    }

    /// Room in the client's request channel: every possible ack, and then some.
    fn request_capacity(&self) -> usize {
        self.in_flight as usize + 64
    }
}

/// Creates the client and its event loop for the first connection attempt.
pub fn client(settings: &Settings) -> (Client, EventLoop) {
    let (inner, eventloop) = client::connect(settings, settings.first_protocol());
    (Client::new(inner), eventloop)
}
