# Shared by test/check.sh, test/demo.sh and test/bench/run.sh: install what
# is missing, build and install the extension, and give the caller a server.
#
# With PGHOST set in the environment the caller's server is used as it is;
# otherwise a throwaway cluster runs as the postgres user in a directory of
# its own, reachable only through a Unix socket in that directory.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

say() { printf '\n== %s\n' "$*"; }

# The PostgreSQL major version the distribution carries: what its
# "postgresql" metapackage depends on (15 on Debian 12, 17 on 13, 18 on sid
# at the time of writing), or, before apt has any lists, a guess from
# /etc/os-release.
distribution_pg_major() {
    local v
    # (the callers may run under set -e and pipefail: nothing here may fail)
    v=$(apt-cache depends postgresql 2>/dev/null | sed -n 's/^ *Depends: postgresql-\([0-9][0-9]*\)$/\1/p' | head -1) || true
    if [ -z "$v" ] && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        apt-get update -q >/dev/null 2>&1 || true
        v=$(apt-cache depends postgresql 2>/dev/null | sed -n 's/^ *Depends: postgresql-\([0-9][0-9]*\)$/\1/p' | head -1) || true
    fi
    if [ -z "$v" ]; then
        case "$(. /etc/os-release 2>/dev/null; echo "${VERSION_ID:-}")" in
            11) v=13 ;;
            12) v=15 ;;
            13) v=17 ;;
            *) v=18 ;;
        esac
    fi
    echo "$v"
}

# PG_MAJOR picks the version to build and test against: by default the one
# of the pg_config on PATH, else the distribution's.  Everything else (the
# packages, the server's programs, the build's pg_config) follows from it.
if [ -z "${PG_MAJOR:-}" ]; then
    PG_MAJOR=$(pg_config --version 2>/dev/null | sed -n 's/^PostgreSQL \([0-9][0-9]*\).*/\1/p') || true
    [ -n "$PG_MAJOR" ] || PG_MAJOR=$(distribution_pg_major)
fi
PACKAGES="postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR postgresql-$PG_MAJOR-pgtap libtap-parser-sourcehandler-pgtap-perl python3-psycopg"

# after ensure_packages: the server-dev package's own pg_config, which the
# Makefile (PG_CONFIG ?= pg_config) and test/upgrade.sh then use, and that
# version's programs (psql, pg_dump, pgbench) first on PATH
use_pg_config() {
    PG_CONFIG=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config
    [ -x "$PG_CONFIG" ] || PG_CONFIG=$(command -v pg_config)
    PGBIN=$("$PG_CONFIG" --bindir)
    export PG_CONFIG PGBIN PG_MAJOR
    case ":$PATH:" in
        *":$PGBIN:"*) ;;
        *) export PATH="$PGBIN:$PATH" ;;
    esac
}

ensure_packages() {
    local missing=() p
    for p in $PACKAGES; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        use_pg_config
        return 0
    fi
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing packages: ${missing[*]}; install them as root" >&2
        return 1
    fi
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # apt waits for another apt (a parallel install) instead of failing
    apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null || return 1
    # the Debian package starts a cluster on 5432 that we do not use
    apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}" >/dev/null || return 1
    if command -v pg_ctlcluster >/dev/null && pg_lsclusters -h 2>/dev/null | grep -q "^$PG_MAJOR *main .*online"; then
        pg_ctlcluster "$PG_MAJOR" main stop || true
    fi
    use_pg_config
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
    # a test server: sessions may move the billing clock (issue 20); in the
    # configuration file, so that ALTER SYSTEM can turn it off (test/clock.sh)
    echo "subscription.allow_clock = on" >> "$dir/data/postgresql.conf"
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

# The suites are written at fixed dates (2026 and after), while
# subscription.max_backdate and subscription.max_ahead bound a call's time
# around now(): every session of a suite raises both, so that those dates
# stay valid as time passes.  test/sql/bounds.sql sets the defaults back
# and tests the bounds themselves.
widen_time_bounds() {
    export PGOPTIONS="${PGOPTIONS:-} -c subscription.max_backdate=P1000Y -c subscription.max_ahead=P1000Y"
}
