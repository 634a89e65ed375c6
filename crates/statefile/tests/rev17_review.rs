//! rev17 review of 57d8d04 (txfast): a transaction's lock starts from the resolution
//! its lock order was taken from.
//!
//! `Store::read_tx` and `Store::apply_tx` (`statefile tx`, `POST /v1/tx`) resolve every
//! document first, then lock them one after another in that order, each lock perhaps
//! waiting for another writer. Before 57d8d04 each lock resolved its name again, and a
//! name that resolved elsewhere by then (a symlink made or retargeted while the earlier
//! locks were waited for) started the transaction again. With the resolution kept, the
//! lock goes to what the name was when the transaction began: the transaction reads a
//! file the name no longer designates (a value the name never had at any one time), or
//! fails on a symlink where it had found nothing.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};
use statefile::{Options, Store};

mod common;

fn store_at(root: &Path) -> Store {
    let store = Store::open_with(root, Options::new().create_dirs(true)).unwrap();
    statefile::journal::enable(root, store.options(), common::small()).unwrap();
    store
}

/// Run `during` while another thread's transaction holds `held`'s lock and
/// `read_tx(names)` waits for it (`held` sorts first), then let both finish; the
/// read's values.
fn read_tx_while_held(
    store: &Store,
    held: &str,
    names: &[&str],
    during: impl FnOnce(),
) -> statefile::Result<Vec<Option<Value>>> {
    thread::scope(|s| {
        let (locked_tx, locked_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let holder = s.spawn(move || {
            store
                .transaction(|tx| {
                    tx.read::<Value>(held)?;
                    locked_tx.send(()).ok();
                    release_rx.recv().ok();
                    Ok::<_, statefile::Error>(())
                })
                .unwrap();
        });
        locked_rx.recv().unwrap();
        let reader = s.spawn(move || store.read_tx::<Value>(names));
        // The reader has resolved its names and waits for `held`.
        thread::sleep(Duration::from_millis(300));
        during();
        release_tx.send(()).unwrap();
        holder.join().unwrap();
        reader.join().unwrap()
    })
}

/// `b.json` was missing when the read began; while it waited for `a.json`, `b.json` was
/// made a symlink to a document. The read fails ("not a regular file": it locked and
/// looked at the name as resolved before the symlink was there) where it started again
/// and read the document before.
#[test]
fn read_tx_follows_a_symlink_made_while_it_waited() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let store = store_at(&root);
    store
        .doc::<Value>("a.json")
        .unwrap()
        .write(&json!(1))
        .unwrap();
    store
        .doc::<Value>("x.json")
        .unwrap()
        .write(&json!("x"))
        .unwrap();
    let r = read_tx_while_held(&store, "a.json", &["a.json", "b.json"], || {
        symlink("x.json", root.join("b.json")).unwrap();
    });
    assert_eq!(
        r.expect("read_tx after b.json became a symlink to x.json"),
        vec![Some(json!(1)), Some(json!("x"))]
    );
}

/// `link.json` pointed at `x.json` when the read began; while it waited for `a.json`,
/// `link.json` was pointed at `y.json` and then `x.json` written. The read answers the
/// new `x.json` for `link.json`: a value `link.json` never had (it led to the old
/// `x.json`, then to `y.json`).
#[test]
fn read_tx_follows_a_symlink_retargeted_while_it_waited() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let store = store_at(&root);
    store
        .doc::<Value>("a.json")
        .unwrap()
        .write(&json!(1))
        .unwrap();
    store
        .doc::<Value>("x.json")
        .unwrap()
        .write(&json!("old x"))
        .unwrap();
    store
        .doc::<Value>("y.json")
        .unwrap()
        .write(&json!("y"))
        .unwrap();
    symlink("x.json", root.join("link.json")).unwrap();
    let r = read_tx_while_held(&store, "a.json", &["a.json", "link.json"], || {
        std::fs::remove_file(root.join("link.json")).unwrap();
        symlink("y.json", root.join("link.json")).unwrap();
        store
            .doc::<Value>("x.json")
            .unwrap()
            .write(&json!("new x"))
            .unwrap();
    })
    .unwrap();
    assert_eq!(r, vec![Some(json!(1)), Some(json!("y"))]);
}

/// The same through `statefile tx`'s and `POST /v1/tx`'s code (`Store::apply_tx`): a put
/// to `link.json` whose symlink was retargeted while the transaction waited for
/// `a.json` writes the file the link no longer leads to.
#[test]
fn apply_tx_put_follows_a_symlink_retargeted_while_it_waited() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let store = store_at(&root);
    store
        .doc::<Value>("a.json")
        .unwrap()
        .write(&json!(1))
        .unwrap();
    store
        .doc::<Value>("x.json")
        .unwrap()
        .write(&json!("x"))
        .unwrap();
    store
        .doc::<Value>("y.json")
        .unwrap()
        .write(&json!("y"))
        .unwrap();
    symlink("x.json", root.join("link.json")).unwrap();
    let ops = statefile::parse_tx_ops(
        &json!([
            {"op": "get", "doc": "a.json"},
            {"op": "put", "doc": "link.json", "value": "written"},
        ]),
        &statefile::patch::Limits::default(),
    )
    .unwrap();
    thread::scope(|s| {
        let (locked_tx, locked_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let store = &store;
        let holder = s.spawn(move || {
            store
                .transaction(|tx| {
                    tx.read::<Value>("a.json")?;
                    locked_tx.send(()).ok();
                    release_rx.recv().ok();
                    Ok::<_, statefile::Error>(())
                })
                .unwrap();
        });
        locked_rx.recv().unwrap();
        let ops = &ops;
        let writer = s.spawn(move || {
            store
                .apply_tx(ops, &statefile::patch::Limits::default())
                .map_err(|e| e.to_string())
        });
        thread::sleep(Duration::from_millis(300));
        std::fs::remove_file(root.join("link.json")).unwrap();
        symlink("y.json", root.join("link.json")).unwrap();
        release_tx.send(()).unwrap();
        holder.join().unwrap();
        writer.join().unwrap().unwrap();
    });
    let read = |n: &str| store.doc::<Value>(n).unwrap().read().unwrap();
    assert_eq!(read("link.json"), json!("written"), "link.json");
    assert_eq!(read("x.json"), json!("x"), "x.json");
}

