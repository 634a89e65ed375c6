//! Group commit (issue 12): concurrent writes of one document in one process share one
//! durable write, and each call still sees what it would see alone.
//!
//! Most tests form a batch deterministically: the main thread holds the document's
//! lock, starts the calls one by one (each queued before the next starts, watched with
//! `Doc::queued`), then lets go: the first call leads, the rest join its batch in order.

mod common;

use common::{Call, in_one_batch, items, jobs, setup, wait_queued};
use std::collections::HashMap;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use statefile::{Doc, Durability, ErrorKind, Format, Options, Receipt, Store, Version};

fn push(path: &Path, item: &str) -> statefile::Result<Receipt> {
    jobs(path)
        .update(|v| {
            v["items"].as_array_mut().unwrap().push(json!(item));
            Ok::<_, statefile::Error>(())
        })
        .map(|(_, r)| r)
}

fn pusher<'a>(path: &'a Path, item: &'a str) -> Call<'a, statefile::Result<Receipt>> {
    Box::new(move || push(path, item))
}

fn start(path: &Path) -> Version {
    jobs(path).write(&json!({"items": []})).unwrap().version
}

/// The version `value` gets when written with the default (pretty) format.
fn version_of(value: &Value) -> Version {
    Version::of(&statefile::to_vec(value, Format::Pretty).unwrap())
}

#[test]
fn concurrent_updates_share_one_durable_write() {
    let (_d, path) = setup();
    let before = start(&path);
    let calls = ["a", "b", "c", "d"]
        .into_iter()
        .map(|i| pusher(&path, i))
        .collect();
    let receipts: Vec<Receipt> = in_one_batch(&path, calls)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(items(&path), ["a", "b", "c", "d"]);
    let now = jobs(&path).version().unwrap();
    for r in &receipts {
        assert_eq!(r.batch, 4, "one write answered all four: {r:?}");
        assert_eq!(r.version, now);
        assert_eq!(r.previous.as_ref(), Some(&before));
        assert_eq!(r.durability, Durability::Full);
    }
    // One replace: one backup, of the version before the batch.
    let backups = jobs(&path).backups().unwrap();
    assert_eq!(backups.len(), 1);
    assert_eq!(backups[0].version, before);
}

#[test]
fn a_lone_call_writes_at_once_alone() {
    let (_d, path) = setup();
    start(&path);
    let r = push(&path, "a").unwrap();
    assert_eq!(r.batch, 1);
    assert_eq!(r.queued, Duration::ZERO);
    assert_eq!(items(&path), ["a"]);
}

#[derive(Debug)]
struct Refused;

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("refused")
    }
}

impl From<statefile::Error> for Refused {
    fn from(_: statefile::Error) -> Refused {
        Refused
    }
}

/// How a change in the middle of a batch goes wrong.
#[derive(Debug, Clone, Copy)]
enum Wrong {
    Error,
    Panic,
}

/// A call that pushes `junk`, then fails as `how`: its edit must not survive.
fn failing<'a>(path: &'a Path, how: Wrong) -> Call<'a, String> {
    Box::new(move || {
        let r = panic::catch_unwind(AssertUnwindSafe(|| {
            jobs(path).update(|v| {
                v["items"].as_array_mut().unwrap().push(json!("junk"));
                match how {
                    Wrong::Error => Err::<(), _>(Refused),
                    Wrong::Panic => panic!("a change panicked"),
                }
            })
        }));
        match r {
            Ok(Ok(_)) => "ok".into(),
            Ok(Err(Refused)) => "refused".into(),
            Err(_) => "panicked".into(),
        }
    })
}

fn ok<'a>(path: &'a Path, item: &'a str) -> Call<'a, String> {
    Box::new(move || match push(path, item) {
        Ok(r) => format!("ok {}", r.batch),
        Err(e) => format!("{:?}", e.kind()),
    })
}

