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

use crate::cli::{Cli, Global};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logging(&cli.global);
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            e.print();
            ExitCode::from(e.code)
        }
    }
}

fn init_logging(g: &Global) {
    // The CLI reports what matters itself; library log lines are for -v.
    let level = if g.quiet {
        "off"
    } else {
        match g.verbose {
            0 => "error",
            1 => "warn",
            2 => "info",
            _ => "debug",
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("STATEFILE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .with_target(false)
        .without_time()
        .try_init();
}
