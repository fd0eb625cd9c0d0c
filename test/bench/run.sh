#!/usr/bin/env bash
# Benchmarks: each case against a baseline measured in the same run, as a
# ratio (these machines are noisy: compare ratios, not seconds).
#   bash test/bench/run.sh            every case
#   bash test/bench/run.sh pure       the cases whose file name contains "pure"
# A case is test/bench/cases/NAME.sql, run by psql in the bench database
# (bench.compare() prints extension vs baseline), or NAME.sh, run by bash
# with PG* set and BENCH_DB naming the database.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"

ensure_packages
build_and_install
# BENCH_FSYNC=off measures CPU alone; the default keeps commits durable
if [ "${BENCH_FSYNC:-on}" = off ]; then
    start_cluster /tmp/subscription-bench
else
    start_cluster /tmp/subscription-bench durable
fi
[ -n "${SUBSCRIPTION_OWN_CLUSTER:-}" ] && trap 'stop_cluster_in "$SUBSCRIPTION_OWN_CLUSTER"' EXIT

psql -X -q -d postgres -c 'SET client_min_messages = warning' -c 'DROP DATABASE IF EXISTS subscription_bench' -c 'CREATE DATABASE subscription_bench'
psql -X -q -d subscription_bench -v ON_ERROR_STOP=1 -f "$ROOT/test/bench/harness.sql"

filter=${1:-}
for f in "$ROOT"/test/bench/cases/*; do
    name=$(basename "$f")
    [[ -n "$filter" && "$name" != *"$filter"* ]] && continue
    # the citus_ cases need a Citus cluster: test/citus.sh runs them
    [[ "$name" == citus_* ]] && continue
    say "${name%.*}"
    case "$f" in
        *.sql) psql -X -q -d subscription_bench -v ON_ERROR_STOP=1 -f "$f" ;;
        *.sh)  BENCH_DB=subscription_bench bash "$f" ;;
    esac
done
