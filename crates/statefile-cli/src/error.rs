//! A failed command: what to tell the user and the exit code it ends with (cargo's
//! `CliError`). The codes are the table in docs/design.md.

use std::io::{self, Write};

/// A command's failure.
#[derive(Debug)]
pub struct CliError {
    /// What went wrong, printed as `statefile: <error>` with its causes; `None` when there
    /// is nothing to add (verify's report already said it, or stdout was closed).
    pub error: Option<anyhow::Error>,
    /// What the user can do about it, printed after the error.
    pub help: Option<String>,
    /// The process's exit code.
    pub code: u8,
}

pub type CliResult<T = ()> = Result<T, CliError>;

impl CliError {
    pub fn new(error: impl Into<anyhow::Error>, code: u8) -> CliError {
        CliError {
            error: Some(error.into()),
            help: None,
            code,
        }
    }

    /// Exit with `code` and print nothing more.
    pub fn code(code: u8) -> CliError {
        CliError {
            error: None,
            help: None,
            code,
        }
    }

    /// Bad arguments or input: exit 2.
    pub fn usage(message: String) -> CliError {
        CliError::new(anyhow::Error::msg(message), 2)
    }

    /// A pointer that names nothing: exit 4.
    pub fn not_found(message: String) -> CliError {
        CliError::new(anyhow::Error::msg(message), 4)
    }

    /// A patch or append that does not apply: exit 1.
    pub fn not_applicable(message: String) -> CliError {
        CliError::new(anyhow::Error::msg(message), 1)
    }

    /// The same failure, with advice on what to do next.
    pub fn with_help(mut self, help: impl Into<String>) -> CliError {
        self.help = Some(help.into());
        self
    }

    /// Print it to stderr: `statefile: <error>`, each cause that adds something, the help.
    pub fn print(&self) {
        let Some(error) = &self.error else { return };
        let message = error.to_string();
        let mut err = io::stderr().lock();
        let _ = writeln!(err, "statefile: {message}");
        for cause in error.chain().skip(1) {
            let text = cause.to_string();
            // Skip a cause that only repeats the message.
            if !message.contains(&text) {
                let _ = writeln!(err, "  caused by: {text}");
            }
        }
        if let Some(help) = &self.help {
            let _ = writeln!(err, "  help: {help}");
        }
    }
}

/// What to do about a document over `--max-document`.
pub const RAISE_LIMIT: &str = "if it is meant to be that large, raise the limit with --max-document BYTES (K, M or G suffixes)";

/// How the library's messages name its size limit on a document.
const LIBRARY_LIMIT: &str = "(raise it with Options::max_document_bytes)";

/// A library message in the CLI's terms: the size limit on a document is its
/// `--max-document` flag (reports of verify, recover and import hold such messages).
pub fn in_cli_terms(message: &str) -> String {
    message.replace(LIBRARY_LIMIT, "(--max-document)")
}

impl From<statefile::Error> for CliError {
    fn from(e: statefile::Error) -> CliError {
        let code = exit_code(e.kind());
        if e.too_large().is_some() {
            return CliError::new(anyhow::Error::msg(too_large(e.message())), code)
                .with_help(RAISE_LIMIT);
        }
        CliError::new(e, code)
    }
}

/// The library's message about a document over the limit (it names the file, the
/// operation, the size and the limit), naming the flag that sets the limit here. The
/// library reads, hashes and writes nothing over it, so nothing changed.
fn too_large(message: &str) -> String {
    format!("{}: nothing was changed", in_cli_terms(message))
}

/// Writing the output failed. A closed pipe (as in `statefile get f.json | head`) is
/// success, as for cargo and ripgrep; anything else is exit 1.
impl From<io::Error> for CliError {
    fn from(e: io::Error) -> CliError {
        if e.kind() == io::ErrorKind::BrokenPipe {
            CliError::code(0)
        } else {
            CliError::new(anyhow::Error::new(e).context("cannot write output"), 1)
        }
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
