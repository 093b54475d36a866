//! `Nats-Msg-Id`s for uplink messages that have none (no `id_field`), so a publish
//! sent again after its ack timed out (a leader change) is dropped by JetStream as a
//! duplicate instead of stored twice.
//!
//! An id is this bridge run's random prefix and a counter: unique across runs and
//! bridges, and cheap on the hot path.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use async_nats::HeaderMap;
use dtaas_schemas::names::header;

/// Hands out ids `<run>.<n>`.
pub struct MsgIds {
    /// Random per bridge run, so ids never repeat after a restart.
    run: String,
    /// The next `n`.
    next: AtomicU64,
}

impl Default for MsgIds {
    fn default() -> Self {
        Self {
            run: uuid::Uuid::new_v4().simple().to_string(),
            next: AtomicU64::new(0),
        }
    }
}

impl MsgIds {
    /// Gives `headers` an id unless they carry one (from the reading's `id_field`).
    pub fn ensure(&self, headers: &mut HeaderMap) {
        if headers.get(header::MSG_ID).is_none() {
            let n = self.next.fetch_add(1, Relaxed);
            headers.insert(header::MSG_ID, format!("{}.{n}", self.run).as_str());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_added_once_and_never_repeat() {
        let ids = MsgIds::default();
        let (mut a, mut b) = (HeaderMap::new(), HeaderMap::new());
        ids.ensure(&mut a);
        ids.ensure(&mut b);
        assert_ne!(a.get(header::MSG_ID), b.get(header::MSG_ID));
        let first = a.get(header::MSG_ID).cloned();
        ids.ensure(&mut a);
        assert_eq!(a.get(header::MSG_ID), first.as_ref(), "an id is kept");
        let other = MsgIds::default();
        let mut c = HeaderMap::new();
        other.ensure(&mut c);
        assert_ne!(
            c.get(header::MSG_ID),
            first.as_ref(),
            "another run, other ids"
        );
    }
}
