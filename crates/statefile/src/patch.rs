//! Bounded patches of JSON values: RFC 7396 merge patches and RFC 6902 JSON Patches,
//! the one implementation the CLI's `patch` and the server's `PATCH` use.
//!
//! A patch comes from an untrusted client, and applying one naively can cost far more
//! than its size: 40 `copy` operations from `""` double a document 40 times (2^40), and
//! 400,000 `add` at `/a/0` shift an array 400,000 times while the document's lock is
//! held. So applying is bounded in every dimension, by [`Limits`] the caller passes:
//!
//! - **operations**: at most [`Limits::max_operations`] (default 10,000), counted while
//!   parsing, so a longer patch is refused before it is even built;
//! - **result size**: the document, measured as compact JSON, may not grow beyond
//!   [`Limits::max_result_bytes`] (default 16 MiB; the server passes its `--max-body`)
//!   at any step. The size is tracked as each operation applies and checked *before* it
//!   builds anything: a `copy` that would pass the limit fails without copying. A
//!   document already larger than the limit may be patched as long as it does not grow
//!   beyond its own size. The bytes one patch copies count against the same limit;
//! - **nesting**: the result never nests deeper than [`MAX_DEPTH`],
//!   the depth the library can write and read back;
//! - **time**: a deadline and a cancellation flag, checked between operations, so a
//!   patch that is still running when its request has timed out stops and releases the
//!   lock.
//!
//! Every walk over a value is a loop or bounded by that nesting, never a recursion as
//! deep as the input. Applying is atomic: on any error the value is left exactly as it
//! was (each step's undo is recorded as it applies), so the caller writes nothing.
//! Object members keep their order, removals included (RFC 7396 and 6902 do not care,
//! but a config file's reader does).
//!
//! Two steps, so that most refusals happen before the document's lock is taken:
//!
//! ```
//! use serde_json::json;
//! use statefile::patch::{Limits, Patch, PatchErrorKind, PatchKind};
//!
//! let limits = Limits::new().max_result_bytes(1024);
//! // Before the lock: parse, count the operations, check the pointers.
//! let patch = Patch::parse(
//!     PatchKind::Json,
//!     br#"[{"op": "add", "path": "/tags/-", "value": "new"}]"#,
//!     &limits,
//! )?;
//! // Under the lock, on the current value.
//! let mut doc = json!({"tags": ["old"]});
//! patch.apply(&mut doc, &limits)?;
//! assert_eq!(doc, json!({"tags": ["old", "new"]}));
//!
//! // 40 copies of the whole document: refused at the copy that would pass the limit,
//! // after building no more than the limit; the document is untouched.
//! let doubling: Vec<_> = (0..40)
//!     .map(|i| json!({"op": "copy", "from": "", "path": format!("/c{i}")}))
//!     .collect();
//! let bomb = Patch::parse(PatchKind::Json, &serde_json::to_vec(&doubling)?, &limits)?;
//! let e = bomb.apply(&mut doc, &limits).unwrap_err();
//! assert_eq!(e.kind(), PatchErrorKind::TooLarge);
//! assert_eq!(doc, json!({"tags": ["old", "new"]}));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::de::{DeserializeSeed, Error as _, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::json::{self, MAX_DEPTH};
use crate::pointer::{self, PointerError};

/// The default bound on the operations of a JSON Patch.
pub const DEFAULT_MAX_OPERATIONS: usize = 10_000;

/// The default bound on a patched document's size (compact JSON): 16 MiB, the server's
/// default `--max-body`.
pub const DEFAULT_MAX_RESULT_BYTES: usize = 16 * 1024 * 1024;

/// What a patch may cost: operations, result size, time. Build with [`Limits::new`] and
/// the setters; pass the same limits to [`Patch::parse`] and [`Patch::apply`].
#[derive(Debug, Clone)]
pub struct Limits {
    max_operations: usize,
    max_result_bytes: usize,
    deadline: Option<Instant>,
    cancel: Option<Arc<AtomicBool>>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_operations: DEFAULT_MAX_OPERATIONS,
            max_result_bytes: DEFAULT_MAX_RESULT_BYTES,
            deadline: None,
            cancel: None,
        }
    }
}

impl Limits {
    /// The defaults: [`DEFAULT_MAX_OPERATIONS`], [`DEFAULT_MAX_RESULT_BYTES`], no
    /// deadline, no cancellation flag.
    pub fn new() -> Limits {
        Limits::default()
    }

    /// At most `n` operations in a JSON Patch ([`PatchErrorKind::TooManyOperations`]
    /// beyond). A merge patch counts as one operation.
    pub fn max_operations(mut self, n: usize) -> Limits {
        self.max_operations = n;
        self
    }

    /// The patched document may not exceed `n` bytes as compact JSON at any step
    /// ([`PatchErrorKind::TooLarge`] beyond), or its size before the patch if that is
    /// larger. The bytes copied by `copy` operations count against `n` too.
    pub fn max_result_bytes(mut self, n: usize) -> Limits {
        self.max_result_bytes = n;
        self
    }

    /// The result size set by [`Limits::max_result_bytes`] (a transaction's gets are
    /// bounded by twice it).
    pub(crate) fn result_bytes(&self) -> usize {
        self.max_result_bytes
    }

    /// Stop with [`PatchErrorKind::Stopped`] if an operation would start after `at`.
    pub fn deadline(mut self, at: Instant) -> Limits {
        self.deadline = Some(at);
        self
    }

    /// Stop with [`PatchErrorKind::Stopped`] once `flag` is true (checked between
    /// operations; another thread sets it, e.g. when the client went away).
    pub fn cancel_on(mut self, flag: Arc<AtomicBool>) -> Limits {
        self.cancel = Some(flag);
        self
    }

    pub(crate) fn check_time(&self, operation: Option<usize>) -> Result<(), PatchError> {
        let cancelled = self
            .cancel
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed));
        if cancelled || self.deadline.is_some_and(|d| Instant::now() >= d) {
            let why = if cancelled {
                "it was cancelled"
            } else {
                "its deadline passed"
            };
            return Err(PatchError::new(
                PatchErrorKind::Stopped,
                operation,
                format!("the patch was stopped before it finished: {why}"),
            ));
        }
        Ok(())
    }
}

