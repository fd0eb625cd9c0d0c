# run_renewals at 10k and 100k due subscriptions (issue 18, item 3): each
# monthly, with an add-on batch, a coupon on one in ten, 10 to an account
# (renewals_lib.sh).  run_renewals commits each batch of 1000, so each run
# renews a fresh copy of the populated database (CREATE DATABASE ...
# TEMPLATE).  Reports renewals per second, 100k over 10k (target: at most
# 11), the peak private memory of the worker's backend (RssAnon sampled
# from /proc; target: flat, 100k over 10k near 1) and two workers against one on 100k (target: at
# least 1.5).  BENCH_SIZES="10000 100000" by default.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../renewals_lib.sh"

sizes=${BENCH_SIZES:-10000 100000}

# run DB WORKERS: ms for WORKERS concurrent run_renewals on a fresh copy of
# DB, and the peak RssAnon (kB: the backend's private memory, without the
# shared buffers that VmHWM counts too) of the first worker's backend
# (sample_peak)
run() {
    local db=$1 workers=$2 copy=${1}_run i start end left
    psql -X -qAt -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $copy" \
         -c "CREATE DATABASE $copy TEMPLATE $db"
    for i in $(seq 1 "$workers"); do
        psql -X -qAt -d "$copy" -c "SET application_name = 'renew_scaling_$i'" -c "SET client_min_messages = warning" \
             -c "CALL subscription.run_renewals('2026-02-01', 1000)" >/dev/null &
    done
    start=$(date +%s%N)
    sample_peak "$copy" renew_scaling_1
    wait
    end=$(date +%s%N)
    left=$(psql -X -qAt -d "$copy" -c "SELECT count(*) FROM subscription.subscription WHERE upper(period) <= '2026-02-01'")
    [ "$left" = 0 ] || { echo "run_renewals left $left subscriptions due" >&2; exit 1; }
    psql -X -qAt -d postgres -c "DROP DATABASE $copy"
    echo "$(( (end - start) / 1000000 )) $PEAK"
}

declare -A ms mem
for n in $sizes; do
    t0=$(date +%s)
    populate "renew_scaling_$n" "$n" 10
    echo "populated $n in $(( $(date +%s) - t0 )) s"
    read -r ms[$n] mem[$n] <<<"$(run "renew_scaling_$n" 1)"
    printf '%-40s %10s ms %10.0f per s  peak RssAnon %s kB  (load %s)\n' "run_renewals $n, 1 worker" "${ms[$n]}" \
           "$(awk -v t="${ms[$n]}" -v n="$n" 'BEGIN { print n / t * 1000 }')" "${mem[$n]}" "$(cut -d' ' -f1-3 /proc/loadavg)"
done
big=${sizes##* }
read -r ms2 mem2 <<<"$(run "renew_scaling_$big" 2)"
printf '%-40s %10s ms %10.0f per s  peak RssAnon %s kB  (load %s)\n' "run_renewals $big, 2 workers" "$ms2" \
       "$(awk -v t="$ms2" -v n="$big" 'BEGIN { print n / t * 1000 }')" "$mem2" "$(cut -d' ' -f1-3 /proc/loadavg)"
small=${sizes%% *}
if [ "$small" != "$big" ]; then
    printf '%-40s %10.2f  (target <= %s)\n' "time $big / $small" \
           "$(awk -v a="${ms[$big]}" -v b="${ms[$small]}" 'BEGIN { print a / b }')" "$(( big / small + 1 ))"
    printf '%-40s %10.2f  (flat: near 1)\n' "peak memory $big / $small" \
           "$(awk -v a="${mem[$big]}" -v b="${mem[$small]}" 'BEGIN { print a / b }')"
fi
printf '%-40s %10.2f  (target >= 1.5)\n' "2 workers speed-up on $big" \
       "$(awk -v a="${ms[$big]}" -v b="$ms2" 'BEGIN { print a / b }')"
for n in $sizes; do
    psql -X -qAt -d postgres -c "DROP DATABASE IF EXISTS renew_scaling_$n"
done
