//! N-API bindings for statefile: the native half of the npm package `statefile`.
//!
//! Every file operation is a call into the `statefile` library; nothing of the replace
//! protocol or the lock is written again here. The JavaScript half (`index.ts`)
//! turns values into JSON text and back, checks them, and throws `StatefileError`s.
//!
//! Each operation comes twice: `fooSync` runs on the calling (JavaScript) thread, as
//! `fs.writeFileSync` does; `foo` runs on a worker thread of napi's tokio runtime's
//! blocking pool and returns a Promise, so file I/O, fsync and lock waits never block
//! the event loop. Lock waits do not occupy libuv's own thread pool either, so
//! `fs.promises` calls made while an update waits for a lock still run.
//!
//! Every result crosses to JavaScript as one JSON text, `{"ok": ...}` or
//! `{"error": {"code", "message", "path", "version", "errno", "pointer"}}`, so that a
//! document value is parsed once, by V8's own `JSON.parse`.
//!
//! The crate's own code has no `unsafe`; the glue napi-derive generates does.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::Duration;

use napi::Env;
use napi::bindgen_prelude::{Buffer, Function, Object, PromiseRaw};
use napi_derive::napi;
use serde::Serialize;
use serde_json::Value;
use statefile::journal::{self, CheckpointReport, JournalOptions, JournalStatus};
use statefile::{
    Action, BackupInfo, BackupRef, Doc, Durability, Error, ErrorKind, MAX_TX_OPS, Options, Problem,
    Receipt, Report, Store, TxOpError, Version, Versioned,
};
use tokio::sync::oneshot;

mod text;
use text::JsonText;

// ---------------------------------------------------------------------------------
// Results as JSON text

/// A failure as JavaScript sees it (the fields of `StatefileError`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorOut {
    code: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    /// The OS error number underneath, if any (JavaScript names it: `ENOENT`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    errno: Option<i32>,
    /// For a value JavaScript cannot hold exactly: where it is (RFC 6901).
    #[serde(skip_serializing_if = "Option::is_none")]
    pointer: Option<String>,
}

fn code(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::NotFound => "NOT_FOUND",
        ErrorKind::Corrupt => "CORRUPT",
        ErrorKind::Conflict => "CONFLICT",
        ErrorKind::LockTimeout => "LOCK_TIMEOUT",
        ErrorKind::NoSpace => "NO_SPACE",
        ErrorKind::PermissionDenied => "PERMISSION_DENIED",
        ErrorKind::InvalidName => "INVALID_NAME",
        ErrorKind::Durability => "DURABILITY",
        ErrorKind::Serialize => "SERIALIZE",
        _ => "IO",
    }
}

/// A malformed argument (a version or backup reference that does not parse): the
/// JavaScript side throws it as a `TypeError`.
fn invalid_argument(message: String) -> ErrorOut {
    ErrorOut {
        code: "INVALID_ARGUMENT",
        message,
        path: None,
        version: None,
        errno: None,
        pointer: None,
    }
}

impl From<statefile::ParseVersionError> for ErrorOut {
    fn from(e: statefile::ParseVersionError) -> ErrorOut {
        invalid_argument(e.to_string())
    }
}

/// The OS error number of the first `io::Error` among `e`'s causes.
fn os_error(e: &Error) -> Option<i32> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(n) = c
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
        {
            return Some(n);
        }
        cause = c.source();
    }
    None
}

impl From<Error> for ErrorOut {
    fn from(e: Error) -> ErrorOut {
        // The message plus its causes, as the CLI prints them.
        let mut message = e.to_string();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            let text = c.to_string();
            if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            cause = c.source();
        }
        ErrorOut {
            code: code(e.kind()),
            message,
            path: e.path().map(|p| p.display().to_string()),
            version: e.version().map(|v| v.as_str().to_string()),
            errno: os_error(&e),
            pointer: None,
        }
    }
}

#[derive(Serialize)]
enum Envelope<T> {
    #[serde(rename = "ok")]
    Ok(T),
    #[serde(rename = "error")]
    Error(ErrorOut),
    /// An update whose JavaScript callback threw: nothing was written.
    #[serde(rename = "aborted")]
    Aborted(bool),
}

type Out<T> = Result<T, ErrorOut>;

fn envelope<T: Serialize>(r: Out<T>) -> String {
    let e = match r {
        Ok(v) => Envelope::Ok(v),
        Err(e) => Envelope::Error(e),
    };
    text(&e)
}

/// `envelope`, naming `path` if the result is too large for JavaScript.
fn envelope_at<T: Serialize>(r: Out<T>, path: Option<&Path>) -> String {
    match r {
        Ok(v) => text_at(&Envelope::Ok(v), path),
        Err(e) => text(&Envelope::<()>::Error(e)),
    }
}

fn text<T: Serialize>(e: &Envelope<T>) -> String {
    text_at(e, None)
}

/// As [`checked_text`], with the refusal as the text when it is too large.
fn text_at<T: Serialize>(e: &Envelope<T>, path: Option<&Path>) -> String {
    checked_text(e, path).unwrap_or_else(|refused| encode(&Envelope::<()>::Error(refused)))
}

/// The longest string V8 makes (`v8::String::kMaxLength` on 64-bit, 2^29 - 24
/// characters): napi refuses to make a JavaScript string of more UTF-8 bytes than that
/// (a generic failure, not a `StatefileError`).
const MAX_JS_STRING: usize = (1 << 29) - 24;

/// `e` as the JSON text JavaScript gets, or the refusal of a text too long to be a
/// JavaScript string (a document of more than 512 MiB of JSON), naming `path`.
fn checked_text<T: Serialize>(e: &Envelope<T>, path: Option<&Path>) -> Out<String> {
    let s = encode(e);
    if s.len() <= MAX_JS_STRING {
        return Ok(s);
    }
    Err(ErrorOut {
        code: "SERIALIZE",
        message: format!(
            "{}the value is {} bytes of JSON, too large for a JavaScript string (at most \
             {MAX_JS_STRING} bytes); nothing was changed",
            path.map(|p| format!("{}: ", p.display()))
                .unwrap_or_default(),
            s.len()
        ),
        path: path.map(|p| p.display().to_string()),
        version: None,
        errno: None,
        pointer: None,
    })
}

fn encode<T: Serialize>(e: &Envelope<T>) -> String {
    // Serializing a serde_json::Value or the plain structs below cannot fail (all map
    // keys are strings); should it ever, say so rather than panic.
    serde_json::to_string(e).unwrap_or_else(|err| {
        format!(
            r#"{{"error":{{"code":"IO","message":{}}}}}"#,
            Value::String(format!("cannot encode a result for JavaScript: {err}"))
        )
    })
}

/// Why the JSON text of a value cannot be stored. The text comes from the JavaScript
/// side's `JSON.stringify`, so only nesting deeper than the parser accepts can fail here.
fn unparsable(e: &serde_json::Error) -> ErrorOut {
    ErrorOut {
        code: "SERIALIZE",
        message: format!("cannot store this value: {e}"),
        path: None,
        version: None,
        errno: None,
        pointer: None,
    }
}

/// Parse the JSON text the JavaScript side made of a value (which must pass
/// [`text::check`]).
fn parse_value(json: &str) -> Out<Value> {
    text::check(json)
        .and_then(|()| serde_json::from_str(json))
        .map_err(|e| unparsable(&e))
}

/// The JSON text the JavaScript side made of a value, for writing it as it is.
fn json_text(json: String) -> Out<JsonText> {
    JsonText::new(json).map_err(|e| unparsable(&e))
}