/// The two patch formats, by their media types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// RFC 7396 JSON Merge Patch (`application/merge-patch+json`): a value merged into
    /// the document; `null` removes a member. Creates a missing document (as `{}`).
    Merge,
    /// RFC 6902 JSON Patch (`application/json-patch+json`): an array of operations
    /// (`add`, `remove`, `replace`, `move`, `copy`, `test`), applied in order, all or
    /// none. Needs the document to exist.
    Json,
}

impl PatchKind {
    /// The kind a `Content-Type` names (parameters and case ignored), if any.
    pub fn from_media_type(content_type: &str) -> Option<PatchKind> {
        let essence = content_type.split(';').next().unwrap_or("").trim();
        if essence.eq_ignore_ascii_case("application/merge-patch+json") {
            Some(PatchKind::Merge)
        } else if essence.eq_ignore_ascii_case("application/json-patch+json") {
            Some(PatchKind::Json)
        } else {
            None
        }
    }
}

/// Why a patch was refused. Nothing was changed whatever the kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchError {
    kind: PatchErrorKind,
    operation: Option<usize>,
    op_name: Option<&'static str>,
    detail: String,
}

/// The classes of [`PatchError`], each with the answer the CLI and server give.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PatchErrorKind {
    /// The patch is not valid JSON (HTTP 400, exit 2).
    Syntax,
    /// Valid JSON, but not a patch of its kind: an unknown `op`, a missing member, a
    /// malformed or too long pointer, `move` into its own child (HTTP 400, exit 2).
    Invalid,
    /// More operations than [`Limits::max_operations`] (HTTP 413, exit 2).
    TooManyOperations,
    /// The patch does not apply to this document: a `test` failed, a path does not
    /// exist, an index is out of range (HTTP 422, exit 1).
    NotApplicable,
    /// The result would pass [`Limits::max_result_bytes`] (HTTP 422, exit 1).
    TooLarge,
    /// The result would nest deeper than [`MAX_DEPTH`] (HTTP 422,
    /// exit 1).
    TooDeep,
    /// The deadline passed or the cancellation flag was set (HTTP 503, exit 1).
    Stopped,
}

impl PatchError {
    fn new(kind: PatchErrorKind, operation: Option<usize>, detail: impl Into<String>) -> Self {
        PatchError {
            kind,
            operation,
            op_name: None,
            detail: detail.into(),
        }
    }

    /// What kind of refusal this is.
    pub fn kind(&self) -> PatchErrorKind {
        self.kind
    }

    /// The index (from 0) of the JSON Patch operation that failed, if one did.
    pub fn operation(&self) -> Option<usize> {
        self.operation
    }

    /// The message without the operation's index: for [`PatchErrorKind::Syntax`] and
    /// [`PatchErrorKind::Invalid`], the parser's own words.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for PatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.kind, self.operation) {
            (PatchErrorKind::Syntax, _) => {
                write!(f, "the patch is not valid JSON: {}", self.detail)
            }
            (_, Some(i)) => match self.op_name {
                Some(name) => write!(f, "operation {i} ({name}): {}", self.detail),
                None => write!(f, "operation {i}: {}", self.detail),
            },
            (_, None) => f.write_str(&self.detail),
        }
    }
}

impl std::error::Error for PatchError {}

/// A parsed and validated patch, ready to apply under the document's lock.
#[derive(Debug, Clone)]
pub struct Patch {
    body: Body,
}

#[derive(Debug, Clone)]
enum Body {
    Merge(Value),
    Json(Vec<Op>),
}

#[derive(Debug, Clone)]
struct Op {
    path: Vec<String>,
    what: What,
}

#[derive(Debug, Clone)]
enum What {
    Add(Value),
    Remove,
    Replace(Value),
    Move(Vec<String>),
    Copy(Vec<String>),
    Test(Value),
}

impl What {
    fn name(&self) -> &'static str {
        match self {
            What::Add(_) => "add",
            What::Remove => "remove",
            What::Replace(_) => "replace",
            What::Move(_) => "move",
            What::Copy(_) => "copy",
            What::Test(_) => "test",
        }
    }
}

impl Patch {
    /// Parse and validate a patch of `kind` from its bytes, without a document: the
    /// checks that can run before the lock. A JSON Patch's operations are counted as
    /// they are parsed (one past the limit stops the parse), each pointer is parsed and
    /// bounded, a `move` into its own child is refused, and so is a value that could
    /// not be stored at its path (too deep) and text holding an object key statefile
    /// cannot store ([`crate::RESERVED_KEY`]).
    ///
    /// # Errors
    /// [`PatchErrorKind::Syntax`], [`PatchErrorKind::Invalid`],
    /// [`PatchErrorKind::TooManyOperations`], [`PatchErrorKind::TooDeep`].
    pub fn parse(kind: PatchKind, bytes: &[u8], limits: &Limits) -> Result<Patch, PatchError> {
        let patch = Patch::parse_text(kind, bytes, limits)?;
        // Parsed, a reserved key is already a different value (see json::RESERVED_KEY).
        if let Some(msg) = json::reserved_key_in(bytes) {
            return Err(PatchError::new(PatchErrorKind::Invalid, None, msg));
        }
        Ok(patch)
    }

    fn parse_text(kind: PatchKind, bytes: &[u8], limits: &Limits) -> Result<Patch, PatchError> {
        match kind {
            PatchKind::Merge => {
                let value = serde_json::from_slice(bytes).map_err(syntax_or_invalid)?;
                Ok(Patch {
                    body: Body::Merge(value),
                })
            }
            PatchKind::Json => {
                let too_many = Cell::new(false);
                let mut de = serde_json::Deserializer::from_slice(bytes);
                let ops = OpsSeed {
                    max: limits.max_operations,
                    too_many: &too_many,
                }
                .deserialize(&mut de)
                .and_then(|ops| de.end().map(|()| ops))
                .map_err(|e| {
                    if too_many.get() {
                        too_many_operations(limits.max_operations)
                    } else {
                        syntax_or_invalid(e)
                    }
                })?;
                Patch::from_operations(ops)
            }
        }
    }

