//! What requests may hold at once: memory for request bodies, storage operations in
//! flight, and writes per document. Waiting for any of them counts against the
//! request's time limit, so a request that cannot get its turn in time is answered 503.
//!
//! Memory for bodies is one budget (`--max-body-memory`) in two pools, so that a
//! request never waits for memory while holding memory another waiter needs:
//! a quarter for bodies being received (reserved by their declared length before the
//! first byte is read, so slow senders hold only what they declared), the rest for
//! bodies parsed into values (reserved by [`parsed_size`], an upper bound computed
//! from the bytes before parsing, and held until the storage work is done).

use std::collections::HashMap;
use std::mem::size_of;
use std::sync::{Arc, Mutex};

use serde_json::{Number, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Budget units: permits are KiB, so that any budget fits a semaphore and a request.
const UNIT: usize = 1024;

fn units(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX)
}

/// Memory reserved from the body budget; returned when dropped.
#[derive(Debug)]
pub struct Reservation(OwnedSemaphorePermit);

impl Reservation {
    /// Give back all but `bytes` of it.
    pub fn shrink_to(&mut self, bytes: usize) {
        let keep = units(bytes) as usize;
        let excess = self.0.num_permits().saturating_sub(keep);
        drop(self.0.split(excess));
    }

    /// The bytes reserved.
    pub fn bytes(&self) -> usize {
        self.0.num_permits() * UNIT
    }
}

/// Descriptors a storage operation may hold at once (directory, lock, document, temp):
/// what one slot of `--concurrency` stands for when the server fits its limits to the
/// open-file limit ([`crate::fit_to_descriptors`]).
pub(crate) const FDS_PER_OPERATION: usize = 4;
/// Descriptors kept for everything else (listener, runtime, logs, standard streams).
pub(crate) const FDS_SPARE: usize = 64;

/// A request's turn at the storage: a slot of `--concurrency`, and for a write, also
/// one of its document's `--doc-concurrency` places. Released when dropped.
#[derive(Debug)]
pub struct Turn {
    _slot: OwnedSemaphorePermit,
    _doc: Option<DocTurn>,
}

/// The limits of one server.
#[derive(Debug)]
pub struct Limits {
    receiving: Arc<Semaphore>,
    receiving_total: usize,
    parsed: Arc<Semaphore>,
    parsed_total: usize,
    slots: Arc<Semaphore>,
    slots_total: usize,
    docs: DocQueues,
    /// The most descriptors one transaction may need: the process's open-file limit
    /// less the spare (`None`: no limit known).
    max_tx_descriptors: Option<usize>,
}

impl Limits {
    /// `body_memory` bytes for request bodies (a quarter of it, but at least
    /// `max_body`, for bodies being received), `concurrency` storage operations at
    /// once, `per_doc` writes at once per document.
    pub fn new(body_memory: usize, max_body: usize, concurrency: usize, per_doc: usize) -> Limits {
        let receiving_total = (body_memory / 4).max(max_body).max(UNIT);
        let parsed_total = body_memory.saturating_sub(body_memory / 4).max(UNIT);
        Limits {
            receiving: Arc::new(Semaphore::new(units(receiving_total) as usize)),
            receiving_total,
            parsed: Arc::new(Semaphore::new(units(parsed_total) as usize)),
            parsed_total,
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
            slots_total: concurrency.max(1),
            docs: DocQueues::new(per_doc.max(1)),
            max_tx_descriptors: None,
        }
    }

    /// Refuse transactions that need more than `descriptors` open files at once: with
    /// the process's open-file limit less the spare, one that could never be served.
    pub fn with_descriptor_limit(mut self, descriptors: Option<u64>) -> Limits {
        self.max_tx_descriptors = descriptors.map(|d| {
            usize::try_from(d)
                .unwrap_or(usize::MAX)
                .saturating_sub(FDS_SPARE)
        });
        self
    }

    /// The most descriptors one transaction may need, if there is a limit.
    pub fn max_tx_descriptors(&self) -> Option<usize> {
        self.max_tx_descriptors
    }

