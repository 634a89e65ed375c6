//! The crash-state explorer and the fault injector.
//!
//! A workload runs once on a recording [`SimFs`]. For every crash point (every prefix
//! of the operation log) the explorer builds the durable images a power loss may leave
//! (the prefix; the prefix with one unsynced operation dropped; torn writes; a seeded
//! random sample of further subsets), runs the library's recovery (`Store::open`) on
//! each, and checks the invariants. The fault injector re-runs the workload failing one
//! seam call at a time with each applicable error, and judges each run as it ended
//! (and after the `Store::open` that follows): every document holds the last version
//! acknowledged for it in that run or one whose write began after that and whose
//! outcome is unknown, never an older one (a rollback loses an acknowledged write);
//! after a failure of any kind but `Durability`, only the acknowledged one. In journal
//! mode it then runs a checkpoint and judges the backups (every one a complete version
//! of its document), in the tree and after a power loss (only what was synced,
//! recovered), where the documents are judged again ([`inject_faults`]).
//!
//! # The judge
//!
//! After recovery from a crash after `k` ops (and after a crash during that recovery,
//! recovered again):
//!
//! - every document holds a version it may hold: one begun before the crash, and none
//!   that an acknowledged write surely replaced (linearizability);
//! - the workload's own invariant holds, and every other visible document parses;
//! - recovery run twice changes nothing, and every document can be written next;
//! - **backups** (docs/design.md, "Backups after a crash"): for each document, every
//!   `.name.bak`, `.name.bak.N` that exists
//!   1. holds exactly the bytes of a version of that document: one the setup wrote or a
//!      write begun before the crash; never empty, torn, or anything never written;
//!   2. is newest first: a higher number never holds a version surely written after,
//!      or the same as, a lower number's (the same bytes written twice count as two
//!      versions; two writes that overlap may have landed in either order);
//!   3. is no newer than the document: it never holds a version surely written after
//!      the one at the document's name (the same one is allowed: a power loss may keep
//!      a rotation and lose the rename before it);
//!   4. where the backups are settled, are exactly the backup files there were, byte
//!      for byte. Settled: every write begun was acknowledged, and outside journal mode
//!      that is all (each write's directory sync made its rotation durable, and the
//!      versions it rotated were synced when written); in journal mode no write has
//!      begun yet, or a checkpoint (which syncs the backups) returned since the last
//!      one began ([`Ctx::settled`]).
//!
//!   Not promised, so not checked: that `.bak` is the version just before the
//!   document's, or that a backup survives a crash during a write (a rotation cut
//!   short loses one; in journal mode, where nothing but the journal is synced before a
//!   checkpoint, any rotation since the last checkpoint may be lost).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use statefile::{Doc, ErrorKind, Options, Store};

use crate::sim::{Call, Fault, FaultKind, Fill, Image, Op, SimFs, Tear};

/// The store every workload uses.
pub const ROOT: &str = "/data";

/// One attempted write of a document's bytes (`None`: a delete), with where in the log
/// it began and (if it returned success) was acknowledged.
#[derive(Debug, Clone)]
struct Attempt {
    doc: String,
    bytes: Option<Vec<u8>>,
}

/// What a workload did, for judging crash states.
#[derive(Debug, Default)]
pub struct History {
    /// Each document's content when the recorded part starts.
    initial: BTreeMap<String, Vec<u8>>,
    /// Every version the setup wrote, per document, oldest first (the last one is the
    /// initial content; the others may live on as backups).
    setup: BTreeMap<String, Vec<Vec<u8>>>,
    attempts: Vec<Attempt>,
    /// The marks of [`Ctx::settled`].
    settled: Vec<usize>,
}

/// Handed to workloads: the file system, the options, and the history recorder.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub sim: SimFs,
    pub opts: Options,
    history: Arc<Mutex<History>>,
    /// What the workload itself found wrong in this run (its own invariants).
    violations: Arc<Mutex<Vec<String>>>,
    /// What every recovered tree must satisfy, if the workload says.
    invariant: Arc<Mutex<Option<Invariant>>>,
}

/// A property every recovered tree must have beyond each document's own (e.g. a sum
/// over two documents that transactions keep): the tree's files by path, or why not.
pub type Invariant = fn(&BTreeMap<String, Vec<u8>>) -> Result<(), String>;

impl Ctx {
    fn new(sim: SimFs, opts: Options) -> Ctx {
        Ctx {
            opts: opts.fs(Arc::new(sim.clone())),
            sim,
            history: Arc::default(),
            violations: Arc::default(),
            invariant: Arc::default(),
        }
    }

    /// During setup: every recovered tree must satisfy `check`.
    pub fn invariant(&self, check: Invariant) {
        *self.invariant.lock().unwrap() = Some(check);
    }

    /// The workload found one of its own invariants broken.
    pub fn violation(&self, what: String) {
        self.violations.lock().unwrap().push(what);
    }

    fn violations(&self) -> Vec<String> {
        self.violations.lock().unwrap().clone()
    }

    /// The bytes of document `name` right now, without a call through the seam (so
    /// the call sequence stays the same however often this is asked).
    pub fn peek(&self, name: &str) -> Option<Vec<u8>> {
        self.sim.image().tree().get(&Ctx::path(name)).cloned()
    }

    /// The path of document `name` in the store.
    pub fn path(name: &str) -> String {
        format!("{ROOT}/{name}")
    }

    /// A handle on document `name`.
    pub fn doc(&self, name: &str) -> Doc<Value> {
        Doc::open_with(Ctx::path(name), self.opts.clone()).expect("valid name")
    }

    /// During setup: `name` holds `value` when the workload starts.
    pub fn initial(&self, name: &str, value: &Value) {
        self.doc(name).write(value).expect("setup write");
        let bytes = statefile::to_vec(value, statefile::Format::Pretty).unwrap();
        let mut h = self.history.lock().unwrap();
        h.setup
            .entry(name.to_string())
            .or_default()
            .push(bytes.clone());
        h.initial.insert(name.to_string(), bytes);
    }

    /// A write of `value` to `name` begins; returns its id for [`Ctx::ack`].
    pub fn begin(&self, name: &str, value: &Value) -> usize {
        let bytes = statefile::to_vec(value, statefile::Format::Pretty).unwrap();
        self.begin_bytes(name, bytes)
    }

    /// As [`Ctx::begin`], with the exact bytes (for restores).
    pub fn begin_bytes(&self, name: &str, bytes: Vec<u8>) -> usize {
        self.begin_any(name, Some(bytes))
    }

    /// A delete of `name` begins.
    pub fn begin_delete(&self, name: &str) -> usize {
        self.begin_any(name, None)
    }

    fn begin_any(&self, name: &str, bytes: Option<Vec<u8>>) -> usize {
        let mut h = self.history.lock().unwrap();
        let id = h.attempts.len();
        h.attempts.push(Attempt {
            doc: name.to_string(),
            bytes,
        });
        self.sim.mark(2 * id);
        id
    }

