//! `Idempotency-Key`: a repeated request within a bounded window gets the first answer
//! instead of being applied again.
//!
//! Limits (documented in the README): answers are kept in memory for
//! [`Idempotency::TTL`] (10 minutes) and at most [`Idempotency::CAPACITY`] keys (the
//! oldest are forgotten first); a server restart forgets them all. Keys are scoped to
//! the document. Only successful answers are kept: a request that failed (say, a lock
//! timeout) can be retried with the same key and is then applied. A repeat that arrives
//! while the first is still running waits for it and gets its answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

/// The answer to replay.
#[derive(Debug, Clone)]
pub struct Stored {
    pub status: u16,
    pub etag: String,
    pub body: Vec<u8>,
}

type Slot = Arc<OnceCell<Stored>>;

/// The key → answer table.
#[derive(Debug, Default)]
pub struct Idempotency {
    slots: Mutex<HashMap<String, (Slot, Instant)>>,
}

impl Idempotency {
    /// How long an answer is replayed.
    pub const TTL: Duration = Duration::from_secs(600);
    /// How many keys are remembered at most.
    pub const CAPACITY: usize = 10_000;
    /// The longest key accepted.
    pub const MAX_KEY_LEN: usize = 255;

    /// The slot for `key` on document `name`: empty if new, or holding (or about to
    /// hold) the first request's answer.
    pub fn slot(&self, name: &str, key: &str) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let id = format!("{name}\u{0}{key}");
        if let Some((slot, at)) = slots.get(&id)
            && now.duration_since(*at) < Self::TTL
        {
            return slot.clone();
        }
        if slots.len() >= Self::CAPACITY {
            slots.retain(|_, (_, at)| now.duration_since(*at) < Self::TTL);
            while slots.len() >= Self::CAPACITY {
                let oldest = slots
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(k, _)| k.clone());
                match oldest {
                    Some(k) => slots.remove(&k),
                    None => break,
                };
            }
        }
        let slot = Slot::default();
        slots.insert(id, (slot.clone(), now));
        slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_same_slot_scoped_by_document() {
        let t = Idempotency::default();
        let a = t.slot("a.json", "k1");
        assert!(Arc::ptr_eq(&a, &t.slot("a.json", "k1")));
        assert!(!Arc::ptr_eq(&a, &t.slot("b.json", "k1")));
        assert!(!Arc::ptr_eq(&a, &t.slot("a.json", "k2")));
    }

    #[test]
    fn capacity_is_bounded() {
        let t = Idempotency::default();
        for i in 0..Idempotency::CAPACITY + 10 {
            t.slot("a.json", &i.to_string());
        }
        assert!(t.slots.lock().unwrap().len() <= Idempotency::CAPACITY);
    }
}
