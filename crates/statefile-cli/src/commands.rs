//! What each subcommand does. Every file operation goes through the library.

use std::io::{self, IsTerminal, Read, Write};
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use statefile::{BackupRef, Doc, Durability, Options, Version, pointer};

use crate::Failure;
use crate::cli::{Cli, Command, Global, Output};
use crate::report;

type Result<T = ()> = std::result::Result<T, Failure>;

pub fn run(cli: Cli) -> Result {
    let g = &cli.global;
    match cli.command {
        Command::Get {
            file,
            pointer,
            output,
            raw,
            fallback,
        } => get(g, &file, pointer.as_deref(), &output, raw, fallback),
        Command::Put {
            file,
            if_match,
            create,
            parents,
        } => put(g, &file, if_match.as_deref(), create, parents),
        Command::Set {
            file,
            pointer,
            json,
            string,
            parents,
        } => set(g, &file, &pointer, &json, string, parents),
        Command::Append {
            file,
            pointer,
            json,
            string,
            parents,
        } => append(g, &file, &pointer, &json, string, parents),
        Command::Rm { file, pointer, all } => rm(g, &file, pointer.as_deref(), all),
        Command::Patch {
            file,
            json_patch,
            if_match,
            parents,
        } => patch(g, &file, json_patch, if_match.as_deref(), parents),
        Command::Version { file } => {
            let v = doc(g, &file, false)?.version()?;
            say(g, v.as_str())
        }
        Command::Verify { paths, json } => {
            report::scan(g, &paths, statefile::ScanMode::Verify, false, json)
        }
        Command::Recover {
            paths,
            dry_run,
            json,
        } => report::scan(g, &paths, statefile::ScanMode::Repair, dry_run, json),
        Command::Backups { file, json } => report::backups(&doc(g, &file, false)?, json),
        Command::Restore { file, from } => restore(g, &file, from.as_deref()),
        Command::Serve {
            dir,
            addr,
            token,
            max_body,
            request_timeout,
            concurrency,
        } => {
            let mut config = statefile_server::Config::new(dir);
            config.addr = addr;
            config.token = token.filter(|t| !t.is_empty());
            config.max_body = max_body;
            config.request_timeout = seconds(request_timeout, "--request-timeout")?;
            config.concurrency = concurrency.max(1);
            config.options = options(g, true)?;
            statefile_server::run(config).map_err(|e| Failure::Serve(e.to_string()))
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            // Into a buffer first: `generate` panics when its writer fails (a closed pipe).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "statefile", &mut script);
            let mut out = io::stdout().lock();
            out.write_all(&script)?;
            out.flush()?;
            Ok(())
        }
    }
}

fn seconds(s: f64, flag: &str) -> Result<Duration> {
    Duration::try_from_secs_f64(s).map_err(|_| {
        Failure::Usage(format!(
            "{flag} must be a non-negative number of seconds, not {s}"
        ))
    })
}

/// The library options the global flags ask for.
pub fn options(g: &Global, parents: bool) -> Result<Options> {
    let durability: Durability = g.durability.parse().map_err(Failure::Usage)?;
    Ok(Options::new()
        .durability(durability)
        .backups(g.backups)
        .lock_timeout(seconds(g.lock_timeout, "--lock-timeout")?)
        .create_dirs(parents))
}

fn doc(g: &Global, file: &Path, parents: bool) -> Result<Doc<Value>> {
    Ok(Doc::open_with(file, options(g, parents)?)?)
}

/// A write into a missing directory: say how to create it.
fn hint_parents(file: &Path, e: statefile::Error) -> Failure {
    let missing_dir = file
        .parent()
        .is_some_and(|p| !p.as_os_str().is_empty() && !p.exists());
    if e.kind() == statefile::ErrorKind::NotFound && missing_dir {
        Failure::Hinted(e, "pass --parents to create the missing directories".into())
    } else {
        Failure::Lib(e)
    }
}

/// `FILE: message`, for a message about `file` that does not name it.
fn about(file: &Path, message: impl std::fmt::Display) -> String {
    format!("{}: {message}", file.display())
}

/// A pointer error, naming the file (the library's pointer messages name only the pointer).
fn in_file(file: &Path) -> impl Fn(pointer::PointerError) -> Failure + '_ {
    move |e| {
        use pointer::PointerError as P;
        let message = about(file, &e);
        match e {
            P::Syntax(_) => Failure::Usage(message),
            P::NotFound(_) => Failure::NotFound(message),
            P::NotApplicable(_) => Failure::NotApplicable(message),
        }
    }
}

