# The events' overhead as backend CPU (issue 20): license_consume (one
# history row, one license.assigned event a call), each call its own
# transaction, in databases that differ only by their event path:
#   off      history's event trigger disabled (no event written)
#   on       the outbox as installed
#   before   (with BENCH_BEFORE_SQL, a file of CREATE OR REPLACE statements)
#            the outbox with those functions put back: the code before a change
# The rounds alternate the states, so the load drifts over all of them; the
# CPU a call is the backend's own, read from /proc/self/schedstat (ns on
# the CPU, whatever waits the machine's load adds), so each state's median
# over BENCH_ROUNDS rounds of BENCH_CALLS calls compares in one run.
# Prints per state the median µs of CPU a call and off/state (the
# throughput ratio of a CPU-bound call: the target on/off >= 0.9).
#   PGHOST=... PGPORT=... bash test/bench/ab_events_cpu.sh
set -euo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
calls=${BENCH_CALLS:-2000}
rounds=${BENCH_ROUNDS:-5}
states="off on"
[ -n "${BENCH_BEFORE_SQL:-}" ] && states="off before on"
export PGOPTIONS="${PGOPTIONS:-} -c subscription.max_backdate=P1000Y -c subscription.max_ahead=P1000Y"
out=$(mktemp /tmp/subscription-ab-events.XXXXXX)
trap 'rm -f "$out" "$out.sql"' EXIT

for state in $states; do
    db=subscription_ab_events_$state
    psql -X -q -d postgres -c 'SET client_min_messages = warning' -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
    psql -X -q -d "$db" -v ON_ERROR_STOP=1 -f "$here/harness.sql"
    psql -X -q -d "$db" -v ON_ERROR_STOP=1 -v members=$((calls * rounds + 100)) -f "$here/ab_events_setup.sql" >/dev/null
    [ "$state" = off ] && psql -X -q -d "$db" -c 'ALTER TABLE subscription.history DISABLE TRIGGER history_events'
    [ "$state" = before ] && psql -X -q -d "$db" -v ON_ERROR_STOP=1 -f "$BENCH_BEFORE_SQL"
    # a warm-up of the session's caches is part of each round (its first calls)
done

{
    echo "SELECT 'cpu_start ' || split_part(pg_read_file('/proc/self/schedstat'), ' ', 1);"
    for _ in $(seq "$calls"); do
        echo "SELECT subscription.license_consume(1000, nextval('bench.next'));"
    done
    echo "SELECT 'cpu_end ' || split_part(pg_read_file('/proc/self/schedstat'), ' ', 1);"
} >"$out.sql"

for round in $(seq "$rounds"); do
    for state in $states; do
        db=subscription_ab_events_$state
        psql -X -qAt -d "$db" -v ON_ERROR_STOP=1 -f "$out.sql" \
            | awk -v state="$state" -v calls="$calls" '
                /^cpu_start / { s = $2 } /^cpu_end / { e = $2 }
                END { printf "%s\t%.1f\n", state, (e - s) / 1000 / calls }' >>"$out"
    done
done
echo "# load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# the rounds in order (state, us CPU a call):"; paste -s -d ' ' "$out" | tr '\t' ':' 
for state in $states; do
    db=subscription_ab_events_$state
    printf '%s: events written %s\n' "$state" "$(psql -X -qAt -d "$db" -c 'SELECT count(*) FROM subscription.event')"
done
awk -F '\t' '
    { v[$1, ++n[$1]] = $2; if (!($1 in seen)) { seen[$1] = 1; order[++k] = $1 } }
    END {
        for (i = 1; i <= k; i++) {
            s = order[i]; m = n[s]; line = ""
            for (a = 1; a <= m; a++) for (b = a + 1; b <= m; b++) if (v[s, b] < v[s, a]) { t = v[s, a]; v[s, a] = v[s, b]; v[s, b] = t }
            for (a = 1; a <= m; a++) line = line " " v[s, a]
            med[s] = (m % 2) ? v[s, (m + 1) / 2] : (v[s, m / 2] + v[s, m / 2 + 1]) / 2
            printf "%-8s median %7.1f us CPU a call (rounds, sorted:%s)\n", s, med[s], line
        }
        for (i = 1; i <= k; i++) if (order[i] != "off")
            printf "off/%s %.3f (the throughput ratio of a CPU-bound call; target on/off >= 0.9)\n", order[i], med["off"] / med[order[i]]
    }' "$out"
for state in $states; do
    psql -X -q -d postgres -c "DROP DATABASE subscription_ab_events_$state"
done
