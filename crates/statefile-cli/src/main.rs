//! `statefile`: atomic, locked, recoverable JSON files from any shell script.
//!
//! Every file operation goes through the `statefile` library; this binary only parses
//! arguments, prints results and maps errors to the exit codes of docs/design.md.

mod cli;
mod commands;
mod report;

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;

use crate::cli::Cli;

/// A failure with the exit code it maps to.
#[derive(Debug)]
pub enum Failure {
    /// From the library: the code follows from its kind.
    Lib(statefile::Error),
    /// Bad arguments or input: exit 2.
    Usage(String),
    /// A pointer that names nothing: exit 4.
    NotFound(String),
    /// A patch or append that does not apply: exit 1.
    NotApplicable(String),
    /// verify/recover found something that needs repair: exit 5. The report is printed, or
    /// cut short by a closed pipe, or failed with the error this holds.
    NeedsRepair(Option<io::Error>),
    /// Writing the output failed (other than a closed pipe): exit 1.
    Output(io::Error),
    /// A library error with advice for the user.
    Hinted(statefile::Error, String),
    /// The HTTP server failed to start or stopped with an error: exit 1.
    Serve(String),
}

impl From<statefile::Error> for Failure {
    fn from(e: statefile::Error) -> Self {
        Failure::Lib(e)
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Output(e)
    }
}

/// The exit code of each library error kind: the table in docs/design.md.
pub fn exit_code(kind: statefile::ErrorKind) -> u8 {
    use statefile::ErrorKind as K;
    match kind {
        K::InvalidName => 2,
        K::Conflict => 3,
        K::NotFound => 4,
        K::Corrupt => 5,
        K::LockTimeout => 6,
        K::NoSpace => 7,
        K::PermissionDenied => 8,
        K::Durability => 9,
        _ => 1,
    }
}

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
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(f) => {
            let (code, msg, causes) = describe(&f);
            if let Some(msg) = msg {
                let mut err = io::stderr().lock();
                let _ = writeln!(err, "statefile: {msg}");
                for c in causes {
                    let _ = writeln!(err, "  caused by: {c}");
                }
            }
            ExitCode::from(code)
        }
    }
}

fn describe(f: &Failure) -> (u8, Option<String>, Vec<String>) {
    match f {
        Failure::Lib(e) => {
            let mut causes = Vec::new();
            let mut src = std::error::Error::source(e);
            while let Some(s) = src {
                let text = s.to_string();
                // Skip a cause that only repeats the message.
                if !e.to_string().contains(&text) {
                    causes.push(text);
                }
                src = s.source();
            }
            (exit_code(e.kind()), Some(e.to_string()), causes)
        }
        Failure::Hinted(e, hint) => (
            exit_code(e.kind()),
            Some(format!("{e} ({hint})")),
            Vec::new(),
        ),
        Failure::Usage(m) => (2, Some(m.clone()), Vec::new()),
        Failure::NotFound(m) => (4, Some(m.clone()), Vec::new()),
        Failure::NotApplicable(m) => (1, Some(m.clone()), Vec::new()),
        Failure::NeedsRepair(output) => (
            5,
            output.as_ref().map(|e| format!("cannot write output: {e}")),
            Vec::new(),
        ),
        Failure::Output(e) => (1, Some(format!("cannot write output: {e}")), Vec::new()),
        Failure::Serve(m) => (1, Some(m.clone()), Vec::new()),
    }
}

fn init_logging(cli: &Cli) {
    // The CLI reports what matters itself; library log lines are for -v.
    let level = if cli.global.quiet {
        "off"
    } else {
        match cli.global.verbose {
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
