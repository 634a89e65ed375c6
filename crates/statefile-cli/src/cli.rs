//! The command line: names and arguments here are an interface scripts depend on.
//!
//! One args struct per subcommand. Values are parsed into their types here (a version,
//! a durability level, a backup reference, a duration), so a bad value is a usage error
//! from clap, with the subcommand's usage line, before anything touches a file.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};
use statefile::{BackupRef, Durability, Options, Version};

/// The top-level help's epilogue: a few examples, then the exit codes.
const AFTER_HELP: &str = "\
Examples:
  echo '{\"status\":\"queued\"}' | statefile put jobs/42.json
  statefile get --raw jobs/42.json /status
  statefile append jobs/42.json /events '{\"at\":\"12:00\",\"what\":\"started\"}'
  statefile verify ./jobs || statefile recover ./jobs

Exit codes:
  0  success
  1  other error (I/O, a patch or append that does not apply, a value that cannot be stored,
     a document over --max-document)
  2  usage error (bad arguments, invalid JSON input or pointer, invalid name)
  3  conflict (--if-match did not match, --create found the file)
  4  not found (the file, a backup, or the value at the pointer)
  5  corrupt (the file is damaged; for verify and recover: something needs repair)
  6  lock timeout (another writer held the lock too long)
  7  no space left on the device
  8  permission denied
  9  durability unknown (the new version was renamed into place, the directory sync failed)

Commands that write take --durability, --backups and --lock-timeout (defaults from
STATEFILE_DURABILITY, STATEFILE_BACKUPS, STATEFILE_LOCK_TIMEOUT). Commands that read or
write documents take --max-document (default 64M, as for serve): a larger file is refused
at once, never read. STATEFILE_LOG sets the log filter (e.g. debug).";

/// Atomic, durable, lock-safe JSON files for scripts in any language.
///
/// Every write goes to a unique temp file that is synced and renamed over the file, under
/// a lock that other statefile processes (and the library, and the HTTP server) respect.
/// Readers always see a complete old or new version; a crash never leaves a torn file.
#[derive(Debug, Parser)]
#[command(name = "statefile", version, after_help = AFTER_HELP, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand takes: how much to say.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// Print nothing but errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Log more (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// How a command that writes does it: only on the subcommands that write.
#[derive(Debug, Args)]
#[command(next_help_heading = "Write options")]
pub struct WriteOptions {
    /// How hard writes work to survive a power loss: full (fsync file and directory),
    /// data (fdatasync the file only), none (no syncs; for caches and tests).
    #[arg(long, env = "STATEFILE_DURABILITY", default_value = "full",
          value_parser = durability())]
    pub durability: Durability,
    /// Previous versions to keep as .NAME.bak, .NAME.bak.2, ... (0 turns backups off).
    #[arg(
        long,
        env = "STATEFILE_BACKUPS",
        default_value_t = 1,
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub backups: usize,
    /// Seconds to wait for another writer's lock before giving up (exit code 6).
    #[arg(long, env = "STATEFILE_LOCK_TIMEOUT", default_value = "10",
          value_name = "SECONDS", value_parser = seconds, allow_negative_numbers = true)]
    pub lock_timeout: Duration,
}

impl WriteOptions {
    /// The library options these flags ask for.
    pub fn options(&self) -> Options {
        Options::new()
            .durability(self.durability)
            .backups(self.backups)
            .lock_timeout(self.lock_timeout)
    }
}

/// `--max-document`'s default, for `serve` and the document commands alike: the CLI
/// refuses what the server would.
pub const DEFAULT_MAX_DOCUMENT: &str = "64M";

/// `--max-document` on the commands that read or write documents (`serve` has its own,
/// with the same name, default and syntax, in [`ServeLimits`]).
#[derive(Debug, Args)]
#[command(next_help_heading = "Limits")]
pub struct DocumentLimit {
    /// Largest document or backup read into memory, hashed or written, in bytes (suffixes
    /// K, M, G: powers of 1024; the default is serve's). A file over it, such as a huge
    /// or sparse file another program put there, is never read or hashed: the command
    /// fails at once with exit 1, changing nothing (verify and recover report it as
    /// unreadable), but a plain `put` replaces it, keeping it aside as .NAME.corrupt. A
    /// write whose stored form (or stdin) would be larger fails the same way.
    #[arg(long, default_value = DEFAULT_MAX_DOCUMENT, value_name = "BYTES", value_parser = bytes)]
    pub max_document: usize,
}

