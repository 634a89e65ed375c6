//! Group commit: concurrent writes of one document in one process share one durable
//! write.
//!
//! Every [`Doc`](crate::Doc) update, conditional update, write, conditional write and
//! create is a *call* that joins its document's queue, which lives in the lock file's
//! in-process state ([`lock::Shared`], keyed by the lock file's identity: the file
//! system instance, device and inode). Two `Doc` values, a `Store` and the server's
//! requests that name one file therefore share one queue, whatever path (or symlink)
//! they named it by.
//!
//! - A call that finds no batch in progress *leads*: it takes the document's lock (the
//!   FIFO, then `flock`), and begins a batch at once: a lone caller never waits for
//!   company. Calls that arrive meanwhile queue behind it.
//! - Under the lock the batch takes queued calls one at a time, in arrival order, each
//!   applying its change to one working value: the document as read once under the
//!   lock, then as the earlier calls of the batch left it. A call's change always runs
//!   on the caller's own thread (its closure may borrow the caller's stack and need not
//!   be `Send`): the *baton* (lock, working value, members) is handed to the thread
//!   whose call comes next, and back. A call arriving while the batch is still taking
//!   calls joins it.
//! - The batch stops taking calls when the queue is empty, when it holds `max_calls`
//!   calls or has processed `max_bytes` bytes ([`Options::max_batch`]), or when the
//!   next call cannot join: another document format, backup count, permissions or temp-file hook, another resolved
//!   path, or a conditional call (`update_if`, `write_if`, `create`) once the batch has
//!   changed the value: a condition is checked only where the on-disk version is
//!   known, at the start of a batch.
//! - The thread holding the baton when the batch stops makes the one write (one
//!   [`atomic::replace`]: one temp file, one fsync, one rename, one directory fsync) at
//!   the strongest durability any member asked for, releases the lock, hands the lead
//!   to the first queued call, and answers every member: the same [`Receipt`] (with its
//!   own `queued` time) or the same error.
//!
//! A change that fails (returns an error, panics, or leaves a value that cannot be
//! stored) fails its own call only: the batch goes on from the value as it was before
//! that change. Before a change runs on a value an earlier change of the batch made,
//! that value is kept as compact JSON (the *undo*), which also proves it serializes; a
//! failing change puts it back. A panic is caught, the batch goes on, and the panic
//! resumes in its caller's thread once the baton has left it. A change that failed on
//! a value earlier changes of the batch made waits for the batch's outcome before it
//! returns (its own failure once the write succeeded, the batch's error if it failed):
//! what it saw is not committed yet, and may never be. A failed write fails
//! every member with that error (a `Durability` error, and the store's refusal to write
//! further, for all of them); nothing of the batch is visible then.

use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::io::Write;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::atomic::{self, Current, Locked, Plan, Prepared, TempWriter, Verify};
use crate::backup;
use crate::doc::{cannot_update_damaged, conflict, newest_good, shown};
use crate::error::{Error, ErrorKind, Result};
use crate::file::{self, Seen};
use crate::fs::Metadata;
use crate::json::{self, Format, SerializeError};
use crate::lock::{self, lock_ignoring_poison as locked};
use crate::options::{Durability, Options, Perms, Receipt, TempHook};
use crate::version::{Version, over_limit};

/// One document's queue of calls waiting to join a batch.
#[derive(Default)]
pub(crate) struct Queue {
    state: Mutex<QueueState>,
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = locked(&self.state);
        f.debug_struct("Queue")
            .field("pending", &st.pending.len())
            .field("leading", &st.leading)
            .finish()
    }
}

#[derive(Default)]
struct QueueState {
    /// Calls not yet taken into a batch, in arrival order.
    pending: VecDeque<Arc<Slot>>,
    /// A batch is in progress, or the front call has been told to lead the next one.
    /// When false, `pending` is empty.
    leading: bool,
}

/// One call in the queue. Lock order: the queue's state, then a slot's.
struct Slot {
    meta: Meta,
    state: Mutex<SlotState>,
    wake: Condvar,
}

/// What a call brings to a batch besides its change.
struct Meta {
    /// The resolved document.
    path: PathBuf,
    /// The identity (device, inode) of the directory this call resolved and opened:
    /// with `path`, what makes two calls name one file (a renamed directory and a
    /// hard-linked lock file can give two files one path and one lock inode).
    dir: (u64, u64),
    /// The document as this caller named it, for its error messages: members of one
    /// batch may name the same file differently.
    shown: PathBuf,
    format: Format,
    backups: usize,
    perms: Perms,
    durability: Durability,
    verify: bool,
    max_calls: usize,
    max_bytes: u64,
    max_document: u64,
    conditional: bool,
    joined: Instant,
    poison: Option<Arc<AtomicBool>>,
    temp_created: Option<TempHook>,
}

enum SlotState {
    /// In the queue.
    Waiting,
    /// At the front of the queue, told to lead the next batch.
    Lead,
    /// Taken out of the queue by a batch; its turn comes next.
    Taken,
    /// Its turn: the batch is here.
    Turn(Box<Baton>),
    /// Answered.
    Done(Result<Receipt, Fail>),
    /// The answer was collected.
    Over,
}

/// Why a call failed.
pub(crate) enum Fail {
    /// The library's error.
    Error(Error),
    /// The caller's change returned its own error, which the caller kept.
    Own,
    /// The caller's code panicked: resume the panic in the caller's thread.
    Panic(Box<dyn Any + Send>),
}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        Fail::Error(e)
    }
}

