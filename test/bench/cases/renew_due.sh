# renew_due (issues 5 and 18): 10k and 100k due subscriptions (monthly,
# with an add-on batch each, a coupon on one in ten), in databases of their
# own.  Each run renews inside a transaction that is rolled back, so every
# run starts from the same rows.  Reports renewals per second (target: at
# least 10,000 with one worker), the time against the set-based floor of
# the same writes (one UPDATE moving every period and one INSERT of every
# charge, every trigger firing; target: at most 1.5), 100k over 10k
# (target: at most 11), the backend's peak anonymous memory for each size
# (flat with run_renewals, which commits each batch), and two workers
# against one on 100k (target: at least 1.5).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../pgbench_compare.sh"
. "$(dirname "${BASH_SOURCE[0]}")/../renewals_lib.sh"

# run_workers DB WORKERS [CALL]: ms for WORKERS concurrent renew_due (or,
# with CALL, one run_renewals that commits its batches), and the peak
# RssAnon (kB) of the first worker's backend, sampled every 20 ms
run_workers() {
    local db=$1 workers=$2 i start end
    for i in $(seq 1 "$workers"); do
        if [ "${3:-}" = CALL ]; then
            psql -X -qAt -d "$db" -c "SET application_name = 'renew_bench_$i'" -c "SET client_min_messages = warning" \
                 -c "CALL subscription.run_renewals('2026-02-01', 1000)" > "$dir/worker_$i.out" &
        else
            psql -X -qAt -d "$db" -c "SET application_name = 'renew_bench_$i'" -c "SET client_min_messages = warning" \
                 -c "BEGIN" -c "SELECT subscription.renew_due('2026-02-01')" -c "ROLLBACK" > "$dir/worker_$i.out" &
        fi
    done
    start=$(date +%s%N)
    sample_peak "$db" renew_bench_1
    wait
    end=$(date +%s%N)
    echo "$(( (end - start) / 1000000 )) $PEAK"
}

# floor DB: ms for the set-based floor of the same writes (floor_sql), in
# a rolled-back transaction
floor() {
    local db=$1 start end
    start=$(date +%s%N)
    { echo "BEGIN;"; floor_sql; echo "ROLLBACK;"; } | psql -X -qAt -v ON_ERROR_STOP=1 -d "$db" >/dev/null
    end=$(date +%s%N)
    echo "$(( (end - start) / 1000000 ))"
}

populate subscription_bench_renew_10k 10000
populate subscription_bench_renew_100k 100000
best() { sort -n | head -1; }
r10=(); r100=(); r100x2=(); f10=(); f100=(); m10=0; m100=0
for run in 1 2 3; do
    f10+=("$(floor subscription_bench_renew_10k)")
    f100+=("$(floor subscription_bench_renew_100k)")
    read -r ms mem <<<"$(run_workers subscription_bench_renew_10k 1)"; r10+=("$ms"); [ "$mem" -gt "$m10" ] && m10=$mem
    read -r ms mem <<<"$(run_workers subscription_bench_renew_100k 1)"; r100+=("$ms"); [ "$mem" -gt "$m100" ] && m100=$mem
    read -r ms mem <<<"$(run_workers subscription_bench_renew_100k 2)"; r100x2+=("$ms")
done
# last, as it commits: run_renewals, batches of 1000 committed one by one
read -r c10 p10 <<<"$(run_workers subscription_bench_renew_10k 1 CALL)"
read -r c100 p100 <<<"$(run_workers subscription_bench_renew_100k 1 CALL)"
t10=$(printf '%s\n' "${r10[@]}" | best)
t100=$(printf '%s\n' "${r100[@]}" | best)
t100x2=$(printf '%s\n' "${r100x2[@]}" | best)
tf10=$(printf '%s\n' "${f10[@]}" | best)
tf100=$(printf '%s\n' "${f100[@]}" | best)
printf '%-44s %10s %14s %16s\n' case ms renewals_per_s peak_RssAnon_kB
printf '%-44s %10s %14.0f %16s\n' "renew_due 10k, 1 worker" "$t10" "$(awk -v t="$t10" 'BEGIN { print 10000 / t * 1000 }')" "$m10"
printf '%-44s %10s %14.0f %16s\n' "renew_due 100k, 1 worker" "$t100" "$(awk -v t="$t100" 'BEGIN { print 100000 / t * 1000 }')" "$m100"
printf '%-44s %10s %14.0f\n' "renew_due 100k, 2 workers" "$t100x2" "$(awk -v t="$t100x2" 'BEGIN { print 100000 / t * 1000 }')"
printf '%-44s %10s %14.0f\n' "set-based floor 10k (UPDATE + INSERT)" "$tf10" "$(awk -v t="$tf10" 'BEGIN { print 10000 / t * 1000 }')"
printf '%-44s %10s %14.0f\n' "set-based floor 100k (UPDATE + INSERT)" "$tf100" "$(awk -v t="$tf100" 'BEGIN { print 100000 / t * 1000 }')"
printf '%-44s %10.2f  (target <= 1.5)\n' "renew_due 10k / floor 10k" "$(awk -v a="$t10" -v b="$tf10" 'BEGIN { print a / b }')"
printf '%-44s %10.2f  (target <= 1.5)\n' "renew_due 100k / floor 100k" "$(awk -v a="$t100" -v b="$tf100" 'BEGIN { print a / b }')"
printf '%-44s %10.2f  (target <= 11)\n' "100k / 10k time" "$(awk -v a="$t100" -v b="$t10" 'BEGIN { print a / b }')"
printf '%-44s %10.2f  (target >= 1.5)\n' "2 workers speed-up" "$(awk -v a="$t100" -v b="$t100x2" 'BEGIN { print a / b }')"
printf '%-44s %10s %14.0f %16s\n' "run_renewals 10k (batches committed)" "$c10" "$(awk -v t="$c10" 'BEGIN { print 10000 / t * 1000 }')" "$p10"
printf '%-44s %10s %14.0f %16s\n' "run_renewals 100k (batches committed)" "$c100" "$(awk -v t="$c100" 'BEGIN { print 100000 / t * 1000 }')" "$p100"
printf '%-44s %10.2f  (one transaction: grows with the run)\n' "renew_due peak memory 100k / 10k" "$(awk -v a="$m100" -v b="$m10" 'BEGIN { print a / b }')"
printf '%-44s %10.2f  (flat: near 1)\n' "run_renewals peak memory 100k / 10k" "$(awk -v a="$p100" -v b="$p10" 'BEGIN { print a / b }')"
for db in subscription_bench_renew_10k subscription_bench_renew_100k; do
    psql -X -qAt -d postgres -c "DROP DATABASE IF EXISTS $db"
done
