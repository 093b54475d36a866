//! MQTT 5 through rumqttc's `v5` API: options, acks, publishes with properties, and
//! events translated into the neutral ones.

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet, Publish, PublishProperties};
use rumqttc::v5::mqttbytes::QoS as QoS5;
use rumqttc::v5::StateError;
use rumqttc::v5::{AsyncClient, ConnectionError, Event as Event5, EventLoop, MqttOptions};
use rumqttc::Outgoing;

use super::client::{ClientError, Event, Message, PollError};
use super::{QoS, Settings, KEEP_ALIVE};

/// Persistent session (clean start off, session expiry), manual acks, receive maximum.
pub(super) fn options(settings: &Settings) -> MqttOptions {
    let mut options = MqttOptions::new(&settings.client_id, &settings.host, settings.port);
    options
        .set_clean_start(false)
        .set_session_expiry_interval(Some(settings.session_expiry_secs))
        .set_manual_acks(true)
        .set_receive_maximum(Some(settings.in_flight))
        .set_max_packet_size(Some(settings.max_packet as u32))
        .set_keep_alive(KEEP_ALIVE);
    if let Some(username) = &settings.username {
        options.set_credentials(username, settings.password.expose());
    }
    if let Some(tls) = &settings.tls {
        options.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls.clone()),
        ));
    }
    options
}

fn to_v5(qos: QoS) -> QoS5 {
    match qos {
        QoS::AtMostOnce => QoS5::AtMostOnce,
        QoS::AtLeastOnce => QoS5::AtLeastOnce,
        QoS::ExactlyOnce => QoS5::ExactlyOnce,
    }
}

fn from_v5(qos: QoS5) -> QoS {
    match qos {
        QoS5::AtMostOnce => QoS::AtMostOnce,
        QoS5::AtLeastOnce => QoS::AtLeastOnce,
        QoS5::ExactlyOnce => QoS::ExactlyOnce,
    }
}

pub(super) async fn ack(client: &AsyncClient, message: &Message) -> Result<(), ClientError> {
    // rumqttc builds the ack from the QoS and packet id only.
    let publish = Publish {
        dup: false,
        qos: to_v5(message.qos),
        retain: false,
        topic: Bytes::new(),
        pkid: message.pkid,
        payload: Bytes::new(),
        properties: None,
    };
    client.ack(&publish).await.map_err(ClientError::from)
}

/// The header name (MQTT 5 user property) that tells a device the command's id.
pub const COMMAND_ID_PROPERTY: &str = "dtaas-command-id";

/// The properties of a command: its expiry, content type and id. The id travels as
/// correlation data and as the user property [`COMMAND_ID_PROPERTY`], so a device can
/// name it in its acknowledgement without the payload having to carry it.
pub(super) fn command_properties(
    expiry_secs: Option<u32>,
    content_type: &str,
    command_id: &str,
) -> PublishProperties {
    PublishProperties {
        message_expiry_interval: expiry_secs,
        content_type: Some(content_type.to_owned()),
        correlation_data: Some(Bytes::copy_from_slice(command_id.as_bytes())),
        user_properties: vec![(COMMAND_ID_PROPERTY.to_owned(), command_id.to_owned())],
        ..Default::default()
    }
}

pub(super) async fn publish(
    client: &AsyncClient,
    topic: String,
    qos: QoS,
    payload: Bytes,
    properties: PublishProperties,
) -> Result<(), ClientError> {
    client
        .publish_bytes_with_properties(topic, to_v5(qos), false, payload, properties)
        .await
        .map_err(ClientError::from)
}

pub(super) fn try_subscribe(
    client: &AsyncClient,
    filter: &str,
    qos: QoS,
) -> Result<(), ClientError> {
    client
        .try_subscribe(filter, to_v5(qos))
        .map_err(ClientError::from)
}

pub(super) async fn poll(eventloop: &mut EventLoop) -> Result<Event, PollError> {
    match eventloop.poll().await {
        Ok(event) => Ok(event_of(event)),
        Err(error) => Err(PollError {
            refused_version: refused_version(&error),
            tls: matches!(error, ConnectionError::Tls(_)),
            refused_credentials: matches!(
                error,
                ConnectionError::ConnectionRefused(
                    ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized
                )
            ),
            message: error.to_string(),
            detail: format!("{error:?}"),
        }),
    }
}

fn event_of(event: Event5) -> Event {
    match event {
        Event5::Incoming(Packet::ConnAck(ack)) => Event::ConnAck {
            session_present: ack.session_present,
        },
        Event5::Incoming(Packet::Publish(p)) => Event::Publish(Message {
            topic: p.topic,
            payload: p.payload,
            qos: from_v5(p.qos),
            pkid: p.pkid,
        }),
        Event5::Incoming(Packet::SubAck(_)) => Event::SubAck,
        Event5::Incoming(Packet::PubAck(ack)) => Event::PubAck { pkid: ack.pkid },
        Event5::Incoming(Packet::PubComp(comp)) => Event::PubComp { pkid: comp.pkid },
        Event5::Incoming(Packet::Disconnect(d)) => {
            Event::Disconnected(format!("{:?}", d.reason_code))
        }
        Event5::Outgoing(Outgoing::Publish(0)) => Event::Qos0Written,
        Event5::Outgoing(Outgoing::Publish(pkid)) => Event::PublishWritten { pkid },
        Event5::Outgoing(Outgoing::Disconnect) => Event::DisconnectSent,
        _ => Event::Other,
    }
}

/// Whether a failed MQTT 5 connection attempt looks like a broker that only speaks
/// MQTT 3.1.1. Such a broker answers a v5 CONNECT with a 3.1.1 CONNACK, return code 1
/// (unacceptable protocol version), and closes the connection; rumqttc `v5` cannot
/// parse that CONNACK (it lacks the properties), waits for more bytes and then reports
/// the close: `MqttState(ConnectionAborted)` ("Connection closed by peer abruptly").
/// Brokers that close without a CONNACK, or answer with an MQTT 5 refusal code for the
/// version, are covered too. A TCP failure (broker down) or a timeout is not: those
/// never reached the broker's MQTT layer. The poller only keeps 3.1.1 when a 3.1.1
/// attempt then succeeds.
pub(super) fn refused_version(error: &ConnectionError) -> bool {
    match error {
        ConnectionError::ConnectionRefused(code) => matches!(
            code,
            ConnectReturnCode::RefusedProtocolVersion
                | ConnectReturnCode::UnsupportedProtocolVersion
        ),
        ConnectionError::MqttState(state) => matches!(
            state,
            StateError::ConnectionAborted | StateError::Deserialization(_)
        ),
        ConnectionError::NotConnAck(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_mqtt_level_failures_count_as_refusing_mqtt5() {
        let aborted = ConnectionError::MqttState(StateError::ConnectionAborted);
        assert!(
            refused_version(&aborted),
            "what a 3.1.1 broker's refusal becomes"
        );
        let refused =
            ConnectionError::ConnectionRefused(ConnectReturnCode::UnsupportedProtocolVersion);
        assert!(refused_version(&refused));
        let down = ConnectionError::Io(std::io::ErrorKind::ConnectionRefused.into());
        assert!(!refused_version(&down), "broker down");
        let auth = ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized);
        assert!(!refused_version(&auth));
    }
}
