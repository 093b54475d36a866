//! The stored floor of the stream: how far one `AckPolicy::All` acknowledgement may go.
//!
//! With `AckPolicy::All` an acknowledgement of stream sequence `s` acknowledges every
//! message up to `s`, so it may only be sent once every message up to `s` is stored.
//! Messages usually arrive in sequence order, and then the floor simply follows them;
//! a redelivery (after a restart, or after `ack_wait` ran out) can arrive after later
//! messages, and until it is stored the floor waits below it. Sequences the stream no
//! longer holds (deleted or expired) are passed with [`AckFloor::skip_missing_through`]
//! once the stream confirmed they are gone.

use std::collections::BTreeMap;

use async_nats::Subject;

/// A stored message's acknowledgement: its stream and delivery sequences and the
/// reply subject that acknowledges it.
#[derive(Debug)]
pub struct Delivery {
    pub stream_seq: u64,
    pub delivery_seq: u64,
    pub reply: Subject,
}

/// Tracks the highest stream sequence up to which everything is stored.
#[derive(Debug)]
pub struct AckFloor {
    /// Every stream sequence up to here is stored, acknowledged earlier, or missing.
    floor: u64,
    /// Stored messages above the floor, by stream sequence.
    above: BTreeMap<u64, Delivery>,
    /// The best acknowledgement to send next: the highest stream sequence at or below
    /// the floor whose delivery sequence JetStream will still accept.
    next_ack: Option<Delivery>,
    /// Stream and delivery sequence of the last acknowledgement. JetStream ignores an
    /// `AckPolicy::All` acknowledgement whose delivery sequence is not above the last
    /// one, which happens when a redelivery (a new, higher delivery sequence) was
    /// acknowledged before a message first delivered earlier.
    acked: (u64, u64),
}

impl AckFloor {
    /// Starts at the consumer's ack floor (stream and delivery sequence).
    pub fn new(stream_seq: u64, delivery_seq: u64) -> Self {
        Self {
            floor: stream_seq,
            above: BTreeMap::new(),
            next_ack: None,
            acked: (stream_seq, delivery_seq),
        }
    }

    /// Records that a message is stored.
    pub fn stored(&mut self, delivery: Delivery) {
        let seq = delivery.stream_seq;
        if seq == self.floor + 1 {
            self.floor = seq;
            self.offer(delivery);
            self.advance();
        } else if seq > self.floor {
            self.above.insert(seq, delivery);
        } else {
            // At or below the floor: covered already, unless an earlier acknowledgement
            // was ignored; then this redelivery carries it.
            self.offer(delivery);
        }
    }

    /// Passes every sequence up to `seq`: the caller made sure that the stream holds
    /// none of those not stored (they were deleted, purged or aged out). Stored ones
    /// among them still count for the acknowledgement.
    pub fn skip_missing_through(&mut self, seq: u64) {
        if seq <= self.floor {
            return;
        }
        let above_seq = self.above.split_off(&(seq + 1));
        for (_, delivery) in std::mem::replace(&mut self.above, above_seq) {
            self.offer(delivery);
        }
        self.floor = seq;
        self.advance();
    }

    fn advance(&mut self) {
        while let Some(delivery) = self.above.remove(&(self.floor + 1)) {
            self.floor += 1;
            self.offer(delivery);
        }
    }

    fn offer(&mut self, delivery: Delivery) {
        let (acked_seq, acked_dseq) = self.acked;
        let better = match &self.next_ack {
            Some(next) => delivery.stream_seq > next.stream_seq,
            None => true,
        };
        if better && delivery.stream_seq > acked_seq && delivery.delivery_seq > acked_dseq {
            self.next_ack = Some(delivery);
        }
    }

    /// The reply subject to acknowledge now, when the floor moved since the last one.
    pub fn take_ack(&mut self) -> Option<Subject> {
        let next = self.next_ack.take()?;
        self.acked = (next.stream_seq, next.delivery_seq);
        Some(next.reply)
    }

    /// The sequence the floor waits for while stored messages wait above it.
    pub fn waiting_for(&self) -> Option<u64> {
        (!self.above.is_empty()).then_some(self.floor + 1)
    }

    /// Everything up to here is stored (or missing).
    pub fn floor(&self) -> u64 {
        self.floor
    }
}

#[cfg(test)]
mod tests {
    use super::{AckFloor, Delivery};

