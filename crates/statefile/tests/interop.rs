//! The lock protocol of docs/design.md is followed by another language: a Python writer
//! (docs/interop/statefile_lock.py) and Rust writers append to one document at once.

mod common;

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use statefile::{Doc, Options};

#[test]
fn python_and_rust_writers_exclude_each_other() {
    if Command::new("python3").arg("--version").output().is_err() {
        common::skip("python3 is not installed");
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/interop/statefile_lock.py");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("shared.json");
    let pythons: Vec<_> = (0..2)
        .map(|i| {
            Command::new("python3")
                .arg(&script)
                .arg(&p)
                .arg(format!("py{i}"))
                .arg("100")
                .spawn()
                .unwrap()
        })
        .collect();
    let rust: Vec<_> = (0..2)
        .map(|t| {
            let p = p.clone();
            std::thread::spawn(move || {
                let doc: Doc<Value> = Doc::open_with(
                    &p,
                    Options::new().lock_timeout(std::time::Duration::from_secs(120)),
                )
                .unwrap();
                for i in 0..100 {
                    common::append_item(&doc, format!("rs{t}-{i}")).unwrap();
                }
            })
        })
        .collect();
    for t in rust {
        t.join().unwrap();
    }
    for mut c in pythons {
        assert!(c.wait().unwrap().success());
    }
    common::items_once(&p, 400);
    // The versions agree: Python's sha256 of the bytes is the library's version.
    let bytes = std::fs::read(&p).unwrap();
    let out = Command::new("python3")
        .args([
            "-c",
            "import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],'rb').read()).hexdigest())",
        ])
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        statefile::Version::of(&bytes).as_str()
    );
}
