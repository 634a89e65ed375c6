//! Reads in a journal tree after a power loss (issue 14): a process that only reads
//! still sees the replayed state. Before, a reader never opened the journal, so after a
//! reboot it served the version older than an acknowledged write, or failed with
//! `Corrupt` on an empty file, or silently served a backup.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{Value, json};
use statefile::journal::{self, JournalOptions};
use statefile::{Doc, ErrorKind, Options, Store};

use common::{fresh, small};

/// The child side of the tests below: `SF_CHILD_ROLE` says what to do.
#[test]
#[ignore = "entry point of the child processes the other tests spawn"]
fn child_entry() {
    let Some((role, args)) = common::child_role() else {
        return;
    };
    let path = PathBuf::from(&args[0]);
    match role.as_str() {
        "die-mid-commit" => {
            // Write {"v": 2} and die once its record is appended (slot in flight), before
            // the rename: a writer killed in the middle of its commit.
            let opts = Options::new().on_temp_created(|_| {
                let me = std::process::id().to_string();
                std::process::Command::new("kill")
                    .args(["-9", &me])
                    .status()?;
                std::thread::sleep(std::time::Duration::from_secs(60));
                Ok(())
            });
            let doc = Doc::<Value>::open_with(&path, opts).unwrap();
            let _ = doc.write(&json!({"v": 2}));
            std::process::exit(1);
        }
        "enable" => {
            let jopts = JournalOptions {
                mode: args[1].parse().unwrap(),
                ..small()
            };
            journal::enable(&path, &Options::new(), jopts).unwrap();
        }
        "write" => {
            let value: Value = serde_json::from_str(&args[1]).unwrap();
            Doc::<Value>::open(&path).unwrap().write(&value).unwrap();
        }
        "list" => {
            // Print what a listing of the store at args[0] gives; exit 9 on an error.
            let store = Store::open_without_scan(&path, Options::new()).unwrap();
            match store.list("") {
                Ok(names) => println!("list: {names:?}"),
                Err(e) => {
                    eprintln!("{:?}: {e}", e.kind());
                    std::process::exit(9);
                }
            }
        }
        "read" => {
            // Print what a read gives; exit with a code naming the error kind.
            match Doc::<Value>::open(&path).unwrap().read() {
                Ok(v) => {
                    println!("read: {v}");
                    std::process::exit(0);
                }
                Err(e) => {
                    eprintln!("{e}");
                    let code = if e.kind() == ErrorKind::PermissionDenied {
                        8
                    } else {
                        1
                    };
                    std::process::exit(code);
                }
            }
        }
        _ => panic!("unknown role {role}"),
    }
}

/// What the power loss left of the document's last write.
#[derive(Clone, Copy, Debug)]
enum Lost {
    /// The rename never reached the disk: the old file is back at the name.
    Rename,
    /// The rename did, the new file's data did not (a file system that does not write a
    /// file renamed over another out first, as ext4 does): the document is empty.
    Data,
}

/// In `dir` (a journal tree): `rel` written as `{"v": 1}` then `{"v": 2}` (both
/// acknowledged, through the journal), by a "process" that is gone; then a power loss
/// that lost `lost`, and a reboot.
///
/// The writes are made by child processes: a journal handle of this process (a test
/// binary forking children for other tests meanwhile) could keep the journal in use
/// past the "reboot".
fn written_then_power_lost(dir: &Path, rel: &str, lost: Lost) {
    if !dir.join(".statefile/journal").exists() {
        enable_in_child(dir, 0o600);
    }
    let path = dir.join(rel);
    write_in_child(&path, &json!({"v": 1}));
    let old = std::fs::read(&path).unwrap();
    write_in_child(&path, &json!({"v": 2}));
    match lost {
        Lost::Rename => std::fs::write(&path, old).unwrap(),
        Lost::Data => std::fs::write(&path, b"").unwrap(),
    }
    common::reboot_journal(dir);
}

fn enable_in_child(dir: &Path, mode: u32) {
    run_child("enable", &[dir.display().to_string(), mode.to_string()]);
}

fn write_in_child(path: &Path, value: &Value) {
    run_child("write", &[path.display().to_string(), value.to_string()]);
}

