//! Human and JSON output for verify, recover and backups.

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;

use serde_json::{Value, json};
use statefile::journal::{self, JournalOptions, JournalStatus};
use statefile::{Action, Doc, Finding, Options, Problem, Report, Scan};

use crate::cli::{Global, JournalAction};
use crate::error::{CliError, CliResult, in_cli_terms};

/// Show a progress bar only for trees at least this large, on a terminal.
const PROGRESS_FROM: usize = 200;

/// Run `scan` over each path and print the reports; exit 5 if anything needs repair.
pub fn scan(g: &Global, paths: &[PathBuf], scan: Scan, as_json: bool) -> CliResult {
    let show_progress = !g.quiet && io::stderr().is_terminal();
    let mut reports = Vec::new();
    for path in paths {
        let bar = indicatif::ProgressBar::hidden();
        if show_progress {
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} checking {pos}/{len} documents [{bar:30}] {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
        }
        let report = scan.run_with_progress(path, &mut |done, total| {
            if show_progress && total >= PROGRESS_FROM {
                if bar.is_hidden() {
                    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                }
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            }
        })?;
        bar.finish_and_clear();
        reports.push((path.clone(), report));
    }
    let needs_repair = reports.iter().any(|(_, r)| r.needs_repair());
    // The exit code follows from the reports; a closed pipe only cuts the output short.
    let printed = match print_reports(g, &reports, needs_repair, as_json) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    };
    match (needs_repair, printed) {
        (true, Ok(())) => Err(CliError::code(5)),
        (true, Err(e)) => Err(CliError {
            code: 5,
            ..CliError::from(e)
        }),
        (false, printed) => Ok(printed?),
    }
}

fn print_reports(
    g: &Global,
    reports: &[(PathBuf, Report)],
    needs_repair: bool,
    as_json: bool,
) -> io::Result<()> {
    let mut out = io::BufWriter::new(io::stdout().lock());
    if as_json {
        let v: Vec<Value> = reports.iter().map(|(p, r)| report_json(p, r)).collect();
        serde_json::to_writer_pretty(
            &mut out,
            &json!({
                "healthy": !needs_repair,
                "reports": v,
            }),
        )
        .map_err(io::Error::from)?;
        writeln!(out)?;
    } else if !g.quiet || needs_repair {
        for (path, r) in reports {
            for f in &r.findings {
                writeln!(out, "{}", finding_line(f))?;
            }
            for j in &r.journals {
                writeln!(out, "{}", journal_line(j))?;
            }
            let problems = r.findings.iter().filter(|f| !f.is_fixed()).count();
            let fixed = r.findings.len() - problems;
            let mut summary = format!(
                "{}: {} documents, {} backups checked",
                path.display(),
                r.documents,
                r.backups
            );
            if r.without_backup > 0 {
                summary.push_str(&format!(" ({} without a backup)", r.without_backup));
            }
            if r.live_temps > 0 {
                summary.push_str(&format!(", {} writes in progress", r.live_temps));
            }
            if fixed > 0 {
                summary.push_str(&format!(", {fixed} repaired"));
            }
            summary.push_str(&match problems {
                0 => ": healthy".to_string(),
                n => format!(": {n} need repair"),
            });
            writeln!(out, "{summary}")?;
        }
    }
    out.flush()
}

fn finding_line(f: &Finding) -> String {
    let what = match &f.problem {
        Problem::StaleTemp => "stale temp file (its writer is gone)".to_string(),
        Problem::CorruptDocument {
            reason,
            good_backup,
        } => match good_backup {
            Some(b) => format!(
                "corrupt document: {reason}; restorable from {}",
                b.display()
            ),
            None => format!("corrupt document: {reason}; no good backup"),
        },
        Problem::CorruptBackup { reason } => format!("corrupt backup: {reason}"),
        Problem::Unreadable { error } => format!("unreadable: {}", in_cli_terms(error)),
        Problem::JournalReplay { version: Some(v) } => {
            format!("not yet what its last journal record says (version {v})")
        }
        Problem::JournalReplay { version: None } => {
            "not yet what its last journal record says (deleted)".to_string()
        }
        Problem::JournalSkipped { version, reason } => format!(
            "its last journal record{} is not applied here: {}",
            version
                .as_ref()
                .map_or(String::new(), |v| format!(" (version {v})")),
            in_cli_terms(reason)
        ),
        Problem::JournalDamaged {
            lsn,
            reason,
            later_records,
        } => format!(
            "journal damaged at LSN {lsn} ({reason}), {later_records} valid records after it: \
             writes in this tree are refused until a person decides"
        ),
        Problem::JournalSyncFailed => "a sync of a document or backup whose bytes only the \
            journal may hold failed, and the file could not be rewritten from its record: \
            checkpoints are refused until `statefile recover` rewrites the files the journal \
            holds"
            .to_string(),
        _ => "problem".to_string(),
    };
    let done = match &f.action {
        Action::None => String::new(),
        Action::Removed => " -> removed".into(),
        Action::Restored { from, .. } => format!(" -> restored from {}", from.display()),
        Action::MovedAside { to } => format!(" -> moved to {}", to.display()),
        Action::Would(what) => format!(" -> would {what}"),
        Action::Failed { error } => format!(" -> repair failed: {}", in_cli_terms(error)),
        Action::Replayed => " -> replayed from the journal".into(),
        _ => String::new(),
    };
    format!("{}: {what}{done}", f.path.display())
}

