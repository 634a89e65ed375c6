//! `statefile journal` and what `verify` / `recover` say in journal mode (issue 14).

use serde_json::{Value, json};

use crate::common::{Run, Sandbox};

#[test]
fn enable_write_verify_replay_disable() {
    let s = Sandbox::new();
    let out = s.run(&["journal", "enable", "--size", "64K", "."]).ok();
    assert!(out.stdout.contains("journal mode"), "{}", out.stdout);
    assert!(s.path(".statefile/journal").is_file());
    s.run(&["journal", "enable", "--size", "1x", "."]).code(2);

    s.run_in(&["put", "a.json"], b"{\"v\": 1}").ok();
    let old = s.read("a.json");
    s.run_in(&["put", "a.json"], b"{\"v\": 2}").ok();
    let st: Value =
        serde_json::from_str(&s.run(&["journal", "status", "--json", "."]).ok().stdout).unwrap();
    assert_eq!(st["records"], json!(2), "{st}");
    assert_eq!(st["needs_repair"], json!(false));
    let out = s.run(&["verify", "."]).ok();
    assert!(
        out.stdout.contains("2 records since the checkpoint"),
        "{}",
        out.stdout
    );

    // The rename did not reach the disk before a power loss: the old bytes are back.
    s.write("a.json", &old);
    let out = s.run(&["verify", "."]).code(5);
    assert!(
        out.stdout
            .contains("not yet what its last journal record says"),
        "{}",
        out.stdout
    );
    let out = s.run(&["journal", "status", "."]).code(5);
    assert!(out.stdout.contains("to replay"), "{}", out.stdout);
    let out = s.run(&["recover", "."]).ok();
    assert!(
        out.stdout.contains("replayed from the journal"),
        "{}",
        out.stdout
    );
    assert_eq!(s.json("a.json"), json!({"v": 2}));
    s.run(&["verify", "."]).ok();

    // recover checkpointed; a new write gives the next checkpoint something to do.
    s.run_in(&["put", "b.json"], b"[]").ok();
    let out = s.run(&["journal", "checkpoint", "."]).ok();
    assert!(out.stdout.contains("1 documents"), "{}", out.stdout);
    let out = s.run(&["journal", "disable", "."]).ok();
    assert!(out.stdout.contains("disabled"), "{}", out.stdout);
    assert!(!s.path(".statefile").exists());
    s.run(&["journal", "status", "."]).code(4);
    s.run(&["journal", "disable", "."]).code(4);
    assert_eq!(s.json("a.json"), json!({"v": 2}));
    s.run_in(&["put", "a.json"], b"{\"v\": 3}").ok();
    assert_eq!(s.json("a.json"), json!({"v": 3}));
}

