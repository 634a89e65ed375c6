//! The command line: names and arguments here are an interface scripts depend on.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The top-level help's epilogue: a few examples, then the exit codes.
const AFTER_HELP: &str = "\
Examples:
  echo '{\"status\":\"queued\"}' | statefile put jobs/42.json
  statefile get --raw jobs/42.json /status
  statefile append jobs/42.json /events '{\"at\":\"12:00\",\"what\":\"started\"}'
  statefile verify ./jobs || statefile recover ./jobs

Exit codes:
  0  success
  1  other error (I/O, a patch or append that does not apply, a value that cannot be stored)
  2  usage error (bad arguments, invalid JSON input or pointer, invalid name)
  3  conflict (--if-match did not match, --create found the file)
  4  not found (the file, a backup, or the value at the pointer)
  5  corrupt (the file is damaged; for verify and recover: something needs repair)
  6  lock timeout (another writer held the lock too long)
  7  no space left on the device
  8  permission denied
  9  durability unknown (the new version was renamed into place, the directory sync failed)

Environment: STATEFILE_DURABILITY, STATEFILE_BACKUPS, STATEFILE_LOCK_TIMEOUT set the
defaults of the global options; STATEFILE_LOG sets the log filter (e.g. debug).";

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

#[derive(Debug, Args)]
pub struct Global {
    /// How hard writes work to survive a power loss: full (fsync file and directory),
    /// data (fdatasync the file only), none (no syncs; for caches and tests).
    #[arg(long, global = true, env = "STATEFILE_DURABILITY", default_value = "full",
          value_parser = ["full", "data", "none"])]
    pub durability: String,
    /// Previous versions to keep as .NAME.bak, .NAME.bak.2, ... (0 turns backups off).
    #[arg(long, global = true, env = "STATEFILE_BACKUPS", default_value_t = 1)]
    pub backups: usize,
    /// Seconds to wait for another writer's lock before failing with exit code 6.
    #[arg(
        long,
        global = true,
        env = "STATEFILE_LOCK_TIMEOUT",
        default_value_t = 10.0
    )]
    pub lock_timeout: f64,
    /// Print nothing but errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Log more (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

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
    /// Print a document, or the value at a JSON Pointer.
    #[command(
        after_help = "Examples:\n  statefile get jobs/42.json\n  statefile get --raw jobs/42.json /status\n  statefile get --fallback config.json   # a damaged file reads as its newest good backup"
    )]
    Get {
        file: PathBuf,
        /// RFC 6901 pointer, e.g. /servers/0/host ("" or omitted: the whole document).
        pointer: Option<String>,
        #[command(flatten)]
        output: Output,
        /// Print a string value without quotes.
        #[arg(long)]
        raw: bool,
        /// If the file is damaged, print its newest backup that parses (and say so on stderr).
        #[arg(long)]
        fallback: bool,
    },
    /// Replace a document with JSON read from stdin, atomically. Prints the new version.
    #[command(
        after_help = "Examples:\n  echo '{\"status\":\"queued\"}' | statefile put jobs/42.json\n  statefile put --if-match \"$v\" config.json < new.json   # only if unchanged since $v\n  statefile put --create --parents jobs/43.json < job.json"
    )]
    Put {
        file: PathBuf,
        /// Only replace if the current version is this one (bare hex or a quoted ETag).
        #[arg(long, value_name = "VERSION")]
        if_match: Option<String>,
        /// Fail (exit 3) if the file already exists.
        #[arg(long, conflicts_with = "if_match")]
        create: bool,
        /// Create missing parent directories.
        #[arg(long)]
        parents: bool,
    },
    /// Set the value at a JSON Pointer, under the lock (read-modify-write).
    #[command(
        after_help = "Creates a missing file (as {}) and missing intermediate objects.\n\nExamples:\n  statefile set jobs/42.json /status '\"running\"'\n  statefile set --string jobs/42.json /status running\n  statefile set config.json /limits/max 10"
    )]
    Set {
        file: PathBuf,
        pointer: String,
        /// The JSON value (with --string: taken as a string).
        json: String,
        /// Take JSON as a plain string.
        #[arg(long)]
        string: bool,
        /// Create missing parent directories.
        #[arg(long)]
        parents: bool,
    },
    /// Append a value to the array at a JSON Pointer, under the lock.
    #[command(
        after_help = "Creates a missing file and array. Prints {\"index\":N,\"version\":\"...\"}.\n\nExamples:\n  statefile append view/resData.json /cases '{\"id\": 7}'\n  statefile append --string log.json /lines \"build finished\""
    )]
    Append {
        file: PathBuf,
        pointer: String,
        json: String,
        /// Take JSON as a plain string.
        #[arg(long)]
        string: bool,
        /// Create missing parent directories.
        #[arg(long)]
        parents: bool,
    },
    /// Remove the value at a JSON Pointer, or the whole document.
    #[command(
        after_help = "Without POINTER the document is moved to its backup (undo with `statefile restore`).\n\nExamples:\n  statefile rm jobs/42.json /tmp_token\n  statefile rm jobs/42.json\n  statefile rm --all jobs/42.json        # also its backups and lock file: not undoable"
    )]
    Rm {
        file: PathBuf,
        pointer: Option<String>,
        /// Also delete the backups and the lock file (not undoable).
        #[arg(long, conflicts_with = "pointer")]
        all: bool,
    },
    /// Apply a patch from stdin under the lock: RFC 7396 merge patch, or RFC 6902.
    #[command(
        after_help = "Examples:\n  echo '{\"status\":\"done\",\"tmp\":null}' | statefile patch jobs/42.json\n  echo '[{\"op\":\"add\",\"path\":\"/tags/-\",\"value\":\"x\"}]' | statefile patch --json-patch jobs/42.json"
    )]
    Patch {
        file: PathBuf,
        /// Read an RFC 6902 JSON Patch (an array of operations) instead of a merge patch.
        #[arg(long)]
        json_patch: bool,
        /// Only apply if the current version is this one.
        #[arg(long, value_name = "VERSION")]
        if_match: Option<String>,
        /// Create missing parent directories (merge patch only).
        #[arg(long)]
        parents: bool,
    },
    /// Print a document's version: the SHA-256 of its bytes, the same as its HTTP ETag.
    #[command(
        after_help = "Example:\n  v=$(statefile version config.json) && edit ... && statefile put --if-match \"$v\" config.json < new.json"
    )]
    Version { file: PathBuf },
    /// Check documents: parse, stale temp files, backups. Exit 5 if anything needs repair.
    #[command(
        after_help = "Examples:\n  statefile verify ./data\n  statefile verify --json ./data | jq .findings"
    )]
    Verify {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Repair what verify reports: restore damaged documents, remove stale temp files.
    #[command(
        after_help = "Examples:\n  statefile recover --dry-run ./data\n  statefile recover ./data"
    )]
    Recover {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Show what would be done, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List a document's kept versions, newest (1) first.
    #[command(after_help = "Example:\n  statefile backups config.json")]
    Backups {
        file: PathBuf,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Restore a kept version (itself an atomic write, so it can be undone the same way).
    #[command(
        after_help = "Examples:\n  statefile restore config.json            # the newest backup that parses\n  statefile restore config.json --from 2\n  statefile restore config.json --from 9f86d08..."
    )]
    Restore {
        file: PathBuf,
        /// A backup number (1 = newest) or a version.
        #[arg(long, value_name = "N|VERSION")]
        from: Option<String>,
    },
    /// Serve a directory of documents over HTTP (see README: the HTTP API).
    #[command(
        after_help = "Examples:\n  statefile serve ./data\n  STATEFILE_TOKEN=s3cret statefile serve ./data --addr 0.0.0.0:7878"
    )]
    Serve {
        dir: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7878", value_name = "HOST:PORT")]
        addr: std::net::SocketAddr,
        /// Require `Authorization: Bearer TOKEN` on every route but /healthz.
        #[arg(long, env = "STATEFILE_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Largest accepted request body, in bytes.
        #[arg(long, default_value_t = 16 * 1024 * 1024)]
        max_body: usize,
        /// Seconds before a request is answered with a timeout.
        #[arg(long, default_value_t = 30.0)]
        request_timeout: f64,
        /// Requests handled at once (more wait in a queue).
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
    },
    /// Print a shell completion script.
    #[command(
        after_help = "Example:\n  statefile completions bash > /etc/bash_completion.d/statefile"
    )]
    Completions { shell: clap_complete::Shell },
}
