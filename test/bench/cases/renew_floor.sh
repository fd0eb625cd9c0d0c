# renew_due against its set-based floor (issue 18): 10k due monthly
# subscriptions, each with an add-on batch, 10 to an account (renew_due
# takes a tenant's advisory lock to the end of its transaction: 10k
# tenants in one rolled-back transaction outgrow the lock table at the
# default max_locks_per_transaction, see docs/benchmarks.md).  The floor is the same writes
# done set-based: one UPDATE moving every period and one INSERT of every
# charge (plan and add-on), with every trigger, key and check of the
# extension firing.  Each run is rolled back, so every run starts from the
# same rows; best of 3 each, alternated.  Reports the ratio (issue 18's
# target for the set-based renewals: at most 1.5).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../renewals_lib.sh"

db=subscription_bench_renew_floor
populate "$db" 10000 10

# ms of one psql run of the given commands
timed() {
    local start end
    start=$(date +%s%N)
    psql -X -qAt -v ON_ERROR_STOP=1 -d "$db" -c "SET client_min_messages = warning" "$@" >/dev/null
    end=$(date +%s%N)
    echo $(( (end - start) / 1000000 ))
}

# the floor: the one text of renewals_lib.sh
floor_sql=$(floor_sql)

# the floor writes what renew_due writes: as many charge lines
renewed=$(psql -X -qAt -d "$db" -c "BEGIN" -c "SELECT subscription.renew_due('2026-02-01')" \
               -c "SELECT count(*) FROM subscription.ledger WHERE lower(period) = '2026-02-01' AND kind = 'charge'" \
               -c "ROLLBACK" | tail -1)
floored=$(psql -X -qAt -d "$db" -c "BEGIN" -c "$floor_sql" \
               -c "SELECT count(*) FROM subscription.ledger WHERE lower(period) = '2026-02-01' AND kind = 'charge'" \
               -c "ROLLBACK" | tail -1)
echo "charge lines: renew_due $renewed, floor $floored"

best() { sort -n | head -1; }
r=(); f=()
for run in 1 2 3; do
    r+=("$(timed -c "BEGIN" -c "SELECT subscription.renew_due('2026-02-01')" -c "ROLLBACK")")
    f+=("$(timed -c "BEGIN" -c "$floor_sql" -c "ROLLBACK")")
done
tr=$(printf '%s\n' "${r[@]}" | best)
tf=$(printf '%s\n' "${f[@]}" | best)
printf '%-44s %10s %14s\n' case ms renewals_per_s
printf '%-44s %10s %14.0f\n' "renew_due 10k, 1 worker" "$tr" "$(awk -v t="$tr" 'BEGIN { print 10000 / t * 1000 }')"
printf '%-44s %10s %14.0f\n' "set-based floor 10k (1 UPDATE + 1 INSERT)" "$tf" "$(awk -v t="$tf" 'BEGIN { print 10000 / t * 1000 }')"
printf '%-44s %10.2f  (issue 18 target <= 1.5, with item 2)\n' "renew_due / floor" "$(awk -v a="$tr" -v b="$tf" 'BEGIN { print a / b }')"
psql -X -qAt -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db"
