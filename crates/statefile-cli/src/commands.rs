//! What each subcommand does. Every file operation goes through the library.

use std::io::{self, IsTerminal, Read, Write};
use std::path::Path;

use serde_json::{Value, json};
use statefile::patch::{self, PatchErrorKind, PatchKind};
use statefile::{BackupRef, Doc, Options, ScanMode, Store, TxOpError, Version, pointer};

use crate::cli::{
    AppendArgs, BackupsArgs, Cli, Command, CompletionsArgs, EditOptions, GetArgs, Global, Output,
    PatchArgs, PutArgs, RecoverArgs, RestoreArgs, RmArgs, ServeArgs, SetArgs, TxArgs, VerifyArgs,
    VersionArgs,
};
use crate::error::{CliError, CliResult};
use crate::report;

pub fn run(cli: Cli) -> CliResult {
    let g = &cli.global;
    match cli.command {
        Command::Get(a) => get(g, a),
        Command::Put(a) => put(g, a),
        Command::Set(a) => set(g, a),
        Command::Append(a) => append(g, a),
        Command::Rm(a) => rm(g, a),
        Command::Patch(a) => patch(g, a),
        Command::Version(a) => version(g, a),
        Command::Verify(a) => verify(g, a),
        Command::Recover(a) => recover(g, a),
        Command::Backups(a) => backups(a),
        Command::Restore(a) => restore(g, a),
        Command::Serve(a) => serve(g, a),
        Command::Import(a) => crate::transfer::import(g, a),
        Command::Export(a) => crate::transfer::export(g, a),
        Command::Journal(a) => report::journal(g, a.action),
        Command::Tx(a) => tx(g, a),
        Command::Completions(a) => completions(a),
    }
}

/// A library error about `file`, with advice where there is something to do: a
/// missing directory (pass --parents), a damaged document (what can repair it, looking
/// at no file over `max` bytes: `--max-document`).
fn hint(file: &Path, max: u64, e: statefile::Error) -> CliError {
    use statefile::ErrorKind as K;
    let missing_dir = || {
        file.parent()
            .is_some_and(|p| !p.as_os_str().is_empty() && !p.exists())
    };
    let help = match e.kind() {
        K::NotFound if missing_dir() => {
            Some("pass --parents to create the missing directories".to_string())
        }
        K::Corrupt => Some(damage_help(file, max)),
        _ => None,
    };
    let e = CliError::from(e);
    match help {
        Some(h) => e.with_help(h),
        None => e,
    }
}

/// What repairs the damaged document `file`: its journal, if that holds a later version
/// of it (a power loss leaves a journal-mode document empty until then); else its good
/// backup, or else a new version. A backup over `max` bytes is not read (it is left out
/// as one that is not a regular file is).
fn damage_help(file: &Path, max: u64) -> String {
    let f = shell_quote(file);
    let opts = Options::new().max_document_bytes(max);
    if journal_rewrites(file, &opts) {
        return format!(
            "the journal holds a later version of {f}, not yet written to it (as a power \
             loss leaves it): `statefile recover {f}` puts it back; its backups are older"
        );
    }
    let backups = Doc::<Value>::open_with(file, opts)
        .and_then(|d| d.backups())
        .unwrap_or_default();
    if let Some(good) = backups.iter().find(|b| b.parses) {
        return format!(
            "backup {} is good: print it with `statefile get --fallback {f}`, or put it back with `statefile recover {f}`",
            good.number
        );
    }
    let none = match backups.len() {
        0 => "no backup to restore".to_string(),
        1 => "no good backup (the one kept is damaged too)".to_string(),
        n => format!("no good backup (all {n} kept are damaged too)"),
    };
    let aside = file.file_name().map_or_else(
        || "a .corrupt file".to_string(),
        |n| format!(".{}.corrupt", n.to_string_lossy()),
    );
    format!(
        "{none}: fix {f} by hand, replace it with `statefile put {f} < good.json`, or move it aside (kept as {aside}) with `statefile rm {f}`"
    )
}

/// Whether the journal of `file`'s tree (if it is in journal mode) would rewrite it.
fn journal_rewrites(file: &Path, opts: &Options) -> bool {
    let Ok(real) = std::fs::canonicalize(file) else {
        return false;
    };
    match statefile::journal::status(&real, opts) {
        Ok(Some(st)) => st.to_replay.iter().any(|d| d.path == real),
        _ => false,
    }
}

