//! An in-memory file system behind statefile's `Fs` seam that records every operation
//! and knows what a power loss may keep.
//!
//! The durability model (POSIX's, stricter than ext4's): a file's data and metadata are
//! durable only after an fsync/fdatasync of that file returned; a create, mkdir, link,
//! unlink or rename is durable only after an fsync of its directory returned. What is
//! not yet durable may, at a crash, be kept or lost independently of the rest, and a
//! write may tear. A rename itself is atomic.
//!
//! It can also fail any single call ([`Fault`]); after a failed fsync that file's
//! unsynced data never reaches the disk (no crash image holds it), and it is dropped
//! from the cache at once (`FaultKind::Errno`) or kept there, marked clean
//! (`FaultKind::ErrnoKeepPages`), as Linux does until it evicts them.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use statefile::fs::{
    DirEntry, FileType, Fs, FsDir, FsFile, FsLockFile, FsRwFile, LockMode, Metadata,
};

pub type Ino = u64;
const ROOT: Ino = 1;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Kind {
    File(Vec<u8>),
    Dir(BTreeMap<OsString, Ino>),
    Symlink(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Inode {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub time: u64,
}

/// One recorded operation. Marks are annotations by the workload (acknowledgements).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Create {
        dir: Ino,
        name: OsString,
        ino: Ino,
        mode: u32,
    },
    Mkdir {
        dir: Ino,
        name: OsString,
        ino: Ino,
    },
    Write {
        ino: Ino,
        offset: u64,
        data: Vec<u8>,
    },
    SetMeta {
        ino: Ino,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Link {
        dir: Ino,
        name: OsString,
        ino: Ino,
    },
    Unlink {
        dir: Ino,
        name: OsString,
        ino: Ino,
    },
    Rename {
        from_dir: Ino,
        from: OsString,
        to_dir: Ino,
        to: OsString,
        ino: Ino,
    },
    /// `RENAME_EXCHANGE` of names `a` and `b` in `dir`, which held `ino_a` and `ino_b`:
    /// atomic, durable with the directory.
    Exchange {
        dir: Ino,
        a: OsString,
        b: OsString,
        ino_a: Ino,
        ino_b: Ino,
    },
    /// A symlink made by hand (not by statefile, which makes none): see
    /// [`SimFs::symlink`].
    Symlink {
        dir: Ino,
        name: OsString,
        ino: Ino,
        target: PathBuf,
    },
    SyncFile {
        ino: Ino,
    },
    SyncDir {
        dir: Ino,
    },
    /// `syncfs(2)`: everything before it durable (the simulation is one file system).
    SyncFs,
    Mark(usize),
}

impl Op {
    /// Whether a sync at a later position makes this op durable.
    pub fn covered_by(&self, sync: &Op) -> bool {
        match (self, sync) {
            (op, Op::SyncFs) => op.is_change(),
            (Op::Write { ino, .. } | Op::SetMeta { ino, .. }, Op::SyncFile { ino: s }) => ino == s,
            (
                Op::Create { dir, .. }
                | Op::Mkdir { dir, .. }
                | Op::Link { dir, .. }
                | Op::Unlink { dir, .. }
                | Op::Symlink { dir, .. },
                Op::SyncDir { dir: s },
            ) => dir == s,
            (Op::Rename { to_dir, .. }, Op::SyncDir { dir: s }) => to_dir == s,
            (Op::Exchange { dir, .. }, Op::SyncDir { dir: s }) => dir == s,
            _ => false,
        }
    }

    /// Ops that change durable state (not syncs or marks).
    pub fn is_change(&self) -> bool {
        !self.is_sync() && !matches!(self, Op::Mark(_))
    }

    /// A sync: what makes earlier changes durable ([`Op::covered_by`]).
    pub fn is_sync(&self) -> bool {
        matches!(self, Op::SyncFile { .. } | Op::SyncDir { .. } | Op::SyncFs)
    }

    /// Whether this op changes the content or metadata of inode `ino`.
    pub fn touches(&self, ino: Ino) -> bool {
        matches!(self, Op::Write { ino: i, .. } | Op::SetMeta { ino: i, .. } if *i == ino)
    }
}

/// The part of the state that survives: inodes and the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub inodes: HashMap<Ino, Inode>,
    pub next_ino: Ino,
    pub clock: u64,
}

impl Default for Image {
    fn default() -> Self {
        let mut inodes = HashMap::new();
        inodes.insert(
            ROOT,
            Inode {
                kind: Kind::Dir(BTreeMap::new()),
                mode: 0o755,
                uid: 0,
                gid: 0,
                time: 0,
            },
        );
        Image {
            inodes,
            next_ino: 2,
            clock: 1,
        }
    }
}

