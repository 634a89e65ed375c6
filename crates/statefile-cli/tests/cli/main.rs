//! Tests of the built `statefile` binary, in one test binary with a module per scenario
//! (as ripgrep does): one link instead of one per file, and shared helpers compiled once.

mod common;
#[path = "../../../statefile/tests/common/mount.rs"]
mod mount;
#[path = "../../../statefile/tests/common/skip.rs"]
mod skip;

mod commands;
mod help;
mod hostile;
mod journal;
mod max_document;
mod postgres;
mod processes;
mod readme;
mod repair;
mod serve;
mod storage;
mod strace;
mod terminal;
