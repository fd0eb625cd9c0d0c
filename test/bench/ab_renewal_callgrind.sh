#!/usr/bin/env bash
# A renewal's cost as instructions (issue 18), which the machine's load does
# not change: the instructions (Ir) of the backend that renews BENCH_SUBS
# (1000) due subscriptions (renewals_lib.sh's populate: monthly, an add-on
# batch each, a coupon on one in ten) with BEGIN; renew_due; COMMIT, the
# commit's openings included, for two variants in one run.  A variant is a
# file of SQL run in the round's copy of the populated database (e.g. a
# function's former and new bodies, or a table's storage setting):
# BENCH_OLD_SQL and BENCH_NEW_SQL (either may be empty: nothing run).  The
# rounds (BENCH_ROUNDS, 2) alternate the order old/new, new/old.  A
# cluster of its own in BENCH_DIR (port BENCH_PORT) is populated normally,
# then runs under valgrind --tool=callgrind (every backend writes its count
# at its exit); the copy, the variant's SQL and VACUUM ANALYZE run in
# sessions of their own, so the renewing session's count is the renewal's
# (and the session's start, the same in both).  Every round prints the md5
# of history, ledger, invoices and events (transaction ids left out): both
# variants must write the same rows.  As root (the server runs as
# postgres); needs valgrind.
#   BENCH_OLD_SQL=/tmp/old.sql BENCH_NEW_SQL=/tmp/new.sql bash test/bench/ab_renewal_callgrind.sh
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/../lib.sh"
use_pg_config
dir=${BENCH_DIR:-/tmp/subscription-ab-renewal}
port=${BENCH_PORT:-5432}
n=${BENCH_SUBS:-1000}
rounds=${BENCH_ROUNDS:-2}
. "$here/callgrind_lib.sh"
. "$here/renewals_lib.sh"

callgrind_cluster "$dir" "$port"
trap callgrind_stop EXIT
# the renewal runs at the populate's dates (read at the restart below)
echo "subscription.allow_clock = on" >> "$dir/data/postgresql.conf"
populate ab_renewal "$n"
callgrind_restart

q() { psql -X -qAt -v ON_ERROR_STOP=1 "$@"; }

# one round: VARIANT's copy renews; prints "VARIANT instructions md5"
round() {
    local variant=$1 sql=$2 db=ab_renewal_round pid f
    q -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" \
      -c "CREATE DATABASE $db TEMPLATE ab_renewal"
    [ -z "$sql" ] || q -d "$db" -f "$sql" >/dev/null
    q -d "$db" -c "VACUUM ANALYZE" >/dev/null
    pid=$(q -d "$db" <<'SQL'
SET client_min_messages = warning;
SET subscription.clock = '2026-02-01 00:00:00+00';
SELECT pg_backend_pid();
BEGIN;
SELECT subscription.renew_due('2026-02-01') \g /dev/null
COMMIT;
SQL
)
    f="$dir/cg.$pid"
    for _ in $(seq 600); do
        [ -f "$f" ] && grep -q '^totals:' "$f" && break
        sleep 1
    done
    printf '%s %s ' "$variant" "$(awk '/^totals:/ { print $2 }' "$f")"
    rows_md5_sql | q -d "$db"
}

echo "variant instructions md5 ($n renewals; load: $(cut -d' ' -f1-3 /proc/loadavg))"
for r in $(seq 1 "$rounds"); do
    if [ $((r % 2)) -eq 1 ]; then order="old new"; else order="new old"; fi
    for v in $order; do
        if [ "$v" = old ]; then round old "${BENCH_OLD_SQL:-}"; else round new "${BENCH_NEW_SQL:-}"; fi
    done
done
echo "(load: $(cut -d' ' -f1-3 /proc/loadavg))"
