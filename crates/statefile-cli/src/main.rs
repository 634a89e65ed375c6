//! `statefile`: atomic, locked, recoverable JSON files from any shell script.
//!
//! Every file operation goes through the `statefile` library; this binary only parses
//! arguments, prints results and maps errors to the exit codes of docs/design.md.

mod cli;
mod commands;
mod error;
mod report;
mod transfer;

use std::io;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, LogFormat};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logging(&cli);
    // A transaction (or the replay of one) holds a lock file open per document: the
    // soft open-file limit (often 1,024) should not be what stops it when the hard
    // limit allows more.
    statefile_server::raise_descriptor_limit();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            e.print();
            ExitCode::from(e.code)
        }
    }
}

fn init_logging(cli: &Cli) {
    let g = &cli.global;
    // A server logs what it does: a line at start and one per request (info), a read
    // served from a backup (warn). The other commands report what matters themselves;
    // library log lines are for -v.
    let (serve, json) = match &cli.command {
        Command::Serve(a) => (true, a.log_format == LogFormat::Json),
        _ => (false, false),
    };
    let level = match (serve, g.quiet, g.verbose) {
        (_, true, _) => {
            if serve {
                "error"
            } else {
                "off"
            }
        }
        (true, false, 0) => "info",
        (true, false, 1) => "debug",
        (true, false, _) => "trace",
        (false, false, 0) => "error",
        (false, false, 1) => "warn",
        (false, false, 2) => "info",
        (false, false, _) => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("STATEFILE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_target(false);
    let _ = if json {
        log.json().flatten_event(true).try_init()
    } else if serve {
        log.with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
            .try_init()
    } else {
        log.with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
            .without_time()
            .try_init()
    };
}