    /// The write `id` returned success.
    pub fn ack(&self, id: usize) {
        self.sim.mark(2 * id + 1);
    }

    /// No write is in flight and a call that promises durable backups returned (in
    /// journal mode, a checkpoint): a crash from here until the next write begins must
    /// leave every backup file as it is now. (Outside journal mode every acknowledged
    /// write promises this itself; see [`explore`](crate::explore).)
    pub fn settled(&self) {
        let mut h = self.history.lock().unwrap();
        let mark = SETTLED + h.settled.len();
        h.settled.push(mark);
        self.sim.mark(mark);
    }
}

/// The first mark id of [`Ctx::settled`] (attempts use `2 * id` and `2 * id + 1`).
const SETTLED: usize = 1 << 40;

/// A scenario to explore.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    pub name: &'static str,
    /// Options every handle uses (e.g. the number of backups).
    pub opts: fn() -> Options,
    /// Build the starting state (not recorded; taken as durable).
    pub setup: fn(&Ctx),
    /// The recorded part. Returns the first error an API call returned.
    pub run: fn(&Ctx) -> statefile::Result<()>,
    /// Deterministic call sequence (fault injection needs one).
    pub deterministic: bool,
    /// Crashes during recovery are explored for every n-th checked state times this:
    /// a journal replay's recovery log is long, and each of its prefixes is a recovery
    /// of its own.
    pub recovery_sparsity: usize,
}

/// How much to explore.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub omissions: bool,
    pub torn: bool,
    pub random_per_point: usize,
    pub seed: u64,
    /// Explore crashes during recovery for every n-th checked state (0: never).
    pub recovery_crash_every: usize,
}

/// What an exploration found.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub workload: &'static str,
    pub ops: usize,
    pub prefixes: usize,
    pub omissions: usize,
    pub torn: usize,
    pub random: usize,
    pub recovery_crashes: usize,
    pub seed: u64,
    pub distinct_recovered: usize,
    pub inconsistent: usize,
    pub lost_acknowledged: usize,
    pub other_violations: usize,
    /// Backups that are not a complete earlier version, out of order, or (where
    /// settled) not the ones there were.
    pub bad_backups: usize,
    /// The first few violations, described.
    pub examples: Vec<String>,
}

impl Report {
    pub fn violations(&self) -> usize {
        self.inconsistent + self.lost_acknowledged + self.other_violations + self.bad_backups
    }

    fn violation(&mut self, kind: Violation, what: String) {
        match kind {
            Violation::Inconsistent => self.inconsistent += 1,
            Violation::Lost => self.lost_acknowledged += 1,
            Violation::Other => self.other_violations += 1,
            Violation::Backup => self.bad_backups += 1,
        }
        if self.examples.len() < 5 {
            self.examples.push(what);
        }
    }

    /// One line for the report table.
    pub fn line(&self) -> String {
        format!(
            "| {} | {} | {} / {} / {} / {} | {} | seed {} | {} | {} | {} | {} | {} |",
            self.workload,
            self.ops,
            self.prefixes,
            self.omissions,
            self.torn,
            self.random,
            self.recovery_crashes,
            self.seed,
            self.distinct_recovered,
            self.inconsistent,
            self.lost_acknowledged,
            self.bad_backups,
            self.other_violations
        )
    }
}

#[derive(Debug, Clone, Copy)]
enum Violation {
    Inconsistent,
    Lost,
    Backup,
    Other,
}

/// Run `w`'s setup on a fresh file system: the starting image and the context.
fn prepare(w: &Workload) -> (Image, Ctx) {
    let sim = SimFs::new();
    let ctx = Ctx::new(sim.clone(), (w.opts)());
    statefile::fs::Fs::open_dir(&sim, Path::new("/"))
        .and_then(|root| root.create_dir(std::ffi::OsStr::new(&ROOT[1..])))
        .expect("mkdir /data");
    (w.setup)(&ctx);
    (sim.image(), ctx)
}

/// Run the recorded part on a copy of `image`.
fn run_recorded(
    w: &Workload,
    image: &Image,
    setup_ctx: &Ctx,
    fault: Option<Fault>,
) -> (Ctx, statefile::Result<()>) {
    let sim = SimFs::from_image(image.clone());
    let ctx = Ctx {
        opts: setup_ctx.opts.clone().fs(Arc::new(sim.clone())),
        sim: sim.clone(),
        history: setup_ctx.history.clone(),
        violations: Arc::default(),
        invariant: setup_ctx.invariant.clone(),
    };
    {
        // The setup's attempts are not part of the run.
        let mut h = ctx.history.lock().unwrap();
        h.attempts.clear();
        h.settled.clear();
    }
    sim.set_fault(fault);
    sim.record(true);
    let r = (w.run)(&ctx);
    sim.record(false);
    sim.set_fault(None);
    (ctx, r)
}

/// For each attempt: the log index of its begin and ack marks.
fn marks(log: &[Op]) -> HashMap<usize, usize> {
    log.iter()
        .enumerate()
        .filter_map(|(i, op)| match op {
            Op::Mark(m) => Some((*m, i)),
            _ => None,
        })
        .collect()
}

/// Contents a document may have; `None` is "missing".
type Contents = HashSet<Option<Vec<u8>>>;

/// What each document may hold after a crash after `k` ops.
fn allowed(h: &History, marks: &HashMap<usize, usize>, k: usize) -> BTreeMap<String, Contents> {
    allowed_with(h, marks, k, true)
}

/// [`allowed`], counting the writes begun but not acknowledged by `k` (in flight, their
/// outcome unknown) only if `in_flight`: false where they are known to have written
/// nothing (a fault run whose write failed with any kind of error but `Durability`).
fn allowed_with(
    h: &History,
    marks: &HashMap<usize, usize>,
    k: usize,
    in_flight: bool,
) -> BTreeMap<String, Contents> {
    // Linearizability: the document may hold any write that began before the crash,
    // unless some write acknowledged before the crash began after it was acknowledged
    // (that write must have replaced it). Overlapping writes (two writers) may land in
    // either order; the initial content is allowed only while nothing is acknowledged.
    let at = |mark: usize| marks.get(&mark).copied().filter(|m| *m < k);
    let mut docs: BTreeMap<String, Contents> = BTreeMap::new();
    for name in h.initial.keys().chain(h.attempts.iter().map(|a| &a.doc)) {
        let acked: Vec<(usize, usize)> = (0..h.attempts.len())
            .filter(|id| &h.attempts[*id].doc == name)
            .filter_map(|id| Some((at(2 * id)?, at(2 * id + 1)?)))
            .collect();
        let mut set = Contents::new();
        if acked.is_empty() {
            set.insert(h.initial.get(name).cloned());
        }
        for (id, a) in h.attempts.iter().enumerate() {
            if &a.doc != name || at(2 * id).is_none() || !in_flight && at(2 * id + 1).is_none() {
                continue;
            }
            let superseded =
                at(2 * id + 1).is_some_and(|done| acked.iter().any(|(begin, _)| *begin > done));
            if !superseded {
                set.insert(a.bytes.clone());
            }
        }
        docs.insert(name.clone(), set);
    }
    docs
}