/// The numbers in `v` that a JavaScript number cannot hold exactly: a number is exact
/// when the double nearest to it prints as the same number (JavaScript prints doubles
/// by their shortest round-trip form), so what JavaScript writes back is the number
/// that was read ([`statefile::exact_f64`]). `1.0` and `1e2` are: JavaScript writes
/// them back as `1` and `100`, the same numbers. Integers that are not (2^53 + 1, 2^60,
/// whose double prints as 1152921504606847000, `123456789012345678901234567890`), and
/// integers JavaScript would write with an exponent (from 10^21), are listed by pointer,
/// to become BigInts; any other number (`0.30000000000000000001`,
/// `1e-400`, `1e400`) has no exact JavaScript type: the first is the error, as
/// (pointer, text). A loop with a stack of its own, not recursion.
fn inexact_numbers(v: &Value) -> Result<Vec<String>, (String, String)> {
    let mut bigints = Vec::new();
    // (a value still to look at, its pointer)
    let mut stack: Vec<(&Value, String)> = vec![(v, String::new())];
    while let Some((v, at)) = stack.pop() {
        match v {
            // The common case, without looking at the number's text.
            Value::Number(n) if n.as_i64().is_some_and(|i| i.unsigned_abs() <= 1 << 53) => {}
            Value::Number(n) => {
                let text = n.to_string();
                let integer = text.bytes().all(|b| b == b'-' || b.is_ascii_digit());
                match statefile::exact_f64(n) {
                    // From 1e21 up JavaScript writes an integer with an exponent (1e+30):
                    // the same value, but no longer an integer to other readers.
                    Some(f) if !integer || f.abs() < 1e21 => {}
                    _ if integer => bigints.push(at),
                    _ => return Err((at, text)),
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate().rev() {
                    if matches!(item, Value::Number(_) | Value::Array(_) | Value::Object(_)) {
                        stack.push((item, format!("{at}/{i}")));
                    }
                }
            }
            Value::Object(map) => {
                for (k, item) in map.iter().rev() {
                    if matches!(item, Value::Number(_) | Value::Array(_) | Value::Object(_)) {
                        let token = k.replace('~', "~0").replace('/', "~1");
                        stack.push((item, format!("{at}/{token}")));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(bigints)
}

/// A value as JavaScript gets it, with `bigints`: the pointers of the integers a
/// JavaScript number would round, each given as the string of its digits, which the
/// JavaScript side turns into a BigInt. Refused (nothing shown, nothing written) if it
/// holds another number a JavaScript number would change: reading, or updating, a
/// document must never change a number nobody touched.
fn for_js<'a>(v: &'a Value, path: &Path) -> Out<(Cow<'a, Value>, Vec<String>)> {
    match inexact_numbers(v) {
        Ok(bigints) if bigints.is_empty() => Ok((Cow::Borrowed(v), bigints)),
        Ok(bigints) => {
            let mut shown = v.clone();
            for at in &bigints {
                if let Some(n) = shown.pointer_mut(at) {
                    *n = Value::String(n.to_string());
                }
            }
            Ok((Cow::Owned(shown), bigints))
        }
        Err((pointer, digits)) => Err(inexact(path, pointer, &digits)),
    }
}

/// The refusal of the number `digits` at `pointer` in the document at `path`, which
/// JavaScript cannot hold exactly.
fn inexact(path: &Path, pointer: String, digits: &str) -> ErrorOut {
    ErrorOut {
        code: "SERIALIZE",
        message: format!(
            "{}: the number {} at {} cannot be held exactly by a JavaScript number or \
             BigInt; statefile refuses to round it (store such numbers as strings)",
            path.display(),
            abbreviate(digits),
            if pointer.is_empty() {
                "the top"
            } else {
                &pointer
            }
        ),
        path: Some(path.display().to_string()),
        version: None,
        errno: None,
        pointer: Some(pointer),
    }
}

/// A number's text for a message: in full up to 60 characters, else its ends and length.
fn abbreviate(text: &str) -> String {
    if text.len() <= 60 {
        return text.to_string();
    }
    // A JSON number is ASCII: any byte is a character boundary.
    format!(
        "{}...{} ({} characters)",
        &text[..24],
        &text[text.len() - 24..],
        text.len()
    )
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReceiptOut {
    path: String,
    version: String,
    previous: Option<String>,
    bytes: u64,
    durability: &'static str,
    backup: Option<String>,
    created: bool,
    unchanged: bool,
    lock_wait_ms: f64,
    batch: usize,
    queued_ms: f64,
}

impl From<Receipt> for ReceiptOut {
    fn from(r: Receipt) -> ReceiptOut {
        ReceiptOut {
            path: r.path.display().to_string(),
            version: r.version.as_str().to_string(),
            previous: r.previous.map(|v| v.as_str().to_string()),
            bytes: r.bytes,
            durability: r.durability.as_str(),
            backup: r.backup.map(|b| b.path.display().to_string()),
            created: r.created,
            unchanged: r.unchanged,
            lock_wait_ms: r.lock_wait.as_secs_f64() * 1e3,
            batch: r.batch,
            queued_ms: r.queued.as_secs_f64() * 1e3,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct VersionedOut {
    value: Value,
    version: String,
    recovered: Option<RecoveredOut>,
    /// Pointers of the integers given as strings, to become BigInts (see [`for_js`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    bigints: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RecoveredOut {
    backup: usize,
    path: String,
    damaged_version: String,
    reason: String,
}

impl VersionedOut {
    fn new(v: Versioned<Value>, path: &Path) -> Out<VersionedOut> {
        let (value, bigints) = match for_js(&v.value, path)? {
            (Cow::Owned(shown), bigints) => (shown, bigints),
            (Cow::Borrowed(_), bigints) => (v.value, bigints),
        };
        Ok(VersionedOut {
            value,
            bigints,
            version: v.version.as_str().to_string(),
            recovered: v.recovered.map(|r| RecoveredOut {
                backup: r.backup,
                path: r.path.display().to_string(),
                damaged_version: r.damaged_version.as_str().to_string(),
                reason: r.reason,
            }),
        })
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BackupOut {
    number: usize,
    path: String,
    version: String,
    len: u64,
    modified_ms: f64,
    parses: bool,
}

impl From<BackupInfo> for BackupOut {
    fn from(b: BackupInfo) -> BackupOut {
        BackupOut {
            number: b.number,
            path: b.path.display().to_string(),
            version: b.version.as_str().to_string(),
            len: b.len,
            modified_ms: b
                .modified
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64() * 1e3),
            parses: b.parses,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReportOut {
    healthy: bool,
    needs_repair: bool,
    documents: usize,
    backups: usize,
    without_backup: usize,
    live_temps: usize,
    findings: Vec<FindingOut>,
    /// Journal mode: each journal covering the store, as the scan found it.
    journals: Vec<JournalStatusOut>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FindingOut {
    path: String,
    /// `stale-temp`, `corrupt-document`, `corrupt-backup` or `unreadable`.
    problem: &'static str,
    detail: Option<String>,
    /// `none`, `removed`, `restored`, `moved-aside`, `would` or `failed`.
    action: &'static str,
    action_detail: Option<String>,
    fixed: bool,
}

impl From<Report> for ReportOut {
    fn from(r: Report) -> ReportOut {
        ReportOut {
            healthy: r.is_healthy(),
            needs_repair: r.needs_repair(),
            documents: r.documents,
            backups: r.backups,
            without_backup: r.without_backup,
            live_temps: r.live_temps,
            findings: r
                .findings
                .into_iter()
                .map(|f| {
                    let fixed = f.is_fixed();
                    let (problem, detail) = match f.problem {
                        Problem::StaleTemp => ("stale-temp", None),
                        Problem::CorruptDocument {
                            reason,
                            good_backup,
                        } => (
                            "corrupt-document",
                            Some(match good_backup {
                                Some(b) => format!("{reason} (good backup: {})", b.display()),
                                None => format!("{reason} (no good backup)"),
                            }),
                        ),
                        Problem::CorruptBackup { reason } => ("corrupt-backup", Some(reason)),
                        Problem::Unreadable { error } => ("unreadable", Some(error)),
                        Problem::JournalReplay { version } => (
                            "journal-replay",
                            Some(match version {
                                Some(v) => format!(
                                    "not yet what its last journal record says (version {v})"
                                ),
                                None => "not yet what its last journal record says (deleted)"
                                    .to_string(),
                            }),
                        ),
                        Problem::JournalSkipped { version, reason } => (
                            "journal-skipped",
                            Some(match version {
                                Some(v) => format!(
                                    "its last journal record (version {v}) is not applied \
                                     here: {reason}"
                                ),
                                None => {
                                    format!("its last journal record is not applied here: {reason}")
                                }
                            }),
                        ),
                        Problem::JournalDamaged {
                            lsn,
                            reason,
                            later_records,
                        } => (
                            "journal-damaged",
                            Some(format!(
                                "journal damaged at LSN {lsn} ({reason}), {later_records} valid \
                                 records after it: writes in this tree are refused until a \
                                 person decides"
                            )),
                        ),
                        Problem::JournalSyncFailed => (
                            "journal-sync-failed",
                            Some(
                                "a sync of a document or backup whose bytes only the journal \
                                 may hold failed, and the file could not be rewritten from its \
                                 record: checkpoints are refused until a recovery rewrites the \
                                 files the journal holds"
                                    .to_string(),
                            ),
                        ),
                        _ => ("other", None),
                    };
                    let (action, action_detail) = match f.action {
                        Action::None => ("none", None),
                        Action::Removed => ("removed", None),
                        Action::Restored { from, version } => (
                            "restored",
                            Some(format!("from {} (version {version})", from.display())),
                        ),
                        Action::MovedAside { to } => {
                            ("moved-aside", Some(to.display().to_string()))
                        }
                        Action::Would(what) => ("would", Some(what)),
                        Action::Failed { error } => ("failed", Some(error)),
                        Action::Replayed => ("replayed", None),
                        _ => ("other", None),
                    };
                    FindingOut {
                        path: f.path.display().to_string(),
                        problem,
                        detail,
                        action,
                        action_detail,
                        fixed,
                    }
                })
                .collect(),
            journals: r.journals.into_iter().map(JournalStatusOut::from).collect(),
        }
    }
}

/// A journal's state (`journal::status`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JournalStatusOut {
    root: String,
    path: String,
    format_version: u32,
    swap: bool,
    capacity: u64,
    checkpoint_lsn: u64,
    end_lsn: u64,
    records: usize,
    in_flight: usize,
    to_replay: Vec<PendingOut>,
    damage: Option<DamageOut>,
    sync_failed: bool,
    needs_repair: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PendingOut {
    path: String,
    version: Option<String>,
    in_flight: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DamageOut {
    lsn: u64,
    reason: String,
    later_records: usize,
}

impl From<JournalStatus> for JournalStatusOut {
    fn from(s: JournalStatus) -> JournalStatusOut {
        JournalStatusOut {
            needs_repair: s.needs_repair(),
            root: s.root.display().to_string(),
            path: s.path.display().to_string(),
            format_version: s.format_version,
            swap: s.swap,
            capacity: s.capacity,
            checkpoint_lsn: s.checkpoint_lsn,
            end_lsn: s.end_lsn,
            records: s.records,
            in_flight: s.in_flight,
            to_replay: s
                .to_replay
                .into_iter()
                .map(|p| PendingOut {
                    path: p.path.display().to_string(),
                    version: p.version.map(|v| v.as_str().to_string()),
                    in_flight: p.in_flight,
                })
                .collect(),
            damage: s.damage.map(|d| DamageOut {
                lsn: d.lsn,
                reason: d.reason,
                later_records: d.later_records,
            }),
            sync_failed: s.sync_failed,
        }
    }
}

/// What a checkpoint did (`checkpoint`, `disableJournal`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CheckpointOut {
    freed: u64,
    documents: usize,
    directories: usize,
    adopted: usize,
}

impl From<CheckpointReport> for CheckpointOut {
    fn from(r: CheckpointReport) -> CheckpointOut {
        CheckpointOut {
            freed: r.freed,
            documents: r.documents,
            directories: r.directories,
            adopted: r.adopted,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DeletedOut {
    version: String,
    kept_as: Option<String>,
}

// ---------------------------------------------------------------------------------
// Options

/// Options of a `Doc` or a `Store` (checked by the JavaScript side first).
#[napi(object)]
#[derive(Debug, Clone, Default)]
pub struct DocOptions {
    /// Previous versions to keep as `.name.bak`, `.name.bak.2`, ...
    pub backups: Option<u32>,
    /// `"full"`, `"data"` or `"none"`.
    pub durability: Option<String>,
    /// How long a write waits for the document's lock.
    pub lock_timeout_ms: Option<f64>,
    /// Create missing parent directories on write.
    pub create_dirs: Option<bool>,
    /// Serve the newest good backup when the document is damaged.
    pub fallback: Option<bool>,
}

fn invalid_arg(msg: String) -> napi::Error {
    napi::Error::new(napi::Status::InvalidArg, msg)
}

fn lock_timeout(ms: f64) -> napi::Result<Duration> {
    Duration::try_from_secs_f64(ms / 1e3).map_err(|_| {
        invalid_arg(format!(
            "lockTimeoutMs must be a finite number >= 0, not {ms}"
        ))
    })
}

/// The largest document this binding reads or writes: a longer one could never become
/// a JavaScript string, so a larger file (a sparse multi-GB one) is refused before it
/// is read, with code `SERIALIZE`, as a value too large for a string is.
const MAX_DOCUMENT: u64 = MAX_JS_STRING as u64;

fn options(base: Options, o: &DocOptions) -> napi::Result<Options> {
    let mut opts = base.max_document_bytes(MAX_DOCUMENT);
    if let Some(n) = o.backups {
        opts = opts.backups(n as usize);
    }
    if let Some(d) = &o.durability {
        opts = opts.durability(d.parse::<Durability>().map_err(invalid_arg)?);
    }
    if let Some(ms) = o.lock_timeout_ms {
        opts = opts.lock_timeout(lock_timeout(ms)?);
    }
    if let Some(on) = o.create_dirs {
        opts = opts.create_dirs(on);
    }
    if let Some(on) = o.fallback {
        opts = opts.fallback(on);
    }
    Ok(opts)
}

/// A Promise of the JSON text `f` makes on a thread of napi's blocking pool. The work
/// goes straight from the JavaScript thread to the pool thread, which resolves the
/// Promise itself: two thread switches per call, where an `async fn` awaiting
/// `spawn_blocking` takes four (through a tokio worker both ways).
fn promise<'env>(
    env: &'env Env,
    f: impl FnOnce() -> String + Send + 'static,
) -> napi::Result<Object<'env>> {
    let (deferred, promise) = env.create_deferred()?;
    napi::bindgen_prelude::spawn_blocking(move || {
        let text = f();
        deferred.resolve(move |_| Ok(text));
    });
    Ok(promise)
}

// ---------------------------------------------------------------------------------
// Documents

/// A store opened on first use (opening scans it and cleans up after crashed
/// writers: file I/O that must not run on the event loop, so not in a constructor).
#[derive(Debug)]
struct LazyStore {
    root: PathBuf,
    opts: Options,
    store: Mutex<Option<Arc<Store>>>,
}

impl LazyStore {
    fn get(&self) -> Result<Arc<Store>, Error> {
        let mut slot = self.store.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = slot.as_ref() {
            return Ok(s.clone());
        }
        let s = Arc::new(Store::open_with(&self.root, self.opts.clone())?);
        *slot = Some(s.clone());
        Ok(s)
    }
}

#[derive(Debug)]
enum Handle {
    /// The document as `Value`s, to read it, and as JSON text (`Doc::typed`: the same
    /// document, lock and queue of writers), to write what JavaScript made without
    /// parsing it into a `Value` first.
    Plain {
        doc: Box<Doc<Value>>,
        text: Box<Doc<JsonText>>,
    },
    InStore(Arc<LazyStore>, String),
}

impl Handle {
    fn with<R, E: From<Error>>(&self, f: impl FnOnce(&Doc<Value>) -> Result<R, E>) -> Result<R, E> {
        match self {
            Handle::Plain { doc, .. } => f(doc),
            Handle::InStore(store, name) => f(&store.get()?.doc::<Value>(name)?),
        }
    }

    /// As `with`, for writing a value given as JSON text.
    fn with_text<R>(&self, f: impl FnOnce(&Doc<JsonText>) -> Result<R, Error>) -> Result<R, Error> {
        match self {
            Handle::Plain { text, .. } => f(text),
            Handle::InStore(store, name) => f(&store.get()?.doc::<JsonText>(name)?),
        }
    }

    fn read(&self) -> String {
        let mut path = None;
        let r = self.with(|d| {
            path = Some(d.path().to_path_buf());
            VersionedOut::new(d.read_versioned()?, d.path())
        });
        envelope_at(r, path.as_deref())
    }

    fn write(&self, json: String) -> String {
        envelope(
            json_text(json).and_then(|v| Ok(ReceiptOut::from(self.with_text(|d| d.write(&v))?))),
        )
    }

    fn write_if(&self, version: &str, json: String) -> String {
        envelope(json_text(json).and_then(|v| {
            let expected = Version::parse(version)?;
            Ok(ReceiptOut::from(
                self.with_text(|d| d.write_if(&expected, &v))?,
            ))
        }))
    }

    fn create(&self, json: String) -> String {
        envelope(
            json_text(json).and_then(|v| Ok(ReceiptOut::from(self.with_text(|d| d.create(&v))?))),
        )
    }

    fn delete(&self) -> String {
        envelope(self.with(|d| {
            let del = d.delete()?;
            Ok(DeletedOut {
                version: del.version.as_str().to_string(),
                kept_as: del.kept_as.map(|p| p.display().to_string()),
            })
        }))
    }

    fn version(&self) -> String {
        envelope(self.with(|d| Ok(d.version()?.as_str().to_string())))
    }

    fn backups(&self) -> String {
        envelope(self.with(|d| {
            Ok(d.backups()?
                .into_iter()
                .map(BackupOut::from)
                .collect::<Vec<_>>())
        }))
    }

    fn restore(&self, which: &str) -> String {
        envelope(
            backup_ref(which).and_then(|r| self.with(|d| Ok(ReceiptOut::from(d.restore(&r)?)))),
        )
    }
}

/// `""` for the newest good backup, else as the CLI and the server take it: a number
/// (1 = newest) or a version.
fn backup_ref(which: &str) -> Out<BackupRef> {
    if which.is_empty() {
        return Ok(BackupRef::NewestGood);
    }
    which
        .parse::<BackupRef>()
        .map_err(|e| invalid_argument(format!("restore: {e}")))
}

/// Whether JavaScript puts the key `k` before all others in an object, in ascending
/// numeric order, whatever order it was given in: an array index, the canonical
/// decimal form of an integer below 2^32 - 1.
fn js_index_key(k: &str) -> bool {
    (k == "0" || (!k.starts_with('0') && !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit())))
        && k.parse::<u32>().is_ok_and(|n| n != u32::MAX)
}

/// Give the objects of `new`, what an update callback made of `old`, the key order of
/// `old` where JavaScript lost it. A JavaScript object lists index-like keys (`"2"`,
/// `"10"`) first, in numeric order, so `{"name": .., "10": .., "2": ..}` came back as
/// `{"2": .., "10": .., "name": ..}`, and an update of `name` would have reordered the
/// file. Other keys keep the order JavaScript has them in (a key deleted and added again
/// moves to the end there as here); each index-like key `old` had goes back after the
/// key it followed in `old`; new index-like keys go at the end. Objects are matched by
/// key and array elements by position; the values are within the nesting limit, so the
/// recursion is bounded.
fn keep_key_order(old: &Value, new: &mut Value) {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            if n.keys().any(|k| js_index_key(k)) {
                reorder(o, n);
            }
            for (k, nv) in n.iter_mut() {
                if let Some(ov) = o.get(k) {
                    keep_key_order(ov, nv);
                }
            }
        }
        (Value::Array(o), Value::Array(n)) => {
            for (ov, nv) in o.iter().zip(n.iter_mut()) {
                keep_key_order(ov, nv);
            }
        }
        _ => {}
    }
}

/// One object of [`keep_key_order`].
fn reorder(old: &serde_json::Map<String, Value>, new: &mut serde_json::Map<String, Value>) {
    // The index-like keys `old` had after each other key (None: before any), in order.
    let mut after: std::collections::HashMap<Option<&str>, Vec<&str>> =
        std::collections::HashMap::new();
    let mut anchor: Option<&str> = None;
    for k in old.keys() {
        if !new.contains_key(k) {
            continue;
        }
        if js_index_key(k) {
            after.entry(anchor).or_default().push(k);
        } else {
            anchor = Some(k);
        }
    }
    let mut order: Vec<String> = Vec::with_capacity(new.len());
    let first = after.remove(&None).unwrap_or_default();
    order.extend(first.into_iter().map(str::to_string));
    for k in new.keys().filter(|k| !js_index_key(k)) {
        order.push(k.clone());
        if let Some(keys) = after.remove(&Some(k.as_str())) {
            order.extend(keys.into_iter().map(str::to_string));
        }
    }
    order.extend(
        new.keys()
            .filter(|k| js_index_key(k) && !old.contains_key(*k))
            .cloned(),
    );
    let mut from = std::mem::take(new);
    for k in order {
        if let Some(v) = from.remove(&k) {
            new.insert(k, v);
        }
    }
    // Every key is in `order`; were one not, it would still be kept, never dropped.
    debug_assert!(from.is_empty(), "keys left out of the order: {from:?}");
    new.extend(from);
}

/// Why an update ended without writing.
enum UpdateFail {
    Lib(Error),
    /// The value cannot be shown to JavaScript, or the one it gave cannot be stored.
    Refused(ErrorOut),
    /// JavaScript aborted it (its callback threw), or dropped the session unanswered.
    Abandoned,
}

impl From<Error> for UpdateFail {
    fn from(e: Error) -> UpdateFail {
        UpdateFail::Lib(e)
    }
}

/// What JavaScript decided about an update it was shown: the new value as JSON text
/// (parsed on the worker thread, which holds the lock anyway), or nothing.
enum Decision {
    Commit(String),
    Abort,
}

/// The outcome of the locked read-modify-write, once its decision came. `show` gets
/// the value as JSON text (`{"value": ...}`) and answers the decision, `None` if
/// JavaScript is gone.
fn run_update(
    h: &Handle,
    default: Option<Value>,
    show: impl FnOnce(String) -> Option<Decision>,
) -> String {
    let r = h.with(|d| {
        let f = |v: &mut Value| -> Result<(), UpdateFail> {
            let (value, bigints) = for_js(v, d.path()).map_err(UpdateFail::Refused)?;
            // Too large to show: the update fails before its callback runs.
            let shown = checked_text(
                &Envelope::Ok(CurrentOut {
                    value: &value,
                    bigints,
                }),
                Some(d.path()),
            )
            .map_err(UpdateFail::Refused)?;
            match show(shown) {
                Some(Decision::Commit(json)) => {
                    let mut new = parse_value(&json).map_err(UpdateFail::Refused)?;
                    keep_key_order(v, &mut new);
                    *v = new;
                    Ok(())
                }
                Some(Decision::Abort) | None => Err(UpdateFail::Abandoned),
            }
        };
        let (_, receipt) = match default {
            Some(init) => d.update_or_insert_with(|| init.clone(), f)?,
            None => d.update(f)?,
        };
        Ok(ReceiptOut::from(receipt))
    });
    match r {
        Err(UpdateFail::Abandoned) => text::<()>(&Envelope::Aborted(true)),
        // Done, or failed before the value could be shown (lock timeout, not found,
        // corrupt, a number JavaScript would round: the callback never ran) or while
        // writing it.
        Ok(receipt) => envelope(Ok(receipt)),
        Err(UpdateFail::Refused(e)) => envelope::<()>(Err(e)),
        Err(UpdateFail::Lib(e)) => envelope::<()>(Err(e.into())),
    }
}

/// The worker's side of a call paused while JavaScript decides something (an update's
/// new value, whether a write goes on after `tmpfileCreated`).
struct Pause<D> {
    shown: Option<oneshot::Sender<String>>,
    decide: Option<oneshot::Receiver<D>>,
}

impl<D> Pause<D> {
    /// Show JavaScript `text` and block this worker thread (never the event loop) until
    /// it decides; `None` if it was shown something already or dropped the session
    /// unanswered (a terminated worker_thread, a collected session).
    fn show(&mut self, text: String) -> Option<D> {
        self.shown.take()?.send(text).ok()?;
        self.decide.take()?.blocking_recv().ok()
    }
}

/// The JavaScript side of a paused call: what the worker showed (or how the call ended
/// before it could show anything), and the way to answer.
struct Paused<D> {
    shown: String,
    decide: Mutex<Option<oneshot::Sender<D>>>,
    done: Mutex<Option<oneshot::Receiver<String>>>,
    /// Set by the worker once the call has ended (its outcome is on its way).
    ended: Arc<AtomicBool>,
}

impl<D: Send + 'static> Paused<D> {
    /// Run `work` on a thread of its own and resolve with the first text it shows, or
    /// with its outcome if it ended without showing anything.
    ///
    /// A thread of its own, not one of the shared blocking pool: a paused call holds its
    /// thread for as long as JavaScript takes to answer, and a pool full of paused calls
    /// (512 concurrent updates of different documents) would leave no thread for the
    /// reads and writes their callbacks wait for: a deadlock no timeout ends.
    async fn start(
        work: impl FnOnce(&Arc<Mutex<Pause<D>>>) -> String + Send + 'static,
    ) -> napi::Result<Paused<D>> {
        let (shown_tx, shown_rx) = oneshot::channel::<String>();
        let (decide_tx, decide_rx) = oneshot::channel::<D>();
        let (done_tx, done_rx) = oneshot::channel::<String>();
        let pause = Arc::new(Mutex::new(Pause {
            shown: Some(shown_tx),
            decide: Some(decide_rx),
        }));
        let ended = Arc::new(AtomicBool::new(false));
        let ended_by_worker = ended.clone();
        std::thread::Builder::new()
            .name("statefile-paused".into())
            .spawn(move || {
                let outcome = work(&pause);
                ended_by_worker.store(true, Ordering::Release);
                let first = pause
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .shown
                    .take();
                // Nothing shown yet: the outcome is the answer. Else the one waiting
                // for `finish` gets it; either may be gone, and then nobody asks.
                let _ = match first {
                    Some(tx) => tx.send(outcome),
                    None => done_tx.send(outcome),
                };
            })
            .map_err(|e| {
                napi::Error::from_reason(format!("statefile: cannot start a thread: {e}"))
            })?;
        let shown = shown_rx.await.map_err(|_| {
            napi::Error::from_reason("statefile: a worker thread ended without an answer")
        })?;
        Ok(Paused {
            shown,
            decide: Mutex::new(Some(decide_tx)),
            done: Mutex::new(Some(done_rx)),
            ended,
        })
    }

    /// Answer `d`; resolves with the call's outcome once it ended (`aborted` if it had
    /// ended already, having shown nothing to answer).
    async fn finish(&self, d: D) -> String {
        let tx = self
            .decide
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let rx = self
            .done
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(tx) = tx {
            // The worker may already be gone (it ended before showing anything).
            let _ = tx.send(d);
        }
        match rx {
            Some(rx) => rx.await.unwrap_or_else(|_| {
                envelope::<()>(Err(ErrorOut {
                    code: "IO",
                    message: "a worker thread ended without an answer".into(),
                    path: None,
                    version: None,
                    errno: None,
                    pointer: None,
                }))
            }),
            None => text::<()>(&Envelope::Aborted(true)),
        }
    }
}

/// A locked read-modify-write in progress: the lock is held on a worker thread while
/// JavaScript runs the callback; `commit` or `abort` ends it.
#[napi]
pub struct UpdateSession {
    p: Paused<Decision>,
}

impl std::fmt::Debug for UpdateSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpdateSession").finish_non_exhaustive()
    }
}

#[napi]
impl UpdateSession {
    /// The value read under the lock, as `{"ok": {"value": ...}}`, or why the update
    /// could not start (`{"error": ...}`; then the lock is not held).
    #[napi(getter)]
    pub fn current(&self) -> String {
        self.p.shown.clone()
    }

    /// Write `json` as the new value under the lock; resolves to the receipt (or an
    /// error) once it is written and the lock released.
    #[napi]
    pub async fn commit(&self, json: String) -> napi::Result<String> {
        Ok(self.p.finish(Decision::Commit(json)).await)
    }

    /// Write nothing; resolves once the lock is released.
    #[napi]
    pub async fn abort(&self) -> napi::Result<()> {
        self.p.finish(Decision::Abort).await;
        Ok(())
    }

    /// Whether the update has ended (written, or failed): its outcome no longer waits
    /// for anything. False while its write waits for the other changes of its batch.
    #[napi(getter)]
    pub fn ended(&self) -> bool {
        self.p.ended.load(Ordering::Acquire)
    }
}

/// One JSON document (`new Doc(path, options)` in JavaScript).
#[napi]
#[derive(Debug)]
pub struct NativeDoc {
    h: Arc<Handle>,
}

fn parse_default(json: Option<String>) -> Out<Option<Value>> {
    json.as_deref().map(parse_value).transpose()
}

#[napi]
impl NativeDoc {
    /// A handle to the document at `path`; touches nothing on disk.
    #[napi(constructor)]
    pub fn new(path: String, opts: DocOptions) -> napi::Result<NativeDoc> {
        let opts = options(Options::default(), &opts)?;
        let doc = Doc::<Value>::open_with(&path, opts).map_err(|e| {
            napi::Error::new(napi::Status::InvalidArg, envelope::<()>(Err(e.into())))
        })?;
        let text = doc.typed::<JsonText>();
        Ok(NativeDoc {
            h: Arc::new(Handle::Plain {
                doc: Box::new(doc),
                text: Box::new(text),
            }),
        })
    }

    /// The path as given.
    #[napi(getter)]
    pub fn path(&self) -> String {
        match &*self.h {
            Handle::Plain { doc, .. } => doc.path().display().to_string(),
            Handle::InStore(s, name) => s.root.join(name).display().to_string(),
        }
    }

    /// `{value, version, recovered}`.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn read<'env>(&self, env: &'env Env) -> napi::Result<Object<'env>> {
        let h = self.h.clone();
        promise(env, move || h.read())
    }

    /// As `read`, on the calling thread.
    #[napi]
    pub fn read_sync(&self) -> String {
        self.h.read()
    }

    /// Replace the document with the value `json`; the receipt.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn write<'env>(&self, env: &'env Env, json: String) -> napi::Result<Object<'env>> {
        let h = self.h.clone();
        promise(env, move || h.write(json))
    }

    /// As `write`, on the calling thread.
    #[napi]
    pub fn write_sync(&self, json: String) -> String {
        self.h.write(json)
    }

    /// Compare-and-swap.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn write_if<'env>(
        &self,
        env: &'env Env,
        version: String,
        json: String,
    ) -> napi::Result<Object<'env>> {
        let h = self.h.clone();
        promise(env, move || h.write_if(&version, json))
    }

    /// As `writeIf`, on the calling thread.
    #[napi]
    pub fn write_if_sync(&self, version: String, json: String) -> String {
        self.h.write_if(&version, json)
    }

    /// Write only if the document does not exist.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn create<'env>(&self, env: &'env Env, json: String) -> napi::Result<Object<'env>> {
        let h = self.h.clone();
        promise(env, move || h.create(json))
    }

    /// As `create`, on the calling thread.
    #[napi]
    pub fn create_sync(&self, json: String) -> String {
        self.h.create(json)
    }

    /// Delete (to `.name.bak` when backups are on).
    #[napi(ts_return_type = "Promise<string>")]
    pub fn delete<'env>(&self, env: &'env Env) -> napi::Result<Object<'env>> {
        let h = self.h.clone();
        promise(env, move || h.delete())
    }

    /// As `delete`, on the calling thread.
    #[napi]
    pub fn delete_sync(&self) -> String {
        self.h.delete()
    }

    /// The current version.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn version<'env>(&self, env: &'env Env) -> napi::Result<Object<'env>> {
        let h = self.h.clone();
        promise(env, move || h.version())
    }

    /// As `version`, on the calling thread.
    #[napi]
    pub fn version_sync(&self) -> String {
        self.h.version()
    }

    /// The kept previous versions, newest first.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn backups<'env>(&self, env: &'env Env) -> napi::Result<Object<'env>> {
        let h = self.h.clone();
        promise(env, move || h.backups())
    }

    /// As `backups`, on the calling thread.
    #[napi]
    pub fn backups_sync(&self) -> String {
        self.h.backups()
    }

    /// Restore a backup: `""` (newest good), a number, or a version.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn restore<'env>(&self, env: &'env Env, which: String) -> napi::Result<Object<'env>> {
        let h = self.h.clone();
        promise(env, move || h.restore(&which))
    }

    /// As `restore`, on the calling thread.
    #[napi]
    pub fn restore_sync(&self, which: String) -> String {
        self.h.restore(&which)
    }

    /// Start a locked read-modify-write: resolves once the lock is held and the value
    /// read (or the update failed to start). `default_json` is the value to start
    /// from when the document does not exist.
    #[napi]
    pub async fn begin_update(&self, default_json: Option<String>) -> napi::Result<UpdateSession> {
        let h = self.h.clone();
        let p = Paused::start(move |pause: &Arc<Mutex<Pause<Decision>>>| {
            match parse_default(default_json) {
                Ok(default) => run_update(&h, default, |shown| {
                    pause
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .show(shown)
                }),
                Err(e) => envelope::<()>(Err(e)),
            }
        })
        .await?;
        Ok(UpdateSession { p })
    }

    /// A locked read-modify-write on the calling thread: `callback` gets the value as
    /// JSON text and returns the new value as JSON text, or `null` to write nothing.
    #[napi]
    pub fn update_sync(
        &self,
        default_json: Option<String>,
        callback: Function<'_, String, Option<String>>,
    ) -> String {
        let default = match parse_default(default_json) {
            Ok(d) => d,
            Err(e) => return envelope::<()>(Err(e)),
        };
        run_update(&self.h, default, |shown| {
            // A JavaScript exception in the callback is caught by the JavaScript side,
            // which answers null; an error here is one napi could not convert.
            match callback.call(shown) {
                Ok(Some(new)) => Some(Decision::Commit(new)),
                _ => Some(Decision::Abort),
            }
        })
    }
}

