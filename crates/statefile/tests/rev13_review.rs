//! rev13 review: one logical operation that resolves a document's path more than once
//! and acts on the second resolution with what it learnt from the first (the bug class
//! of 6a78eba). Documents are symlinks inside the store (allowed); another "process"
//! retargets a symlink, renames a directory or swaps one for a symlink at the worst
//! moment, reached deterministically through a hook the library offers (a
//! transaction's closure, an update's closure, `Options::on_temp_created`, the answer
//! callback of `Store::apply_tx_answering`).
//!
//! A passing test is evidence that the operation is safe; a failing one is a finding.

mod common;
use common::{get, journaled, journaled_with, n_plus_one, put, retarget};

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};
use statefile::journal;
use statefile::patch::Limits;
use statefile::{BackupRef, Store, TxOpError};

// ---------------------------------------------------------------------------------
// Store::transaction: findings.

/// FINDING. The fix of 6a78eba finds a held document by the name it was *first* locked
/// under only. A name that reached an already-held document through another name (an
/// alias: `z.json -> x.json`, read after `x.json`) is resolved again on every later
/// `tx.read`/`tx.write`: retargeted in between, the write goes to the other file, whose
/// value the transaction never read. y.json is overwritten with a value computed from
/// x.json (a lost update), x.json keeps its old value, no error.
#[test]
fn a_transaction_writes_an_alias_where_it_read_it_even_when_the_alias_was_reached_second() {
    let dir = tempfile::tempdir().unwrap();
    let store = journaled(dir.path());
    put(&store, "x.json", json!({"n": 1}));
    put(&store, "y.json", json!({"n": 100}));
    let link = dir.path().join("z.json");
    std::os::unix::fs::symlink("x.json", &link).unwrap();
    store
        .transaction(|tx| {
            // The real name first (held as "x.json"), then the alias, which finds the
            // same held document by its resolved path.
            let _: Option<Value> = tx.read("x.json")?;
            let z: Value = tx.read("z.json")?.unwrap();
            // Another process points the alias at y.json (sorting after x.json).
            retarget(&link, "y.json");
            tx.write("z.json", &n_plus_one(&z))
        })
        .unwrap();
    assert_eq!(
        get(&store, "y.json"),
        json!({"n": 100}),
        "y.json was never read by the transaction: it must not be overwritten"
    );
    assert_eq!(
        get(&store, "x.json"),
        json!({"n": 2}),
        "written where it was read"
    );
}

/// FINDING (same root cause, read side): a transaction that read the alias from the
/// held file answers `version_seen` of the alias from another file. Value of x.json,
/// version of y.json: a client that writes back with that version as its If-Match
/// passes the check on y.json with a value built from x.json.
#[test]
fn a_transaction_reports_the_version_of_the_file_whose_value_it_read_for_an_alias() {
    let dir = tempfile::tempdir().unwrap();
    let store = journaled(dir.path());
    put(&store, "x.json", json!({"n": 1}));
    put(&store, "y.json", json!({"n": 100}));
    let vx = store.doc::<Value>("x.json").unwrap().version().unwrap();
    let link = dir.path().join("z.json");
    std::os::unix::fs::symlink("x.json", &link).unwrap();
    let (seen, _) = store
        .transaction(|tx| {
            let _: Option<Value> = tx.read("x.json")?;
            let z: Value = tx.read("z.json")?.unwrap();
            retarget(&link, "y.json");
            let v = tx.version_seen("z.json")?;
            Ok::<_, statefile::Error>((z, v))
        })
        .unwrap();
    assert_eq!(seen.0, json!({"n": 1}));
    assert_eq!(
        seen.1,
        Some(vx),
        "the version of the value read (x.json's), not y.json's"
    );
}

