# A throwaway PostgreSQL cluster for the tests (sourced, not run; used by 40-postgres.sh,
# and by hand: `source test.d/pg-cluster.sh && pg_cluster_start && echo "$STATEFILE_TEST_PG_URL"`).
#
# pg_cluster_start: finds initdb and pg_ctl (on PATH, or where Debian's postgresql package
# puts them: /usr/lib/postgresql/<version>/bin), creates a cluster in a new temporary
# directory owned by an unprivileged user (initdb refuses to run as root: as root it runs
# as `nobody`), starts it on a free loopback port with fsync and synchronous_commit on
# (the settings the backend expects), and exports
#   STATEFILE_TEST_PG_URL   postgres://statefile@127.0.0.1:PORT/statefile
#   STATEFILE_TEST_PG_CTL   a script: `$STATEFILE_TEST_PG_CTL stop|start|status` (the
#                           fault tests stop the database mid-load and start it again)
# pg_cluster_stop: stops the cluster and removes its directory (safe to call twice).
# Both return non-zero with a message on stderr when PostgreSQL is missing or will not start.

pg_cluster_find_bin() {
    local d
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v pg_ctl)")"
        return 0
    fi
    # Debian: binaries outside PATH; the highest version wins.
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
            echo "$d"
            return 0
        fi
    done
    return 1
}

pg_cluster_free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

pg_cluster_start() {
    local bin port user run
    bin=$(pg_cluster_find_bin) || {
        echo "PostgreSQL not found: no initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin (Debian: apt-get install postgresql)" >&2
        return 1
    }
    PG_CLUSTER_DIR=$(mktemp -d "${TMPDIR:-/tmp}/statefile-pg.XXXXXX")
    run=()
    if [ "$(id -u)" = 0 ]; then
        user=nobody
        chown "$user" "$PG_CLUSTER_DIR"
        run=(setpriv --reuid="$user" --regid="$(id -g "$user")" --clear-groups --)
    fi
    port=$(pg_cluster_free_port)
    cat >"$PG_CLUSTER_DIR/ctl" <<EOF
#!/bin/sh
# Control the throwaway cluster: stop | start | status.
cd "$PG_CLUSTER_DIR" || exit 1
case "\$1" in
    stop) exec ${run[*]} "$bin/pg_ctl" -D "$PG_CLUSTER_DIR/data" -m fast -w -t 60 stop ;;
    start) exec ${run[*]} "$bin/pg_ctl" -D "$PG_CLUSTER_DIR/data" -l "$PG_CLUSTER_DIR/log" -w -t 60 start ;;
    status) exec ${run[*]} "$bin/pg_ctl" -D "$PG_CLUSTER_DIR/data" status ;;
    *) echo "usage: \$0 stop|start|status" >&2; exit 2 ;;
esac
EOF
    chmod 755 "$PG_CLUSTER_DIR/ctl"
    if ! (cd "$PG_CLUSTER_DIR" && "${run[@]}" "$bin/initdb" -D "$PG_CLUSTER_DIR/data" -U statefile \
        --auth=trust -E UTF8 --locale=C --no-sync >"$PG_CLUSTER_DIR/initdb.log" 2>&1); then
        echo "initdb failed:" >&2
        cat "$PG_CLUSTER_DIR/initdb.log" >&2
        return 1
    fi
    cat >>"$PG_CLUSTER_DIR/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$PG_CLUSTER_DIR'
max_connections = 300
fsync = on
synchronous_commit = on
EOF
    if ! "$PG_CLUSTER_DIR/ctl" start >/dev/null; then
        echo "PostgreSQL did not start:" >&2
        cat "$PG_CLUSTER_DIR/log" >&2
        return 1
    fi
    if ! (cd "$PG_CLUSTER_DIR" && "${run[@]}" "$bin/createdb" -h 127.0.0.1 -p "$port" -U statefile statefile); then
        echo "createdb failed" >&2
        return 1
    fi
    export STATEFILE_TEST_PG_URL="postgres://statefile@127.0.0.1:$port/statefile"
    export STATEFILE_TEST_PG_CTL="$PG_CLUSTER_DIR/ctl"
}

pg_cluster_stop() {
    if [ -n "${PG_CLUSTER_DIR:-}" ] && [ -d "$PG_CLUSTER_DIR" ]; then
        "$PG_CLUSTER_DIR/ctl" stop >/dev/null 2>&1 || true
        rm -rf "$PG_CLUSTER_DIR"
    fi
    PG_CLUSTER_DIR=
}
