# The outbox's cost (issue 20, item 7): license_consume (one history row,
# so one license.assigned event, per call) and the 4-client limit case
# (inserts into a limited table: no history row, so no event), each against
# its own baseline, in a database with the outbox on and in one with its
# trigger disabled.  Target: each ratio with the outbox on within 10% of
# the ratio without it.  The cases are license_consume_pgbench.sh and
# limits_pgbench.sh, run as they are.
set -euo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
for state in off on; do
    db=subscription_bench_events_$state
    psql -X -q -d postgres -c 'SET client_min_messages = warning' -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
    psql -X -q -d "$db" -v ON_ERROR_STOP=1 -f "$here/../harness.sql"
    if [ "$state" = off ]; then
        psql -X -q -d "$db" -c 'ALTER TABLE subscription.history DISABLE TRIGGER history_events'
    fi
    echo "# outbox $state"
    BENCH_DB=$db bash "$here/license_consume_pgbench.sh"
    BENCH_DB=$db bash "$here/limits_pgbench.sh"
    psql -X -qAt -d "$db" -c "SELECT 'events written: ' || count(*) FROM subscription.event"
    psql -X -q -d postgres -c "DROP DATABASE $db"
done