// A failing change (error or panic) fails its own call only, wherever it stands in the
// batch: first (the leader), in the middle, or last (the one that writes).
#[test]
fn a_change_that_fails_or_panics_fails_only_its_own_call() {
    for how in [Wrong::Error, Wrong::Panic] {
        let verdict = match how {
            Wrong::Error => "refused",
            Wrong::Panic => "panicked",
        };
        for at in 0..3 {
            let (_d, path) = setup();
            start(&path);
            let mut calls: Vec<Call<'_, String>> = vec![ok(&path, "x"), ok(&path, "y")];
            calls.insert(at, failing(&path, how));
            let got = in_one_batch(&path, calls);
            let mut want = vec!["ok 2".to_string(), "ok 2".to_string()];
            want.insert(at, verdict.to_string());
            assert_eq!(got, want, "{how:?} at {at}");
            assert_eq!(items(&path), ["x", "y"], "{how:?} at {at}");
            // The queue and the lock are free: the next call goes through at once.
            let r = push(&path, "z").unwrap();
            assert_eq!(r.batch, 1);
            assert!(jobs(&path).lock().is_ok());
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Gauge {
    items: Vec<String>,
    #[serde(default)]
    level: f64,
}

// A change that leaves a value JSON cannot hold (a non-finite number) fails its own
// call with Serialize, whether that is found before the next change or at the write.
#[test]
fn a_value_that_cannot_be_stored_fails_only_the_call_that_made_it() {
    for at in 0..3 {
        let (_d, path) = setup();
        start(&path);
        let nan: Call<'_, String> = Box::new(|| {
            let doc: Doc<Gauge> = Doc::open(&path).unwrap();
            match doc.update(|g| {
                g.items.push("nan".into());
                g.level = f64::NAN;
                Ok::<_, statefile::Error>(())
            }) {
                Ok(_) => "ok".into(),
                Err(e) => format!("{:?}", e.kind()),
            }
        });
        let mut calls = vec![ok(&path, "x"), ok(&path, "y")];
        calls.insert(at, nan);
        let got = in_one_batch(&path, calls);
        let mut want = vec!["ok 2".to_string(), "ok 2".to_string()];
        want.insert(at, "Serialize".into());
        assert_eq!(got, want, "at {at}");
        assert_eq!(items(&path), ["x", "y"], "at {at}");
    }
}

#[test]
fn a_batch_syncs_at_the_strongest_durability_of_its_calls() {
    let (_d, path) = setup();
    start(&path);
    let with = |d: Durability, item: &'static str| -> Call<'_, Receipt> {
        let path = path.clone();
        Box::new(move || {
            Doc::<Value>::open_with(&path, Options::new().durability(d))
                .unwrap()
                .update(|v| {
                    v["items"].as_array_mut().unwrap().push(json!(item));
                    Ok::<_, statefile::Error>(())
                })
                .unwrap()
                .1
        })
    };
    let r = in_one_batch(
        &path,
        vec![with(Durability::None, "a"), with(Durability::Full, "b")],
    );
    assert!(
        r.iter()
            .all(|r| r.batch == 2 && r.durability == Durability::Full)
    );
    let r = in_one_batch(
        &path,
        vec![with(Durability::None, "c"), with(Durability::Data, "d")],
    );
    assert!(
        r.iter()
            .all(|r| r.batch == 2 && r.durability == Durability::Data)
    );
    assert_eq!(items(&path), ["a", "b", "c", "d"]);
}

// A failed directory sync fails every call of its batch with Durability (the new
// version is visible, its durability unknown) and poisons the store of each caller.
#[test]
fn a_failed_directory_sync_fails_every_call_of_the_batch() {
    let (dir, path) = setup();
    let fs = common::Twisted::new();
    let store = Store::open_with(dir.path(), Options::new().fs(fs.clone())).unwrap();
    store
        .doc::<Value>("jobs.json")
        .unwrap()
        .write(&json!({"items": []}))
        .unwrap();
    *fs.fail_sync_dir.lock().unwrap() = Some(5);
    let calls: Vec<Call<'_, statefile::Error>> = ["a", "b", "c"]
        .into_iter()
        .map(|item| -> Call<'_, statefile::Error> {
            let store = &store;
            Box::new(move || {
                store
                    .doc::<Value>("jobs.json")
                    .unwrap()
                    .update(|v| {
                        v["items"].as_array_mut().unwrap().push(json!(item));
                        Ok::<_, statefile::Error>(())
                    })
                    .unwrap_err()
            })
        })
        .collect();
    let errors = in_one_batch(&path, calls);
    let visible = jobs(&path).version().unwrap();
    for e in &errors {
        assert_eq!(e.kind(), ErrorKind::Durability, "{e}");
        assert_eq!(e.version(), Some(&visible));
    }
    assert_eq!(items(&path), ["a", "b", "c"]);
    *fs.fail_sync_dir.lock().unwrap() = None;
    let refused = store
        .doc::<Value>("jobs.json")
        .unwrap()
        .write(&json!({}))
        .unwrap_err();
    assert_eq!(
        refused.kind(),
        ErrorKind::Durability,
        "the store is poisoned"
    );
}