/// A working value of a type only the call that made it knows.
type Erased = Box<dyn Any + Send>;

/// How a value of one type is stored and read back, for a working value whose type
/// only the call that made it knows.
struct Codec {
    compact: fn(&dyn Any) -> std::result::Result<Vec<u8>, SerializeError>,
    write: for<'w> fn(
        &dyn Any,
        Format,
        &mut TempWriter<'w>,
    ) -> std::result::Result<(), SerializeError>,
    parse: fn(&[u8], &Path) -> Result<Erased>,
}

struct Typed<T>(std::marker::PhantomData<T>);

impl<T: Serialize + DeserializeOwned + Send + 'static> Typed<T> {
    const CODEC: Codec = Codec {
        compact: |v| {
            let mut out = Vec::new();
            json::serialize_into(downcast::<T>(v), Format::Compact, &mut out)?;
            Ok(out)
        },
        write: |v, format, w| json::serialize_into(downcast::<T>(v), format, w),
        parse: |b, path| Ok(Box::new(json::parse::<T>(b, path)?)),
    };
}

fn downcast<T: 'static>(v: &dyn Any) -> &T {
    v.downcast_ref::<T>()
        .expect("a codec is only used with the type that made it")
}

/// The working value of a batch.
enum Work {
    /// The document as it is on disk.
    Disk,
    /// A whole value as JSON: a write's bytes (`exact`: the document's bytes in the
    /// batch's format) or the undo kept before a change (compact, `codec` its type).
    Bytes {
        bytes: Vec<u8>,
        exact: bool,
        codec: Option<&'static Codec>,
    },
    /// A value a change made (by member `by`); `undo` is the value before it.
    Value {
        value: Erased,
        codec: &'static Codec,
        undo: Box<Work>,
        by: usize,
    },
    /// A write by member `by` whose value is still on its caller's stack: only while
    /// that caller holds the baton.
    Deferred { prev: Box<Work>, by: usize },
}

/// What is on disk, looked at lazily under the lock.
struct Disk {
    /// `None`: no document.
    meta: Option<Metadata>,
    bytes: Option<Vec<u8>>,
    /// Whether `bytes` parse as JSON, once known.
    parses: Option<bool>,
    seen: Option<Seen>,
    /// The size limit ([`Options::max_document_bytes`]): a larger file is not hashed.
    max: u64,
}

impl Disk {
    fn probe(w: &Locked, max: u64) -> Result<Disk> {
        let meta = match Current::probe(w, false, max)? {
            Current::Missing => None,
            Current::File { meta, .. } | Current::TooLarge { meta, .. } => Some(meta),
        };
        Ok(Disk {
            meta,
            bytes: None,
            parses: None,
            seen: None,
            max,
        })
    }

    /// The document's bytes, `None` if there is none.
    fn read(&mut self, w: &Locked, max: u64) -> Result<Option<&[u8]>> {
        if self.meta.is_none() {
            return Ok(None);
        }
        if self.bytes.is_none() {
            let t = &w.target;
            let (bytes, meta) = file::read(w.dir.as_ref(), &t.name, &t.path, max)?;
            self.meta = Some(meta);
            self.bytes = Some(bytes);
        }
        Ok(self.bytes.as_deref())
    }

    /// Its version and whether it parses, `None` if there is no document.
    /// [`Error::too_large`] for a file over the limit, which is not hashed.
    fn seen(&mut self, w: &Locked) -> Result<Option<&Seen>> {
        let Some(meta) = &self.meta else {
            return Ok(None);
        };
        let t = &w.target;
        let too_large = || {
            let size = (meta.len > self.max).then_some(meta.len);
            Error::over_limit("check the version of", &t.path, size, self.max)
        };
        if self.bytes.is_none() && meta.len > self.max {
            return Err(too_large());
        }
        if self.seen.is_none() {
            let seen = match &self.bytes {
                Some(b) => Seen {
                    version: Version::of(b),
                    parses: *self.parses.get_or_insert_with(|| {
                        serde_json::from_slice::<serde::de::IgnoredAny>(b).is_ok()
                    }),
                },
                None => match file::inspect_within(w.dir.as_ref(), &t.name, &t.path, self.max)? {
                    Some(seen) => seen,
                    None => return Err(too_large()),
                },
            };
            self.seen = Some(seen);
        }
        Ok(self.seen.as_ref())
    }