/// `path` as a shell word: bare when that is safe, else in single quotes.
fn shell_quote(path: &Path) -> String {
    let s = path.to_string_lossy();
    let safe = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:@%,".contains(&b));
    if safe {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// `FILE: message`, for a message about `file` that does not name it.
fn about(file: &Path, message: impl std::fmt::Display) -> String {
    format!("{}: {message}", file.display())
}

/// A pointer error, naming the file (the library's pointer messages name only the pointer).
fn in_file(file: &Path) -> impl Fn(pointer::PointerError) -> CliError + '_ {
    move |e| {
        use pointer::PointerError as P;
        let message = about(file, &e);
        match e {
            P::Syntax(_) => CliError::usage(message),
            P::NotFound(_) => CliError::not_found(message),
            P::NotApplicable(_) => CliError::not_applicable(message),
        }
    }
}

/// Print a line to stdout unless quiet. A closed pipe surfaces as BrokenPipe (success).
fn say(g: &Global, line: &str) -> CliResult {
    if !g.quiet {
        let mut out = io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    Ok(())
}

fn print_value(v: &Value, output: &Output, raw: bool) -> CliResult {
    let mut out = io::BufWriter::with_capacity(64 * 1024, io::stdout().lock());
    if let (true, Value::String(s)) = (raw, v) {
        writeln!(out, "{s}")?;
    } else {
        let pretty = output.pretty || (!output.compact && io::stdout().is_terminal());
        if pretty {
            serde_json::to_writer_pretty(&mut out, v).map_err(io::Error::from)?;
        } else {
            serde_json::to_writer(&mut out, v).map_err(io::Error::from)?;
        }
        writeln!(out)?;
    }
    out.flush()?;
    Ok(())
}

fn get(g: &Global, a: GetArgs) -> CliResult {
    let file = &a.file;
    let tokens = pointer::parse(a.pointer.as_deref().unwrap_or("")).map_err(in_file(file))?;
    let d = Doc::<Value>::open_with(file, a.limit.on(Options::new().fallback(a.fallback)))?;
    let v = d
        .read_versioned()
        .map_err(|e| hint(file, a.limit.bytes(), e))?;
    if let Some(r) = &v.recovered
        && !g.quiet
    {
        // The backup by number and file name: its full path may be one the user never
        // typed (a symlink's target directory, or an absolute one).
        eprintln!(
            "statefile: {} is damaged ({}); printing its backup {} ({})",
            file.display(),
            r.reason,
            r.backup,
            r.path.file_name().unwrap_or_default().to_string_lossy()
        );
    }
    let at = pointer::get(&v.value, &tokens).map_err(in_file(file))?;
    if a.lines {
        print_lines(file, a.pointer.as_deref().unwrap_or(""), at)
    } else {
        print_value(at, &a.output, a.raw)
    }
}

/// `get --lines`: an array's elements one per line, strings bare, others compact JSON.
/// Checked before anything is printed, so a value that cannot be printed that way
/// prints nothing.
fn print_lines(file: &Path, ptr: &str, v: &Value) -> CliResult {
    let what = if ptr.is_empty() {
        "the document".to_string()
    } else {
        format!("the value at {ptr}")
    };
    let Value::Array(items) = v else {
        let kind = match v {
            Value::Object(_) => "an object",
            Value::String(_) => "a string",
            Value::Number(_) => "a number",
            Value::Bool(_) => "a boolean",
            _ => "null",
        };
        return Err(CliError::not_applicable(about(
            file,
            format!("{what} is {kind}, not an array: --lines prints an array's elements"),
        )));
    };
    if let Some(i) = items
        .iter()
        .position(|e| matches!(e, Value::String(s) if s.contains(['\n', '\r'])))
    {
        return Err(CliError::not_applicable(about(
            file,
            format!(
                "element {i} of {what} holds a line break, so --lines cannot print it on one line (without --lines it prints as JSON)"
            ),
        )));
    }
    let mut out = io::BufWriter::with_capacity(64 * 1024, io::stdout().lock());
    for item in items {
        match item {
            Value::String(s) => writeln!(out, "{s}")?,
            other => {
                serde_json::to_writer(&mut out, other).map_err(io::Error::from)?;
                writeln!(out)?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// Read one JSON value from stdin, of at most `max` bytes: `what` for `file`.
fn read_stdin(file: &Path, what: &str, max: u64) -> CliResult<Value> {
    let buf = read_stdin_bytes(file, what, max)?;
    let value = serde_json::from_slice(&buf).map_err(|e| {
        CliError::usage(about(
            file,
            format!("stdin is not valid JSON ({what}): {e}"),
        ))
    })?;
    refuse_reserved_key(file, &buf, &format!("stdin ({what})"))?;
    Ok(value)
}

/// Refuse JSON text holding an object key statefile cannot store (see
/// [`statefile::RESERVED_KEY`]): parsed, it is already a different value.
fn refuse_reserved_key(file: &Path, text: &[u8], what: &str) -> CliResult<()> {
    match statefile::reserved_key_in(text) {
        Some(msg) => Err(CliError::usage(about(file, format!("{what}: {msg}")))),
        None => Ok(()),
    }
}

/// All of stdin, which must not be blank and may hold at most `max` bytes (more is
/// refused after reading `max` + 1 of them): `what` for `file`.
fn read_stdin_bytes(file: &Path, what: &str, max: u64) -> CliResult<Vec<u8>> {
    let usage = |message: String| CliError::usage(about(file, message));
    let mut buf = Vec::new();
    io::stdin()
        .take(max.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|e| usage(format!("cannot read {what} from stdin: {e}")))?;
    if buf.len() as u64 > max {
        return Err(CliError::new(
            anyhow::Error::msg(about(
                file,
                format!(
                    "stdin ({what}) is more than {max} bytes, over the limit of {max} bytes \
                     on a document (--max-document); nothing was changed"
                ),
            )),
            crate::error::exit_code(statefile::ErrorKind::Serialize),
        )
        .with_help(crate::error::RAISE_LIMIT));
    }
    if buf.iter().all(u8::is_ascii_whitespace) {
        return Err(usage(format!("stdin is empty: expected {what}")));
    }
    Ok(buf)
}

/// The value argument of `set` or `append` on `file`.
fn parse_arg(file: &Path, json: &str, string: bool) -> CliResult<Value> {
    if string {
        return Ok(Value::String(json.to_string()));
    }
    let value = serde_json::from_str(json).map_err(|e| {
        CliError::usage(about(
            file,
            format!(
                "{json:?} is not valid JSON ({e}); to store it as a string, quote it ('\"text\"') or pass --string"
            ),
        ))
    })?;
    refuse_reserved_key(file, json.as_bytes(), "the value")?;
    Ok(value)
}

/// Locked read-modify-write where `f` may fail with a CLI error: the update is then
/// abandoned (nothing written) and that error returned.
fn modify<R>(
    d: &Doc<Value>,
    init: Option<Value>,
    expected: Option<&Version>,
    f: impl FnOnce(&mut Value) -> CliResult<R>,
) -> CliResult<(R, statefile::Receipt)> {
    let body = |v: &mut Value| f(v).map_err(Failed::Mutation);
    let res = match (expected, init) {
        (Some(v), _) => d.update_if(v, body),
        (None, Some(init)) => d.update_or_insert_with(move || init.clone(), body),
        (None, None) => d.update(body),
    };
    res.map_err(|e| match e {
        Failed::Mutation(e) => e,
        Failed::Storage(e) => hint(d.path(), d.options().get_max_document_bytes(), e),
    })
}

/// Why an update failed: the mutation's own failure, or the library's error.
enum Failed {
    Mutation(CliError),
    Storage(statefile::Error),
}

impl From<statefile::Error> for Failed {
    fn from(e: statefile::Error) -> Self {
        Failed::Storage(e)
    }
}

fn put(g: &Global, a: PutArgs) -> CliResult {
    let file = &a.file;
    let value = read_stdin(file, "the new document", a.limit.bytes())?;
    let d = Doc::open_with(file, a.limit.on(a.write.options().create_dirs(a.parents)))?;
    let r = match (&a.if_match, a.create) {
        (Some(v), _) => d.write_if(v, &value),
        (None, true) => d.create(&value),
        (None, false) => d.write(&value),
    }
    .map_err(|e| hint(file, a.limit.bytes(), e))?;
    say(g, r.version.as_str())
}

/// What `set` and `append` work on: the pointer's tokens, the value, and the document.
fn edit_target(
    file: &Path,
    pointer: &str,
    json: &str,
    o: &EditOptions,
) -> CliResult<(Vec<String>, Value, Doc<Value>)> {
    let tokens = pointer::parse(pointer).map_err(in_file(file))?;
    let value = parse_arg(file, json, o.string)?;
    let d = Doc::open_with(file, o.limit.on(o.write.options().create_dirs(o.parents)))?;
    Ok((tokens, value, d))
}

fn set(g: &Global, a: SetArgs) -> CliResult {
    let file = &a.file;
    let (tokens, value, d) = edit_target(file, &a.pointer, &a.json, &a.edit)?;
    let ((), receipt) = modify(&d, Some(json!({})), None, |v| {
        pointer::set(v, &tokens, value).map_err(in_file(file))
    })?;
    say(g, receipt.version.as_str())
}

fn append(g: &Global, a: AppendArgs) -> CliResult {
    let file = &a.file;
    let (tokens, value, d) = edit_target(file, &a.pointer, &a.json, &a.edit)?;
    let init = if tokens.is_empty() {
        json!([])
    } else {
        json!({})
    };
    let (index, receipt) = modify(&d, Some(init), None, |v| {
        pointer::append(v, &tokens, value).map_err(in_file(file))
    })?;
    say(
        g,
        &json!({"index": index, "version": receipt.version.as_str()}).to_string(),
    )
}

fn rm(g: &Global, a: RmArgs) -> CliResult {
    let file = &a.file;
    let d = Doc::<Value>::open_with(file, a.limit.on(a.write.options()))?;
    match (&a.pointer, a.all) {
        (Some(p), _) => {
            let tokens = pointer::parse(p).map_err(in_file(file))?;
            let (_, receipt) = modify(&d, None, None, |v| {
                pointer::remove(v, &tokens).map_err(in_file(file))
            })?;
            say(g, receipt.version.as_str())
        }
        (None, true) => {
            let removed = d.remove_all()?;
            if g.verbose > 0 {
                for p in removed {
                    eprintln!("removed {}", p.display());
                }
            }
            Ok(())
        }
        (None, false) => {
            let deleted = d.delete()?;
            if let (Some(kept), false) = (deleted.kept_as, g.quiet) {
                eprintln!(
                    "statefile: moved {} to {} (undo with `statefile restore {}`)",
                    file.display(),
                    kept.display(),
                    file.display()
                );
            }
            Ok(())
        }
    }
}

/// `patch`: parsed and checked (operations, pointers) before the lock, applied under it
/// by the library within the limits, all or nothing.
fn patch(g: &Global, a: PatchArgs) -> CliResult {
    let file = &a.file;
    let kind = if a.json_patch {
        PatchKind::Json
    } else {
        PatchKind::Merge
    };
    let limits = patch::Limits::new()
        .max_operations(a.max_ops)
        .max_result_bytes(a.max_size);
    let input = read_stdin_bytes(file, "the patch", a.limit.bytes())?;
    let p = patch::Patch::parse(kind, &input, &limits).map_err(patch_failure(file))?;
    drop(input);
    let d = Doc::open_with(file, a.limit.on(a.write.options().create_dirs(a.parents)))?;
    // A merge patch creates a missing document; a JSON Patch needs it to exist.
    let init = (kind == PatchKind::Merge).then(|| json!({}));
    let ((), receipt) = modify(&d, init, a.if_match.as_ref(), |v| {
        p.apply(v, &limits).map_err(patch_failure(file))
    })?;
    say(g, receipt.version.as_str())
}

/// A refused patch: bad input is a usage error (exit 2), one that does not apply to this
/// document exit 1.
fn patch_failure(file: &Path) -> impl Fn(patch::PatchError) -> CliError + '_ {
    move |e| match e.kind() {
        PatchErrorKind::Syntax => CliError::usage(about(
            file,
            format!("stdin is not valid JSON (the patch): {}", e.detail()),
        )),
        PatchErrorKind::Invalid if e.operation().is_none() => {
            CliError::usage(about(file, format!("stdin is {}", e.detail())))
        }
        PatchErrorKind::Invalid | PatchErrorKind::TooManyOperations => {
            CliError::usage(about(file, format!("stdin is not a usable patch: {e}")))
        }
        _ => CliError::not_applicable(format!(
            "the patch does not apply to {}: {e}",
            file.display()
        )),
    }
}

fn tx(g: &Global, a: TxArgs) -> CliResult {
    let dir = &a.dir;
    // Not bounded by --max-document: one transaction may write several documents.
    let input = read_stdin_bytes(dir, "a JSON array of operations", u64::MAX)?;
    let value: Value = serde_json::from_slice(&input).map_err(|e| {
        CliError::usage(about(
            dir,
            format!("stdin is not valid JSON (the operations): {e}"),
        ))
    })?;
    refuse_reserved_key(dir, &input, "stdin (the operations)")?;
    drop(input);
    let limits = patch::Limits::new();
    let ops =
        statefile::parse_tx_ops(&value, &limits).map_err(|e| CliError::usage(about(dir, e)))?;
    // No recovery scan of the whole tree: each document's lock replays what the journal
    // holds for it (Store::open_without_scan), so a big store does not slow every
    // transaction down.
    let store =
        Store::open_without_scan(dir, a.limit.on(a.write.options().create_dirs(a.parents)))?;
    let results = store.apply_tx(&ops, &limits).map_err(|e| match e {
        TxOpError::Store(e) => CliError::from(e),
        other => CliError::not_applicable(other.to_string()),
    })?;
    let out: Vec<Value> = results.iter().map(|r| r.to_json()).collect();
    say(g, &Value::Array(out).to_string())
}

fn version(g: &Global, a: VersionArgs) -> CliResult {
    let v = Doc::<Value>::open_with(&a.file, a.limit.on(Options::new()))?.version()?;
    say(g, v.as_str())
}

fn verify(g: &Global, a: VerifyArgs) -> CliResult {
    let scan = statefile::Scan::new(ScanMode::Verify).options(a.limit.on(Options::new()));
    report::scan(g, &a.paths, scan, a.json)
}

fn recover(g: &Global, a: RecoverArgs) -> CliResult {
    let scan = statefile::Scan::new(ScanMode::Repair)
        .dry_run(a.dry_run)
        .options(a.limit.on(a.write.options()));
    report::scan(g, &a.paths, scan, a.json)
}

fn backups(a: BackupsArgs) -> CliResult {
    report::backups(
        &Doc::open_with(&a.file, a.limit.on(Options::new()))?,
        a.json,
    )
}

fn restore(g: &Global, a: RestoreArgs) -> CliResult {
    let which = a.from.unwrap_or(BackupRef::NewestGood);
    let r = Doc::<Value>::open_with(&a.file, a.limit.on(a.write.options()))?.restore(&which)?;
    say(g, r.version.as_str())
}

fn serve(g: &Global, a: ServeArgs) -> CliResult {
    let database: Option<String> = match (&a.dir, &a.backend) {
        (Some(_), Some(_)) => {
            return Err(CliError::usage(
                "serve takes a DIR or --backend (or STATEFILE_BACKEND), not both".to_string(),
            ));
        }
        (None, Some(url)) => Some(
            crate::transfer::connection_string(url)
                .ok_or_else(|| {
                    CliError::usage(
                        "--backend takes a database: postgres://USER@HOST:PORT/DB, or host=HOST \
                         dbname=DB ...; to serve a directory, name it: statefile serve DIR"
                            .to_string(),
                    )
                })?
                .to_string(),
        ),
        (Some(_), None) => None,
        (None, None) => Some(
            std::env::var("DATABASE_URL")
                .ok()
                .filter(|u| crate::transfer::connection_string(u).is_some())
                .ok_or_else(|| {
                    CliError::usage(
                        "serve needs a DIR, or --backend postgres://USER@HOST:PORT/DB (or \
                         STATEFILE_BACKEND, or DATABASE_URL)"
                            .to_string(),
                    )
                })?,
        ),
    };
    let l = a.limits;
    let mut config = statefile_server::Config::new(a.dir.unwrap_or_default());
    config.postgres = database.map(|url| {
        let mut o = statefile_server::pg::PgOptions::new(url);
        o.pool_size = a.pool_size;
        // --max-document bounds the database's documents too (it was ignored there:
        // the backend kept its own 64 MiB whatever the flag said).
        o.max_document_bytes = l.max_document;
        o
    });
    config.addr = a.addr;
    config.create = a.create;
    config.quiet = g.quiet;
    config.token = a.token.filter(|t| !t.is_empty());
    config.max_body = l.max_body;
    config.max_body_memory = l.max_body_memory;
    config.max_document = l.max_document as u64;
    config.request_timeout = l.request_timeout;
    config.body_timeout = l.body_timeout;
    config.header_timeout = l.header_timeout;
    config.max_connections = l.max_connections.max(1);
    config.concurrency = l.concurrency.max(1);
    config.doc_concurrency = l.doc_concurrency.max(1);
    config.max_patch_ops = l.max_patch_ops;
    config.options = a.write.options().create_dirs(true);
    statefile_server::run(config).map_err(|e| CliError::new(anyhow::Error::msg(e.to_string()), 1))
}

fn completions(a: CompletionsArgs) -> CliResult {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    // Into a buffer first: `generate` panics when its writer fails (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "statefile", &mut script);
    let mut out = io::stdout().lock();
    out.write_all(&script)?;
    out.flush()?;
    Ok(())
}
