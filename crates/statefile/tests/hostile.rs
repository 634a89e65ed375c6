//! Hostile files in a store (issue 9, items 1, 4 and 9): symlinks, FIFOs, sockets and
//! devices where a document or sidecar should be. Each is reported with a clear error
//! (`InvalidName`: the server's 400, the CLI's exit 2), never read, never followed, and
//! never blocks: every operation here runs under a deadline, so a hang fails the test
//! instead of stalling the suite.

mod common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use statefile::{Action, BackupRef, Doc, ErrorKind, Options, Problem, Store, Version};

use common::{child_role, mkfifo, names, within_deadline};

/// A damaged document `name` whose only backup is `plant` (made by the caller).
fn damaged(root: &Path, name: &str) -> PathBuf {
    let p = root.join(name);
    std::fs::write(&p, b"{\"trunc").unwrap();
    p
}

fn kind_of<T: std::fmt::Debug>(r: statefile::Result<T>) -> ErrorKind {
    r.expect_err("an error").kind()
}

#[test]
fn a_fifo_as_a_document_is_refused_by_every_operation_and_never_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    mkfifo(&root.join("pipe.json"));
    // And a document symlinked to a FIFO elsewhere in the store.
    mkfifo(&root.join("real-pipe"));
    symlink("real-pipe", root.join("linked.json")).unwrap();

    for name in ["pipe.json", "linked.json"] {
        let p = root.join(name);
        let kinds = within_deadline(name, move || {
            let doc: Doc<Value> = Doc::open(&p).unwrap();
            let fallback = Doc::<Value>::open(&p)
                .unwrap()
                .with_read_policy(statefile::ReadPolicy::FallbackToBackup);
            vec![
                ("read", kind_of(doc.read())),
                ("read fallback", kind_of(fallback.read())),
                ("read_bytes", kind_of(doc.read_bytes())),
                ("read_cached", kind_of(doc.read_cached())),
                ("version", kind_of(doc.version())),
                ("write", kind_of(doc.write(&json!(1)))),
                (
                    "write_if",
                    kind_of(doc.write_if(&Version::of(b""), &json!(1))),
                ),
                ("create", kind_of(doc.create(&json!(1)))),
                (
                    "update",
                    kind_of(doc.update_or_default(|v| {
                        *v = json!(2);
                        Ok::<_, statefile::Error>(())
                    })),
                ),
                ("delete", kind_of(doc.delete())),
                ("restore", kind_of(doc.restore(&BackupRef::NewestGood))),
            ]
        });
        for (op, kind) in kinds {
            assert_eq!(kind, ErrorKind::InvalidName, "{name}: {op}");
        }
    }
    let msg = Doc::<Value>::open(root.join("pipe.json"))
        .unwrap()
        .read()
        .unwrap_err()
        .to_string();
    assert!(msg.contains("pipe.json") && msg.contains("FIFO"), "{msg}");
    // Nothing was replaced or created beside them.
    assert!(
        std::fs::symlink_metadata(root.join("linked.json"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(
        names(&root)
            .iter()
            .all(|n| !n.ends_with(".tmp") && !n.contains(".bak")),
        "{:?}",
        names(&root)
    );

    // Store::open, verify and recover return, and report both; verify is not healthy.
    let r = root.clone();
    let (opened, verified, recovered) = within_deadline("Store::open/verify/recover", move || {
        let store = Store::open(&r).unwrap();
        let v = statefile::verify(&r).unwrap();
        let rec = statefile::recover(&r).unwrap();
        (store.recovery().clone(), v, rec)
    });
    for report in [&opened, &verified, &recovered] {
        let flagged: Vec<String> = report
            .findings
            .iter()
            .filter(
                |f| matches!(&f.problem, Problem::Unreadable { error } if error.contains("FIFO")),
            )
            .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(flagged, ["linked.json", "pipe.json"], "{report:#?}");
        assert!(report.needs_repair());
    }
    assert!(!verified.is_healthy());
}

#[test]
fn a_fifo_as_a_backup_lock_or_corrupt_copy_never_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let p = damaged(&root, "a.json");
    mkfifo(&root.join(".a.json.bak"));
    let q = root.join("b.json");
    statefile::write_json(&q, &json!({"b": 1})).unwrap();
    std::fs::remove_file(root.join(".b.json.lock")).unwrap();
    mkfifo(&root.join(".b.json.lock"));

    let (p2, q2) = (p.clone(), q.clone());
    let (read, backups, restore, write_b) = within_deadline("sidecar FIFOs", move || {
        let doc = Doc::<Value>::open(&p2)
            .unwrap()
            .with_read_policy(statefile::ReadPolicy::FallbackToBackup);
        let b: Doc<Value> = Doc::open(&q2).unwrap();
        (
            doc.read().unwrap_err(),
            doc.backups().unwrap(),
            doc.restore(&BackupRef::NewestGood).unwrap_err(),
            b.write(&json!({"b": 2})).unwrap_err(),
        )
    });
    // The FIFO backup is not a backup: the damaged document has none that parses.
    assert_eq!(read.kind(), ErrorKind::Corrupt, "{read}");
    assert!(backups.is_empty(), "{backups:?}");
    assert_eq!(restore.kind(), ErrorKind::NotFound, "{restore}");
    // A FIFO planted as the lock file: refused, named.
    assert_eq!(write_b.kind(), ErrorKind::InvalidName, "{write_b}");
    assert!(write_b.to_string().contains(".b.json.lock"), "{write_b}");
    assert_eq!(statefile::read_json::<Value>(&q).unwrap(), json!({"b": 1}));

    let r = root.clone();
    let report = within_deadline("verify", move || statefile::verify(&r).unwrap());
    let flagged: Vec<String> = report
        .findings
        .iter()
        .filter(|f| matches!(&f.problem, Problem::Unreadable { error } if error.contains("FIFO")))
        .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(flagged, [".a.json.bak", ".b.json.lock"], "{report:#?}");
    let r = root.clone();
    within_deadline("Store::open", move || Store::open(&r).map(drop)).unwrap();
}

#[test]
fn a_backup_symlinked_outside_the_store_is_never_read_listed_or_restored() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    let secret = b"{\"secret\": \"s3cr3t\"}\n";
    std::fs::write(outside.join("secret.json"), secret).unwrap();
    let store = Store::open(&root).unwrap();
    damaged(&root, "evil.json");
    symlink(outside.join("secret.json"), root.join(".evil.json.bak")).unwrap();

    let doc = store
        .doc::<Value>("evil.json")
        .unwrap()
        .with_read_policy(statefile::ReadPolicy::FallbackToBackup);
    let e = doc.read().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "not served: {e}");
    assert_eq!(doc.read_bytes().unwrap_err().kind(), ErrorKind::Corrupt);
    assert!(doc.backups().unwrap().is_empty(), "not listed");
    for which in [
        BackupRef::NewestGood,
        BackupRef::Number(1),
        BackupRef::Version(Version::of(secret)),
    ] {
        let e = doc.restore(&which).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{which:?}: {e}");
    }
    assert_eq!(
        std::fs::read(root.join("evil.json")).unwrap(),
        b"{\"trunc",
        "nothing restored"
    );
    // recover cannot repair from it either, and verify names it.
    let report = store.recover().unwrap();
    assert!(
        !report
            .findings
            .iter()
            .any(|f| matches!(f.action, Action::Restored { .. })),
        "{report:#?}"
    );
    assert!(report.findings.iter().any(|f| f.path.ends_with(".evil.json.bak")
        && matches!(&f.problem, Problem::Unreadable { error } if error.contains("symlink"))));
    assert_eq!(std::fs::read(outside.join("secret.json")).unwrap(), secret);
}

