//! Acknowledging stored messages: one by one (`explicit`), or once per move of the
//! stored floor (`all`); and the progress acks that keep messages being retried from
//! being redelivered.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_nats::jetstream::stream::{RawMessageErrorKind, Stream};
use async_nats::jetstream::Message;
use bytes::Bytes;

use super::ack_floor::{AckFloor, Delivery};
use super::AckPolicy;

/// How long the floor may wait for a sequence before the stream is asked whether it
/// still holds it; a redelivery normally fills the gap well within this.
const MISSING_CHECK_AFTER: Duration = Duration::from_secs(2);
/// Most missing sequences passed in one go, so one call stays short.
const MISSING_CHECKS_PER_CALL: usize = 1000;

/// Sends the acknowledgements for stored messages under the durable's ack policy.
pub enum Acker {
    Explicit,
    All(Box<FloorAcker>),
}

impl Acker {
    /// `floor` is the consumer's ack floor (stream and delivery sequence) at start;
    /// sequences below the stream's first one count as passed from the start.
    pub fn new(
        policy: AckPolicy,
        client: async_nats::Client,
        stream: Stream,
        floor: (u64, u64),
    ) -> Self {
        match policy {
            AckPolicy::Explicit => Self::Explicit,
            AckPolicy::All => {
                let mut ack_floor = AckFloor::new(floor.0, floor.1);
                let first = stream.cached_info().state.first_sequence;
                ack_floor.skip_missing_through(first.saturating_sub(1));
                Self::All(Box::new(FloorAcker {
                    state: Mutex::new(FloorState {
                        floor: ack_floor,
                        waiting: None,
                    }),
                    client,
                    stream,
                }))
            }
        }
    }

    /// Acknowledges `messages`, which the store confirmed (or the DLQ took).
    pub async fn stored<'a>(&self, messages: impl IntoIterator<Item = &'a Message>) {
        match self {
            Self::Explicit => {
                for message in messages {
                    if let Err(error) = message.ack().await {
                        tracing::debug!(%error, "Cannot acknowledge a message; JetStream will redeliver it.");
                    }
                }
            }
            Self::All(acker) => acker.stored(messages).await,
        }
    }

    /// Lets the stored floor pass sequences the stream no longer holds (`all` only).
    pub async fn pass_missing(&self) {
        if let Self::All(acker) = self {
            acker.pass_missing().await;
        }
    }
}

/// `AckPolicy::All`: one acknowledgement covers everything up to the stored floor.
pub struct FloorAcker {
    state: Mutex<FloorState>,
    client: async_nats::Client,
    stream: Stream,
}

struct FloorState {
    floor: AckFloor,
    /// The sequence the floor waits for, and since when.
    waiting: Option<(u64, Instant)>,
}

impl FloorAcker {
    async fn stored<'a>(&self, messages: impl IntoIterator<Item = &'a Message>) {
        let ack = {
            let mut state = self.lock();
            for message in messages {
                if let Some(delivery) = delivery(message) {
                    state.floor.stored(delivery);
                }
            }
            state.floor.take_ack()
        };
        self.send(ack).await;
        self.pass_missing().await;
    }

    /// When the floor has waited too long for a sequence, asks the stream whether it
    /// still holds it; a deleted or expired message is never delivered, so the floor
    /// passes it. Deletions come in runs (a purge, messages aged out), so after a
    /// sequence was passed the next one the floor waits for is asked about at once.
    async fn pass_missing(&self) {
        let mut passed = false;
        for _ in 0..MISSING_CHECKS_PER_CALL {
            let due = {
                let mut state = self.lock();
                match state.floor.waiting_for() {
                    None => {
                        state.waiting = None;
                        None
                    }
                    Some(seq) if passed => Some(seq),
                    Some(seq) => match state.waiting {
                        Some((waited, since)) if waited == seq => {
                            (since.elapsed() >= MISSING_CHECK_AFTER).then_some(seq)
                        }
                        _ => {
                            state.waiting = Some((seq, Instant::now()));
                            None
                        }
                    },
                }
            };
            let Some(seq) = due else { break };
            match self.stream.get_raw_message(seq).await {
                Err(error) if error.kind() == RawMessageErrorKind::NoMessageFound => {
                    // Everything below the stream's first sequence is gone (a purge,
                    // messages aged out): passed in one step, not one look-up each.
                    // Asked once per call: after that step the floor is at or above
                    // it, and the rest of a run are interior deletions.
                    let first = match passed {
                        true => None,
                        false => self.stream.get_info().await.ok(),
                    };
                    let through = first.map_or(seq, |info| {
                        seq.max(info.state.first_sequence.saturating_sub(1))
                    });
                    tracing::debug!(
                        from = seq,
                        through,
                        "Passing sequences the stream no longer holds."
                    );
                    self.lock().floor.skip_missing_through(through);
                    passed = true;
                }
                Ok(_) => {
                    // Still in the stream: JetStream redelivers it; look again later.
                    self.lock().waiting = Some((seq, Instant::now()));
                    break;
                }
                Err(error) => {
                    tracing::debug!(seq, %error, "Cannot look up a sequence the ack floor waits for.");
                    break;
                }
            }
        }
        if passed {
            let ack = self.lock().floor.take_ack();
            self.send(ack).await;
        }
    }

    async fn send(&self, ack: Option<async_nats::Subject>) {
        if let Some(reply) = ack {
            if let Err(error) = self.client.publish(reply, Bytes::new()).await {
                tracing::debug!(%error, "Cannot acknowledge; JetStream will redeliver.");
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FloorState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Tells JetStream that `messages` are still being worked on, so `ack_wait` starts
/// again for them. A lost progress ack costs at most a redelivery.
pub async fn progress<'a>(messages: impl IntoIterator<Item = &'a Message>) {
    for message in messages {
        let _ = message
            .ack_with(async_nats::jetstream::AckKind::Progress)
            .await;
    }
}

/// The sequences and reply subject of a JetStream message.
fn delivery(message: &Message) -> Option<Delivery> {
    let info = message.info().ok()?;
    Some(Delivery {
        stream_seq: info.stream_sequence,
        delivery_seq: info.consumer_sequence,
        reply: message.reply.clone()?,
    })
}