#[derive(Serialize)]
struct CurrentOut<'a> {
    value: &'a Value,
    /// As in [`VersionedOut`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    bigints: Vec<String>,
}

// ---------------------------------------------------------------------------------
// Stores

/// A directory of documents (`new Store(root, options)` in JavaScript), opened on
/// first use.
#[napi]
#[derive(Debug)]
pub struct NativeStore {
    store: Arc<LazyStore>,
}

#[napi]
impl NativeStore {
    /// A store at `root`; nothing is touched until the first operation.
    #[napi(constructor)]
    pub fn new(root: String, opts: DocOptions) -> napi::Result<NativeStore> {
        // As `Store::open`: documents get missing parent directories by default.
        let base = Options::default().create_dirs(true);
        Ok(NativeStore {
            store: Arc::new(LazyStore {
                root: PathBuf::from(root),
                opts: options(base, &opts)?,
                store: Mutex::new(None),
            }),
        })
    }

    /// The document `name` (relative, `/`-separated).
    #[napi]
    pub fn doc(&self, name: String) -> NativeDoc {
        NativeDoc {
            h: Arc::new(Handle::InStore(self.store.clone(), name)),
        }
    }

    /// Open the store now (recovering after crashed writers); what recovery found.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn open<'env>(&self, env: &'env Env) -> napi::Result<Object<'env>> {
        let s = self.store.clone();
        promise(env, move || {
            envelope(
                s.get()
                    .map(|s| ReportOut::from(s.recovery().clone()))
                    .map_err(ErrorOut::from),
            )
        })
    }

    /// As `open`, on the calling thread.
    #[napi]
    pub fn open_sync(&self) -> String {
        envelope(
            self.store
                .get()
                .map(|s| ReportOut::from(s.recovery().clone()))
                .map_err(ErrorOut::from),
        )
    }

    /// Document names starting with `prefix`, sorted.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn list<'env>(&self, env: &'env Env, prefix: String) -> napi::Result<Object<'env>> {
        let s = self.store.clone();
        promise(env, move || store_list(&s, &prefix))
    }

    /// As `list`, on the calling thread.
    #[napi]
    pub fn list_sync(&self, prefix: String) -> String {
        store_list(&self.store, &prefix)
    }

    /// Check every document; changes nothing.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn verify<'env>(&self, env: &'env Env) -> napi::Result<Object<'env>> {
        let s = self.store.clone();
        promise(env, move || store_scan(&s, false))
    }

    /// As `verify`, on the calling thread.
    #[napi]
    pub fn verify_sync(&self) -> String {
        store_scan(&self.store, false)
    }

    /// Repair what `verify` reports.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn recover<'env>(&self, env: &'env Env) -> napi::Result<Object<'env>> {
        let s = self.store.clone();
        promise(env, move || store_scan(&s, true))
    }

    /// As `recover`, on the calling thread.
    #[napi]
    pub fn recover_sync(&self) -> String {
        store_scan(&self.store, true)
    }
    /// Apply `ops_json`, an array of operations as `statefile tx` takes them, as one
    /// transaction (journal mode): every document changes or none does.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn transaction<'env>(
        &self,
        env: &'env Env,
        ops_json: String,
    ) -> napi::Result<Object<'env>> {
        let s = self.store.clone();
        promise(env, move || envelope(apply_ops(&s, &ops_json)))
    }

    /// As `transaction`, on the calling thread.
    #[napi]
    pub fn transaction_sync(&self, ops_json: String) -> String {
        envelope(apply_ops(&self.store, &ops_json))
    }

    /// Start a transaction driven by a JavaScript callback (`TxSession`): resolves once
    /// its thread waits for the callback's first request.
    #[napi]
    pub fn begin_transaction(&self) -> napi::Result<TxSession> {
        TxSession::start(self.store.clone())
    }

    /// The documents `names`, read under their locks (one consistent state), each with
    /// its version; `null` for a missing one.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn read_tx<'env>(&self, env: &'env Env, names: Vec<String>) -> napi::Result<Object<'env>> {
        let s = self.store.clone();
        promise(env, move || envelope(read_many(&s, &names)))
    }

    /// As `readTx`, on the calling thread.
    #[napi]
    pub fn read_tx_sync(&self, names: Vec<String>) -> String {
        envelope(read_many(&self.store, &names))
    }

    /// Turn journal mode on for the store (`statefile journal enable`); its status.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn enable_journal<'env>(
        &self,
        env: &'env Env,
        opts: JournalOpts,
    ) -> napi::Result<Object<'env>> {
        let s = self.store.clone();
        let j = journal_options(&opts)?;
        promise(env, move || {
            envelope(journal_call(&s, JournalCall::Enable(j)))
        })
    }

    /// As `enableJournal`, on the calling thread.
    #[napi]
    pub fn enable_journal_sync(&self, opts: JournalOpts) -> napi::Result<String> {
        let j = journal_options(&opts)?;
        Ok(envelope(journal_call(&self.store, JournalCall::Enable(j))))
    }

    /// Checkpoint everything, then turn journal mode off.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn disable_journal<'env>(&self, env: &'env Env) -> napi::Result<Object<'env>> {
        let s = self.store.clone();
        promise(env, move || {
            envelope(journal_call(&s, JournalCall::Disable))
        })
    }

    /// As `disableJournal`, on the calling thread.
    #[napi]
    pub fn disable_journal_sync(&self) -> String {
        envelope(journal_call(&self.store, JournalCall::Disable))
    }

    /// Make every document the journal covers durable in its own file.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn checkpoint<'env>(&self, env: &'env Env) -> napi::Result<Object<'env>> {
        let s = self.store.clone();
        promise(env, move || {
            envelope(journal_call(&s, JournalCall::Checkpoint))
        })
    }

    /// As `checkpoint`, on the calling thread.
    #[napi]
    pub fn checkpoint_sync(&self) -> String {
        envelope(journal_call(&self.store, JournalCall::Checkpoint))
    }

    /// The journal's state, `null` when the store is not in journal mode.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn journal_status<'env>(&self, env: &'env Env) -> napi::Result<Object<'env>> {
        let s = self.store.clone();
        promise(env, move || envelope(journal_call(&s, JournalCall::Status)))
    }

    /// As `journalStatus`, on the calling thread.
    #[napi]
    pub fn journal_status_sync(&self) -> String {
        envelope(journal_call(&self.store, JournalCall::Status))
    }
}