// A batch whose value does not fit the disk fails every call of it, and nothing of it
// is visible. On a real, tiny tmpfs.
#[test]
fn a_full_disk_fails_every_call_of_the_batch_and_leaves_the_document() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let Some(_m) = common::tiny_tmpfs(&mnt, "64k") else {
        return;
    };
    let path = mnt.canonicalize().unwrap().join("jobs.json");
    let doc = jobs(&path);
    doc.write(&json!({"items": []})).unwrap();
    let before = std::fs::read(&path).unwrap();
    let big = "x".repeat(20_000);
    let calls: Vec<Call<'_, String>> = (0..4)
        .map(|_| -> Call<'_, String> {
            let (path, big) = (&path, &big);
            Box::new(move || match push(path, big) {
                Ok(_) => "ok".into(),
                Err(e) => format!("{:?}", e.kind()),
            })
        })
        .collect();
    let got = in_one_batch(&path, calls);
    assert_eq!(got, ["NoSpace"; 4]);
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert!(common::temps(&mnt).is_empty());
}

// Regression guard for compare-and-swap in a batch: a condition is checked only where
// the on-disk version is known (the start of a batch). A loser gets Conflict even when
// it queued behind a change of the same batch; a winner is never refused.
#[test]
fn compare_and_swap_stays_exact_in_a_batch() {
    let (_d, path) = setup();
    let v0 = start(&path);
    let cas = |expected: Version, item: &'static str| -> Call<'_, String> {
        let path = &path;
        Box::new(move || {
            match jobs(path).update_if(&expected, |v| {
                v["items"].as_array_mut().unwrap().push(json!(item));
                Ok::<_, statefile::Error>(())
            }) {
                Ok((_, r)) => format!("ok {}", r.batch),
                Err(e) => format!("{:?}", e.kind()),
            }
        })
    };
    // Two calls expect v0: the first wins, the second (which alone would come second
    // too) loses, although both queued before either wrote.
    let got = in_one_batch(
        &path,
        vec![cas(v0.clone(), "a"), cas(v0, "b"), ok(&path, "c")],
    );
    assert_eq!(got, ["ok 1", "Conflict", "ok 1"]);
    assert_eq!(items(&path), ["a", "c"]);

    // A call expecting the version that the change queued before it will write wins.
    let v_after = version_of(&json!({"items": ["a", "c", "d"]}));
    let got = in_one_batch(
        &path,
        vec![ok(&path, "d"), cas(v_after, "e"), ok(&path, "f")],
    );
    assert_eq!(got, ["ok 1", "ok 2", "ok 2"]);
    assert_eq!(items(&path), ["a", "c", "d", "e", "f"]);

    // write_if and create take the same rule.
    let now = jobs(&path).version().unwrap();
    let (p, now2) = (&path, now.clone());
    let got = in_one_batch(
        &path,
        vec![
            Box::new(
                move || match jobs(p).write_if(&now2, &json!({"items": ["w"]})) {
                    Ok(r) => format!("ok {}", r.batch),
                    Err(e) => format!("{:?}", e.kind()),
                },
            ) as Call<'_, String>,
            Box::new(
                move || match jobs(p).write_if(&now, &json!({"items": ["lost"]})) {
                    Ok(r) => format!("ok {}", r.batch),
                    Err(e) => format!("{:?}", e.kind()),
                },
            ),
            Box::new(move || match jobs(p).create(&json!({"items": ["new"]})) {
                Ok(r) => format!("ok {}", r.batch),
                Err(e) => format!("{:?}", e.kind()),
            }),
        ],
    );
    assert_eq!(got, ["ok 1", "Conflict", "Conflict"]);
    assert_eq!(items(&path), ["w"]);
}

