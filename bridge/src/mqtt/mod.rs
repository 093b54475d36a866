//! The MQTT side: a protocol-neutral client over rumqttc's MQTT 5 (`v5`) and MQTT
//! 3.1.1 (root) APIs, and the task that polls its event loop.
//!
//! The polling task never publishes, never awaits NATS and never waits for the
//! uplink: it hands incoming publishes to a bounded channel (parking the few that do
//! not fit, see `poll`) and signals broker acknowledgements of commands. With MQTT 5
//! the broker should not have more than `in_flight` unacknowledged QoS≥1 messages out
//! to us (receive maximum), which bounds what is parked; mosquitto 2.0 was seen to
//! exceed it briefly when it resumes a session. MQTT 3.1.1 has no receive maximum:
//! there the broker's own per-client in-flight limit bounds it.
//!
//! Files: `client` (the neutral client, message and events), `v5` and `v311` (the
//! two rumqttc APIs behind it), `poller` (the polling task and protocol selection).

mod client;
mod poller;
mod v311;
mod v5;

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::config::{BridgeConfig, MqttProtocol};

pub use client::{Client, ClientError, EventLoop, Message, Protocol};
pub use poller::poll;
/// The neutral QoS (rumqttc's 3.1.1 type; the MQTT 5 side converts).
pub use rumqttc::QoS;

/// Largest MQTT packet the bridge accepts or sends.
const MAX_PACKET: u32 = 1024 * 1024;
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
    /// MQTT 5 session expiry interval, seconds.
    pub session_expiry_secs: u32,
}

impl Settings {
    pub fn new(config: &dtaas_runtime::Config, bridge: &BridgeConfig) -> Self {
        Self {
            client_id: bridge.client_id().to_owned(),
            host: config.mqtt_url.host.clone(),
            port: config.mqtt_url.port,
            protocol: bridge.mqtt_protocol,
            in_flight: bridge.in_flight,
            session_expiry_secs: bridge.session_expiry_secs,
        }
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