fn report_json(path: &std::path::Path, r: &Report) -> Value {
    let findings: Vec<Value> = r
        .findings
        .iter()
        .map(|f| {
            let (problem, detail, backup) = match &f.problem {
                Problem::StaleTemp => ("stale-temp", None, None),
                Problem::CorruptDocument { reason, good_backup } => (
                    "corrupt-document",
                    Some(reason.clone()),
                    good_backup.as_ref().map(|b| b.display().to_string()),
                ),
                Problem::CorruptBackup { reason } => ("corrupt-backup", Some(reason.clone()), None),
                Problem::Unreadable { error } => ("unreadable", Some(in_cli_terms(error)), None),
                Problem::JournalReplay { version } => (
                    "journal-replay",
                    Some(version.as_ref().map_or("deleted".to_string(), |v| v.to_string())),
                    None,
                ),
                Problem::JournalSkipped { version, reason } => (
                    "journal-skipped",
                    Some(match version {
                        Some(v) => format!("version {v}: {}", in_cli_terms(reason)),
                        None => in_cli_terms(reason),
                    }),
                    None,
                ),
                Problem::JournalDamaged { lsn, reason, later_records } => (
                    "journal-damaged",
                    Some(format!("LSN {lsn}: {reason}; {later_records} valid records after it")),
                    None,
                ),
                Problem::JournalSyncFailed => ("journal-sync-failed", None, None),
                _ => ("other", None, None),
            };
            let action = match &f.action {
                Action::None => json!(null),
                Action::Removed => json!({"done": "removed"}),
                Action::Restored { from, version } => {
                    json!({"done": "restored", "from": from.display().to_string(), "version": version.as_str()})
                }
                Action::MovedAside { to } => json!({"done": "moved-aside", "to": to.display().to_string()}),
                Action::Would(w) => json!({"would": w}),
                Action::Failed { error } => json!({"failed": in_cli_terms(error)}),
                Action::Replayed => json!({"done": "replayed"}),
                _ => json!(null),
            };
            json!({
                "path": f.path.display().to_string(),
                "problem": problem,
                "detail": detail,
                "good_backup": backup,
                "action": action,
                "fixed": f.is_fixed(),
            })
        })
        .collect();
    json!({
        "path": path.display().to_string(),
        "documents": r.documents,
        "backups": r.backups,
        "live_temps": r.live_temps,
        "without_backup": r.without_backup,
        "needs_repair": r.needs_repair(),
        "findings": findings,
        "journals": r.journals.iter().map(journal_json).collect::<Vec<_>>(),
    })
}

fn journal_json(s: &JournalStatus) -> Value {
    json!({
        "root": s.root.display().to_string(),
        "path": s.path.display().to_string(),
        "format_version": s.format_version,
        "swap": s.swap,
        "capacity": s.capacity,
        "checkpoint_lsn": s.checkpoint_lsn,
        "end_lsn": s.end_lsn,
        "records": s.records,
        "in_flight": s.in_flight,
        "to_replay": s.to_replay.iter().map(|p| json!({
            "path": p.path.display().to_string(),
            "version": p.version.as_ref().map(|v| v.as_str().to_string()),
            "in_flight": p.in_flight,
        })).collect::<Vec<_>>(),
        "skipped": s.skipped.iter().map(|p| json!({
            "path": p.path.display().to_string(),
            "version": p.version.as_ref().map(|v| v.as_str().to_string()),
            "reason": p.reason,
        })).collect::<Vec<_>>(),
        "unchecked": s.unchecked.iter().map(|p| json!({
            "path": p.path.display().to_string(),
            "version": p.version.as_ref().map(|v| v.as_str().to_string()),
            "reason": p.reason,
        })).collect::<Vec<_>>(),
        "damage": s.damage.as_ref().map(|d| json!({
            "lsn": d.lsn,
            "reason": d.reason,
            "later_records": d.later_records,
        })),
        "sync_failed": s.sync_failed,
        "needs_repair": s.needs_repair(),
    })
}

fn journal_line(s: &JournalStatus) -> String {
    let mut line = format!(
        "{}: journal mode (format {}, {} bytes{}), {} records since the checkpoint",
        s.path.display(),
        s.format_version,
        s.capacity,
        if s.swap {
            ", commits swap files in"
        } else {
            ""
        },
        s.records
    );
    let replay = s.to_replay.iter().filter(|p| !p.in_flight).count();
    if replay > 0 {
        line.push_str(&format!(", {replay} documents to replay"));
    }
    if !s.skipped.is_empty() {
        line.push_str(&format!(", {} records a replay skips", s.skipped.len()));
    }
    if !s.unchecked.is_empty() {
        line.push_str(&format!(
            ", {} documents not checked (may not be read)",
            s.unchecked.len()
        ));
    }
    if s.in_flight > 0 {
        line.push_str(&format!(", {} commits in flight", s.in_flight));
    }
    if let Some(d) = &s.damage {
        line.push_str(&format!(", DAMAGED at LSN {}", d.lsn));
    }
    if s.sync_failed {
        line.push_str(", A SYNC FAILED (checkpoints refused until `statefile recover`)");
    }
    line
}