#[test]
fn batches_are_bounded_by_calls_and_bytes() {
    let (_d, path) = setup();
    start(&path);
    let bounded = |opts: Options, item: String| -> Call<'_, usize> {
        let path = &path;
        Box::new(move || {
            Doc::<Value>::open_with(path, opts)
                .unwrap()
                .update(|v| {
                    v["items"].as_array_mut().unwrap().push(json!(item));
                    Ok::<_, statefile::Error>(())
                })
                .unwrap()
                .1
                .batch
        })
    };
    let two = Options::new().max_batch(2, u64::MAX);
    let calls = (0..5)
        .map(|i| bounded(two.clone(), format!("c{i}")))
        .collect();
    assert_eq!(in_one_batch(&path, calls), [2, 2, 2, 2, 1]);
    // A batch takes no call once its calls have worked on `bytes` bytes (here: one
    // document's worth), and always takes one.
    let tiny = Options::new().max_batch(64, 1);
    let calls = (5..8)
        .map(|i| bounded(tiny.clone(), format!("c{i}")))
        .collect();
    assert_eq!(in_one_batch(&path, calls), [1, 1, 1]);
    // Arrival order throughout.
    let want: Vec<String> = (0..8).map(|i| format!("c{i}")).collect();
    assert_eq!(items(&path), want);
}

#[test]
fn a_receipt_tells_how_long_its_call_queued() {
    let (_d, path) = setup();
    start(&path);
    let alone = Options::new().max_batch(1, u64::MAX);
    let doc = Doc::<Value>::open_with(&path, alone).unwrap();
    let (entered, inside) = std::sync::mpsc::channel::<()>();
    let (go, wait) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        let (doc, entered) = (&doc, entered);
        let first = s.spawn(move || {
            doc.update(|v| {
                v["items"].as_array_mut().unwrap().push(json!("a"));
                entered.send(()).unwrap();
                wait.recv().unwrap();
                Ok::<_, statefile::Error>(())
            })
            .unwrap()
            .1
        });
        inside.recv().unwrap();
        let second = s.spawn(move || {
            doc.update(|v| {
                v["items"].as_array_mut().unwrap().push(json!("b"));
                Ok::<_, statefile::Error>(())
            })
            .unwrap()
            .1
        });
        wait_queued(&jobs(&path), 1);
        std::thread::sleep(Duration::from_millis(100));
        go.send(()).unwrap();
        let (first, second) = (first.join().unwrap(), second.join().unwrap());
        assert_eq!((first.batch, second.batch), (1, 1));
        assert_eq!(first.queued, Duration::ZERO);
        assert!(
            second.queued >= Duration::from_millis(100),
            "queued behind the first batch: {:?}",
            second.queued
        );
        assert!(second.lock_wait < second.queued, "{second:?}");
    });
    assert_eq!(items(&path), ["a", "b"]);
}

#[derive(Debug, Serialize, Deserialize)]
struct Jobs {
    items: Vec<String>,
}