impl DocumentLimit {
    /// The limit in bytes.
    pub fn bytes(&self) -> u64 {
        u64::try_from(self.max_document).unwrap_or(u64::MAX)
    }

    /// `opts` with this limit.
    pub fn on(&self, opts: Options) -> Options {
        opts.max_document_bytes(self.bytes())
    }
}

/// `--durability`: one of the library's levels, listed in help and completions.
fn durability() -> impl TypedValueParser<Value = Durability> {
    PossibleValuesParser::new(["full", "data", "none"]).try_map(|s| s.parse::<Durability>())
}

/// A number of seconds (fractions allowed), as a duration.
pub fn seconds(s: &str) -> Result<Duration, String> {
    let n: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(n).map_err(|_| {
        format!("{s:?} is not a number of seconds: it must be zero or more, and finite")
    })
}

/// A size in bytes: digits, optionally followed by K, M or G (powers of 1024; `KiB`,
/// `MB` and the like are read the same way).
pub fn bytes(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(digits);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => {
            return Err(format!(
                "{s:?} is not a size: give bytes, or a number with K, M or G"
            ));
        }
    };
    n.parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format!("{s:?} is not a size: give bytes, or a number with K, M or G"))
}

/// The document a command works on.
const FILE: &str = "The JSON document: a path to a file, e.g. jobs/42.json";

/// `--pretty` / `--compact`.
#[derive(Debug, Args)]
pub struct Output {
    /// Pretty-print (the default on a terminal).
    #[arg(long, conflicts_with = "compact")]
    pub pretty: bool,
    /// Print on one line (the default when piped).
    #[arg(long)]
    pub compact: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Get(GetArgs),
    Put(PutArgs),
    Set(SetArgs),
    Append(AppendArgs),
    Rm(RmArgs),
    Patch(PatchArgs),
    Version(VersionArgs),
    Verify(VerifyArgs),
    Recover(RecoverArgs),
    Backups(BackupsArgs),
    Restore(RestoreArgs),
    Serve(ServeArgs),
    Import(ImportArgs),
    Export(ExportArgs),
    Journal(JournalArgs),
    Tx(TxArgs),
    Completions(CompletionsArgs),
}

/// Print a document, or the value at a JSON Pointer.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  statefile get jobs/42.json\n  statefile get --raw jobs/42.json /status\n  for id in $(statefile get --lines queue.json /pending); do ...; done\n  statefile get --fallback config.json   # a damaged file reads as its newest good backup"
)]
pub struct GetArgs {
    #[arg(help = FILE)]
    pub file: PathBuf,
    /// RFC 6901 pointer, e.g. /servers/0/host ("" or omitted: the whole document).
    pub pointer: Option<String>,
    #[command(flatten)]
    pub output: Output,
    /// Print a string value without quotes.
    #[arg(long)]
    pub raw: bool,
    /// Print an array one element per line: strings without quotes, anything else as
    /// compact JSON (for `for id in $(statefile get --lines ...)` and `while read`).
    #[arg(long, conflicts_with = "pretty")]
    pub lines: bool,
    /// If the file is damaged, print its newest backup that parses (and say so on stderr).
    #[arg(long)]
    pub fallback: bool,
    #[command(flatten)]
    pub limit: DocumentLimit,
}