    fn current(&mut self, w: &Locked, look: bool) -> Result<Current> {
        let Some(meta) = self.meta else {
            return Ok(Current::Missing);
        };
        let seen = if look || self.bytes.is_some() {
            match self.seen(w) {
                Ok(seen) => seen.cloned(),
                Err(e) if e.too_large().is_some() => {
                    return Ok(Current::TooLarge {
                        meta,
                        max: self.max,
                    });
                }
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        Ok(Current::File { meta, seen })
    }
}

struct Member {
    slot: Arc<Slot>,
    ok: bool,
    /// Its change ran on a working value holding earlier changes of the batch.
    dirty: bool,
    /// Its change failed on such a value: it waits for the batch's outcome before it
    /// returns (what it saw may never exist).
    waits: bool,
    /// Its change succeeded on such a value but was blamed later (its value cannot be
    /// stored): the failure it gets once the batch's write succeeded.
    held: Option<Fail>,
}

/// A batch in progress: the lock, the working value, the members so far. Handed from
/// thread to thread, to the caller whose change comes next.
pub(crate) struct Baton {
    locked: Locked,
    /// The identity (device, inode) of the locked directory, which every write of the
    /// batch goes through.
    dir: (u64, u64),
    disk: Disk,
    work: Work,
    members: Vec<Member>,
    successes: usize,
    durability: Durability,
    verify: bool,
    format: Format,
    backups: usize,
    perms: Perms,
    max_calls: usize,
    max_bytes: u64,
    max_document: u64,
    bytes: u64,
    started: Instant,
    temp_created: Option<TempHook>,
}

/// Whether two calls announce temp files to the same hook ([`Options::on_temp_created`]).
fn same_hook(a: Option<&TempHook>, b: Option<&TempHook>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.same(b),
        _ => false,
    }
}

fn strength(d: Durability) -> u8 {
    match d {
        Durability::None => 0,
        Durability::Data => 1,
        Durability::Full => 2,
    }
}

impl Baton {
    fn new(locked: Locked, dir: (u64, u64), disk: Disk, first: &Meta, started: Instant) -> Baton {
        Baton {
            locked,
            dir,
            disk,
            work: Work::Disk,
            members: Vec::new(),
            successes: 0,
            durability: first.durability,
            verify: first.verify,
            format: first.format,
            backups: first.backups,
            perms: first.perms,
            max_calls: first.max_calls,
            max_bytes: first.max_bytes,
            max_document: first.max_document,
            bytes: 0,
            started,
            temp_created: first.temp_created.clone(),
        }
    }

    /// Take `slot` in as the next member; returns its index.
    fn admit(&mut self, slot: &Arc<Slot>) -> usize {
        let m = &slot.meta;
        if strength(m.durability) > strength(self.durability) {
            self.durability = m.durability;
        }
        self.verify |= m.verify;
        self.max_calls = self.max_calls.min(m.max_calls);
        self.max_bytes = self.max_bytes.min(m.max_bytes);
        self.members.push(Member {
            slot: slot.clone(),
            ok: false,
            dirty: self.successes > 0,
            waits: false,
            held: None,
        });
        self.members.len() - 1
    }

    /// Whether `next` may join this batch now.
    fn may_take(&self, next: &Meta) -> bool {
        self.members.len() < self.max_calls.min(next.max_calls)
            && self.bytes < self.max_bytes.min(next.max_bytes)
            && next.path == self.locked.target.path
            && next.dir == self.dir
            && next.format == self.format
            && next.backups == self.backups
            && next.perms == self.perms
            && next.max_document == self.max_document
            && same_hook(next.temp_created.as_ref(), self.temp_created.as_ref())
            && !(next.conditional && self.successes > 0)
    }

    fn succeeded(&mut self, me: usize) {
        self.members[me].ok = true;
        self.successes += 1;
    }

    /// Member `by`'s change, which succeeded, turned out to fail after all (its value
    /// cannot be stored): answer it now, or once the batch is written if its change saw
    /// earlier changes of the batch (which may never be committed).
    fn blame(&mut self, by: usize, why: Fail) {
        let m = &mut self.members[by];
        if m.ok {
            m.ok = false;
            self.successes -= 1;
        }
        if m.dirty {
            m.waits = true;
            m.held = Some(why);
        } else {
            answer(&m.slot, Err(why));
        }
    }

    fn undo_len(&self) -> u64 {
        match &self.work {
            Work::Bytes { bytes, .. } => bytes.len() as u64,
            Work::Disk => self.disk.meta.map_or(0, |m| m.len),
            _ => 0,
        }
    }

    /// Before a change: if the working value is one an earlier change made, keep it as
    /// compact JSON (the undo, which also proves that change's value can be stored; if
    /// not, that change fails and its own undo comes back). Returns the value itself
    /// when there was one, for a change of the same type to take over.
    fn settle_value(&mut self) -> Option<Erased> {
        loop {
            let Work::Value {
                value, codec, by, ..
            } = &self.work
            else {
                return None;
            };
            let (codec, by) = (*codec, *by);
            let kept = panic::catch_unwind(AssertUnwindSafe(|| (codec.compact)(&**value)));
            let failed = match kept {
                Ok(Ok(bytes)) => {
                    let exact = self.format == Format::Compact;
                    let old = std::mem::replace(
                        &mut self.work,
                        Work::Bytes {
                            bytes,
                            exact,
                            codec: Some(codec),
                        },
                    );
                    let Work::Value { value, .. } = old else {
                        unreachable!("matched above")
                    };
                    return Some(value);
                }
                Ok(Err(e)) => Fail::Error(self.serialize_error(by, e)),
                Err(p) => Fail::Panic(p),
            };
            let Work::Value { undo, .. } = std::mem::replace(&mut self.work, Work::Disk) else {
                unreachable!("matched above")
            };
            self.work = *undo;
            self.blame(by, failed);
        }
    }

    /// Member `who`'s value could not be stored: the error names the document as that
    /// member named it.
    fn serialize_error(&self, who: usize, e: SerializeError) -> Error {
        let path = &self.locked.target.path;
        match e {
            SerializeError::Value(msg) => Error::new(
                ErrorKind::Serialize,
                format!(
                    "cannot write {}: {msg}",
                    self.members[who].slot.meta.shown.display()
                ),
            )
            .with_path(path),
            SerializeError::Io(e) => Error::io("serialize", path, e),
        }
    }