/// One result of a transaction's operation, as JavaScript gets it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TxResultOut {
    doc: String,
    op: &'static str,
    version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<usize>,
    /// As in [`VersionedOut`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    bigints: Vec<String>,
}

/// Parse the operations (the library's parser, as `statefile tx` and `POST /v1/tx` use
/// it) and apply them with `Store::apply_tx`.
fn apply_ops(s: &LazyStore, ops_json: &str) -> Out<Vec<TxResultOut>> {
    let ops = parse_value(ops_json)?;
    let limits = statefile::patch::Limits::new();
    let ops = statefile::parse_tx_ops(&ops, &limits)
        .map_err(|e| invalid_argument(format!("transaction: {e}")))?;
    let store = s.get()?;
    // A get of a value JavaScript cannot hold fails the transaction before it writes.
    let mut refused: Option<ErrorOut> = None;
    let mut answer = |doc: &str, v: &Value| match inexact_numbers(v) {
        Ok(_) => Ok(()),
        Err((pointer, digits)) => {
            let mut e = inexact(&store.root().join(doc), pointer, &digits);
            e.message.push_str(" (the transaction wrote nothing)");
            let lib = Error::new(ErrorKind::Serialize, e.message.clone());
            refused = Some(e);
            Err(TxOpError::Store(lib))
        }
    };
    let results = store.apply_tx_answering(&ops, &limits, &mut answer);
    let results = results.map_err(|e| match (refused, e) {
        (Some(refused), _) => refused,
        (None, TxOpError::Store(e)) => ErrorOut::from(e),
        (None, TxOpError::NotApplicable { doc, message }) => ErrorOut {
            code: "NOT_APPLICABLE",
            message: format!("{doc}: {message} (the transaction wrote nothing)"),
            path: Some(store.root().join(&doc).display().to_string()),
            version: None,
            errno: None,
            pointer: None,
        },
        (None, other) => ErrorOut {
            code: "IO",
            message: other.to_string(),
            path: None,
            version: None,
            errno: None,
            pointer: None,
        },
    })?;
    results
        .into_iter()
        .map(|r| {
            let (value, bigints) = match r.value {
                None => (None, Vec::new()),
                Some(v) => {
                    // Every number in it was checked above: this only makes the BigInts.
                    let (shown, bigints) = for_js(&v, &store.root().join(&r.doc))?;
                    (Some(shown.into_owned()), bigints)
                }
            };
            Ok(TxResultOut {
                doc: r.doc,
                op: r.op,
                version: r.version.map(|v| v.as_str().to_string()),
                value,
                index: r.index,
                bigints,
            })
        })
        .collect()
}