/// The journal's shared state and `journal-boot`: volatile by design (never synced,
/// rewritten by every recovery after a power loss, and they carry the boot id), so not
/// part of what a state is judged by.
const VOLATILE: [&str; 2] = [
    "/data/.statefile/journal-shm",
    "/data/.statefile/journal-boot",
];

/// The tree that counts: everything but the volatile files.
fn durable_tree(image: &Image) -> BTreeMap<String, Vec<u8>> {
    let mut t = image.tree();
    for v in VOLATILE {
        t.remove(v);
    }
    t
}

fn tree_hash(image: &Image) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    durable_tree(image).hash(&mut h);
    h.finish()
}

/// Build the durable image of applying `ops[..k]` but `drop`ped ones, with `tear`.
fn build(
    base: &Image,
    ops: &[Op],
    k: usize,
    dropped: &HashSet<usize>,
    tear: Option<(usize, Tear)>,
) -> Image {
    let mut img = base.clone();
    for (i, op) in ops[..k].iter().enumerate() {
        if dropped.contains(&i) {
            continue;
        }
        let t = tear.filter(|(ti, _)| *ti == i).map(|(_, t)| t);
        img.apply(op, t.as_ref());
    }
    img
}

/// The image a power loss after `log` (recorded from `base`) leaves when nothing but
/// what was synced reached the disk: every change no later sync covers is lost. One of
/// the crash states the explorer judges (the omissions and random subsets approach it);
/// the fault injector judges it after each run of a journal workload, and tests build
/// it to see what a failed sync left on the disk, whatever the cache shows.
pub fn durable_image(base: &Image, log: &[Op]) -> Image {
    let must = mandatory(log, log.len());
    let lost: HashSet<usize> = (0..log.len())
        .filter(|i| log[*i].is_change() && !must.contains(i))
        .collect();
    build(base, log, log.len(), &lost, None)
}

/// Indices of ops in `ops[..k]` that a completed sync in `ops[..k]` made durable.
fn mandatory(ops: &[Op], k: usize) -> HashSet<usize> {
    let mut out = HashSet::new();
    for (j, sync) in ops[..k].iter().enumerate() {
        if sync.is_sync() {
            for (i, op) in ops[..j].iter().enumerate() {
                if op.is_change() && op.covered_by(sync) {
                    out.insert(i);
                }
            }
        }
    }
    out
}

/// Whether op `i` of `ops` may be lost or torn in a crash state worth judging: a change
/// not made durable by a later sync, and not a write of the journal's shared state
/// (which nothing trusts after a power loss, so its variants recover identically).
fn optional(ops: &[Op], k: usize, volatile: &[crate::sim::Ino]) -> Vec<usize> {
    let must = mandatory(ops, k);
    (0..k)
        .filter(|i| {
            ops[*i].is_change()
                && !must.contains(i)
                && !volatile.iter().any(|v| ops[*i].touches(*v))
        })
        .collect()
}

/// Where a version of a document comes from: the n-th version the setup wrote, or the
/// attempt with this id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pos {
    Setup(usize),
    Attempt(usize),
}

/// A document's backup files in `tree`, by number (1 is `.bak`, 2 is `.bak.2`, ...).
fn backup_files<'t>(
    tree: &'t BTreeMap<String, Vec<u8>>,
    name: &str,
) -> BTreeMap<usize, (&'t String, &'t Vec<u8>)> {
    let path = Ctx::path(name);
    let (dir, file) = path.rsplit_once('/').expect("a path in the store");
    let bak = format!("{dir}/.{file}.bak");
    tree.range(bak.clone()..)
        .take_while(|(p, _)| p.starts_with(&bak))
        .filter_map(|(p, bytes)| {
            let n = match &p[bak.len()..] {
                "" => 1,
                rest => rest
                    .strip_prefix('.')?
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n >= 2)?,
            };
            Some((n, (p, bytes)))
        })
        .collect()
}

/// Bytes for a message: their length and how they begin.
fn show(bytes: Option<&[u8]>) -> String {
    match bytes {
        None => "<missing>".into(),
        Some([]) => "<empty>".into(),
        Some(b) => format!(
            "{} bytes {:?}",
            b.len(),
            String::from_utf8_lossy(&b[..b.len().min(60)])
        ),
    }
}

struct Judge<'a> {
    volatile: Vec<crate::sim::Ino>,
    ctx: &'a Ctx,
    history: &'a History,
    marks: HashMap<usize, usize>,
    report: Report,
    distinct: HashSet<u64>,
    seen: HashSet<(u64, bool, usize)>,
    checked: usize,
    budget: Budget,
    /// The image the recorded run started from, and its log.
    base: &'a Image,
    log: &'a [Op],
    /// The store is in journal mode: an acknowledged write makes no backup durable.
    journal: bool,
    /// For crash points where the backups are settled: the backup files then.
    settled: HashMap<usize, BTreeMap<String, Vec<u8>>>,
}

