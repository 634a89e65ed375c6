//! `Idempotency-Key`: a repeated request within a bounded window gets the first answer
//! instead of being applied again.
//!
//! Limits (documented in the README): answers are kept in memory for
//! [`Idempotency::TTL`] (10 minutes) and at most [`Idempotency::CAPACITY`] keys (the
//! oldest are forgotten first); a server restart forgets them all. Keys are scoped to
//! the document. Only successful answers are kept: a request that failed (say, a lock
//! timeout) can be retried with the same key and is then applied. A repeat that arrives
//! while the first is still running waits for it and gets its answer; a request still
//! running is never forgotten to make room. A key is bound to its request (pointer and
//! body): the same key with a different request is refused, not answered with the
//! first request's answer.

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
    /// The storage answered it from its own record of the key (nothing written then).
    pub replayed: bool,
}

type Slot = Arc<OnceCell<Stored>>;

/// A remembered key: its answer cell, when it was first seen, and a fingerprint of the
/// request that used it.
#[derive(Debug)]
struct Entry {
    slot: Slot,
    at: Instant,
    request: [u8; 32],
}

/// The same key arrived with a different request.
#[derive(Debug, PartialEq, Eq)]
pub struct KeyReused;

/// The key → answer table.
#[derive(Debug, Default)]
pub struct Idempotency {
    slots: Mutex<HashMap<String, Entry>>,
}

impl Idempotency {
    /// How long an answer is replayed.
    pub const TTL: Duration = Duration::from_secs(600);
    /// How many keys are remembered at most.
    pub const CAPACITY: usize = 10_000;
    /// The longest key accepted.
    pub const MAX_KEY_LEN: usize = 255;

    /// The slot for `key` on document `name`: empty if new, or holding (or about to
    /// hold) the first request's answer. `request` fingerprints the request (see
    /// `fingerprint`); a key first seen with another request is `KeyReused`.
    pub fn slot(&self, name: &str, key: &str, request: [u8; 32]) -> Result<Slot, KeyReused> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let id = format!("{name}\u{0}{key}");
        if let Some(e) = slots.get(&id)
            && (now.duration_since(e.at) < Self::TTL || in_flight(&e.slot))
        {
            return if e.request == request {
                Ok(e.slot.clone())
            } else {
                Err(KeyReused)
            };
        }
        if slots.len() >= Self::CAPACITY {
            slots.retain(|_, e| now.duration_since(e.at) < Self::TTL || in_flight(&e.slot));
            // Forget the oldest finished keys; a request still running keeps its key
            // (the table can then exceed its capacity by the requests in flight).
            let mut finished: Vec<(Instant, String)> = slots
                .iter()
                .filter(|(_, e)| !in_flight(&e.slot))
                .map(|(k, e)| (e.at, k.clone()))
                .collect();
            finished.sort();
            let excess = (slots.len() + 1).saturating_sub(Self::CAPACITY);
            for (_, k) in finished.into_iter().take(excess) {
                slots.remove(&k);
            }
        }
        let slot = Slot::default();
        slots.insert(
            id,
            Entry {
                slot: slot.clone(),
                at: now,
                request,
            },
        );
        Ok(slot)
    }
}

/// A request whose handler still holds the slot (the table holds one reference).
fn in_flight(slot: &Slot) -> bool {
    Arc::strong_count(slot) > 1
}

/// A fingerprint of what a request asks for, to tell a genuine repeat from a reused key:
/// SHA-256, so a store that keeps keys (PostgreSQL) compares fingerprints made by other
/// processes and other builds.
pub fn fingerprint(parts: &[&[u8]]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_same_slot_scoped_by_document() {
        let t = Idempotency::default();
        let a = t.slot("a.json", "k1", [1; 32]).unwrap();
        assert!(Arc::ptr_eq(&a, &t.slot("a.json", "k1", [1; 32]).unwrap()));
        assert!(!Arc::ptr_eq(&a, &t.slot("b.json", "k1", [1; 32]).unwrap()));
        assert!(!Arc::ptr_eq(&a, &t.slot("a.json", "k2", [1; 32]).unwrap()));
    }

    #[test]
    fn a_key_reused_for_another_request_is_refused() {
        let t = Idempotency::default();
        let _a = t
            .slot("a.json", "k1", fingerprint(&[b"/cases", b"1"]))
            .unwrap();
        assert_eq!(
            t.slot("a.json", "k1", fingerprint(&[b"/cases", b"2"]))
                .unwrap_err(),
            KeyReused
        );
    }

    #[test]
    fn capacity_is_bounded_but_never_forgets_a_request_in_flight() {
        let t = Idempotency::default();
        let running = t.slot("a.json", "running", [7; 32]).unwrap();
        for i in 0..Idempotency::CAPACITY + 10 {
            drop(t.slot("a.json", &i.to_string(), [7; 32]).unwrap());
        }
        assert!(t.slots.lock().unwrap().len() <= Idempotency::CAPACITY);
        let again = t.slot("a.json", "running", [7; 32]).unwrap();
        assert!(
            Arc::ptr_eq(&running, &again),
            "the running request kept its key"
        );
    }
}
