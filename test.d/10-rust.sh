#!/usr/bin/env bash
# Rust: the library, the CLI, the server and the crash-safety explorer; and the library
# built without exact numbers (`default-features = false`, which docs/design.md offers
# to programs that need serde's flatten/untagged float reads): its unit tests, so that
# the values it refuses (the reserved keys) stay refused in that build too.
set -euo pipefail
cargo test
cargo test -p statefile --no-default-features --lib
