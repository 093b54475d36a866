//! The protocol-neutral MQTT client: an incoming message, its ack, command publishes
//! and the event loop, the same for MQTT 5 and MQTT 3.1.1.

use std::fmt;
use std::sync::{Arc, RwLock};

use bytes::Bytes;

use super::{v311, v5, QoS, Settings};

/// The MQTT version of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    V5,
    V311,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Self::V5 => "5",
            Self::V311 => "3.1.1",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An incoming publish, whichever protocol brought it.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: Bytes,
    pub payload: Bytes,
    pub qos: QoS,
    /// Packet id, for the acknowledgement.
    pub(super) pkid: u16,
}

/// A client request could not be queued (the event loop is gone), per protocol. Boxed:
/// rumqttc's errors carry the request back.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("MQTT client: {0}")]
    V5(#[source] Box<rumqttc::v5::ClientError>),
    #[error("MQTT client: {0}")]
    V311(#[source] Box<rumqttc::ClientError>),
}

impl From<rumqttc::v5::ClientError> for ClientError {
    fn from(error: rumqttc::v5::ClientError) -> Self {
        Self::V5(Box::new(error))
    }
}

impl From<rumqttc::ClientError> for ClientError {
    fn from(error: rumqttc::ClientError) -> Self {
        Self::V311(Box::new(error))
    }
}

/// The rumqttc client of one protocol.
#[derive(Clone)]
pub(super) enum Inner {
    V5(rumqttc::v5::AsyncClient),
    V311(rumqttc::AsyncClient),
}

/// Cloneable handle used by the uplink, the downlink and the poller. The poller
/// replaces the client behind it when `auto` falls back to MQTT 3.1.1, which happens
/// only before the first connection succeeded, so nothing was sent through the old one.
#[derive(Clone)]
pub struct Client {
    inner: Arc<RwLock<Inner>>,
}

impl Client {
    pub(super) fn new(inner: Inner) -> Self {
        Self {
            inner: Arc::new(RwLock::new(inner)),
        }
    }

    pub(super) fn replace(&self, inner: Inner) {
        *self.inner.write().unwrap_or_else(|e| e.into_inner()) = inner;
    }

    fn current(&self) -> Inner {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The protocol of the current client.
    pub fn protocol(&self) -> Protocol {
        match self.current() {
            Inner::V5(_) => Protocol::V5,
            Inner::V311(_) => Protocol::V311,
        }
    }

    /// Acknowledges a QoS≥1 message (PUBACK, or PUBREC at QoS 2); nothing at QoS 0.
    pub async fn ack(&self, message: &Message) -> Result<(), ClientError> {
        match self.current() {
            Inner::V5(c) => v5::ack(&c, message).await,
            Inner::V311(c) => v311::ack(&c, message).await,
        }
    }

    /// Publishes a command. `expiry_secs` and `content_type` travel as MQTT 5
    /// properties; MQTT 3.1.1 has neither, so there they are dropped.
    pub async fn publish(
        &self,
        topic: String,
        qos: QoS,
        payload: Bytes,
        expiry_secs: Option<u32>,
        content_type: &str,
        command_id: &str,
    ) -> Result<(), ClientError> {
        match self.current() {
            Inner::V5(c) => {
                let properties = v5::command_properties(expiry_secs, content_type, command_id);
                v5::publish(&c, topic, qos, payload, properties).await
            }
            Inner::V311(c) => v311::publish(&c, topic, qos, payload).await,
        }
    }

    /// Queues a SUBSCRIBE without waiting (for the poller, which must never block).
    pub fn try_subscribe(&self, filter: &str, qos: QoS) -> Result<(), ClientError> {
        match self.current() {
            Inner::V5(c) => v5::try_subscribe(&c, filter, qos),
            Inner::V311(c) => Ok(c.try_subscribe(filter, qos)?),
        }
    }

    /// Queues a DISCONNECT behind the requests already queued (acks).
    pub async fn disconnect(&self) -> Result<(), ClientError> {
        match self.current() {
            Inner::V5(c) => Ok(c.disconnect().await?),
            Inner::V311(c) => Ok(c.disconnect().await?),
        }
    }
}

/// What the poller acts on, from either protocol's event loop.
#[derive(Debug)]
pub(super) enum Event {
    ConnAck {
        session_present: bool,
    },
    Publish(Message),
    SubAck,
    /// The broker acknowledged the QoS 1 publish with this packet id.
    PubAck {
        pkid: u16,
    },
    /// The broker completed the QoS 2 publish with this packet id.
    PubComp {
        pkid: u16,
    },
    /// A QoS 0 publish was written.
    Qos0Written,
    /// A QoS≥1 publish was written (or written again, after a reconnect) with the
    /// packet id rumqttc gave it.
    PublishWritten {
        pkid: u16,
    },
    /// Our DISCONNECT was written.
    DisconnectSent,
    /// The broker sent DISCONNECT (MQTT 5 only; the reason).
    Disconnected(String),
    Other,
}

/// A failed poll: the connection is down (or could not be made).
#[derive(Debug)]
pub(super) struct PollError {
    pub message: String,
    /// The rumqttc error's `Debug` form.
    pub detail: String,
    /// The broker closed or answered the connection attempt in a way an MQTT
    /// 3.1.1-only broker answers an MQTT 5 CONNECT (see `v5::refused_version`). Only
    /// meaningful while connecting.
    pub refused_version: bool,
    /// The broker refused the login: CONNACK "bad user name or password" or "not
    /// authorized".
    pub refused_credentials: bool,
    /// The TLS handshake failed (certificate not trusted, wrong host name, no TLS).
    pub tls: bool,
}

impl fmt::Display for PollError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The rumqttc event loop of one protocol.
pub enum EventLoop {
    V5(Box<rumqttc::v5::EventLoop>),
    V311(Box<rumqttc::EventLoop>),
}

impl EventLoop {
    pub fn protocol(&self) -> Protocol {
        match self {
            Self::V5(_) => Protocol::V5,
            Self::V311(_) => Protocol::V311,
        }
    }

    /// Whether a publish waits in rumqttc's `pending` queue: one written to a
    /// connection that dropped before the broker confirmed it (or still in the request
    /// channel then), which rumqttc resends once reconnected.
    /// Only publishes whose packet id `select` accepts count.
    pub(super) fn has_pending_publish(&self, select: &dyn Fn(u16) -> bool) -> bool {
        match self {
            Self::V5(e) => e
                .pending
                .iter()
                .any(|r| matches!(r, rumqttc::v5::Request::Publish(p) if select(p.pkid))),
            Self::V311(e) => e
                .pending
                .iter()
                .any(|r| matches!(r, rumqttc::Request::Publish(p) if select(p.pkid))),
        }
    }

    /// Drops the publishes queued in `pending` whose packet id `select` accepts,
    /// keeping every other request (acks, PUBRELs, subscribes); returns how many were
    /// dropped.
    pub(super) fn drop_pending_publishes(&mut self, select: &dyn Fn(u16) -> bool) -> usize {
        let before = self.pending_len();
        match self {
            Self::V5(e) => e
                .pending
                .retain(|r| !matches!(r, rumqttc::v5::Request::Publish(p) if select(p.pkid))),
            Self::V311(e) => e
                .pending
                .retain(|r| !matches!(r, rumqttc::Request::Publish(p) if select(p.pkid))),
        }
        before - self.pending_len()
    }

    fn pending_len(&self) -> usize {
        match self {
            Self::V5(e) => e.pending.len(),
            Self::V311(e) => e.pending.len(),
        }
    }

    /// Sets the MQTT 5 message expiry interval of the publishes queued in `pending`
    /// whose packet id `select` accepts to `secs`. MQTT 3.1.1 has no message expiry:
    /// nothing to do there.
    pub(super) fn set_pending_expiry(&mut self, secs: u32, select: &dyn Fn(u16) -> bool) {
        if let Self::V5(e) = self {
            for request in e.pending.iter_mut() {
                if let rumqttc::v5::Request::Publish(publish) = request {
                    if !select(publish.pkid) {
                        continue;
                    }
                    publish
                        .properties
                        .get_or_insert_with(Default::default)
                        .message_expiry_interval = Some(secs);
                }
            }
        }
    }

    /// The next event; reconnects after an error when polled again.
    pub(super) async fn poll(&mut self) -> Result<Event, PollError> {
        match self {
            Self::V5(eventloop) => v5::poll(eventloop).await,
            Self::V311(eventloop) => v311::poll(eventloop).await,
        }
    }
}

/// A new client and event loop speaking `protocol`.
pub(super) fn connect(settings: &Settings, protocol: Protocol) -> (Inner, EventLoop) {
    match protocol {
        Protocol::V5 => {
            let (c, e) =
                rumqttc::v5::AsyncClient::new(v5::options(settings), settings.request_capacity());
            (Inner::V5(c), EventLoop::V5(Box::new(e)))
        }
        Protocol::V311 => {
            let (c, e) =
                rumqttc::AsyncClient::new(v311::options(settings), settings.request_capacity());
            (Inner::V311(c), EventLoop::V311(Box::new(e)))
        }
    }
}