    /// The value of type `T` for member `me`'s change: from the document on disk (or
    /// `init` if there is none), or from the working value's JSON. Its errors name the
    /// document as that member named it (their `path()` is the resolved file, as a
    /// read's).
    fn input<T: DeserializeOwned>(
        &mut self,
        me: usize,
        init: Option<&mut (dyn FnMut() -> T + '_)>,
    ) -> Result<T> {
        let slot = self.members[me].slot.clone();
        let shown = &slot.meta.shown;
        let t = &self.locked.target;
        match &self.work {
            Work::Disk => match self.disk.read(&self.locked, self.max_document)? {
                None => match init {
                    Some(init) => Ok(init()),
                    None => Err(Error::new(
                        ErrorKind::NotFound,
                        format!("cannot update {}: it does not exist", shown.display()),
                    )
                    .with_path(&t.path)),
                },
                Some(bytes) => {
                    let parsed = json::parse::<T>(bytes, shown);
                    let corrupt = matches!(&parsed, Err(e) if e.kind() == ErrorKind::Corrupt);
                    // What the write needs to know of the document (its version, for
                    // the receipt and a backup), seen once.
                    let seen = Seen {
                        version: Version::of(bytes),
                        parses: !corrupt,
                    };
                    let parsed = parsed.map_err(|e| {
                        cannot_update_damaged(
                            &self.locked,
                            shown,
                            &seen.version,
                            e,
                            self.max_document,
                        )
                    });
                    self.disk.parses = Some(seen.parses);
                    self.disk.seen = Some(seen);
                    parsed
                }
            },
            Work::Bytes { bytes, .. } => json::parse::<T>(bytes, shown),
            Work::Value { .. } | Work::Deferred { .. } => {
                unreachable!("settled before a change and before the baton moves")
            }
        }
    }

    /// A change by member `me` succeeded with `value`.
    fn set_value<T: Serialize + DeserializeOwned + Send + 'static>(&mut self, value: T, me: usize) {
        let undo = std::mem::replace(&mut self.work, Work::Disk);
        self.work = Work::Value {
            value: Box::new(value),
            codec: &Typed::<T>::CODEC,
            undo: Box::new(undo),
            by: me,
        };
        self.succeeded(me);
    }

    /// The version on disk, `None` if there is no document.
    fn disk_version(&mut self) -> Result<Option<Version>> {
        Ok(self.disk.seen(&self.locked)?.map(|s| s.version.clone()))
    }

    /// A conditional call's check, at the start of a batch (where the on-disk version
    /// is known): the document is at `expected`, or it is damaged (empty, or not JSON)
    /// and `expected` is the version a fallback read serves for it now, its newest good
    /// backup's (as `parse` reads backups). The latter is what the caller saw, so the
    /// call proceeds on that backup's value and its write repairs the document (which
    /// the replace keeps as `.name.corrupt`). Otherwise `Conflict`.
    fn check<U>(
        &mut self,
        me: usize,
        expected: &Version,
        parse: impl Fn(&[u8]) -> Option<U>,
    ) -> Result<Matched<U>> {
        let found = self.disk.seen(&self.locked)?.cloned();
        let t = &self.locked.target;
        match &found {
            Some(s) if &s.version == expected => return Ok(Matched::Disk),
            Some(s) if !s.parses => {
                let dir = self.locked.dir.as_ref();
                let backups = backup::backup_files(dir, t)?;
                if let Some(good) = newest_good(dir, t, &backups, self.max_document, parse)
                    && &good.version == expected
                {
                    return Ok(Matched::Served(good.value));
                }
            }
            _ => {}
        }
        let shown = &self.members[me].slot.meta.shown;
        Err(conflict(
            shown,
            t,
            expected,
            found.as_ref().map(|s| &s.version),
        ))
    }
}

/// What a conditional call's version matched.
enum Matched<U> {
    /// The document on disk.
    Disk,
    /// The backup a fallback read serves for the damaged document: its value.
    Served(U),
}

/// What one call does to the working value, on the caller's own thread.
trait Step {
    /// Apply the change, as member `me`. On failure the working value is as before.
    fn apply(&mut self, b: &mut Baton, me: usize) -> std::result::Result<(), Fail>;
    /// Before the baton leaves this thread: nothing of the change may stay on its stack.
    fn settle(&mut self, b: &mut Baton, me: usize) -> std::result::Result<(), Fail> {
        let _ = (b, me);
        Ok(())
    }
    /// Write a deferred value (this call's, the last change of the batch).
    fn body(
        &self,
        format: Format,
        w: &mut TempWriter<'_>,
    ) -> std::result::Result<(), SerializeError>;
}

/// A read-modify-write.
struct Update<'e, 'i, 'c, T> {
    expected: Option<&'e Version>,
    init: Option<&'i mut dyn FnMut() -> T>,
    /// The caller's change; true if it succeeded.
    change: &'c mut dyn FnMut(&mut T) -> bool,
}

impl<T: Serialize + DeserializeOwned + Send + 'static> Step for Update<'_, '_, '_, T> {
    fn apply(&mut self, b: &mut Baton, me: usize) -> std::result::Result<(), Fail> {
        let served = match self.expected {
            Some(expected) => match b.check(me, expected, json::parse_ok::<T>)? {
                Matched::Disk => None,
                Matched::Served(value) => Some(value),
            },
            None => None,
        };
        let taken = b.settle_value();
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| -> Result<bool> {
            b.bytes += b.undo_len();
            let mut value = match (served, taken.and_then(|v| v.downcast::<T>().ok())) {
                (Some(v), _) => v,
                (None, Some(v)) => *v,
                (None, None) => b.input::<T>(me, self.init.as_deref_mut())?,
            };
            if (self.change)(&mut value) {
                b.set_value(value, me);
                Ok(true)
            } else {
                Ok(false)
            }
        }));
        match outcome {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(Fail::Own),
            Ok(Err(e)) => Err(Fail::Error(e)),
            Err(p) => Err(Fail::Panic(p)),
        }
    }

    fn body(&self, _: Format, _: &mut TempWriter<'_>) -> std::result::Result<(), SerializeError> {
        unreachable!("an update never defers its value")
    }
}

