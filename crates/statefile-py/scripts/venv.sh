#!/usr/bin/env bash
# Make a virtualenv with the package's test and benchmark tools, and the `statefile`
# package built from this checkout as a wheel (maturin) and installed into it.
#
#   venv.sh VENV WHEEL_DIR
#
# Exit status: 0 ready; 3 the environment cannot be had here (no python3, no venv
# module, the package index unreachable); anything else: the build or install failed.
# Used by test.d/20-python.sh and by the benchmark (crates/statefile-bench).
set -euo pipefail
venv=$1
wheels=$2
crate=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}

setup() {
    command -v "$python" >/dev/null || { echo "venv.sh: $python not found" >&2; return 1; }
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv" || return 1
    # maturin builds the wheel; the real atomicwrites and filelock are there to compare
    # against, in the tests and in the benchmark.
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "maturin>=1.7,<2" "pytest>=8" "mypy>=1.10" "atomicwrites==1.4.1" "filelock>=3.12"
}
setup || exit 3

rm -rf "$wheels"
"$venv/bin/maturin" build --release --quiet --manifest-path "$crate/Cargo.toml" \
    --out "$wheels" --interpreter "$venv/bin/python"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --force-reinstall \
    --no-deps "$wheels"/statefile-*.whl