impl Image {
    /// Every regular file's inode and contents.
    fn file_contents(&self) -> impl Iterator<Item = (Ino, Vec<u8>)> + '_ {
        self.inodes.iter().filter_map(|(i, n)| match &n.kind {
            Kind::File(c) => Some((*i, c.clone())),
            _ => None,
        })
    }

    fn entries_mut(&mut self, dir: Ino) -> Option<&mut BTreeMap<OsString, Ino>> {
        match self.inodes.get_mut(&dir).map(|i| &mut i.kind) {
            Some(Kind::Dir(e)) => Some(e),
            _ => None,
        }
    }

    fn ensure_inode(&mut self, ino: Ino, kind: Kind, mode: u32) {
        self.inodes.entry(ino).or_insert(Inode {
            kind,
            mode,
            uid: 0,
            gid: 0,
            time: 0,
        });
        self.next_ino = self.next_ino.max(ino + 1);
    }

    /// Apply one recorded op (`torn`: keep only part of a write).
    pub fn apply(&mut self, op: &Op, torn: Option<&Tear>) {
        self.clock += 1;
        match op {
            Op::Create {
                dir,
                name,
                ino,
                mode,
            } => {
                self.ensure_inode(*ino, Kind::File(Vec::new()), *mode);
                if let Some(e) = self.entries_mut(*dir) {
                    e.insert(name.clone(), *ino);
                }
            }
            Op::Mkdir { dir, name, ino } => {
                self.ensure_inode(*ino, Kind::Dir(BTreeMap::new()), 0o755);
                if let Some(e) = self.entries_mut(*dir) {
                    e.insert(name.clone(), *ino);
                }
            }
            Op::Write { ino, offset, data } => {
                self.ensure_inode(*ino, Kind::File(Vec::new()), 0o600);
                if let Some(Kind::File(content)) = self.inodes.get_mut(ino).map(|i| &mut i.kind) {
                    let data: Vec<u8> = match torn {
                        None => data.clone(),
                        Some(t) => t.apply(data),
                    };
                    let end = *offset as usize + data.len();
                    if content.len() < end {
                        content.resize(end, 0);
                    }
                    content[*offset as usize..end].copy_from_slice(&data);
                }
            }
            Op::SetMeta {
                ino,
                mode,
                uid,
                gid,
            } => {
                if let Some(i) = self.inodes.get_mut(ino) {
                    i.mode = *mode;
                    i.uid = *uid;
                    i.gid = *gid;
                }
            }
            // A name for an inode whose creation was lost is lost with it: no file
            // system persists a directory entry for an inode it never allocated.
            Op::Link { ino, .. } | Op::Rename { ino, .. } if !self.inodes.contains_key(ino) => {}
            Op::Link { dir, name, ino } => {
                if let Some(e) = self.entries_mut(*dir) {
                    e.insert(name.clone(), *ino);
                }
            }
            Op::Unlink { dir, name, ino } => {
                if let Some(e) = self.entries_mut(*dir)
                    && e.get(name) == Some(ino)
                {
                    e.remove(name);
                }
            }
            Op::Rename {
                from_dir,
                from,
                to_dir,
                to,
                ino,
            } => {
                if let Some(e) = self.entries_mut(*from_dir)
                    && e.get(from) == Some(ino)
                {
                    e.remove(from);
                }
                if let Some(e) = self.entries_mut(*to_dir) {
                    e.insert(to.clone(), *ino);
                }
            }
            // Kept only as it happened: both names holding what they held then (an
            // exchange whose inodes' creation was lost, or that an op lost before it
            // left elsewhere, has nothing to swap).
            Op::Exchange {
                dir,
                a,
                b,
                ino_a,
                ino_b,
            } => {
                if let Some(e) = self.entries_mut(*dir)
                    && e.get(a) == Some(ino_a)
                    && e.get(b) == Some(ino_b)
                {
                    e.insert(a.clone(), *ino_b);
                    e.insert(b.clone(), *ino_a);
                }
            }
            Op::Symlink {
                dir,
                name,
                ino,
                target,
            } => {
                self.ensure_inode(*ino, Kind::Symlink(target.clone()), 0o777);
                if let Some(e) = self.entries_mut(*dir) {
                    e.insert(name.clone(), *ino);
                }
            }
            Op::SyncFile { .. } | Op::SyncDir { .. } | Op::SyncFs | Op::Mark(_) => {}
        }
    }

    /// The inode at the absolute `path`, without following symlinks.
    pub fn lookup(&self, path: &str) -> Option<Ino> {
        let mut ino = ROOT;
        for name in path.split('/').filter(|s| !s.is_empty()) {
            match &self.inodes.get(&ino)?.kind {
                Kind::Dir(e) => ino = *e.get(OsStr::new(name))?,
                _ => return None,
            }
        }
        Some(ino)
    }

    /// Every file under `/` as (path, content); directories as (path/, empty).
    pub fn tree(&self) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut stack = vec![(String::new(), ROOT)];
        while let Some((prefix, dir)) = stack.pop() {
            if let Some(Inode {
                kind: Kind::Dir(e), ..
            }) = self.inodes.get(&dir)
            {
                for (name, ino) in e {
                    let p = format!("{prefix}/{}", name.to_string_lossy());
                    match self.inodes.get(ino).map(|i| &i.kind) {
                        Some(Kind::Dir(_)) => {
                            out.insert(format!("{p}/"), Vec::new());
                            stack.push((p, *ino));
                        }
                        Some(Kind::File(c)) => {
                            out.insert(p, c.clone());
                        }
                        Some(Kind::Symlink(t)) => {
                            out.insert(p, t.to_string_lossy().as_bytes().to_vec());
                        }
                        None => {
                            out.insert(p, b"<dangling inode>".to_vec());
                        }
                    }
                }
            }
        }
        out
    }
}