/// `statefile journal ...`.
pub fn journal(g: &Global, action: JournalAction) -> CliResult {
    match action {
        JournalAction::Enable {
            dir,
            size,
            swap,
            json,
        } => {
            let opts = Options::new();
            let jopts = JournalOptions {
                capacity: size,
                swap,
                ..JournalOptions::default()
            };
            let st = journal::enable(&dir, &opts, jopts)?;
            if st.swap != swap {
                // `enable` on a tree that has a journal reports it and changes nothing.
                eprintln!(
                    "statefile: warning: {} exists already and {}; to change that, \
                     `statefile journal disable` then `enable` it again",
                    st.path.display(),
                    if st.swap {
                        "swaps files in"
                    } else {
                        "renames (it does not swap files in)"
                    }
                );
            }
            print_status(g, &st, json)
        }
        JournalAction::Disable { dir, write } => {
            let opts = Options::new().lock_timeout(write.lock_timeout);
            let r = journal::disable(&dir, &opts)?;
            say_line(
                g,
                &format!(
                    "journal mode disabled in {}: {} documents and {} directories synced",
                    dir.display(),
                    r.documents,
                    r.directories
                ),
            )
        }
        JournalAction::Checkpoint { dir, write } => {
            let opts = Options::new().lock_timeout(write.lock_timeout);
            let r = journal::checkpoint(&dir, &opts)?;
            say_line(
                g,
                &format!(
                    "checkpoint: {} documents and {} directories synced, {} bytes of the journal freed",
                    r.documents, r.directories, r.freed
                ),
            )
        }
        JournalAction::Status { path, json } => {
            let Some(st) = journal::status(&path, &Options::new())? else {
                return Err(CliError::from(statefile::Error::new(
                    statefile::ErrorKind::NotFound,
                    format!("{} is not in journal mode", path.display()),
                )));
            };
            print_status(g, &st, json)?;
            if st.needs_repair() {
                return Err(CliError::code(5));
            }
            Ok(())
        }
    }
}

fn print_status(g: &Global, st: &JournalStatus, as_json: bool) -> CliResult {
    let mut out = io::BufWriter::new(io::stdout().lock());
    if as_json {
        serde_json::to_writer_pretty(&mut out, &journal_json(st)).map_err(io::Error::from)?;
        writeln!(out)?;
    } else if !g.quiet {
        writeln!(out, "{}", journal_line(st))?;
        for p in &st.to_replay {
            let v = p
                .version
                .as_ref()
                .map_or("deleted".to_string(), |v| v.to_string());
            let when = if p.in_flight {
                " (being written now)"
            } else {
                ""
            };
            writeln!(out, "  to replay: {} -> {v}{when}", p.path.display())?;
        }
        for p in &st.skipped {
            writeln!(out, "  skipped: {}: {}", p.path.display(), p.reason)?;
        }
        for p in &st.unchecked {
            writeln!(out, "  not checked: {}: {}", p.path.display(), p.reason)?;
        }
        if let Some(d) = &st.damage {
            writeln!(
                out,
                "  damage at LSN {}: {} ({} valid records after it)",
                d.lsn, d.reason, d.later_records
            )?;
        }
        if st.sync_failed {
            writeln!(
                out,
                "  a sync of a document or backup whose bytes only the journal may hold \
                 failed, and the file could not be rewritten from its record (the log says \
                 which): checkpoints are refused until `statefile recover` rewrites the files \
                 the journal holds"
            )?;
        }
    }
    match out.flush() {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

fn say_line(g: &Global, line: &str) -> CliResult {
    if !g.quiet {
        let mut out = io::stdout().lock();
        match writeln!(out, "{line}").and_then(|()| out.flush()) {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
            other => other?,
        }
    }
    Ok(())
}

pub fn backups(d: &Doc<Value>, as_json: bool) -> CliResult {
    let list = d.backups()?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    if as_json {
        let v: Vec<Value> = list
            .iter()
            .map(|b| {
                json!({
                    "number": b.number,
                    "version": b.version.as_str(),
                    "modified": humantime::format_rfc3339_seconds(b.modified).to_string(),
                    "bytes": b.len,
                    "parses": b.parses,
                    "path": b.path.display().to_string(),
                })
            })
            .collect();
        serde_json::to_writer_pretty(&mut out, &v).map_err(io::Error::from)?;
        writeln!(out)?;
    } else if list.is_empty() {
        writeln!(out, "no backups of {}", d.path().display())?;
    } else {
        for b in &list {
            writeln!(
                out,
                "{:>3}  {}  {}  {:>10} bytes{}",
                b.number,
                b.version,
                humantime::format_rfc3339_seconds(b.modified),
                b.len,
                if b.parses { "" } else { "  (damaged)" }
            )?;
        }
    }
    out.flush()?;
    Ok(())
}