#[test]
fn sockets_symlink_loops_and_dangling_directory_links_are_invalid_names() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let _listener = std::os::unix::net::UnixListener::bind(root.join("sock.json")).unwrap();
    symlink("loop.json", root.join("loop.json")).unwrap();
    symlink("ping.json", root.join("pong.json")).unwrap();
    symlink("pong.json", root.join("ping.json")).unwrap();
    symlink("loopdir", root.join("loopdir")).unwrap();
    symlink(dir.path().join("nowhere"), root.join("gone")).unwrap();
    let store = Store::open(&root).unwrap();
    for name in [
        "sock.json",
        "loop.json",
        "ping.json",
        "loopdir/a.json",
        "gone/a.json",
    ] {
        let doc = store.doc::<Value>(name).unwrap();
        let read = doc.read().unwrap_err();
        assert_eq!(read.kind(), ErrorKind::InvalidName, "read {name}: {read}");
        let write = doc.write(&json!(1)).unwrap_err();
        assert_eq!(
            write.kind(),
            ErrorKind::InvalidName,
            "write {name}: {write}"
        );
        let plain: Doc<Value> = Doc::open(root.join(name)).unwrap();
        assert_eq!(
            plain.read().unwrap_err().kind(),
            ErrorKind::InvalidName,
            "{name}"
        );
        assert_eq!(
            plain
                .write_if(&Version::of(b""), &json!(1))
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidName,
            "{name}"
        );
    }
    let e = store.doc::<Value>("sock.json").unwrap().read().unwrap_err();
    assert!(e.to_string().contains("socket"), "{e}");
    assert!(!dir.path().join("nowhere").exists(), "no directory created");
}

