# The events' share of the set-based renewal floor (issues 20 and 18): the
# floor of renew_floor.sh (BENCH_FLOOR_N due monthly subscriptions, default
# 2,000, one to an account, each with an add-on batch: one UPDATE moving
# every period, one INSERT of every charge, rolled back) timed in one
# database in three states, alternated, best of BENCH_RUNS (3) each, its
# UPDATE (the renewals, each a history row and an event) and its INSERT
# (the charges) timed apart on the server:
#   statement  the events per statement (history_event over the history
#              rows' transition table, one write_events() INSERT)
#   row        the former row trigger, one write_event() per event
#              (test/bench/events_row_trigger.sql)
#   none       no events (history_events disabled)
# Reports each state's ms, and the events' share of the UPDATE in each.
set -euo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
. "$here/../renewals_lib.sh"

n=${BENCH_FLOOR_N:-2000}
db=subscription_bench_events_floor
populate "$db" "$n" 1
psql -X -q -v ON_ERROR_STOP=1 -d "$db" -f "$here/../events_row_trigger.sql" >/dev/null
floor=$(floor_sql)

state() {  # STATE: the triggers on history for it
    local row=DISABLE stmt=DISABLE
    case $1 in statement) stmt=ENABLE ;; row) row=ENABLE ;; esac
    psql -X -q -v ON_ERROR_STOP=1 -d "$db" -c "ALTER TABLE subscription.history $stmt TRIGGER history_events" \
         -c "ALTER TABLE subscription.history $row TRIGGER history_events_row"
}
# ms of the floor's UPDATE (the renewals: a history row and an event each)
# and of its INSERT (the charges), timed on the server, rolled back, and
# the events the UPDATE wrote
update_sql=$(awk '{ print } /;$/ { exit }' <<<"$floor")
insert_sql=$(awk 'done { print } /;$/ { done = 1 }' <<<"$floor")
timed() {
    psql -X -qAt -v ON_ERROR_STOP=1 -d "$db" <<SQL
SET client_min_messages = warning;
BEGIN;
SELECT max(id) AS e0 FROM subscription.event \\gset
SELECT clock_timestamp() AS t0 \\gset
$update_sql
SELECT clock_timestamp() AS t1 \\gset
$insert_sql
SELECT round(extract(epoch FROM :'t1'::timestamptz - :'t0'::timestamptz) * 1000),
       round(extract(epoch FROM clock_timestamp() - :'t1'::timestamptz) * 1000),
       (SELECT count(*) FROM subscription.event WHERE id > :e0);
ROLLBACK;
SQL
}
declare -A bu bi written
for run in $(seq "${BENCH_RUNS:-3}"); do
    for s in statement row none; do
        state "$s"
        line=$(timed)
        IFS='|' read -r um im events <<<"$line"
        echo "# run $run, $s: UPDATE $um ms, INSERT $im ms, $events events"
        written[$s]=$events
        if [ -z "${bu[$s]:-}" ] || [ "$um" -lt "${bu[$s]}" ]; then bu[$s]=$um; fi
        if [ -z "${bi[$s]:-}" ] || [ "$im" -lt "${bi[$s]}" ]; then bi[$s]=$im; fi
    done
done
state statement
printf '%-22s %10s %10s %8s %14s\n' "floor $n, events" update_ms insert_ms events update_share
for s in statement row none; do
    printf '%-22s %10s %10s %8s %14s\n' "$s" "${bu[$s]}" "${bi[$s]}" "${written[$s]}" \
        "$(awk -v t="${bu[$s]}" -v z="${bu[none]}" 'BEGIN { printf "%.0f%%", (t - z) / t * 100 }')"
done
printf '%-22s %10.2f %10.2f\n' "row / statement" "$(awk -v a="${bu[row]}" -v b="${bu[statement]}" 'BEGIN { print a / b }')" \
    "$(awk -v a="${bi[row]}" -v b="${bi[statement]}" 'BEGIN { print a / b }')"
psql -X -qAt -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db"
