# The events' overhead as instructions (issue 20), which the machine's load
# does not change: license_consume (one history row, one license.assigned
# event a call, each call its own transaction) in databases that differ only
# by their event path, as in ab_events_cpu.sh:
#   off      history's event trigger disabled (no event written)
#   on       the outbox as installed
#   before   (with BENCH_BEFORE_SQL, a file of CREATE OR REPLACE statements)
#            the outbox with those functions put back: the code before a change
# A cluster of its own in BENCH_DIR (port BENCH_PORT) is set up, then run
# under valgrind --tool=callgrind (every backend writes its count at its
# exit).  Per state, one session makes BENCH_FEW calls and one BENCH_MANY:
# the difference over the difference of calls is the instructions (Ir) of
# a call, the session's start and the caches' warm-up cancelled.  Prints
# per state the instructions a call and off/state (the throughput ratio of
# a CPU-bound call: the target on/off >= 0.9).  As root (the server runs as
# postgres) or as the cluster's owner; needs valgrind.
#   bash test/bench/ab_events_callgrind.sh
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/../lib.sh"
use_pg_config
dir=${BENCH_DIR:-/tmp/subscription-ab-callgrind}
port=${BENCH_PORT:-5432}
few=${BENCH_FEW:-20}
many=${BENCH_MANY:-120}
states="off on"
[ -n "${BENCH_BEFORE_SQL:-}" ] && states="off before on"
. "$here/callgrind_lib.sh"
callgrind_cluster "$dir" "$port"
trap callgrind_stop EXIT

for state in $states; do
    db=ab_$state
    psql -X -q -d postgres -c "CREATE DATABASE $db"
    psql -X -q -d "$db" -v ON_ERROR_STOP=1 -f "$here/harness.sql"
    psql -X -q -d "$db" -v ON_ERROR_STOP=1 -v members=$((2 * (few + many) + 100)) -f "$here/ab_events_setup.sql" >/dev/null
    [ "$state" = off ] && psql -X -q -d "$db" -c 'ALTER TABLE subscription.history DISABLE TRIGGER history_events'
    [ "$state" = before ] && psql -X -q -d "$db" -v ON_ERROR_STOP=1 -f "$BENCH_BEFORE_SQL"
done
callgrind_restart
session() { callgrind_session "$1" "SELECT subscription.license_consume(1000, nextval('bench.next'));" "$2"; }

out=$(mktemp /tmp/subscription-ab-callgrind.XXXXXX)
for state in $states; do
    a=$(session "ab_$state" "$few")
    b=$(session "ab_$state" "$many")
    printf '%s\t%s\n' "$state" $(((b - a) / (many - few))) >>"$out"
done
for state in $states; do
    printf '%s: events written %s\n' "$state" "$(psql -X -qAt -d "ab_$state" -c 'SELECT count(*) FROM subscription.event')"
done
awk -F '\t' '
    { ir[$1] = $2; order[++k] = $1 }
    END {
        for (i = 1; i <= k; i++) printf "%-8s %10d instructions a call\n", order[i], ir[order[i]]
        for (i = 1; i <= k; i++) if (order[i] != "off")
            printf "off/%s %.3f (the throughput ratio of a CPU-bound call; target on/off >= 0.9)\n", order[i], ir["off"] / ir[order[i]]
    }' "$out"
rm -f "$out"