impl Judge<'_> {
    fn opts(&self, sim: &SimFs) -> Options {
        self.ctx.opts.clone().fs(Arc::new(sim.clone()))
    }

    /// Recover `image` and check every invariant for a crash after `k` ops.
    fn check(&mut self, image: &Image, k: usize, what: &str, sparsity: usize) {
        // One image is judged once per state of the run at the crash: which writes were
        // begun and acknowledged by then (an image first met while a write was in
        // flight, where the old version is allowed, must be judged again once it is
        // acknowledged), and whether the backups were settled.
        let marks = self.marks.values().filter(|m| **m < k).count();
        if !self
            .seen
            .insert((tree_hash(image), self.settled_at(k), marks))
        {
            return;
        }
        self.checked += 1;
        let sim = SimFs::from_image(image.clone());
        sim.record(true);
        if let Err(e) = Store::open_with(ROOT, self.opts(&sim)) {
            self.report.violation(
                Violation::Other,
                format!("{what} @{k}: Store::open failed: {e}"),
            );
            return;
        }
        sim.record(false);
        let recovered = sim.image();
        let recovery_log = sim.log();
        self.judge(&recovered, k, what);
        self.distinct.insert(tree_hash(&recovered));

        // Recovery again changes nothing.
        let again = SimFs::from_image(recovered.clone());
        match Store::open_with(ROOT, self.opts(&again)) {
            Ok(_) if durable_tree(&again.image()) == durable_tree(&recovered) => {}
            Ok(_) => self.report.violation(
                Violation::Other,
                format!("{what} @{k}: a second recovery changed the tree"),
            ),
            Err(e) => self.report.violation(
                Violation::Other,
                format!("{what} @{k}: second recovery failed: {e}"),
            ),
        }

        // Whatever was left behind, the next write of every document works.
        let next = SimFs::from_image(recovered.clone());
        for name in self
            .history
            .initial
            .keys()
            .chain(self.history.attempts.iter().map(|a| &a.doc))
        {
            let doc: Doc<Value> = match Doc::open_with(Ctx::path(name), self.opts(&next)) {
                Ok(d) => d,
                Err(e) => {
                    self.report
                        .violation(Violation::Other, format!("{what} @{k}: {e}"));
                    continue;
                }
            };
            let v = json!({"after": "crash"});
            match doc.write(&v).and_then(|_| doc.read()) {
                Ok(read) if read == v => {}
                Ok(read) => self.report.violation(
                    Violation::Other,
                    format!("{what} @{k}: wrote after recovery, read {read}"),
                ),
                Err(e) => self.report.violation(
                    Violation::Other,
                    format!("{what} @{k}: the next write of {name} failed: {e}"),
                ),
            }
        }

        // A crash during recovery, recovered again, must satisfy the same invariants.
        let every = self.budget.recovery_crash_every * sparsity;
        if every > 0 && self.checked.is_multiple_of(every) && recovery_log.iter().any(Op::is_change)
        {
            for k2 in 1..=recovery_log.len() {
                let optional = optional(&recovery_log, k2, &self.volatile);
                let mut variants = vec![HashSet::new()];
                variants.extend(optional.iter().map(|o| HashSet::from([*o])));
                for dropped in variants {
                    let mid = build(image, &recovery_log, k2, &dropped, None);
                    self.report.recovery_crashes += 1;
                    let sim = SimFs::from_image(mid);
                    match Store::open_with(ROOT, self.opts(&sim)) {
                        Ok(_) => {
                            let img = sim.image();
                            self.judge(&img, k, &format!("{what}, then a crash in recovery @{k2}"));
                        }
                        Err(e) => self.report.violation(
                            Violation::Other,
                            format!("{what} @{k}, recovery crash @{k2}: reopen failed: {e}"),
                        ),
                    }
                }
            }
        }
    }

    /// Whether version `p` was surely written before version `q`: the setup's in order
    /// and before the run's; an attempt before another only if acknowledged before the
    /// other began (two writes that overlap may land in either order).
    fn before(&self, p: Pos, q: Pos) -> bool {
        match (p, q) {
            (Pos::Setup(a), Pos::Setup(b)) => a < b,
            (Pos::Setup(_), Pos::Attempt(_)) => true,
            (Pos::Attempt(_), Pos::Setup(_)) => false,
            (Pos::Attempt(x), Pos::Attempt(y)) => {
                match (self.marks.get(&(2 * x + 1)), self.marks.get(&(2 * y))) {
                    (Some(acked), Some(began)) => acked < began,
                    _ => false,
                }
            }
        }
    }

    /// The versions document `name` may have had by a crash after `k` ops: every one the
    /// setup wrote, and every write of it begun before the crash.
    fn versions(&self, name: &str, k: usize) -> Vec<(Pos, &[u8])> {
        let setup = self.history.setup.get(name).into_iter().flatten();
        let setup = setup.enumerate().map(|(n, b)| (Pos::Setup(n), &b[..]));
        let run = self
            .history
            .attempts
            .iter()
            .enumerate()
            .filter_map(|(id, a)| {
                let begun = self.marks.get(&(2 * id)).is_some_and(|m| *m < k);
                match &a.bytes {
                    Some(b) if begun && a.doc == name => Some((Pos::Attempt(id), &b[..])),
                    _ => None,
                }
            });
        setup.chain(run).collect()
    }

    /// Whether a crash after `k` ops must leave every backup file as it was then: no
    /// write is in flight (every write begun was acknowledged) and, in journal mode, no
    /// write has begun yet or the workload declared the backups settled
    /// ([`Ctx::settled`], after a checkpoint) after the last write began. Outside
    /// journal mode each acknowledged write promises it: its directory sync made its
    /// rotation durable, and the versions it rotated were synced when written.
    fn settled_at(&self, k: usize) -> bool {
        let at = |mark: usize| self.marks.get(&mark).copied().filter(|m| *m < k);
        let mut last_begin = None;
        for id in 0..self.history.attempts.len() {
            if let Some(b) = at(2 * id) {
                if at(2 * id + 1).is_none() {
                    return false;
                }
                last_begin = last_begin.max(Some(b));
            }
        }
        // The starting image is durable as it is.
        !self.journal
            || last_begin.is_none()
            || self
                .history
                .settled
                .iter()
                .any(|m| at(*m).is_some_and(|s| Some(s) > last_begin))
    }

    /// The documents the workload knows.
    fn names(&self) -> Vec<String> {
        let names: std::collections::BTreeSet<&String> = self
            .history
            .initial
            .keys()
            .chain(self.history.attempts.iter().map(|a| &a.doc))
            .collect();
        names.into_iter().cloned().collect()
    }

    /// Every backup a recovered tree holds is a complete version of its document, in
    /// order; where the backups are settled, exactly those there were (see
    /// [`explore`]).
    fn judge_backups(&mut self, tree: &BTreeMap<String, Vec<u8>>, k: usize, what: &str) {
        let mut bad = Vec::new();
        for name in self.names() {
            let versions = self.versions(&name, k);
            let of = |bytes: &[u8]| -> Vec<Pos> {
                versions
                    .iter()
                    .filter(|(_, v)| *v == bytes)
                    .map(|(p, _)| *p)
                    .collect()
            };
            let mut found: Vec<(&String, Vec<Pos>)> = Vec::new();
            for (path, bytes) in backup_files(tree, &name).into_values() {
                let at = of(bytes);
                if at.is_empty() {
                    bad.push(format!(
                        "{path} is not a complete version of {name}: holds {}",
                        show(Some(bytes))
                    ));
                } else {
                    found.push((path, at));
                }
            }
            // Newest first: a higher number never holds a version surely written after
            // (or the same as) a lower number's.
            for (i, (newer, ps)) in found.iter().enumerate() {
                for (older, qs) in &found[i + 1..] {
                    if ps
                        .iter()
                        .all(|p| qs.iter().all(|q| p == q || self.before(*p, *q)))
                    {
                        bad.push(format!("{older} is not older than {newer}"));
                    }
                }
            }
            // Earlier than the document: no backup holds a version surely written after
            // the one at the document's name.
            if let Some(doc) = tree.get(&Ctx::path(&name)) {
                let ds = of(doc);
                for (path, ps) in &found {
                    if !ds.is_empty() && ps.iter().all(|p| ds.iter().all(|d| self.before(*d, *p))) {
                        bad.push(format!("{path} is newer than {name}"));
                    }
                }
            }
        }
        // Settled: exactly the backup files there were.
        if self.settled_at(k) {
            let names = self.names();
            let all_backups = |tree: &BTreeMap<String, Vec<u8>>| -> BTreeMap<String, Vec<u8>> {
                names
                    .iter()
                    .flat_map(|name| backup_files(tree, name).into_values())
                    .map(|(p, b)| (p.clone(), b.clone()))
                    .collect()
            };
            let (base, log) = (self.base, self.log);
            let want = self
                .settled
                .entry(k)
                .or_insert_with(|| all_backups(&build(base, log, k, &HashSet::new(), None).tree()));
            let have = all_backups(tree);
            let paths: std::collections::BTreeSet<&String> =
                want.keys().chain(have.keys()).collect();
            for path in paths {
                let (w, h) = (want.get(path), have.get(path));
                if w != h {
                    bad.push(format!(
                        "{path} holds {}, but was settled holding {}",
                        show(h.map(|b| &b[..])),
                        show(w.map(|b| &b[..]))
                    ));
                }
            }
        }
        for why in bad {
            self.report
                .violation(Violation::Backup, format!("{what} @{k}: {why}"));
        }
    }

    /// Every document is one of the versions it may hold after a crash after `k` ops,
    /// and every backup one of its earlier versions ([`Judge::judge_backups`]).
    fn judge(&mut self, image: &Image, k: usize, what: &str) {
        let tree = image.tree();
        self.judge_backups(&tree, k, what);
        let allowed = allowed(self.history, &self.marks, k);
        for (name, ok) in &allowed {
            let content = tree.get(&Ctx::path(name)).cloned();
            if ok.contains(&content) {
                continue;
            }
            let known: HashSet<Option<Vec<u8>>> = self
                .history
                .attempts
                .iter()
                .filter(|a| &a.doc == name)
                .map(|a| a.bytes.clone())
                .chain(std::iter::once(self.history.initial.get(name).cloned()))
                .collect();
            let shown = content.as_ref().map_or("<missing>".to_string(), |c| {
                String::from_utf8_lossy(&c[..c.len().min(60)]).into_owned()
            });
            if known.contains(&content) {
                self.report.violation(
                    Violation::Lost,
                    format!("{what} @{k}: {name} lost an acknowledged write; holds {shown}"),
                );
            } else {
                self.report.violation(
                    Violation::Inconsistent,
                    format!("{what} @{k}: {name} is not a written version: {shown}"),
                );
            }
        }
        let invariant = *self.ctx.invariant.lock().unwrap();
        if let Some(check) = invariant
            && let Err(why) = check(&tree)
        {
            self.report
                .violation(Violation::Inconsistent, format!("{what} @{k}: {why}"));
        }
        // Any other visible document must at least parse.
        for (path, content) in &tree {
            let file = path.rsplit('/').next().unwrap_or("");
            if path.starts_with(ROOT)
                && file.ends_with(".json")
                && !file.starts_with('.')
                && serde_json::from_slice::<Value>(content).is_err()
            {
                self.report.violation(
                    Violation::Inconsistent,
                    format!("{what} @{k}: {path} does not parse"),
                );
            }
        }
    }
}

