#!/usr/bin/env bash
# PostgreSQL: the server's API suite on the PostgreSQL backend, the backend's own tests,
# and the CLI's scale-out tests (two `statefile serve` processes on one database, the
# database stopped mid-load, import/export), against a throwaway cluster started here
# in a temporary directory and stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
source test.d/lib.sh
source test.d/pg-cluster.sh

if ! pg_cluster_find_bin >/dev/null; then
    skip_or_fail "PostgreSQL is not installed (no initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin; Debian: apt-get install postgresql)"
fi
trap pg_cluster_stop EXIT
if ! pg_cluster_start; then
    skip_or_fail "a throwaway PostgreSQL cluster would not start (see above)"
fi
echo "postgres: throwaway cluster at ${STATEFILE_TEST_PG_URL##*@} (in $PG_CLUSTER_DIR)"
# Without a database the PostgreSQL variants skip; here they must run.
export STATEFILE_TEST_PG_REQUIRED=1
cargo test -p statefile-server --test api -- postgres
cargo test -p statefile-server --test postgres
cargo test -p statefile-server --test socket -- on_postgres
cargo test -p statefile-cli --test cli -- postgres::