fn run_child(role: &str, args: &[String]) {
    let out = common::child(role, args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn is_replayed(dir: &Path, rel: &str) {
    let on_disk: Value = serde_json::from_slice(&std::fs::read(dir.join(rel)).unwrap()).unwrap();
    assert_eq!(on_disk, json!({"v": 2}), "the file itself was rewritten");
}

#[test]
fn read_json_after_a_power_loss_sees_the_acknowledged_write() {
    for lost in [Lost::Rename, Lost::Data] {
        let dir = tempfile::tempdir().unwrap();
        written_then_power_lost(dir.path(), "a.json", lost);
        let v: Value = statefile::read_json(dir.path().join("a.json"))
            .unwrap_or_else(|e| panic!("{lost:?}: {e}"));
        assert_eq!(v, json!({"v": 2}), "{lost:?}");
        is_replayed(dir.path(), "a.json");
    }
}

#[test]
fn doc_reads_after_a_power_loss_see_the_acknowledged_write() {
    type Read = fn(&Doc<Value>) -> statefile::Result<Value>;
    let reads: [(&str, Read); 5] = [
        ("read", |d| d.read()),
        ("read_versioned", |d| d.read_versioned().map(|v| v.value)),
        ("read_cached", |d| d.read_cached().map(|v| v.value.clone())),
        ("read_bytes", |d| {
            d.read_bytes()
                .map(|v| serde_json::from_slice(&v.value).unwrap())
        }),
        ("read_or_default", |d| d.read_or_default()),
    ];
    for lost in [Lost::Rename, Lost::Data] {
        for (what, read) in reads {
            let dir = tempfile::tempdir().unwrap();
            written_then_power_lost(dir.path(), "a.json", lost);
            let doc = Doc::<Value>::open_with(dir.path().join("a.json"), fresh()).unwrap();
            let v = read(&doc).unwrap_or_else(|e| panic!("{what} {lost:?}: {e}"));
            assert_eq!(v, json!({"v": 2}), "{what} {lost:?}");
        }
    }
}

#[test]
fn the_version_after_a_power_loss_is_the_acknowledged_one() {
    let dir = tempfile::tempdir().unwrap();
    written_then_power_lost(dir.path(), "a.json", Lost::Rename);
    let doc = Doc::<Value>::open_with(dir.path().join("a.json"), fresh()).unwrap();
    let want = statefile::Version::of(b"{\n  \"v\": 2\n}\n");
    assert_eq!(doc.version().unwrap(), want);
}

#[test]
fn a_store_opened_without_scan_reads_the_acknowledged_write() {
    for lost in [Lost::Rename, Lost::Data] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("jobs")).unwrap();
        written_then_power_lost(dir.path(), "jobs/1.json", lost);
        let store = Store::open_without_scan(dir.path(), fresh()).unwrap();
        let doc = store.doc::<Value>("jobs/1.json").unwrap();
        assert_eq!(doc.read().unwrap(), json!({"v": 2}), "{lost:?}");
    }
}

// A fallback read of an empty document served the backup (`{"v": 1}`, the version the
// acknowledged write replaced) as if that were the best there was.
#[test]
fn a_fallback_read_does_not_serve_a_backup_the_journal_supersedes() {
    let dir = tempfile::tempdir().unwrap();
    written_then_power_lost(dir.path(), "a.json", Lost::Data);
    let doc = Doc::<Value>::open_with(dir.path().join("a.json"), fresh().fallback(true)).unwrap();
    let v = doc.read_versioned().unwrap();
    assert_eq!(v.value, json!({"v": 2}));
    assert!(v.recovered.is_none(), "{:?}", v.recovered);
}

#[test]
fn a_read_through_a_symlink_from_outside_the_tree_is_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    written_then_power_lost(&tree, "a.json", Lost::Rename);
    let link = dir.path().join("link.json");
    std::os::unix::fs::symlink(tree.join("a.json"), &link).unwrap();
    let doc = Doc::<Value>::open_with(&link, fresh()).unwrap();
    assert_eq!(doc.read().unwrap(), json!({"v": 2}));
}

#[test]
fn a_read_given_a_bare_relative_path_is_replayed() {
    // The free functions take any path: a relative one resolves against the working
    // directory, which this test cannot change (other tests run in threads), so it
    // names the tree through `..` segments instead of a bare absolute path.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    written_then_power_lost(dir.path(), "a.json", Lost::Rename);
    let v: Value = statefile::read_json(dir.path().join("sub/../a.json")).unwrap();
    assert_eq!(v, json!({"v": 2}));
}

