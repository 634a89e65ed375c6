#!/usr/bin/env bash
# Python: the `statefile` package (crates/statefile-py), built as a wheel with maturin
# and installed into a virtualenv under the target directory; then its pytest suite
# (real processes, SIGKILL, a real tmpfs) and mypy --strict on the examples.
set -euo pipefail
cd "$(dirname "$0")/.."
. test.d/lib.sh

crate=$PWD/crates/statefile-py
target=${CARGO_TARGET_DIR:-target}
mkdir -p "$target"
target=$(cd "$target" && pwd)
venv=$target/py-venv

status=0
bash "$crate/scripts/venv.sh" "$venv" "$target/wheels" || status=$?
if [ "$status" = 3 ]; then
    skip_or_fail "cannot set up a Python virtualenv with pip (python3 -m venv, the package index)"
elif [ "$status" != 0 ]; then
    echo "FAIL: building or installing the statefile wheel failed (see above)" >&2
    exit 1
fi

echo "== pytest"
"$venv/bin/python" -m pytest -p no:cacheprovider "$crate/tests"

echo "== mypy --strict: the examples, the typing test and the package"
cd "$crate"
"$venv/bin/python" -m mypy --strict --cache-dir "$target/mypy-cache" \
    examples tests/test_typing.py python/statefile