fn rng(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// Explore every crash state of `w` within `budget`.
pub fn explore(w: &Workload, budget: Budget) -> Report {
    let (image0, setup_ctx) = prepare(w);
    let (ctx, result) = run_recorded(w, &image0, &setup_ctx, None);
    let log = ctx.sim.log();
    let history = std::mem::take(&mut *ctx.history.lock().unwrap());
    let mut judge = Judge {
        volatile: VOLATILE.iter().filter_map(|v| image0.lookup(v)).collect(),
        ctx: &ctx,
        history: &history,
        marks: marks(&log),
        report: Report {
            workload: w.name,
            ops: log.iter().filter(|o| !matches!(o, Op::Mark(_))).count(),
            seed: budget.seed,
            ..Report::default()
        },
        distinct: HashSet::new(),
        seen: HashSet::new(),
        checked: 0,
        budget,
        base: &image0,
        log: &log,
        journal: image0.lookup("/data/.statefile/journal").is_some(),
        settled: HashMap::new(),
    };
    if let Err(e) = result {
        judge
            .report
            .violation(Violation::Other, format!("the workload itself failed: {e}"));
    }
    for what in ctx.violations() {
        judge.report.violation(Violation::Other, what);
    }
    let mut seed = budget.seed | 1;
    for k in 0..=log.len() {
        let optional = optional(&log, k, &judge.volatile);
        judge.report.prefixes += 1;
        judge.check(
            &build(&image0, &log, k, &HashSet::new(), None),
            k,
            "prefix",
            w.recovery_sparsity,
        );
        if budget.omissions {
            for o in &optional {
                judge.report.omissions += 1;
                judge.check(
                    &build(&image0, &log, k, &HashSet::from([*o]), None),
                    k,
                    "omission",
                    w.recovery_sparsity,
                );
            }
        }
        if budget.torn {
            for o in &optional {
                if let Op::Write { data, .. } = &log[*o] {
                    for boundary in [512usize, 4096] {
                        let mut keeps: Vec<usize> = (1..=3)
                            .map(|n| n * boundary)
                            .filter(|b| *b < data.len())
                            .collect();
                        keeps.insert(0, 0);
                        keeps.dedup();
                        for keep in keeps {
                            for fill in [Fill::Zeros, Fill::Garbage, Fill::Missing] {
                                judge.report.torn += 1;
                                let tear = Tear { keep, fill };
                                judge.check(
                                    &build(&image0, &log, k, &HashSet::new(), Some((*o, tear))),
                                    k,
                                    "torn",
                                    w.recovery_sparsity,
                                );
                            }
                        }
                    }
                }
            }
        }
        for _ in 0..budget.random_per_point {
            if optional.len() < 2 {
                break;
            }
            let dropped: HashSet<usize> = optional
                .iter()
                .copied()
                .filter(|_| rng(&mut seed).is_multiple_of(2))
                .collect();
            judge.report.random += 1;
            judge.check(
                &build(&image0, &log, k, &dropped, None),
                k,
                "random",
                w.recovery_sparsity,
            );
        }
    }
    judge.report.distinct_recovered = judge.distinct.len();
    judge.report
}

/// What fault injection found.
#[derive(Debug, Default, Clone)]
pub struct FaultReport {
    pub workload: &'static str,
    pub calls: usize,
    pub tried: usize,
    pub violations: usize,
    pub examples: Vec<String>,
}

/// The faults that apply to a kind of call.
fn faults_for(call: Call) -> Vec<FaultKind> {
    let mut v = vec![
        FaultKind::Errno(28),
        FaultKind::Errno(5),
        FaultKind::Errno(13),
    ];
    match call {
        Call::Rename | Call::Link => v.push(FaultKind::Errno(18)),
        Call::Write => {
            v.push(FaultKind::ShortWrite);
            v.push(FaultKind::Errno(4));
        }
        Call::Open | Call::Read | Call::Lock => v.push(FaultKind::Errno(4)),
        // Linux's failed fsync: the pages it could not write stay in the cache, marked
        // clean, so the file reads as it should while the disk holds other bytes.
        Call::SyncFile => v.push(FaultKind::ErrnoKeepPages(5)),
        _ => {}
    }
    v
}

fn expected_kind(f: FaultKind) -> Option<ErrorKind> {
    match f {
        FaultKind::Errno(28) => Some(ErrorKind::NoSpace),
        FaultKind::Errno(13) => Some(ErrorKind::PermissionDenied),
        FaultKind::Errno(5) | FaultKind::ErrnoKeepPages(5) | FaultKind::Errno(18) => {
            Some(ErrorKind::Io)
        }
        _ => None,
    }
}

/// What a fault run's error says of the writes it left unacknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Maybe written, maybe not (no error, or `Durability`: "may or may not survive").
    Unknown,
    /// Nothing written (an error of any other kind).
    Nothing,
    /// Written: the error says the new version stands (`Durability`, "committed in the
    /// journal" once recovery applied it, or "written and synced outside the journal").
    Stands,
}