    /// [`Patch::parse`] for a patch already parsed as a [`Value`] (from a binding, say).
    /// The value may be of any depth: one deeper than [`MAX_DEPTH`] is
    /// refused before anything walks it recursively.
    ///
    /// # Errors
    /// As [`Patch::parse`].
    pub fn from_value(kind: PatchKind, value: Value, limits: &Limits) -> Result<Patch, PatchError> {
        let (_, depth) = json::measure(&value);
        if depth > MAX_DEPTH {
            return Err(PatchError::new(
                PatchErrorKind::TooDeep,
                None,
                format!("the patch is nested {depth} levels deep; at most {MAX_DEPTH} are allowed"),
            ));
        }
        match kind {
            PatchKind::Merge => Ok(Patch {
                body: Body::Merge(value),
            }),
            PatchKind::Json => {
                let n = value.as_array().map_or(0, Vec::len);
                if n > limits.max_operations {
                    return Err(too_many_operations(limits.max_operations));
                }
                // Through its text, not `from_value`: serde's buffering of the tagged
                // operations cannot hold an exact number beyond 64 bits.
                let bytes = serde_json::to_vec(&value)
                    .map_err(|e| PatchError::new(PatchErrorKind::Invalid, None, e.to_string()))?;
                Patch::parse(PatchKind::Json, &bytes, limits)
            }
        }
    }

    fn from_operations(ops: Vec<json_patch::PatchOperation>) -> Result<Patch, PatchError> {
        use json_patch::PatchOperation as P;
        let parse = |i: usize, p: &str, role: &str| {
            pointer::parse(p).map_err(|e| {
                PatchError::new(PatchErrorKind::Invalid, Some(i), format!("{role}: {e}"))
            })
        };
        let mut out = Vec::with_capacity(ops.len());
        for (i, op) in ops.into_iter().enumerate() {
            let path = parse(i, op.path().as_str(), "path")?;
            let what = match op {
                P::Add(o) => What::Add(o.value),
                P::Remove(_) => What::Remove,
                P::Replace(o) => What::Replace(o.value),
                P::Test(o) => What::Test(o.value),
                P::Copy(o) => What::Copy(parse(i, o.from.as_str(), "from")?),
                P::Move(o) => {
                    let from = parse(i, o.from.as_str(), "from")?;
                    if path.len() > from.len() && path.starts_with(&from) {
                        return Err(PatchError::new(
                            PatchErrorKind::Invalid,
                            Some(i),
                            format!("cannot move {} into itself ({})", show(&from), show(&path)),
                        ));
                    }
                    What::Move(from)
                }
            };
            if let What::Add(v) | What::Replace(v) = &what {
                fits(i, &path, json::measure(v).1)?;
            }
            out.push(Op { path, what });
        }
        Ok(Patch {
            body: Body::Json(out),
        })
    }

    /// Which format this patch is in ([`PatchKind::Merge`] creates a missing document).
    pub fn kind(&self) -> PatchKind {
        match self.body {
            Body::Merge(_) => PatchKind::Merge,
            Body::Json(_) => PatchKind::Json,
        }
    }

    /// The number of operations (a merge patch is one).
    pub fn len(&self) -> usize {
        match &self.body {
            Body::Merge(_) => 1,
            Body::Json(ops) => ops.len(),
        }
    }

    /// Whether this is a JSON Patch without operations (which changes nothing).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Apply the patch to `doc`, within `limits`. All or nothing: on any error `doc` is
    /// exactly as it was. The time limits are checked before each operation; the size
    /// and depth limits before each operation builds anything.
    ///
    /// # Errors
    /// [`PatchErrorKind::NotApplicable`], [`PatchErrorKind::TooLarge`],
    /// [`PatchErrorKind::TooDeep`], [`PatchErrorKind::Stopped`].
    pub fn apply(self, doc: &mut Value, limits: &Limits) -> Result<(), PatchError> {
        self.run(doc, limits, true)
    }

    /// As [`Patch::apply`], except that on an error `doc` is left as far as the patch
    /// got instead of being restored: for a caller that throws `doc` away on an error
    /// (an abandoned update), so that a patch stopped by its deadline stops there,
    /// instead of holding the document as long again to undo its work.
    ///
    /// # Errors
    /// As [`Patch::apply`].
    pub fn apply_or_abandon(self, doc: &mut Value, limits: &Limits) -> Result<(), PatchError> {
        self.run(doc, limits, false)
    }

    fn run(self, doc: &mut Value, limits: &Limits, restore: bool) -> Result<(), PatchError> {
        limits.check_time(None)?;
        let (size, _) = json::measure(doc);
        let mut budget = Budget {
            size,
            max: limits.max_result_bytes.max(size),
            copied: 0,
        };
        match self.body {
            Body::Merge(patch) => {
                let after = merged_len(Some(doc), &patch);
                budget.check(None, after)?;
                merge(doc, patch);
                debug_assert_eq!(after, json::measure(doc).0, "merged size");
                Ok(())
            }
            Body::Json(ops) => {
                let mut undo = Vec::new();
                for (i, op) in ops.into_iter().enumerate() {
                    let name = op.what.name();
                    let step = limits
                        .check_time(Some(i))
                        .and_then(|()| apply_op(doc, op, &mut budget, &mut undo))
                        .map_err(|e| PatchError {
                            operation: Some(i),
                            op_name: Some(name),
                            ..e
                        });
                    if let Err(e) = step {
                        while let Some(u) = undo.pop().filter(|_| restore) {
                            u.revert(doc);
                        }
                        return Err(e);
                    }
                    if !restore {
                        undo.clear();
                    }
                }
                debug_assert_eq!(budget.size, json::measure(doc).0, "tracked size");
                Ok(())
            }
        }
    }
}

fn too_many_operations(max: usize) -> PatchError {
    PatchError::new(
        PatchErrorKind::TooManyOperations,
        None,
        format!("the patch has more than {max} operations"),
    )
}

fn syntax_or_invalid(e: serde_json::Error) -> PatchError {
    if json::is_corruption(&e) {
        PatchError::new(PatchErrorKind::Syntax, None, e.to_string())
    } else {
        PatchError::new(
            PatchErrorKind::Invalid,
            None,
            format!("not an RFC 6902 JSON Patch: {e}"),
        )
    }
}