// Doc values of different types on one file batch together: each change sees the
// value as the calls before it left it.
#[test]
fn handles_of_different_types_share_one_batch() {
    let (_d, path) = setup();
    start(&path);
    let p = &path;
    let typed: Call<'_, String> = Box::new(move || {
        let doc: Doc<Jobs> = Doc::open(p).unwrap();
        let (n, r) = doc
            .update(|j| {
                j.items.push("typed".into());
                Ok::<_, statefile::Error>(j.items.len())
            })
            .unwrap();
        format!("ok {} saw {n}", r.batch)
    });
    let got = in_one_batch(&path, vec![ok(&path, "a"), typed, ok(&path, "b")]);
    assert_eq!(got, ["ok 3", "ok 3 saw 2", "ok 3"]);
    assert_eq!(items(&path), ["a", "typed", "b"]);
}

// Doc::write joins a batch as a change that sets the whole value.
#[test]
fn writes_join_a_batch_in_arrival_order() {
    let (_d, path) = setup();
    start(&path);
    let p = &path;
    let write = |items: Value| -> Call<'_, String> {
        Box::new(move || {
            let r = jobs(p).write(&json!({ "items": items })).unwrap();
            format!("ok {}", r.batch)
        })
    };
    let got = in_one_batch(
        &path,
        vec![ok(&path, "a"), write(json!(["w"])), ok(&path, "b")],
    );
    assert_eq!(got, ["ok 3"; 3]);
    assert_eq!(items(&path), ["w", "b"]);
    let got = in_one_batch(&path, vec![ok(&path, "c"), write(json!(["last"]))]);
    assert_eq!(got, ["ok 2"; 2]);
    assert_eq!(items(&path), ["last"]);
}

// The queue belongs to the document: handles opened by a symlink, through a store, or
// as separate Doc values share it.
#[test]
fn every_path_to_one_file_shares_its_queue() {
    let (dir, path) = setup();
    start(&path);
    let link = dir.path().join("link.json");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    let store = Store::open(dir.path()).unwrap();
    let via = |doc: Doc<Value>, item: &'static str| -> Call<'_, usize> {
        Box::new(move || {
            doc.update(|v| {
                v["items"].as_array_mut().unwrap().push(json!(item));
                Ok::<_, statefile::Error>(())
            })
            .unwrap()
            .1
            .batch
        })
    };
    let got = in_one_batch(
        &path,
        vec![
            via(jobs(&path), "a"),
            via(jobs(&link), "b"),
            via(store.doc("jobs.json").unwrap(), "c"),
        ],
    );
    assert_eq!(got, [3, 3, 3]);
    assert_eq!(items(&path), ["a", "b", "c"]);
}

#[test]
fn a_damaged_document_fails_updates_and_a_write_of_the_batch_replaces_it() {
    let (dir, path) = setup();
    std::fs::write(&path, b"{\"items\": [").unwrap();
    let p = &path;
    let got = in_one_batch(
        &path,
        vec![
            ok(&path, "a"),
            Box::new(move || {
                let r = jobs(p).write(&json!({"items": []})).unwrap();
                format!("ok {}", r.batch)
            }),
            ok(&path, "b"),
        ],
    );
    assert_eq!(got, ["Corrupt", "ok 2", "ok 2"]);
    assert_eq!(items(&path), ["b"]);
    assert_eq!(
        std::fs::read(dir.path().join(".jobs.json.corrupt")).unwrap(),
        b"{\"items\": ["
    );
}