/// A precondition of a write.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Cond<'a> {
    /// None.
    Any,
    /// The document exists at this version.
    IfMatch(&'a Version),
    /// The document does not exist.
    Absent,
}

/// A write of a whole value.
struct Put<'a, T> {
    cond: Cond<'a>,
    value: &'a T,
}

impl<T: Serialize + DeserializeOwned> Step for Put<'_, T> {
    fn apply(&mut self, b: &mut Baton, me: usize) -> std::result::Result<(), Fail> {
        match self.cond {
            Cond::Any => {}
            Cond::IfMatch(expected) => {
                b.check(me, expected, |bytes| json::parse_ok::<T>(bytes).map(drop))?;
            }
            Cond::Absent => {
                // A file over the size limit exists too, with no version computed.
                let version = match b.disk_version() {
                    Err(e) if e.too_large().is_some() => None,
                    found => found?,
                };
                if b.disk.meta.is_some() {
                    let shown = &b.members[me].slot.meta.shown;
                    let e = Error::new(
                        ErrorKind::Conflict,
                        format!("cannot create {}: it already exists", shown.display()),
                    )
                    .with_path(&b.locked.target.path);
                    return Err(match version {
                        Some(v) => e.with_version(v),
                        None => e,
                    }
                    .into());
                }
            }
        }
        let prev = std::mem::replace(&mut b.work, Work::Disk);
        b.work = Work::Deferred {
            prev: Box::new(prev),
            by: me,
        };
        b.succeeded(me);
        Ok(())
    }

    fn settle(&mut self, b: &mut Baton, me: usize) -> std::result::Result<(), Fail> {
        if !matches!(b.work, Work::Deferred { by, .. } if by == me) {
            return Ok(());
        }
        let format = b.format;
        let value = self.value;
        let made = panic::catch_unwind(AssertUnwindSafe(|| {
            let mut out = Vec::new();
            json::serialize_into(value, format, &mut out).map(|()| out)
        }));
        let Work::Deferred { prev, .. } = std::mem::replace(&mut b.work, Work::Disk) else {
            unreachable!("matched above")
        };
        let failed = match made {
            Ok(Ok(bytes)) => {
                b.bytes += bytes.len() as u64;
                b.work = Work::Bytes {
                    bytes,
                    exact: true,
                    codec: None,
                };
                return Ok(());
            }
            Ok(Err(e)) => Fail::Error(b.serialize_error(me, e)),
            Err(p) => Fail::Panic(p),
        };
        b.work = *prev;
        b.members[me].ok = false;
        b.successes -= 1;
        Err(failed)
    }

    fn body(
        &self,
        format: Format,
        w: &mut TempWriter<'_>,
    ) -> std::result::Result<(), SerializeError> {
        json::serialize_into(self.value, format, w)
    }
}

/// Who is calling: the document as the caller named it, and its settings.
pub(crate) struct Call<'a> {
    pub path: &'a Path,
    pub confine: Option<&'a Path>,
    pub opts: &'a Options,
    pub poison: Option<&'a Arc<AtomicBool>>,
}

/// A read-modify-write of the document: `change` runs on the value (on this thread)
/// and returns whether it succeeded.
pub(crate) fn update<T: Serialize + DeserializeOwned + Send + 'static>(
    call: &Call<'_>,
    expected: Option<&Version>,
    init: Option<&mut dyn FnMut() -> T>,
    change: &mut dyn FnMut(&mut T) -> bool,
) -> std::result::Result<Receipt, Fail> {
    let mut step = Update {
        expected,
        init,
        change,
    };
    run(call, expected.is_some(), &mut step)
}

/// A write of `value` (the whole document), if `cond` holds.
pub(crate) fn write<T: Serialize + DeserializeOwned>(
    call: &Call<'_>,
    cond: Cond<'_>,
    value: &T,
) -> std::result::Result<Receipt, Fail> {
    let mut step = Put { cond, value };
    run(call, !matches!(cond, Cond::Any), &mut step)
}

impl Queue {
    /// Queue `slot`; true if it leads (no batch was in progress).
    fn join(&self, slot: &Arc<Slot>) -> bool {
        let mut st = locked(&self.state);
        st.pending.push_back(slot.clone());
        !std::mem::replace(&mut st.leading, true)
    }

    /// The front call leads the next batch; or nobody, if none is queued.
    fn elect(st: &mut QueueState) {
        match st.pending.front() {
            Some(front) => {
                *locked(&front.state) = SlotState::Lead;
                front.wake.notify_one();
            }
            None => st.leading = false,
        }
    }

    /// The leader `slot` could not begin its batch: out of the queue, and the next leads.
    fn resign(&self, slot: &Arc<Slot>) {
        let mut st = locked(&self.state);
        st.pending.retain(|s| !Arc::ptr_eq(s, slot));
        Queue::elect(&mut st);
    }

    /// The leader `slot` begins its batch: out of the queue (it is at the front).
    fn begin(&self, slot: &Arc<Slot>) {
        let mut st = locked(&self.state);
        let front = st.pending.pop_front();
        debug_assert!(front.is_some_and(|f| Arc::ptr_eq(&f, slot)));
    }

