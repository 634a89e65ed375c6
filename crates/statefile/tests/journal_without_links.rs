//! Journal mode on a file system that will not make a hard link (FAT and exFAT, some
//! FUSE and network file systems): `journal enable` published the new journal by
//! linking it to its name, and failed there with `EPERM` (found by the rev18 review on
//! a FUSE passthrough that refuses links). Now it renames it into place instead, under
//! the shared state's lock, never over a journal another enable published.

mod common;

use std::sync::Arc;

use serde_json::json;
use statefile::fs::Fs;
use statefile::journal::{self, JournalOptions};
use statefile::{Options, Store};

/// The real file system, refusing every hard link with `EPERM`.
fn no_links() -> Options {
    let twisted = common::Twisted::new();
    *twisted.fail_hard_link.lock().unwrap() = Some(1);
    common::fresh().fs(twisted as Arc<dyn Fs>)
}

#[test]
fn journal_mode_works_where_hard_links_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let opts = no_links();
    let st = journal::enable(&root, &opts, JournalOptions::default()).unwrap();
    assert_eq!(st.records, 0);
    assert!(root.join(".statefile/journal").is_file());
    let temps: Vec<_> = std::fs::read_dir(root.join(".statefile"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".sf-"))
        .collect();
    assert!(
        temps.is_empty(),
        "the new journal's temp is left: {temps:?}"
    );
    // Enabling again finds it, as anywhere else.
    let again = journal::enable(&root, &opts, JournalOptions::default()).unwrap();
    assert_eq!(again.path, st.path);

    // Writes go through it, with their backups copied (links refused).
    let store = Store::open_with(&root, opts.clone().backups(1)).unwrap();
    let doc = store.doc::<serde_json::Value>("a.json").unwrap();
    for i in 0..3 {
        doc.write(&json!({ "n": i })).unwrap();
    }
    assert_eq!(doc.read().unwrap(), json!({ "n": 2 }));
    let status = journal::status(&root, &opts).unwrap().expect("a journal");
    assert!(status.records >= 3, "{status:?}");
    let (_, receipt) = store
        .transaction(|tx| {
            tx.write("a.json", &json!({ "n": 3 }))?;
            tx.write("b.json", &json!({ "n": 4 }))
        })
        .unwrap();
    assert_eq!(receipt.documents.len(), 2);
    assert_eq!(
        std::fs::read_to_string(root.join(".a.json.bak")).unwrap(),
        "{\n  \"n\": 2\n}\n"
    );
    journal::checkpoint(&root, &opts).unwrap();
    drop(doc);
    drop(store);
    journal::disable(&root, &opts).unwrap();
    assert!(!root.join(".statefile/journal").exists());
    let store = Store::open_with(&root, opts).unwrap();
    assert_eq!(
        store
            .doc::<serde_json::Value>("b.json")
            .unwrap()
            .read()
            .unwrap(),
        json!({ "n": 4 })
    );
}

/// Enables racing on such a file system: every one succeeds, and all of them report
/// the one journal that was published (none renamed over another's).
#[test]
fn concurrent_enables_where_hard_links_are_refused_publish_one_journal() {
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let opts = no_links();
        let ids: Vec<(u64, u64)> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    let (root, opts) = (root.clone(), opts.clone());
                    s.spawn(move || {
                        journal::enable(&root, &opts, JournalOptions::default()).unwrap();
                        let m = std::fs::metadata(root.join(".statefile/journal")).unwrap();
                        use std::os::unix::fs::MetadataExt;
                        (m.dev(), m.ino())
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
        let store = Store::open_with(&root, opts.clone()).unwrap();
        store
            .doc::<serde_json::Value>("a.json")
            .unwrap()
            .write(&json!(1))
            .unwrap();
        let status = journal::status(&root, &opts).unwrap().expect("a journal");
        assert!(status.records >= 1, "{status:?}");
    }
}
