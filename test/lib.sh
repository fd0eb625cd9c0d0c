# Shared by test/check.sh, test/demo.sh and test/bench/run.sh: install what
# is missing, build and install the extension, and give the caller a server.
#
# With PGHOST set in the environment the caller's server is used as it is;
# otherwise a throwaway cluster runs as the postgres user in a directory of
# its own, reachable only through a Unix socket in that directory.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PGBIN=/usr/lib/postgresql/15/bin
PACKAGES="postgresql-15 postgresql-server-dev-15 postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl"

say() { printf '\n== %s\n' "$*"; }

ensure_packages() {
    local missing=() p
    for p in $PACKAGES; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing packages: ${missing[*]}; install them as root" >&2
        return 1
    fi
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    # the Debian package starts a cluster on 5432 that we do not use
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    if command -v pg_ctlcluster >/dev/null && pg_lsclusters -h 2>/dev/null | grep -q '^15 *main .*online'; then
        pg_ctlcluster 15 main stop || true
    fi
}

build_and_install() {
    say "building and installing the extension"
    make -C "$ROOT" -s >/dev/null
    make -C "$ROOT" -s install >/dev/null
}

# run a command as the postgres user (PostgreSQL refuses to run as root)
as_postgres() {
    if [ "$(id -u)" -eq 0 ]; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

# start_cluster DIR [durable]: a fresh cluster in DIR (wiped first); exports
# PG* for it.  Tests run with fsync off; "durable" keeps PostgreSQL's
# defaults (fsync, synchronous_commit), as benchmarks must.
start_cluster() {
    local dir=$1
    local durability="-c fsync=off"
    [ "${2:-}" = durable ] && durability=""
    if [ -n "${PGHOST:-}" ] && [ -z "${SUBSCRIPTION_OWN_CLUSTER:-}" ]; then
        say "using the server at PGHOST=$PGHOST PGPORT=${PGPORT:-5432}"
        return 0
    fi
    stop_cluster_in "$dir"
    rm -rf "$dir"
    mkdir -p "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
    say "starting a throwaway cluster in $dir"
    as_postgres "$PGBIN/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 \
        --locale=C.UTF-8 --no-sync >/dev/null
    as_postgres "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -s \
        -o "-c listen_addresses='' -k $dir -p 5432 $durability -c max_connections=60" start
    export PGHOST=$dir PGPORT=5432 PGUSER=postgres SUBSCRIPTION_OWN_CLUSTER=$dir
}

stop_cluster_in() {
    local dir=$1
    if [ -f "$dir/data/postmaster.pid" ]; then
        as_postgres "$PGBIN/pg_ctl" -D "$dir/data" -m fast -w -s stop || true
    fi
}

server_log() {
    if [ -n "${SUBSCRIPTION_OWN_CLUSTER:-}" ]; then
        echo "$SUBSCRIPTION_OWN_CLUSTER/server.log"
    fi
}