/// Inside `child_entry`: read `args[0]` with fallback and report the outcome's kind.
fn fallback_read_child(args: &[String]) {
    let doc = Doc::<Value>::open(&args[0])
        .unwrap()
        .with_read_policy(statefile::ReadPolicy::FallbackToBackup);
    match doc.read() {
        Ok(v) => println!("read ok: {v}"),
        Err(e) => println!("read failed: {:?}", e.kind()),
    }
    // What this process read through read(2) and friends, in bytes.
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let rchar = io
        .lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .unwrap_or("unknown");
    println!("rchar {rchar}");
}

#[test]
#[ignore = "run by other tests as a child process"]
fn child_entry() {
    let Some((role, args)) = child_role() else {
        return;
    };
    match role.as_str() {
        "fallback-read" => fallback_read_child(&args),
        other => panic!("unknown child role {other}"),
    }
}

// Regression: a backup symlinked to /dev/zero was read until memory ran out (2 GB and
// more). The reader runs in a child under RLIMIT_AS (prlimit), so a regression fails
// this test instead of taking the machine down.
#[test]
fn a_backup_symlinked_to_dev_zero_is_not_read_under_a_memory_limit() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        common::skip("prlimit (util-linux) is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = damaged(dir.path(), "z.json");
    symlink("/dev/zero", dir.path().join(".z.json.bak")).unwrap();
    let child = common::child("fallback-read", &[p.display().to_string()]);
    let out = Command::new("prlimit")
        .arg("--as=1073741824") // 1 GiB of address space
        .arg("--")
        .arg(child.get_program())
        .args(child.get_args())
        .envs(child.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("read failed: Corrupt"),
        "status {:?}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // Not one byte of /dev/zero: what the reader read is the test binary's own reading
    // (a few MB at most), not the hundreds of MB it read before it gave up.
    let rchar: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("rchar "))
        .and_then(|n| n.trim().parse().ok())
        .expect("the child reports what it read");
    assert!(rchar < 16 << 20, "the reader read {rchar} bytes");
}

#[test]
fn options_do_not_change_the_refusal() {
    // Durability, backups and verification change how a write is made, not what it may
    // replace: a FIFO is refused whatever the options.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("pipe.json");
    mkfifo(&p);
    for opts in [
        Options::new().backups(0),
        Options::new().backups(5).verify(true),
        Options::new().durability(statefile::Durability::None),
    ] {
        let p = p.clone();
        let kind = within_deadline("write", move || {
            kind_of(Doc::<Value>::open_with(&p, opts).unwrap().write(&json!(1)))
        });
        assert_eq!(kind, ErrorKind::InvalidName);
    }
    let p2 = p.clone();
    let kind = within_deadline("write_atomic", move || {
        kind_of(statefile::write_atomic(&p2, b"x"))
    });
    assert_eq!(kind, ErrorKind::InvalidName);
}

