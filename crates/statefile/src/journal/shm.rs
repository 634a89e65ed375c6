//! The journal's shared state, `.statefile/journal-shm`: what the processes using the
//! journal tell each other while they run (like SQLite's `-shm` file). It is never
//! synced and means nothing after a reboot (its boot id tells); a process that finds it
//! stale rebuilds it from the journal itself before anyone else may use it.
//!
//! Page 0 (written only under the append lock, an exclusive `flock` on this file):
//!
//! ```text
//!   0   8  magic "SFJSHM01"
//!   8   8  the journal's salt (this state belongs to that journal file)
//!  16  16  boot id of the machine when the state was built
//!  32   8  end: the LSN after the last complete record
//!  40   8  tail: the LSN of the last checkpoint
//!  48   4  chain value of the last record (the next record's predecessor)
//!  52   4  flags: 1 disabling, 2 disabled, 4 poisoned (a journal flush failed),
//!            8 damaged (records before the end are unreadable: writes refused),
//!            16 sync failed (a sync of a document or backup whose bytes the journal
//!            holds failed, and it could not be rewritten from its record: no
//!            checkpoint frees records until `statefile recover` rewrites every file
//!            the journal holds), 32 rewriting (that recovery is under way: no
//!            checkpoint either)
//!  56   8  time of the last checkpoint (Unix seconds)
//!  64   4  generation: bumped when the end is rolled back after a failed flush
//!  68   4  zero
//!  72   4  CRC-32C of bytes 0..72
//! 128 + 64 * i: slot i of 62, one per commit in flight (appended, not yet applied):
//!   0   1  state: 0 free, 1 in flight
//!   8   8  LSN of the record
//!  16   8  its length
//!  24   4  its checksum (so a slot can never be taken for another record)
//!  28   4  the writer's process id (for people reading it)
//!  32  32  a 256-bit Bloom filter of the record's document names
//! ```
//!
//! Page 1 (written only under the flush lock, an exclusive `flock` on the journal):
//! bytes 0..8 the LSN up to which the journal is known to be on disk, 8..16 the salt,
//! 16..20 the chain value at that LSN (where a rollback after a failed flush resumes).

use super::format::crc32c;

pub(crate) const MAGIC: [u8; 8] = *b"SFJSHM01";
pub(crate) const SLOTS: usize = 62;
const HEAD: usize = 128;
const SLOT: usize = 64;
pub(crate) const PAGE: usize = 4096;
/// Where page 1 starts.
pub(crate) const FLUSH_PAGE: u64 = PAGE as u64;

pub(crate) const FLAG_DISABLING: u32 = 1;
pub(crate) const FLAG_DISABLED: u32 = 2;
pub(crate) const FLAG_POISONED: u32 = 4;
pub(crate) const FLAG_DAMAGED: u32 = 8;
/// A sync of a file whose bytes only the journal holds (a document or backup written
/// since the last checkpoint) failed, which may drop the pages it could not write (or,
/// on Linux, keep them clean in the cache while the disk holds other bytes), and the
/// file could not be rewritten from its record: until `statefile recover` has
/// rewritten every such file, no checkpoint may free a record.
pub(crate) const FLAG_SYNC_FAILED: u32 = 16;
/// `statefile recover` is rewriting the files the journal holds after
/// [`FLAG_SYNC_FAILED`]: checkpoints still wait (a recovery that died leaves it, and
/// the next one starts again).
pub(crate) const FLAG_REWRITING: u32 = 32;

const FREE: u8 = 0;
const IN_FLIGHT: u8 = 1;

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// A 256-bit Bloom filter of document names: three bits per name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Bloom(pub [u64; 4]);

impl Bloom {
    fn bits(name: &[u8]) -> [u32; 3] {
        // FNV-1a, 64 bits.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        [
            (h & 255) as u32,
            ((h >> 21) & 255) as u32,
            ((h >> 42) & 255) as u32,
        ]
    }

    pub(crate) fn add(&mut self, name: &[u8]) {
        for bit in Bloom::bits(name) {
            self.0[(bit / 64) as usize] |= 1 << (bit % 64);
        }
    }

    /// Whether `name` may have been added (false positives are possible, never false
    /// negatives).
    pub(crate) fn may_contain(&self, name: &[u8]) -> bool {
        Bloom::bits(name)
            .iter()
            .all(|bit| self.0[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }
}

/// A commit in flight: appended, not yet applied to its documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    pub lsn: u64,
    pub len: u64,
    pub crc: u32,
    pub pid: u32,
    pub names: Bloom,
}