/// Replace a document with JSON read from stdin, atomically. Prints the new version.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  echo '{\"status\":\"queued\"}' | statefile put jobs/42.json\n  statefile put --if-match \"$v\" config.json < new.json   # only if unchanged since $v\n  statefile put --create --parents jobs/43.json < job.json"
)]
pub struct PutArgs {
    #[arg(help = FILE)]
    pub file: PathBuf,
    /// Only replace if the current version is this one (bare hex or its quoted ETag; a
    /// weak W/ tag never matches and is refused, exit 2).
    #[arg(long, value_name = "VERSION")]
    pub if_match: Option<Version>,
    /// Fail (exit 3) if the file already exists.
    #[arg(long, conflicts_with = "if_match")]
    pub create: bool,
    /// Create missing parent directories.
    #[arg(long)]
    pub parents: bool,
    #[command(flatten)]
    pub write: WriteOptions,
    #[command(flatten)]
    pub limit: DocumentLimit,
}

/// Set the value at a JSON Pointer, under the lock (read-modify-write).
#[derive(Debug, Args)]
#[command(
    after_help = "Creates a missing file (as {}) and missing intermediate objects.\n\nExamples:\n  statefile set jobs/42.json /status '\"running\"'\n  statefile set --string jobs/42.json /status running\n  statefile set config.json /limits/max 10"
)]
pub struct SetArgs {
    #[arg(help = FILE)]
    pub file: PathBuf,
    /// RFC 6901 pointer to the value to set, e.g. /limits/max ("" replaces the whole document).
    pub pointer: String,
    /// The new value as JSON, e.g. 10, '"text"' or '{"a": 1}' (with --string: any text).
    pub json: String,
    #[command(flatten)]
    pub edit: EditOptions,
}

/// How `set` and `append` take their value and open the file.
#[derive(Debug, Args)]
pub struct EditOptions {
    /// Take JSON as a plain string.
    #[arg(long)]
    pub string: bool,
    /// Create missing parent directories.
    #[arg(long)]
    pub parents: bool,
    #[command(flatten)]
    pub write: WriteOptions,
    #[command(flatten)]
    pub limit: DocumentLimit,
}

/// Append a value to the array at a JSON Pointer, under the lock.
#[derive(Debug, Args)]
#[command(
    after_help = "Creates a missing file and array. Prints {\"index\":N,\"version\":\"...\"}.\n\nExamples:\n  statefile append view/resData.json /cases '{\"id\": 7}'\n  statefile append --string log.json /lines \"build finished\""
)]
pub struct AppendArgs {
    #[arg(help = FILE)]
    pub file: PathBuf,
    /// RFC 6901 pointer to the array, e.g. /cases ("" if the document is the array).
    pub pointer: String,
    /// The element to append as JSON, e.g. '{"id": 7}' (with --string: any text).
    pub json: String,
    #[command(flatten)]
    pub edit: EditOptions,
}

/// Remove the value at a JSON Pointer, or the whole document.
#[derive(Debug, Args)]
#[command(
    after_help = "Without POINTER the document is moved to its backup (undo with `statefile restore`).\n\nExamples:\n  statefile rm jobs/42.json /tmp_token\n  statefile rm jobs/42.json\n  statefile rm --all jobs/42.json        # also its backups and lock file: not undoable"
)]
pub struct RmArgs {
    #[arg(help = FILE)]
    pub file: PathBuf,
    /// RFC 6901 pointer to the value to remove, e.g. /tmp_token (omitted: the document).
    pub pointer: Option<String>,
    /// Also delete the backups and the lock file (not undoable).
    #[arg(long, conflicts_with = "pointer")]
    pub all: bool,
    #[command(flatten)]
    pub write: WriteOptions,
    #[command(flatten)]
    pub limit: DocumentLimit,
}