/// `names` read in one transaction that writes nothing (no journal needed).
fn read_many(s: &LazyStore, names: &[String]) -> Out<Vec<Option<VersionedOut>>> {
    if names.len() > MAX_TX_OPS {
        return Err(invalid_argument(format!(
            "readTx: {} documents; at most {MAX_TX_OPS}",
            names.len()
        )));
    }
    let store = s.get()?;
    let (read, _) = store.transaction(|tx| {
        names
            .iter()
            .map(|n| Ok((tx.read::<Value>(n)?, tx.version(n)?)))
            .collect::<Result<Vec<_>, Error>>()
    })?;
    read.into_iter()
        .zip(names)
        .map(|(r, name)| match r {
            (Some(value), Some(version)) => {
                let path = store.root().join(name);
                let (shown, bigints) = for_js(&value, &path)?;
                Ok(Some(VersionedOut {
                    value: shown.into_owned(),
                    bigints,
                    version: version.as_str().to_string(),
                    recovered: None,
                }))
            }
            _ => Ok(None),
        })
        .collect()
}

/// How `enableJournal` makes the journal (checked by the JavaScript side first).
#[napi(object)]
#[derive(Debug, Clone, Default)]
pub struct JournalOpts {
    /// Bytes of the journal's ring.
    pub capacity: Option<f64>,
    /// Permission bits of the journal's files.
    pub mode: Option<u32>,
    /// At most this long between checkpoints while it is written to.
    pub checkpoint_age_ms: Option<f64>,
    /// Commit by swapping the new file in (`JournalOptions::swap`).
    pub swap: Option<bool>,
}

