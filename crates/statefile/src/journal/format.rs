//! The journal's bytes on disk: the header, the records, the checksum. This file is the
//! format's definition; `docs/design.md` describes the same layout for other programs.
//!
//! Everything is little-endian. The file is a header area of [`RING_START`] bytes (two
//! header copies) followed by a ring of `capacity` bytes. A record's position is its
//! LSN, a byte count that only grows; it lives at `RING_START + lsn % capacity` and never
//! straddles the ring's end (a wrap record, or fewer than [`RECORD_HEADER`] bytes left,
//! sends the next record to the start of the next lap).

use crate::version::Version;

/// The magic at the start of each header copy.
pub(crate) const HEADER_MAGIC: [u8; 8] = *b"SFJOURNL";
/// The format version this build reads and writes.
pub(crate) const FORMAT_VERSION: u32 = 1;
/// Where the two header copies sit.
pub(crate) const HEADER_COPIES: [u64; 2] = [0, 4096];
/// Bytes of a header copy that are used (and checksummed: the first 64, then the CRC).
pub(crate) const HEADER_LEN: usize = 68;
/// Where the ring begins.
pub(crate) const RING_START: u64 = 8192;
/// Header flag: the journal was closed by `disable`; nothing is left to replay.
pub(crate) const FLAG_CLOSED: u32 = 1;
/// Header flag, set by `enable` and kept for the journal's life: commits swap the new
/// file in (`RENAME_EXCHANGE`) instead of renaming it over the document
/// ([`super::JournalOptions::swap`]).
pub(crate) const FLAG_SWAP: u32 = 2;

/// The magic at the start of every record.
pub(crate) const RECORD_MAGIC: [u8; 4] = *b"SFJR";
/// Bytes of a record's fixed header.
pub(crate) const RECORD_HEADER: u64 = 48;
/// Records start at multiples of this.
pub(crate) const ALIGN: u64 = 8;
/// Record kinds.
pub(crate) const KIND_COMMIT: u8 = 1;
pub(crate) const KIND_WRAP: u8 = 2;

/// Entry operations.
const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
const OP_DIRECT: u8 = 3;
/// Bytes of an entry's fixed part.
const ENTRY_FIXED: usize = 96;

