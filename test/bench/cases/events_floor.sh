# The events' share of the set-based renewal floor (issues 20 and 18): the
# floor of renew_floor.sh (BENCH_FLOOR_N due monthly subscriptions, default
# 2,000, one to an account, each with an add-on batch: one UPDATE moving
# every period, one INSERT of every charge, rolled back) timed in one
# database in three states, alternated, best of BENCH_RUNS (3) each:
#   statement  the events per statement (history_event over the history
#              rows' transition table, one write_events() INSERT)
#   row        the former row trigger, one write_event() per event
#              (test/bench/events_row_trigger.sql)
#   none       no events (history_events disabled)
# Reports each state's ms, and the events' share of the floor in each.
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
# ms of the floor, rolled back, and the events it wrote
timed() {
    local start end events
    start=$(date +%s%N)
    events=$(psql -X -qAt -v ON_ERROR_STOP=1 -d "$db" -c "SET client_min_messages = warning" -c "BEGIN" -c "$floor" \
                  -c "SELECT count(*) FROM subscription.event" -c "ROLLBACK" | tail -1)
    end=$(date +%s%N)
    echo "$(( (end - start) / 1000000 )) $events"
}
declare -A best written
for run in $(seq "${BENCH_RUNS:-3}"); do
    for s in statement row none; do
        state "$s"
        read -r ms events < <(timed)
        echo "# run $run, $s: $ms ms, $events events"
        written[$s]=$events
        if [ -z "${best[$s]:-}" ] || [ "$ms" -lt "${best[$s]}" ]; then best[$s]=$ms; fi
    done
done
state statement
printf '%-44s %10s %8s %14s\n' "floor $n (1 UPDATE + 1 INSERT), events" ms events events_share
for s in statement row none; do
    printf '%-44s %10s %8s %14s\n' "$s" "${best[$s]}" "${written[$s]}" \
        "$(awk -v t="${best[$s]}" -v z="${best[none]}" 'BEGIN { printf "%.0f%%", (t - z) / t * 100 }')"
done
printf '%-44s %10.2f\n' "row / statement" "$(awk -v a="${best[row]}" -v b="${best[statement]}" 'BEGIN { print a / b }')"
psql -X -qAt -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db"