/// Apply a patch from stdin under the lock: RFC 7396 merge patch, or RFC 6902.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  echo '{\"status\":\"done\",\"tmp\":null}' | statefile patch jobs/42.json\n  echo '[{\"op\":\"add\",\"path\":\"/tags/-\",\"value\":\"x\"}]' | statefile patch --json-patch jobs/42.json"
)]
pub struct PatchArgs {
    #[arg(help = FILE)]
    pub file: PathBuf,
    /// Read an RFC 6902 JSON Patch (an array of operations) instead of a merge patch.
    #[arg(long)]
    pub json_patch: bool,
    /// Only apply if the current version is this one (bare hex or its quoted ETag; a
    /// weak W/ tag never matches and is refused, exit 2).
    #[arg(long, value_name = "VERSION")]
    pub if_match: Option<Version>,
    /// Create missing parent directories (merge patch only).
    #[arg(long)]
    pub parents: bool,
    /// Refuse a JSON Patch of more operations than this (exit 2).
    #[arg(long, value_name = "N", default_value_t = statefile::patch::DEFAULT_MAX_OPERATIONS)]
    pub max_ops: usize,
    /// Refuse a patch that would make the document larger than this many bytes of
    /// compact JSON, or than it already is (exit 1, checked before each operation).
    #[arg(long, value_name = "BYTES", default_value_t = statefile::patch::DEFAULT_MAX_RESULT_BYTES)]
    pub max_size: usize,
    #[command(flatten)]
    pub write: WriteOptions,
    #[command(flatten)]
    pub limit: DocumentLimit,
}

/// Print a document's version: the SHA-256 of its bytes, the same as its HTTP ETag.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  v=$(statefile version config.json) && edit ... && statefile put --if-match \"$v\" config.json < new.json"
)]
pub struct VersionArgs {
    #[arg(help = FILE)]
    pub file: PathBuf,
    #[command(flatten)]
    pub limit: DocumentLimit,
}

/// Check documents: parse, stale temp files, backups. Exit 5 if anything needs repair.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  statefile verify ./data\n  statefile verify --json ./data | jq .findings"
)]
pub struct VerifyArgs {
    /// Documents or directories to check (directories: every document in the tree).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub limit: DocumentLimit,
}

/// Repair what verify reports: restore damaged documents, remove stale temp files.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  statefile recover --dry-run ./data\n  statefile recover ./data"
)]
pub struct RecoverArgs {
    /// Documents or directories to repair (directories: every document in the tree).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Show what would be done, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub write: WriteOptions,
    #[command(flatten)]
    pub limit: DocumentLimit,
}

/// Journal mode for a store: a durable write costs one flush of the store's journal.
#[derive(Debug, Args)]
#[command(
    after_help = "Once enabled, every statefile writer in the tree (library, CLI, server, any process) \
                  finds the journal and commits through it; the documents stay plain JSON files.\n\n\
                  Examples:\n  statefile journal enable ./data\n  statefile journal status ./data\n  \
                  statefile journal disable ./data"
)]
pub struct JournalArgs {
    #[command(subcommand)]
    pub action: JournalAction,
}