/// The smallest and largest ring a journal may have.
pub(crate) const MIN_CAPACITY: u64 = 16 << 10;
pub(crate) const MAX_CAPACITY: u64 = 1 << 40;

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of iSCSI, ext4
/// metadata and PostgreSQL's WAL. Only metadata is checksummed with it (document bytes
/// are covered by their SHA-256 version), so a byte-wise table is fast enough.
pub(crate) fn crc32c(seed: u32, bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut c = !seed;
    for b in bytes {
        c = TABLE[((c ^ u32::from(*b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Round `n` up to a multiple of [`ALIGN`].
pub(crate) fn align(n: u64) -> u64 {
    n.div_ceil(ALIGN) * ALIGN
}

/// One copy of the journal's header: what a replay needs to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub version: u32,
    pub flags: u32,
    /// Bumped at every header write; of two valid copies the higher wins.
    pub seq: u64,
    /// Random, fixed for the life of the file: seeds every record's checksum, so a record
    /// of another journal (or a document's bytes that look like one) never validates.
    pub salt: u64,
    pub capacity: u64,
    /// The checkpoint: records before this LSN are in the documents, durably.
    pub tail: u64,
    /// The checksum chain value the record at `tail` must name as its predecessor.
    pub tail_chain: u32,
    /// The longest a written-to journal goes without a checkpoint, in seconds.
    pub checkpoint_age: u32,
    /// When the checkpoint was made (seconds since the Unix epoch).
    pub checkpoint_unix: u64,
}

impl Header {
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&HEADER_MAGIC);
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        b[16..24].copy_from_slice(&self.seq.to_le_bytes());
        b[24..32].copy_from_slice(&self.salt.to_le_bytes());
        b[32..40].copy_from_slice(&self.capacity.to_le_bytes());
        b[40..48].copy_from_slice(&self.tail.to_le_bytes());
        b[48..52].copy_from_slice(&self.tail_chain.to_le_bytes());
        b[52..56].copy_from_slice(&self.checkpoint_age.to_le_bytes());
        b[56..64].copy_from_slice(&self.checkpoint_unix.to_le_bytes());
        let crc = crc32c(0, &b[0..64]);
        b[64..68].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// A header copy, if it is one: the magic, and a checksum that matches. The format
    /// version is returned as found (the caller refuses versions it does not know).
    pub(crate) fn decode(b: &[u8]) -> Option<Header> {
        if b.len() < HEADER_LEN || b[0..8] != HEADER_MAGIC {
            return None;
        }
        if crc32c(0, &b[0..64]) != u32_at(b, 64) {
            return None;
        }
        Some(Header {
            version: u32_at(b, 8),
            flags: u32_at(b, 12),
            seq: u64_at(b, 16),
            salt: u64_at(b, 24),
            capacity: u64_at(b, 32),
            tail: u64_at(b, 40),
            tail_chain: u32_at(b, 48),
            checkpoint_age: u32_at(b, 52),
            checkpoint_unix: u64_at(b, 56),
        })
    }

    /// The copy to trust of the two: the valid one with the higher sequence number.
    pub(crate) fn newest(a: Option<Header>, b: Option<Header>) -> Option<(usize, Header)> {
        match (a, b) {
            (Some(x), Some(y)) if y.seq > x.seq => Some((1, y)),
            (Some(x), _) => Some((0, x)),
            (None, Some(y)) => Some((1, y)),
            (None, None) => None,
        }
    }

    /// The chain value of an empty journal: derived from the salt, so the first record
    /// of one journal never validates in another.
    pub(crate) fn initial_chain(salt: u64) -> u32 {
        crc32c(0, &salt.to_le_bytes())
    }
}

/// What one record does to one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// The document now holds exactly these bytes.
    Put {
        bytes: Vec<u8>,
        version: Version,
        /// Permission bits and owner the file is meant to have (a new document's: its
        /// writer's, as its temp file gets them).
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// The document no longer exists.
    Delete,
    /// The document was written outside the journal (too large for it), durably, with
    /// this version: nothing to replay, and older records must not roll it back.
    Direct { version: Version },
}

/// One document's change in a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The document's path relative to the journal's root, `/`-separated.
    pub name: Vec<u8>,
    pub op: Op,
    /// The version it replaced, if there was one (and it was looked at).
    pub previous: Option<Version>,
    /// How many backups the writer keeps (a replay keeps as many).
    pub backups: u32,
}

impl Entry {
    fn meta_len(&self) -> u64 {
        align(ENTRY_FIXED as u64 + self.name.len() as u64)
    }

    fn data_len(&self) -> u64 {
        match &self.op {
            Op::Put { bytes, .. } => bytes.len() as u64,
            Op::Delete | Op::Direct { .. } => 0,
        }
    }
}

/// The length of the record that withdraws a commit of the documents `names` (one
/// `delete` or `direct` entry each: no data).
pub(crate) fn withdraw_len(names: &[&[u8]]) -> u64 {
    let meta: u64 = 8 + names
        .iter()
        .map(|n| align(ENTRY_FIXED as u64 + n.len() as u64))
        .sum::<u64>();
    align(RECORD_HEADER + meta)
}

/// The length of the commit record holding `entries`.
pub(crate) fn record_len(entries: &[Entry]) -> u64 {
    let meta: u64 = 8 + entries.iter().map(Entry::meta_len).sum::<u64>();
    let data: u64 = entries.iter().map(Entry::data_len).sum();
    align(RECORD_HEADER + meta + data)
}

/// The fixed part of a record, as found on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordHeader {
    pub kind: u8,
    pub len: u64,
    pub lsn: u64,
    pub flushed_before: u64,
    pub meta_len: u32,
    pub prev: u32,
    pub crc: u32,
}

impl RecordHeader {
    /// Parse the fixed part; `None` unless the magic and kind are right and the lengths
    /// are possible for a ring of `capacity` bytes. The checksum is checked by
    /// [`RecordHeader::check`], once the metadata is read.
    pub(crate) fn parse(b: &[u8], capacity: u64) -> Option<RecordHeader> {
        if b.len() < RECORD_HEADER as usize || b[0..4] != RECORD_MAGIC {
            return None;
        }
        let h = RecordHeader {
            kind: b[4],
            len: u64_at(b, 8),
            lsn: u64_at(b, 16),
            flushed_before: u64_at(b, 24),
            meta_len: u32_at(b, 32),
            prev: u32_at(b, 36),
            crc: u32_at(b, 40),
        };
        let sane = match h.kind {
            KIND_WRAP => h.len == RECORD_HEADER && h.meta_len == 0,
            KIND_COMMIT => {
                h.len >= RECORD_HEADER + 8
                    && h.len.is_multiple_of(ALIGN)
                    && u64::from(h.meta_len) + RECORD_HEADER <= h.len
            }
            _ => false,
        };
        (sane && h.len <= capacity && h.lsn.is_multiple_of(ALIGN)).then_some(h)
    }

    /// Whether the checksum matches this header (`raw`, its 48 bytes), its metadata and
    /// the journal's salt.
    pub(crate) fn check(&self, raw: &[u8], meta: &[u8], salt: u64) -> bool {
        record_crc(salt, raw, meta) == self.crc
    }
}

/// A record's checksum: CRC-32C over the salt (8 bytes, little-endian), the record's
/// fixed header except the checksum field itself (bytes 0..40 and 44..48), and its
/// metadata.
fn record_crc(salt: u64, head: &[u8], meta: &[u8]) -> u32 {
    let c = crc32c(0, &salt.to_le_bytes());
    let c = crc32c(c, &head[0..40]);
    let c = crc32c(c, &head[44..48]);
    crc32c(c, meta)
}

fn header_bytes(
    kind: u8,
    len: u64,
    lsn: u64,
    flushed_before: u64,
    meta_len: u32,
    prev: u32,
) -> [u8; 48] {
    let mut h = [0u8; RECORD_HEADER as usize];
    h[0..4].copy_from_slice(&RECORD_MAGIC);
    h[4] = kind;
    h[8..16].copy_from_slice(&len.to_le_bytes());
    h[16..24].copy_from_slice(&lsn.to_le_bytes());
    h[24..32].copy_from_slice(&flushed_before.to_le_bytes());
    h[32..36].copy_from_slice(&meta_len.to_le_bytes());
    h[36..40].copy_from_slice(&prev.to_le_bytes());
    h
}

/// A wrap record at `lsn`: the rest of this lap is unused. Returns its bytes and chain.
pub(crate) fn encode_wrap(salt: u64, lsn: u64, flushed_before: u64, prev: u32) -> ([u8; 48], u32) {
    let mut h = header_bytes(KIND_WRAP, RECORD_HEADER, lsn, flushed_before, 0, prev);
    let crc = record_crc(salt, &h, &[]);
    h[40..44].copy_from_slice(&crc.to_le_bytes());
    (h, crc)
}

/// The commit record for `entries` at `lsn`: its bytes (exactly
/// [`record_len`]`(entries)` long) and its checksum, the next record's chain value.
pub(crate) fn encode_commit(
    salt: u64,
    lsn: u64,
    flushed_before: u64,
    prev: u32,
    entries: &[Entry],
) -> (Vec<u8>, u32) {
    let len = record_len(entries);
    let mut out = Vec::with_capacity(len as usize);
    out.resize(RECORD_HEADER as usize, 0);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    for e in entries {
        let (op, version, mode, uid, gid) = match &e.op {
            Op::Put {
                version,
                mode,
                uid,
                gid,
                ..
            } => (OP_PUT, version.digest(), *mode, *uid, *gid),
            Op::Delete => (OP_DELETE, [0u8; 32], 0, 0, 0),
            Op::Direct { version } => (OP_DIRECT, version.digest(), 0, 0, 0),
        };
        out.push(op);
        out.push(u8::from(e.previous.is_some()));
        out.extend_from_slice(&[0u8; 2]);
        out.extend_from_slice(&e.backups.to_le_bytes());
        out.extend_from_slice(&mode.to_le_bytes());
        out.extend_from_slice(&uid.to_le_bytes());
        out.extend_from_slice(&gid.to_le_bytes());
        out.extend_from_slice(&(e.name.len() as u32).to_le_bytes());
        out.extend_from_slice(&e.data_len().to_le_bytes());
        out.extend_from_slice(&version);
        out.extend_from_slice(&e.previous.as_ref().map_or([0u8; 32], Version::digest));
        out.extend_from_slice(&e.name);
        let padded =
            RECORD_HEADER as usize + align((out.len() - RECORD_HEADER as usize) as u64) as usize;
        out.resize(padded, 0);
    }
    let meta_len = (out.len() - RECORD_HEADER as usize) as u32;
    for e in entries {
        if let Op::Put { bytes, .. } = &e.op {
            out.extend_from_slice(bytes);
        }
    }
    out.resize(len as usize, 0);
    let head = header_bytes(KIND_COMMIT, len, lsn, flushed_before, meta_len, prev);
    out[0..48].copy_from_slice(&head);
    let crc = record_crc(salt, &head, &out[48..48 + meta_len as usize]);
    out[40..44].copy_from_slice(&crc.to_le_bytes());
    (out, crc)
}

/// An entry as described by a record's metadata, before its data is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EntryMeta {
    pub name: Vec<u8>,
    pub action: Action,
    pub previous: Option<Version>,
    pub backups: u32,
}

/// What an entry does, as its metadata says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    Put(PutMeta),
    Delete,
    Direct(Version),
}