// Regression (issue 10, help that fits): a read of a damaged document named it as the
// caller did, but an update named the resolved (absolute) path, because a batch read
// the document for every member by the resolved path. Each member's error now names it
// as that member did. A relative path needs its own working directory: a child process.
#[test]
fn an_update_of_a_damaged_document_names_it_as_each_caller_did() {
    let (dir, path) = setup();
    std::fs::write(&path, b"{\"items\": [").unwrap();
    let out = common::child("named-updates", &[path.display().to_string()])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("named-updates: checked"),
        "the child ran no check: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // A symlink and a path with `..` in it name the same file: one batch, three names.
    let link = path.with_file_name("link.json");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let dotted = path.parent().unwrap().join("sub/../jobs.json");
    let names = [&path, &link, &dotted];
    let got = in_one_batch(&path, names.iter().map(|p| failed_update(p)).collect());
    for (e, name) in got.iter().zip(names) {
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        assert!(
            e.message()
                .starts_with(&format!("cannot update {}: ", name.display())),
            "{e}"
        );
        assert_eq!(
            e.path(),
            Some(path.as_path()),
            "the resolved file, as a read's"
        );
    }
}

// Regression: a failed precondition, a create of a document that exists, a delete of one
// that does not, and a value that cannot be stored named the resolved path in their
// messages; like a damaged document's, they name the document as the caller did (one
// batch, three names of one file), and their `path()` is the file.
#[test]
fn refusals_name_the_document_as_each_caller_did() {
    let (dir, path) = setup();
    let start = start(&path);
    let link = path.with_file_name("link.json");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let dotted = path.parent().unwrap().join("sub/../jobs.json");
    let names = [&path, &link, &dotted];
    let stale = Version::of(b"not the document");
    let check = |e: &statefile::Error, kind: ErrorKind, name: &Path, says: &str| {
        assert_eq!(e.kind(), kind, "{e}");
        assert!(
            e.message()
                .starts_with(&format!("{says}{}", name.display())),
            "{e}"
        );
        assert_eq!(e.path(), Some(path.as_path()), "the resolved file: {e}");
    };
    let conflicts = in_one_batch(
        &path,
        names
            .iter()
            .map(|p| -> Call<'_, statefile::Error> {
                let stale = stale.clone();
                Box::new(move || jobs(p).write_if(&stale, &json!(1)).unwrap_err())
            })
            .collect(),
    );
    for (e, name) in conflicts.iter().zip(names) {
        check(e, ErrorKind::Conflict, name, "");
        assert!(e.message().contains(" changed: expected version "), "{e}");
    }
    let exists = in_one_batch(
        &path,
        names
            .iter()
            .map(|p| -> Call<'_, statefile::Error> {
                Box::new(move || jobs(p).create(&json!(1)).unwrap_err())
            })
            .collect(),
    );
    for (e, name) in exists.iter().zip(names) {
        check(e, ErrorKind::Conflict, name, "cannot create ");
    }
    // A map with non-string keys cannot be stored as JSON.
    for name in names {
        let doc: Doc<HashMap<(u8, u8), u8>> = Doc::open(name).unwrap();
        let e = doc.write(&HashMap::from([((1, 2), 3)])).unwrap_err();
        check(&e, ErrorKind::Serialize, name, "cannot write ");
        let e = jobs(name).delete_if(&stale).unwrap_err();
        check(&e, ErrorKind::Conflict, name, "");
    }
    assert_eq!(jobs(&path).version().unwrap(), start, "nothing written");
    std::fs::remove_file(&path).unwrap();
    let e = jobs(&dotted).delete().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(
        e.message()
            .starts_with(&format!("cannot delete {}: ", dotted.display())),
        "{e}"
    );
}

/// An update of `path` that must fail: its error.
fn failed_update(path: &Path) -> Call<'_, statefile::Error> {
    Box::new(move || {
        jobs(path)
            .update(|_| Ok::<_, statefile::Error>(()))
            .expect_err("the document is damaged")
    })
}