/// What `statefile journal` does.
#[derive(Debug, Subcommand)]
pub enum JournalAction {
    /// Create DIR/.statefile/journal (preallocated): every writer in DIR's tree uses it.
    Enable {
        /// The store's root directory.
        dir: PathBuf,
        /// Bytes of the journal's ring (suffixes K, M, G; at least 16K). A document
        /// larger than a quarter of it is written without the journal.
        #[arg(long, default_value = "16M", value_parser = size)]
        size: u64,
        /// Commit by swapping the new file in (renameat2 RENAME_EXCHANGE) instead of
        /// renaming it over the document: 7.5x the durable writes per second on an ext4
        /// without a journal, which writes a file renamed over another out at once (no
        /// gain measured on an ext4 with one). But after a power
        /// loss, a document written in the last seconds may be empty or older on disk
        /// until statefile opens the store (or reads or writes it) and replays the
        /// journal: for stores that only statefile reads. Kept until `disable`.
        #[arg(long)]
        swap: bool,
        /// Print the journal's state as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Checkpoint (every document durable in its own file), then remove the journal.
    Disable {
        /// The store's root directory.
        dir: PathBuf,
        #[command(flatten)]
        write: LockTimeout,
    },
    /// Make the documents the journal covers durable in their files; reuse its space.
    Checkpoint {
        /// The store's root directory.
        dir: PathBuf,
        #[command(flatten)]
        write: LockTimeout,
    },
    /// Show the journal governing PATH: checkpoint, records, documents to replay, damage.
    /// Exit 4 if PATH is not in journal mode, 8 if the journal may not be read, 5 if
    /// something needs `statefile recover` or a person's look (a record a replay skips,
    /// a document this user may not read, listed as "not checked").
    Status {
        /// A directory or document in the store.
        path: PathBuf,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Apply a JSON array of operations (read from stdin) to documents of DIR as one
/// transaction: all or nothing, even across a crash. Prints each operation's result.
#[derive(Debug, Args)]
#[command(
    after_help = "DIR must be in journal mode (statefile journal enable DIR). Operations, each with an \
                  optional \"if_match\": \"<version>\" (or its ETag; a weak W/ tag is refused) or \"if_none_match\": \"*\":\n  \
                  {\"op\": \"put\", \"doc\": \"a.json\", \"value\": ...}\n  \
                  {\"op\": \"patch\", \"doc\": \"b.json\", \"merge\": {...}}   (or \"json_patch\": [...])\n  \
                  {\"op\": \"append\", \"doc\": \"c.json\", \"pointer\": \"/items\", \"value\": ...}\n  \
                  {\"op\": \"delete\", \"doc\": \"d.json\"}\n  \
                  {\"op\": \"get\", \"doc\": \"e.json\"}   (read under the transaction's locks)\n\n\
                  The operations apply in order, each to the documents as the ones before it left them: \
                  after a put, patch or append of a document, \"if_none_match\" fails and \"if_match\" holds only \
                  for the version of the bytes written (the version the transaction reports for it); after a \
                  delete, \"if_none_match\" holds and \"if_match\" fails.\n\
                  A failed precondition exits 3 naming the document and the operation (counted from 0); nothing \
                  is written.\n\n\
                  Example:\n  echo '[{\"op\":\"delete\",\"doc\":\"queue/7.json\"},\
                  {\"op\":\"put\",\"doc\":\"jobs/7.json\",\"value\":{\"state\":\"running\"}}]' | statefile tx ./data"
)]
pub struct TxArgs {
    /// The store (in journal mode) the documents are named relative to.
    pub dir: PathBuf,
    /// Create missing parent directories of the documents written (inside DIR).
    #[arg(long)]
    pub parents: bool,
    #[command(flatten)]
    pub write: WriteOptions,
    #[command(flatten)]
    pub limit: DocumentLimit,
}

/// `--lock-timeout` alone, for commands that wait for locks but write no document.
#[derive(Debug, Args)]
pub struct LockTimeout {
    /// Seconds to wait for a lock before failing (exit 6).
    #[arg(long, env = "STATEFILE_LOCK_TIMEOUT", default_value = "10", value_parser = seconds)]
    pub lock_timeout: Duration,
}

/// A byte count with an optional K, M or G suffix (powers of 1024).
pub fn size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (digits, shift) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 10),
        Some((i, 'm' | 'M')) => (&t[..i], 20),
        Some((i, 'g' | 'G')) => (&t[..i], 30),
        _ => (t, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size (a number of bytes, or with K, M or G)"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// List a document's kept versions, newest (1) first.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  statefile backups config.json")]
pub struct BackupsArgs {
    #[arg(help = FILE)]
    pub file: PathBuf,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub limit: DocumentLimit,
}

/// Restore a kept version (itself an atomic write, so it can be undone the same way).
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  statefile restore config.json            # the newest backup that parses\n  statefile restore config.json --from 2\n  statefile restore config.json --from 9f86d08..."
)]
pub struct RestoreArgs {
    #[arg(help = FILE)]
    pub file: PathBuf,
    /// A backup number (1 = newest) or a version, as `statefile backups` lists them
    /// (omitted: the newest backup that parses).
    #[arg(long, value_name = "N|VERSION", allow_negative_numbers = true)]
    pub from: Option<BackupRef>,
    #[command(flatten)]
    pub write: WriteOptions,
    #[command(flatten)]
    pub limit: DocumentLimit,
}

