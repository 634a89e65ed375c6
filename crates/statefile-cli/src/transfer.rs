//! `statefile import DIR --to postgres://…` and `statefile export postgres://… --to DIR`:
//! parse the arguments, run the server crate's transfer, print its report.

use serde_json::{Value, json};
use statefile_server::pg::transfer::{self, Outcome, Report};
use statefile_server::pg::{PgOptions, PgStore};

use crate::cli::{DocumentLimit, ExportArgs, Global, ImportArgs};
use crate::error::{CliError, CliResult, in_cli_terms};

/// `s` if it names a PostgreSQL database: a `postgres://` URL or libpq's `key=value`
/// pairs (`host=… dbname=…`).
pub fn connection_string(s: &str) -> Option<&str> {
    statefile_server::pg::connect::is_connection_string(s).then_some(s)
}

/// The database at `url` (given as `flag`), whose documents may be at most `max` bytes.
fn open_database(url: &str, flag: &str, max: &DocumentLimit) -> CliResult<PgStore> {
    let url = connection_string(url).ok_or_else(|| {
        CliError::usage(format!(
            "{flag} takes a database: postgres://USER@HOST:PORT/DB, or host=HOST dbname=DB ..."
        ))
    })?;
    let mut opts = PgOptions::new(url);
    opts.max_document_bytes = max.max_document;
    let store =
        PgStore::open(opts).map_err(|e| CliError::new(anyhow::Error::msg(e.to_string()), 1))?;
    for w in store.warnings() {
        eprintln!("statefile: warning: {w}");
    }
    Ok(store)
}

pub fn import(g: &Global, a: ImportArgs) -> CliResult {
    let to = open_database(&a.to, "--to", &a.limit)?;
    let from = statefile::Store::open_with(&a.dir, a.limit.on(statefile::Options::new()))?;
    let report = transfer::import(&from, &to, |name| {
        tracing::info!(document = name, "copying")
    })
    .map_err(|e| CliError::new(anyhow::Error::msg(e), 1))?;
    finish(g, &report, "imported", to.label(), a.json)
}

pub fn export(g: &Global, a: ExportArgs) -> CliResult {
    let from = open_database(&a.from, "the source", &a.limit)?;
    let to = statefile::Store::open_with(&a.to, a.limit.on(a.write.options().create_dirs(true)))?;
    let report = transfer::export(&from, &to, |name| {
        tracing::info!(document = name, "copying")
    })
    .map_err(|e| CliError::new(anyhow::Error::msg(e), 1))?;
    finish(g, &report, "exported", &a.to.display().to_string(), a.json)
}

fn outcome_json(name: &str, o: &Outcome) -> Value {
    match o {
        Outcome::Copied { version, backups } => json!({
            "name": name, "outcome": "copied", "version": version,
            "deleted": version.is_none(), "backups": backups
        }),
        Outcome::Unchanged { version } => json!({
            "name": name, "outcome": "unchanged", "version": version,
            "deleted": version.is_none()
        }),
        Outcome::Failed(why) => {
            json!({"name": name, "outcome": "failed", "error": in_cli_terms(why)})
        }
    }
}

fn finish(g: &Global, r: &Report, verb: &str, target: &str, as_json: bool) -> CliResult {
    let mut out = String::new();
    if as_json {
        let docs: Vec<Value> = r
            .documents
            .iter()
            .map(|(n, o)| outcome_json(n, o))
            .collect();
        out = json!({
            "copied": r.copied(),
            "unchanged": r.unchanged(),
            "failed": r.failed(),
            "documents": docs,
            "notes": r.notes,
        })
        .to_string();
        out.push('\n');
    } else if !g.quiet {
        for (name, o) in &r.documents {
            if let Outcome::Failed(why) = o {
                out.push_str(&format!("failed: {name}: {}\n", in_cli_terms(why)));
            }
        }
        for n in &r.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        out.push_str(&format!(
            "{verb} {} documents to {target}: {} copied, {} unchanged, {} failed\n",
            r.documents.len(),
            r.copied(),
            r.unchanged(),
            r.failed()
        ));
    }
    {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(out.as_bytes())?;
        stdout.flush()?;
    }
    if r.failed() > 0 {
        return Err(CliError::code(1));
    }
    Ok(())
}