    fn delivery(seq: u64, dseq: u64) -> Delivery {
        Delivery {
            stream_seq: seq,
            delivery_seq: dseq,
            reply: format!("ack.{seq}.{dseq}").into(),
        }
    }

    /// Stores (stream, delivery) pairs and returns the acknowledgement to send.
    fn store(floor: &mut AckFloor, seqs: &[(u64, u64)]) -> Option<String> {
        for &(seq, dseq) in seqs {
            floor.stored(delivery(seq, dseq));
        }
        floor.take_ack().map(|s| s.to_string())
    }

    fn ack(seq: u64, dseq: u64) -> Option<String> {
        Some(format!("ack.{seq}.{dseq}"))
    }

    #[test]
    fn in_order_batches_ack_their_last_message() {
        let mut floor = AckFloor::new(0, 0);
        assert_eq!(store(&mut floor, &[(1, 1), (2, 2), (3, 3)]), ack(3, 3));
        assert_eq!(store(&mut floor, &[(4, 4), (5, 5)]), ack(5, 5));
        assert_eq!(floor.take_ack(), None);
        assert_eq!(floor.waiting_for(), None);
    }

    #[test]
    fn a_late_redelivery_holds_the_floor_until_it_is_stored() {
        // 11 was delivered (as 11) to a process that died; 12.. arrive first.
        let mut floor = AckFloor::new(10, 10);
        assert_eq!(store(&mut floor, &[(12, 12), (13, 13), (14, 14)]), None);
        assert_eq!(floor.waiting_for(), Some(11));
        assert_eq!(store(&mut floor, &[(11, 15)]), ack(14, 14));
        assert_eq!(floor.floor(), 14);
        assert_eq!(floor.waiting_for(), None);
    }

    #[test]
    fn an_acknowledgement_jetstream_would_ignore_is_not_sent() {
        let mut floor = AckFloor::new(10, 10);
        // 13 first delivered as 13; 11 and 12 redelivered later as 20 and 21.
        assert_eq!(store(&mut floor, &[(13, 13), (11, 20)]), ack(11, 20));
        // 13 (delivery 13) would be ignored after delivery 20: 12 carries the floor.
        assert_eq!(store(&mut floor, &[(12, 21)]), ack(12, 21));
        assert_eq!(floor.floor(), 13);
        // JetStream redelivers 13, and that delivery acknowledges it.
        assert_eq!(store(&mut floor, &[(13, 22)]), ack(13, 22));
        assert_eq!(store(&mut floor, &[(13, 23)]), None);
    }

    #[test]
    fn missing_sequences_are_passed() {
        let mut floor = AckFloor::new(0, 0);
        assert_eq!(
            store(&mut floor, &[(1, 1), (2, 2), (4, 3), (5, 4)]),
            ack(2, 2)
        );
        assert_eq!(floor.waiting_for(), Some(3));
        floor.skip_missing_through(3);
        assert_eq!(floor.take_ack().map(|s| s.to_string()), ack(5, 4));
        // Skipping what is below the floor does nothing.
        floor.skip_missing_through(4);
        assert_eq!(floor.floor(), 5);
    }

    #[test]
    fn a_purged_run_is_passed_at_once_and_stored_ones_in_it_still_count() {
        // A new consumer on a stream whose first messages were purged: its ack floor
        // is 0 while deliveries start at 1001.
        let mut floor = AckFloor::new(0, 0);
        assert_eq!(store(&mut floor, &[(1001, 1), (1003, 3)]), None);
        assert_eq!(floor.waiting_for(), Some(1));
        floor.skip_missing_through(1000);
        assert_eq!(floor.take_ack().map(|s| s.to_string()), ack(1001, 1));
        assert_eq!(floor.waiting_for(), Some(1002));
        // 1002 and 1003 purged after 1003 was delivered and stored.
        floor.skip_missing_through(1003);
        assert_eq!(floor.take_ack().map(|s| s.to_string()), ack(1003, 3));
        assert_eq!(floor.waiting_for(), None);
    }

    #[test]
    fn duplicates_do_not_ack_backwards() {
        let mut floor = AckFloor::new(0, 0);
        assert_eq!(store(&mut floor, &[(1, 1), (2, 2), (3, 3)]), ack(3, 3));
        assert_eq!(store(&mut floor, &[(2, 4), (3, 5)]), None);
    }
}