fn show(tokens: &[String]) -> String {
    if tokens.is_empty() {
        "the document".to_string()
    } else {
        pointer::quote(&pointer::format(tokens))
    }
}

/// A value `depth` levels deep can be stored at `path`.
fn fits(op: usize, path: &[String], depth: usize) -> Result<(), PatchError> {
    if path.len() + depth > MAX_DEPTH {
        return Err(PatchError::new(
            PatchErrorKind::TooDeep,
            Some(op),
            format!(
                "a value {depth} levels deep at {} would nest the document deeper than \
                 {MAX_DEPTH} levels",
                show(path)
            ),
        ));
    }
    Ok(())
}

/// Counts operations as serde hands them over, and stops one past the limit.
struct OpsSeed<'a> {
    max: usize,
    too_many: &'a Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for OpsSeed<'_> {
    type Value = Vec<json_patch::PatchOperation>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for OpsSeed<'_> {
    type Value = Vec<json_patch::PatchOperation>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of JSON Patch operations")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut ops = Vec::new();
        while let Some(op) = seq.next_element()? {
            if ops.len() == self.max {
                self.too_many.set(true);
                return Err(A::Error::custom("too many operations"));
            }
            ops.push(op);
        }
        Ok(ops)
    }
}

/// The size of the document as the patch goes, and what it may reach.
struct Budget {
    size: usize,
    max: usize,
    copied: usize,
}

impl Budget {
    fn check(&self, op: Option<usize>, after: usize) -> Result<(), PatchError> {
        if after > self.max {
            return Err(PatchError::new(
                PatchErrorKind::TooLarge,
                op,
                format!(
                    "the patched document would be {after} bytes (as compact JSON), over the \
                     limit of {} bytes",
                    self.max
                ),
            ));
        }
        Ok(())
    }
}

/// How to take one applied step back.
enum Undo {
    /// Put `old` back as the whole document.
    Root(Value),
    /// Remove what was inserted at `slot` of the container at `parent`.
    Inserted { parent: Vec<String>, slot: Slot },
    /// Re-insert `old` at `slot` of the container at `parent` (where it was).
    Removed {
        parent: Vec<String>,
        slot: Slot,
        old: Value,
    },
    /// Put `old` back at `path` in place of what replaced it.
    Replaced { path: Vec<String>, old: Value },
    /// A move: revert how the value was added, then put it back where it came from.
    Moved {
        parent: Vec<String>,
        slot: Slot,
        added: Box<Undo>,
    },
}

/// Where in its container a value was: an object member (its key and position) or an
/// array element.
enum Slot {
    Key(String, usize),
    Index(usize),
}

impl Undo {
    /// Revert this step; returns the value the step had put into the document, if any.
    /// Steps are reverted newest first, so each finds the document as it left it.
    fn revert(self, doc: &mut Value) -> Option<Value> {
        match self {
            Undo::Root(old) => Some(std::mem::replace(doc, old)),
            Undo::Inserted { parent, slot } => match (find_mut(doc, &parent), slot) {
                (Some(Value::Object(m)), Slot::Key(k, _)) => m.shift_remove(&k),
                (Some(Value::Array(a)), Slot::Index(i)) if i < a.len() => Some(a.remove(i)),
                _ => None,
            },
            Undo::Removed { parent, slot, old } => {
                put_back(doc, &parent, slot, old);
                None
            }
            Undo::Replaced { path, old } => find_mut(doc, &path).map(|v| std::mem::replace(v, old)),
            Undo::Moved {
                parent,
                slot,
                added,
            } => {
                if let Some(v) = added.revert(doc) {
                    put_back(doc, &parent, slot, v);
                }
                None
            }
        }
    }
}

/// Insert `value` at `slot` of the container at `parent`, where it was removed from.
fn put_back(doc: &mut Value, parent: &[String], slot: Slot, value: Value) {
    match (find_mut(doc, parent), slot) {
        (Some(Value::Object(m)), Slot::Key(k, at)) => {
            let at = at.min(m.len());
            m.shift_insert(at, k, value);
        }
        (Some(Value::Array(a)), Slot::Index(i)) if i <= a.len() => a.insert(i, value),
        // Unreachable while steps are reverted in order; nothing sensible to do else.
        _ => {}
    }
}

/// The value at `path`, for reverting: the steps recorded it, so it exists.
fn find_mut<'a>(doc: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    pointer::get_mut(doc, path).ok()
}

fn not_applicable(e: PointerError) -> PatchError {
    PatchError::new(PatchErrorKind::NotApplicable, None, e.to_string())
}

/// The length a member adds to an object: `"key":value`, and a comma unless alone.
fn member_len(key: &str, value_len: usize, alone: bool) -> usize {
    json::string_len(key) + 1 + value_len + usize::from(!alone)
}