/// A put's metadata: where its bytes are in the record, and what they must hash to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PutMeta {
    pub version: Version,
    /// Offset of the bytes from the start of the record.
    pub data_at: u64,
    pub data_len: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl EntryMeta {
    /// The version this entry leaves the document at (`None`: deleted).
    pub(crate) fn version(&self) -> Option<&Version> {
        match &self.action {
            Action::Put(p) => Some(&p.version),
            Action::Direct(v) => Some(v),
            Action::Delete => None,
        }
    }

    /// The put's metadata, if this entry is one.
    pub(crate) fn put(&self) -> Option<&PutMeta> {
        match &self.action {
            Action::Put(p) => Some(p),
            _ => None,
        }
    }
}

/// Parse a commit record's metadata (checksum already verified). `None` if it does not
/// describe a record of `len` bytes whose metadata is `meta.len()` bytes: then the
/// record is damaged in a way its checksum did not catch, and is treated as invalid.
pub(crate) fn parse_meta(meta: &[u8], len: u64) -> Option<Vec<EntryMeta>> {
    let count = u32_at(meta.get(0..8)?, 0) as usize;
    let mut at = 8usize;
    let mut data_at = RECORD_HEADER + meta.len() as u64;
    let mut out = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let f = meta.get(at..at + ENTRY_FIXED)?;
        let op = f[0];
        let has_prev = f[1];
        let backups = u32_at(f, 4);
        let mode = u32_at(f, 8);
        let uid = u32_at(f, 12);
        let gid = u32_at(f, 16);
        let name_len = u32_at(f, 20) as usize;
        let data_len = u64_at(f, 24);
        let version: [u8; 32] = f[32..64].try_into().ok()?;
        let prev: [u8; 32] = f[64..96].try_into().ok()?;
        let name = meta
            .get(at + ENTRY_FIXED..at + ENTRY_FIXED + name_len)?
            .to_vec();
        at += align((ENTRY_FIXED + name_len) as u64) as usize;
        let action = match op {
            OP_PUT => {
                let p = PutMeta {
                    version: Version::from_digest(version),
                    data_at,
                    data_len,
                    mode,
                    uid,
                    gid,
                };
                data_at = data_at.checked_add(data_len)?;
                Action::Put(p)
            }
            OP_DELETE if data_len == 0 => Action::Delete,
            OP_DIRECT if data_len == 0 => Action::Direct(Version::from_digest(version)),
            _ => return None,
        };
        out.push(EntryMeta {
            name,
            action,
            previous: match has_prev {
                0 => None,
                1 => Some(Version::from_digest(prev)),
                _ => return None,
            },
            backups,
        });
    }
    (at == meta.len() && align(data_at) == len).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_published_check_value() {
        // The standard check: CRC-32C of "123456789" is 0xE3069283.
        assert_eq!(crc32c(0, b"123456789"), 0xE306_9283);
        // Chaining equals one pass.
        assert_eq!(crc32c(crc32c(0, b"1234"), b"56789"), 0xE306_9283);
    }

    #[test]
    fn headers_round_trip_and_a_flipped_bit_is_refused() {
        let h = Header {
            version: FORMAT_VERSION,
            flags: 0,
            seq: 7,
            salt: 0x1234_5678_9abc_def0,
            capacity: 1 << 20,
            tail: 4096,
            tail_chain: 99,
            checkpoint_age: 60,
            checkpoint_unix: 1_700_000_000,
        };
        let b = h.encode();
        assert_eq!(Header::decode(&b), Some(h));
        for i in 0..HEADER_LEN {
            let mut bad = b;
            bad[i] ^= 0x10;
            assert_eq!(Header::decode(&bad), None, "byte {i}");
        }
        let older = Header { seq: 6, ..h };
        assert_eq!(Header::newest(Some(older), Some(h)), Some((1, h)));
        assert_eq!(Header::newest(Some(h), None), Some((0, h)));
    }

    fn entries() -> Vec<Entry> {
        vec![
            Entry {
                name: b"jobs/a.json".to_vec(),
                op: Op::Put {
                    bytes: b"{\"a\": 1}\n".to_vec(),
                    version: Version::of(b"{\"a\": 1}\n"),
                    mode: 0o644,
                    uid: 1000,
                    gid: 100,
                },
                previous: Some(Version::of(b"{}")),
                backups: 3,
            },
            Entry {
                name: b"queue.json".to_vec(),
                op: Op::Delete,
                previous: None,
                backups: 1,
            },
        ]
    }

    #[test]
    fn a_commit_record_round_trips() {
        let salt = 42;
        let e = entries();
        let (bytes, crc) = encode_commit(salt, 800, 640, 17, &e);
        assert_eq!(bytes.len() as u64, record_len(&e));
        assert_eq!(bytes.len() % 8, 0);
        let h = RecordHeader::parse(&bytes, 1 << 20).unwrap();
        assert_eq!(
            (h.kind, h.lsn, h.flushed_before, h.prev, h.crc),
            (KIND_COMMIT, 800, 640, 17, crc)
        );
        let meta = &bytes[48..48 + h.meta_len as usize];
        assert!(h.check(&bytes[..48], meta, salt));
        assert!(
            !h.check(&bytes[..48], meta, salt + 1),
            "another journal's salt"
        );
        let metas = parse_meta(meta, h.len).unwrap();
        assert_eq!(metas.len(), 2);
        assert_eq!(metas[0].name, b"jobs/a.json");
        assert_eq!(metas[0].previous, Some(Version::of(b"{}")));
        assert_eq!(metas[0].backups, 3);
        let p = metas[0].put().unwrap();
        let data = &bytes[p.data_at as usize..(p.data_at + p.data_len) as usize];
        assert_eq!(data, b"{\"a\": 1}\n");
        assert_eq!(Version::of(data), p.version);
        assert_eq!((p.mode, p.uid, p.gid), (0o644, 1000, 100));
        assert_eq!(metas[1].action, Action::Delete);
        assert_eq!(metas[1].name, b"queue.json");
    }

    #[test]
    fn any_flipped_metadata_bit_fails_the_checksum() {
        let (bytes, _) = encode_commit(5, 0, 0, 1, &entries());
        let h = RecordHeader::parse(&bytes, 1 << 20).unwrap();
        let end = 48 + h.meta_len as usize;
        for i in (0..end).filter(|i| !(40..44).contains(i)) {
            let mut bad = bytes.clone();
            bad[i] ^= 0x04;
            let ok = RecordHeader::parse(&bad, 1 << 20).is_some_and(|h2| {
                let m = 48 + h2.meta_len as usize;
                m <= bad.len() && h2.check(&bad[..48], &bad[48..m], 5)
            });
            assert!(!ok, "byte {i} flipped and the record still validates");
        }
    }

    #[test]
    fn a_wrap_record_validates() {
        let (w, crc) = encode_wrap(9, 4000, 0, 3);
        let h = RecordHeader::parse(&w, 1 << 20).unwrap();
        assert_eq!((h.kind, h.len, h.crc), (KIND_WRAP, RECORD_HEADER, crc));
        assert!(h.check(&w, &[], 9));
    }

    #[test]
    fn metadata_that_does_not_add_up_is_refused() {
        let (bytes, _) = encode_commit(5, 0, 0, 1, &entries());
        let h = RecordHeader::parse(&bytes, 1 << 20).unwrap();
        let meta = &bytes[48..48 + h.meta_len as usize];
        assert!(parse_meta(meta, h.len + 8).is_none());
        assert!(parse_meta(&meta[..meta.len() - 8], h.len).is_none());
    }
}
