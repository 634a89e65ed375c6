#!/usr/bin/env bash
# Rust: the library, the CLI, the server and the crash-safety explorer.
set -euo pipefail
cargo test