fn apply_op(
    doc: &mut Value,
    op: Op,
    budget: &mut Budget,
    undo: &mut Vec<Undo>,
) -> Result<(), PatchError> {
    let Op { path, what } = op;
    match what {
        What::Add(value) => {
            let (len, _) = json::measure(&value);
            add(doc, &path, value, len, budget, undo).map_err(|b| b.0)
        }
        What::Remove => {
            let (old, parent, slot, freed) = take(doc, &path)?;
            budget.size -= freed;
            undo.push(Undo::Removed { parent, slot, old });
            Ok(())
        }
        What::Replace(value) => {
            let target = pointer::get_mut(doc, &path).map_err(not_applicable)?;
            let (len, _) = json::measure(&value);
            let (old_len, _) = json::measure(target);
            let after = budget.size - old_len + len;
            budget.check(None, after)?;
            let old = std::mem::replace(target, value);
            budget.size = after;
            undo.push(if path.is_empty() {
                Undo::Root(old)
            } else {
                Undo::Replaced { path, old }
            });
            Ok(())
        }
        What::Move(from) => {
            if from.is_empty() {
                // Only "" to "" gets here (into itself is refused when parsing): a move
                // removes its source, and the document itself cannot be removed.
                return Err(PatchError::new(
                    PatchErrorKind::NotApplicable,
                    None,
                    "cannot move the whole document",
                ));
            }
            if from == path {
                // RFC 6902 4.4: the source must exist; moving it onto itself changes nothing.
                return pointer::get(doc, &from).map(drop).map_err(not_applicable);
            }
            let (len, depth) = json::measure(pointer::get(doc, &from).map_err(not_applicable)?);
            fits(0, &path, depth)?;
            let (value, parent, slot, freed) = take(doc, &from)?;
            budget.size -= freed;
            match add(doc, &path, value, len, budget, undo) {
                Ok(()) => {
                    let added = Box::new(undo.pop().unwrap_or(Undo::Root(Value::Null)));
                    undo.push(Undo::Moved {
                        parent,
                        slot,
                        added,
                    });
                    Ok(())
                }
                Err(failed) => {
                    let (e, value) = *failed;
                    put_back(doc, &parent, slot, value);
                    budget.size += freed;
                    Err(e)
                }
            }
        }
        What::Copy(from) => {
            let source = pointer::get(doc, &from).map_err(not_applicable)?;
            let (len, depth) = json::measure(source);
            fits(0, &path, depth)?;
            // Everything copied counts, even if a later operation removes it again: it is
            // memory this patch made (and the undo log keeps what is removed).
            let copied = budget.copied + len;
            budget.check(None, copied)?;
            budget.check(None, budget.size + len)?;
            let value = source.clone();
            budget.copied = copied;
            add(doc, &path, value, len, budget, undo).map_err(|b| b.0)
        }
        What::Test(expected) => {
            let actual = pointer::get(doc, &path).map_err(not_applicable)?;
            if json::values_equal(actual, &expected) {
                Ok(())
            } else {
                Err(PatchError::new(
                    PatchErrorKind::NotApplicable,
                    None,
                    format!("test failed: {} is not the expected value", show(&path)),
                ))
            }
        }
    }
}

/// RFC 6902's `add` of `value` (`len` bytes as compact JSON) at `path`: the whole
/// document, a member (replaced if present), or an array element (inserted; `-`
/// appends). The parent must exist. On failure nothing changed and `value` comes back.
fn add(
    doc: &mut Value,
    path: &[String],
    value: Value,
    len: usize,
    budget: &mut Budget,
    undo: &mut Vec<Undo>,
) -> Result<(), Box<(PatchError, Value)>> {
    let Some((last, parents)) = path.split_last() else {
        if let Err(e) = budget.check(None, len) {
            return Err(Box::new((e, value)));
        }
        undo.push(Undo::Root(std::mem::replace(doc, value)));
        budget.size = len;
        return Ok(());
    };
    let parent = match pointer::get_mut(doc, parents) {
        Ok(p) => p,
        Err(e) => return Err(Box::new((not_applicable(e), value))),
    };
    match parent {
        Value::Object(m) => {
            let after = match m.get(last) {
                Some(old) => budget.size - json::measure(old).0 + len,
                None => budget.size + member_len(last, len, m.is_empty()),
            };
            if let Err(e) = budget.check(None, after) {
                return Err(Box::new((e, value)));
            }
            match m.get_mut(last) {
                Some(member) => undo.push(Undo::Replaced {
                    path: path.to_vec(),
                    old: std::mem::replace(member, value),
                }),
                None => {
                    let at = m.len();
                    m.insert(last.clone(), value);
                    undo.push(Undo::Inserted {
                        parent: parents.to_vec(),
                        slot: Slot::Key(last.clone(), at),
                    });
                }
            }
            budget.size = after;
            Ok(())
        }
        Value::Array(a) => {
            let i = match pointer::insert_index(last, a.len(), path) {
                Ok(i) => i,
                Err(e) => return Err(Box::new((not_applicable(e), value))),
            };
            let after = budget.size + len + usize::from(!a.is_empty());
            if let Err(e) = budget.check(None, after) {
                return Err(Box::new((e, value)));
            }
            a.insert(i, value);
            undo.push(Undo::Inserted {
                parent: parents.to_vec(),
                slot: Slot::Index(i),
            });
            budget.size = after;
            Ok(())
        }
        _ => Err(Box::new((
            PatchError::new(
                PatchErrorKind::NotApplicable,
                None,
                format!(
                    "cannot add at {}: {} is neither an object nor an array",
                    show(path),
                    show(parents)
                ),
            ),
            value,
        ))),
    }
}

/// Remove the value at `path` (which must exist and not be the whole document), keeping
/// the order of the rest. Returns it, where it was, and the bytes it took.
fn take(doc: &mut Value, path: &[String]) -> Result<(Value, Vec<String>, Slot, usize), PatchError> {
    let Some((last, parents)) = path.split_last() else {
        return Err(PatchError::new(
            PatchErrorKind::NotApplicable,
            None,
            "cannot remove the whole document",
        ));
    };
    match pointer::get_mut(doc, parents).map_err(not_applicable)? {
        Value::Object(m) => {
            let alone = m.len() == 1;
            let Some(at) = m.keys().position(|k| k == last) else {
                return Err(PatchError::new(
                    PatchErrorKind::NotApplicable,
                    None,
                    format!("{} does not exist", show(path)),
                ));
            };
            let old = m.shift_remove(last).unwrap_or(Value::Null);
            let freed = member_len(last, json::measure(&old).0, alone);
            Ok((old, parents.to_vec(), Slot::Key(last.clone(), at), freed))
        }
        Value::Array(a) => {
            let alone = a.len() == 1;
            let i = pointer::index(last, a.len(), path).map_err(not_applicable)?;
            let old = a.remove(i);
            let freed = json::measure(&old).0 + usize::from(!alone);
            Ok((old, parents.to_vec(), Slot::Index(i), freed))
        }
        _ => Err(PatchError::new(
            PatchErrorKind::NotApplicable,
            None,
            format!("{} does not exist", show(path)),
        )),
    }
}