/// Page 0, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Page {
    pub salt: u64,
    pub boot: u128,
    pub end: u64,
    pub tail: u64,
    pub chain: u32,
    pub flags: u32,
    pub checkpoint_unix: u64,
    pub generation: u32,
    pub slots: [Option<Slot>; SLOTS],
}

impl Page {
    /// A fresh state for the journal with `salt`, as rebuilt by a recovery.
    pub(crate) fn new(
        salt: u64,
        boot: u128,
        end: u64,
        tail: u64,
        chain: u32,
        checkpoint_unix: u64,
    ) -> Page {
        Page {
            salt,
            boot,
            end,
            tail,
            chain,
            flags: 0,
            checkpoint_unix,
            generation: 0,
            slots: [None; SLOTS],
        }
    }

    /// Decode page 0; `None` if it is not a valid state (missing, torn, another format).
    pub(crate) fn decode(b: &[u8]) -> Option<Page> {
        if b.len() < PAGE || b[0..8] != MAGIC || crc32c(0, &b[0..72]) != u32_at(b, 72) {
            return None;
        }
        let mut slots = [None; SLOTS];
        for (i, s) in slots.iter_mut().enumerate() {
            let at = HEAD + SLOT * i;
            let raw = &b[at..at + SLOT];
            if raw[0] == IN_FLIGHT {
                *s = Some(Slot {
                    lsn: u64_at(raw, 8),
                    len: u64_at(raw, 16),
                    crc: u32_at(raw, 24),
                    pid: u32_at(raw, 28),
                    names: Bloom([
                        u64_at(raw, 32),
                        u64_at(raw, 40),
                        u64_at(raw, 48),
                        u64_at(raw, 56),
                    ]),
                });
            }
        }
        Some(Page {
            salt: u64_at(b, 8),
            boot: u128::from_le_bytes(b[16..32].try_into().expect("16 bytes")),
            end: u64_at(b, 32),
            tail: u64_at(b, 40),
            chain: u32_at(b, 48),
            flags: u32_at(b, 52),
            checkpoint_unix: u64_at(b, 56),
            generation: u32_at(b, 64),
            slots,
        })
    }

    /// The bytes of page 0 up to the end of slot `upto` (all of it for `None`).
    pub(crate) fn encode(&self, upto: Option<usize>) -> Vec<u8> {
        let mut b = vec![0u8; PAGE];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..16].copy_from_slice(&self.salt.to_le_bytes());
        b[16..32].copy_from_slice(&self.boot.to_le_bytes());
        b[32..40].copy_from_slice(&self.end.to_le_bytes());
        b[40..48].copy_from_slice(&self.tail.to_le_bytes());
        b[48..52].copy_from_slice(&self.chain.to_le_bytes());
        b[52..56].copy_from_slice(&self.flags.to_le_bytes());
        b[56..64].copy_from_slice(&self.checkpoint_unix.to_le_bytes());
        b[64..68].copy_from_slice(&self.generation.to_le_bytes());
        let crc = crc32c(0, &b[0..72]);
        b[72..76].copy_from_slice(&crc.to_le_bytes());
        for (i, s) in self.slots.iter().enumerate() {
            let at = HEAD + SLOT * i;
            encode_slot(s.as_ref(), &mut b[at..at + SLOT]);
        }
        if let Some(i) = upto {
            b.truncate(HEAD + SLOT * (i + 1));
        }
        b
    }

    /// The bytes of one slot, and where they go.
    pub(crate) fn slot_bytes(&self, i: usize) -> (u64, [u8; SLOT]) {
        let mut raw = [0u8; SLOT];
        encode_slot(self.slots[i].as_ref(), &mut raw);
        ((HEAD + SLOT * i) as u64, raw)
    }

    /// A free slot's index.
    pub(crate) fn free_slot(&self) -> Option<usize> {
        self.slots.iter().position(Option::is_none)
    }
}