fn journal_options(o: &JournalOpts) -> napi::Result<JournalOptions> {
    let mut j = JournalOptions::default();
    if let Some(c) = o.capacity {
        if !(c.is_finite() && c >= 0.0 && c.fract() == 0.0 && c <= 9_007_199_254_740_992.0) {
            return Err(invalid_arg(format!(
                "capacity must be an integer number of bytes >= 0, not {c}"
            )));
        }
        // An integer below 2^53: exact as a u64.
        j.capacity = c as u64;
    }
    if let Some(m) = o.mode {
        if m > 0o7777 {
            return Err(invalid_arg(format!(
                "mode must be permission bits (at most 0o7777), not {m:#o}"
            )));
        }
        j.mode = m;
    }
    if let Some(ms) = o.checkpoint_age_ms {
        j.checkpoint_age = Duration::try_from_secs_f64(ms / 1e3).map_err(|_| {
            invalid_arg(format!(
                "checkpointAgeMs must be a finite number >= 0, not {ms}"
            ))
        })?;
    }
    if let Some(swap) = o.swap {
        j.swap = swap;
    }
    Ok(j)
}

enum JournalCall {
    Enable(JournalOptions),
    Disable,
    Checkpoint,
    Status,
}

#[derive(Serialize)]
#[serde(untagged)]
enum JournalOut {
    Status(Option<JournalStatusOut>),
    Checkpoint(CheckpointOut),
}