#[test]
fn a_read_in_a_tree_without_a_journal_is_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let doc = Doc::<Value>::open_with(dir.path().join("a.json"), fresh()).unwrap();
    assert_eq!(doc.read().unwrap_err().kind(), ErrorKind::NotFound);
    doc.write(&json!(1)).unwrap();
    assert_eq!(doc.read().unwrap(), json!(1));
    assert!(!dir.path().join(".statefile").exists());
}

/// Run the `die-mid-commit` child on `path` and wait for its death.
fn writer_dies_mid_commit(path: &Path) {
    let status = common::child("die-mid-commit", &[path.display().to_string()])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the writer was killed");
}

// A reader in a process that has the journal open (no crash of its own) read the
// version before a commit whose writer died mid-way, which the next writer applies.
#[test]
fn a_read_applies_the_commit_of_a_writer_that_died() {
    let dir = tempfile::tempdir().unwrap();
    let opts = fresh();
    journal::enable(dir.path(), &opts, small()).unwrap();
    let path = dir.path().join("a.json");
    let doc = Doc::<Value>::open_with(&path, opts.clone()).unwrap();
    doc.write(&json!({"v": 1})).unwrap();
    // The journal stays open in this process (`opts` keeps its handle): only the slot
    // in the shared state tells of the dead writer's commit.
    let cached = Doc::<Value>::open_with(&path, opts.clone()).unwrap();
    assert_eq!(cached.read_cached().unwrap().value, json!({"v": 1}));
    writer_dies_mid_commit(&path);
    let raw: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(raw, json!({"v": 1}), "the writer died before its rename");
    assert_eq!(cached.read_cached().unwrap().value, json!({"v": 2}));
    assert_eq!(doc.read().unwrap(), json!({"v": 2}));
    let status = journal::status(dir.path(), &opts).unwrap().unwrap();
    assert!(status.to_replay.is_empty(), "{status:?}");
}

/// A journal tree (directories `mine` and `other` in it) where this process wrote
/// `a.json`, so it has the journal open and only the shared state's slot tells of a
/// writer that then died mid-commit writing `{"v": 2}` to `other/b.json`. Returns the
/// tree, the options and a store over it.
fn a_dead_commit_in_other() -> (tempfile::TempDir, Options, Store) {
    let dir = tempfile::tempdir().unwrap();
    let opts = fresh();
    journal::enable(dir.path(), &opts, small()).unwrap();
    let store = Store::open_without_scan(dir.path(), opts.clone()).unwrap();
    store
        .doc::<Value>("a.json")
        .unwrap()
        .write(&json!(1))
        .unwrap();
    std::fs::create_dir(dir.path().join("mine")).unwrap();
    std::fs::create_dir(dir.path().join("other")).unwrap();
    writer_dies_mid_commit(&dir.path().join("other/b.json"));
    (dir, opts, store)
}

// A listing in a process that has the journal open left out a document that a dead
// writer's commit creates, which a read of that document (or the next writer) applies:
// the listing and a read disagreed on whether it exists.
#[test]
fn a_listing_applies_the_commit_of_a_writer_that_died() {
    let (dir, opts, store) = a_dead_commit_in_other();
    let path = dir.path().join("other/b.json");
    assert!(!path.exists(), "the writer died before its rename");
    // A listing of another directory leaves the commit alone.
    let mine = Store::open_without_scan(dir.path().join("mine"), opts.clone()).unwrap();
    assert!(mine.list("").unwrap().is_empty());
    assert!(!path.exists());
    assert_eq!(store.list("").unwrap(), ["a.json", "other/b.json"]);
    let raw: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(raw, json!({"v": 2}));
    let status = journal::status(dir.path(), &opts).unwrap().unwrap();
    assert!(status.to_replay.is_empty(), "{status:?}");
}

