//! Help that fits each command: every positional argument described, the write options
//! only on the commands that write, and what to do next when a document is damaged.

use crate::common::Sandbox;

/// The commands that write documents to files, and so take the write options.
const WRITERS: [&str; 10] = [
    "put", "set", "append", "patch", "rm", "restore", "recover", "serve", "export", "tx",
];
/// The others: they read files, or write only to a database (`import`).
const READERS: [&str; 6] = [
    "get",
    "version",
    "verify",
    "backups",
    "import",
    "completions",
];
/// Commands made of subcommands (`statefile journal enable ...`): each subcommand's help
/// is checked in `subcommands_describe_their_arguments`.
const GROUPS: [&str; 1] = ["journal"];

#[test]
fn every_command_is_in_one_of_the_lists_above() {
    // A new command must be sorted here, so the tests below cover its help.
    let help = Sandbox::new().run(&["--help"]).ok().stdout;
    let commands: Vec<&str> = section(&help, "Commands:")
        .iter()
        .filter(|l| !l.starts_with("   ")) // not a wrapped description
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    for c in &commands {
        assert!(
            WRITERS.contains(c) || READERS.contains(c) || GROUPS.contains(c),
            "sort `statefile {c}` into WRITERS, READERS or GROUPS"
        );
    }
    assert_eq!(
        commands.len(),
        WRITERS.len() + READERS.len() + GROUPS.len(),
        "{commands:?}"
    );
}

/// The lines of a help section (`Arguments:`, `Write options:` ...), up to the next one.
fn section<'a>(help: &'a str, title: &str) -> Vec<&'a str> {
    help.lines()
        .skip_while(|l| *l != title)
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with(' '))
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn every_positional_argument_is_described() {
    let s = Sandbox::new();
    for cmd in WRITERS.iter().chain(&READERS) {
        let help = s.run(&[cmd, "--help"]).ok().stdout;
        let args = section(&help, "Arguments:");
        assert!(!args.is_empty(), "{cmd} --help lists no arguments:\n{help}");
        for line in args {
            // "  <FILE>  The JSON document ...": a name, then a description.
            let t = line.trim_start();
            if t.starts_with('<') || t.starts_with('[') {
                let (name, text) = t.split_once("  ").unwrap_or((t, ""));
                assert!(
                    text.trim().len() > 10,
                    "{cmd}: {name} is not described:\n{help}"
                );
            }
        }
    }
    let get = s.run(&["get", "--help"]).ok().stdout;
    assert!(get.contains("<FILE>     The JSON document"), "{get}");
    assert!(get.contains("[POINTER]  RFC 6901 pointer"), "{get}");
    let set = s.run(&["set", "--help"]).ok().stdout;
    assert!(set.contains("<JSON>     The new value as JSON"), "{set}");
    let verify = s.run(&["verify", "--help"]).ok().stdout;
    assert!(
        verify.contains("<PATH>...  Documents or directories"),
        "{verify}"
    );
    let serve = s.run(&["serve", "--help"]).ok().stdout;
    assert!(
        serve.contains("DIR]  The directory of documents"),
        "{serve}"
    );
}

#[test]
fn subcommands_describe_their_arguments() {
    let s = Sandbox::new();
    for group in GROUPS {
        let help = s.run(&[group, "--help"]).ok().stdout;
        let subs: Vec<&str> = section(&help, "Commands:")
            .iter()
            .filter(|l| !l.starts_with("   "))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|c| *c != "help")
            .collect();
        assert!(
            !subs.is_empty(),
            "{group} --help lists no subcommands:\n{help}"
        );
        for sub in subs {
            let help = s.run(&[group, sub, "--help"]).ok().stdout;
            let args = section(&help, "Arguments:");
            assert!(
                !args.is_empty(),
                "{group} {sub} --help lists no arguments:\n{help}"
            );
            for line in args {
                let t = line.trim_start();
                let (name, text) = t.split_once("  ").unwrap_or((t, ""));
                assert!(
                    text.trim().len() > 10,
                    "{group} {sub}: {name} is not described:\n{help}"
                );
            }
        }
    }
}

