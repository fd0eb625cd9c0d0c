# Sourced by the pgbench cases of test/bench/cases.  Gives them $dir, a
# scratch directory for their scripts, and q, psql on the bench database.
dir=$(mktemp -d /tmp/subscription-bench.XXXXXX)
trap 'rm -rf "$dir"' EXIT
q() { psql -X -qAt -v ON_ERROR_STOP=1 -d "$BENCH_DB" "$@"; }

# compare_tps LABEL
# EXTENSION_SCRIPT BASELINE_SCRIPT TARGET runs both scripts with 4 clients,
# alternating, best of BENCH_ROUNDS (3) each so that drift hits both sides,
# and prints one line: tps of each side and their ratio.
compare_tps() {
    local label=$1 extension=$2 baseline=$3 target=$4 seconds=${BENCH_SECONDS:-10}
    local rounds=${BENCH_ROUNDS:-3} bare=0 ext=0 round
    tps() { pgbench -n -c 4 -j 4 -T "$seconds" -f "$1" "$BENCH_DB" 2>&1 | sed -n 's/^tps = \([0-9.]*\) .*/\1/p'; }
    best() { awk -v a="$1" -v b="$2" 'BEGIN { print (a > b ? a : b) }'; }
    for round in $(seq "$rounds"); do
        bare=$(best "$bare" "$(tps "$baseline")")
        ext=$(best "$ext" "$(tps "$extension")")
    done
    printf '%-52s %12s %12s %8s %s\n' case extension_tps baseline_tps ratio target
    printf '%-52s %12.0f %12.0f %8.2f %s\n' "$label (${seconds}s runs, best of $rounds)" "$ext" "$bare" \
        "$(awk -v e="$ext" -v b="$bare" 'BEGIN { print e / b }')" "$target"
}
