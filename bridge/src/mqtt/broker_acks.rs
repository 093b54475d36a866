//! The command publish waiting for the broker's acknowledgement, matched by packet id,
//! and its TTL across reconnects.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::oneshot;

use super::{EventLoop, QoS};

/// What became of the command publish waiting in `BrokerAcks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerAck {
    /// The broker took it (PUBACK at QoS 1, PUBCOMP at 2, written at 0).
    Taken,
    /// The connection dropped before the broker confirmed it, and its TTL passed
    /// before the reconnect: the resend rumqttc had queued was dropped, unsent.
    ExpiredUnsent,
}

/// The command publish waiting for the broker.
struct Waiting {
    qos: QoS,
    /// The command's deadline (ns since the epoch), if it has a TTL.
    expires_at: Option<i64>,
    /// The packet id rumqttc gave the publish (QoS≥1), once it was written.
    pkid: Option<u16>,
    tx: oneshot::Sender<BrokerAck>,
}

/// Most packet ids of given-up commands remembered (see `BrokerAcks`).
const MAX_STALE: usize = 1024;

/// Wakes the one command publish waiting for the broker's acknowledgement. Commands
/// are published one at a time. At QoS 0 the write of the packet completes the
/// waiting one. At QoS≥1 the first write of a publish while the command waits tells
/// its packet id (rumqttc's `Outgoing::Publish(pkid)`), and only a PUBACK (QoS 1) or
/// PUBCOMP (QoS 2) with that packet id completes it.
///
/// A command the downlink gave up on (`failed` after 30 s) may still be held by
/// rumqttc and resent later; its packet id is then remembered as stale (when the next
/// command is registered), so neither its resend nor its late acknowledgement is taken
/// for the next command's. A stale packet id is forgotten when the broker finally
/// acknowledges it, or when the broker starts a new session (`session_lost`: rumqttc
/// dropped everything it held, and may give the packet id out again).
///
/// It also keeps the command's TTL across reconnects: when the connection dropped
/// before the broker confirmed the publish, rumqttc queues it in its event loop
/// (`pending`) and resends it once reconnected. Before every connection attempt and
/// again on the CONNACK (before rumqttc sends anything queued) the poller calls
/// `before_resend`, which drops that resend when the TTL has passed, and otherwise
/// sets its MQTT 5 message expiry interval to what is left of the TTL.
#[derive(Default)]
pub struct BrokerAcks {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    waiting: Option<Waiting>,
    /// Packet ids of given-up commands rumqttc may still resend, oldest first.
    stale: VecDeque<u16>,
}

impl State {
    /// Whether a queued publish with this packet id is the waiting command's: its own
    /// packet id when known, otherwise any that is not stale.
    fn is_waiting(&self, pkid: u16) -> bool {
        match self.waiting.as_ref().and_then(|w| w.pkid) {
            Some(own) => own == pkid,
            None => !self.stale.contains(&pkid),
        }
    }
}