#[test]
fn write_options_show_only_where_they_matter() {
    let s = Sandbox::new();
    let top = s.run(&["--help"]).ok().stdout;
    assert!(!top.contains("--durability <"), "top-level options:\n{top}");
    assert!(
        top.contains("Commands that write take --durability, --backups and --lock-timeout"),
        "{top}"
    );
    for cmd in WRITERS {
        let help = s.run(&[cmd, "--help"]).ok().stdout;
        let write = section(&help, "Write options:").join("\n");
        for option in [
            "--durability <DURABILITY>",
            "--backups <N>",
            "--lock-timeout <SECONDS>",
        ] {
            assert!(
                write.contains(option),
                "{cmd} --help lacks {option}:\n{help}"
            );
        }
        assert!(
            write.contains("[possible values: full, data, none]"),
            "{help}"
        );
    }
    for cmd in READERS {
        let help = s.run(&[cmd, "--help"]).ok().stdout;
        assert!(!help.contains("Write options"), "{cmd} --help:\n{help}");
        assert!(!help.contains("--durability"), "{cmd} --help:\n{help}");
        assert!(!help.contains("--lock-timeout"), "{cmd} --help:\n{help}");
    }
    // -q and -v everywhere, under their own heading.
    for cmd in WRITERS.iter().chain(&READERS) {
        let help = s.run(&[cmd, "--help"]).ok().stdout;
        let global = section(&help, "Global options:").join("\n");
        assert!(
            global.contains("--quiet") && global.contains("--verbose"),
            "{cmd}: {help}"
        );
    }
    // The lock timeout in the terms of each: an exit code for a command, a status for
    // the server.
    let put = words(&section(
        &s.run(&["put", "--help"]).ok().stdout,
        "Write options:",
    ));
    assert!(put.contains("lock before giving up (exit code 6)"), "{put}");
    let serve = words(&section(
        &s.run(&["serve", "--help"]).ok().stdout,
        "Write options:",
    ));
    assert!(
        serve.contains("lock before its request fails with 503"),
        "{serve}"
    );
    assert!(!serve.contains("exit code"), "{serve}");
}