    /// Reserve `bytes` for a body about to be received; waits while the pool is spent.
    pub async fn receive(&self, bytes: usize) -> Reservation {
        reserve(&self.receiving, bytes.min(self.receiving_total)).await
    }

    /// The most a parsed body may take.
    pub fn parsed_total(&self) -> usize {
        self.parsed_total
    }

    /// Reserve `bytes` (at most [`Limits::parsed_total`]) for a parsed body.
    pub async fn parse(&self, bytes: usize) -> Reservation {
        reserve(&self.parsed, bytes.min(self.parsed_total)).await
    }

    /// A turn for a read: a storage slot.
    pub async fn read_turn(&self) -> Turn {
        Turn {
            _slot: acquire(&self.slots, 1).await,
            _doc: None,
        }
    }

    /// A turn for a write of `name`: first a place in that document's queue (waiting
    /// there takes no storage slot, so a busy document does not hold up the others),
    /// then a storage slot.
    pub async fn write_turn(&self, name: &str) -> Turn {
        let doc = self.docs.enter(name).await;
        Turn {
            _slot: acquire(&self.slots, 1).await,
            _doc: Some(doc),
        }
    }

    /// A turn for a transaction that writes (its first document `name` queues as a
    /// write does) and holds up to `descriptors` files open at once: as many storage
    /// slots as that many descriptors stand for (at least one; at most all of them,
    /// so a transaction larger than the budget waits for the storage to itself).
    pub async fn tx_turn(&self, name: &str, descriptors: usize) -> Turn {
        let doc = self.docs.enter(name).await;
        let slots = slots_for(descriptors, self.slots_total);
        Turn {
            _slot: acquire(&self.slots, slots).await,
            _doc: Some(doc),
        }
    }
}

/// The storage slots `descriptors` open files stand for, out of `total`.
fn slots_for(descriptors: usize, total: usize) -> u32 {
    let n = descriptors
        .div_ceil(FDS_PER_OPERATION)
        .clamp(1, total.max(1));
    u32::try_from(n).unwrap_or(u32::MAX)
}

async fn reserve(pool: &Arc<Semaphore>, bytes: usize) -> Reservation {
    Reservation(acquire(pool, units(bytes)).await)
}

async fn acquire(pool: &Arc<Semaphore>, n: u32) -> OwnedSemaphorePermit {
    // The semaphores are never closed.
    pool.clone()
        .acquire_many_owned(n)
        .await
        .unwrap_or_else(|_| unreachable!("limit semaphores are never closed"))
}

/// One queue per document with writes in flight; forgotten when idle.
#[derive(Debug)]
struct DocQueues {
    per_doc: usize,
    queues: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
}

#[derive(Debug)]
struct DocTurn {
    permit: Option<OwnedSemaphorePermit>,
    queue: Arc<Semaphore>,
    name: String,
    queues: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
}

impl DocQueues {
    fn new(per_doc: usize) -> DocQueues {
        DocQueues {
            per_doc,
            queues: Arc::default(),
        }
    }

    async fn enter(&self, name: &str) -> DocTurn {
        let queue = {
            let mut q = self.queues.lock().unwrap_or_else(|e| e.into_inner());
            q.entry(name.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_doc)))
                .clone()
        };
        let mut turn = DocTurn {
            permit: None,
            queue: queue.clone(),
            name: name.to_string(),
            queues: self.queues.clone(),
        };
        // Assigned after the wait, so a request dropped while waiting still leaves
        // through `Drop` and forgets an idle queue.
        turn.permit = Some(acquire(&queue, 1).await);
        turn
    }
}

impl Drop for DocTurn {
    fn drop(&mut self) {
        drop(self.permit.take());
        let mut q = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        // Under the map's lock no one can take a new reference: the map's and ours
        // are the only ones when the document has nothing else in flight or waiting.
        if Arc::strong_count(&self.queue) == 2 {
            q.remove(&self.name);
        }
    }
}