/// How a write tears: the first `keep` bytes are written, the rest of the range is
/// zeros, garbage, or missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tear {
    pub keep: usize,
    pub fill: Fill,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    Zeros,
    Garbage,
    Missing,
}

impl Tear {
    fn apply(&self, data: &[u8]) -> Vec<u8> {
        let keep = self.keep.min(data.len());
        let mut out = data[..keep].to_vec();
        match self.fill {
            Fill::Zeros => out.resize(data.len(), 0),
            Fill::Garbage => {
                out.extend((keep..data.len()).map(|i| (i as u8).wrapping_mul(31) ^ 0xa5))
            }
            Fill::Missing => {}
        }
        out
    }
}

/// Which call to fail, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// The 0-based number of the seam call to fail.
    pub at: u64,
    pub kind: FaultKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    Errno(i32),
    ShortWrite,
    /// For an fsync: fail with this errno but keep the unsynced data in the live state
    /// (Linux keeps the pages it could not write in the page cache, marked clean, until
    /// they are evicted; `Errno` models the eviction at once). Marked clean, they never
    /// reach the disk: the recorded writes are dropped from the log (crash images keep
    /// the old bytes), unless written again. (So they are after `Errno`.)
    ErrnoKeepPages(i32),
}

/// A one-shot stop before a seam call: the calling thread blocks in it until
/// [`Pause::resume`] (another thread plays a concurrent process meanwhile).
#[derive(Debug, Default)]
pub struct Pause {
    at: u64,
    /// 0: not reached; 1: a thread waits in it; 2: resumed.
    state: Mutex<u8>,
    cv: std::sync::Condvar,
    /// The kind of the call the thread is stopped before, once it is.
    call: Mutex<Option<Call>>,
}

impl Pause {
    /// Wait until a thread is stopped in it (false after `timeout`).
    pub fn wait_paused(&self, timeout: std::time::Duration) -> bool {
        let g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (g, _) = self
            .cv
            .wait_timeout_while(g, timeout, |s| *s == 0)
            .unwrap_or_else(|e| e.into_inner());
        *g >= 1
    }

