# A throwaway PostgreSQL cluster for the tests (sourced, not run; used by 40-postgres.sh,
# the benchmark, and by hand: `source test.d/pg-cluster.sh && pg_cluster_start && echo "$STATEFILE_TEST_PG_URL"`).
#
# pg_cluster_start: finds initdb and pg_ctl (on PATH, or where Debian's postgresql package
# puts them: /usr/lib/postgresql/<version>/bin), creates a cluster in a new temporary
# directory, starts it on a free loopback port with fsync and synchronous_commit on (the
# settings the backend expects) and TLS on, and exports
#   STATEFILE_TEST_PG_URL   postgres://statefile:PASSWORD@127.0.0.1:PORT/statefile
#   STATEFILE_TEST_PG_CTL   a script: `$STATEFILE_TEST_PG_CTL stop|start|status` (the
#                           fault tests stop the database mid-load and start it again)
#   STATEFILE_TEST_PG_TLS   a directory: ca.crt (the CA that signed the server's
#                           certificate, made for the name `localhost` only), other-ca.crt
#                           (a CA that signed nothing here), client.crt and client.key (a
#                           certificate for the role `certuser`, which may log in over TLS
#                           with it and nothing else)
# pg_cluster_stop: stops the cluster and removes its directory (safe to call twice).
# Both return non-zero with a message on stderr when PostgreSQL is missing or will not
# start; pg_cluster_start cleans up after itself when it fails. Nothing goes to stdout.
#
# Safe on a shared machine:
# - Every role needs a password (SCRAM, a random one per cluster) or, for certuser, the
#   client certificate: another user of the machine cannot connect as the superuser
#   (which could run programs as the cluster's owner).
# - As root, initdb refuses to run: the cluster runs as `nobody`, and only its data and
#   socket directories belong to nobody. The directory that holds them and the control
#   script stays root's, so nothing running as nobody can change what root runs.
# - Ports are picked at random and a start that finds its port taken tries another, so
#   runs at the same time on one machine do not collide; each has its own directory.

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