/// FINDING (`statefile tx` / `POST /v1/tx`, through `Store::apply_tx`): a `get` of an
/// alias locked up front under the real name answers x.json's value with y.json's
/// version once the alias is retargeted during the transaction (here: while the answer
/// of that get is being streamed, `apply_tx_answering`'s callback). The ETag a client
/// takes from the answer is then a valid If-Match for y.json, over a value it read
/// from x.json.
#[test]
fn a_tx_get_of_an_alias_answers_value_and_version_of_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = journaled(dir.path());
    put(&store, "x.json", json!({"n": 1}));
    put(&store, "y.json", json!({"n": 100}));
    let vx = store.doc::<Value>("x.json").unwrap().version().unwrap();
    let link = dir.path().join("z.json");
    std::os::unix::fs::symlink("x.json", &link).unwrap();
    let limits = Limits::new();
    let ops = statefile::parse_tx_ops(
        &json!([{"op": "get", "doc": "x.json"}, {"op": "get", "doc": "z.json"}]),
        &limits,
    )
    .unwrap();
    let results = store
        .apply_tx_answering(&ops, &limits, &mut |doc, _| {
            if doc == "z.json" {
                retarget(&link, "y.json");
            }
            Ok::<(), TxOpError>(())
        })
        .unwrap();
    assert_eq!(results[1].value, Some(json!({"n": 1})));
    assert_eq!(
        results[1].version,
        Some(vx),
        "the get answers the version of the bytes it answers"
    );
}

/// FINDING (`statefile tx` / `POST /v1/tx`): `apply_tx` resolves each operation's name
/// again after the transaction locked it (`keys.push(tx.key(doc))`) to match the
/// receipt back to the operation. A name retargeted during the transaction (here:
/// during an earlier get's answer) is written where it was locked (x.json, correct),
/// but the put's result carries the version of the file the name resolves to now
/// (y.json, written by another operation of the same transaction): the answer says
/// a.json is at a version whose bytes are not what the put wrote.
#[test]
fn a_tx_put_reports_the_version_it_wrote_when_its_name_is_retargeted_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let store = journaled(dir.path());
    put(&store, "g.json", json!({"n": 0}));
    put(&store, "x.json", json!({"n": 1}));
    put(&store, "y.json", json!({"n": 100}));
    let link = dir.path().join("a.json");
    std::os::unix::fs::symlink("x.json", &link).unwrap();
    let limits = Limits::new();
    let ops = statefile::parse_tx_ops(
        &json!([
            {"op": "get", "doc": "g.json"},
            {"op": "put", "doc": "a.json", "value": {"n": 2}},
            {"op": "put", "doc": "y.json", "value": {"n": 200}},
        ]),
        &limits,
    )
    .unwrap();
    let results = store
        .apply_tx_answering(&ops, &limits, &mut |doc, _| {
            if doc == "g.json" {
                retarget(&link, "y.json");
            }
            Ok::<(), TxOpError>(())
        })
        .unwrap();
    assert_eq!(
        get(&store, "x.json"),
        json!({"n": 2}),
        "written where locked"
    );
    assert_eq!(get(&store, "y.json"), json!({"n": 200}));
    let vx = store.doc::<Value>("x.json").unwrap().version().unwrap();
    assert_eq!(
        results[1].version,
        Some(vx),
        "the put's version is the version of what it wrote"
    );
}

// ---------------------------------------------------------------------------------
// Journal replay: a record is applied to its recorded name, resolved again (through
// symlinks) at replay time.

/// FINDING. A document renamed by hand and left as a symlink at its old name (`mv
/// z.json b.json; ln -s b.json z.json`), then written under its new name: after a power
/// loss (a reboot, as the journal sees it) the replay applies z.json's last record
/// *through the symlink* to b.json, after b.json's own newer record (names replay in
/// order): b.json's acknowledged write is rolled back to the older version. The
/// recorded name was a real file when it was written (the writer resolved it); the
/// replay resolves it again and follows a symlink that was not there.
#[test]
fn a_replay_after_a_reboot_does_not_apply_a_record_through_a_symlink_now_at_its_name() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = journaled(dir.path());
        put(&store, "z.json", json!({"v": 1}));
        std::fs::rename(dir.path().join("z.json"), dir.path().join("b.json")).unwrap();
        std::os::unix::fs::symlink("b.json", dir.path().join("z.json")).unwrap();
        put(&store, "b.json", json!({"v": 2}));
        assert_eq!(get(&store, "z.json"), json!({"v": 2}));
    }
    common::reboot_journal(dir.path());
    let store = Store::open_with(dir.path(), common::fresh()).unwrap();
    assert_eq!(
        get(&store, "b.json"),
        json!({"v": 2}),
        "the acknowledged write of b.json survives the replay (replayed: {:?})",
        common::replayed(&store)
    );
}