    /// The next call for the batch, if it may join.
    fn take(&self, b: &Baton) -> Option<Arc<Slot>> {
        let mut st = locked(&self.state);
        if !b.may_take(&st.pending.front()?.meta) {
            return None;
        }
        let next = st.pending.pop_front()?;
        *locked(&next.state) = SlotState::Taken;
        Some(next)
    }

    /// The batch is over: the next queued call leads.
    fn end(&self) {
        Queue::elect(&mut locked(&self.state));
    }

    /// How many calls for `path` wait in this queue.
    pub(crate) fn queued(&self, path: &Path) -> usize {
        let st = locked(&self.state);
        st.pending.iter().filter(|s| s.meta.path == path).count()
    }

    /// Take a waiting `slot` out of the queue; false if it was taken or told to lead.
    fn withdraw(&self, slot: &Arc<Slot>) -> bool {
        let mut st = locked(&self.state);
        if !matches!(*locked(&slot.state), SlotState::Waiting) {
            return false;
        }
        st.pending.retain(|s| !Arc::ptr_eq(s, slot));
        true
    }
}

fn answer(slot: &Slot, result: std::result::Result<Receipt, Fail>) {
    *locked(&slot.state) = SlotState::Done(result);
    slot.wake.notify_one();
}

/// What a queued call is woken for.
enum Woken {
    Lead,
    Turn(Box<Baton>),
    Done(std::result::Result<Receipt, Fail>),
}

/// Wait in the queue until this call leads, has its turn, or is answered; withdraw
/// with `LockTimeout` if neither happened by `deadline`.
fn wait(
    q: &Queue,
    slot: &Arc<Slot>,
    deadline: Instant,
    timeout: Duration,
) -> std::result::Result<Woken, Fail> {
    let mut st = locked(&slot.state);
    loop {
        match std::mem::replace(&mut *st, SlotState::Over) {
            SlotState::Lead => return Ok(Woken::Lead),
            SlotState::Turn(b) => return Ok(Woken::Turn(b)),
            SlotState::Done(r) => return Ok(Woken::Done(r)),
            SlotState::Over => unreachable!("answers are collected once"),
            waiting @ (SlotState::Waiting | SlotState::Taken) => {
                let queued = matches!(waiting, SlotState::Waiting);
                *st = waiting;
                let now = Instant::now();
                if !queued {
                    st = slot.wake.wait(st).unwrap_or_else(|e| e.into_inner());
                } else if now < deadline {
                    st = slot
                        .wake
                        .wait_timeout(st, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                } else {
                    drop(st);
                    if q.withdraw(slot) {
                        let path = &slot.meta.path;
                        return Err(Fail::Error(
                            Error::new(
                                ErrorKind::LockTimeout,
                                format!(
                                    "cannot lock {}: other writers held it for more than {:.1}s",
                                    path.display(),
                                    timeout.as_secs_f64()
                                ),
                            )
                            .with_path(path),
                        ));
                    }
                    st = locked(&slot.state);
                }
            }
        }
    }
}

/// Wait for the answer after this call's turn.
fn wait_done(slot: &Slot) -> std::result::Result<Receipt, Fail> {
    let mut st = locked(&slot.state);
    loop {
        match std::mem::replace(&mut *st, SlotState::Over) {
            SlotState::Done(r) => return r,
            other => {
                *st = other;
                st = slot.wake.wait(st).unwrap_or_else(|e| e.into_inner());
            }
        }
    }
}

/// The baton while this thread holds it. If the thread unwinds with it (a bug: every
/// caller's code runs under `catch_unwind`), the batch is abandoned cleanly: its
/// members are answered with an error, the lock released, the next call leads.
struct Holding<'q> {
    queue: &'q Queue,
    baton: Option<Box<Baton>>,
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        if let Some(b) = self.baton.take() {
            let path = b.locked.target.path.clone();
            let members = b.members;
            drop(b.locked);
            self.queue.end();
            for m in members.iter().filter(|m| m.ok || m.waits) {
                answer(
                    &m.slot,
                    Err(Fail::Error(
                        Error::new(
                            ErrorKind::Io,
                            format!(
                                "cannot write {}: the batch was abandoned (a panic while writing); \
                                 nothing of it was written",
                                path.display()
                            ),
                        )
                        .with_path(&path),
                    )),
                );
            }
        }
    }
}

/// The identity (device, inode) of the opened directory `dir` (named `path`).
fn dir_identity(dir: &dyn crate::fs::FsDir, path: &Path) -> Result<(u64, u64)> {
    let m = dir
        .metadata()
        .map_err(|e| Error::io("stat directory", path, e))?;
    Ok((m.dev, m.ino))
}

fn refuse_if_poisoned(meta: &Meta) -> Result<()> {
    atomic::refuse_if_poisoned(meta.poison.as_deref(), "write", &meta.path)
}