/// Serve a directory of documents over HTTP (see README: the HTTP API), or the documents
/// of a PostgreSQL database, which any number of servers can share.
#[derive(Debug, Args)]
#[command(
    after_help = SERVE_AFTER_HELP,
    mut_arg("lock_timeout", |a| a.help(
        "Seconds a write waits for another writer's lock before its request fails with 503 \
         lock-timeout (with Retry-After)"
    )),
)]
pub struct ServeArgs {
    /// The directory of documents to serve; a document's name is its path under it. It
    /// must exist, unless --create is given.
    pub dir: Option<PathBuf>,
    /// Create DIR (and its parents) if it does not exist.
    #[arg(long)]
    pub create: bool,
    /// Serve the documents of this PostgreSQL database instead of a directory: a URL, or
    /// key=value pairs (host=HOST dbname=DB ...). TLS as libpq: sslmode=disable, prefer
    /// (the default), require, verify-ca or verify-full; sslrootcert=FILE or system;
    /// sslcert and sslkey. What it leaves out comes from PGHOST, PGPORT, PGUSER,
    /// PGPASSWORD, PGDATABASE, PGSSLMODE... and ~/.pgpass, as with libpq: postgres://
    /// alone takes everything from them. Keep a password off the command line, which
    /// other users of the machine can read (STATEFILE_BACKEND, PGPASSWORD, ~/.pgpass).
    #[arg(
        long,
        env = "STATEFILE_BACKEND",
        value_name = "postgres://USER@HOST:PORT/DB",
        hide_env_values = true
    )]
    pub backend: Option<String>,
    /// Database connections this server holds at most (PostgreSQL backend; 1 to 256).
    #[arg(long, default_value_t = 16)]
    pub pool_size: usize,
    /// Address to listen on: an IP address or a host name (every address it resolves to,
    /// e.g. both loopbacks for localhost), and a port (0: any free one).
    #[arg(long, default_value = "127.0.0.1:7878", value_name = "HOST:PORT")]
    pub addr: String,
    /// Require `Authorization: Bearer TOKEN` on every route but /healthz.
    #[arg(long, env = "STATEFILE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// How log lines on stderr look: text, or one JSON object per line for log shippers.
    /// By default a line at start and one per request (method, route, status, duration,
    /// request id); -q only errors, -v more.
    #[arg(long, value_enum, default_value = "text", value_name = "FORMAT")]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub limits: ServeLimits,
    #[command(flatten)]
    pub write: WriteOptions,
}

/// Copy a directory's documents, with their backups, into a PostgreSQL database, and
/// check each version there. Re-runnable: what already matches is left alone.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  statefile import ./data --to postgres://statefile@db.internal/statefile\n  statefile import ./data --to \"$DATABASE_URL\" --json\n\nDocuments only in the database are left alone; one that differs is replaced there,\nwith its backups, in one transaction. Deleted documents (backups left) are copied as\ndeleted documents with their backups. Exit 0 when every document matches, 1 if any failed."
)]
pub struct ImportArgs {
    /// The directory of documents.
    pub dir: PathBuf,
    /// The database: postgres://USER@HOST:PORT/DB, or host=HOST dbname=DB ... (TLS
    /// settings as for serve --backend).
    #[arg(long, value_name = "postgres://USER@HOST:PORT/DB")]
    pub to: String,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub limit: DocumentLimit,
}

/// Copy a PostgreSQL database's documents, with their backups, into a directory, and
/// check each version there. Re-runnable: what already matches is left alone.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  statefile export postgres://statefile@db.internal/statefile --to ./data\n\nEach version is written through the library (atomic, durable, the older versions as\nbackups); a deleted document (backups left) is then deleted, keeping them. Exit 0 when\nevery document matches, 1 if any failed."
)]
pub struct ExportArgs {
    /// The database: postgres://USER@HOST:PORT/DB, or host=HOST dbname=DB ... (TLS
    /// settings as for serve --backend).
    #[arg(value_name = "postgres://USER@HOST:PORT/DB")]
    pub from: String,
    /// The directory to write into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub write: WriteOptions,
    #[command(flatten)]
    pub limit: DocumentLimit,
}