/// HOLDS. The same store, repaired without a reboot (`statefile recover`): the repair
/// resolves the name and then applies the record of the file it resolved to (its own
/// name), not the recorded name's: b.json keeps its write.
#[test]
fn a_repair_without_a_reboot_does_not_apply_a_record_through_a_symlink_now_at_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = journaled(dir.path());
    put(&store, "z.json", json!({"v": 1}));
    std::fs::rename(dir.path().join("z.json"), dir.path().join("b.json")).unwrap();
    std::os::unix::fs::symlink("b.json", dir.path().join("z.json")).unwrap();
    put(&store, "b.json", json!({"v": 2}));
    let _ = statefile::recover(dir.path()).unwrap();
    let _ = store.recover().unwrap();
    assert_eq!(get(&store, "b.json"), json!({"v": 2}));
}

/// HOLDS in process, FINDING after a reboot: a transaction reads `d/a.json`, the
/// directory `d` is renamed to `e` and `d` made a symlink to `f` (another directory of
/// the store) before the write. In process the write goes where the transaction read
/// (e/a.json, through the directory handle it locked), f/a.json is untouched (first
/// half: holds). But the journal record names the document by the path resolved when
/// it was locked, `d/a.json`; a replay after a power loss (before the next checkpoint)
/// resolves that name again, through the symlink, and writes the transaction's value
/// into f/a.json, a document it never read (second half: f/a.json's content lost).
#[test]
fn a_directory_swapped_during_a_transaction_is_replayed_where_it_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    {
        let store = journaled(root);
        put(&store, "f/a.json", json!({"n": 100}));
        put(&store, "d/a.json", json!({"n": 1}));
        // f/a.json durable at a checkpoint: its record is freed.
        journal::checkpoint(root, store.options()).unwrap();
        put(&store, "d/a.json", json!({"n": 1}));
        store
            .transaction(|tx| {
                let a: Value = tx.read("d/a.json")?.unwrap();
                if !root.join("e").exists() {
                    std::fs::rename(root.join("d"), root.join("e")).unwrap();
                    std::os::unix::fs::symlink("f", root.join("d")).unwrap();
                }
                tx.write("d/a.json", &n_plus_one(&a))
            })
            .unwrap();
        assert_eq!(
            get(&store, "e/a.json"),
            json!({"n": 2}),
            "written where read"
        );
        assert_eq!(
            get(&store, "f/a.json"),
            json!({"n": 100}),
            "in process: untouched"
        );
    }
    common::reboot_journal(root);
    let store = Store::open_with(root, common::fresh()).unwrap();
    assert_eq!(
        get(&store, "f/a.json"),
        json!({"n": 100}),
        "f/a.json was never written: a replay must not write the transaction's value \
         there (replayed: {:?})",
        common::replayed(&store)
    );
}

/// As above for a single-document write: `Doc::update` in journal mode, the directory
/// swapped while the write is in progress (`on_temp_created`, after the record was
/// appended under the name resolved at the lock). In process: holds. After a reboot:
/// the replay writes into the other directory's document.
#[test]
fn a_directory_swapped_during_an_update_is_replayed_where_it_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    {
        let armed = Arc::new(AtomicBool::new(false));
        let (a, r) = (armed.clone(), root.clone());
        let opts = common::fresh().on_temp_created(move |_| {
            if a.swap(false, Ordering::SeqCst) {
                std::fs::rename(r.join("d"), r.join("e"))?;
                std::os::unix::fs::symlink("f", r.join("d"))?;
            }
            Ok(())
        });
        let store = journaled_with(&root, opts);
        put(&store, "f/a.json", json!({"n": 100}));
        put(&store, "d/a.json", json!({"n": 1}));
        journal::checkpoint(&root, store.options()).unwrap();
        armed.store(true, Ordering::SeqCst);
        store
            .doc::<Value>("d/a.json")
            .unwrap()
            .update(|v| {
                *v = n_plus_one(v);
                Ok::<_, statefile::Error>(())
            })
            .unwrap();
        assert!(!armed.load(Ordering::SeqCst), "the hook ran");
        assert_eq!(
            get(&store, "e/a.json"),
            json!({"n": 2}),
            "written where read"
        );
        assert_eq!(
            get(&store, "f/a.json"),
            json!({"n": 100}),
            "in process: untouched"
        );
    }
    common::reboot_journal(&root);
    let store = Store::open_with(&root, common::fresh()).unwrap();
    assert_eq!(
        get(&store, "f/a.json"),
        json!({"n": 100}),
        "f/a.json was never written (replayed: {:?})",
        common::replayed(&store)
    );
}