/// The text of help lines with the wrapping undone.
fn words(lines: &[&str]) -> String {
    lines
        .join(" ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn a_damaged_document_says_what_to_do_next() {
    let s = Sandbox::new();
    // No backup at all.
    s.run_in(&["put", "--backups", "0", "alone.json"], b"{}")
        .ok();
    s.write("alone.json", b"{\"cut");
    for args in [
        &["get", "alone.json"][..],
        &["get", "--fallback", "alone.json"],
        &["set", "alone.json", "/a", "1"],
    ] {
        s.run(args)
            .code(5)
            .stderr_has("help: no backup to restore: fix alone.json by hand")
            .stderr_has("`statefile put alone.json < good.json`")
            .stderr_has("(kept as .alone.json.corrupt) with `statefile rm alone.json`");
    }
    // The advice works: rm keeps the damage aside, put starts over.
    s.run(&["rm", "alone.json"]).ok();
    assert_eq!(s.read(".alone.json.corrupt"), b"{\"cut");
    // A good backup: read it or restore it.
    s.run_in(&["put", "kept.json"], b"1").ok();
    s.run_in(&["put", "kept.json"], b"2").ok();
    s.write("kept.json", b"");
    for args in [
        &["get", "kept.json"][..],
        &["append", "kept.json", "/l", "1"],
    ] {
        s.run(args).code(5).stderr_has(
            "help: backup 1 is good: print it with `statefile get --fallback kept.json`, or put it back with `statefile recover kept.json`",
        );
    }
    // Backups that are all damaged too; names that need quoting are quoted.
    s.run_in(&["put", "--backups", "2", "my job.json"], b"1")
        .ok();
    s.run_in(&["put", "--backups", "2", "my job.json"], b"2")
        .ok();
    s.run_in(&["put", "--backups", "2", "my job.json"], b"3")
        .ok();
    for f in ["my job.json", ".my job.json.bak", ".my job.json.bak.2"] {
        s.write(f, b"[");
    }
    s.run(&["get", "--fallback", "my job.json"])
        .code(5)
        .stderr_has("help: no good backup (all 2 kept are damaged too): fix 'my job.json' by hand")
        .stderr_has("`statefile rm 'my job.json'`");
}

// Regression (issue #10, help that fits): the library's message for a damaged document
// said "restore it from a backup first" with no backup to restore, and "a backup exists:
// <absolute path>; read with fallback" when that backup was damaged too. Each case now
// says what is true, and names the document as the user did: a read, and an update too
// (a group commit's batch names it as each of its callers did).
#[test]
fn a_damaged_documents_message_is_true_in_each_case() {
    let s = Sandbox::new();
    let root = s.dir.path().display().to_string();
    let check_in = |args: &[&str], stdin: &[u8], first: &str, absent: &[&str]| {
        let run = s.run_in(args, stdin).code(5);
        let line = run.stderr.lines().next().unwrap_or_default().to_string();
        assert!(line.contains(first), "{args:?}: {line}");
        for a in absent {
            assert!(!line.contains(a), "{args:?} says {a:?}: {line}");
        }
        assert!(
            !run.stderr.contains(&root),
            "{args:?}: an absolute path: {}",
            run.stderr
        );
    };
    let check = |args: &[&str], first: &str, absent: &[&str]| check_in(args, b"", first, absent);
    std::fs::create_dir(s.path("sub")).unwrap();
    s.run_in(&["put", "--backups", "0", "sub/a.json"], b"{}")
        .ok();
    s.write("sub/a.json", b"{\"cut");
    let none = "(it has no backup: replace it with a write, or fix it by hand)";
    check(
        &["get", "sub/a.json"],
        "statefile: sub/a.json is corrupt: ",
        &["restore"],
    );
    check(&["get", "sub/a.json"], none, &[]);
    let cut =
        format!("cannot update sub/a.json: EOF while parsing a string at line 1 column 5 {none}");
    check(
        &["set", "sub/a.json", "/k", "1"],
        &cut,
        &["restore", "recover"],
    );
    check(
        &["append", "sub/a.json", "/l", "1"],
        &cut,
        &["restore", "recover"],
    );
    check_in(
        &["patch", "sub/a.json"],
        br#"{"k": 1}"#,
        &cut,
        &["restore", "recover"],
    );
    check_in(
        &["patch", "--json-patch", "sub/a.json"],
        br#"[{"op": "add", "path": "/k", "value": 1}]"#,
        &cut,
        &["restore", "recover"],
    );
    // A good backup: named by its number, and how to use it.
    s.run_in(&["put", "b.json"], b"1").ok();
    s.run_in(&["put", "b.json"], b"2").ok();
    s.write("b.json", b"[");
    check(
        &["get", "b.json"],
        "(backup 1 is good: read it with fallback, or put it back with `statefile recover`)",
        &[],
    );
    check(
        &["set", "b.json", "/k", "1"],
        "(backup 1 is good: update the version a fallback read serves, or put it back with `statefile recover`)",
        &[],
    );
    // Printed with --fallback: the backup by number and name, not by absolute path.
    let run = s.run(&["get", "--fallback", "b.json"]).ok();
    assert_eq!(run.stdout.trim(), "1");
    assert_eq!(
        run.stderr,
        "statefile: b.json is damaged (EOF while parsing a list); printing its backup 1 (.b.json.bak)\n"
    );
    // Its backup damaged too: no advice to read or restore it.
    s.write(".b.json.bak", b"[");
    let bad = "(no backup of it parses either: replace it with a write, or fix it by hand)";
    for args in [&["get", "b.json"][..], &["set", "b.json", "/k", "1"]] {
        check(args, bad, &["read with fallback", "recover`"]);
    }
}
