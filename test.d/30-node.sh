#!/usr/bin/env bash
# Node: the npm package `statefile` (crates/statefile-node). Installs its pinned
# devDependencies locally (npm ci: @napi-rs/cli, typescript, write-file-atomic for the
# side-by-side test), builds the addon in release mode, and runs `node --test`.
set -euo pipefail
cd "$(dirname "$0")/.."
. test.d/lib.sh

command -v node >/dev/null 2>&1 || skip_or_fail "node is not installed (the Node package's tests need Node 20 or newer and npm)"
command -v npm >/dev/null 2>&1 || skip_or_fail "npm is not installed (the Node package's tests need it)"
major=$(node -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 20 ] || skip_or_fail "node $(node --version) is too old: the Node package needs Node 20 or newer"
# npm test bounds each test file with --test-timeout (Node 20.11 and newer).
node --help | grep -q -- '--test-timeout' || skip_or_fail "node $(node --version) has no --test-timeout: the Node tests need Node 20.11 or newer"

cd crates/statefile-node
npm ci --no-audit --no-fund --loglevel=error
npm run --silent build
npm test