/// The documents of a fault run (history `run`, log `log`) that `tree` shows holding a
/// version they may not, described. The run ended (no crash): by [`allowed`] at the end
/// of its log, a document holds the last version acknowledged for it in this run (its
/// initial content if none was), or a version whose write began after that
/// acknowledgement and was never acknowledged (in flight), or is missing where such a
/// delete was. Nothing older: a document back to a version before its last
/// acknowledged one lost an acknowledged write. Where the `outcome` of the writes in
/// flight is known, only the acknowledged version ([`Outcome::Nothing`]) or only theirs
/// ([`Outcome::Stands`]). `base` (the run without faults) names the documents: one
/// this run never began a write of must hold its initial content.
fn fault_run_documents(
    base: &History,
    run: &History,
    log: &[Op],
    outcome: Outcome,
    tree: &BTreeMap<String, Vec<u8>>,
) -> Vec<String> {
    let marks = marks(log);
    let may = allowed_with(run, &marks, log.len(), outcome != Outcome::Nothing);
    let acknowledged = allowed_with(run, &marks, log.len(), false);
    let names: std::collections::BTreeSet<&String> = base
        .initial
        .keys()
        .chain(base.attempts.iter().map(|a| &a.doc))
        .chain(run.attempts.iter().map(|a| &a.doc))
        .collect();
    let mut bad = Vec::new();
    for name in names {
        let initial = Contents::from([base.initial.get(name).cloned()]);
        let mut ok = may.get(name).unwrap_or(&initial).clone();
        if outcome == Outcome::Stands {
            // Only the versions in flight (unless they are the acknowledged bytes).
            let stands: Contents = ok
                .difference(acknowledged.get(name).unwrap_or(&initial))
                .cloned()
                .collect();
            if !stands.is_empty() {
                ok = stands;
            }
        }
        let content = tree.get(&Ctx::path(name)).cloned();
        if ok.contains(&content) {
            continue;
        }
        let written = content.is_none()
            || base.initial.get(name) == content.as_ref()
            || base.attempts.iter().chain(&run.attempts).any(|a| {
                &a.doc == name && a.bytes.is_some() && a.bytes.as_ref() == content.as_ref()
            });
        let mut allowed: Vec<String> = ok.iter().map(|c| show(c.as_deref())).collect();
        allowed.sort();
        bad.push(format!(
            "{name} holds {} ({}); it may hold only {}",
            show(content.as_deref()),
            if written {
                "an acknowledged write lost, or a failed one applied"
            } else {
                "never written"
            },
            allowed.join(" or ")
        ));
    }
    bad
}

/// The backup files in `tree` of the documents of a fault run (history `run`; `base`,
/// the run without faults, names the documents) that are not a complete version of
/// their document, described: every one that exists holds exactly the bytes of a
/// version the setup wrote or a write of the run began (docs/design.md: "each a
/// complete earlier version"), never an empty, torn or never-written one.
fn fault_run_backups(
    base: &History,
    run: &History,
    tree: &BTreeMap<String, Vec<u8>>,
) -> Vec<String> {
    let names: std::collections::BTreeSet<&String> = base
        .initial
        .keys()
        .chain(base.attempts.iter().map(|a| &a.doc))
        .chain(run.attempts.iter().map(|a| &a.doc))
        .collect();
    let mut bad = Vec::new();
    for name in names {
        let written = |bytes: &[u8]| {
            base.setup
                .get(name)
                .is_some_and(|s| s.iter().any(|v| v == bytes))
                || run
                    .attempts
                    .iter()
                    .any(|a| &a.doc == name && a.bytes.as_deref() == Some(bytes))
        };
        for (path, bytes) in backup_files(tree, name).into_values() {
            if !written(bytes) {
                bad.push(format!(
                    "{path} is not a complete version of {name}: holds {}",
                    show(Some(bytes))
                ));
            }
        }
    }
    bad
}

/// In journal mode, after a fault run (`ctx`, started from `image0`; `history` the run
/// without faults, `run` this one's) and the `Store::open` that followed, both
/// recorded: a checkpoint, which frees the records that may hold the only copy of a
/// version kept as a backup since the last one (or of a document whose sync failed);
/// then every backup file must be a complete version, in the tree as it is and after a
/// power loss (only what was synced, [`durable_image`], recovered), where every
/// document must hold its last acknowledged version or one whose write began after it.
/// There a failed write counts as in flight whatever its error said (not as "nothing
/// written", as [`fault_run_documents`] has it right after the run): a commit record
/// written into the ring whose slot in the shared state could not be written (its
/// write failed: the commit fails, "nothing written") is made durable by the next sync
/// of the journal, and the replay after a power loss applies it (found by this check;
/// see `tests/append_slot_failure.rs`).
fn fault_run_backups_after_checkpoint(
    image0: &Image,
    ctx: &Ctx,
    opts: &Options,
    (history, run): (&History, &History),
    fail: &mut impl FnMut(String),
) {
    ctx.sim.record(true);
    // Its own failure is not judged (a failed sync may rightly stop it).
    let _ = statefile::journal::checkpoint(ROOT, opts);
    ctx.sim.record(false);
    for what in fault_run_backups(history, run, &ctx.sim.image().tree()) {
        fail(format!("after a checkpoint, {what}"));
    }
    let log = ctx.sim.log();
    let lost = SimFs::from_image(durable_image(image0, &log));
    match Store::open_with(ROOT, opts.clone().fs(Arc::new(lost.clone()))) {
        Ok(_) => {
            let tree = lost.image().tree();
            let bad =
                fault_run_backups(history, run, &tree)
                    .into_iter()
                    .chain(fault_run_documents(
                        history,
                        run,
                        &log,
                        Outcome::Unknown,
                        &tree,
                    ));
            for what in bad {
                fail(format!("after a checkpoint and a power loss, {what}"));
            }
        }
        Err(e) => fail(format!(
            "Store::open after a checkpoint and a power loss failed: {e}"
        )),
    }
}