/// `serve --log-format`: human-readable lines, or one JSON object per line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// What `serve` lets one client, request or document hold (docs/design.md's "Limits and
/// hostile input" has a row for each).
#[derive(Debug, Args)]
#[command(next_help_heading = "Limits")]
pub struct ServeLimits {
    /// Largest accepted request body (beyond it: 413). Sizes take K, M, G (powers of 1024).
    #[arg(long, default_value = "16M", value_name = "BYTES", value_parser = bytes)]
    pub max_body: usize,
    /// Memory for request bodies held at once, counting the values they parse into; more
    /// requests wait their turn, and one body that could need more is refused (413). At
    /// least 4 times --max-body.
    #[arg(long, default_value = "2G", value_name = "BYTES", value_parser = bytes)]
    pub max_body_memory: usize,
    /// Largest document read into memory or written. A stored document over it (a file
    /// another program put there) is 422 document-too-large at once, never read; a PUT
    /// may replace it. At least --max-body: any body a client may send fits, in the
    /// form it was sent; a write whose stored form is larger (documents are stored
    /// pretty-printed unless --compact) is 422 too, nothing written.
    #[arg(long, default_value = DEFAULT_MAX_DOCUMENT, value_name = "BYTES", value_parser = bytes)]
    pub max_document: usize,
    /// Seconds a request may take, waiting for its turn included (then: 503 and
    /// Retry-After, nothing written; a write already handed to the storage is answered
    /// when it ends, as it ended).
    #[arg(long, default_value = "30", value_name = "SECONDS", value_parser = seconds,
          allow_negative_numbers = true)]
    pub request_timeout: Duration,
    /// Seconds to receive a request body (then: 408, connection closed, nothing changed).
    #[arg(long, default_value = "20", value_name = "SECONDS", value_parser = seconds,
          allow_negative_numbers = true)]
    pub body_timeout: Duration,
    /// Seconds a connection may take to send a request head, from when it opens or from
    /// the previous answer (then it is closed): bounds idle and slow clients.
    #[arg(long, default_value = "10", value_name = "SECONDS", value_parser = seconds,
          allow_negative_numbers = true)]
    pub header_timeout: Duration,
    /// Connections open at once; more wait to be accepted. Lowered at start to fit the
    /// open-file limit, which is raised to its hard limit where allowed.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub max_connections: usize,
    /// Storage operations at once; more wait in a queue.
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub concurrency: usize,
    /// Writes at once to one document; more wait in that document's queue, without
    /// holding up other documents or reads.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub doc_concurrency: usize,
    /// Operations in one JSON Patch (beyond: 413, checked before the document is locked).
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub max_patch_ops: usize,
}

/// `serve --help`'s epilogue: the answers, examples, and the most memory the limits allow.
const SERVE_AFTER_HELP: &str = "\
Answers are HTTP statuses, errors as problem+json (README: the HTTP service): 400 a bad
name, JSON, pointer or precondition, or a request that is not valid HTTP/1.1; 401 no
token; 404; 405; 408 a body too slow; 412 If-Match or If-None-Match did not hold; 413 a
body or patch too large; 414; 415; 422 a patch or append that does not apply; 431 a
request head over 64 KiB; 503 the lock or the request timed out (Retry-After); 507 no
space; 500 a damaged document, a permission or durability problem; 422 also a document
over --max-document (document-too-large). The process exits 0 after SIGTERM or Ctrl-C
(requests in flight finish), 1 if it cannot start.

Memory, worst case: the request bodies held at once, with the values they parse into,
stay within --max-body-memory (2 GiB by default); each open connection holds at most
64 KiB of request head (64 MiB for 1024 connections); each storage operation holds the
document it works on, at most --max-document (up to --concurrency of them). Documents are written by streaming,
not held twice.

Examples:
  statefile serve ./data
  STATEFILE_TOKEN=s3cret statefile serve ./data --addr 0.0.0.0:7878
  statefile serve --backend postgres://statefile@db.internal/statefile --addr 0.0.0.0:7878 --token \"$T\"
  statefile serve ./data --max-body 1M --max-body-memory 256M --max-connections 256

Without DIR or --backend, DATABASE_URL names the database.";

/// Print a shell completion script.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  statefile completions bash > /etc/bash_completion.d/statefile")]
pub struct CompletionsArgs {
    /// The shell to write the script for.
    pub shell: clap_complete::Shell,
}