fn journal_call(s: &LazyStore, call: JournalCall) -> Out<JournalOut> {
    let store = s.get()?;
    let (root, opts) = (store.root(), store.options());
    Ok(match call {
        JournalCall::Enable(j) => JournalOut::Status(Some(journal::enable(root, opts, j)?.into())),
        JournalCall::Disable => JournalOut::Checkpoint(journal::disable(root, opts)?.into()),
        JournalCall::Checkpoint => JournalOut::Checkpoint(journal::checkpoint(root, opts)?.into()),
        JournalCall::Status => JournalOut::Status(journal::status(root, opts)?.map(Into::into)),
    })
}

fn store_list(s: &LazyStore, prefix: &str) -> String {
    envelope(s.get().and_then(|s| s.list(prefix)).map_err(ErrorOut::from))
}

fn store_scan(s: &LazyStore, repair: bool) -> String {
    envelope(
        s.get()
            .and_then(|s| if repair { s.recover() } else { s.verify() })
            .map(ReportOut::from)
            .map_err(ErrorOut::from),
    )
}

// ---------------------------------------------------------------------------------
// Transactions driven by a JavaScript callback

/// A request of a transaction callback, for the attempt it was made in.
struct TxMsg {
    attempt: u32,
    req: TxReq,
    reply: oneshot::Sender<String>,
}

enum TxReq {
    /// The document's value and version (`null` if missing).
    Read(String),
    /// Write the value (JSON text) when the transaction commits.
    Write(String, String),
    Delete(String),
    /// The document must be at this version (`None`: must not exist).
    Expect(String, Option<String>),
    Commit,
    Abort,
}

/// Why an attempt of a callback transaction ended without committing.
enum TxFail {
    Lib(Error),
    /// A value or version JavaScript gave cannot be used.
    Refused(ErrorOut),
    /// The callback threw (or timed out): nothing is written.
    Aborted,
    /// JavaScript dropped the session unanswered.
    Abandoned,
}

impl From<Error> for TxFail {
    fn from(e: Error) -> TxFail {
        TxFail::Lib(e)
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TxDocumentOut {
    name: String,
    path: String,
    version: Option<String>,
    previous: Option<String>,
}

/// What JavaScript is told when the library starts the transaction again (a document
/// sorted before one already locked): the callback runs again, as attempt `attempt`.
fn restart_text(attempt: u32) -> String {
    format!(r#"{{"restart":{attempt}}}"#)
}

/// A transaction whose operations come from a JavaScript callback, one request at a
/// time: `Store::transaction` runs on a thread of its own, and its closure answers the
/// callback's requests (read, write, delete, expect) until the callback settles
/// (commit or abort). Every request names its attempt: the library may call the closure
/// again (a document sorted before one already locked), and a request of an attempt
/// that is over is answered `restart` and never applied to the new one.
///
/// A request the library fails ends the attempt (the closure returns the error, as the
/// library requires for a restart); whether the transaction then starts again or fails
/// is known only afterwards, so that request is answered then: `restart`, or the error.
#[napi]
pub struct TxSession {
    tx: Mutex<Option<mpsc::Sender<TxMsg>>>,
}

impl std::fmt::Debug for TxSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxSession").finish_non_exhaustive()
    }
}

impl TxSession {
    fn start(store: Arc<LazyStore>) -> napi::Result<TxSession> {
        let (tx, rx) = mpsc::channel::<TxMsg>();
        // A thread of its own, not the blocking pool: it waits for JavaScript while it
        // holds locks (see `Paused::start`).
        std::thread::Builder::new()
            .name("statefile-tx".into())
            .spawn(move || run_session(&store, &rx))
            .map_err(|e| {
                napi::Error::from_reason(format!("statefile: cannot start a thread: {e}"))
            })?;
        Ok(TxSession {
            tx: Mutex::new(Some(tx)),
        })
    }
}

#[napi]
impl TxSession {
    /// One request of the callback in attempt `attempt`: `op` is `read`, `write`,
    /// `delete`, `expect`, `commit` or `abort`; `name` the document, `arg` the value's
    /// JSON text (write) or the expected version (expect; none: must not exist).
    /// Resolves to `{"ok": ...}`, `{"error": ...}`, `{"restart": attempt}` or, for
    /// commit and abort, the transaction's outcome. The request is queued before this
    /// returns, so requests apply in the order JavaScript made them, awaited or not.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn call<'env>(
        &self,
        env: &'env Env,
        attempt: u32,
        op: String,
        name: Option<String>,
        arg: Option<String>,
    ) -> napi::Result<PromiseRaw<'env, String>> {
        let name = name.unwrap_or_default();
        let req = match op.as_str() {
            "read" => TxReq::Read(name),
            "write" => TxReq::Write(name, arg.unwrap_or_default()),
            "delete" => TxReq::Delete(name),
            "expect" => TxReq::Expect(name, arg),
            "commit" => TxReq::Commit,
            "abort" => TxReq::Abort,
            other => {
                return Err(invalid_arg(format!(
                    "unknown transaction request {other:?}"
                )));
            }
        };
        let (reply, answer) = oneshot::channel();
        let sent = self
            .tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|tx| {
                tx.send(TxMsg {
                    attempt,
                    req,
                    reply,
                })
                .is_ok()
            });
        env.spawn_future(async move {
            let ended = || {
                envelope::<()>(Err(ErrorOut {
                    code: "IO",
                    message: "the transaction has ended".into(),
                    path: None,
                    version: None,
                    errno: None,
                    pointer: None,
                }))
            };
            if !sent {
                return Ok(ended());
            }
            Ok(answer.await.unwrap_or_else(|_| ended()))
        })
    }

    /// Let the transaction's thread end (after commit or abort were answered).
    #[napi]
    pub fn close(&self) {
        self.tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }
}

/// One request applied to the transaction: the answer's JSON text.
fn tx_request(
    tx: &mut statefile::Transaction<'_>,
    req: TxReq,
    store: &Store,
) -> Result<String, TxFail> {
    Ok(match req {
        TxReq::Read(name) => {
            let value = tx.read::<Value>(&name)?;
            // The version of the value read (after this transaction's own write, the
            // version the document will have once it commits).
            let version = tx.version_seen(&name)?;
            match (value, version) {
                (Some(value), Some(version)) => {
                    let (shown, bigints) =
                        for_js(&value, &store.root().join(&name)).map_err(TxFail::Refused)?;
                    text(&Envelope::Ok(VersionedOut {
                        value: shown.into_owned(),
                        bigints,
                        version: version.as_str().to_string(),
                        recovered: None,
                    }))
                }
                _ => text(&Envelope::Ok(Value::Null)),
            }
        }
        TxReq::Write(name, json) => {
            let value = parse_value(&json).map_err(TxFail::Refused)?;
            tx.write(&name, &value)?;
            text(&Envelope::Ok(Value::Null))
        }
        TxReq::Delete(name) => {
            tx.delete(&name)?;
            text(&Envelope::Ok(Value::Null))
        }
        TxReq::Expect(name, version) => {
            let expected = version
                .as_deref()
                .map(Version::parse)
                .transpose()
                .map_err(|e| TxFail::Refused(e.into()))?;
            tx.expect(&name, expected.as_ref())?;
            text(&Envelope::Ok(Value::Null))
        }
        TxReq::Commit | TxReq::Abort => unreachable!("handled by the session"),
    })
}

/// Refuse a request naming a document beyond the first [`MAX_TX_OPS`] distinct ones.
fn within_bound(named: &mut std::collections::HashSet<String>, req: &TxReq) -> Result<(), TxFail> {
    let name = match req {
        TxReq::Read(n) | TxReq::Write(n, _) | TxReq::Delete(n) | TxReq::Expect(n, _) => n,
        TxReq::Commit | TxReq::Abort => return Ok(()),
    };
    if named.len() >= MAX_TX_OPS && !named.contains(name) {
        return Err(TxFail::Refused(invalid_argument(format!(
            "transaction: {name} would be document {} of this transaction; at most \
             {MAX_TX_OPS} (each stays locked until it ends)",
            named.len() + 1
        ))));
    }
    named.insert(name.clone());
    Ok(())
}