#[test]
fn a_read_while_a_live_writer_holds_the_lock_does_not_wait_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let opts = fresh().lock_timeout(std::time::Duration::from_secs(30));
    journal::enable(dir.path(), &opts, small()).unwrap();
    let path = dir.path().join("a.json");
    let doc = Doc::<Value>::open_with(&path, opts.clone()).unwrap();
    doc.write(&json!({"v": 1})).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let done_rx = std::sync::Mutex::new(done_rx);
    let writer = {
        let path = path.clone();
        // A writer in the middle of its commit (record appended, slot in flight) that
        // waits there until the reader has read.
        let opts = opts.clone().on_temp_created(move |_| {
            tx.clone().send(()).unwrap();
            done_rx.lock().unwrap().recv().unwrap();
            Ok(())
        });
        std::thread::spawn(move || {
            Doc::<Value>::open_with(&path, opts)
                .unwrap()
                .write(&json!({"v": 2}))
                .unwrap();
        })
    };
    rx.recv().unwrap();
    let started = std::time::Instant::now();
    let reader = Doc::<Value>::open_with(&path, fresh()).unwrap();
    assert_eq!(
        reader.read().unwrap(),
        json!({"v": 1}),
        "not acknowledged yet"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    done_tx.send(()).unwrap();
    writer.join().unwrap();
    assert_eq!(reader.read().unwrap(), json!({"v": 2}));
}

#[test]
fn a_store_listing_after_a_power_loss_shows_a_document_created_since_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    enable_in_child(dir.path(), 0o600);
    write_in_child(&dir.path().join("new.json"), &json!(1));
    // The directory entry never reached the disk.
    std::fs::remove_file(dir.path().join("new.json")).unwrap();
    std::fs::remove_file(dir.path().join(".new.json.lock")).unwrap();
    common::reboot_journal(dir.path());
    let store = Store::open_without_scan(dir.path(), fresh()).unwrap();
    assert_eq!(store.list("").unwrap(), ["new.json"]);
}

fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A read by another user (nobody) in a child process: its exit code and output.
fn read_as_nobody(path: &Path) -> (i32, String, String) {
    let out = common::child("read", &[path.display().to_string()])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// A user who may read the documents but not write the journal cannot replay it: the
// read says so (PermissionDenied) unless the journal shows it was recovered since boot.
#[test]
fn a_reader_who_may_not_write_the_journal_reads_only_what_is_known_replayed() {
    if !common::is_root() {
        common::skip::skip("needs root to run a child as another user");
        return;
    }
    let probe = common::child("read", &["/nonexistent.json".into()])
        .uid(65534)
        .gid(65534)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if probe.is_err() {
        common::skip::skip("the test binary cannot be run as another user here");
        return;
    }
    for journal_mode in [0o600, 0o644] {
        let base = tempfile::tempdir().unwrap();
        chmod(base.path(), 0o755);
        let dir = base.path();
        enable_in_child(dir, journal_mode);
        written_then_power_lost(dir, "a.json", Lost::Rename);
        let path = dir.join("a.json");
        let (code, out, err) = read_as_nobody(&path);
        assert_eq!(code, 8, "{journal_mode:o}: {out} {err}");
        assert!(err.contains("may not open"), "{err}");
        assert!(err.contains("statefile recover"), "{err}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"{\n  \"v\": 1\n}\n",
            "nothing changed"
        );
        // A process that may write opens the journal (replaying it): `journal-boot` now
        // says the journal was replayed in this boot. It is readable by everyone (it
        // holds no document's content, and nobody locks it); the shared state is as
        // private as the journal (whoever may read it may lock it, see the next test).
        let boot = dir.join(".statefile/journal-boot");
        assert_eq!(
            Doc::<Value>::open_with(&path, fresh())
                .unwrap()
                .read()
                .unwrap(),
            json!({"v": 2})
        );
        // Read for a class that may not write is dropped from every journal file:
        // whoever may open one may hold its lock.
        for name in ["journal", "journal-shm", "journal-users", "journal-ckpt"] {
            assert_eq!(mode_of(&dir.join(".statefile").join(name)), 0o600, "{name}");
        }
        assert_eq!(mode_of(&boot), 0o644);
        let (code, out, err) = read_as_nobody(&path);
        assert_eq!(code, 0, "{journal_mode:o}: {out} {err}");
        assert!(out.contains(r#"read: {"v":2}"#), "{out}");
        if journal_mode == 0o600 {
            // Without `journal-boot` (a journal not opened by a writer since this rule),
            // nothing the reader may read shows the replay: refused, nothing changed.
            std::fs::remove_file(&boot).unwrap();
            let (code, out, err) = read_as_nobody(&path);
            assert_eq!(code, 8, "{out} {err}");
            assert!(err.contains("replayed since the machine booted"), "{err}");
            assert!(
                !err.contains("chmod"),
                "no advice to open the files up: {err}"
            );
            // The next process that opens the journal to write writes it again.
            write_in_child(&dir.join("b.json"), &json!({"b": 1}));
            assert_eq!(mode_of(&boot), 0o644);
            let (code, out, err) = read_as_nobody(&path);
            assert_eq!(code, 0, "{out} {err}");
        }
    }
}

// `flock(2)` needs only read access, and every commit takes the shared state's lock: a
// shared state readable by another user (as statefile made it for a while) let any
// local user stop every writer of the tree, for as long as they liked (the writers
// waited without a timeout). Now it is as private as the journal, an old one is
// narrowed when a writer opens the journal, and `journal-boot`, which readers of other
// users use instead, is locked by nobody.
#[test]
fn another_user_cannot_stop_the_writers_by_locking_the_journals_files() {
    if !common::is_root() {
        common::skip::skip("needs root to run a process as another user");
        return;
    }
    let base = tempfile::tempdir().unwrap();
    chmod(base.path(), 0o755);
    let dir = base.path();
    enable_in_child(dir, 0o600);
    // A journal whose shared state was made readable by everyone, as 583858e did, and
    // whose other files were too (a journal enabled with mode 0644 before this rule).
    let shm = dir.join(".statefile/journal-shm");
    for name in ["journal", "journal-shm", "journal-users", "journal-ckpt"] {
        chmod(&dir.join(".statefile").join(name), 0o644);
    }
    write_in_child(&dir.join("a.json"), &json!({"v": 1}));
    for name in ["journal", "journal-shm", "journal-users", "journal-ckpt"] {
        assert_eq!(
            mode_of(&dir.join(".statefile").join(name)),
            0o600,
            "{name} narrowed by the writer that opened the journal"
        );
    }
    let boot = dir.join(".statefile/journal-boot");
    assert_eq!(mode_of(&boot), 0o644);
    // nobody cannot even open the shared state to lock it.
    let out = std::process::Command::new("flock")
        .arg("-x")
        .arg(&shm)
        .arg("true")
        .uid(65534)
        .gid(65534)
        .output();
    let Ok(out) = out else {
        common::skip::skip("flock(1) is missing");
        return;
    };
    assert!(!out.status.success(), "nobody locked the shared state");
    // nobody may lock journal-boot (it is readable): the writers do not care.
    let mut holder = std::process::Command::new("flock")
        .arg("-x")
        .arg(&boot)
        .args(["sleep", "30"])
        .uid(65534)
        .gid(65534)
        .spawn()
        .unwrap();
    let held = || {
        !std::process::Command::new("flock")
            .args(["-n", "-x"])
            .arg(&boot)
            .arg("true")
            .status()
            .unwrap()
            .success()
    };
    let waiting = std::time::Instant::now();
    while !held() {
        assert!(
            waiting.elapsed() < std::time::Duration::from_secs(10),
            "nobody never got journal-boot's lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let started = std::time::Instant::now();
    write_in_child(&dir.join("a.json"), &json!({"v": 2}));
    let took = started.elapsed();
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(
        took < std::time::Duration::from_secs(5),
        "a write waited {took:?} while another user held journal-boot's lock"
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&std::fs::read(dir.join("a.json")).unwrap()).unwrap(),
        json!({"v": 2})
    );
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

// A dead writer's commit that cannot be applied (something else than a regular file is
// now at its document's name) made every listing of the tree fail, even of a directory
// (or a store rooted in a directory) the commit does not touch, once listings applied
// dead writers' commits. A listing now looks only at commits naming documents below
// its directory, and logs one it cannot apply instead of failing.
#[test]
fn a_listing_is_not_failed_by_a_dead_commit_it_cannot_apply() {
    let (dir, opts, store) = a_dead_commit_in_other();
    let path = dir.path().join("other/b.json");
    // A hostile (or careless) program puts a FIFO where the dead commit writes.
    let made = std::process::Command::new("mkfifo").arg(&path).status();
    assert!(made.unwrap().success());
    let mine = Store::open_without_scan(dir.path().join("mine"), opts.clone()).unwrap();
    let r = mine.list("");
    assert!(r.is_ok(), "listing mine/ (untouched by the commit): {r:?}");
    let r = store.list("");
    assert!(r.is_ok(), "listing the tree: {r:?}");
}

// A user who may open the journal (journal mode 0666) but not write every directory
// of the tree lists its own directory, with a dead writer's commit in flight in a
// directory it may not write.
#[test]
fn a_listing_by_a_user_who_cannot_write_a_dead_commits_directory() {
    if !common::is_root() {
        common::skip::skip("needs root to run a child as another user");
        return;
    }
    let base = tempfile::tempdir().unwrap();
    chmod(base.path(), 0o755);
    let dir = base.path();
    let opts = fresh();
    let jopts = JournalOptions {
        mode: 0o666,
        ..small()
    };
    journal::enable(dir, &opts, jopts).unwrap();
    // This process keeps the journal open: the child joins it, it does not recover it.
    let store = Store::open_without_scan(dir, opts.clone()).unwrap();
    store
        .doc::<Value>("a.json")
        .unwrap()
        .write(&json!(1))
        .unwrap();
    std::fs::create_dir(dir.join("roots")).unwrap();
    chmod(&dir.join("roots"), 0o755);
    std::fs::create_dir(dir.join("nobodys")).unwrap();
    std::os::unix::fs::chown(dir.join("nobodys"), Some(65534), Some(65534)).unwrap();
    writer_dies_mid_commit(&dir.join("roots/b.json"));
    let out = common::child("list", &[dir.join("nobodys").display().to_string()])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{:?} {stdout} {stderr}", out.status);
    assert!(stdout.contains("list: []"), "{stdout}");
}

// A listing while a live writer of this process is between its append and its rename
// does not wait for it and does not apply its commit.
#[test]
fn a_listing_while_a_live_writer_is_mid_commit_does_not_wait() {
    let dir = tempfile::tempdir().unwrap();
    let opts = fresh().lock_timeout(std::time::Duration::from_secs(30));
    journal::enable(dir.path(), &opts, small()).unwrap();
    let store = Store::open_without_scan(dir.path(), opts.clone()).unwrap();
    store
        .doc::<Value>("a.json")
        .unwrap()
        .write(&json!(1))
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let done_rx = std::sync::Mutex::new(done_rx);
    let path = dir.path().join("b.json");
    let writer = {
        let opts = opts.clone().on_temp_created(move |_| {
            tx.clone().send(()).unwrap();
            done_rx.lock().unwrap().recv().unwrap();
            Ok(())
        });
        std::thread::spawn(move || {
            Doc::<Value>::open_with(&path, opts)
                .unwrap()
                .write(&json!(2))
                .unwrap();
        })
    };
    rx.recv().unwrap();
    let started = std::time::Instant::now();
    assert_eq!(store.list("").unwrap(), ["a.json"]);
    let other = Store::open_without_scan(dir.path(), fresh()).unwrap();
    assert_eq!(other.list("").unwrap(), ["a.json"]);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    done_tx.send(()).unwrap();
    writer.join().unwrap();
    assert_eq!(store.list("").unwrap(), ["a.json", "b.json"]);
}

// The same with a dead writer's record whose data bytes are damaged in the journal
// file: listings succeed (only a read of other/b.json is refused).
#[test]
fn a_listing_is_not_failed_by_a_dead_commit_with_damaged_data() {
    let (dir, opts, store) = a_dead_commit_in_other();
    let j = dir.path().join(".statefile/journal");
    let mut b = std::fs::read(&j).unwrap();
    let needle = b"\"v\": 2";
    let at = b
        .windows(needle.len())
        .rposition(|w| w == needle)
        .expect("the dead commit's data in the journal");
    b[at + 5] = b'3';
    std::fs::write(&j, b).unwrap();
    let mine = Store::open_without_scan(dir.path().join("mine"), opts.clone()).unwrap();
    let r = mine.list("");
    assert!(r.is_ok(), "listing mine/ (untouched by the commit): {r:?}");
    let r = store.list("");
    assert!(r.is_ok(), "listing the tree: {r:?}");
    assert_eq!(
        store.doc::<Value>("a.json").unwrap().read().unwrap(),
        json!(1),
        "a read of another document works"
    );
}

// A user who may not open the journal (0600) still lists, with a dead writer's commit
// in flight: the journal is never opened, so nothing is adopted.
#[test]
fn a_read_only_user_still_lists_with_a_dead_commit_in_flight() {
    if !common::is_root() {
        common::skip::skip("needs root to run a child as another user");
        return;
    }
    let base = tempfile::tempdir().unwrap();
    chmod(base.path(), 0o755);
    let dir = base.path();
    let opts = fresh();
    journal::enable(dir, &opts, small()).unwrap();
    let store = Store::open_without_scan(dir, opts.clone()).unwrap();
    store
        .doc::<Value>("a.json")
        .unwrap()
        .write(&json!(1))
        .unwrap();
    writer_dies_mid_commit(&dir.join("b.json"));
    let out = common::child("list", &[dir.display().to_string()])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(r#"list: ["a.json"]"#), "{stdout}");
}

// After a writer died mid-commit, a FIFO put at its document's name (by anyone who
// may create files in that directory) made every checkpoint fail on it; once the ring
// was full, every write in the tree failed, naming the FIFO, for as long as it stayed.
// The commit's entry is now skipped with a warning, as one whose directory is gone.
#[test]
fn a_fifo_at_a_dead_commits_document_does_not_stop_the_tree() {
    let (dir, opts, store) = a_dead_commit_in_other();
    let a = store.doc::<Value>("a.json").unwrap();
    let path = dir.path().join("other/b.json");
    let made = std::process::Command::new("mkfifo").arg(&path).status();
    assert!(made.unwrap().success());
    journal::checkpoint(dir.path(), &opts).unwrap();
    // Several times round the 64 KiB ring.
    for i in 0..300 {
        let v = json!({"i": i, "pad": "x".repeat(1000)});
        a.write(&v).unwrap_or_else(|e| panic!("write {i}: {e}"));
    }
    let status = journal::status(dir.path(), &opts).unwrap().unwrap();
    assert_eq!(status.in_flight, 0, "{status:?}");
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert_eq!(a.read().unwrap()["i"], json!(299));
}

// The same after a power loss: a FIFO put at a document the journal would replay made
// the recovery fail, so no process could open the store (or write in the tree) while it
// stayed. The document is skipped with a warning; the others are replayed.
#[test]
fn a_fifo_at_a_document_to_replay_does_not_stop_the_recovery() {
    let dir = tempfile::tempdir().unwrap();
    enable_in_child(dir.path(), 0o600);
    write_in_child(&dir.path().join("a.json"), &json!({"v": 1}));
    let a_old = std::fs::read(dir.path().join("a.json")).unwrap();
    write_in_child(&dir.path().join("a.json"), &json!({"v": 2}));
    write_in_child(&dir.path().join("f.json"), &json!({"v": 2}));
    std::fs::write(dir.path().join("a.json"), a_old).unwrap();
    let f = dir.path().join("f.json");
    std::fs::remove_file(&f).unwrap();
    let made = std::process::Command::new("mkfifo").arg(&f).status();
    assert!(made.unwrap().success());
    common::reboot_journal(dir.path());
    let store = Store::open_with(dir.path(), fresh()).unwrap();
    let a = store.doc::<Value>("a.json").unwrap();
    assert_eq!(a.read().unwrap(), json!({"v": 2}));
    let e = store.doc::<Value>("f.json").unwrap().read().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidName, "{e}");
    a.write(&json!({"v": 3})).unwrap();
}

/// A dead writer's commit applied (by a read, here) over a huge file planted at the
/// document's name since: the adoption looks at it within the reader's size limit
/// (`Options::max_document_bytes`), replaces it unread and keeps it aside, as a write
/// does; it hashed the whole file first.
#[test]
fn a_dead_writers_commit_over_a_planted_huge_file_is_applied_without_hashing_it() {
    const HUGE: u64 = 20 << 30;
    let dir = tempfile::tempdir().unwrap();
    let opts = fresh().max_document_bytes(1 << 20);
    journal::enable(dir.path(), &opts, small()).unwrap();
    let path = dir.path().join("a.json");
    let doc = Doc::<Value>::open_with(&path, opts.clone()).unwrap();
    doc.write(&json!({"v": 1})).unwrap();
    writer_dies_mid_commit(&path);
    std::fs::remove_file(&path).unwrap();
    common::sparse(&path, HUGE);
    let started = std::time::Instant::now();
    assert_eq!(doc.read().unwrap(), json!({"v": 2}));
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(5),
        "the adoption took {took:?}: the planted file was hashed"
    );
    assert_eq!(
        std::fs::metadata(dir.path().join(".a.json.corrupt"))
            .unwrap()
            .len(),
        HUGE,
        "kept aside"
    );
}