/// One call: join the queue, lead or wait for a turn, apply the change, and pass the
/// baton on or write the batch.
fn run(
    call: &Call<'_>,
    conditional: bool,
    step: &mut dyn Step,
) -> std::result::Result<Receipt, Fail> {
    let called = Instant::now();
    let opts = call.opts;
    let prepared = Prepared::open(call.path, call.confine, opts)?;
    let dir = dir_identity(prepared.dir.as_ref(), &prepared.target.dir)?;
    let joined = Instant::now();
    let (max_calls, max_bytes) = opts.get_max_batch();
    let slot = Arc::new(Slot {
        meta: Meta {
            path: prepared.target.path.clone(),
            dir,
            shown: shown(call.path, call.confine, &prepared.target).to_path_buf(),
            format: opts.format,
            backups: opts.backups,
            perms: opts.perms,
            durability: opts.durability,
            verify: opts.verify,
            max_calls,
            max_bytes,
            max_document: opts.max_document_bytes,
            conditional,
            joined,
            poison: call.poison.cloned(),
            temp_created: opts.temp_created.clone(),
        },
        state: Mutex::new(SlotState::Waiting),
        wake: Condvar::new(),
    });
    refuse_if_poisoned(&slot.meta)?;
    let entry = prepared.entry.clone();
    let q = &entry.shared().batch;
    let deadline = lock::deadline(called, opts.lock_timeout);
    let mut prepared = Some(prepared);
    // A call that leads at once counts its batch from joining: it queued for nothing.
    let mut lead = q.join(&slot).then_some(joined);
    let baton = loop {
        if let Some(started) = lead {
            let prepared = prepared.take().expect("a call leads at most once");
            break begin(q, &slot, prepared, call, started, deadline)?;
        }
        match wait(q, &slot, deadline, opts.lock_timeout)? {
            Woken::Lead => lead = Some(Instant::now()),
            Woken::Turn(b) => break b,
            Woken::Done(r) => return r,
        }
    };
    drop(prepared);
    let mut hold = Holding {
        queue: q,
        baton: Some(baton),
    };
    let b = hold.baton.as_mut().expect("held");
    let me = b.admit(&slot);
    // Whether this change runs on a value earlier changes of the batch made (not yet
    // written): then even a failed change waits for the batch, since what it saw may
    // never be committed.
    let dirty = b.members[me].dirty;
    let mut mine = refuse_if_poisoned(&slot.meta)
        .map_err(Fail::Error)
        .and_then(|()| step.apply(b, me));
    if let Some(next) = q.take(b) {
        if mine.is_ok() {
            mine = step.settle(b, me);
        }
        let waits = mine.is_err() && dirty;
        b.members[me].waits = waits;
        let b = hold.baton.take().expect("held");
        *locked(&next.state) = SlotState::Turn(b);
        next.wake.notify_one();
        return match mine {
            Ok(()) => wait_done(&slot),
            Err(f) if waits => after_batch(wait_done(&slot), f),
            Err(f) => Err(f),
        };
    }
    let waits = mine.is_err() && dirty;
    finish(hold, step, me, mine, waits)
}

/// The answer of a call whose change failed (`own`) on a value holding earlier changes
/// of its batch, given the batch's `outcome`: its own failure once the batch is written
/// (or when nothing was to be written), the batch's error if the write failed.
fn after_batch(
    outcome: std::result::Result<Receipt, Fail>,
    own: Fail,
) -> std::result::Result<Receipt, Fail> {
    match outcome {
        Ok(_) | Err(Fail::Own) => Err(own),
        Err(batch) => Err(batch),
    }
}

/// Lead: take the lock, bind the write to the tree's journal (one journal record and
/// flush for the whole batch, in journal mode), and begin a batch.
fn begin(
    q: &Queue,
    slot: &Arc<Slot>,
    prepared: Prepared,
    call: &Call<'_>,
    started: Instant,
    deadline: Instant,
) -> std::result::Result<Box<Baton>, Fail> {
    let wait = lock::Wait {
        start: started,
        deadline,
        timeout: call.opts.lock_timeout,
    };
    let mut prepared = prepared;
    let mut closed = None;
    let opened = loop {
        match prepared
            .lock(wait)
            .and_then(|w| w.bind(call.opts, &mut closed))
        {
            Ok(Some(w)) => {
                break dir_identity(w.dir.as_ref(), &w.target.dir).and_then(|dir| {
                    Disk::probe(&w, call.opts.max_document_bytes).map(|disk| (dir, disk, w))
                });
            }
            // The lock was released to settle the journal: take it again.
            Ok(None) => match Prepared::open(call.path, call.confine, call.opts) {
                Ok(p) => prepared = p,
                Err(e) => break Err(e),
            },
            Err(e) => break Err(e),
        }
    };
    match opened {
        Ok((dir, disk, w)) => {
            q.begin(slot);
            Ok(Box::new(Baton::new(w, dir, disk, &slot.meta, started)))
        }
        Err(e) => {
            q.resign(slot);
            Err(Fail::Error(e))
        }
    }
}

/// The batch stops here: write it (the one replace of the batch), release the lock,
/// hand the lead on, answer every member.
fn finish(
    mut hold: Holding<'_>,
    step: &mut dyn Step,
    me: usize,
    mine: std::result::Result<(), Fail>,
    waits: bool,
) -> std::result::Result<Receipt, Fail> {
    let b = hold.baton.as_mut().expect("held");
    let written = write_batch(b, step);
    let b = hold.baton.take().expect("held");
    let Baton {
        locked: w,
        mut members,
        successes,
        started,
        ..
    } = *b;
    let lock_wait = w.lock.waited();
    drop(w);
    hold.queue.end();
    // A journal flush lock not had in time is no failed sync: the disk is as known as
    // before, and the store goes on (the commit stays in flight for the next writer).
    if let Some(Err(e)) = &written
        && e.kind() == ErrorKind::Durability
        && !crate::error::caused_by_lock_timeout(e)
    {
        for m in members.iter().filter(|m| m.ok) {
            if let Some(p) = &m.slot.meta.poison {
                p.store(true, Ordering::SeqCst);
            }
        }
    }
    let result_for = |m: &Member| match &written {
        Some(Ok(r)) => {
            let mut r = r.clone();
            r.lock_wait = lock_wait;
            r.batch = successes;
            r.queued = started.saturating_duration_since(m.slot.meta.joined);
            Ok(r)
        }
        Some(Err(e)) => Err(Fail::Error(e.duplicate())),
        // No change succeeded: only members whose change failed are answered, each
        // with its own failure.
        None => Err(Fail::Own),
    };
    let mut own = None;
    for (i, m) in members.iter_mut().enumerate() {
        if !m.ok && !m.waits {
            continue;
        }
        let r = match m.held.take() {
            Some(blamed) => after_batch(result_for(m), blamed),
            None => result_for(m),
        };
        if i == me {
            own = Some(r);
        } else {
            answer(&m.slot, r);
        }
    }
    match mine {
        Ok(()) => own.unwrap_or_else(|| {
            // This call's change succeeded, yet it was blamed (its value could not be
            // stored) while writing: its answer is waiting in its slot.
            wait_done(&members[me].slot)
        }),
        Err(f) if waits => after_batch(result_for(&members[me]), f),
        Err(f) => Err(f),
    }
}