/// In a child whose working directory holds the damaged `jobs.json` (`args[0]`, its
/// absolute path): one batch with a relative and an absolute handle, each order.
fn named_updates_child(args: &[String]) {
    let abs = PathBuf::from(&args[0]);
    let rel = Path::new("jobs.json");
    let read = jobs(rel).read().unwrap_err();
    assert_eq!(read.kind(), ErrorKind::Corrupt, "{read}");
    assert!(
        read.message().starts_with("jobs.json is corrupt: "),
        "{read}"
    );
    for order in [[rel, abs.as_path()], [abs.as_path(), rel]] {
        let got = in_one_batch(&abs, order.iter().map(|p| failed_update(p)).collect());
        for (e, name) in got.iter().zip(order) {
            assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
            assert!(
                e.message()
                    .starts_with(&format!("cannot update {}: ", name.display())),
                "{e}"
            );
            assert_eq!(e.path(), read.path(), "the resolved file, as a read's: {e}");
            if name == rel {
                // Nor in its causes, as a CLI prints them.
                let mut cause: Option<&dyn std::error::Error> = Some(e);
                while let Some(c) = cause {
                    assert!(!c.to_string().contains(&args[0]), "an absolute path: {c}");
                    cause = c.source();
                }
            }
        }
    }
    println!("named-updates: checked");
}

#[test]
#[ignore = "run by other tests as a child process"]
fn child_entry() {
    let Some((role, args)) = common::child_role() else {
        return;
    };
    match role.as_str() {
        "named-updates" => named_updates_child(&args),
        other => panic!("unknown child role {other}"),
    }
}

// Real threads, real time: every update applied exactly once, and in real-time order
// (linearizable): if A returned before B began, A comes before B.
#[test]
fn concurrent_updates_are_exactly_once_and_linearizable() {
    let (_d, path) = setup();
    start(&path);
    let spans = Mutex::new(HashMap::new());
    let largest = Mutex::new(0);
    std::thread::scope(|s| {
        for t in 0..16 {
            let (path, spans, largest) = (&path, &spans, &largest);
            s.spawn(move || {
                for i in 0..60 {
                    let id = format!("{t}-{i}");
                    let began = Instant::now();
                    let r = push(path, &id).unwrap();
                    let ended = Instant::now();
                    spans.lock().unwrap().insert(id, (began, ended));
                    let mut l = largest.lock().unwrap();
                    *l = (*l).max(r.batch);
                }
            });
        }
    });
    let order = items(&path);
    let spans = spans.into_inner().unwrap();
    assert_eq!(order.len(), spans.len(), "each update once");
    let pos: HashMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    assert_eq!(pos.len(), spans.len(), "no update twice");
    for (a, (_, a_end)) in &spans {
        for (b, (b_start, _)) in &spans {
            if a_end < b_start {
                assert!(
                    pos[a.as_str()] < pos[b.as_str()],
                    "{a} returned before {b} began"
                );
            }
        }
    }
    assert!(
        largest.into_inner().unwrap() > 1,
        "sixteen threads never shared a write"
    );
}

// A lock held by another process (here: another file system instance, which the
// in-process queue cannot see) is waited for by a helper thread blocked in flock. A
// waiter that gives up leaves that helper behind; when the holder lets go, the helper
// must release the lock at once, or nobody could ever take it again.
#[test]
fn a_waiter_that_gave_up_never_keeps_the_lock() {
    let (_d, path) = setup();
    start(&path);
    let other =
        Doc::<Value>::open_with(&path, Options::new().fs(Arc::new(statefile::fs::OsFs))).unwrap();
    let held = other.lock().unwrap();
    let impatient = Doc::<Value>::open_with(
        &path,
        Options::new().lock_timeout(Duration::from_millis(50)),
    )
    .unwrap();
    for _ in 0..3 {
        assert_eq!(
            impatient
                .update(|_| Ok::<_, statefile::Error>(()))
                .unwrap_err()
                .kind(),
            ErrorKind::LockTimeout
        );
    }
    drop(held);
    // The helper (one, adopted by each later waiter) wins and lets go at once.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let probe = Doc::<Value>::open_with(
            &path,
            Options::new()
                .fs(Arc::new(statefile::fs::OsFs))
                .lock_timeout(Duration::from_millis(10)),
        )
        .unwrap();
        if probe.lock().is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the lock stayed held after the waiter gave up"
        );
    }
    assert_eq!(push(&path, "after").unwrap().batch, 1);
}