/// One slot's bytes, written into `raw` (zeroed, [`SLOT`] bytes).
fn encode_slot(s: Option<&Slot>, raw: &mut [u8]) {
    match s {
        None => raw[0] = FREE,
        Some(s) => {
            raw[0] = IN_FLIGHT;
            raw[8..16].copy_from_slice(&s.lsn.to_le_bytes());
            raw[16..24].copy_from_slice(&s.len.to_le_bytes());
            raw[24..28].copy_from_slice(&s.crc.to_le_bytes());
            raw[28..32].copy_from_slice(&s.pid.to_le_bytes());
            for (k, w) in s.names.0.iter().enumerate() {
                raw[32 + 8 * k..40 + 8 * k].copy_from_slice(&w.to_le_bytes());
            }
        }
    }
}

/// Page 1, encoded: the flushed LSN and the chain value there, for the journal with
/// `salt`.
pub(crate) fn encode_flushed(flushed: u64, chain: u32, salt: u64) -> [u8; 20] {
    let mut b = [0u8; 20];
    b[0..8].copy_from_slice(&flushed.to_le_bytes());
    b[8..16].copy_from_slice(&salt.to_le_bytes());
    b[16..20].copy_from_slice(&chain.to_le_bytes());
    b
}

/// Page 1, decoded: the flushed LSN and its chain value, if they belong to the journal
/// with `salt`.
pub(crate) fn decode_flushed(b: &[u8], salt: u64) -> Option<(u64, u32)> {
    (b.len() >= 20 && u64_at(b, 8) == salt).then(|| (u64_at(b, 0), u32_at(b, 16)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_round_trips() {
        let mut p = Page::new(7, 0xdead_beef, 4096, 1024, 55, 1_700_000_000);
        let mut names = Bloom::default();
        names.add(b"a.json");
        p.slots[3] = Some(Slot {
            lsn: 2048,
            len: 512,
            crc: 9,
            pid: 4242,
            names,
        });
        p.flags = FLAG_DISABLING;
        p.generation = 2;
        let b = p.encode(None);
        assert_eq!(b.len(), PAGE);
        assert_eq!(Page::decode(&b), Some(p.clone()));
        assert_eq!(p.free_slot(), Some(0));
        let part = p.encode(Some(3));
        assert_eq!(part.len(), 128 + 4 * 64);
        assert_eq!(&part[..], &b[..part.len()]);
        let (at, slot) = p.slot_bytes(3);
        assert_eq!(&b[at as usize..at as usize + 64], &slot[..]);
        let mut torn = b.clone();
        torn[33] ^= 1;
        assert_eq!(Page::decode(&torn), None);
    }

    #[test]
    fn every_slot_alone_is_its_bytes_in_the_whole_page() {
        let mut p = Page::new(u64::MAX, u128::MAX, u64::MAX, 1, u32::MAX, u64::MAX);
        for (i, s) in p.slots.iter_mut().enumerate() {
            if i % 3 != 1 {
                *s = Some(Slot {
                    lsn: u64::MAX - i as u64,
                    len: u64::MAX,
                    crc: u32::MAX,
                    pid: u32::MAX,
                    names: Bloom([u64::MAX; 4]),
                });
            }
        }
        let whole = p.encode(None);
        for i in 0..SLOTS {
            let (at, raw) = p.slot_bytes(i);
            assert_eq!(
                &whole[at as usize..at as usize + SLOT],
                &raw[..],
                "slot {i}"
            );
        }
    }

    #[test]
    fn a_bloom_filter_never_forgets() {
        let mut b = Bloom::default();
        let names: Vec<String> = (0..20).map(|i| format!("jobs/{i}.json")).collect();
        for n in &names {
            b.add(n.as_bytes());
        }
        assert!(names.iter().all(|n| b.may_contain(n.as_bytes())));
        let mut one = Bloom::default();
        one.add(b"a.json");
        let misses = (0..1000)
            .filter(|i| one.may_contain(format!("other/{i}.json").as_bytes()))
            .count();
        assert!(
            misses < 5,
            "{misses} false positives in 1000 for a one-name filter"
        );
    }

    #[test]
    fn flushed_belongs_to_one_journal() {
        let b = encode_flushed(800, 9, 3);
        assert_eq!(decode_flushed(&b, 3), Some((800, 9)));
        assert_eq!(decode_flushed(&b, 4), None);
        assert_eq!(decode_flushed(&[0u8; 20], 3), None);
    }
}