/// Fail every seam call of `w` once with every applicable error, and check the outcome.
///
/// After each run, and after the `Store::open` that follows, the documents are judged
/// (`fault_run_documents`); in journal mode, the backups too, after a checkpoint and
/// after a power loss then (`fault_run_backups_after_checkpoint`). A failed fsync is
/// tried both ways: its pages dropped (the tree shows it at once) and kept clean in
/// the cache (only the disk shows it).
pub fn inject_faults(w: &Workload) -> FaultReport {
    let mut report = FaultReport {
        workload: w.name,
        ..FaultReport::default()
    };
    let (image0, setup_ctx) = prepare(w);
    let (ctx, base) = run_recorded(w, &image0, &setup_ctx, None);
    if let Err(e) = base {
        report.violations += 1;
        report
            .examples
            .push(format!("the workload failed without faults: {e}"));
        return report;
    }
    let calls = ctx.sim.calls();
    report.calls = calls.len();
    let history = std::mem::take(&mut *ctx.history.lock().unwrap());
    let journal = image0.lookup("/data/.statefile/journal").is_some();
    for (at, call) in calls.iter().enumerate() {
        for kind in faults_for(*call) {
            report.tried += 1;
            let (ctx, result) = run_recorded(
                w,
                &image0,
                &setup_ctx,
                Some(Fault {
                    at: at as u64,
                    kind,
                }),
            );

            let fired = ctx.sim.fault_fired();
            let own = ctx.violations();
            // What this run set out to write and acknowledged (a workload may learn the
            // versions only as it runs, e.g. which calls of a batch failed), judged from
            // the same start as the base run.
            let run = History {
                initial: history.initial.clone(),
                setup: history.setup.clone(),
                attempts: ctx.history.lock().unwrap().attempts.clone(),
                settled: Vec::new(),
            };
            let log = ctx.sim.log();
            // What the error says of the writes in flight (see `fault_run_documents`):
            // one that failed with any kind but `Durability` wrote nothing; a commit in
            // the journal stands once recovery applied it, a version written outside the
            // journal at once.
            let (now, recovered) = match &result {
                Ok(()) => (Outcome::Unknown, Outcome::Unknown),
                Err(e) if e.kind() != ErrorKind::Durability => (Outcome::Nothing, Outcome::Nothing),
                Err(e)
                    if e.to_string()
                        .contains("written and synced outside the journal") =>
                {
                    (Outcome::Stands, Outcome::Stands)
                }
                Err(e) if e.to_string().contains("committed in the journal") => {
                    (Outcome::Unknown, Outcome::Stands)
                }
                Err(_) => (Outcome::Unknown, Outcome::Unknown),
            };
            let mut fail = |what: String| {
                report.violations += 1;
                if report.examples.len() < 5 {
                    report
                        .examples
                        .push(format!("call {at} ({call:?}) {kind:?}: {what}"));
                }
            };
            for what in own {
                fail(format!("the workload found: {what}"));
            }
            match (&result, expected_kind(kind)) {
                (Ok(()), _) => {}
                // A failed directory sync after the rename, or a failed journal flush:
                // the write may or may not survive, and says so.
                (Err(e), _)
                    if matches!(fired, Some(Call::SyncDir | Call::SyncFile))
                        && e.kind() == ErrorKind::Durability => {}
                // A rename (or a delete's unlink or rename) failing after the journal
                // was flushed: the commit stands, and the error says so with the
                // version, whatever the errno (recovery applies it: checked below).
                (Err(e), _)
                    if matches!(fired, Some(Call::Rename | Call::Other))
                        && e.kind() == ErrorKind::Durability
                        && e.to_string().contains("committed in the journal") => {}
                // Any call of a journal flush failing after the record was appended
                // (its lock, the shared state): the record may be durable through
                // another flush, so the outcome is unknown, and the error says so.
                (Err(e), _)
                    if e.kind() == ErrorKind::Durability
                        && e.to_string().contains("flush did not complete") => {}
                // A write outside the journal (a document too large for a record, a file
                // put in place) whose `direct` record could not be made durable after the
                // file and its directory were synced: the new version stands, and the
                // error says so.
                (Err(e), _)
                    if e.kind() == ErrorKind::Durability
                        && e.to_string()
                            .contains("written and synced outside the journal") => {}
                (Err(e), Some(want)) if e.kind() == want => {}
                (Err(e), _) => fail(format!("returned {:?}: {e}", e.kind())),
            }
            // Every document holds its last acknowledged version or one attempted after
            // it (in flight), never an older one.
            let tree = ctx.sim.image().tree();
            for what in fault_run_documents(&history, &run, &log, now, &tree) {
                fail(format!("after the run, {what}"));
            }
            // After the next Store::open no temp file remains, and writing works.
            let opts = ctx.opts.clone();
            // From here on recorded too, for the power loss after a checkpoint (below).
            ctx.sim.record(journal);
            match Store::open_with(ROOT, opts.clone()) {
                Ok(_) => {
                    let after = ctx.sim.image().tree();
                    let temps: Vec<String> = after
                        .keys()
                        .filter(|p| p.contains(".sf-") && p.ends_with(".tmp"))
                        .cloned()
                        .collect();
                    if !temps.is_empty() {
                        fail(format!("temp files left after Store::open: {temps:?}"));
                    }
                    // The same after a recovery (which may replay a journal): it may
                    // settle a write in flight either way, and bring back nothing older.
                    for what in fault_run_documents(&history, &run, &log, recovered, &after) {
                        fail(format!("after Store::open, {what}"));
                    }
                    // A write that failed with any kind but Durability wrote nothing and
                    // left nothing to apply: opening the store (which replays a journal)
                    // changes no document. (In journal mode a failure after the record's
                    // append must withdraw it.)
                    if let Err(e) = &result
                        && e.kind() != ErrorKind::Durability
                    {
                        for name in history
                            .initial
                            .keys()
                            .chain(history.attempts.iter().map(|a| &a.doc))
                        {
                            let p = Ctx::path(name);
                            if tree.get(&p) != after.get(&p) {
                                fail(format!(
                                    "the write failed ({:?}: {e}), yet opening the store \
                                     changed {name}",
                                    e.kind()
                                ));
                            }
                        }
                    }
                }
                Err(e) => fail(format!("Store::open failed: {e}")),
            }
            ctx.sim.record(false);
            if journal {
                fault_run_backups_after_checkpoint(
                    &image0,
                    &ctx,
                    &opts,
                    (&history, &run),
                    &mut fail,
                );
            }
            for name in history.initial.keys() {
                if let Err(e) = Doc::<Value>::open_with(Ctx::path(name), opts.clone())
                    .and_then(|d| d.write(&json!({"next": true})))
                {
                    fail(format!("the next write of {name} failed: {e}"));
                }
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(attempts: &[&str]) -> History {
        History {
            initial: BTreeMap::from([("d.json".to_string(), b"init".to_vec())]),
            setup: BTreeMap::from([("d.json".to_string(), vec![b"init".to_vec()])]),
            settled: Vec::new(),
            attempts: attempts
                .iter()
                .map(|b| Attempt {
                    doc: "d.json".into(),
                    bytes: Some(b.as_bytes().to_vec()),
                })
                .collect(),
        }
    }

    fn may_hold(h: &History, marks: &[(usize, usize)], k: usize) -> Vec<String> {
        let marks: HashMap<usize, usize> = marks.iter().copied().collect();
        let mut v: Vec<String> = allowed(h, &marks, k)["d.json"]
            .iter()
            .map(|c| {
                c.as_ref()
                    .map_or("-".into(), |b| String::from_utf8_lossy(b).into())
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn backup_files_are_the_numbered_sidecars_of_the_document_only() {
        let tree: BTreeMap<String, Vec<u8>> = [
            "/data/a.json",
            "/data/.a.json.bak",
            "/data/.a.json.bak.2",
            "/data/.a.json.bak.10",
            "/data/.a.json.bak.1",
            "/data/.a.json.bak.x",
            "/data/.a.json.bak2",
            "/data/.a.json.corrupt",
            "/data/.a.json.bak.sf-abcdefghijklmnop.tmp",
            "/data/.ab.json.bak",
            "/data/.b.json.bak",
        ]
        .into_iter()
        .map(|p| (p.to_string(), p.as_bytes().to_vec()))
        .collect();
        let found: Vec<(usize, &str)> = backup_files(&tree, "a.json")
            .into_iter()
            .map(|(n, (p, _))| (n, p.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                (1, "/data/.a.json.bak"),
                (2, "/data/.a.json.bak.2"),
                (10, "/data/.a.json.bak.10")
            ]
        );
    }

    #[test]
    fn sequential_writes_allow_only_the_last_acknowledged_or_the_one_in_flight() {
        let h = history(&["a", "b"]);
        // a: begin@0 ack@5; b: begin@6 ack@11 (mark ids: 2*id begin, 2*id+1 ack).
        let m = [(0, 0), (1, 5), (2, 6), (3, 11)];
        assert_eq!(may_hold(&h, &m, 3), ["a", "init"]);
        assert_eq!(may_hold(&h, &m, 6), ["a"]);
        assert_eq!(may_hold(&h, &m, 8), ["a", "b"]);
        assert_eq!(may_hold(&h, &m, 12), ["b"]);
    }

    #[test]
    fn overlapping_writes_may_land_in_either_order() {
        // Two threads: a and b both begin, b's ack is recorded before a's although a's
        // rename may have come first or last (CI once saw the older checker call this
        // a lost write).
        let h = history(&["a", "b", "c"]);
        let m = [(0, 0), (2, 1), (3, 18), (1, 19), (4, 20), (5, 28)];
        assert_eq!(may_hold(&h, &m, 20), ["a", "b"]);
        // c began after both were acknowledged: once c is acknowledged, only c.
        assert_eq!(may_hold(&h, &m, 25), ["a", "b", "c"]);
        assert_eq!(may_hold(&h, &m, 29), ["c"]);
    }

    /// The fault injector's judge: a run that acknowledged A then B, then began C
    /// (failed): the document may hold B or C (C's outcome unknown under `Durability`),
    /// only B if the failure was another kind (nothing written), only C if the error
    /// said it stands, never A or the initial content (a rollback: the acknowledged B
    /// lost).
    #[test]
    fn a_fault_run_may_not_roll_back_past_its_last_acknowledged_write() {
        let h = history(&["A", "B", "C"]);
        let mark = |m: usize| Op::Mark(m);
        // A: begin, ack; B: begin, ack; C: begin, never acknowledged.
        let log = [mark(0), mark(1), mark(2), mark(3), mark(4)];
        let holds = |bytes: Option<&str>, outcome: Outcome| -> bool {
            let tree: BTreeMap<String, Vec<u8>> = bytes
                .map(|b| (Ctx::path("d.json"), b.as_bytes().to_vec()))
                .into_iter()
                .collect();
            fault_run_documents(&h, &h, &log, outcome, &tree).is_empty()
        };
        assert!(
            !holds(Some("A"), Outcome::Unknown),
            "A is older than the acknowledged B"
        );
        assert!(!holds(Some("init"), Outcome::Unknown));
        assert!(!holds(None, Outcome::Unknown));
        assert!(!holds(Some("D"), Outcome::Unknown), "never written");
        assert!(holds(Some("B"), Outcome::Unknown));
        assert!(
            holds(Some("C"), Outcome::Unknown),
            "C began after B was acknowledged"
        );
        // The write failed with another kind of error: it wrote nothing.
        assert!(holds(Some("B"), Outcome::Nothing));
        assert!(!holds(Some("C"), Outcome::Nothing));
        assert!(!holds(Some("A"), Outcome::Nothing));
        // The error said C stands (committed, or written outside the journal).
        assert!(holds(Some("C"), Outcome::Stands));
        assert!(!holds(Some("B"), Outcome::Stands));
        // Nothing acknowledged yet: the initial content, or A in flight.
        let log = [mark(0)];
        let h = history(&["A"]);
        let holds = |bytes: &str, outcome: Outcome| {
            let tree = BTreeMap::from([(Ctx::path("d.json"), bytes.as_bytes().to_vec())]);
            fault_run_documents(&h, &h, &log, outcome, &tree).is_empty()
        };
        assert!(holds("init", Outcome::Unknown) && holds("A", Outcome::Unknown));
        assert!(holds("init", Outcome::Nothing) && !holds("A", Outcome::Nothing));
    }

    /// End to end: a "library" whose failed write puts an older version back (here the
    /// workload does it behind the history's back) is caught by [`inject_faults`]; the
    /// judge that accepted any version ever written passed it.
    #[test]
    fn inject_faults_catches_a_failed_write_that_rolls_the_document_back() {
        let w = Workload {
            name: "rollback on failure",
            opts: || Options::new().backups(0),
            setup: |ctx| ctx.initial("d.json", &json!({"v": 0})),
            run: |ctx| {
                for v in 1..=2 {
                    let id = ctx.begin("d.json", &json!({ "v": v }));
                    ctx.doc("d.json").write(&json!({ "v": v }))?;
                    ctx.ack(id);
                }
                let id = ctx.begin("d.json", &json!({"v": 3}));
                if let Err(e) = ctx.doc("d.json").write(&json!({"v": 3})) {
                    // Back to v 1, older than the acknowledged v 2.
                    let _ = ctx.doc("d.json").write(&json!({"v": 1}));
                    return Err(e);
                }
                ctx.ack(id);
                Ok(())
            },
            deterministic: true,
            recovery_sparsity: 1,
        };
        let r = inject_faults(&w);
        assert!(r.violations > 0, "{r:#?}");
        assert!(
            r.examples
                .iter()
                .all(|e| e.contains("d.json holds") && e.contains("an acknowledged write lost")),
            "{:#?}",
            r.examples
        );
    }
}