/// Write the working value: the batch's one replace (a journal would append the
/// batch's bytes here). A value that cannot be stored fails the change that made it,
/// and the value before it is written instead. `None` when no change succeeded.
fn write_batch(b: &mut Baton, step: &dyn Step) -> Option<Result<Receipt>> {
    loop {
        if b.successes == 0 {
            return None;
        }
        let current = match b.disk.current(&b.locked, b.backups > 0) {
            Ok(c) => c,
            Err(e) => return Some(Err(e)),
        };
        let plan = Plan {
            durability: b.durability,
            backups: b.backups,
            verify: if b.verify { Verify::Json } else { Verify::No },
            perms: b.perms,
            poison: None,
            temp_created: b.temp_created.as_ref(),
            max_bytes: b.max_document,
        };
        let (format, work, w) = (b.format, &b.work, &b.locked);
        // Only the body (the working value's serialization) is a change's fault: a
        // value that cannot be stored, or a panic while serializing it. Anything else
        // that fails during the replace (I/O, the temp-file hook) fails the batch.
        let mut fault: Option<Fail> = None;
        // The change's own refusal, for an error that names the document as it did.
        let mut refused: Option<String> = None;
        let done = panic::catch_unwind(AssertUnwindSafe(|| {
            atomic::replace(w, &plan, &current, &mut |out| {
                let body = panic::catch_unwind(AssertUnwindSafe(|| {
                    match work {
                        Work::Deferred { .. } => step.body(format, out),
                        Work::Value { value, codec, .. } => (codec.write)(&**value, format, out),
                        Work::Bytes {
                            bytes, exact: true, ..
                        } => out.write_all(bytes).map_err(SerializeError::Io),
                        Work::Bytes {
                            bytes,
                            codec: Some(codec),
                            ..
                        } => {
                            let value = (codec.parse)(bytes, &w.target.path)
                                .map_err(|e| SerializeError::Value(e.to_string()))?;
                            (codec.write)(&*value, format, out)
                        }
                        Work::Bytes { codec: None, .. } | Work::Disk => {
                            unreachable!("a change succeeded, so the value is not the disk's")
                        }
                    }
                    // Through the hasher, so that a value over the size limit is found
                    // here, the last change's fault, and not when the replace flushes.
                    .and_then(|()| out.flush().map_err(SerializeError::Io))
                }));
                match body {
                    Ok(Err(SerializeError::Value(msg))) => {
                        fault = Some(Fail::Own);
                        refused = Some(msg.clone());
                        Err(SerializeError::Value(msg))
                    }
                    // Over the size limit: the last change made the value too large;
                    // the batch goes on without it.
                    Ok(Err(SerializeError::Io(e))) if over_limit(&e).is_some() => {
                        fault = Some(Fail::Own);
                        Err(SerializeError::Io(e))
                    }
                    Ok(r) => r,
                    Err(p) => {
                        let msg = format!("serializing it panicked: {}", panic_message(&*p));
                        fault = Some(Fail::Panic(p));
                        Err(SerializeError::Value(msg))
                    }
                }
            })
        }));
        let by = match &b.work {
            Work::Value { by, .. } | Work::Deferred { by, .. } => Some(*by),
            _ => None,
        };
        let failed = match (done, fault, by) {
            (Ok(Err(e)), Some(Fail::Own), Some(by)) => match refused {
                Some(msg) => (
                    by,
                    Fail::Error(b.serialize_error(by, SerializeError::Value(msg))),
                ),
                None => (by, Fail::Error(e)),
            },
            (Ok(_), Some(Fail::Panic(p)), Some(by)) => (by, Fail::Panic(p)),
            (Ok(r), _, _) => return Some(r),
            (Err(p), _, _) => {
                let path = &b.locked.target.path;
                return Some(Err(Error::new(
                    ErrorKind::Io,
                    format!(
                        "cannot write {}: the write panicked ({}); nothing of the batch was \
                         written",
                        path.display(),
                        panic_message(&*p)
                    ),
                )
                .with_path(path)));
            }
        };
        let prev = match std::mem::replace(&mut b.work, Work::Disk) {
            Work::Value { undo, .. } => *undo,
            Work::Deferred { prev, .. } => *prev,
            _ => unreachable!("blamed above"),
        };
        b.work = prev;
        b.blame(failed.0, failed.1);
    }
}

/// A panic's message, as far as it has one.
fn panic_message(p: &(dyn Any + Send)) -> &str {
    p.downcast_ref::<&str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message")
}
