//! Crash-safety proof for statefile: an in-memory file system that knows what a power
//! loss may keep ([`sim`]), an explorer of every crash state a workload allows and a
//! fault injector ([`explore`]), and the workloads ([`workloads`]). Used by this crate's
//! tests; see docs/crash-safety.md for the figures and how to reproduce them.

pub mod explore;
pub mod sim;
pub mod workloads;