fn run_session(s: &LazyStore, rx: &mpsc::Receiver<TxMsg>) {
    let store = match s.get() {
        Ok(store) => store,
        Err(e) => {
            let outcome = envelope::<()>(Err(e.into()));
            for msg in rx {
                let _ = msg.reply.send(outcome.clone());
            }
            return;
        }
    };
    let mut attempt = 0u32;
    // The reply to the request that ended the last attempt: answered once the library
    // has said whether the transaction starts again or is over.
    let mut ending: Option<oneshot::Sender<String>> = None;
    // The documents named so far: each holds a lock (a descriptor) until the end, so at
    // most MAX_TX_OPS, as a transaction of operations.
    let mut named: std::collections::HashSet<String> = std::collections::HashSet::new();
    let r = store.transaction(|tx| -> Result<(), TxFail> {
        attempt += 1;
        if let Some(reply) = ending.take() {
            let _ = reply.send(restart_text(attempt));
        }
        loop {
            let Ok(msg) = rx.recv() else {
                return Err(TxFail::Abandoned);
            };
            if msg.attempt != attempt {
                let _ = msg.reply.send(restart_text(attempt));
                continue;
            }
            match msg.req {
                TxReq::Commit => {
                    ending = Some(msg.reply);
                    return Ok(());
                }
                TxReq::Abort => {
                    ending = Some(msg.reply);
                    return Err(TxFail::Aborted);
                }
                req => match within_bound(&mut named, &req)
                    .and_then(|()| tx_request(tx, req, &store))
                {
                    Ok(answer) => {
                        let _ = msg.reply.send(answer);
                    }
                    Err(e) => {
                        ending = Some(msg.reply);
                        return Err(e);
                    }
                },
            }
        }
    });
    let outcome = match r {
        Ok(((), receipt)) => envelope(Ok(receipt
            .documents
            .into_iter()
            .map(|d| TxDocumentOut {
                name: d.name,
                path: d.path.display().to_string(),
                version: d.version.map(|v| v.as_str().to_string()),
                previous: d.previous.map(|v| v.as_str().to_string()),
            })
            .collect::<Vec<_>>())),
        Err(TxFail::Lib(e)) => envelope::<()>(Err(e.into())),
        Err(TxFail::Refused(e)) => envelope::<()>(Err(e)),
        Err(TxFail::Aborted) => text::<()>(&Envelope::Aborted(true)),
        Err(TxFail::Abandoned) => return,
    };
    if let Some(reply) = ending.take() {
        let _ = reply.send(outcome.clone());
    }
    // Over: every later request (a callback that caught the error and went on, its
    // commit or abort) gets the outcome, until JavaScript closes the session.
    for msg in rx {
        let _ = msg.reply.send(outcome.clone());
    }
}

// ---------------------------------------------------------------------------------
// writeFileAtomic

/// What the JavaScript `writeFileAtomic` worked out from its options.
#[napi(object)]
#[derive(Debug, Clone, Default)]
pub struct AtomicOptions {
    /// Exact permission bits; unset keeps the replaced file's.
    pub mode: Option<u32>,
    /// Bits before the umask for a new file.
    pub create_mode: Option<u32>,
    /// Owner to give the file; unset keeps the replaced file's.
    pub uid: Option<u32>,
    /// Group to give the file (with `uid`).
    pub gid: Option<u32>,
    /// `false`: no fsync of the file or the directory.
    pub fsync: Option<bool>,
    /// How long to wait for another writer of the same file.
    pub lock_timeout_ms: Option<f64>,
}

fn atomic_options(o: &AtomicOptions) -> napi::Result<Options> {
    let mut opts = Options::default()
        .backups(0)
        .max_document_bytes(MAX_DOCUMENT);
    if let Some(m) = o.mode {
        opts = opts.mode(m);
    }
    if let Some(m) = o.create_mode {
        opts = opts.create_mode(m);
    }
    if let (Some(uid), Some(gid)) = (o.uid, o.gid) {
        opts = opts.owner(uid, gid);
    }
    if o.fsync == Some(false) {
        opts = opts.durability(Durability::None);
    }
    if let Some(ms) = o.lock_timeout_ms {
        opts = opts.lock_timeout(lock_timeout(ms)?);
    }
    Ok(opts)
}

fn write_bytes(path: &str, bytes: &[u8], opts: &Options) -> String {
    envelope(
        statefile::write_atomic_with(path, bytes, opts)
            .map(ReceiptOut::from)
            .map_err(ErrorOut::from),
    )
}

/// Replace the file at `path` with `data` by the statefile protocol (lock, unique
/// temp, fsync, rename, directory fsync); no backups.
#[napi(ts_return_type = "Promise<string>")]
pub fn write_file_atomic<'env>(
    env: &'env Env,
    path: String,
    data: Buffer,
    opts: AtomicOptions,
) -> napi::Result<Object<'env>> {
    let opts = atomic_options(&opts)?;
    let bytes = data.to_vec();
    promise(env, move || write_bytes(&path, &bytes, &opts))
}

#[derive(Serialize)]
struct TempOut {
    tmpfile: String,
}

/// The error a write stops with when JavaScript's `tmpfileCreated` failed (JavaScript
/// throws that failure instead).
fn refused_by_callback() -> std::io::Error {
    std::io::Error::other("tmpfileCreated failed")
}

/// A `writeFileAtomic` with a `tmpfileCreated` callback, paused after step 1 of the
/// protocol (the temp file exists, the file's lock is held) while the callback runs.
#[napi]
pub struct TempSession {
    p: Paused<bool>,
}

impl std::fmt::Debug for TempSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TempSession").finish_non_exhaustive()
    }
}

#[napi]
impl TempSession {
    /// `{"ok": {"tmpfile": path}}` once the temp file exists, or how the write ended
    /// before that (`{"error": ...}`: nothing waits then).
    #[napi(getter)]
    pub fn current(&self) -> String {
        self.p.shown.clone()
    }

    /// Go on with the write; resolves to the receipt or the error.
    #[napi]
    pub async fn proceed(&self) -> napi::Result<String> {
        Ok(self.p.finish(true).await)
    }

    /// Stop the write: the temp file is removed and the file untouched; resolves once
    /// that is done and the lock released.
    #[napi]
    pub async fn abort(&self) -> napi::Result<()> {
        self.p.finish(false).await;
        Ok(())
    }
}

/// As `writeFileAtomic`, pausing once the temp file exists so that JavaScript can run
/// `tmpfileCreated` with its path (`TempSession`).
#[napi]
pub async fn begin_write_file_atomic(
    path: String,
    data: Buffer,
    opts: AtomicOptions,
) -> napi::Result<TempSession> {
    let opts = atomic_options(&opts)?;
    let bytes = data.to_vec();
    let p = Paused::start(move |pause: &Arc<Mutex<Pause<bool>>>| {
        let pause = pause.clone();
        let opts = opts.on_temp_created(move |temp| {
            let shown = text(&Envelope::Ok(TempOut {
                tmpfile: temp.display().to_string(),
            }));
            let answer = pause
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .show(shown);
            match answer {
                Some(true) => Ok(()),
                _ => Err(refused_by_callback()),
            }
        });
        write_bytes(&path, &bytes, &opts)
    })
    .await?;
    Ok(TempSession { p })
}

/// As `writeFileAtomic`, on the calling thread; with `tmpfile_created`, that is called
/// with the temp file's path once it exists and answers whether the write goes on.
#[napi]
pub fn write_file_atomic_sync(
    path: String,
    data: Buffer,
    opts: AtomicOptions,
    tmpfile_created: Option<Function<'_, String, bool>>,
) -> napi::Result<String> {
    let opts = atomic_options(&opts)?;
    let Some(callback) = tmpfile_created else {
        return Ok(write_bytes(&path, &data, &opts));
    };
    // The library calls its hook on the writing thread and needs it to be Send, which a
    // JavaScript function is not: so the write runs on a helper thread while this (the
    // JavaScript) thread waits, calls `callback` when the hook hands it the temp's path,
    // and sends the answer back.
    let (ask_tx, ask_rx) = mpsc::channel::<(String, mpsc::Sender<bool>)>();
    let ask = Mutex::new(ask_tx);
    let opts = opts.on_temp_created(move |temp| {
        let (reply_tx, reply_rx) = mpsc::channel();
        ask.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send((temp.display().to_string(), reply_tx))
            .map_err(|_| refused_by_callback())?;
        match reply_rx.recv() {
            Ok(true) => Ok(()),
            _ => Err(refused_by_callback()),
        }
    });
    let bytes = data.to_vec();
    std::thread::scope(|s| {
        let writer = std::thread::Builder::new()
            .name("statefile-write".into())
            .spawn_scoped(s, move || write_bytes(&path, &bytes, &opts))
            .map_err(|e| {
                napi::Error::from_reason(format!("statefile: cannot start a thread: {e}"))
            })?;
        // Ends when the writer drops `opts` (and with it the hook's sender).
        for (tmpfile, reply) in ask_rx {
            // The JavaScript side catches the callback's exceptions and answers false.
            let _ = reply.send(matches!(callback.call(tmpfile), Ok(true)));
        }
        writer
            .join()
            .map_err(|_| napi::Error::from_reason("statefile: the writing thread panicked"))
    })
}