    /// Let the stopped thread go on.
    pub fn resume(&self) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = 2;
        self.cv.notify_all();
    }

    /// The kind of the call the stopped thread is about to make (`None` before it
    /// reached the pause): a test can fail that call, knowing what it is.
    pub fn call(&self) -> Option<Call> {
        *self.call.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stop_here(&self, call: Call) {
        *self.call.lock().unwrap_or_else(|e| e.into_inner()) = Some(call);
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        *g = 1;
        self.cv.notify_all();
        while *g != 2 {
            g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// The kind of a seam call, for deciding which faults apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Call {
    Open,
    Read,
    Write,
    Lock,
    SyncFile,
    SyncDir,
    Rename,
    Link,
    /// `syncfs(2)`.
    SyncFs,
    Other,
}

#[derive(Debug, Default)]
struct State {
    live: Image,
    /// Per file inode: its content as of the last successful sync (for dropping
    /// unsynced data after a failed fsync).
    synced: HashMap<Ino, Vec<u8>>,
    log: Vec<Op>,
    recording: bool,
    calls: u64,
    call_kinds: Vec<Call>,
    fault: Option<Fault>,
    fault_fired: Option<Call>,
    /// Set when an `ErrnoKeepPages` fault fired (the sync keeps the live data).
    keep_pages: bool,
    pause: Option<Arc<Pause>>,
    locks: HashMap<Ino, Held>,
    next_ofd: u64,
    /// This machine's boot: a simulated power loss is a new boot.
    boot: u128,
}

/// Who holds a lock on an inode (by open file description, as `flock` counts).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Held {
    Exclusive(u64),
    Shared(Vec<u64>),
}

impl State {
    /// `flock(LOCK_NB)` for `ofd` on `ino`: taking the other mode converts the lock.
    fn try_flock(&mut self, ino: Ino, ofd: u64, mode: LockMode) -> bool {
        self.funlock(ino, ofd);
        match (self.locks.get_mut(&ino), mode) {
            (None, LockMode::Exclusive) => {
                self.locks.insert(ino, Held::Exclusive(ofd));
                true
            }
            (None, LockMode::Shared) => {
                self.locks.insert(ino, Held::Shared(vec![ofd]));
                true
            }
            (Some(Held::Shared(holders)), LockMode::Shared) => {
                holders.push(ofd);
                true
            }
            (Some(_), _) => false,
        }
    }

    fn funlock(&mut self, ino: Ino, ofd: u64) {
        let empty = match self.locks.get_mut(&ino) {
            Some(Held::Exclusive(h)) => *h == ofd,
            Some(Held::Shared(holders)) => {
                holders.retain(|h| *h != ofd);
                holders.is_empty()
            }
            None => false,
        };
        if empty {
            self.locks.remove(&ino);
        }
    }
}

/// Boots handed out so far: each simulated machine (and each power loss) is a new one.
static BOOTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_boot() -> u128 {
    u128::from(BOOTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

/// The simulated file system. Cheap to clone (shared state).
#[derive(Debug, Clone, Default)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

fn enoent() -> io::Error {
    io::Error::from_raw_os_error(2)
}

impl SimFs {
    /// An empty file system with just `/`.
    pub fn new() -> SimFs {
        let sim = SimFs::default();
        sim.lock().boot = next_boot();
        sim
    }

    /// A file system holding `image`, recording from now on.
    pub fn from_image(image: Image) -> SimFs {
        let sim = SimFs::default();
        {
            let mut st = sim.lock();
            st.synced = image.file_contents().collect();
            st.live = image;
            st.boot = next_boot();
        }
        sim
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Start or stop recording operations.
    pub fn record(&self, on: bool) {
        self.lock().recording = on;
    }

    /// Record a workload annotation.
    pub fn mark(&self, id: usize) {
        let mut st = self.lock();
        if st.recording {
            st.log.push(Op::Mark(id));
        }
    }

    /// Make a symlink `name` in the directory `dir` leading to `target`, as a person or
    /// another program would (`ln -s`; statefile makes none, so the seam has no call
    /// for it). Recorded, and durable with `dir` as any new name.
    pub fn symlink(&self, dir: &Path, name: &str, target: &str) -> io::Result<()> {
        let mut st = self.lock();
        let dir = st.dir_no_symlinks(dir)?;
        if st.entry(dir, OsStr::new(name))?.is_some() {
            return Err(io::Error::from_raw_os_error(17));
        }
        let ino = st.live.next_ino;
        st.live.next_ino += 1;
        SimFs::push(
            &mut st,
            Op::Symlink {
                dir,
                name: os(name),
                ino,
                target: PathBuf::from(target),
            },
        );
        Ok(())
    }

    /// The operations recorded so far.
    pub fn log(&self) -> Vec<Op> {
        self.lock().log.clone()
    }

    /// The current state, as a durable image (for the start of a workload).
    pub fn image(&self) -> Image {
        self.lock().live.clone()
    }

    /// Fail one call.
    pub fn set_fault(&self, fault: Option<Fault>) {
        let mut st = self.lock();
        if fault.is_some() {
            st.fault_fired = None;
        }
        st.fault = fault;
    }

    /// The kind of call the fault hit, if it fired.
    pub fn fault_fired(&self) -> Option<Call> {
        self.lock().fault_fired
    }

    /// Seam calls made so far, and their kinds.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().call_kinds.clone()
    }

    /// Stop the thread that makes seam call number `at` (0-based, counted as
    /// [`SimFs::calls`] counts) before it runs, until the returned pause is resumed.
    pub fn pause_at(&self, at: u64) -> Arc<Pause> {
        let p = Arc::new(Pause {
            at,
            ..Pause::default()
        });
        self.lock().pause = Some(p.clone());
        p
    }

    /// Count a call; return the injected error if this is the one to fail.
    fn enter(&self, call: Call) -> io::Result<Option<FaultKind>> {
        let pause = {
            let mut st = self.lock();
            let n = st.calls;
            match &st.pause {
                Some(p) if p.at == n => st.pause.take(),
                _ => None,
            }
        };
        if let Some(p) = pause {
            p.stop_here(call);
        }
        let mut st = self.lock();
        let n = st.calls;
        st.calls += 1;
        st.call_kinds.push(call);
        match st.fault {
            Some(f) if f.at == n => {
                st.fault_fired = Some(call);
                match f.kind {
                    FaultKind::Errno(e) => Err(io::Error::from_raw_os_error(e)),
                    FaultKind::ErrnoKeepPages(e) => {
                        st.keep_pages = true;
                        Err(io::Error::from_raw_os_error(e))
                    }
                    FaultKind::ShortWrite => Ok(Some(FaultKind::ShortWrite)),
                }
            }
            _ => Ok(None),
        }
    }

    fn push(st: &mut State, op: Op) {
        st.live.apply(&op, None);
        if st.recording {
            st.log.push(op);
        }
    }
}

/// Split a path into normal components (absolute from `/`; `.`/`..` resolved lexically
/// after symlink expansion by the walkers below).
fn components(path: &Path) -> Vec<OsString> {
    let mut out: Vec<OsString> = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n.to_os_string()),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

impl State {
    /// Resolve `path` to (parent dir ino, last name, ino if it exists), following
    /// symlinks in directory components (and in the last one if `follow`).
    fn lookup(&self, path: &Path, follow: bool) -> io::Result<(Ino, OsString, Option<Ino>)> {
        let mut comps = components(path);
        let mut hops = 0;
        'restart: loop {
            let mut dir = ROOT;
            for (i, name) in comps.iter().enumerate() {
                let last = i + 1 == comps.len();
                let entries = match self.live.inodes.get(&dir).map(|n| &n.kind) {
                    Some(Kind::Dir(e)) => e,
                    Some(_) => return Err(io::Error::from_raw_os_error(20)),
                    None => return Err(enoent()),
                };
                let Some(&ino) = entries.get(name) else {
                    if last {
                        return Ok((dir, name.clone(), None));
                    }
                    return Err(enoent());
                };
                if let Some(Kind::Symlink(target)) = self.live.inodes.get(&ino).map(|n| &n.kind)
                    && (!last || follow)
                {
                    hops += 1;
                    if hops > 40 {
                        return Err(io::Error::from_raw_os_error(40));
                    }
                    let base: PathBuf = std::iter::once(OsString::from("/"))
                        .chain(comps[..i].iter().cloned())
                        .collect();
                    let mut next = base.join(target);
                    for rest in &comps[i + 1..] {
                        next.push(rest);
                    }
                    comps = components(&next);
                    continue 'restart;
                }
                if last {
                    return Ok((dir, name.clone(), Some(ino)));
                }
                dir = ino;
            }
            // The root itself.
            return Ok((ROOT, OsString::new(), Some(ROOT)));
        }
    }

    fn existing(&self, path: &Path, follow: bool) -> io::Result<Ino> {
        self.lookup(path, follow)?.2.ok_or_else(enoent)
    }

    fn nlink(&self, ino: Ino) -> u64 {
        self.live
            .inodes
            .values()
            .filter_map(|n| match &n.kind {
                Kind::Dir(e) => Some(e.values().filter(|i| **i == ino).count() as u64),
                _ => None,
            })
            .sum()
    }

    fn meta(&self, ino: Ino) -> io::Result<Metadata> {
        let n = self.live.inodes.get(&ino).ok_or_else(enoent)?;
        let (file_type, len) = match &n.kind {
            Kind::File(c) => (FileType::File, c.len() as u64),
            Kind::Dir(_) => (FileType::Dir, 0),
            Kind::Symlink(t) => (FileType::Symlink, t.as_os_str().len() as u64),
        };
        Ok(Metadata {
            file_type,
            dev: 1,
            ino,
            nlink: self.nlink(ino),
            mode: n.mode,
            uid: n.uid,
            gid: n.gid,
            len,
            mtime_ns: i128::from(n.time),
            ctime_ns: i128::from(n.time),
        })
    }
}

#[derive(Debug)]
struct SimFile {
    fs: SimFs,
    ino: Ino,
    pos: u64,
}

impl io::Read for SimFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.fs.enter(Call::Read)?;
        let st = self.fs.lock();
        let Some(Kind::File(c)) = st.live.inodes.get(&self.ino).map(|n| &n.kind) else {
            return Err(io::Error::from_raw_os_error(21));
        };
        let start = (self.pos as usize).min(c.len());
        let n = buf.len().min(c.len() - start);
        buf[..n].copy_from_slice(&c[start..start + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl io::Write for SimFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let fault = self.fs.enter(Call::Write)?;
        let n = if fault == Some(FaultKind::ShortWrite) {
            buf.len().div_ceil(2).min(buf.len())
        } else {
            buf.len()
        };
        let mut st = self.fs.lock();
        SimFs::push(
            &mut st,
            Op::Write {
                ino: self.ino,
                offset: self.pos,
                data: buf[..n].to_vec(),
            },
        );
        self.pos += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SimFile {
    fn sync(&mut self) -> io::Result<()> {
        if let Err(e) = self.fs.enter(Call::SyncFile) {
            // The pages it could not write never reach the disk (no later sync writes
            // them, unless they are written again): the recorded writes since the last
            // sync are dropped from the log, so crash images keep the old bytes.
            let mut st = self.fs.lock();
            let ino = self.ino;
            let from = st
                .log
                .iter()
                .rposition(|o| matches!(o, Op::SyncFile { ino: i } if *i == ino))
                .map_or(0, |i| i + 1);
            let tail: Vec<Op> = st
                .log
                .drain(from..)
                .filter(|o| !matches!(o, Op::Write { ino: i, .. } if *i == ino))
                .collect();
            st.log.extend(tail);
            if std::mem::take(&mut st.keep_pages) {
                // Kept in the cache, marked clean: the file reads as it was written.
                return Err(e);
            }
            // Linux drops the dirty pages it could not write (here at once, as an
            // eviction would): the unsynced data is gone from the cache too.
            let synced = st.synced.get(&self.ino).cloned().unwrap_or_default();
            if let Some(Kind::File(c)) = st.live.inodes.get_mut(&self.ino).map(|n| &mut n.kind) {
                *c = synced;
            }
            return Err(e);
        }
        let mut st = self.fs.lock();
        if let Some(Kind::File(c)) = st.live.inodes.get(&self.ino).map(|n| &n.kind) {
            let c = c.clone();
            st.synced.insert(self.ino, c);
        }
        SimFs::push(&mut st, Op::SyncFile { ino: self.ino });
        Ok(())
    }

    fn set_meta(&mut self, f: impl FnOnce(&mut Inode)) -> io::Result<()> {
        self.fs.enter(Call::Other)?;
        let mut st = self.fs.lock();
        let mut n = st.live.inodes.get(&self.ino).cloned().ok_or_else(enoent)?;
        f(&mut n);
        SimFs::push(
            &mut st,
            Op::SetMeta {
                ino: self.ino,
                mode: n.mode,
                uid: n.uid,
                gid: n.gid,
            },
        );
        Ok(())
    }
}

impl FsFile for SimFile {
    fn sync_all(&mut self) -> io::Result<()> {
        self.sync()
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.sync()
    }
    fn metadata(&self) -> io::Result<Metadata> {
        self.fs.enter(Call::Other)?;
        self.fs.lock().meta(self.ino)
    }
    fn set_mode(&mut self, mode: u32) -> io::Result<()> {
        self.set_meta(|n| n.mode = mode)
    }
    fn set_owner(&mut self, uid: u32, gid: u32) -> io::Result<()> {
        self.set_meta(|n| {
            n.uid = uid;
            n.gid = gid;
        })
    }
}

#[derive(Debug)]
struct SimLock {
    fs: SimFs,
    ino: Ino,
    ofd: u64,
}

impl FsLockFile for SimLock {
    fn try_lock(&self) -> io::Result<bool> {
        self.fs.enter(Call::Lock)?;
        let mut st = self.fs.lock();
        if st.locks.get(&self.ino) == Some(&Held::Exclusive(self.ofd)) {
            return Ok(true);
        }
        Ok(st.try_flock(self.ino, self.ofd, LockMode::Exclusive))
    }
    fn unlock(&self) -> io::Result<()> {
        self.fs.lock().funlock(self.ino, self.ofd);
        Ok(())
    }
    fn metadata(&self) -> io::Result<Metadata> {
        self.fs.enter(Call::Other)?;
        self.fs.lock().meta(self.ino)
    }
}

impl Drop for SimLock {
    fn drop(&mut self) {
        let _ = self.unlock();
    }
}

/// A file opened for positional reads and writes (the journal's files).
#[derive(Debug)]
struct SimRw {
    fs: SimFs,
    ino: Ino,
    ofd: u64,
}

impl FsRwFile for SimRw {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.fs.enter(Call::Read)?;
        let st = self.fs.lock();
        let Some(Kind::File(c)) = st.live.inodes.get(&self.ino).map(|n| &n.kind) else {
            return Err(io::Error::from_raw_os_error(21));
        };
        let start = (offset as usize).min(c.len());
        let n = buf.len().min(c.len() - start);
        buf[..n].copy_from_slice(&c[start..start + n]);
        Ok(n)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        let fault = self.fs.enter(Call::Write)?;
        let n = if fault == Some(FaultKind::ShortWrite) {
            buf.len().div_ceil(2).min(buf.len())
        } else {
            buf.len()
        };
        let mut st = self.fs.lock();
        SimFs::push(
            &mut st,
            Op::Write {
                ino: self.ino,
                offset,
                data: buf[..n].to_vec(),
            },
        );
        Ok(n)
    }
    fn sync_data(&self) -> io::Result<()> {
        SimFile {
            fs: self.fs.clone(),
            ino: self.ino,
            pos: 0,
        }
        .sync()
    }
    fn metadata(&self) -> io::Result<Metadata> {
        self.fs.enter(Call::Other)?;
        self.fs.lock().meta(self.ino)
    }
    fn try_lock(&self, mode: LockMode) -> io::Result<bool> {
        self.fs.enter(Call::Lock)?;
        Ok(self.fs.lock().try_flock(self.ino, self.ofd, mode))
    }
    fn unlock(&self) -> io::Result<()> {
        self.fs.lock().funlock(self.ino, self.ofd);
        Ok(())
    }
}

impl Drop for SimRw {
    fn drop(&mut self) {
        self.fs.lock().funlock(self.ino, self.ofd);
    }
}

impl State {
    /// The directory at `path`, refusing a symlink anywhere on the way (as the real
    /// file system's `openat2(RESOLVE_NO_SYMLINKS)` does).
    fn dir_no_symlinks(&self, path: &Path) -> io::Result<Ino> {
        let mut dir = ROOT;
        for name in components(path) {
            let entries = match self.live.inodes.get(&dir).map(|n| &n.kind) {
                Some(Kind::Dir(e)) => e,
                _ => return Err(io::Error::from_raw_os_error(20)), // ENOTDIR
            };
            let ino = *entries.get(&name).ok_or_else(enoent)?;
            match self.live.inodes.get(&ino).map(|n| &n.kind) {
                Some(Kind::Symlink(_)) => return Err(io::Error::from_raw_os_error(40)), // ELOOP
                Some(_) => dir = ino,
                None => return Err(enoent()),
            }
        }
        match self.live.inodes.get(&dir).map(|n| &n.kind) {
            Some(Kind::Dir(_)) => Ok(dir),
            _ => Err(io::Error::from_raw_os_error(20)),
        }
    }

    /// The inode named `name` in directory `dir`, if any (a symlink is not followed).
    fn entry(&self, dir: Ino, name: &OsStr) -> io::Result<Option<Ino>> {
        match self.live.inodes.get(&dir).map(|n| &n.kind) {
            Some(Kind::Dir(e)) => Ok(e.get(name).copied()),
            Some(_) => Err(io::Error::from_raw_os_error(20)),
            None => Err(enoent()),
        }
    }

    fn is_symlink(&self, ino: Ino) -> bool {
        matches!(
            self.live.inodes.get(&ino).map(|n| &n.kind),
            Some(Kind::Symlink(_))
        )
    }
}

impl Fs for SimFs {
    fn open_dir(&self, path: &Path) -> io::Result<Box<dyn FsDir>> {
        self.enter(Call::Other)?;
        let ino = self.lock().dir_no_symlinks(path)?;
        Ok(Box::new(SimDir {
            fs: self.clone(),
            ino,
        }))
    }

    fn metadata(&self, path: &Path) -> io::Result<Metadata> {
        self.enter(Call::Other)?;
        let st = self.lock();
        let ino = st.existing(path, true)?;
        st.meta(ino)
    }

    fn symlink_metadata(&self, path: &Path) -> io::Result<Metadata> {
        self.enter(Call::Other)?;
        let st = self.lock();
        let ino = st.existing(path, false)?;
        st.meta(ino)
    }

    fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
        self.enter(Call::Other)?;
        let st = self.lock();
        let ino = st.existing(path, false)?;
        match st.live.inodes.get(&ino).map(|n| &n.kind) {
            Some(Kind::Symlink(t)) => Ok(t.clone()),
            _ => Err(io::Error::from_raw_os_error(22)),
        }
    }

    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf> {
        self.enter(Call::Other)?;
        let st = self.lock();
        // Resolve fully, then rebuild the path from the root by walking parents.
        let mut comps = components(path);
        let mut out = PathBuf::from("/");
        let mut hops = 0;
        let mut i = 0;
        while i < comps.len() {
            let probe = out.join(&comps[i]);
            let ino = st.existing(&probe, false)?;
            if let Some(Kind::Symlink(t)) = st.live.inodes.get(&ino).map(|n| &n.kind) {
                hops += 1;
                if hops > 40 {
                    return Err(io::Error::from_raw_os_error(40));
                }
                let mut next = out.join(t);
                for rest in &comps[i + 1..] {
                    next.push(rest);
                }
                comps = components(&next);
                out = PathBuf::from("/");
                i = 0;
                continue;
            }
            out = probe;
            i += 1;
        }
        Ok(out)
    }

    fn umask(&self) -> u32 {
        0o022
    }

    fn boot_id(&self) -> Option<u128> {
        Some(self.lock().boot)
    }
}

/// A directory of the simulation held open: like a file descriptor, it keeps naming
/// the same inode whatever happens to the path it was opened by.
#[derive(Debug)]
struct SimDir {
    fs: SimFs,
    ino: Ino,
}

impl SimDir {
    /// A new inode named `name` here, made by the op `make` returns (`EEXIST` if the
    /// name is taken).
    fn add(
        &self,
        st: &mut State,
        name: &OsStr,
        make: impl FnOnce(OsString, Ino) -> Op,
    ) -> io::Result<Ino> {
        if st.entry(self.ino, name)?.is_some() {
            return Err(io::Error::from_raw_os_error(17));
        }
        let ino = st.live.next_ino;
        st.live.next_ino += 1;
        SimFs::push(st, make(name.to_os_string(), ino));
        Ok(ino)
    }

    /// Unlink `name` after `check` accepted what it is.
    fn unlink(
        &self,
        name: &OsStr,
        check: impl FnOnce(Option<&Kind>) -> io::Result<()>,
    ) -> io::Result<()> {
        self.fs.enter(Call::Other)?;
        let mut st = self.fs.lock();
        let ino = st.entry(self.ino, name)?.ok_or_else(enoent)?;
        check(st.live.inodes.get(&ino).map(|n| &n.kind))?;
        let dir = self.ino;
        SimFs::push(
            &mut st,
            Op::Unlink {
                dir,
                name: name.to_os_string(),
                ino,
            },
        );
        Ok(())
    }
}

impl FsDir for SimDir {
    fn create_new(&self, name: &OsStr, mode: u32) -> io::Result<Box<dyn FsFile>> {
        self.fs.enter(Call::Open)?;
        let dir = self.ino;
        let ino = self.add(&mut self.fs.lock(), name, |name, ino| Op::Create {
            dir,
            name,
            ino,
            mode: mode & !0o022,
        })?;
        Ok(Box::new(SimFile {
            fs: self.fs.clone(),
            ino,
            pos: 0,
        }))
    }

    fn open_read(&self, name: &OsStr) -> io::Result<Box<dyn FsFile>> {
        self.fs.enter(Call::Open)?;
        let st = self.fs.lock();
        let ino = st.entry(self.ino, name)?.ok_or_else(enoent)?;
        if st.is_symlink(ino) {
            return Err(io::Error::from_raw_os_error(40));
        }
        drop(st);
        Ok(Box::new(SimFile {
            fs: self.fs.clone(),
            ino,
            pos: 0,
        }))
    }

    fn open_lock(&self, name: &OsStr) -> io::Result<Box<dyn FsLockFile>> {
        self.fs.enter(Call::Open)?;
        let mut st = self.fs.lock();
        let dir = self.ino;
        let ino = match st.entry(dir, name)? {
            Some(i) if st.is_symlink(i) => return Err(io::Error::from_raw_os_error(40)),
            Some(i) => i,
            None => self.add(&mut st, name, |name, ino| Op::Create {
                dir,
                name,
                ino,
                mode: 0o644,
            })?,
        };
        st.next_ofd += 1;
        let ofd = st.next_ofd;
        drop(st);
        Ok(Box::new(SimLock {
            fs: self.fs.clone(),
            ino,
            ofd,
        }))
    }

    fn stat(&self, name: &OsStr) -> io::Result<Metadata> {
        self.fs.enter(Call::Other)?;
        let st = self.fs.lock();
        let ino = st.entry(self.ino, name)?.ok_or_else(enoent)?;
        st.meta(ino)
    }

    fn metadata(&self) -> io::Result<Metadata> {
        self.fs.enter(Call::Other)?;
        self.fs.lock().meta(self.ino)
    }

    fn rename(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        self.fs.enter(Call::Rename)?;
        let mut st = self.fs.lock();
        let ino = st.entry(self.ino, from)?.ok_or_else(enoent)?;
        SimFs::push(
            &mut st,
            Op::Rename {
                from_dir: self.ino,
                from: from.to_os_string(),
                to_dir: self.ino,
                to: to.to_os_string(),
                ino,
            },
        );
        Ok(())
    }

    fn exchange(&self, a: &OsStr, b: &OsStr) -> io::Result<()> {
        self.fs.enter(Call::Rename)?;
        let mut st = self.fs.lock();
        let ino_a = st.entry(self.ino, a)?.ok_or_else(enoent)?;
        let ino_b = st.entry(self.ino, b)?.ok_or_else(enoent)?;
        SimFs::push(
            &mut st,
            Op::Exchange {
                dir: self.ino,
                a: a.to_os_string(),
                b: b.to_os_string(),
                ino_a,
                ino_b,
            },
        );
        Ok(())
    }

    fn hard_link(&self, original: &OsStr, link: &OsStr) -> io::Result<()> {
        self.fs.enter(Call::Link)?;
        let mut st = self.fs.lock();
        let ino = st.entry(self.ino, original)?.ok_or_else(enoent)?;
        if st.entry(self.ino, link)?.is_some() {
            return Err(io::Error::from_raw_os_error(17));
        }
        SimFs::push(
            &mut st,
            Op::Link {
                dir: self.ino,
                name: link.to_os_string(),
                ino,
            },
        );
        Ok(())
    }

    fn remove_file(&self, name: &OsStr) -> io::Result<()> {
        self.unlink(name, |kind| match kind {
            Some(Kind::Dir(_)) => Err(io::Error::from_raw_os_error(21)), // EISDIR
            _ => Ok(()),
        })
    }

    fn create_dir(&self, name: &OsStr) -> io::Result<()> {
        self.fs.enter(Call::Other)?;
        let dir = self.ino;
        self.add(&mut self.fs.lock(), name, |name, ino| Op::Mkdir {
            dir,
            name,
            ino,
        })?;
        Ok(())
    }

    fn remove_dir(&self, name: &OsStr) -> io::Result<()> {
        self.unlink(name, |kind| match kind {
            Some(Kind::Dir(entries)) if entries.is_empty() => Ok(()),
            Some(Kind::Dir(_)) => Err(io::Error::from_raw_os_error(39)), // ENOTEMPTY
            _ => Err(io::Error::from_raw_os_error(20)),                  // ENOTDIR
        })
    }

    fn open_dir(&self, name: &OsStr) -> io::Result<Box<dyn FsDir>> {
        self.fs.enter(Call::Other)?;
        let st = self.fs.lock();
        let ino = st.entry(self.ino, name)?.ok_or_else(enoent)?;
        match st.live.inodes.get(&ino).map(|n| &n.kind) {
            Some(Kind::Dir(_)) => {}
            Some(Kind::Symlink(_)) => return Err(io::Error::from_raw_os_error(40)),
            _ => return Err(io::Error::from_raw_os_error(20)),
        }
        Ok(Box::new(SimDir {
            fs: self.fs.clone(),
            ino,
        }))
    }

    fn sync(&self) -> io::Result<()> {
        self.fs.enter(Call::SyncDir)?;
        let mut st = self.fs.lock();
        SimFs::push(&mut st, Op::SyncDir { dir: self.ino });
        Ok(())
    }

    fn sync_fs(&self) -> io::Result<()> {
        self.fs.enter(Call::SyncFs)?;
        let mut st = self.fs.lock();
        let files: Vec<(Ino, Vec<u8>)> = st.live.file_contents().collect();
        st.synced.extend(files);
        SimFs::push(&mut st, Op::SyncFs);
        Ok(())
    }

    fn read_dir(&self) -> io::Result<Vec<DirEntry>> {
        self.fs.enter(Call::Other)?;
        let st = self.fs.lock();
        match st.live.inodes.get(&self.ino).map(|n| &n.kind) {
            Some(Kind::Dir(e)) => Ok(e
                .iter()
                .map(|(name, ino)| DirEntry {
                    name: name.clone(),
                    file_type: match st.live.inodes.get(ino).map(|n| &n.kind) {
                        Some(Kind::Dir(_)) => FileType::Dir,
                        Some(Kind::Symlink(_)) => FileType::Symlink,
                        _ => FileType::File,
                    },
                })
                .collect()),
            _ => Err(io::Error::from_raw_os_error(20)),
        }
    }

    fn open_rw(&self, name: &OsStr, mode: u32, create: bool) -> io::Result<Box<dyn FsRwFile>> {
        self.fs.enter(Call::Open)?;
        let mut st = self.fs.lock();
        let dir = self.ino;
        let ino = match st.entry(dir, name)? {
            Some(i) if st.is_symlink(i) => return Err(io::Error::from_raw_os_error(40)),
            Some(i) => i,
            None if create => self.add(&mut st, name, |name, ino| Op::Create {
                dir,
                name,
                ino,
                mode: mode & !0o022,
            })?,
            None => return Err(enoent()),
        };
        st.next_ofd += 1;
        let ofd = st.next_ofd;
        drop(st);
        Ok(Box::new(SimRw {
            fs: self.fs.clone(),
            ino,
            ofd,
        }))
    }

    /// The simulation does not model permissions.
    fn check_write_access(&self, name: &OsStr) -> io::Result<()> {
        let _ = name;
        Ok(())
    }
}

/// `name` as an `OsString`.
pub fn os(name: &str) -> OsString {
    OsStr::new(name).to_os_string()
}
