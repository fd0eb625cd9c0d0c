#!/usr/bin/env bash
# The usage benchmark (cases/usage_pgbench.sh: the limit guard's single-row
# and bulk ratios with and without a meter, record_usage's durable calls a
# second with notify_events on and off, each against its bare insert) for
# several builds of subscription.so in one run (issue 21): the libraries
# (BENCH_LIBS="name=/path/a.so name=/path/b.so", of the same SQL) take turns
# as $libdir/subscription.so (renamed in: each new backend loads the one in
# place), BENCH_AB_ROUNDS (2) alternating rounds, each in a fresh database
# of one durable cluster (fsync and synchronous_commit on), so that the
# machine's load falls on every build alike.  Each round's figures are the
# case's own (BENCH_SECONDS, BENCH_ROUNDS inside it); the load average is
# printed with each.  As root in a Debian root (docs/testing.md): it
# replaces the installed library and puts the first one found back at the
# end.
#   BENCH_LIBS="main=/tmp/main.so new=/tmp/new.so" bash test/bench/ab_usage_pgbench.sh
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/../lib.sh"
use_pg_config
libs=${BENCH_LIBS:?BENCH_LIBS="name=/path/subscription.so ..."}
rounds=${BENCH_AB_ROUNDS:-2}
pkglib=$("$PG_CONFIG" --pkglibdir)
installed=$(mktemp /tmp/subscription-ab-pgbench-lib.XXXXXX)
cp "$pkglib/subscription.so" "$installed"
start_cluster "${BENCH_DIR:-/tmp/subscription-ab-pgbench}" durable
widen_time_bounds
restore() {
    stop_cluster_in "$SUBSCRIPTION_OWN_CLUSTER"
    install -m 0755 "$installed" "$pkglib/.subscription.so.ab" && mv "$pkglib/.subscription.so.ab" "$pkglib/subscription.so"
    rm -f "$installed"
}
trap restore EXIT

for round in $(seq "$rounds"); do
    for v in $libs; do
        install -m 0755 "${v#*=}" "$pkglib/.subscription.so.ab" && mv "$pkglib/.subscription.so.ab" "$pkglib/subscription.so"
        psql -X -q -d postgres -c 'SET client_min_messages = warning' \
             -c 'DROP DATABASE IF EXISTS subscription_ab' -c 'CREATE DATABASE subscription_ab'
        psql -X -q -d subscription_ab -v ON_ERROR_STOP=1 -f "$here/harness.sql" >/dev/null
        say "round $round, ${v%%=*} (load $(cut -d' ' -f1-3 /proc/loadavg))"
        BENCH_DB=subscription_ab bash "$here/cases/usage_pgbench.sh"
    done
done
