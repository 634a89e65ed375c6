//! A journal that swaps files in (`JournalOptions::swap`), on the real file system:
//! programs that take no lock, and hard links (from the hostile review of d912365).

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde_json::{Value, json};
use statefile::journal::{self, JournalOptions};
use statefile::{Options, Store};

use common::{fresh, small};

fn swap_store(dir: &Path, opts: &Options) -> Store {
    journal::enable(
        dir,
        opts,
        JournalOptions {
            swap: true,
            ..small()
        },
    )
    .unwrap();
    Store::open_with(dir, opts.clone()).unwrap()
}

/// Another program (no lock) puts a non-empty directory at the document's name after the
/// look and before step 7. A rename over it fails and leaves it; the swap must too: the
/// directory is back at its name with its contents, and no temp is left.
#[test]
fn swap_a_directory_put_at_the_name_is_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let doc_path = root.join("a.json");
    let hostile = doc_path.clone();
    let opts = fresh().backups(0);
    let store = swap_store(&root, &opts);
    store
        .doc::<Value>("a.json")
        .unwrap()
        .write(&json!({"v": 0}))
        .unwrap();
    let opts = opts.on_temp_created(move |_| {
        if hostile.is_file() {
            std::fs::remove_file(&hostile)?;
            std::fs::create_dir(&hostile)?;
            std::fs::write(hostile.join("inside"), b"keep me")?;
        }
        Ok(())
    });
    let store = Store::open_with(&root, opts).unwrap();
    let r = store
        .doc::<Value>("a.json")
        .unwrap()
        .write(&json!({"v": 1}));
    assert!(r.is_err(), "a write over a directory succeeded");
    assert!(doc_path.is_dir(), "the directory is gone from its name");
    assert_eq!(std::fs::read(doc_path.join("inside")).unwrap(), b"keep me");
    assert!(
        common::temps(&root).is_empty(),
        "{:?}",
        common::temps(&root)
    );
}

/// A document with a second hard link elsewhere: after a swapped-in write the other
/// link still holds the old version (as after a rename), and the document the new one.
#[test]
fn swap_a_second_hard_link_keeps_the_old_version() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let opts = fresh().backups(0);
    let store = swap_store(root, &opts);
    let doc = store.doc::<Value>("a.json").unwrap();
    doc.write(&json!({"v": 0})).unwrap();
    std::fs::hard_link(root.join("a.json"), root.join("other")).unwrap();
    doc.write(&json!({"v": 1})).unwrap();
    assert_eq!(doc.read().unwrap(), json!({"v": 1}));
    let other: Value = serde_json::from_slice(&std::fs::read(root.join("other")).unwrap()).unwrap();
    assert_eq!(other, json!({"v": 0}));
    assert_eq!(std::fs::metadata(root.join("other")).unwrap().nlink(), 1);
    assert!(common::temps(root).is_empty());
}
