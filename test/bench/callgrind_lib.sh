# Shared by the callgrind A/B tools (ab_events_callgrind.sh,
# ab_usage_callgrind.sh): a cluster of its own whose backends run under
# valgrind --tool=callgrind, each writing its instruction count at its exit.
# Source after test/lib.sh and use_pg_config.

# callgrind_cluster DIR PORT: a fresh cluster in DIR (fsync and autovacuum
# off), started normally for the setup; exports PG* and PGOPTIONS (the
# suites' time bounds) for it; stopped at exit
callgrind_cluster() {
    callgrind_dir=$1
    callgrind_opts="-c listen_addresses='' -k $1 -p $2 -c fsync=off -c autovacuum=off -c max_connections=20"
    command -v valgrind >/dev/null || { echo "valgrind is needed" >&2; exit 1; }
    stop_cluster_in "$1"
    rm -rf "$1"
    mkdir -p "$1"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$1"
    as_postgres "$PGBIN/initdb" -D "$1/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null
    as_postgres "$PGBIN/pg_ctl" -D "$1/data" -l "$1/server.log" -w -s -o "$callgrind_opts" start
    export PGHOST=$1 PGPORT=$2 PGUSER=postgres
    export PGOPTIONS="${PGOPTIONS:-} -c subscription.max_backdate=P1000Y -c subscription.max_ahead=P1000Y"
}

callgrind_stop() {
    as_postgres "$PGBIN/pg_ctl" -D "$callgrind_dir/data" -m fast -w -s stop || true
}

# callgrind_restart: the cluster again, under valgrind
callgrind_restart() {
    as_postgres "$PGBIN/pg_ctl" -D "$callgrind_dir/data" -m fast -w -s stop
    as_postgres valgrind --tool=callgrind --callgrind-out-file="$callgrind_dir/cg.%p" \
        "$PGBIN/postgres" -D "$callgrind_dir/data" $(eval echo "$callgrind_opts") >"$callgrind_dir/valgrind.log" 2>&1 &
    for _ in $(seq 600); do
        psql -X -qAt -d postgres -c 'SELECT 1' >/dev/null 2>&1 && break
        sleep 1
    done
}

# callgrind_session DB STATEMENT CALLS: the instructions of a session
# (its own backend) of CALLS times STATEMENT, once that backend has ended
callgrind_session() {
    local output f
    output=$( { echo "SELECT pg_backend_pid();"
                for _ in $(seq "$3"); do echo "$2"; done
              } | psql -X -qAt -d "$1" -v ON_ERROR_STOP=1)
    f="$callgrind_dir/cg.${output%%$'\n'*}"
    for _ in $(seq 600); do
        [ -f "$f" ] && grep -q '^totals:' "$f" && break
        sleep 1
    done
    awk '/^totals:/ { print $2 }' "$f"
}