// ---------------------------------------------------------------------------------
// What held.

/// HOLDS: the 6a78eba case with a directory swapped instead of a symlink retargeted:
/// in process the transaction writes the file it read.
#[test]
fn a_transaction_holds_a_name_whose_directory_is_replaced_by_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = journaled(root);
    put(&store, "d/a.json", json!({"n": 1}));
    put(&store, "f/a.json", json!({"n": 100}));
    let v0 = store.doc::<Value>("d/a.json").unwrap().version().unwrap();
    store
        .transaction(|tx| {
            let a: Value = tx.read("d/a.json")?.unwrap();
            if !root.join("e").exists() {
                std::fs::rename(root.join("d"), root.join("e")).unwrap();
                std::os::unix::fs::symlink("f", root.join("d")).unwrap();
            }
            let v = tx.version_seen("d/a.json")?;
            assert_eq!(v, Some(v0.clone()), "the version of the file read");
            tx.write("d/a.json", &n_plus_one(&a))
        })
        .unwrap();
    assert_eq!(get(&store, "e/a.json"), json!({"n": 2}));
    assert_eq!(get(&store, "f/a.json"), json!({"n": 100}));
}

/// HOLDS: `Doc::update` on a symlinked document, the symlink retargeted inside the
/// change (under the lock): the write goes to the file read. Plain and journal mode.
#[test]
fn an_update_writes_the_file_it_read_when_the_symlink_is_retargeted_in_its_change() {
    for journal_mode in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let store = if journal_mode {
            journaled(dir.path())
        } else {
            Store::open_with(dir.path(), common::fresh()).unwrap()
        };
        put(&store, "x.json", json!({"n": 1}));
        put(&store, "y.json", json!({"n": 100}));
        let link = dir.path().join("a.json");
        std::os::unix::fs::symlink("x.json", &link).unwrap();
        let doc = store.doc::<Value>("a.json").unwrap();
        doc.update(|v| {
            retarget(&link, "y.json");
            *v = n_plus_one(v);
            Ok::<_, statefile::Error>(())
        })
        .unwrap();
        assert_eq!(
            get(&store, "x.json"),
            json!({"n": 2}),
            "journal {journal_mode}"
        );
        assert_eq!(
            get(&store, "y.json"),
            json!({"n": 100}),
            "journal {journal_mode}"
        );
        // update_if, at the version read through the link.
        retarget(&link, "x.json");
        let v = doc.read_versioned().unwrap();
        doc.update_if(&v.version, |val| {
            retarget(&link, "y.json");
            *val = n_plus_one(val);
            Ok::<_, statefile::Error>(())
        })
        .unwrap();
        assert_eq!(
            get(&store, "x.json"),
            json!({"n": 3}),
            "journal {journal_mode}"
        );
        assert_eq!(
            get(&store, "y.json"),
            json!({"n": 100}),
            "journal {journal_mode}"
        );
    }
}

/// A store whose every temp file, once armed, retargets `a.json` to `y.json` (the
/// moment after the lock and the version check, before the rename).
fn store_retargeting_on_temp(dir: &Path, journal_mode: bool) -> (Store, Arc<AtomicBool>) {
    let armed = Arc::new(AtomicBool::new(false));
    let (a, link) = (armed.clone(), dir.join("a.json"));
    let opts = common::fresh().on_temp_created(move |_| {
        if a.swap(false, Ordering::SeqCst) {
            retarget(&link, "y.json");
        }
        Ok(())
    });
    let store = if journal_mode {
        journaled_with(dir, opts)
    } else {
        Store::open_with(dir, opts).unwrap()
    };
    (store, armed)
}