/// As [`read_tx_follows_a_symlink_retargeted_while_it_waited`], `a.json`'s lock held by
/// another process (`flock(1)` on its lock file) rather than another thread.
#[test]
fn read_tx_follows_a_symlink_retargeted_while_another_process_held_a_lock() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let store = store_at(&root);
    store
        .doc::<Value>("a.json")
        .unwrap()
        .write(&json!(1))
        .unwrap();
    store
        .doc::<Value>("x.json")
        .unwrap()
        .write(&json!("old x"))
        .unwrap();
    store
        .doc::<Value>("y.json")
        .unwrap()
        .write(&json!("y"))
        .unwrap();
    symlink("x.json", root.join("link.json")).unwrap();
    let Ok(mut child) = Command::new("flock")
        .arg(root.join(".a.json.lock"))
        .args(["sh", "-c", "echo held; sleep 1"])
        .stdout(Stdio::piped())
        .spawn()
    else {
        eprintln!("no flock(1): skipped");
        return;
    };
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "held");
    let r = thread::scope(|s| {
        let reader = s.spawn(|| store.read_tx::<Value>(&["a.json", "link.json"]));
        thread::sleep(Duration::from_millis(300));
        std::fs::remove_file(root.join("link.json")).unwrap();
        symlink("y.json", root.join("link.json")).unwrap();
        store
            .doc::<Value>("x.json")
            .unwrap()
            .write(&json!("new x"))
            .unwrap();
        let r = reader.join().unwrap();
        child.wait().unwrap();
        r
    })
    .unwrap();
    assert_eq!(r, vec![Some(json!(1)), Some(json!("y"))]);
}

// What held (passes before and after the fix).

/// Reads after the transaction's own write and delete, through a symlink alias and
/// through the name itself, see the change, not the bytes kept from the look.
#[test]
fn reads_through_aliases_see_the_transactions_own_changes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let store = store_at(&root);
    store
        .doc::<Value>("a.json")
        .unwrap()
        .write(&json!("a0"))
        .unwrap();
    store
        .doc::<Value>("sub/b.json")
        .unwrap()
        .write(&json!("b0"))
        .unwrap();
    symlink("a.json", root.join("la.json")).unwrap();
    symlink("sub", root.join("lsub")).unwrap();
    store
        .transaction(|tx| {
            assert_eq!(tx.read::<Value>("la.json")?, Some(json!("a0")));
            assert_eq!(tx.read::<Value>("lsub/b.json")?, Some(json!("b0")));
            tx.write("a.json", &json!("a1"))?;
            assert_eq!(tx.read::<Value>("la.json")?, Some(json!("a1")));
            tx.delete("lsub/b.json")?;
            assert_eq!(tx.read::<Value>("sub/b.json")?, None);
            tx.write("sub/b.json", &json!("b2"))?;
            assert_eq!(tx.read::<Value>("lsub/b.json")?, Some(json!("b2")));
            Ok::<_, statefile::Error>(())
        })
        .unwrap();
}

/// Past the 8 MiB kept, and for documents streamed (over 16 MiB), reads read the
/// file: every value read whole and right, and its version the one `version` reports.
#[test]
fn many_and_large_documents_read_right_past_the_kept_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let store = Store::open_with(&root, Options::new()).unwrap();
    let big = |n: usize, c: char| Value::String(std::iter::repeat_n(c, n).collect());
    let docs = [
        ("d0.json", big(15 << 20, 'a')),
        ("d1.json", big(15 << 20, 'b')),
        ("d2.json", big(15 << 20, 'c')),
        ("d3.json", big(20 << 20, 'd')),
        ("d4.json", json!({"small": true})),
    ];
    for (n, v) in &docs {
        store.doc::<Value>(n).unwrap().write(v).unwrap();
    }
    let names: Vec<&str> = docs.iter().map(|(n, _)| *n).collect();
    let got = store.read_tx::<Value>(&names).unwrap();
    for ((n, v), g) in docs.iter().zip(got) {
        assert!(g.as_ref() == Some(v), "{n}");
    }
    store
        .transaction(|tx| {
            for (n, _) in &docs {
                let bytes = std::fs::read(root.join(n)).unwrap();
                assert_eq!(tx.version(n)?, Some(statefile::Version::of(&bytes)), "{n}");
            }
            Ok::<_, statefile::Error>(())
        })
        .unwrap();
}

/// A missing directory (create_dirs off), a file where the directory should be: the
/// same kinds as a plain write.
#[test]
fn a_missing_directory_or_a_file_in_its_place_fails_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let store = Store::open_with(&root, Options::new()).unwrap();
    statefile::journal::enable(&root, store.options(), common::small()).unwrap();
    let e = store
        .transaction(|tx| tx.write("nodir/a.json", &json!(1)))
        .unwrap_err();
    assert_eq!(e.kind(), statefile::ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("does not exist"), "{e}");
    std::fs::write(root.join("file"), b"x").unwrap();
    let e = store
        .transaction(|tx| tx.write("file/a.json", &json!(1)))
        .unwrap_err();
    assert_eq!(e.kind(), statefile::ErrorKind::InvalidName, "{e}");
    assert!(!root.join("nodir").exists());
}
