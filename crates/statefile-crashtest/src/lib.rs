//! Simulated file system and crash-state explorer for statefile (test support).