#[test]
fn tx_applies_every_operation_or_none() {
    let s = Sandbox::new();
    s.run(&["journal", "enable", "--size", "64K", "."]).ok();
    s.run_in(&["put", "queue.json"], br#"{"items": [1, 2]}"#)
        .ok();
    s.run_in(&["put", "d.json"], b"1").ok();
    let d = statefile::Version::of(&s.read("d.json")).to_string();
    let ops = json!([
        {"op": "patch", "doc": "queue.json", "json_patch": [{"op": "remove", "path": "/items/0"}]},
        {"op": "put", "doc": "job-1.json", "value": {"item": 1}, "if_none_match": "*"},
        {"op": "append", "doc": "log.json", "pointer": "/events", "value": "moved 1"},
        {"op": "delete", "doc": "d.json", "if_match": d},
        {"op": "get", "doc": "queue.json"},
        {"op": "patch", "doc": "job-1.json", "merge": {"state": "queued"}}
    ]);
    let out = s.run_in(&["tx", "."], ops.to_string().as_bytes()).ok();
    let r: Value = serde_json::from_str(&out.stdout).unwrap();
    let queue = statefile::Version::of(&s.read("queue.json")).to_string();
    let job = statefile::Version::of(&s.read("job-1.json")).to_string();
    assert_eq!(
        r[0],
        json!({"doc": "queue.json", "op": "patch", "version": queue})
    );
    assert_eq!(
        r[1]["version"],
        json!(job),
        "the version after the transaction"
    );
    assert_eq!(r[2]["index"], json!(0));
    assert_eq!(
        r[3],
        json!({"doc": "d.json", "op": "delete", "version": null})
    );
    assert_eq!(
        r[4]["value"],
        json!({"items": [2]}),
        "a get sees the transaction's own writes"
    );
    assert_eq!(s.json("queue.json"), json!({"items": [2]}));
    assert_eq!(s.json("job-1.json"), json!({"item": 1, "state": "queued"}));
    assert_eq!(s.json("log.json"), json!({"events": ["moved 1"]}));
    assert!(!s.path("d.json").exists());

    // A failed precondition: exit 3 naming the document, nothing written.
    let ops = json!([
        {"op": "put", "doc": "new.json", "value": 1},
        {"op": "put", "doc": "job-1.json", "value": {}, "if_none_match": "*"}
    ]);
    let out = s.run_in(&["tx", "."], ops.to_string().as_bytes()).code(3);
    assert!(out.stderr.contains("job-1.json"), "{}", out.stderr);
    assert!(!s.path("new.json").exists());
    assert_eq!(s.json("job-1.json"), json!({"item": 1, "state": "queued"}));
    // A JSON Patch that does not apply: exit 1, nothing written.
    let ops = json!([
        {"op": "put", "doc": "new.json", "value": 1},
        {"op": "patch", "doc": "queue.json", "json_patch": [{"op": "remove", "path": "/nope"}]}
    ]);
    s.run_in(&["tx", "."], ops.to_string().as_bytes()).code(1);
    assert!(!s.path("new.json").exists());
    // Malformed operations are usage errors naming the operation.
    let out = s
        .run_in(&["tx", "."], br#"[{"op": "put", "doc": "a.json"}]"#)
        .code(2);
    assert!(out.stderr.contains("operation 0"), "{}", out.stderr);
    s.run_in(&["tx", "."], br#"{"op": "get"}"#).code(2);
    s.run_in(&["tx", "."], b"[]").code(2);
    // A weak ETag never matches (as in an If-Match header): refused, as by put's
    // --if-match, naming it and why.
    let weak = format!("W/\"{}\"", statefile::Version::of(b"1\n"));
    let ops = json!([{"op": "delete", "doc": "a.json", "if_match": weak}]);
    s.run_in(&["tx", "."], ops.to_string().as_bytes())
        .code(2)
        .stderr_has("if_match: ")
        .stderr_has("is a weak entity tag, which never matches a version");
    // A get of a missing document: exit 4.
    s.run_in(&["tx", "."], br#"[{"op": "get", "doc": "none.json"}]"#)
        .code(4);
    // A document in a missing directory: only with --parents.
    let ops = br#"[{"op": "put", "doc": "jobs/7.json", "value": 7}]"#;
    s.run_in(&["tx", "."], ops).code(4);
    s.run_in(&["tx", "--parents", "."], ops).ok();
    assert_eq!(s.json("jobs/7.json"), json!(7));
}

/// The names of the files in `dir` (not below, lock files aside) and their bytes.
fn files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .map(|n| {
            let bytes = std::fs::read(dir.join(&n)).unwrap();
            (n, bytes)
        })
        .collect();
    out.sort();
    out
}

// Regression (txpre): `statefile tx` checked each operation's precondition against the
// documents as the transaction locked them, not as its earlier operations left them:
// two creates of one document both passed `if_none_match`, an `if_match` passed after a
// delete of the document, and one naming the version of the transaction's own write
// failed.
#[test]
fn tx_preconditions_see_the_earlier_operations() {
    let s = Sandbox::new();
    s.run(&["journal", "enable", "--size", "64K", "."]).ok();
    s.run_in(&["put", "b.json"], br#"{"n": 1}"#).ok();
    let vb = statefile::Version::of(&s.read("b.json")).to_string();
    let before = files(s.dir.path());
    for (ops, doc) in [
        (
            json!([{"op": "put", "doc": "a.json", "value": 1, "if_none_match": "*"},
                   {"op": "put", "doc": "a.json", "value": 2, "if_none_match": "*"}]),
            "a.json",
        ),
        (
            json!([{"op": "delete", "doc": "b.json", "if_match": vb},
                   {"op": "put", "doc": "b.json", "value": 3, "if_match": vb}]),
            "b.json",
        ),
    ] {
        s.run_in(&["tx", "."], ops.to_string().as_bytes())
            .code(3)
            .stderr_has(doc)
            .stderr_has("operation 1");
    }
    assert_eq!(files(s.dir.path()), before, "nothing written, no temp left");
    assert!(!s.path("a.json").exists());
    // The version of the transaction's own pending write holds, and a get between
    // reports that same version; after a delete, `if_none_match` holds.
    let scratch = tempfile::tempdir().unwrap();
    let pending = statefile::Store::open(scratch.path())
        .unwrap()
        .doc::<Value>("a.json")
        .unwrap()
        .write(&json!({"n": 2}))
        .unwrap()
        .version
        .to_string();
    let ops = json!([
        {"op": "put", "doc": "a.json", "value": {"n": 2}, "if_none_match": "*"},
        {"op": "get", "doc": "a.json"},
        {"op": "patch", "doc": "a.json", "merge": {"n": 3}, "if_match": pending},
        {"op": "delete", "doc": "b.json", "if_match": vb},
        {"op": "put", "doc": "b.json", "value": {"n": 5}, "if_none_match": "*"}
    ]);
    let out = s.run_in(&["tx", "."], ops.to_string().as_bytes()).ok();
    let r: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(r[1]["value"], json!({"n": 2}));
    assert_eq!(r[1]["version"], json!(pending), "{r}");
    assert_eq!(s.json("a.json"), json!({"n": 3}));
    assert_eq!(
        r[2]["version"],
        json!(statefile::Version::of(&s.read("a.json")).to_string())
    );
    assert_eq!(s.json("b.json"), json!({"n": 5}));
    assert!(crate::common::temps(s.dir.path()).is_empty());
}

#[test]
fn tx_outside_journal_mode_is_refused() {
    let s = Sandbox::new();
    let out = s
        .run_in(
            &["tx", "."],
            br#"[{"op": "put", "doc": "a.json", "value": 1}]"#,
        )
        .code(2);
    assert!(out.stderr.contains("journal"), "{}", out.stderr);
    assert!(!s.path("a.json").exists());
}

/// `statefile tx` opens the store without walking it (Store::open_without_scan): on a
/// store of 1,000 documents it opens only what the transaction touches, and leaves a
/// dead writer's temp file and a damaged document elsewhere alone (a full recovery scan
/// removes the one and reads the other).
#[test]
fn tx_does_not_scan_the_whole_store() {
    let s = Sandbox::new();
    s.run(&["journal", "enable", "."]).ok();
    for d in 0..10 {
        std::fs::create_dir(s.path(&format!("d{d}"))).unwrap();
        for i in 0..100 {
            s.write(
                &format!("d{d}/{i}.json"),
                format!("{{\"i\": {i}}}\n").as_bytes(),
            );
        }
    }
    std::fs::create_dir(s.path("other")).unwrap();
    s.write("other/damaged.json", b"{\"cut");
    let dead_temp = s.path("other/.x.json.sf-aaaaaaaaaaaaaaaa.tmp");
    std::fs::write(&dead_temp, b"{}").unwrap();
    let ops = br#"[{"op": "put", "doc": "a.json", "value": 1}, {"op": "get", "doc": "d3/7.json"}]"#;
    let out = s.run_in(&["tx", "."], ops).ok();
    let r: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(r[1]["value"], json!({"i": 7}));
    assert!(dead_temp.exists(), "the tree was not walked");

    if std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_err()
    {
        crate::skip::skip("strace not installed (CI installs it)");
        return;
    }
    let log = s.path("strace.log");
    let input = s.path("ops.json");
    std::fs::write(&input, ops).unwrap();
    let status = std::process::Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=open,openat,openat2", "-o"])
        .arg(&log)
        .arg(crate::common::BIN)
        .args(["tx", "."])
        .current_dir(s.dir.path())
        .stdin(std::fs::File::open(&input).unwrap())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    let opens = text.lines().count();
    let docs = text
        .lines()
        .filter(|l| l.contains(".json\"") && !l.contains("a.json\"") && !l.contains("7.json\""))
        .count();
    assert_eq!(
        docs, 0,
        "only the transaction's documents are opened:\n{text}"
    );
    assert!(
        opens < 200,
        "{opens} opens for a two-document transaction:\n{text}"
    );
}

/// Review: `put` then `delete` of a new document in one `statefile tx` exited 4 ("does
/// not exist"); the transaction created it, so the delete goes through and nothing is
/// written for it. Deleting it twice is still exit 4.
#[test]
fn tx_deletes_a_document_it_created() {
    let s = Sandbox::new();
    s.run(&["journal", "enable", "--size", "64K", "."]).ok();
    let ops = json!([
        {"op": "put", "doc": "n.json", "value": 1},
        {"op": "delete", "doc": "n.json"},
        {"op": "put", "doc": "m.json", "value": 2}
    ]);
    let out = s.run_in(&["tx", "."], ops.to_string().as_bytes()).ok();
    let r: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        r[1],
        json!({"doc": "n.json", "op": "delete", "version": null})
    );
    assert!(!s.path("n.json").exists());
    assert_eq!(s.json("m.json"), json!(2));
    let ops = json!([
        {"op": "put", "doc": "n.json", "value": 1},
        {"op": "delete", "doc": "n.json"},
        {"op": "delete", "doc": "n.json"}
    ]);
    s.run_in(&["tx", "."], ops.to_string().as_bytes()).code(4);
    assert!(!s.path("n.json").exists());
}

/// A checkpoint of documents in more directories than the process may open files
/// holds one directory open at a time: with `ulimit -n 64`, 300 directories check-
/// point (it kept every directory open until the end, and failed with EMFILE from
/// about a thousand directories under the default limit, never freeing the journal).
#[test]
fn checkpoint_of_documents_in_many_directories_needs_few_descriptors() {
    let s = Sandbox::new();
    s.run(&["journal", "enable", "--size", "4M", "."]).ok();
    let store = statefile::Store::open(s.dir.path()).unwrap();
    for i in 0..300 {
        std::fs::create_dir(s.path(&format!("d{i:03}"))).unwrap();
        store
            .doc::<Value>(&format!("d{i:03}/job.json"))
            .unwrap()
            .write(&json!({"id": i}))
            .unwrap();
    }
    drop(store);
    let out = Run::from(
        std::process::Command::new("sh")
            .args(["-c", "ulimit -n 64 && exec \"$0\" journal checkpoint ."])
            .arg(crate::common::BIN)
            .current_dir(s.dir.path())
            .output()
            .unwrap(),
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("300 documents and 300 directories synced"),
        "{}",
        out.stdout
    );
    let st: Value =
        serde_json::from_str(&s.run(&["journal", "status", "--json", "."]).ok().stdout).unwrap();
    assert_eq!(st["records"], json!(0), "{st}");
}

// After a power loss a journal-mode document can be damaged on disk (empty, on a file
// system that does not write a renamed-in file out early as ext4 does) while the
// flushed record holds its bytes. `get` called it damaged and sent the user to the
// backup (`get --fallback`: the version before the acknowledged write) instead of to
// the journal that holds the write.
#[test]
fn a_damaged_document_its_journal_will_rewrite_points_to_recover_not_to_the_backup() {
    let s = Sandbox::new();
    s.run(&["journal", "enable", "--size", "64K", "."]).ok();
    s.run_in(&["put", "a.json"], b"{\"v\": 1}").ok();
    s.run_in(&["put", "a.json"], b"{\"v\": 2}").ok();
    // What the power loss leaves: the name holds the new file, its data not written out.
    s.write("a.json", b"");
    let out = s.run(&["get", "a.json"]).code(5).stderr_has(
        "help: the journal holds a later version of a.json, not yet written to it \
         (as a power loss leaves it): `statefile recover a.json` puts it back; \
         its backups are older",
    );
    assert!(!out.stderr.contains("--fallback"), "{}", out.stderr);
    s.run(&["recover", "a.json"]).ok();
    assert_eq!(s.json("a.json"), json!({"v": 2}));
    // Damage the journal would not repair gets the usual advice.
    s.write(".a.json.bak", b"[");
    s.write("a.json", b"[");
    s.run(&["journal", "checkpoint", "."]).ok();
    s.run(&["get", "a.json"])
        .code(5)
        .stderr_has("help: no good backup");
}

/// A power loss after `put a.json` of `{"v": 2}` over `{"v": 1}` (both acknowledged),
/// which lost the rename (`old` true: the old file is back) or the new file's data (the
/// document is empty), then a reboot: no process uses the journal, its shared state is
/// gone.
fn power_lost_after_a_put(s: &Sandbox, old: bool) {
    s.run(&["journal", "enable", "--size", "64K", "."]).ok();
    s.run_in(&["put", "a.json"], b"{\"v\": 1}").ok();
    let before = s.read("a.json");
    s.run_in(&["put", "a.json"], b"{\"v\": 2}").ok();
    s.write("a.json", if old { &before } else { b"" });
    s.write(".statefile/journal-shm", &[0u8; 8192]);
}

// `statefile get`, `version` and `get --fallback` never opened the journal: after a
// power loss they printed the version the last acknowledged put replaced, failed with
// exit 5 on an empty file, or printed the backup as the best there was.
#[test]
fn get_after_a_power_loss_prints_the_acknowledged_write() {
    let want = statefile::Version::of(b"{\n  \"v\": 2\n}\n").to_string();
    for old in [true, false] {
        let s = Sandbox::new();
        power_lost_after_a_put(&s, old);
        let out = s.run(&["get", "a.json"]).ok();
        assert_eq!(out.stdout.trim(), r#"{"v":2}"#, "old file back: {old}");
        assert_eq!(s.json("a.json"), json!({"v": 2}), "replayed into the file");

        let s = Sandbox::new();
        power_lost_after_a_put(&s, old);
        let out = s.run(&["version", "a.json"]).ok();
        assert_eq!(out.stdout.trim(), want, "old file back: {old}");

        let s = Sandbox::new();
        power_lost_after_a_put(&s, old);
        let out = s
            .run(&["get", "--fallback", "a.json"])
            .ok()
            .stderr_is_empty();
        assert_eq!(out.stdout.trim(), r#"{"v":2}"#, "old file back: {old}");
    }
}

/// `statefile tx` of `n` puts of `jobs/NNNN.json` (one directory), run under
/// `ulimit` arguments `limit` (a shell's `-S`/`-H` forms).
fn tx_of_many_documents_under(s: &Sandbox, n: usize, limit: &str) -> Run {
    let ops: Vec<Value> = (0..n)
        .map(|i| json!({"op": "put", "doc": format!("jobs/{i:04}.json"), "value": {"id": i}}))
        .collect();
    let mut child = std::process::Command::new("sh")
        .args(["-c", &format!("ulimit {limit} && exec \"$0\" tx .")])
        .arg(crate::common::BIN)
        .current_dir(s.dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let body = serde_json::to_vec(&ops).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // A shell that failed to set the limit exits without reading: its output says why.
    let _ = std::io::Write::write_all(&mut stdin, &body);
    drop(stdin);
    Run::from(child.wait_with_output().unwrap())
}

/// Regression: a transaction held two descriptors per document (its directory's and
/// its lock file's), even for documents of one directory, and the CLI kept the soft
/// open-file limit it was given: `statefile tx` of 1,000 documents failed from about
/// 520 documents under the usual soft limit of 1,024. Now the documents of a directory
/// share its handle (1,000 documents: 1,001 descriptors), and the CLI raises its soft
/// limit to the hard one, as the server does.
#[test]
fn a_transaction_of_a_thousand_documents_in_one_directory_fits_the_usual_limits() {
    let s = Sandbox::new();
    s.run(&["journal", "enable", "--size", "4M", "."]).ok();
    std::fs::create_dir(s.path("jobs")).unwrap();
    // Soft 512, hard 4,096: the soft limit is raised.
    let out = tx_of_many_documents_under(&s, 1000, "-Sn 512 && ulimit -Hn 4096");
    assert_eq!(out.code, 0, "{out:?}");
    let results: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(results.as_array().map(Vec::len), Some(1000), "{results}");
    assert_eq!(s.json("jobs/0999.json"), json!({"id": 999}));
    // Hard and soft 1,024: one handle for the directory, one lock file each.
    let out = tx_of_many_documents_under(&s, 1000, "-n 1024");
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(s.json("jobs/0500.json"), json!({"id": 500}));
}

/// Past the hard limit, the transaction fails whole and says which document's lock it
/// could not open and why.
#[test]
fn a_transaction_past_the_open_file_limit_writes_nothing_and_says_why() {
    let s = Sandbox::new();
    s.run(&["journal", "enable", "--size", "4M", "."]).ok();
    std::fs::create_dir(s.path("jobs")).unwrap();
    let out = tx_of_many_documents_under(&s, 300, "-n 64");
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("jobs/.00"), "{}", out.stderr);
    assert!(
        out.stderr.to_lowercase().contains("too many open files"),
        "{}",
        out.stderr
    );
    assert!(!s.path("jobs/0000.json").exists());
}

/// `journal enable --swap` on a tree whose journal renames changes nothing (as `enable`
/// of an existing journal never does), but says so instead of passing in silence.
#[test]
fn enabling_swap_on_a_journal_that_renames_warns_and_changes_nothing() {
    let s = Sandbox::new();
    s.run(&["journal", "enable", "."]).ok();
    let again = s.run(&["journal", "enable", "--swap", "."]).ok();
    assert!(
        again.stderr.contains("does not swap files in") && again.stderr.contains("disable"),
        "{}",
        again.stderr
    );
    assert!(
        !again.stdout.contains("commits swap files in"),
        "{}",
        again.stdout
    );
    let st: Value =
        serde_json::from_str(&s.run(&["journal", "status", "--json", "."]).ok().stdout).unwrap();
    assert_eq!(st["swap"], json!(false), "{st}");
}

/// The findings of a `--json` report as (file name, problem, action).
fn findings(stdout: &str) -> Vec<(String, String, Value)> {
    let v: Value = serde_json::from_str(stdout).unwrap();
    v["reports"][0]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let path = std::path::PathBuf::from(f["path"].as_str().unwrap());
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                f["problem"].as_str().unwrap().to_string(),
                f["action"].clone(),
            )
        })
        .collect()
}

/// After a power loss a document may be empty on disk while the journal holds its
/// committed bytes: `recover --dry-run` names the replay (not a restore from `.bak`,
/// which the repair never makes), `verify` does not offer the backup, and `recover`
/// then does exactly what the dry run said, in the human output and in `--json`.
#[test]
fn recover_dry_run_names_the_journal_replay_that_recover_makes() {
    let s = Sandbox::new();
    s.run(&["journal", "enable", "--size", "64K", "."]).ok();
    s.run_in(&["put", "a.json"], b"{\"v\": 1}").ok();
    s.run_in(&["put", "a.json"], b"{\"v\": 2}").ok();
    assert!(s.path(".a.json.bak").is_file());
    s.write("a.json", b"");

    let out = s.run(&["verify", "."]).code(5);
    assert!(
        out.stdout
            .contains("a.json: not yet what its last journal record says"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("restorable"), "{}", out.stdout);
    assert!(out.stdout.contains(": 1 need repair"), "{}", out.stdout);

    let dry = s.run(&["recover", "--dry-run", "."]).code(5);
    assert!(
        dry.stdout.contains("-> would replay from the journal"),
        "{}",
        dry.stdout
    );
    assert!(!dry.stdout.contains("restore"), "{}", dry.stdout);
    assert!(dry.stdout.contains(": 1 need repair"), "{}", dry.stdout);
    let dry = findings(
        &s.run(&["recover", "--dry-run", "--json", "."])
            .code(5)
            .stdout,
    );
    assert_eq!(
        dry,
        [(
            "a.json".to_string(),
            "journal-replay".to_string(),
            json!({"would": "replay from the journal"})
        )]
    );
    let verified = findings(&s.run(&["verify", "--json", "."]).code(5).stdout);
    assert_eq!(
        verified,
        [(
            "a.json".to_string(),
            "journal-replay".to_string(),
            Value::Null
        )]
    );
    assert_eq!(s.read("a.json"), b"", "a dry run changes nothing");

    let done = findings(&s.run(&["recover", "--json", "."]).ok().stdout);
    assert_eq!(
        done,
        [(
            "a.json".to_string(),
            "journal-replay".to_string(),
            json!({"done": "replayed"})
        )]
    );
    assert_eq!(s.json("a.json"), json!({"v": 2}));
    s.run(&["verify", "."]).ok();
}

// Regression: a record the replay after a reboot skipped (d/a.json's, d now a link to
// another directory whose a.json is another document) was a log line only: `recover`
// and `verify` said nothing of it, and exited 0 once the record was freed.
#[test]
fn verify_and_recover_print_a_record_the_replay_skips() {
    let s = Sandbox::new();
    s.run(&["journal", "enable", "--size", "64K", "."]).ok();
    s.run_in(&["put", "--parents", "d/a.json"], b"{\"v\": 1}")
        .ok();
    s.run_in(&["put", "--parents", "x/a.json"], b"{\"other\": 1}")
        .ok();
    std::fs::rename(s.path("d"), s.path("d-old")).unwrap();
    std::os::unix::fs::symlink("x", s.path("d")).unwrap();
    // A reboot, as the journal sees it: its shared state gone, journal-boot too.
    s.write(".statefile/journal-shm", &[0u8; 8192]);
    std::fs::remove_file(s.path(".statefile/journal-boot")).unwrap();
    let line = "d/a.json: its last journal record (version";

    let out = s.run(&["verify", "."]).code(5);
    assert!(out.stdout.contains(line), "{}", out.stdout);
    assert!(out.stdout.contains("through a symlink"), "{}", out.stdout);
    let out = s.run(&["journal", "status", "."]).code(5);
    assert!(out.stdout.contains("skipped: "), "{}", out.stdout);
    let st: Value =
        serde_json::from_str(&s.run(&["journal", "status", "--json", "."]).code(5).stdout).unwrap();
    assert_eq!(st["skipped"].as_array().map(Vec::len), Some(1), "{st}");

    let v: Value = serde_json::from_str(&s.run(&["verify", "--json", "."]).code(5).stdout).unwrap();
    let skipped: Vec<&Value> = v["reports"][0]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["problem"] == json!("journal-skipped"))
        .collect();
    assert_eq!(skipped.len(), 1, "{v}");
    assert!(
        skipped[0]["path"].as_str().unwrap().ends_with("/d/a.json"),
        "{v}"
    );

    // recover replays (the reboot), skips it, prints it, and checkpoints.
    let out = s.run(&["recover", "."]).code(5);
    assert!(out.stdout.contains(line), "{}", out.stdout);
    assert!(out.stdout.contains("through a symlink"), "{}", out.stdout);
    assert_eq!(s.json("x/a.json"), json!({"other": 1}), "not overwritten");
    assert_eq!(s.json("d-old/a.json"), json!({"v": 1}));
    s.run(&["verify", "."]).ok();
}

// Regression: a `direct` write (a document too large for the journal's ring) changed
// since by another program was printed "to replay" by `journal status` and `verify`
// (exit 5), though a replay leaves such a file as it is (`recover` replayed nothing).
#[test]
fn a_direct_write_is_never_to_replay() {
    let s = Sandbox::new();
    s.run(&["journal", "enable", "--size", "64K", "."]).ok();
    let big = format!("{{\"s\": \"{}\"}}", "x".repeat(20_000));
    s.run_in(&["put", "big.json"], big.as_bytes()).ok();
    let out = s.run(&["journal", "status", "."]).ok();
    assert!(out.stdout.contains("1 records since"), "{}", out.stdout);
    assert!(!out.stdout.contains("to replay"), "{}", out.stdout);
    // Over verify's limit: reported as such, and not as a replay.
    let out = s.run(&["verify", "--max-document", "8K", "."]).code(5);
    assert!(out.stdout.contains("too large"), "{}", out.stdout);
    assert!(!out.stdout.contains("journal record"), "{}", out.stdout);

    s.write("big.json", b"{\"by\": \"hand\"}\n");
    let out = s.run(&["journal", "status", "."]).ok();
    assert!(!out.stdout.contains("to replay"), "{}", out.stdout);
    s.run(&["verify", "."]).ok();
    s.run(&["recover", "."]).ok();
    assert_eq!(
        s.json("big.json"),
        json!({"by": "hand"}),
        "a replay leaves it"
    );
}

/// `statefile ARGS` in `s` as a user that permission bits bind: uid 65534 (nobody)
/// when this runs as root (`s`'s directory is then given to it), else this user.
/// `None` (after saying why) if this machine cannot start a process as another user.
fn as_a_user(s: &Sandbox) -> Option<impl Fn(&[&str]) -> Run + '_> {
    use std::os::unix::process::CommandExt;
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    if root {
        std::os::unix::fs::chown(s.dir.path(), Some(65534), Some(65534)).unwrap();
        let probe = s.cmd(&["--version"]).uid(65534).gid(65534).output();
        if !probe.is_ok_and(|o| o.status.success()) {
            crate::skip::skip("cannot run the statefile binary as uid 65534 here");
            return None;
        }
    }
    Some(move |args: &[&str]| {
        let mut c = s.cmd(args);
        if root {
            c.uid(65534).gid(65534);
        }
        Run::from(c.output().unwrap())
    })
}

fn chmod(p: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

// Regression: `journal status` and `verify` by a user who may not open a directory of
// the store (chmod 000) failed with EACCES (exit 8; verify: the journal "unreadable")
// instead of reporting the rest and naming the document they could not look at.
#[test]
fn status_and_verify_name_what_they_may_not_read_and_report_the_rest() {
    let s = Sandbox::new();
    let Some(run) = as_a_user(&s) else {
        return;
    };
    run(&["journal", "enable", "--size", "64K", "."]).ok();
    for name in ["a.json", "private/c.json", "b.json"] {
        run(&["set", "--parents", name, "/v", "1"]).ok();
    }
    chmod(&s.path("private"), 0o000);
    let out = run(&["journal", "status", "."]).code(5);
    assert!(
        out.stdout.contains("not checked: ") && out.stdout.contains("private/c.json"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("3 records since"), "{}", out.stdout);
    assert!(!out.stdout.contains("to replay"), "{}", out.stdout);
    let st: Value =
        serde_json::from_str(&run(&["journal", "status", "--json", "."]).code(5).stdout).unwrap();
    assert_eq!(st["unchecked"].as_array().map(Vec::len), Some(1), "{st}");
    let out = run(&["verify", "."]).code(5);
    assert!(out.stdout.contains("journal mode"), "{}", out.stdout);
    assert!(
        out.stdout.contains("private/c.json: unreadable"),
        "{}",
        out.stdout
    );

    // `.statefile/` itself: verify names it and checks the rest; status, which has
    // nothing else to say, fails naming it.
    chmod(&s.path("private"), 0o755);
    s.write("hurt.json", b"{\"trunc");
    chmod(&s.path(".statefile"), 0o000);
    let out = run(&["verify", "."]).code(5);
    assert!(out.stdout.contains(".statefile"), "{}", out.stdout);
    assert!(out.stdout.contains("hurt.json"), "{}", out.stdout);
    run(&["journal", "status", "."])
        .code(8)
        .stderr_has(".statefile");
    chmod(&s.path(".statefile"), 0o700);
}

/// One HTTP/1.1 request to `addr`: the status and the whole answer (head and body).
fn http(addr: std::net::SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("no answer to {method} {path} (hung?): {e}"));
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    (status, text)
}

// Bug: with the journal's append lock (`journal-shm`) or flush lock (`journal`) held by
// another process (here this test's, through its own descriptor), `statefile put`,
// `journal checkpoint` and every write request to the server hung for good. Now they
// fail as any lock timeout does: exit 6, naming the lock; 503 + Retry-After.
#[test]
fn a_held_journal_lock_is_exit_6_and_503() {
    let s = Sandbox::new();
    s.run(&["journal", "enable", "--size", "64K", "."]).ok();
    s.run_in(&["put", "a.json"], b"{\"v\": 1}").ok();
    let (server, addr) =
        crate::common::serve(s.dir.path(), &["serve", "--lock-timeout", "0.5", "."]);
    // Killed however the test ends (a server left running keeps the test's pipes open).
    let _server = Killed(server);
    assert_eq!(http(addr, "GET", "/v1/docs/a.json", b"").0, 200);

    let held = std::fs::File::open(s.path(".statefile/journal-shm")).unwrap();
    held.lock().unwrap();
    s.run_in(&["put", "--lock-timeout", "0.5", "a.json"], b"{\"v\": 2}")
        .code(6)
        .stderr_has("journal's append lock");
    let (status, answer) = http(addr, "PUT", "/v1/docs/a.json", b"{\"v\": 3}");
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after:"),
        "{answer}"
    );
    assert!(answer.contains("lock-timeout"), "{answer}");
    drop(held);

    let held = std::fs::File::open(s.path(".statefile/journal")).unwrap();
    held.lock().unwrap();
    s.run(&["journal", "checkpoint", "--lock-timeout", "0.5", "."])
        .code(6)
        .stderr_has("journal's flush lock");
    drop(held);

    assert_eq!(s.json("a.json"), json!({"v": 1}));
    let (status, answer) = http(addr, "PUT", "/v1/docs/a.json", b"{\"v\": 4}");
    assert_eq!(status, 200, "{answer}");
    s.run_in(&["put", "a.json"], b"{\"v\": 5}").ok();
    assert_eq!(s.json("a.json"), json!({"v": 5}));

    // The flush lock held: the first write, its record appended, cannot know its fate
    // (500 durability-unknown, as for any failed flush); the server's store is not
    // poisoned by it, and the next write, nothing appended, is a plain 503.
    let held = std::fs::File::open(s.path(".statefile/journal")).unwrap();
    held.lock().unwrap();
    let (status, answer) = http(addr, "PUT", "/v1/docs/a.json", b"{\"v\": 6}");
    assert_eq!(status, 500, "{answer}");
    assert!(answer.contains("durability-unknown"), "{answer}");
    let (status, answer) = http(addr, "PUT", "/v1/docs/a.json", b"{\"v\": 7}");
    assert_eq!(status, 503, "{answer}");
    drop(held);
    let (status, answer) = http(addr, "PUT", "/v1/docs/a.json", b"{\"v\": 8}");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(s.json("a.json"), json!({"v": 8}));
}

/// A child process killed when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
