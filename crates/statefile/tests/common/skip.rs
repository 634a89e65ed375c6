//! What a test does when this machine lacks what it needs (root, a tmpfs mount, a tool):
//! shared with the CLI's and the server's tests through `#[path]`.
#![allow(dead_code)]

/// Say why the test cannot run here; the caller then returns. Under `CI=true`, where
/// `.ci/run` installs and provides everything the tests need, it fails instead: a test
/// that skipped proves nothing, and CI must never pass on a skip.
#[track_caller]
pub fn skip(why: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "this test cannot run under CI=true: {why}"
    );
    println!("skipping: {why}");
}
