# The outbox's cost (issue 20, item 7): license_consume (one history row,
# so one license.assigned event, per call) and the 4-client limit case
# (inserts into a limited table: no history row, so no event), each against
# its own baseline, in a database with the outbox on and in one with its
# trigger disabled.  Target: each ratio with the outbox on within 10% of
# the ratio without it (on/off >= 0.9).  The cases are
# license_consume_pgbench.sh and limits_pgbench.sh, run as they are, with
# BENCH_MEMBERS (default here 100,000 members a client) for a shorter setup.
# The states: "off" (history's event trigger disabled), "on" (the outbox as
# it ships: subscription.notify_events = on, writers notify only when a
# listener awaits, and none does here), "always" (every statement that
# wrote events notifies, as before the doorbell: a transaction that
# notified holds PostgreSQL's notification lock through its commit's
# flush, so notifying writers stop sharing flushes) and "polled"
# (notify_events off, a relay that polls claim_events()).
# The states alternate, BENCH_PAIRS (2) times each, and each case's best
# ratio of a state counts: the load of a shared machine drifts.
set -euo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
export BENCH_MEMBERS=${BENCH_MEMBERS:-100000}
out=$(mktemp /tmp/subscription-bench-events.XXXXXX)
trap 'rm -f "$out" "$out.case"' EXIT
for pair in $(seq "${BENCH_PAIRS:-2}"); do
    for state in off on always polled; do
        db=subscription_bench_events_$state
        psql -X -q -d postgres -c 'SET client_min_messages = warning' -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
        psql -X -q -d "$db" -v ON_ERROR_STOP=1 -f "$here/../harness.sql"
        if [ "$state" = off ]; then
            psql -X -q -d "$db" -c 'ALTER TABLE subscription.history DISABLE TRIGGER history_events'
        fi
        if [ "$state" = always ] || [ "$state" = polled ]; then
            psql -X -q -d "$db" -c "ALTER DATABASE $db SET subscription.notify_events = $([ "$state" = always ] && echo always || echo off)"
        fi
        echo "# outbox $state (pair $pair)"
        # each case's line: ... extension_tps baseline_tps ratio target
        { BENCH_DB=$db bash "$here/license_consume_pgbench.sh"
          BENCH_DB=$db bash "$here/limits_pgbench.sh"; } >"$out.case"
        cat "$out.case"
        awk -v state="$state" '/runs, best of/ { split($0, a, " [(]"); print state "\t" a[1] "\t" $(NF - 2) }' \
            "$out.case" >>"$out"
        psql -X -qAt -d "$db" -c "SELECT 'events written: ' || count(*) FROM subscription.event"
        psql -X -q -d postgres -c "DROP DATABASE $db"
    done
done
# each case: its best ratio with the outbox off, on (the doorbell, no
# listener), always notifying, and on without notifications, each against off
awk -F '\t' '
    { k = $2; if (!(k in seen)) { seen[k] = 1; order[++n] = k }
      if ($3 > best[$1, k]) best[$1, k] = $3 }
    END {
        printf "%-40s %9s %9s %12s %12s %8s %12s %12s %s\n", "case", "ratio_off", "ratio_on", "ratio_always",
               "ratio_polled", "on/off", "always/off", "polled/off", "target"
        for (i = 1; i <= n; i++) {
            k = order[i]; r = best["on", k] / best["off", k]; a = best["always", k] / best["off", k]
            q = best["polled", k] / best["off", k]
            printf "%-40s %9.2f %9.2f %12.2f %12.2f %8.3f %12.3f %12.3f >= 0.9: on %s, polled %s\n", k, best["off", k],
                   best["on", k], best["always", k], best["polled", k], r, a, q, (r >= 0.9 ? "met" : "not met"),
                   (q >= 0.9 ? "met" : "not met")
        }
    }' "$out"