/// HOLDS: `write_if` (and the server's PUT with If-Match) compares the version with
/// the file it locked and writes that file, the symlink retargeted while the temp file
/// is written.
#[test]
fn a_conditional_write_writes_the_file_whose_version_it_checked() {
    for journal_mode in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (store, armed) = store_retargeting_on_temp(dir.path(), journal_mode);
        put(&store, "x.json", json!({"n": 1}));
        put(&store, "y.json", json!({"n": 100}));
        let link = dir.path().join("a.json");
        std::os::unix::fs::symlink("x.json", &link).unwrap();
        let doc = store.doc::<Value>("a.json").unwrap();
        let v = doc.read_versioned().unwrap();
        armed.store(true, Ordering::SeqCst);
        doc.write_if(&v.version, &n_plus_one(&v.value)).unwrap();
        assert!(!armed.load(Ordering::SeqCst));
        assert_eq!(
            get(&store, "x.json"),
            json!({"n": 2}),
            "journal {journal_mode}"
        );
        assert_eq!(
            get(&store, "y.json"),
            json!({"n": 100}),
            "journal {journal_mode}"
        );
    }
}

/// HOLDS: `restore` resolves the document once: the backup restored is the locked
/// file's, written over that file, the symlink retargeted while the temp is written.
#[test]
fn a_restore_restores_the_locked_documents_backup_over_it() {
    for journal_mode in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (store, armed) = store_retargeting_on_temp(dir.path(), journal_mode);
        put(&store, "x.json", json!({"n": 0}));
        put(&store, "x.json", json!({"n": 1}));
        put(&store, "y.json", json!({"n": 99}));
        put(&store, "y.json", json!({"n": 100}));
        let link = dir.path().join("a.json");
        std::os::unix::fs::symlink("x.json", &link).unwrap();
        armed.store(true, Ordering::SeqCst);
        store
            .doc::<Value>("a.json")
            .unwrap()
            .restore(&BackupRef::NewestGood)
            .unwrap();
        assert!(!armed.load(Ordering::SeqCst));
        assert_eq!(
            get(&store, "x.json"),
            json!({"n": 0}),
            "journal {journal_mode}"
        );
        assert_eq!(
            get(&store, "y.json"),
            json!({"n": 100}),
            "journal {journal_mode}"
        );
    }
}

/// HOLDS: `apply_tx`'s patch and append of a name retargeted during an earlier get's
/// answer: locked up front under that name, read and written where locked.
#[test]
fn a_tx_patch_and_append_write_where_they_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = journaled(dir.path());
    put(&store, "g.json", json!({"n": 0}));
    put(&store, "x.json", json!({"n": 1, "l": []}));
    put(&store, "y.json", json!({"n": 100, "l": []}));
    let link = dir.path().join("a.json");
    std::os::unix::fs::symlink("x.json", &link).unwrap();
    let limits = Limits::new();
    let ops = statefile::parse_tx_ops(
        &json!([
            {"op": "get", "doc": "g.json"},
            {"op": "patch", "doc": "a.json", "merge": {"m": 1}},
            {"op": "append", "doc": "a.json", "pointer": "/l", "value": 7},
        ]),
        &limits,
    )
    .unwrap();
    store
        .apply_tx_answering(&ops, &limits, &mut |doc, _| {
            if doc == "g.json" {
                retarget(&link, "y.json");
            }
            Ok::<(), TxOpError>(())
        })
        .unwrap();
    assert_eq!(get(&store, "x.json"), json!({"n": 1, "l": [7], "m": 1}));
    assert_eq!(get(&store, "y.json"), json!({"n": 100, "l": []}));
}

/// HOLDS: `Store::read_tx` of a name and its alias locks the file once and answers
/// its value for both names (no hook reaches inside a read_tx: no retarget here).
#[test]
fn read_tx_of_a_name_and_its_alias_reads_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), common::fresh()).unwrap();
    put(&store, "x.json", json!({"n": 1}));
    std::os::unix::fs::symlink("x.json", dir.path().join("z.json")).unwrap();
    let v = store.read_tx::<Value>(&["z.json", "x.json"]).unwrap();
    assert_eq!(v, [Some(json!({"n": 1})), Some(json!({"n": 1}))]);
}