/// RFC 7396: merge `patch` into `target`. `null` members remove (in one pass over the
/// target, keeping the order of the rest); others merge member by member. Recursive as
/// deep as the patch, which parsing bounds.
fn merge(target: &mut Value, patch: Value) {
    let Value::Object(patch) = patch else {
        *target = patch;
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Some(t) = target.as_object_mut() else {
        return;
    };
    if patch.values().any(Value::is_null) {
        t.retain(|k, _| !patch.get(k).is_some_and(Value::is_null));
    }
    for (k, v) in patch {
        if v.is_null() {
            continue;
        }
        match t.get_mut(&k) {
            Some(member) => merge(member, v),
            None => {
                let mut member = Value::Null;
                merge(&mut member, v);
                t.insert(k, member);
            }
        }
    }
}

/// The compact length of `target` after merging `patch` into it, without merging.
fn merged_len(target: Option<&Value>, patch: &Value) -> usize {
    let Value::Object(p) = patch else {
        return json::measure(patch).0;
    };
    let empty = Map::new();
    let t = match target {
        Some(Value::Object(m)) => m,
        _ => &empty,
    };
    let mut len = 2;
    let mut members = 0usize;
    for (k, v) in t {
        let v_len = match p.get(k) {
            None => json::measure(v).0,
            Some(Value::Null) => continue,
            Some(pv) => merged_len(Some(v), pv),
        };
        len += json::string_len(k) + 1 + v_len;
        members += 1;
    }
    for (k, pv) in p {
        if !pv.is_null() && !t.contains_key(k) {
            len += json::string_len(k) + 1 + merged_len(None, pv);
            members += 1;
        }
    }
    len + members.saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn json_patch(ops: Value) -> Patch {
        Patch::parse(
            PatchKind::Json,
            &serde_json::to_vec(&ops).unwrap(),
            &Limits::new(),
        )
        .unwrap()
    }

    fn apply(doc: &mut Value, ops: Value) -> Result<(), PatchError> {
        json_patch(ops).apply(doc, &Limits::new())
    }

    fn merge_patch(doc: &mut Value, patch: Value) -> Result<(), PatchError> {
        Patch::from_value(PatchKind::Merge, patch, &Limits::new())
            .unwrap()
            .apply(doc, &Limits::new())
    }

    /// Key order too: `==` on objects ignores it.
    fn same(a: &Value, b: &Value) {
        assert_eq!(a.to_string(), b.to_string());
    }

    // The examples of RFC 6902 appendix A.
    #[test]
    fn rfc6902_examples() {
        let ok = [
            (
                json!({"foo": "bar"}),
                json!([{"op": "add", "path": "/baz", "value": "qux"}]),
                json!({"foo": "bar", "baz": "qux"}),
            ),
            (
                json!({"foo": ["bar", "baz"]}),
                json!([{"op": "add", "path": "/foo/1", "value": "qux"}]),
                json!({"foo": ["bar", "qux", "baz"]}),
            ),
            (
                json!({"baz": "qux", "foo": "bar"}),
                json!([{"op": "remove", "path": "/baz"}]),
                json!({"foo": "bar"}),
            ),
            (
                json!({"foo": ["bar", "qux", "baz"]}),
                json!([{"op": "remove", "path": "/foo/1"}]),
                json!({"foo": ["bar", "baz"]}),
            ),
            (
                json!({"baz": "qux", "foo": "bar"}),
                json!([{"op": "replace", "path": "/baz", "value": "boo"}]),
                json!({"baz": "boo", "foo": "bar"}),
            ),
            (
                json!({"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}}),
                json!([{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}]),
                json!({"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}}),
            ),
            (
                json!({"foo": ["all", "grass", "cows", "eat"]}),
                json!([{"op": "move", "from": "/foo/1", "path": "/foo/3"}]),
                json!({"foo": ["all", "cows", "eat", "grass"]}),
            ),
            (
                json!({"baz": "qux", "foo": ["a", 2, "c"]}),
                json!([{"op": "test", "path": "/baz", "value": "qux"}, {"op": "test", "path": "/foo/1", "value": 2}]),
                json!({"baz": "qux", "foo": ["a", 2, "c"]}),
            ),
            (
                json!({"foo": "bar"}),
                json!([{"op": "add", "path": "/child", "value": {"grandchild": {}}}]),
                json!({"foo": "bar", "child": {"grandchild": {}}}),
            ),
            (
                json!({"foo": "bar"}),
                json!([{"op": "add", "path": "/baz", "value": "qux", "xyz": 123}]),
                json!({"foo": "bar", "baz": "qux"}),
            ),
            (
                json!({"/": 9, "~1": 10}),
                json!([{"op": "test", "path": "/~01", "value": 10}]),
                json!({"/": 9, "~1": 10}),
            ),
            (
                json!({"foo": ["bar"]}),
                json!([{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}]),
                json!({"foo": ["bar", ["abc", "def"]]}),
            ),
            (
                json!({"a": 1}),
                json!([{"op": "copy", "from": "/a", "path": "/b"}, {"op": "add", "path": "", "value": [1]}]),
                json!([1]),
            ),
        ];
        for (mut doc, ops, want) in ok {
            apply(&mut doc, ops.clone()).unwrap_or_else(|e| panic!("{ops}: {e}"));
            same(&doc, &want);
        }
        let fail = [
            (
                json!({"baz": "qux"}),
                json!([{"op": "test", "path": "/baz", "value": "bar"}]),
            ),
            (
                json!({"foo": "bar"}),
                json!([{"op": "add", "path": "/baz/bat", "value": "qux"}]),
            ),
            (
                json!({"/": 9, "~1": 10}),
                json!([{"op": "test", "path": "/~01", "value": "10"}]),
            ),
            (
                json!({"foo": [1]}),
                json!([{"op": "add", "path": "/foo/2", "value": 1}]),
            ),
            (
                json!({"foo": [1]}),
                json!([{"op": "remove", "path": "/foo/-"}]),
            ),
            (
                json!({"foo": [1]}),
                json!([{"op": "remove", "path": "/foo/01"}]),
            ),
            (json!({"foo": 1}), json!([{"op": "remove", "path": ""}])),
            (
                json!({"foo": 1}),
                json!([{"op": "move", "from": "/x", "path": "/y"}]),
            ),
        ];
        for (mut doc, ops) in fail {
            let before = doc.clone();
            let e = apply(&mut doc, ops.clone()).unwrap_err();
            assert_eq!(e.kind(), PatchErrorKind::NotApplicable, "{ops}: {e}");
            assert_eq!(e.operation(), Some(ops.as_array().unwrap().len() - 1));
            same(&doc, &before);
        }
    }

    #[test]
    fn invalid_patches_are_refused_before_any_document() {
        let l = Limits::new();
        let parse = |b: &[u8]| Patch::parse(PatchKind::Json, b, &l).unwrap_err().kind();
        assert_eq!(parse(b"[{"), PatchErrorKind::Syntax);
        assert_eq!(parse(b"{}"), PatchErrorKind::Invalid);
        assert_eq!(
            parse(br#"[{"op": "x", "path": ""}]"#),
            PatchErrorKind::Invalid
        );
        assert_eq!(
            parse(br#"[{"op": "add", "path": "a", "value": 1}]"#),
            PatchErrorKind::Invalid
        );
        assert_eq!(
            parse(br#"[{"op": "move", "from": "/a", "path": "/a/b"}]"#),
            PatchErrorKind::Invalid
        );
        assert_eq!(parse(b"[] []"), PatchErrorKind::Syntax);
        let deep_path = format!(
            r#"[{{"op": "add", "path": "{}", "value": 1}}]"#,
            "/a".repeat(128)
        );
        assert_eq!(parse(deep_path.as_bytes()), PatchErrorKind::Invalid);
        let too_deep = format!(
            r#"[{{"op": "add", "path": "{}", "value": {}{}}}]"#,
            "/a".repeat(100),
            "[".repeat(28),
            "]".repeat(28)
        );
        assert_eq!(parse(too_deep.as_bytes()), PatchErrorKind::TooDeep);
        let e = Patch::parse(PatchKind::Merge, b"{", &l).unwrap_err();
        assert_eq!(e.kind(), PatchErrorKind::Syntax);
        assert!(
            e.to_string().starts_with("the patch is not valid JSON: "),
            "{e}"
        );
    }

    #[test]
    fn operations_are_counted_while_parsing() {
        let l = Limits::new().max_operations(3);
        let ops = |n: usize| {
            serde_json::to_vec(&vec![json!({"op": "test", "path": "", "value": 1}); n]).unwrap()
        };
        assert_eq!(Patch::parse(PatchKind::Json, &ops(3), &l).unwrap().len(), 3);
        let e = Patch::parse(PatchKind::Json, &ops(4), &l).unwrap_err();
        assert_eq!(e.kind(), PatchErrorKind::TooManyOperations);
        assert!(e.to_string().contains("more than 3 operations"), "{e}");
        let v: Value = serde_json::from_slice(&ops(4)).unwrap();
        let e = Patch::from_value(PatchKind::Json, v, &l).unwrap_err();
        assert_eq!(e.kind(), PatchErrorKind::TooManyOperations);
    }

    // Regression (issue 9): 40 copies of "" into the document doubled it 40 times.
    #[test]
    fn copies_that_would_pass_the_size_limit_fail_before_copying() {
        let l = Limits::new().max_result_bytes(1 << 20);
        let ops: Vec<Value> = (0..40)
            .map(|i| json!({"op": "copy", "from": "", "path": format!("/{i}")}))
            .collect();
        let mut doc = json!({"x": "y".repeat(1000)});
        let before = doc.clone();
        let e = Patch::from_value(PatchKind::Json, Value::from(ops), &l)
            .unwrap()
            .apply(&mut doc, &l)
            .unwrap_err();
        assert_eq!(e.kind(), PatchErrorKind::TooLarge, "{e}");
        // 1 KB doubled 10 times is just under 1 MiB: the 11th copy is refused.
        assert_eq!(e.operation(), Some(10), "{e}");
        same(&doc, &before);
    }

    #[test]
    fn copying_then_removing_still_counts_what_was_copied() {
        let l = Limits::new().max_result_bytes(10_000);
        let mut ops = Vec::new();
        for _ in 0..20 {
            ops.push(json!({"op": "copy", "from": "/big", "path": "/tmp"}));
            ops.push(json!({"op": "remove", "path": "/tmp"}));
        }
        let mut doc = json!({"big": "z".repeat(3000)});
        let e = Patch::from_value(PatchKind::Json, Value::from(ops), &l)
            .unwrap()
            .apply(&mut doc, &l)
            .unwrap_err();
        assert_eq!(
            (e.kind(), e.operation()),
            (PatchErrorKind::TooLarge, Some(6)),
            "{e}"
        );
        assert_eq!(doc, json!({"big": "z".repeat(3000)}));
    }

    #[test]
    fn a_document_over_the_limit_may_shrink_or_stay_but_not_grow() {
        let l = Limits::new().max_result_bytes(100);
        let mut doc = json!({"a": "x".repeat(500), "b": 1});
        apply_with(
            &mut doc,
            json!([{"op": "replace", "path": "/b", "value": 2}]),
            &l,
        )
        .unwrap();
        let e = apply_with(
            &mut doc,
            json!([{"op": "add", "path": "/c", "value": 3}]),
            &l,
        )
        .unwrap_err();
        assert_eq!(e.kind(), PatchErrorKind::TooLarge);
        apply_with(&mut doc, json!([{"op": "remove", "path": "/a"}]), &l).unwrap();
        assert_eq!(doc, json!({"b": 2}));
    }

    fn apply_with(doc: &mut Value, ops: Value, l: &Limits) -> Result<(), PatchError> {
        Patch::from_value(PatchKind::Json, ops, l)
            .unwrap()
            .apply(doc, l)
    }

    #[test]
    fn a_failed_patch_leaves_the_value_exactly_as_it_was() {
        let mut doc = json!({"a": 1, "b": [1, 2, 3], "c": {"d": 4, "e": 5}, "f": 6});
        let before = doc.to_string();
        let e = apply(
            &mut doc,
            json!([
                {"op": "remove", "path": "/a"},
                {"op": "move", "from": "/c/d", "path": "/b/1"},
                {"op": "replace", "path": "/f", "value": "six"},
                {"op": "add", "path": "/c/e", "value": "five"},
                {"op": "copy", "from": "/b", "path": "/g"},
                {"op": "add", "path": "", "value": {"whole": true}},
                {"op": "move", "from": "/whole", "path": "/w"},
                {"op": "test", "path": "/w", "value": false}
            ]),
        )
        .unwrap_err();
        assert_eq!(
            (e.kind(), e.operation()),
            (PatchErrorKind::NotApplicable, Some(7))
        );
        assert_eq!(doc.to_string(), before);
    }

    #[test]
    fn removals_keep_the_order_of_the_other_members() {
        let mut doc = json!({"a": 1, "b": 2, "c": 3, "d": 4});
        apply(
            &mut doc,
            json!([{"op": "remove", "path": "/a"}, {"op": "move", "from": "/b", "path": "/z"}]),
        )
        .unwrap();
        same(&doc, &json!({"c": 3, "d": 4, "z": 2}));
        let mut doc = json!({"a": 1, "b": 2, "c": 3, "d": 4});
        merge_patch(
            &mut doc,
            json!({"a": null, "c": {"x": null, "y": 1}, "e": 5}),
        )
        .unwrap();
        same(&doc, &json!({"b": 2, "c": {"y": 1}, "d": 4, "e": 5}));
    }

    // The examples of RFC 7396 appendix A.
    #[test]
    fn rfc7396_examples() {
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (
                json!({"a": "b", "b": "c"}),
                json!({"a": null}),
                json!({"b": "c"}),
            ),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (
                json!({"a": [{"b": "c"}]}),
                json!({"a": [1]}),
                json!({"a": [1]}),
            ),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a": "b"}), json!(["c"]), json!(["c"])),
            (json!({"a": "foo"}), json!(null), json!(null)),
            (json!({"a": "foo"}), json!("bar"), json!("bar")),
            (
                json!({"e": null}),
                json!({"a": 1}),
                json!({"e": null, "a": 1}),
            ),
            (
                json!([1, 2]),
                json!({"a": "b", "c": null}),
                json!({"a": "b"}),
            ),
            (
                json!({}),
                json!({"a": {"bb": {"ccc": null}}}),
                json!({"a": {"bb": {}}}),
            ),
        ];
        for (mut doc, patch, want) in cases {
            merge_patch(&mut doc, patch).unwrap();
            same(&doc, &want);
        }
    }

    #[test]
    fn a_merge_patch_that_would_pass_the_limit_changes_nothing() {
        let l = Limits::new().max_result_bytes(50);
        let mut doc = json!({"a": 1});
        let patch = Patch::from_value(PatchKind::Merge, json!({"b": "x".repeat(60)}), &l).unwrap();
        assert_eq!(
            patch.apply(&mut doc, &l).unwrap_err().kind(),
            PatchErrorKind::TooLarge
        );
        assert_eq!(doc, json!({"a": 1}));
    }

    #[test]
    fn moves_and_copies_deeper_than_a_document_may_nest_are_refused() {
        let mut deep = json!(1);
        for _ in 0..100 {
            deep = json!({"k": deep});
        }
        let mut doc = json!({"deep": deep, "x": {}});
        let mut ops = Vec::new();
        let mut p = "/x".to_string();
        for _ in 0..40 {
            ops.push(json!({"op": "add", "path": format!("{p}/k"), "value": {}}));
            p.push_str("/k");
        }
        ops.push(json!({"op": "copy", "from": "/deep", "path": format!("{p}/copy")}));
        let before = doc.clone();
        let e = apply(&mut doc, Value::from(ops.clone())).unwrap_err();
        assert_eq!(
            (e.kind(), e.operation()),
            (PatchErrorKind::TooDeep, Some(40)),
            "{e}"
        );
        assert_eq!(doc, before);
        ops.pop();
        ops.push(json!({"op": "move", "from": "/deep", "path": format!("{p}/moved")}));
        let e = apply(&mut doc, Value::from(ops)).unwrap_err();
        assert_eq!(
            (e.kind(), e.operation()),
            (PatchErrorKind::TooDeep, Some(40)),
            "{e}"
        );
        assert_eq!(doc, before);
    }

    #[test]
    fn a_patch_value_of_any_depth_is_refused_without_recursion() {
        let mut v = Value::Null;
        for _ in 0..1_000 {
            v = Value::Array(vec![v]);
        }
        for kind in [PatchKind::Merge, PatchKind::Json] {
            let e = Patch::from_value(kind, v.clone(), &Limits::new()).unwrap_err();
            assert_eq!(e.kind(), PatchErrorKind::TooDeep);
        }
    }

    #[test]
    fn deadline_and_cancellation_stop_between_operations() {
        let ops = json!([{"op": "add", "path": "/a", "value": 1}]);
        let mut doc = json!({});
        let past = Limits::new().deadline(Instant::now());
        let e = apply_with(&mut doc, ops.clone(), &past).unwrap_err();
        assert_eq!(e.kind(), PatchErrorKind::Stopped);
        let flag = Arc::new(AtomicBool::new(true));
        let cancelled = Limits::new().cancel_on(flag.clone());
        assert_eq!(
            apply_with(&mut doc, ops.clone(), &cancelled)
                .unwrap_err()
                .kind(),
            PatchErrorKind::Stopped
        );
        assert_eq!(doc, json!({}));
        flag.store(false, Ordering::Relaxed);
        apply_with(&mut doc, ops, &cancelled).unwrap();
        assert_eq!(doc, json!({"a": 1}));
    }

    #[test]
    fn test_compares_numbers_by_value() {
        let mut doc: Value = serde_json::from_str(r#"{"n": 1.0, "m": 100, "z": 0}"#).unwrap();
        apply(
            &mut doc,
            json!([
                {"op": "test", "path": "/n", "value": 1},
                {"op": "test", "path": "/m", "value": 1e2},
                {"op": "test", "path": "/z", "value": -0.0}
            ]),
        )
        .unwrap();
        let e = apply(
            &mut doc,
            json!([{"op": "test", "path": "/n", "value": 1.5}]),
        )
        .unwrap_err();
        assert_eq!(e.kind(), PatchErrorKind::NotApplicable);
    }

    #[test]
    fn media_types() {
        assert_eq!(
            PatchKind::from_media_type("application/merge-patch+json; charset=utf-8"),
            Some(PatchKind::Merge)
        );
        assert_eq!(
            PatchKind::from_media_type("Application/JSON-Patch+JSON"),
            Some(PatchKind::Json)
        );
        assert_eq!(PatchKind::from_media_type("application/json"), None);
    }
}
