//! MQTT 3.1.1 through rumqttc's root (v4) API: options, acks, publishes, and events
//! translated into the neutral ones. 3.1.1 has no properties: no receive maximum, no
//! session expiry, no message expiry.

use bytes::Bytes;
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event as Event4, EventLoop, MqttOptions,
    Outgoing, Packet, Publish,
};

use super::client::{ClientError, Event, Message, PollError};
use super::{QoS, Settings, KEEP_ALIVE};

/// Persistent session (clean session off), manual acks, bounded outgoing in-flight.
pub(super) fn options(settings: &Settings) -> MqttOptions {
    let mut options = MqttOptions::new(&settings.client_id, &settings.host, settings.port);
    options
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_inflight(settings.in_flight)
        .set_max_packet_size(settings.max_packet, settings.max_packet)
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

pub(super) async fn ack(client: &AsyncClient, message: &Message) -> Result<(), ClientError> {
    // rumqttc builds the ack from the QoS and packet id only.
    let publish = Publish {
        dup: false,
        qos: message.qos,
        retain: false,
        topic: String::new(),
        pkid: message.pkid,
        payload: Bytes::new(),
    };
    client.ack(&publish).await.map_err(ClientError::from)
}

pub(super) async fn publish(
    client: &AsyncClient,
    topic: String,
    qos: QoS,
    payload: Bytes,
) -> Result<(), ClientError> {
    client
        .publish_bytes(topic, qos, false, payload)
        .await
        .map_err(ClientError::from)
}

pub(super) async fn poll(eventloop: &mut EventLoop) -> Result<Event, PollError> {
    match eventloop.poll().await {
        Ok(event) => Ok(event_of(event)),
        Err(error) => Err(PollError {
            refused_version: false,
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

fn event_of(event: Event4) -> Event {
    match event {
        Event4::Incoming(Packet::ConnAck(ack)) => Event::ConnAck {
            session_present: ack.session_present,
        },
        Event4::Incoming(Packet::Publish(p)) => Event::Publish(Message {
            topic: Bytes::from(p.topic),
            payload: p.payload,
            qos: p.qos,
            pkid: p.pkid,
        }),
        Event4::Incoming(Packet::SubAck(_)) => Event::SubAck,
        Event4::Incoming(Packet::PubAck(ack)) => Event::PubAck { pkid: ack.pkid },
        Event4::Incoming(Packet::PubComp(comp)) => Event::PubComp { pkid: comp.pkid },
        Event4::Incoming(Packet::Disconnect) => Event::Disconnected("DISCONNECT".into()),
        Event4::Outgoing(Outgoing::Publish(0)) => Event::Qos0Written,
        Event4::Outgoing(Outgoing::Publish(pkid)) => Event::PublishWritten { pkid },
        Event4::Outgoing(Outgoing::Disconnect) => Event::DisconnectSent,
        _ => Event::Other,
    }
}