# The certificates of the cluster in $1 (a CA, the server's for `localhost`, another CA,
# certuser's client certificate); the server's key is readable by its owner only.
pg_cluster_certs() {
    local d=$1 ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    (
        set -e
        cd "$d"
        for ca in ca other-ca; do
            openssl req -x509 "${ec[@]}" -days 7 -subj "/CN=statefile test $ca" \
                -keyout "$ca.key" -out "$ca.crt" \
                -addext basicConstraints=critical,CA:TRUE \
                -addext keyUsage=critical,keyCertSign,cRLSign
        done
        printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' >server.ext
        openssl req "${ec[@]}" -subj "/CN=localhost" -keyout server.key -out server.csr
        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 7 \
            -extfile server.ext -out server.crt
        printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n' >client.ext
        openssl req "${ec[@]}" -subj "/CN=certuser" -keyout client.key -out client.csr
        openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 7 \
            -extfile client.ext -out client.crt
        rm -f ./*.csr ./*.ext ./*.srl ca.key other-ca.key
        chmod 600 server.key client.key
    ) >"$d/openssl.log" 2>&1
}

pg_cluster_start() {
    local bin user port password tries base
    bin=$(pg_cluster_find_bin) || {
        echo "PostgreSQL not found: no initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin (Debian: apt-get install postgresql)" >&2
        return 1
    }
    if ! command -v openssl >/dev/null 2>&1; then
        echo "openssl is missing: the cluster's TLS certificates are made with it (Debian: apt-get install openssl)" >&2
        return 1
    fi
    base=${TMPDIR:-/tmp}
    PG_CLUSTER_DIR=$(mktemp -d "$base/statefile-pg.XXXXXX") || return 1
    PG_CLUSTER_RUN=()
    user=$(id -un)
    if [ "$(id -u)" = 0 ]; then
        user=nobody
        # Root keeps the outer directory (nobody may pass through, not write) and the
        # control script; nobody gets the data and socket directories only.
        chmod 711 "$PG_CLUSTER_DIR"
        PG_CLUSTER_RUN=(setpriv --reuid="$user" --regid="$(id -g "$user")" --clear-groups --)
        if ! "${PG_CLUSTER_RUN[@]}" test -x "$PG_CLUSTER_DIR"; then
            echo "$user cannot reach $PG_CLUSTER_DIR (is $base private?): set TMPDIR to a directory everyone may pass through, such as /tmp" >&2
            pg_cluster_stop
            return 1
        fi
    fi
    mkdir -m 700 "$PG_CLUSTER_DIR/data" "$PG_CLUSTER_DIR/run" "$PG_CLUSTER_DIR/tls"
    password=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    (umask 077 && printf '%s\n' "$password" >"$PG_CLUSTER_DIR/run/pwfile")
    if ! pg_cluster_certs "$PG_CLUSTER_DIR/tls"; then
        echo "making the TLS certificates failed:" >&2
        cat "$PG_CLUSTER_DIR/tls/openssl.log" >&2
        pg_cluster_stop
        return 1
    fi
    mkdir -m 700 "$PG_CLUSTER_DIR/server-tls"
    cp "$PG_CLUSTER_DIR/tls/server.crt" "$PG_CLUSTER_DIR/tls/server.key" "$PG_CLUSTER_DIR/tls/ca.crt" \
        "$PG_CLUSTER_DIR/server-tls/"
    rm "$PG_CLUSTER_DIR/tls/server.key"
    chmod 755 "$PG_CLUSTER_DIR/tls"
    if [ "$user" = nobody ]; then
        chown -R nobody "$PG_CLUSTER_DIR/data" "$PG_CLUSTER_DIR/run" "$PG_CLUSTER_DIR/server-tls"
    fi
    cat >"$PG_CLUSTER_DIR/ctl" <<EOF
#!/bin/sh
# Control the throwaway cluster: stop | start | status.
cd "$PG_CLUSTER_DIR" || exit 1
case "\$1" in
    stop) exec ${PG_CLUSTER_RUN[*]} "$bin/pg_ctl" -D "$PG_CLUSTER_DIR/data" -m fast -w -t 60 stop ;;
    start) exec ${PG_CLUSTER_RUN[*]} "$bin/pg_ctl" -D "$PG_CLUSTER_DIR/data" -l "$PG_CLUSTER_DIR/run/log" -w -t 60 start ;;
    status) exec ${PG_CLUSTER_RUN[*]} "$bin/pg_ctl" -D "$PG_CLUSTER_DIR/data" status ;;
    *) echo "usage: \$0 stop|start|status" >&2; exit 2 ;;
esac
EOF
    chmod 755 "$PG_CLUSTER_DIR/ctl"
    if ! (cd "$PG_CLUSTER_DIR" && "${PG_CLUSTER_RUN[@]}" "$bin/initdb" -D "$PG_CLUSTER_DIR/data" \
        -U statefile --pwfile="$PG_CLUSTER_DIR/run/pwfile" --auth=scram-sha-256 \
        -E UTF8 --locale=C --no-sync >"$PG_CLUSTER_DIR/run/initdb.log" 2>&1); then
        echo "initdb failed:" >&2
        cat "$PG_CLUSTER_DIR/run/initdb.log" >&2
        pg_cluster_stop
        return 1
    fi
    cat >>"$PG_CLUSTER_DIR/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$PG_CLUSTER_DIR/run'
max_connections = 300
fsync = on
synchronous_commit = on
ssl = on
ssl_cert_file = '$PG_CLUSTER_DIR/server-tls/server.crt'
ssl_key_file = '$PG_CLUSTER_DIR/server-tls/server.key'
ssl_ca_file = '$PG_CLUSTER_DIR/server-tls/ca.crt'
include_if_exists = 'port.conf'
EOF
    # certuser logs in with its client certificate only; everyone else with a password.
    cat >"$PG_CLUSTER_DIR/data/pg_hba.conf" <<EOF
local   all  all                   scram-sha-256
hostssl all  certuser 127.0.0.1/32 cert
host    all  certuser 127.0.0.1/32 reject
host    all  all      127.0.0.1/32 scram-sha-256
EOF
    for tries in 1 2 3 4 5 6 7 8 9 10; do
        port=$((20000 + $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 40000))
        echo "port = $port" >"$PG_CLUSTER_DIR/data/port.conf"
        if "$PG_CLUSTER_DIR/ctl" start >/dev/null 2>&1; then
            break
        fi
        if ! grep -q "could not bind\|could not create any TCP/IP sockets" "$PG_CLUSTER_DIR/run/log" 2>/dev/null \
            || [ "$tries" = 10 ]; then
            echo "PostgreSQL did not start:" >&2
            cat "$PG_CLUSTER_DIR/run/log" >&2
            pg_cluster_stop
            return 1
        fi
        : >"$PG_CLUSTER_DIR/run/log"
    done
    if ! (cd "$PG_CLUSTER_DIR" && PGPASSWORD=$password "${PG_CLUSTER_RUN[@]}" "$bin/psql" -q -X \
        -h 127.0.0.1 -p "$port" -U statefile -d postgres -v ON_ERROR_STOP=1 \
        -c "CREATE DATABASE statefile" -c "CREATE ROLE certuser LOGIN" >/dev/null); then
        echo "creating the database failed" >&2
        pg_cluster_stop
        return 1
    fi
    export STATEFILE_TEST_PG_URL="postgres://statefile:$password@127.0.0.1:$port/statefile"
    export STATEFILE_TEST_PG_CTL="$PG_CLUSTER_DIR/ctl"
    export STATEFILE_TEST_PG_TLS="$PG_CLUSTER_DIR/tls"
}

pg_cluster_stop() {
    if [ -n "${PG_CLUSTER_DIR:-}" ] && [ -d "$PG_CLUSTER_DIR" ]; then
        if [ -x "$PG_CLUSTER_DIR/ctl" ] && [ -f "$PG_CLUSTER_DIR/data/postmaster.pid" ]; then
            "$PG_CLUSTER_DIR/ctl" stop >/dev/null 2>&1 || true
        fi
        rm -rf "$PG_CLUSTER_DIR"
    fi
    PG_CLUSTER_DIR=
}