/// Print a line to stdout unless quiet. A closed pipe surfaces as BrokenPipe (success).
fn say(g: &Global, line: &str) -> Result {
    if !g.quiet {
        let mut out = io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    Ok(())
}

fn print_value(v: &Value, output: &Output, raw: bool) -> Result {
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

fn get(
    g: &Global,
    file: &Path,
    ptr: Option<&str>,
    output: &Output,
    raw: bool,
    fallback: bool,
) -> Result {
    let tokens = pointer::parse(ptr.unwrap_or("")).map_err(in_file(file))?;
    let d = Doc::<Value>::open_with(file, options(g, false)?.fallback(fallback))?;
    let v = d.read_versioned()?;
    if let Some(r) = &v.recovered
        && !g.quiet
    {
        eprintln!(
            "statefile: {} is damaged ({}); printing its backup {}",
            file.display(),
            r.reason,
            r.path.display()
        );
    }
    let at = pointer::get(&v.value, &tokens).map_err(in_file(file))?;
    print_value(at, output, raw)
}

/// Read one JSON value from stdin: `what` for `file`.
fn read_stdin(file: &Path, what: &str) -> Result<Value> {
    let usage = |message: String| Failure::Usage(about(file, message));
    let mut buf = Vec::new();
    io::stdin()
        .read_to_end(&mut buf)
        .map_err(|e| usage(format!("cannot read {what} from stdin: {e}")))?;
    if buf.iter().all(u8::is_ascii_whitespace) {
        return Err(usage(format!("stdin is empty: expected {what}")));
    }
    serde_json::from_slice(&buf)
        .map_err(|e| usage(format!("stdin is not valid JSON ({what}): {e}")))
}

/// The value argument of `set` or `append` on `file`.
fn parse_arg(file: &Path, json: &str, string: bool) -> Result<Value> {
    if string {
        return Ok(Value::String(json.to_string()));
    }
    serde_json::from_str(json).map_err(|e| {
        Failure::Usage(about(
            file,
            format!(
                "{json:?} is not valid JSON ({e}); to store it as a string, quote it ('\"text\"') or pass --string"
            ),
        ))
    })
}

fn version_arg(s: &str) -> Result<Version> {
    Version::parse(s).map_err(|e| Failure::Usage(e.to_string()))
}

/// Locked read-modify-write where `f` may fail with a CLI failure: the update is then
/// abandoned (nothing written) and that failure returned.
fn modify<R>(
    d: &Doc<Value>,
    init: Option<Value>,
    expected: Option<&Version>,
    f: impl FnOnce(&mut Value) -> Result<R>,
) -> Result<(R, statefile::Receipt)> {
    let mut failure = None;
    let body = |v: &mut Value| match f(v) {
        Ok(r) => Ok(r),
        Err(e) => {
            failure = Some(e);
            Err(statefile::Error::aborted("abandoned"))
        }
    };
    let res = match (expected, init) {
        (Some(v), _) => d.update_if(v, body),
        (None, Some(init)) => d.update_or_insert_with(move || init.clone(), body),
        (None, None) => d.update(body),
    };
    res.map_err(|e| failure.take().unwrap_or_else(|| hint_parents(d.path(), e)))
}

fn put(g: &Global, file: &Path, if_match: Option<&str>, create: bool, parents: bool) -> Result {
    let expected = if_match.map(version_arg).transpose()?;
    let value = read_stdin(file, "the new document")?;
    let d = doc(g, file, parents)?;
    let r = match (expected, create) {
        (Some(v), _) => d.write_if(&v, &value),
        (None, true) => d.create(&value),
        (None, false) => d.write(&value),
    }
    .map_err(|e| hint_parents(file, e))?;
    say(g, r.version.as_str())
}

fn set(g: &Global, file: &Path, ptr: &str, json: &str, string: bool, parents: bool) -> Result {
    let tokens = pointer::parse(ptr).map_err(in_file(file))?;
    let value = parse_arg(file, json, string)?;
    let d = doc(g, file, parents)?;
    let ((), receipt) = modify(&d, Some(json!({})), None, |v| {
        pointer::set(v, &tokens, value).map_err(in_file(file))
    })?;
    say(g, receipt.version.as_str())
}

fn append(g: &Global, file: &Path, ptr: &str, json: &str, string: bool, parents: bool) -> Result {
    let tokens = pointer::parse(ptr).map_err(in_file(file))?;
    let value = parse_arg(file, json, string)?;
    let d = doc(g, file, parents)?;
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

fn rm(g: &Global, file: &Path, ptr: Option<&str>, all: bool) -> Result {
    let d = doc(g, file, false)?;
    match (ptr, all) {
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

fn patch(
    g: &Global,
    file: &Path,
    json_patch: bool,
    if_match: Option<&str>,
    parents: bool,
) -> Result {
    let expected = if_match.map(version_arg).transpose()?;
    let input = read_stdin(file, "the patch")?;
    let d = doc(g, file, parents)?;
    let apply = |v: &mut Value| -> Result {
        if json_patch {
            let ops: json_patch::Patch = serde_json::from_value(input.clone()).map_err(|e| {
                Failure::Usage(about(
                    file,
                    format!("stdin is not an RFC 6902 JSON Patch: {e}"),
                ))
            })?;
            json_patch::patch(v, &ops).map_err(|e| {
                Failure::NotApplicable(format!(
                    "the patch does not apply to {}: {e}",
                    file.display()
                ))
            })
        } else {
            json_patch::merge(v, &input);
            Ok(())
        }
    };
    // A merge patch creates a missing document; a JSON Patch needs it to exist.
    let init = (!json_patch).then(|| json!({}));
    let ((), receipt) = modify(&d, init, expected.as_ref(), apply)?;
    say(g, receipt.version.as_str())
}

fn restore(g: &Global, file: &Path, from: Option<&str>) -> Result {
    let which = match from {
        None => BackupRef::NewestGood,
        Some(s) if !s.is_empty() && s.len() < 10 && s.bytes().all(|b| b.is_ascii_digit()) => {
            BackupRef::Number(
                s.parse()
                    .map_err(|_| Failure::Usage(format!("bad backup number {s}")))?,
            )
        }
        Some(s) => BackupRef::Version(version_arg(s)?),
    };
    let r = doc(g, file, false)?.restore(&which)?;
    say(g, r.version.as_str())
}