impl BrokerAcks {
    /// Registers the next publish; the receiver yields what became of it.
    /// `expires_at` is the command's deadline (ns since the epoch), if any. The
    /// command registered before is given up: its packet id, if it had one, becomes
    /// stale.
    pub fn expect(&self, qos: QoS, expires_at: Option<i64>) -> oneshot::Receiver<BrokerAck> {
        let (tx, rx) = oneshot::channel();
        let mut state = self.lock();
        if let Some(pkid) = state.waiting.take().and_then(|w| w.pkid) {
            if state.stale.len() >= MAX_STALE {
                state.stale.pop_front();
            }
            state.stale.push_back(pkid);
        }
        state.waiting = Some(Waiting {
            qos,
            expires_at,
            pkid: None,
            tx,
        });
        rx
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A publish was written with packet id `pkid` (0 at QoS 0).
    pub(crate) fn written(&self, pkid: u16) {
        let mut state = self.lock();
        if pkid == 0 {
            if matches!(&state.waiting, Some(w) if w.qos == QoS::AtMostOnce) {
                if let Some(waiting) = state.waiting.take() {
                    let _ = waiting.tx.send(BrokerAck::Taken);
                }
            }
            return;
        }
        if state.stale.contains(&pkid) {
            // The resend of a command given up on.
            return;
        }
        if let Some(waiting) = &mut state.waiting {
            if waiting.qos != QoS::AtMostOnce && waiting.pkid.is_none() {
                waiting.pkid = Some(pkid);
            }
        }
    }

    /// The broker acknowledged (QoS 1: PUBACK) or completed (QoS 2: PUBCOMP) the
    /// publish with packet id `pkid`.
    pub(crate) fn acked(&self, qos: QoS, pkid: u16) {
        let mut state = self.lock();
        if let Some(at) = state.stale.iter().position(|&p| p == pkid) {
            state.stale.remove(at);
            return;
        }
        if matches!(&state.waiting, Some(w) if w.qos == qos && w.pkid == Some(pkid)) {
            if let Some(waiting) = state.waiting.take() {
                let _ = waiting.tx.send(BrokerAck::Taken);
            }
        }
    }

    /// The broker started a new session (CONNACK with `session_present = false`):
    /// rumqttc dropped every publish it held, so nothing stale is resent and their
    /// packet ids may be given out again; the waiting command, if it was written, is
    /// not resent either (it times out), and a publish of it still to come is new.
    pub(crate) fn session_lost(&self) {
        let mut state = self.lock();
        state.stale.clear();
        if let Some(waiting) = &mut state.waiting {
            waiting.pkid = None;
        }
    }

    /// Called by the poller while not connected, before rumqttc can resend what it
    /// queued in `eventloop` (before each connection attempt and on the CONNACK).
    /// Only edits rumqttc's queue and fires a oneshot: never blocks, never publishes.
    ///
    /// If a command is waiting and a publish of it is queued for resending: when its
    /// TTL has passed, the queued publish is dropped and the waiter completes with
    /// `ExpiredUnsent`; otherwise the publish's MQTT 5 message expiry interval is set
    /// to the remaining TTL (whole seconds, rounded up). The bridge publishes nothing
    /// but commands, one at a time, so a queued publish is the waiting command unless
    /// its packet id is stale (a command given up on) or, once the waiting command's
    /// packet id is known, another one; those are left as they are.
    ///
    /// Nothing queued means nothing is resent: either the publish never left (it
    /// still waits in the request channel), or the broker started a new session
    /// (`session_present = false`), in which case rumqttc cleared its queue itself
    /// and the waiter times out (`failed`) as before. A queued PUBREL alone (QoS 2
    /// after the broker's PUBREC) is left as it is: the broker already has the
    /// message.
    pub fn before_resend(&self, eventloop: &mut EventLoop, now_ns: i64) {
        let mut state = self.lock();
        let Some(waiting) = &state.waiting else {
            return;
        };
        let Some(expires_at) = waiting.expires_at else {
            return;
        };
        let select = |pkid| state.is_waiting(pkid);
        if !eventloop.has_pending_publish(&select) {
            return;
        }
        if now_ns >= expires_at {
            let dropped = eventloop.drop_pending_publishes(&select);
            tracing::info!(
                dropped,
                "A command's TTL passed while the MQTT connection was down before the \
                 broker confirmed it; it is not resent."
            );
            if let Some(waiting) = state.waiting.take() {
                let _ = waiting.tx.send(BrokerAck::ExpiredUnsent);
            }
        } else {
            eventloop.set_pending_expiry(remaining_secs(expires_at, now_ns), &select);
        }
    }
}

/// The TTL left at `now_ns`, in whole seconds rounded up (at least 1), so the broker
/// never drops a command early.
pub fn remaining_secs(expires_at: i64, now_ns: i64) -> u32 {
    let left = (expires_at - now_ns).max(1) as u64;
    left.div_ceil(1_000_000_000).min(u32::MAX as u64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MqttProtocol;
    use crate::mqtt::{client, Protocol, Settings};
    use dtaas_runtime::secret::Secret;
    use rumqttc::v5::mqttbytes::v5::{Publish, PublishProperties};
    use rumqttc::v5::mqttbytes::QoS as QoS5;

    const SECOND: i64 = 1_000_000_000;

    fn v5_eventloop_with_pending_publish(expiry: u32) -> EventLoop {
        let settings = Settings {
            client_id: "test".into(),
            host: "127.0.0.1".into(),
            port: 1,
            protocol: MqttProtocol::V5,
            in_flight: 10,
            max_packet: 1 << 20,
            session_expiry_secs: 60,
            username: None,
            password: Secret::default(),
            tls: None,
        };
        let (_, mut eventloop) = client::connect(&settings, Protocol::V5);
        let EventLoop::V5(inner) = &mut eventloop else {
            unreachable!()
        };
        let mut publish = Publish::new("dtaas/pt/p/cmd/c", QoS5::AtLeastOnce, "{}", None);
        publish.pkid = 1;
        publish.properties = Some(PublishProperties {
            message_expiry_interval: Some(expiry),
            ..Default::default()
        });
        inner
            .pending
            .push_back(rumqttc::v5::Request::Publish(publish));
        inner.pending.push_back(rumqttc::v5::Request::PingReq);
        eventloop
    }

    fn pending_expiry(eventloop: &EventLoop) -> Vec<Option<u32>> {
        let EventLoop::V5(inner) = eventloop else {
            unreachable!()
        };
        inner
            .pending
            .iter()
            .filter_map(|r| match r {
                rumqttc::v5::Request::Publish(p) => Some(
                    p.properties
                        .as_ref()
                        .and_then(|p| p.message_expiry_interval),
                ),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn remaining_ttl_rounds_up_to_whole_seconds() {
        assert_eq!(remaining_secs(10 * SECOND, 0), 10);
        assert_eq!(remaining_secs(10 * SECOND, 1), 10);
        assert_eq!(remaining_secs(10 * SECOND + 1, 0), 11);
        assert_eq!(remaining_secs(0, 5 * SECOND), 1, "never 0 (no expiry)");
    }

    #[test]
    fn an_expired_resend_is_dropped_and_the_waiter_told() {
        let acks = BrokerAcks::default();
        let mut eventloop = v5_eventloop_with_pending_publish(2);
        let mut rx = acks.expect(QoS::AtLeastOnce, Some(2 * SECOND));
        acks.before_resend(&mut eventloop, 3 * SECOND);
        assert_eq!(rx.try_recv().unwrap(), BrokerAck::ExpiredUnsent);
        assert!(!eventloop.has_pending_publish(&|_| true));
        let EventLoop::V5(inner) = &eventloop else {
            unreachable!()
        };
        assert_eq!(inner.pending.len(), 1, "other requests stay");
    }

    #[test]
    fn a_live_resend_carries_the_remaining_ttl() {
        let acks = BrokerAcks::default();
        let mut eventloop = v5_eventloop_with_pending_publish(60);
        let mut rx = acks.expect(QoS::AtLeastOnce, Some(60 * SECOND));
        acks.before_resend(&mut eventloop, 45 * SECOND + 1);
        assert_eq!(pending_expiry(&eventloop), [Some(15)]);
        assert!(rx.try_recv().is_err(), "still waiting");
        acks.written(1);
        acks.acked(QoS::AtLeastOnce, 1);
        assert_eq!(rx.try_recv().unwrap(), BrokerAck::Taken);
    }

    #[test]
    fn only_the_ack_of_the_waiting_packet_id_completes_it() {
        let acks = BrokerAcks::default();
        let mut rx = acks.expect(QoS::AtLeastOnce, None);
        acks.acked(QoS::AtLeastOnce, 7);
        assert!(
            rx.try_recv().is_err(),
            "not written yet: no packet id to match"
        );
        acks.written(3);
        acks.acked(QoS::AtLeastOnce, 7);
        acks.acked(QoS::ExactlyOnce, 3);
        assert!(rx.try_recv().is_err(), "another packet id, or another QoS");
        acks.written(3);
        acks.acked(QoS::AtLeastOnce, 3);
        assert_eq!(rx.try_recv().unwrap(), BrokerAck::Taken);
    }

    #[test]
    fn a_given_up_command_is_not_taken_for_the_next() {
        let acks = BrokerAcks::default();
        let _first = acks.expect(QoS::AtLeastOnce, None);
        acks.written(1);
        // The downlink gave up on it (`failed`); the next command waits.
        let mut rx = acks.expect(QoS::AtLeastOnce, None);
        // rumqttc resends the first one after a reconnect, and then its ack arrives.
        acks.written(1);
        acks.acked(QoS::AtLeastOnce, 1);
        assert!(
            rx.try_recv().is_err(),
            "the late ack is the first command's"
        );
        acks.written(2);
        acks.acked(QoS::AtLeastOnce, 2);
        assert_eq!(rx.try_recv().unwrap(), BrokerAck::Taken);

        // Acknowledged at last, packet id 1 is free again for a new command.
        let mut rx = acks.expect(QoS::AtLeastOnce, None);
        acks.written(1);
        acks.acked(QoS::AtLeastOnce, 1);
        assert_eq!(rx.try_recv().unwrap(), BrokerAck::Taken);
    }

    #[test]
    fn a_new_session_forgets_given_up_commands() {
        let acks = BrokerAcks::default();
        let _first = acks.expect(QoS::ExactlyOnce, None);
        acks.written(5);
        let mut rx = acks.expect(QoS::ExactlyOnce, None);
        acks.written(6);
        // The broker has no session: rumqttc dropped both; 5 may be given out again.
        acks.session_lost();
        acks.written(5);
        acks.acked(QoS::ExactlyOnce, 6);
        assert!(
            rx.try_recv().is_err(),
            "6 was dropped; the write of 5 is new"
        );
        acks.acked(QoS::ExactlyOnce, 5);
        assert_eq!(rx.try_recv().unwrap(), BrokerAck::Taken);
    }

    #[test]
    fn qos0_completes_on_the_write() {
        let acks = BrokerAcks::default();
        let mut rx = acks.expect(QoS::AtMostOnce, None);
        acks.written(4);
        assert!(rx.try_recv().is_err(), "a QoS 1 write is not ours");
        acks.written(0);
        assert_eq!(rx.try_recv().unwrap(), BrokerAck::Taken);
    }

    #[test]
    fn a_stale_resend_is_left_alone_before_a_reconnect() {
        let acks = BrokerAcks::default();
        let mut eventloop = v5_eventloop_with_pending_publish(2);
        let _first = acks.expect(QoS::AtLeastOnce, None);
        acks.written(1);
        let mut rx = acks.expect(QoS::AtLeastOnce, Some(2 * SECOND));
        acks.before_resend(&mut eventloop, 3 * SECOND);
        assert!(
            rx.try_recv().is_err(),
            "the queued publish is not the waiting one"
        );
        assert!(eventloop.has_pending_publish(&|_| true));
        assert_eq!(pending_expiry(&eventloop), [Some(2)]);
    }

    #[test]
    fn nothing_queued_or_no_ttl_changes_nothing() {
        let acks = BrokerAcks::default();
        let mut eventloop = v5_eventloop_with_pending_publish(5);
        let mut rx = acks.expect(QoS::AtLeastOnce, None);
        acks.before_resend(&mut eventloop, i64::MAX);
        assert_eq!(pending_expiry(&eventloop), [Some(5)]);
        assert!(rx.try_recv().is_err());

        let (_, mut empty) = client::connect(
            &Settings {
                client_id: "test".into(),
                host: "127.0.0.1".into(),
                port: 1,
                protocol: MqttProtocol::V311,
                in_flight: 10,
                max_packet: 1 << 20,
                session_expiry_secs: 60,
                username: None,
                password: Secret::default(),
                tls: None,
            },
            Protocol::V311,
        );
        let mut rx = acks.expect(QoS::AtLeastOnce, Some(SECOND));
        acks.before_resend(&mut empty, 2 * SECOND);
        assert!(
            rx.try_recv().is_err(),
            "no resend queued: the waiter times out"
        );
    }
}