/// An upper bound of the heap memory a [`serde_json::Value`] parsed from `json` takes at
/// its peak, in bytes, computed in one pass without allocating. Invalid JSON gets a
/// bound too (its parse fails before it takes more).
///
/// Each array and object is counted at the capacity its buffers grow to (doubling from
/// 4) plus the buffers it outgrew on the way (freed, but their pages may stay resident),
/// each object entry with its key and index slot, each string at its length plus the
/// allocator's overhead. With exact numbers (`arbitrary_precision`) each number keeps
/// its digits in a buffer grown by doubling from 8, and while one is parsed its digits
/// may be held twice (scanned, then parsed again into the number): a body of one number
/// of n digits is counted at up to 4n (a 2 MiB one measured 2 MiB on top of its body).
pub fn parsed_size(json: &[u8]) -> usize {
    // Nesting beyond serde_json's limit (128) fails the parse; count no deeper.
    const MAX_DEPTH: usize = 130;
    // What the allocator adds to an allocation, at most (header and rounding).
    const OVERHEAD: usize = 32;
    let value = size_of::<Value>();
    // indexmap's bucket: the hash, the key, the value.
    let entry = size_of::<usize>() + size_of::<String>() + value;
    // With `arbitrary_precision` a number keeps its digits on the heap.
    let number_heap = size_of::<Number>() > 16;
    // A buffer of `cap` slots grown by doubling from 4: it and every one it outgrew.
    let grown = |cap: usize, slot: usize| {
        (2 * cap - 4) * slot + OVERHEAD * (cap / 4).trailing_zeros() as usize + OVERHEAD
    };
    let close = |is_object: bool, items: usize| -> usize {
        if items == 0 {
            return 0;
        }
        let cap = items.next_power_of_two().max(4);
        if is_object {
            // The index table: a usize and a control byte per bucket, at most 7/8 full.
            let buckets = (items * 8 / 7 + 1).next_power_of_two().max(4);
            grown(cap, entry) + grown(buckets, size_of::<usize>() + 1) + 16
        } else {
            grown(cap, value)
        }
    };
    // A number's digits as kept: a String grown by doubling from 8 bytes (Rust's
    // smallest capacity for bytes).
    let digits = |len: usize| len.next_power_of_two().max(8) + OVERHEAD;
    // The scan buffer of the number being parsed, freed once it is parsed again.
    let mut scanning: usize = 0;
    let mut total: usize = 0;
    // (is_object, commas, non-empty) per open container.
    let mut stack: Vec<(bool, usize, bool)> = Vec::with_capacity(MAX_DEPTH);
    let mut i = 0;
    while i < json.len() {
        let b = json[i];
        match b {
            b'"' => {
                let start = i + 1;
                i = start;
                while i < json.len() && json[i] != b'"' {
                    i += if json[i] == b'\\' { 2 } else { 1 };
                }
                let len = i.min(json.len()) - start;
                if len > 0 {
                    total = total.saturating_add(len + OVERHEAD);
                }
                if let Some(top) = stack.last_mut() {
                    top.2 = true;
                }
            }
            b'[' | b'{' => {
                if let Some(top) = stack.last_mut() {
                    top.2 = true;
                }
                if stack.len() == MAX_DEPTH {
                    break;
                }
                stack.push((b == b'{', 0, false));
            }
            b']' | b'}' => {
                if let Some((is_object, commas, nonempty)) = stack.pop() {
                    let items = if nonempty { commas + 1 } else { 0 };
                    total = total.saturating_add(close(is_object, items));
                }
            }
            b',' => {
                if let Some(top) = stack.last_mut() {
                    top.1 += 1;
                }
            }
            b' ' | b'\t' | b'\n' | b'\r' | b':' => {}
            _ => {
                if let Some(top) = stack.last_mut() {
                    top.2 = true;
                }
                if number_heap && (b == b'-' || b.is_ascii_digit()) {
                    let start = i;
                    while i + 1 < json.len()
                        && matches!(json[i + 1], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                    {
                        i += 1;
                    }
                    // One more for the `+` an exponent may gain (`1e5` is kept as `1e+5`).
                    let kept = digits(i + 2 - start);
                    total = total.saturating_add(kept);
                    scanning = scanning.max(kept);
                }
            }
        }
        i += 1;
    }
    // Containers still open (truncated input) were allocated as far as they got.
    while let Some((is_object, commas, nonempty)) = stack.pop() {
        let items = if nonempty { commas + 1 } else { 0 };
        total = total.saturating_add(close(is_object, items));
    }
    total.saturating_add(scanning)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_transaction_takes_the_slots_its_descriptors_stand_for() {
        assert_eq!(slots_for(0, 256), 1);
        assert_eq!(slots_for(4, 256), 1);
        assert_eq!(slots_for(5, 256), 2);
        // 1,000 documents in one directory, and the operation's own four.
        assert_eq!(slots_for(1005, 256), 252);
        // More than the whole budget: all of it, never more (it would wait forever).
        assert_eq!(slots_for(2004, 256), 256);
        assert_eq!(slots_for(usize::MAX, 3), 3);
    }

    /// A transaction waits for the slots it needs, and holds them: the storage
    /// operations after it wait for its end.
    #[tokio::test]
    async fn a_large_transaction_holds_the_storage_slots_it_needs() {
        let limits = Limits::new(1 << 20, 1 << 10, 4, 16);
        let read = limits.read_turn().await;
        let tx = tokio::time::timeout(
            std::time::Duration::from_millis(100),
            limits.tx_turn("a.json", 16),
        )
        .await;
        assert!(tx.is_err(), "got all four slots while one was taken");
        drop(read);
        let tx = limits.tx_turn("a.json", 16).await;
        let other =
            tokio::time::timeout(std::time::Duration::from_millis(100), limits.read_turn()).await;
        assert!(other.is_err(), "a read got a slot the transaction holds");
        drop(tx);
        let _ = limits.read_turn().await;
    }

    #[test]
    fn sizes_grow_with_what_parsing_allocates() {
        assert_eq!(parsed_size(b"[]"), 0);
        assert_eq!(parsed_size(b"\"\""), 0);
        assert!(parsed_size(b"[0]") >= 4 * size_of::<Value>());
        assert!(parsed_size(b"[[0],[0]]") > parsed_size(b"[0,0]"));
        assert!(parsed_size(b"{\"a\":0}") > parsed_size(b"[0]"));
        assert!(parsed_size(b"\"abc\"") >= 3);
        // An exact number keeps its digits (grown by doubling) and, while it is parsed,
        // holds them twice.
        let digits = vec![b'7'; 1_000_000];
        assert!(parsed_size(&digits) >= 2 * digits.len());
    }

    #[tokio::test]
    async fn a_reservation_shrinks_and_returns_what_it_held() {
        let limits = Limits::new(64 * UNIT, 8 * UNIT, 4, 1);
        let mut r = limits.receive(16 * UNIT).await;
        assert_eq!(r.bytes(), 16 * UNIT);
        r.shrink_to(UNIT + 1);
        assert_eq!(r.bytes(), 2 * UNIT);
        assert_eq!(limits.receiving.available_permits(), 14);
        drop(r);
        assert_eq!(limits.receiving.available_permits(), 16);
    }

    #[tokio::test]
    async fn an_idle_document_queue_is_forgotten() {
        let limits = Limits::new(64 * UNIT, 8 * UNIT, 4, 1);
        let a = limits.write_turn("a.json").await;
        let waiting = tokio::spawn({
            let limits = Arc::new(limits);
            let l = limits.clone();
            async move {
                let t = l.write_turn("a.json").await;
                drop(t);
                limits
            }
        });
        tokio::task::yield_now().await;
        drop(a);
        let limits = waiting.await.unwrap();
        assert!(limits.docs.queues.lock().unwrap().is_empty());
    }

    proptest! {
        #[test]
        fn any_bytes_are_sized_without_panic(b in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let _ = parsed_size(&b);
        }

        #[test]
        fn nesting_past_the_parser_limit_is_sized_without_panic(depth in 100usize..5000) {
            let s = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let _ = parsed_size(s.as_bytes());
        }
    }
}