/// A document another program wrote with the key serde_json (exact numbers) reads as a
/// number is valid JSON that statefile's reads refuse: `verify` and `recover` report it
/// (in memory and streamed, past 16 MiB), and neither replaces it with a backup (that
/// would lose the other program's write); a backup holding it is reported too and is
/// never the one restored.
#[test]
fn a_file_holding_the_reserved_key_is_reported_not_healthy_and_not_restored() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let foreign = br#"{"$serde_json::private::Number": "12"}"#;
    let d = Doc::<Value>::open_with(root.join("a.json"), Options::new().backups(2)).unwrap();
    d.write(&json!({"v": 1})).unwrap();
    d.write(&json!({"v": 2})).unwrap();
    std::fs::write(root.join("a.json"), foreign).unwrap();
    // Past the size verify reads whole, the key at the very end, escaped.
    let big = format!(
        "{{\"pad\": \"{}\", \"o\": {{\"\\u0024serde_json::private::Number\": \"1\"}}}}",
        "x".repeat(17 << 20)
    );
    std::fs::write(root.join("big.json"), &big).unwrap();
    // Healthy neighbours: the key as a value, escapes elsewhere, a long document.
    let fine = format!(
        "{{\"k\": \"$serde_json::private::Number\", \"\\u00e9\": 1, \"pad\": \"{}\"}}",
        "y".repeat(17 << 20)
    );
    std::fs::write(root.join("fine.json"), &fine).unwrap();

    let flagged = |report: &statefile::Report| -> Vec<String> {
        report
            .findings
            .iter()
            .filter(|f| {
                matches!(&f.problem, Problem::Unreadable { error }
                    if error.contains(statefile::RESERVED_KEY))
                    && matches!(f.action, Action::None)
            })
            .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    };
    let verified = statefile::verify(&root).unwrap();
    assert_eq!(flagged(&verified), ["a.json", "big.json"], "{verified:#?}");
    assert!(!verified.is_healthy());
    let recovered = statefile::recover(&root).unwrap();
    assert_eq!(
        flagged(&recovered),
        ["a.json", "big.json"],
        "{recovered:#?}"
    );
    assert_eq!(std::fs::read(root.join("a.json")).unwrap(), foreign);
    assert_eq!(
        std::fs::read(root.join("big.json")).unwrap(),
        big.as_bytes()
    );
    assert_eq!(
        d.read().unwrap_err().kind(),
        ErrorKind::Serialize,
        "reads refuse it"
    );

    // A write keeps the foreign version as the newest backup: listed as not readable
    // back, reported, and passed over by a restore of the newest good backup.
    std::fs::remove_file(root.join("big.json")).unwrap();
    std::fs::remove_file(root.join("fine.json")).unwrap();
    d.write(&json!({"v": 3})).unwrap();
    let backups = d.backups().unwrap();
    assert_eq!(backups.len(), 2, "{backups:#?}");
    assert!(!backups[0].parses && backups[1].parses, "{backups:#?}");
    let verified = statefile::verify(&root).unwrap();
    let flagged_backup = verified.findings.iter().any(|f| {
        f.path == backups[0].path
            && matches!(&f.problem, Problem::Unreadable { error } if error.contains(statefile::RESERVED_KEY))
    });
    assert!(flagged_backup, "{verified:#?}");
    let e = d.restore(&BackupRef::Number(1)).unwrap_err();
    assert!(e.to_string().contains("cannot restore"), "{e}");
    // (The foreign program wrote over the file of version 2 in place: the backup
    // before it is version 1.)
    d.restore(&BackupRef::NewestGood).unwrap();
    assert_eq!(d.read().unwrap(), json!({"v": 1}));
}

/// Regression: a reserved key followed by other keys of its object (`{"$serde_json::
/// private::Number": "12", "other": 1}`, valid JSON another program wrote) made
/// serde_json's read fail with a syntax error, so statefile called the file damaged: a
/// fallback read served the backup and an update wrote the backup's value over the
/// other program's write. It is refused like the key alone (Serialize), and nothing is
/// rolled back or written.
#[test]
fn a_reserved_key_followed_by_other_keys_is_not_a_damaged_file() {
    let tmp = tempfile::tempdir().unwrap();
    for (i, key) in [
        "$serde_json::private::Number",
        "\\u0024serde_json::private::Number",
        "$serde_json::private::RawValue",
    ]
    .into_iter()
    .enumerate()
    {
        let path = tmp.path().join(format!("d{i}.json"));
        let opts = Options::new().backups(2).fallback(true);
        let d = Doc::<Value>::open_with(&path, opts).unwrap();
        d.write(&json!({"v": 1})).unwrap();
        d.write(&json!({"v": 2})).unwrap();
        let foreign = format!(r#"{{"{key}": "12", "other": 1}}"#);
        std::fs::write(&path, &foreign).unwrap();
        let e = d.read().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Serialize, "{key}: {e}");
        assert!(e.to_string().contains("$serde_json::private::"), "{e}");
        let e = d
            .update(|v| {
                v["w"] = json!(1);
                Ok::<_, statefile::Error>(())
            })
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Serialize, "{key}: {e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), foreign, "{key}");
        let report = statefile::verify(tmp.path()).unwrap();
        assert!(
            report.findings.iter().any(|f| f.path == path
                && matches!(&f.problem, Problem::Unreadable { error }
                    if error.contains("$serde_json::private::"))),
            "{report:#?}"
        );
    }
}
